"""Reading the examined host's tree safely: files, links, folders, flags, users and homes.

The one place every collector reads host files through. Everything here reads under
``ctx.root`` and never leaves it. The tree is evidence, so it may hold hostile names
(non-UTF-8, control characters), symlink loops, FIFOs that block a reader and huge files:

* ``open_nofollow``/``read_head``/``read_tail`` open only regular files, with
  ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO named like a log cannot block the collector) and, when
  the kernel allows it, ``O_NOATIME`` (reading leaves access times as found);
* ``resolve`` follows symlinks itself, component by component, *inside* the root: an
  absolute link target (``/etc/systemd/system/x.service -> /tmp/x.service``) means the
  root's ``/tmp``, ``..`` stops at the root, and loops end after ``MAX_LINKS`` hops;
* ``walk`` never follows symlinks and bounds depth, entry count and time;
* ``file_flags`` reads the ext2-style immutable / append-only flags;
* ``read_users``/``homes`` read the examined host's own /etc/passwd (never this machine's).
"""

import errno
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

PASSWD_MAX_BYTES = 16 * 1024 * 1024
MAX_LINKS = 40               # the kernel's own limit on symlinks in one lookup
MAX_HOMES = 5000
# Homes that are not private folders: walking them would walk the whole system.
_NOT_HOMES = ("/", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/dev", "/proc", "/sys", "/usr",
              "/var", "/etc", "/nonexistent", "/run")

_O_SAFE = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_NOCTTY", 0))
_O_NOATIME = getattr(os, "O_NOATIME", 0)


class HostPathError(Exception):
    """A host path that cannot be resolved inside the root (symlink loop, too many links)."""


# --- opening and reading files ------------------------------------------------------------
def open_nofollow(real_path: str) -> int:
    """A read-only fd that never follows a final link, never blocks on a FIFO and, when the
    kernel allows it (we own the file or are root), leaves the access time unchanged."""
    if _O_NOATIME:
        try:
            return os.open(real_path, _O_SAFE | _O_NOATIME)
        except OSError as exc:
            if exc.errno != errno.EPERM:  # not the owner and not root: retry without NOATIME
                raise
    return os.open(real_path, _O_SAFE)


def _read_regular(real_path: str, limit: int, tail: bool) -> Tuple[bytes, int]:
    fd = open_nofollow(real_path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if tail and st.st_size > limit:
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


def read_head(real_path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes from the start of a regular file (never a FIFO, never a link)."""
    return _read_regular(real_path, limit, tail=False)[0]


def read_tail(real_path: str, limit: int) -> Tuple[bytes, int]:
    """The newest ``limit`` bytes of a regular file and its size (logs grow at the end)."""
    return _read_regular(real_path, limit, tail=True)


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


# --- paths inside the root ----------------------------------------------------------------
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


def resolve(ctx: Context, host_path: str) -> Optional[str]:
    """The host path with every symlink resolved inside the root; None when it does not exist.

    Raises HostPathError for loops. Never touches anything outside ``ctx.root``.
    """
    pending = [p for p in host_path.split("/") if p and p != "."]
    done = []  # type: List[str]
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


def quiet_resolve(ctx: Context, host_path: str) -> Optional[str]:
    """``resolve`` for paths looked at only in passing: a loop there is not worth an error."""
    try:
        return resolve(ctx, host_path)
    except HostPathError:
        return None


def list_dir(ctx: Context, host_dir: str) -> List[str]:
    """Sorted entry names of a host folder (through links inside the root); [] if absent."""
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


# --- attribute flags ----------------------------------------------------------------------
# FS_IOC_GETFLAGS is _IOR('f', 1, long): its number depends on the size of a C long.
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20


def file_flags(real_path: str) -> Tuple[Optional[bool], Optional[bool]]:
    """``(immutable, append_only)`` of a regular file or folder; Nones when unknown.

    Attackers ``chattr +i`` their binaries, crontabs and keys so that cleanup fails. Only
    regular files and folders are opened (``O_NOFOLLOW|O_NONBLOCK``): opening a device node
    or a FIFO can have side effects.
    """
    if fcntl is None:
        return None, None
    try:
        mode = os.lstat(real_path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None, None
        fd = os.open(real_path, _O_SAFE)
    except OSError:
        return None, None
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
        flags = struct.unpack("=i", raw[:4])[0]  # the kernel writes an int, whatever the name
    except (OSError, IOError):
        return None, None  # file systems without ext2-style flags (tmpfs, procfs, FUSE)
    finally:
        os.close(fd)
    return bool(flags & FS_IMMUTABLE_FL), bool(flags & FS_APPEND_FL)


# --- users and homes ----------------------------------------------------------------------
def read_users(ctx: Context, report: bool = False) -> List[User]:
    """Accounts from the root's /etc/passwd (``report``: emit errors for broken lines).

    A link is followed inside the root; lines are split on newlines only, so ``line`` is
    what ``sed -n Np`` shows on the host.
    """
    real = ctx.path("/etc/passwd")
    try:
        resolved = resolve(ctx, "/etc/passwd")
        if resolved is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        data = read_head(ctx.path(resolved), PASSWD_MAX_BYTES + 1)
    except (OSError, IOError, HostPathError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        if report or not missing:
            ctx.error(real, "cannot read: %s" % (getattr(exc, "strerror", None) or exc))
        return []
    if len(data) > PASSWD_MAX_BYTES:
        ctx.error(real, "read only the first %d bytes" % PASSWD_MAX_BYTES)
        data = data[:PASSWD_MAX_BYTES]
    users = []  # type: List[User]
    for number, line in enumerate(safe_text(data).split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
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
                ctx.error(real, "line %d: not a passwd entry (%s)" % (number, exc))
    return users


def owner_names(users: List[User]) -> Dict[int, str]:
    """uid -> name of the examined host (first entry wins, as getpwuid does)."""
    names = {}  # type: Dict[int, str]
    for user in users:
        names.setdefault(user.uid, user.name)
    return names


def owner(names: Dict[int, str], uid: int) -> str:
    return names.get(uid, str(uid))


def homes(ctx: Context, users: List[User], walkable: bool = True) -> List[Tuple[str, str]]:
    """``(user, home)`` of every home folder: passwd homes, /root and each /home/* folder.

    Folders under /home without a passwd entry are kept (a deleted or hidden account still
    leaves its keys behind); their user is the folder owner's name, else the folder name.
    ``walkable`` keeps only real folders inside the root that are not system folders, for
    collectors that walk a home or open paths under it directly (a home of ``/`` or
    ``/usr/sbin`` would walk the whole system). Without it every passwd home is kept, for
    the persistence collector, which reads a fixed list of files through ``resolve``: a key
    in ``/.ssh/authorized_keys`` opens an account whose home is ``/``.
    """
    names = owner_names(users)
    candidates = [(u.name, u.home) for u in users]
    candidates.append(("root", "/root"))
    for name in list_dir(ctx, "/home"):
        real = quiet_resolve(ctx, "/home/" + name)
        try:
            st = os.lstat(ctx.path(real)) if real else None
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            candidates.append((names.get(st.st_uid, fs_text(name)), "/home/" + name))
    found = []  # type: List[Tuple[str, str]]
    seen = set()
    for user, home in candidates:
        home = os.path.normpath(home) if home.startswith("/") else ""
        if not home or home in seen or len(found) >= MAX_HOMES:
            continue
        if walkable and (home in _NOT_HOMES or not is_dir(ctx, home)):
            continue
        seen.add(home)
        found.append((user, home))
    return found
