"""Reading the examined host's tree safely: its users and homes, owner names, bounded walks.

Shared by the lateral, files and logs collectors. Everything here reads under ``ctx.root``
and never follows a symlink out of it. The tree is evidence, so it may hold hostile names
(non-UTF-8, control characters), symlink loops, FIFOs that block a reader and huge files:
walks never follow symlinks, depth and entry counts are bounded, files are opened with
``O_NOFOLLOW | O_NONBLOCK`` and checked to be regular before a byte is read.
"""

import os
import stat
import struct
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

from deminer.collect.bundle import Context, fs_text, safe_text

try:
    import fcntl
except ImportError:  # pragma: no cover - the collector runs on Linux
    fcntl = None  # type: ignore[assignment]

User = NamedTuple("User", [
    ("name", str), ("password", str), ("uid", int), ("gid", int), ("home", str),
    ("shell", str), ("line", int),
])
Entry = NamedTuple("Entry", [
    ("host_path", str), ("real_path", str), ("name", str), ("st", os.stat_result),
    ("depth", int),
])

PASSWD_MAX_BYTES = 8 * 1024 * 1024
# Homes that are not private folders: walking them would walk the whole system.
_NOT_HOMES = ("/", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/dev", "/proc", "/sys", "/usr",
              "/var", "/etc", "/nonexistent", "/run")


