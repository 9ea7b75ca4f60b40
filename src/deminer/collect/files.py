"""Collector: files of interest on the host, with hashes and (for YARA) their content.

- Temp folders (/tmp, /var/tmp, /dev/shm, /run/shm, /var/run): executables (an exec bit,
  an ELF header or ``#!``) as ``tmp_exec``, hidden entries (names starting with ``.``,
  including ``...``, ``. `` and ``.  ``, the trailing-space tricks) as ``hidden_dir`` /
  ``hidden_file``. A top folder that is a symlink (/var/run -> /run) is followed once,
  inside the root; nothing below it is.
- System folders (/bin, /sbin, /usr/bin, /usr/sbin, /usr/local/*bin, /lib/systemd/system):
  entries changed in the last 30 days (mtime or ctime) or after the newest file of the
  package database (dpkg, rpm, apk, pacman) as ``recent_system_bin``: what a package manager
  did not put there, or what replaced what it did.
- Miner configs: ``*.json`` files up to 1 MiB under the temp folders and the homes that
  mention ``"pools"`` or ``stratum+`` as ``miner_config``.

Each row has path, size, times, mode, owner, sha256, the first 4 bytes as hex (``magic``,
ELF = ``7f454c46``) and the immutable/append-only flags. Executables, scripts and miner
configs up to ``ctx.max_file_bytes`` are saved into the bundle (``content_saved``) within a
total budget; larger files are hashed by streaming. Walks never follow symlinks, never open
FIFOs or devices, and are bounded in depth, entries and rows.
"""

import hashlib
import os
import stat
import time
from typing import Dict, List, Optional, Set, Tuple

from deminer.collect import hostfs
from deminer.collect.bundle import Context, fs_text, utc_iso

TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/shm", "/var/run")
SYSTEM_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
               "/lib/systemd/system")
PACKAGE_DBS = ("/var/lib/dpkg/status", "/var/lib/dpkg/info", "/var/lib/rpm",
               "/usr/lib/sysimage/rpm", "/lib/apk/db/installed", "/var/lib/pacman/local")
RECENT_SECONDS = 30 * 86400
TMP_DEPTH, TMP_ENTRIES = 8, 50000
SYSTEM_ENTRIES = 50000
HOME_DEPTH, HOME_ENTRIES = 4, 20000
ROWS_PER_AREA = 5000
CONFIG_MAX_BYTES = 1024 * 1024
HASH_MAX_BYTES = 4 * 1024 * 1024 * 1024
SAVE_TOTAL_BYTES = 512 * 1024 * 1024
MINER_MARKS = (b'"pools"', b"stratum+")
SKIP_DIRS = (".git", "node_modules", ".cache", "site-packages", "dist-packages", ".npm",
             ".cargo", ".rustup", "__pycache__", ".m2", ".gradle")


