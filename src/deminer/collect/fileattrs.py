"""Host files as the persistence collector reads them, and the facts it keeps about them.

Reads go through ``hostfs`` (links resolved inside the root, regular files only, bounded):

* ``read_file`` returns a ``HostFile``: the path the system reads, the path it really is
  after links, its stat and its bytes (at most ``limit``), decoded with ``backslashreplace``.
* ``FileFacts`` remembers the files the collector looked at and writes one ``files`` row per
  file with its immutable / append-only flags (attackers ``chattr +i`` their crontabs and
  keys so cleanup fails), owner, times, first bytes (``magic``) and, for small files,
  content.
* ``RowWriter`` writes the ``persistence`` rows, capped per file, with the package verdict
  for their files decided in one pass at the end.
"""

import hashlib
import os
import stat
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from deminer.collect import hostfs
from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso

READ_LIMIT = 1024 * 1024     # config files are small; a 1 GB "crontab" is read in part
SAVE_LIMIT = 1024 * 1024     # content of files up to this size goes into the bundle
MAX_FIELD = 8192             # longest command text stored in a row
MAX_ROWS_PER_FILE = 2000     # a crontab of a million lines is reported, not replayed


class HostFile(object):
    """One file read from the host: where it is registered, where it really is, its bytes."""

    def __init__(self, path: str, real_path: str, st: os.stat_result, data: bytes) -> None:
        self.path = path            # host path the system looks at (may be a symlink)
        self.real_path = real_path  # host path after resolving links inside the root
        self.st = st
        self.data = data
        self.text = safe_text(data)
        self.mtime = utc_iso(st.st_mtime)

    def lines(self) -> List[str]:
        """Lines split on newline only, so numbers match ``sed -n Np`` on the host."""
        out = self.text.split("\n")
        if out and out[-1] == "":
            out.pop()
        return [line[:-1] if line.endswith("\r") else line for line in out]

    def is_binary(self) -> bool:
        return b"\x00" in self.data[:8192]


def clip(text: str) -> str:
    """Cap a stored field; a 1 MB line must not become a 1 MB cell."""
    if len(text) <= MAX_FIELD:
        return text
    return text[:MAX_FIELD] + "...[%d more characters]" % (len(text) - MAX_FIELD)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def read_file(ctx: Context, host_path: str, limit: int = READ_LIMIT) -> Optional[HostFile]:
    """Read a regular file of the host (through links inside the root), at most ``limit`` bytes.

    Returns None when it is missing (silently) or unreadable (an ``errors`` row names it).
    """
    try:
        real_host = hostfs.resolve(ctx, host_path)
    except hostfs.HostPathError as exc:
        ctx.error(host_path, str(exc))
        return None
    if real_host is None:
        return None
    real = ctx.path(real_host)
    try:
        st = os.lstat(real)
        if not stat.S_ISREG(st.st_mode):
            # /dev/null is how systemd masks a unit: nothing to report.
            if real_host != "/dev/null":
                ctx.error(host_path, "not a regular file (%s), skipped" % _kind(st.st_mode))
            return None
        fd = hostfs.open_nofollow(real)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):  # swapped between lstat and open
                ctx.error(host_path, "not a regular file (%s), skipped" % _kind(st.st_mode))
                return None
            data = fh.read(limit + 1)
    except (OSError, IOError) as exc:
        ctx.error(host_path, "cannot read: %s" % (exc.strerror or exc))
        return None
    if len(data) > limit:
        ctx.error(host_path, "read only the first %d bytes of %d" % (limit, st.st_size))
        data = data[:limit]
    return HostFile(host_path, real_host, st, data)