def read_head(real_path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes from the start of a regular file (never a FIFO, never a link)."""
    fd = os.open(real_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_tail(real_path: str, limit: int) -> Tuple[bytes, int]:
    """The newest ``limit`` bytes of a regular file and its size (logs grow at the end)."""
    fd = os.open(real_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if st.st_size > limit:
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


def read_text(ctx: Context, host_path: str, limit: int = 4 * 1024 * 1024,
              quiet_missing: bool = True) -> Optional[str]:
    """A small text file of the host, decoded without failing; None when absent/unreadable."""
    real = ctx.path(host_path)
    try:
        data = read_head(real, limit + 1)
    except (OSError, IOError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        if not (missing and quiet_missing):
            ctx.error(real, "cannot read: %s" % (exc.strerror or exc))
        return None
    if len(data) > limit:
        ctx.error(real, "read only the first %d bytes" % limit)
        data = data[:limit]
    return safe_text(data)


def inside_root(ctx: Context, real_path: str) -> bool:
    """True when ``real_path`` (symlinks resolved) stays under the examined root."""
    if ctx.live:
        return True
    root = os.path.realpath(ctx.root)
    resolved = os.path.realpath(real_path)
    return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)


def contained(ctx: Context, host_path: str) -> Optional[str]:
    """The real path of a host path taken from evidence (``../`` collapsed at the host's
    root, symlinks not leading out of it), or None when it would leave the root."""
    if "\0" in host_path:
        return None  # text from evidence may hold NUL; no file system path can
    real = ctx.path(os.path.normpath("/" + host_path.lstrip("/")))
    return real if inside_root(ctx, real) else None


def is_dir(ctx: Context, host_path: str) -> bool:
    """A folder of the host that does not lead out of the root through a symlink."""
    real = ctx.path(host_path)
    return os.path.isdir(real) and inside_root(ctx, real)


def read_users(ctx: Context, report: bool = False) -> List[User]:
    """Accounts from the root's /etc/passwd (``report``: emit errors for broken lines)."""
    text = read_text(ctx, "/etc/passwd", PASSWD_MAX_BYTES, quiet_missing=not report)
    users = []  # type: List[User]
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip() or line.startswith(("#", "+", "-")):
            continue  # NIS include lines (+/-) name no local account
        fields = line.split(":")
        try:
            if len(fields) < 7:
                raise ValueError("%d fields, not 7" % len(fields))
            users.append(User(fields[0], fields[1], int(fields[2]), int(fields[3]), fields[5],
                              ":".join(fields[6:]), number))
        except ValueError as exc:
            if report:
                ctx.error(ctx.path("/etc/passwd"), "line %d: not a passwd entry (%s)" % (
                    number, exc))
    return users


def owner_names(users: List[User]) -> Dict[int, str]:
    """uid -> name of the examined host (first entry wins, as getpwuid does)."""
    names = {}  # type: Dict[int, str]
    for user in users:
        names.setdefault(user.uid, user.name)
    return names


def owner(names: Dict[int, str], uid: int) -> str:
    return names.get(uid, str(uid))


def homes(ctx: Context, users: List[User]) -> List[Tuple[str, str]]:
    """``(user, home)`` of every home folder: passwd homes, /root and each /home/* folder.

    Folders under /home without a passwd entry are kept (a deleted or hidden account still
    leaves its keys behind); their user is the folder owner's name, else the folder name.
    """
    found = []  # type: List[Tuple[str, str]]
    seen = set()
    names = owner_names(users)
    candidates = [(u.name, u.home) for u in users]
    candidates.append(("root", "/root"))
    try:
        extra = sorted(os.listdir(ctx.path("/home")))
    except OSError:
        extra = []
    for name in extra:
        home = "/home/" + name
        try:
            uid = os.lstat(ctx.path(home)).st_uid
        except OSError:
            continue
        candidates.append((names.get(uid, fs_text(name)), home))
    for user, home in candidates:
        home = os.path.normpath(home) if home.startswith("/") else ""
        if not home or home in _NOT_HOMES or home in seen or not is_dir(ctx, home):
            continue
        seen.add(home)
        found.append((user, home))
    return found


def walk(ctx: Context, host_top: str, max_depth: int, max_entries: int,
         skip_dirs: Tuple[str, ...] = ()) -> Iterator[Entry]:
    """Entries under ``host_top`` (not itself), depth-first, never following symlinks.

    Depth 1 is a direct child. Stops with an ``errors`` row after ``max_entries`` entries or
    when the time budget runs out; unreadable folders give an ``errors`` row and are skipped.
    """
    top = ctx.path(host_top)
    if not os.path.isdir(top) or os.path.islink(top) or not inside_root(ctx, top):
        return
    count = 0
    stack = [(host_top.rstrip("/") or "", top, 1)]
    while stack:
        host_dir, real_dir, depth = stack.pop()
        try:
            with os.scandir(real_dir) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            ctx.error(real_dir, "cannot list: %s" % (exc.strerror or exc))
            continue
        subdirs = []
        for child in children:
            count += 1
            if count > max_entries or ctx.time_left() <= 0:
                ctx.error(top, "stopped after %d entries (bound or time budget)" % (count - 1))
                return
            try:
                st = child.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished while we looked (tmp dirs churn)
            host_path = host_dir + "/" + child.name
            yield Entry(host_path, child.path, child.name, st, depth)
            if stat.S_ISDIR(st.st_mode) and depth < max_depth and child.name not in skip_dirs:
                subdirs.append((host_path, child.path, depth + 1))
        stack.extend(reversed(subdirs))


# FS_IOC_GETFLAGS is _IOR('f', 1, long): its number depends on the size of a C long.
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20


def file_flags(real_path: str) -> Tuple[Optional[bool], Optional[bool]]:
    """``(immutable, append_only)`` of a regular file or folder; Nones when unknown.

    Attackers ``chattr +i`` their binaries and keys so that cleanup fails. Only regular
    files and folders are opened (``O_NOFOLLOW|O_NONBLOCK``): never a device or a FIFO.
    """
    if fcntl is None:
        return None, None
    try:
        mode = os.lstat(real_path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None, None
        fd = os.open(real_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None, None
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
        flags = struct.unpack("=i", raw[:4])[0]  # the kernel writes an int, whatever the name
    except (OSError, IOError):
        return None, None  # file systems without ext2-style flags (tmpfs, procfs)
    finally:
        os.close(fd)
    return bool(flags & FS_IMMUTABLE_FL), bool(flags & FS_APPEND_FL)
