"""Collector: one ``processes`` row per process of the examined host, hidden ones included.

Reads ``ctx.proc()`` (the live /proc, or a ``proc/`` folder under ``--root``): parentage,
name, threads, memory and start time from ``stat``, the owner from ``status``, the command
line, the executable (hashed once per binary, its content saved when it looks planted), cwd,
``LD_PRELOAD`` from ``environ`` and CPU use sampled over ``ctx.cpu_window`` seconds. While it
walks ``/proc/PID/fd`` it also notes which process holds which socket, for ``sockets``.

Hidden processes (a libprocesshider-style ld.so.preload hook, or a kernel rootkit) are
found by comparing three views of /proc (see ``procfs``) and emitted with ``hidden=True``.
"""

import errno
import hashlib
import os
import stat
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from deminer.collect import hostfs, sockets
from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso
from deminer.collect.procfs import Lister, find_hidden, getdents_listdir, pids_in, read_proc, status_field

SUSPICIOUS_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/")
CMDLINE_CAP = 256 * 1024
ENVIRON_CAP = 4 * 1024 * 1024
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel cuts process names to this
_PF_KTHREAD = 0x00200000
_GONE = (errno.ENOENT, errno.ESRCH)
_DENIED = (errno.EACCES, errno.EPERM)


# The fields of /proc/PID/stat used here; ticks = utime + stime, starttime = ticks after boot.
Stat = NamedTuple("Stat", [("comm", bytes), ("state", str), ("ppid", int), ("flags", int),
                           ("ticks", int), ("threads", int), ("starttime", int),
                           ("rss_pages", int)])


def parse_stat(data: bytes) -> Optional[Stat]:
    """Parse /proc/PID/stat; the name may hold spaces and parentheses, so split at the last ')'."""
    start, end = data.find(b"("), data.rfind(b")")
    if start < 0 or end < start:
        return None
    f = data[end + 1:].split()
    try:
        return Stat(data[start + 1:end], f[0].decode("ascii"), int(f[1]), int(f[6]),
                    int(f[11]) + int(f[12]), int(f[17]), int(f[19]), int(f[21]))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


