"""Reading host files safely for the persistence collector, and the facts kept about them.

Everything here reads through ``ctx.path`` so ``--root`` works, and treats the examined tree
as hostile:

* ``resolve`` follows symlinks itself, component by component, *inside* the root: an
  absolute link target (``/etc/systemd/system/x.service -> /tmp/x.service``) means the
  root's ``/tmp``, ``..`` stops at the root, and loops end after ``MAX_LINKS`` hops.
* ``read_file`` opens only regular files (``O_NOFOLLOW|O_NONBLOCK``, so a FIFO named like a
  unit cannot block the collector), reads at most ``limit`` bytes and decodes with
  ``backslashreplace``; it tries ``O_NOATIME`` so reading leaves access times as found.
* ``FileFacts`` remembers the files the collector looked at and writes one ``files`` row per
  file with its ext2-style attribute flags (immutable, append-only: attackers ``chattr +i``
  their crontabs and keys so cleanup fails), owner, times, first bytes (``magic``) and, for
  small files, content.
* ``read_accounts``/``home_dirs`` read the examined host's own /etc/passwd (never this
  machine's) for file owners and the homes whose start-up files and keys are looked at.
* ``split_key_line``/``fingerprint`` take apart an authorized_keys line and compute the
  fingerprint exactly as ``ssh-keygen -l`` prints it.
"""

import base64
import errno
import fcntl
import hashlib
import os
import re
import stat
import struct
from typing import Any, Callable, Dict, Hashable, List, Optional, Set, Tuple

from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso

MAX_LINKS = 40               # the kernel's own limit on symlinks in one lookup
READ_LIMIT = 1024 * 1024     # config files are small; a 1 GB "crontab" is read in part
SAVE_LIMIT = 1024 * 1024     # content of files up to this size goes into the bundle
MAX_FIELD = 8192             # longest command text stored in a row

# FS_IOC_GETFLAGS is _IOR('f', 1, long): its number depends on the size of a C long.
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20

_O_SAFE = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_NOCTTY", 0))
_O_NOATIME = getattr(os, "O_NOATIME", 0)


class HostPathError(Exception):
    """A host path that cannot be resolved inside the root (symlink loop, too many links)."""


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


def resolve(ctx: Context, host_path: str) -> Optional[str]:
    """The host path with every symlink resolved inside the root; None when it does not exist.

    Raises HostPathError for loops. Never touches anything outside ``ctx.root``.
    """
    pending = [p for p in host_path.split("/") if p and p != "."]
    done: List[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/" + "/".join([*done, part])
        try:
            st = os.lstat(ctx.path(candidate))
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINKS:
                raise HostPathError("too many levels of symbolic links (a loop?)")
            try:
                target = os.readlink(ctx.path(candidate))
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p and p != "."] + pending
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            return None
        done.append(part)
    return "/" + "/".join(done)


def _open(real: str) -> int:
    """Open for reading without following links, blocking or (when allowed) updating atime."""
    if _O_NOATIME:
        try:
            return os.open(real, _O_SAFE | _O_NOATIME)
        except OSError as exc:
            if exc.errno != errno.EPERM:  # not the owner and not root: retry without NOATIME
                raise
    return os.open(real, _O_SAFE)


def read_file(ctx: Context, host_path: str, limit: int = READ_LIMIT) -> Optional[HostFile]:
    """Read a regular file of the host (through links inside the root), at most ``limit`` bytes.

    Returns None when it is missing (silently) or unreadable (an ``errors`` row names it).
    """
    try:
        real_host = resolve(ctx, host_path)
    except HostPathError as exc:
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
        fd = _open(real)
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


def list_dir(ctx: Context, host_dir: str) -> List[str]:
    """Sorted entry names of a host directory (through links inside the root); [] if absent."""
    try:
        real_host = resolve(ctx, host_dir)
    except HostPathError as exc:
        ctx.error(host_dir, str(exc))
        return []
    if real_host is None:
        return []
    real = ctx.path(real_host)
    try:
        if not stat.S_ISDIR(os.lstat(real).st_mode):
            return []
        return sorted(os.listdir(real))
    except OSError as exc:
        ctx.error(host_dir, "cannot list: %s" % (exc.strerror or exc))
        return []


def entry_mode(ctx: Context, host_path: str) -> Optional[int]:
    """``st_mode`` of a host path itself (no link following), or None."""
    try:
        return os.lstat(ctx.path(host_path)).st_mode
    except OSError:
        return None