class FileFacts(object):
    """The files the persistence collector looked at, written as ``files`` rows at the end."""

    def __init__(self, ctx: Context, owners: Dict[int, str]) -> None:
        self.ctx = ctx
        self.owners = owners
        self.paths: List[str] = []
        self._save: Dict[str, bool] = {}

    def note(self, host_path: str, save: bool = True) -> None:
        """Remember a file; ``save=False`` hashes it without copying it (e.g. /etc/shadow)."""
        if host_path not in self._save:
            self.paths.append(host_path)
        self._save[host_path] = self._save.get(host_path, False) or save

    def emit(self) -> None:
        for host_path in self.paths:
            self._emit_one(host_path, self._save[host_path])

    def _emit_one(self, host_path: str, save: bool) -> None:
        real = self.ctx.path(host_path)
        try:
            st = os.lstat(real)
        except OSError:
            return  # noted paths that do not exist (the fixed list) are not rows
        immutable, append_only = hostfs.file_flags(real)
        digest: Optional[str] = None
        saved = False
        magic = None
        if stat.S_ISREG(st.st_mode):
            # The first 4 bytes as hex (ELF is 7f454c46): a program dropped where scripts belong.
            try:
                magic = hostfs.read_head(real, 4).hex()
            except (OSError, IOError):
                magic = None
        if stat.S_ISREG(st.st_mode) and st.st_size <= SAVE_LIMIT:
            if save:
                digest = self.ctx.save_file(real, limit=SAVE_LIMIT)
                saved = digest is not None
            else:
                hf = read_file(self.ctx, host_path, SAVE_LIMIT)
                digest = hashlib.sha256(hf.data).hexdigest() if hf else None
        self.ctx.emit("files", {
            "source": fs_text(host_path), "path": fs_text(host_path), "size": st.st_size,
            "mtime": utc_iso(st.st_mtime), "ctime": utc_iso(st.st_ctime),
            "mode": stat.S_IMODE(st.st_mode),
            "owner": hostfs.owner(self.owners, st.st_uid),
            "sha256": digest, "content_saved": saved, "magic": magic,
            "immutable": immutable, "append_only": append_only,
            "reason": "persistence",
        })


class RowWriter(object):
    """Writes ``persistence`` rows for host files and remembers those files for ``files`` rows.

    Rows wait until ``flush`` decides for all at once whether a package owns their files (one
    more pass over the package database, not one per file); ``file_key`` keeps what that
    needs of a file (paths, md5) while it is in memory.
    """

    def __init__(self, ctx: Context, facts: FileFacts,
                 file_key: Optional[Callable[[HostFile], Hashable]] = None) -> None:
        self.ctx = ctx
        self.facts = facts
        self.file_key = file_key
        self.pending: List[Tuple[Dict[str, Any], Hashable]] = []
        self._per_file: Dict[str, int] = {}

    def flush(self, packaged: Callable[[List[Any]], Dict[Any, Optional[str]]]) -> None:
        """Emit the waiting rows with ``packaged`` set from the verdicts for their files."""
        verdicts = packaged([key for _, key in self.pending])
        for row, key in self.pending:
            row["packaged"] = verdicts.get(key)
            self.ctx.emit("persistence", row)
        self.pending = []

    def row(self, kind: str, hf: HostFile, line: Optional[int], name: str, command: str,
            user: Optional[str], enabled: Optional[bool]) -> None:
        count = self._per_file.get(hf.path, 0) + 1
        self._per_file[hf.path] = count
        if count > MAX_ROWS_PER_FILE:
            if count == MAX_ROWS_PER_FILE + 1:
                self.ctx.error(hf.path, "more than %d entries; the rest are not listed"
                               % MAX_ROWS_PER_FILE)
            return
        self.facts.note(hf.real_path)
        # ts is when the entry was last written (the file's mtime): what a timeline needs.
        row: Dict[str, Any] = {
            "kind": kind, "location": fs_text(hf.path), "source": fs_text(hf.real_path),
            "source_line": line, "name": clip(fs_text(name)), "command": clip(command),
            "user": None if user is None else fs_text(user), "mtime": hf.mtime or None,
            "enabled": enabled,
        }
        if hf.mtime:
            row["ts"] = hf.mtime
        self.pending.append((row, self.file_key(hf) if self.file_key else None))