class Problems(object):
    """Unreadable /proc files counted per kind, so 300 refusals become one ``errors`` row."""

    def __init__(self) -> None:
        self.seen = {}  # type: Dict[Tuple[str, str, bool], List[int]]

    def add(self, what: str, pid: int, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno in _GONE:
            return  # the process exited while we read it: normal, not an error
        denied = isinstance(exc, OSError) and exc.errno in _DENIED
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        self.seen.setdefault((what, reason, denied), []).append(pid)

    def flush(self, ctx: Context) -> None:
        not_root = hasattr(os, "geteuid") and os.geteuid() != 0
        for (what, reason, denied), pids in sorted(self.seen.items()):
            source = "/proc/%d/%s" % (pids[0], what) if len(pids) == 1 else "/proc/*/" + what
            more = ", ..." if len(pids) > 5 else ""
            ctx.error(source, "cannot read %s of %d process%s (pid %s%s): %s%s" % (
                what, len(pids), "" if len(pids) == 1 else "es",
                ", ".join(str(p) for p in pids[:5]), more, reason,
                " (other users' processes; not running as root)" if denied and not_root else ""))
        self.seen = {}


def _cmd_args(data: bytes) -> List[bytes]:
    args = data.split(b"\0")
    while args and not args[-1]:
        args.pop()  # the trailing NUL, and the padding of processes that rewrote their argv
    return args


def _env_value(env: bytes, name: bytes) -> Optional[str]:
    for item in env.split(b"\0"):
        if item.startswith(name + b"="):
            return safe_text(item[len(name) + 1:])
    return None


def _sysconf(name: str, default: int) -> int:
    try:
        return int(os.sysconf(name)) or default
    except (ValueError, OSError, AttributeError):
        return default


def _hidden_dir(path: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in path.split("/"))


class _Reader(object):
    """Reads one process at a time, with what is shared across processes cached."""

    def __init__(self, ctx: Context, live: bool, problems: Problems) -> None:
        self.ctx, self.live, self.problems = ctx, live, problems
        self.users = hostfs.owner_names(hostfs.read_users(ctx))
        self.clk = _sysconf("SC_CLK_TCK", 100)
        self.page = _sysconf("SC_PAGE_SIZE", 4096)
        self.btime = None  # type: Optional[int]
        try:
            for line in read_proc(ctx.proc("stat"), 1 << 20).splitlines():
                if line.startswith(b"btime "):
                    self.btime = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        self.hashes = {}  # type: Dict[Tuple[int, int], Optional[str]]
        self.saved: Set[Tuple[int, int]] = set()
        self.owners = {}  # type: Dict[int, int]

    def _try(self, what: str, pid: int, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except OSError as exc:
            self.problems.add(what, pid, exc)
            return None

    def _host(self, path: str) -> str:
        """Where a path named by a process is: on this host when /proc is live, else in root."""
        return path if self.live else self.ctx.path(path)

    def row(self, pid: int, before: Optional[Tuple[float, int, int]], hidden: bool
            ) -> Optional[Dict[str, Any]]:
        d = self.ctx.proc(str(pid))
        try:
            data = read_proc(d + "/stat", 4096)
        except OSError as exc:
            self.problems.add("stat", pid, exc)
            return None
        now, st = time.monotonic(), parse_stat(data)
        if st is None:
            self.problems.add("stat", pid, ValueError("malformed, not a /proc stat line"))
            return None
        args = _cmd_args(self._try("cmdline", pid, read_proc, d + "/cmdline", CMDLINE_CAP) or b"")
        status = self._try("status", pid, read_proc, d + "/status") or b""
        uid_field = status_field(status, b"Uid")
        uid = int(uid_field[1]) if len(uid_field) > 1 and uid_field[1].isdigit() else None
        cpu = None
        if before is not None and now > before[0] and before[2] == st.starttime:  # same process
            cpu = round(max(0, st.ticks - before[1]) * 100.0 / self.clk / (now - before[0]), 1)
        row = {"source": "/proc/%d" % pid, "pid": pid, "ppid": st.ppid, "name": safe_text(st.comm),
               "cmdline": safe_text(b" ".join(args)), "uid": uid,
               "user": self.users.get(uid) if uid is not None else None,
               "started": utc_iso(self.btime + st.starttime / float(self.clk))
               if self.btime is not None else None,
               "cpu_percent": cpu, "rss": st.rss_pages * self.page, "threads": st.threads,
               "hidden": hidden, "exe": None, "exe_deleted": None, "exe_sha256": None,
               "cwd": None, "ld_preload": None}  # type: Dict[str, Any]
        if st.flags & _PF_KTHREAD or (not args and 2 in (pid, st.ppid)):
            row.update(exe="", exe_deleted=False)  # kernel threads have no executable
            return row
        cwd = self._try("cwd", pid, os.readlink, d + "/cwd")
        row["cwd"] = fs_text(cwd) if cwd is not None else None
        env = self._try("environ", pid, read_proc, d + "/environ", ENVIRON_CAP)
        if env is not None:
            row["ld_preload"] = _env_value(env, b"LD_PRELOAD")
        self._exe(row, pid, d, st.comm, args, cwd)
        for inode in self._try("fd", pid, sockets.socket_inodes, d + "/fd") or ():
            self.owners.setdefault(inode, pid)
        return row

    def _exe(self, row: Dict[str, Any], pid: int, d: str, comm: bytes, args: List[bytes],
             cwd: Optional[str]) -> None:
        link = d + "/exe"
        target = self._try("exe", pid, os.readlink, link)
        if target is None:
            return
        deleted = target.endswith(" (deleted)")
        path = target[:-len(" (deleted)")] if deleted else target
        # Under --root a deleted binary is gone; whatever sits at its path now is another file.
        content = link if self.live else None if deleted else self._in_root(path)
        info = _stat(content) if content is not None else None
        if deleted and info is not None and self._same(target, info):
            deleted, path = False, target  # a file really named "... (deleted)"
        row.update(exe=fs_text(path), exe_deleted=deleted)
        if info is None or content is None:
            return
        key = (info.st_dev, info.st_ino)
        digest = self.hashes.get(key)
        want = deleted or path.startswith(SUSPICIOUS_DIRS) or _hidden_dir(path) \
            or not self._name_fits(comm, path, args, cwd, info)
        if want and key not in self.saved and info.st_size <= self.ctx.max_file_bytes:
            # Kept for YARA: once per binary; bigger files are only hashed to keep the bundle small.
            self.saved.add(key)
            digest = self.ctx.save_file(content) or digest
        if digest is None and key not in self.hashes:
            if self.ctx.time_left() > 0:
                digest = self._try("exe content", pid, _sha256, content)
            else:
                self.problems.add("exe content", pid, ValueError("not hashed: time budget ran out"))
        self.hashes[key] = digest
        row["exe_sha256"] = digest

    def _in_root(self, path: str) -> Optional[str]:
        """The executable's file inside --root, refusing links that could lead out of it."""
        real = self.ctx.path(path)
        try:
            return real if stat.S_ISREG(os.lstat(real).st_mode) else None
        except OSError:
            return None

    def _same(self, path: str, info: os.stat_result) -> bool:
        other = _stat(self._host(path))
        return other is not None and (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)

    def _name_fits(self, comm: bytes, path: str, args: List[bytes], cwd: Optional[str],
                   info: os.stat_result) -> bool:
        """Is the process named after what it runs? Renamed miners (kswapd0...) are not."""
        name = os.fsdecode(comm)
        if name == os.path.basename(path)[:COMM_LEN]:
            return True
        # Otherwise argv[0] must still lead to the executable (python3 -> python3.11 and
        # sh -> dash are symlinks), and the name be argv[0]'s or, for a script started by its
        # #! line (argv = interpreter, [option,] script), the script's.
        arg0 = os.fsdecode(args[0]) if args else ""
        base = os.path.basename(arg0)
        cands = [os.path.join(os.path.dirname(path), base)] if base else []
        if "/" in arg0 and (cwd or arg0.startswith("/")):
            cands.append(os.path.join(cwd or "/", arg0))  # a relative argv[0] is from the cwd
        if not any(self._same(c, info) for c in cands):
            return False
        return name in [os.path.basename(os.fsdecode(a))[:COMM_LEN] for a in args[:3]]


def _stat(path: str) -> Optional[os.stat_result]:
    """stat() following links: through /proc/PID/exe it reaches even a deleted binary."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sample(ctx: Context, pids: List[int]) -> Dict[int, Tuple[float, int, int]]:
    """First CPU reading: (when, utime + stime, start time) per pid."""
    out = {}  # type: Dict[int, Tuple[float, int, int]]
    for pid in pids:
        try:
            st = parse_stat(read_proc(ctx.proc("%d/stat" % pid), 4096))
        except OSError:
            continue
        if st is not None:
            out[pid] = (time.monotonic(), st.ticks, st.starttime)
    return out


def proc_is_live(ctx: Context) -> bool:
    return os.path.realpath(ctx.proc()) == "/proc"


def collect(ctx: Context, listdir: Optional[Lister] = None,
            raw_listdir: Optional[Lister] = None) -> None:
    """Emit every process; ``listdir``/``raw_listdir`` replace the two /proc listings in tests."""
    lister = listdir or os.listdir  # type: Lister
    listed = pids_in(lister, ctx.proc())
    live = proc_is_live(ctx)
    if listed is None:
        if live:  # a mounted image without /proc is normal; a live host without it is not
            ctx.error("/proc", "cannot list processes")
        return
    hidden = find_hidden(ctx, listed, lister, raw_listdir or getdents_listdir) if listed else set()
    pids = sorted(listed | hidden)
    problems = Problems()
    before = {}  # type: Dict[int, Tuple[float, int, int]]
    window = min(ctx.cpu_window, ctx.time_left() / 4.0)
    if live and window > 0 and pids:
        # One sleep for all processes: the second reading is taken as each row is read.
        before = _sample(ctx, pids)
        time.sleep(window)
    reader = _Reader(ctx, live, problems)
    for pid in pids:  # ascending, so a socket shared after fork goes to its lowest pid
        row = reader.row(pid, before.get(pid), pid in hidden)
        if row is not None:
            ctx.emit("processes", row)
    setattr(ctx, sockets.OWNERS_ATTR, reader.owners)
    problems.flush(ctx)