def read_flags(real_path: str) -> Optional[int]:
    """The ext2-style attribute flags (``lsattr``) of a file or folder; None if unsupported."""
    try:
        st = os.lstat(real_path)
        # Only files and folders: opening a device node can have side effects.
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return None
        fd = os.open(real_path, _O_SAFE)
    except OSError:
        return None
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    except (OSError, IOError):  # tmpfs, overlay on some kernels, FUSE: no flags to report
        return None
    finally:
        os.close(fd)
    return int(struct.unpack("i", buf[:4])[0])


def _magic(real_path: str) -> Optional[str]:
    """The first 4 bytes as hex (ELF is ``7f454c46``): a program dropped where scripts belong."""
    try:
        with os.fdopen(_open(real_path), "rb") as fh:
            return fh.read(4).hex()
    except (OSError, IOError):
        return None


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
        flags = read_flags(real)
        digest: Optional[str] = None
        saved = False
        magic = _magic(real) if stat.S_ISREG(st.st_mode) else None
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
            "owner": self.owners.get(st.st_uid, str(st.st_uid)),
            "sha256": digest, "content_saved": saved, "magic": magic,
            "immutable": None if flags is None else bool(flags & FS_IMMUTABLE_FL),
            "append_only": None if flags is None else bool(flags & FS_APPEND_FL),
            "reason": "persistence",
        })


Account = Tuple[str, int, str]  # user, uid, home
MAX_HOMES = 5000
MAX_ROWS_PER_FILE = 2000     # a crontab of a million lines is reported, not replayed


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


def quiet_resolve(ctx: Context, path: str) -> Optional[str]:
    """``resolve`` for paths looked at only for their flags: a loop there is not worth an error."""
    try:
        return resolve(ctx, path)
    except HostPathError:
        return None


def read_accounts(ctx: Context) -> List[Account]:
    """(user, uid, home) of the examined host's /etc/passwd (not this machine's)."""
    hf = read_file(ctx, "/etc/passwd", limit=16 * 1024 * 1024)
    out: List[Account] = []
    for line in hf.lines() if hf else []:
        parts = line.split(":")
        if len(parts) < 6 or not parts[0] or parts[0][0] in "+-#":
            continue
        try:
            out.append((parts[0], int(parts[2]), parts[5]))
        except ValueError:
            continue
    return out


def uid_names(accounts: List[Account]) -> Dict[int, str]:
    """uid -> user name; the first passwd line wins, as with getpwuid."""
    return {uid: name for name, uid, _ in reversed(accounts)}


def home_dirs(ctx: Context, accounts: List[Account]) -> List[Tuple[str, str]]:
    """(user, home) for every account, /root, and folders in /home nobody claims."""
    out: List[Tuple[str, str]] = []
    seen: Set[str] = set()
    owners = uid_names(accounts)
    extra = [("root", "/root")]
    for name in list_dir(ctx, "/home"):
        real = quiet_resolve(ctx, "/home/" + name)
        try:
            st = os.lstat(ctx.path(real)) if real else None
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            extra.append((owners.get(st.st_uid, name), "/home/" + name))
    for user, home in [(a[0], a[2]) for a in accounts] + extra:
        if home.startswith("/") and home not in seen and len(out) < MAX_HOMES:
            seen.add(home)
            out.append((user, home))
    return out


# --- public keys (authorized_keys lines) ------------------------------------------------
_KEY_TYPE = re.compile(r"^(?:ssh|ecdsa|sk)-[A-Za-z0-9@.+-]+$")


def split_key_line(line: str) -> Tuple[str, str, str, str]:
    """(options, key type, base64 blob, comment) of an authorized_keys line; ValueError if none."""
    text, options = line.strip(), ""
    if not text:
        raise ValueError("empty line")
    if not _KEY_TYPE.match(text.split(None, 1)[0]):
        quote, i = False, 0
        while i < len(text) and (quote or text[i] not in " \t"):
            if text[i] == "\\" and quote:
                i += 1
            elif text[i] == '"':
                quote = not quote
            i += 1
        options, text = text[:i], text[i:].strip()
    parts = text.split(None, 2)
    if len(parts) < 2 or not _KEY_TYPE.match(parts[0]):
        raise ValueError("not a public key line")
    return options, parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def fingerprint(key_type: str, blob_b64: str) -> str:
    """``SHA256:...`` as OpenSSH prints it; ValueError when the blob is not a key of that type."""
    try:
        blob = base64.b64decode(blob_b64.encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise ValueError("key is not valid base64") from None
    if len(blob) < 4:
        raise ValueError("key blob is too short")
    (size,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + size] != key_type.encode("ascii"):
        raise ValueError("key blob is not of type %s" % key_type)
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")