class Files(object):
    """One pass: owner names, what was emitted already, and the content budget left."""

    def __init__(self, ctx: Context, now: float) -> None:
        self.ctx = ctx
        self.now = now
        users = hostfs.read_users(ctx)
        self.names = hostfs.owner_names(users)
        self.homes = hostfs.homes(ctx, users)
        self.done: Set[str] = set()
        self.save_left = SAVE_TOTAL_BYTES
        self.rows: Dict[str, int] = {}

    def row(self, host_path: str, real: str, st: os.stat_result, reason: str,
            save: bool) -> None:
        """One ``files`` row (once per file); ``save`` puts the content in the bundle."""
        if real in self.done:
            return
        self.done.add(real)
        self.rows[reason] = self.rows.get(reason, 0) + 1
        if self.rows[reason] > ROWS_PER_AREA:
            if self.rows[reason] == ROWS_PER_AREA + 1:
                self.ctx.error(real, "more than %d %s files; the rest skipped" % (
                    ROWS_PER_AREA, reason))
            return
        magic = sha = None  # type: Optional[str]
        saved = False
        if stat.S_ISREG(st.st_mode):
            try:
                magic = hostfs.read_head(real, 4).hex()
            except (OSError, IOError):
                magic = None
            if save and st.st_size <= min(self.ctx.max_file_bytes, self.save_left):
                sha = self.ctx.save_file(real)
                saved = sha is not None
                self.save_left -= st.st_size if saved else 0
            if sha is None:
                sha = self._stream_hash(real, st.st_size)
        immutable, append_only = hostfs.file_flags(real)
        self.ctx.emit("files", {
            "path": fs_text(host_path), "source": fs_text(host_path), "size": st.st_size,
            "mtime": utc_iso(st.st_mtime), "ctime": utc_iso(st.st_ctime), "mode": stat.S_IMODE(st.st_mode),
            "owner": hostfs.owner(self.names, st.st_uid), "sha256": sha, "reason": reason,
            "magic": magic, "content_saved": saved, "immutable": immutable,
            "append_only": append_only,
        })

    def _stream_hash(self, real: str, size: int) -> Optional[str]:
        if size > HASH_MAX_BYTES:
            self.ctx.error(real, "not hashed: %d bytes" % size)
            return None
        digest = hashlib.sha256()
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
            finally:
                os.close(fd)
        except (OSError, IOError) as exc:
            self.ctx.error(real, "cannot hash: %s" % (exc.strerror or exc))
            return None
        return digest.hexdigest()

    def is_miner_config(self, entry: hostfs.Entry) -> bool:
        if not entry.name.lower().endswith(".json") or not stat.S_ISREG(entry.st.st_mode):
            return False
        if entry.st.st_size > CONFIG_MAX_BYTES:
            return False
        try:
            data = hostfs.read_head(entry.real_path, CONFIG_MAX_BYTES)
        except (OSError, IOError):
            return False
        return any(mark in data for mark in MINER_MARKS)

    # -- areas -------------------------------------------------------------------------------
    def tmp_dirs(self) -> None:
        for top in _tops(self.ctx, TMP_DIRS):
            for entry in hostfs.walk(self.ctx, top, TMP_DEPTH, TMP_ENTRIES):
                mode = entry.st.st_mode
                hidden = entry.name.startswith(".")
                if stat.S_ISREG(mode):
                    if self.is_miner_config(entry):
                        self.row(entry.host_path, entry.real_path, entry.st, "miner_config", True)
                    elif _executable(entry):
                        self.row(entry.host_path, entry.real_path, entry.st, "tmp_exec", True)
                    elif hidden:
                        self.row(entry.host_path, entry.real_path, entry.st, "hidden_file", False)
                elif hidden:
                    reason = "hidden_dir" if stat.S_ISDIR(mode) else "hidden_file"
                    self.row(entry.host_path, entry.real_path, entry.st, reason, False)

    def system_dirs(self) -> None:
        cutoff = self.now - RECENT_SECONDS
        newest_db = _package_db_newest(self.ctx)
        for top in _tops(self.ctx, SYSTEM_DIRS):
            depth = 2 if top.endswith("/system") else 1
            for entry in hostfs.walk(self.ctx, top, depth, SYSTEM_ENTRIES):
                st = entry.st
                if stat.S_ISDIR(st.st_mode):
                    continue
                changed = max(st.st_mtime, st.st_ctime)
                if changed >= cutoff or (newest_db is not None and changed > newest_db):
                    self.row(entry.host_path, entry.real_path, st, "recent_system_bin",
                             _executable(entry) or top.endswith("/system"))

    def home_configs(self) -> None:
        for _, home in self.homes:
            for entry in hostfs.walk(self.ctx, home, HOME_DEPTH, HOME_ENTRIES, SKIP_DIRS):
                if self.is_miner_config(entry):
                    self.row(entry.host_path, entry.real_path, entry.st, "miner_config", True)


def _executable(entry: hostfs.Entry) -> bool:
    """An exec bit, or content that runs: an ELF header or a ``#!`` line."""
    if not stat.S_ISREG(entry.st.st_mode):
        return False
    if entry.st.st_mode & 0o111:
        return True
    try:
        head = hostfs.read_head(entry.real_path, 4)
    except (OSError, IOError):
        return False
    return head == b"\x7fELF" or head.startswith(b"#!")


def _tops(ctx: Context, folders: Tuple[str, ...]) -> List[str]:
    """The folders that exist, a top-level symlink followed once inside the root, deduped."""
    out = []
    seen = set()
    for folder in folders:
        host = folder
        real = ctx.path(folder)
        if os.path.islink(real):
            try:
                link = os.readlink(real)
            except OSError:
                continue
            host = "/" + os.path.normpath(os.path.join(os.path.dirname(folder), link)).lstrip("/")
            real = ctx.path(host)
            if os.path.islink(real):
                continue  # one hop only: a chain of links is not a temp folder
        if not os.path.isdir(real) or not hostfs.inside_root(ctx, real):
            continue
        key = os.path.realpath(real)
        if key not in seen:
            seen.add(key)
            out.append(host)
    return out


def _package_db_newest(ctx: Context) -> Optional[float]:
    """The newest mtime among the package database files: the last package operation."""
    newest = None  # type: Optional[float]
    for path in PACKAGE_DBS:
        real = ctx.path(path)
        try:
            st = os.lstat(real)
        except OSError:
            continue
        times = [st.st_mtime]
        if stat.S_ISDIR(st.st_mode):
            times += [e.st.st_mtime for e in hostfs.walk(ctx, path, 1, 100000)]
        newest = max([newest or 0.0, *times])
    return newest


def collect(ctx: Context, now: Optional[float] = None) -> None:
    """Emit the rows above; ``now`` (epoch) anchors the 30-day window (tests pin it)."""
    run = Files(ctx, time.time() if now is None else now)
    for step in (run.tmp_dirs, run.system_dirs, run.home_configs):
        if ctx.time_left() <= 0:
            ctx.error("files", "skipped %s: the time budget ran out" % step.__name__)
            continue
        try:
            step()
        except Exception as exc:  # one broken step must not lose the others
            ctx.error("files", "%s failed: %s: %s" % (step.__name__, type(exc).__name__, exc))
