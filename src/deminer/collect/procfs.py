"""Listing /proc when a rootkit may hide processes from it, and small /proc readers.

A libprocesshider-style rootkit in /etc/ld.so.preload hooks libc's ``readdir`` in *every*
process, this collector included, and ``os.listdir`` goes through libc's ``readdir``, so the
miner's pid is silently dropped. Three views are compared::

    os.listdir('/proc')    libc readdir: what ps and top see (a preload hook filters it)
    getdents64 syscall     the kernel's own listing via ctypes (a preload hook cannot touch it)
    os.stat('/proc/PID')   every pid up to the highest seen + PROBE_MARGIN
                           (a kernel rootkit filters getdents but rarely the lookup)

A pid in the second view but not the first, or answering the third but listed by neither
(and not a thread), is hidden. Standard library only, Python 3.6 syntax.
"""

import errno
import os
import struct
import time
from typing import Callable, List, Optional, Set

from deminer.collect import sockets
from deminer.collect.bundle import Context

Lister = Callable[[str], Optional[List[str]]]

PROBE_MARGIN = 1000
PID_MAX_LIMIT = 4194304  # the kernel's ceiling on 64-bit hosts, if pid_max cannot be read
_GETDENTS64 = {"x86_64": 217, "aarch64": 61}
_DIRENT64 = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type; d_name follows


def read_proc(path: str, cap: int = 65536) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(cap)


def getdents_listdir(path: str) -> Optional[List[str]]:
    """Names in ``path`` from the getdents64 syscall itself, bypassing libc's readdir.

    Returns None where the syscall cannot be made (no ctypes, another CPU, seccomp).
    """
    nr = _GETDENTS64.get(os.uname().machine)
    if nr is None:
        return None
    try:
        import ctypes
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (ImportError, OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(1 << 16)
    names = []  # type: List[str]
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            n = syscall(ctypes.c_long(nr), ctypes.c_int(fd), buf, ctypes.c_uint(len(buf)))
            if n < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOSYS, errno.EPERM):
                    return None
                raise OSError(err, os.strerror(err), path)
            if n == 0:
                return names
            data, off = buf.raw[:n], 0
            while off + _DIRENT64.size <= n:
                reclen = _DIRENT64.unpack_from(data, off)[2]
                if reclen < _DIRENT64.size:
                    raise OSError(errno.EIO, "malformed getdents64 record", path)
                name = data[off + _DIRENT64.size:off + reclen].split(b"\0", 1)[0]
                if name not in (b".", b".."):
                    names.append(os.fsdecode(name))
                off += reclen
    finally:
        os.close(fd)


def pids_in(lister: Lister, path: str) -> Optional[Set[int]]:
    try:
        names = lister(path)
    except OSError:
        return None
    return None if names is None else {int(n) for n in names if sockets.is_number(n)}


def status_field(data: bytes, key: bytes) -> List[bytes]:
    for line in data.splitlines():
        if line.startswith(key + b":"):
            return line.split()[1:]
    return []


def _tgid(ctx: Context, pid: int) -> Optional[int]:
    try:
        return int(status_field(read_proc(ctx.proc("%d/status" % pid)), b"Tgid")[0])
    except (OSError, IndexError, ValueError):
        return None


def find_hidden(ctx: Context, listed: Set[int], listdir: Lister, raw_listdir: Lister) -> Set[int]:
    """Pids hidden from ``listdir``: seen by ``raw_listdir`` or only answering ``stat``."""
    raw = pids_in(raw_listdir, ctx.proc()) or set()
    known = listed | raw
    for pid in list(known):
        # Threads answer stat('/proc/TID') without being listed; they are not processes.
        known |= pids_in(listdir, ctx.proc("%d/task" % pid)) or set()
    try:
        pid_max = int(read_proc(ctx.proc("sys/kernel/pid_max")).strip())
    except (OSError, ValueError):
        pid_max = PID_MAX_LIMIT
    # The newest pid the kernel handed out (last field of loadavg) bounds the probe as well:
    # a hidden miner started after many short-lived processes can sit far above every
    # listed pid.
    try:
        last_pid = int(read_proc(ctx.proc("loadavg")).split()[-1])
    except (OSError, ValueError, IndexError):
        last_pid = 0
    top = min(max(max(known), last_pid) + PROBE_MARGIN, pid_max) if known else 0
    # Bounded so that hosts with pid_max at 4M still leave time for the other collectors.
    stop = time.time() + max(2.0, 0.25 * ctx.time_left())
    probed = []  # type: List[int]
    base = ctx.proc()
    for pid in range(1, top + 1):
        if pid & 1023 == 0 and time.time() > stop:
            ctx.error(base, "stopped probing for hidden pids at %d of %d: time budget" % (pid, top))
            break
        if pid not in known:
            try:
                os.stat(os.path.join(base, str(pid)))
            except OSError:
                continue
            probed.append(pid)
    # A pid that shows up in a second listing was born during the probe, not hidden.
    again = pids_in(listdir, base) or set()
    raw_again = pids_in(raw_listdir, base) or set()
    cands = {p for p in raw - listed if p not in again}
    cands |= {p for p in probed if p not in again and p not in raw_again}
    return {p for p in cands if _tgid(ctx, p) in (None, p)}
