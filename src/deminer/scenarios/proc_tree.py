"""A /proc tree written in the kernel's own file formats, for scenarios and tests.

``--root TREE`` reads ``TREE/proc`` like the live /proc, so a demo host or a golden scenario
can carry processes and sockets (a masquerading miner with a deleted exe and a pool
connection) without running anything.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

PF_KTHREAD = 0x00200000
BTIME = 1_700_000_000
TCP_STATES = {"ESTABLISHED": "01", "SYN_SENT": "02", "LISTEN": "0A", "TIME_WAIT": "06"}


def stat_line(pid: int, comm: bytes, ppid: int = 1, flags: int = 0x400100, ticks: tuple[int, int] = (7, 3),
              threads: int = 1, starttime: int = 4200, rss_pages: int = 250, state: str = "S") -> bytes:
    """A /proc/PID/stat line with all 52 fields, as Linux 5.x/6.x prints it."""
    after = [state, ppid, pid, pid, 0, -1, flags, 120, 0, 0, 0, ticks[0], ticks[1], 0, 0, 20, 0,
             threads, 0, starttime, 3133440, rss_pages, 18446744073709551615] + [0] * 29
    return b"%d (%s) %s\n" % (pid, comm, " ".join(str(v) for v in after).encode())


def _hex_v4(ip: str, port: int) -> str:
    """/proc/net/tcp's address form: the IPv4 address as a little-endian word, port in hex."""
    packed = ipaddress.IPv4Address(ip).packed
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


class FakeProc:
    """A /proc tree under ``root`` (a folder standing for ``/``)."""

    def __init__(self, root: Path, btime: int = BTIME) -> None:
        self.root = root
        self.proc = root / "proc"
        (self.proc / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
        (self.proc / "net").mkdir(exist_ok=True)
        (self.proc / "sys" / "kernel" / "pid_max").write_text("32768\n")
        (self.proc / "stat").write_text(
            f"cpu  1 2 3 4 5 6 7 0 0 0\nintr 0\nctxt 10\nbtime {btime}\nprocesses 900\n")
        (root / "etc").mkdir(exist_ok=True)
        self._tcp: list[str] = []

    def add(self, pid: int, comm: bytes = b"proc", uid: int = 0, cmdline: list[bytes] | None = None,
            environ: list[bytes] | None = None, exe: str | None = None, cwd: str | None = "/",
            sockets: tuple[int, ...] = (), tasks: tuple[int, ...] | None = None, tgid: int | None = None,
            **stat: Any) -> Path:
        """One process; ``exe`` may end in `` (deleted)`` like the kernel shows it."""
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "task").mkdir()
        (d / "stat").write_bytes(stat_line(pid, comm, **stat))
        (d / "status").write_bytes(
            b"Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nNgid:\t0\nPid:\t%d\n"
            b"PPid:\t1\nTracerPid:\t0\nUid:\t%d\t%d\t%d\t%d\nGid:\t0\t0\t0\t0\n"
            % (comm, tgid or pid, pid, uid, uid, uid, uid))
        (d / "cmdline").write_bytes(b"".join(a + b"\0" for a in cmdline or []))
        (d / "environ").write_bytes(b"".join(a + b"\0" for a in environ or []))
        if exe is not None:
            (d / "exe").symlink_to(exe)
        if cwd is not None:
            (d / "cwd").symlink_to(cwd)
        for fd, inode in enumerate(sockets, start=3):
            (d / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")
        (d / "fd" / "0").symlink_to("/dev/null")
        for tid in tasks if tasks is not None else (pid,):
            (d / "task" / str(tid)).mkdir()
        return d

    def tcp(self, inode: int, local: tuple[str, int], remote: tuple[str, int],
            state: str = "ESTABLISHED", uid: int = 0) -> None:
        """One IPv4 TCP socket in /proc/net/tcp (tie it to a process with ``sockets=``)."""
        n = len(self._tcp)
        self._tcp.append(
            f"{n:4d}: {_hex_v4(*local)} {_hex_v4(*remote)} {TCP_STATES[state]} "
            f"00000000:00000000 00:00000000 00000000 {uid:5d}        0 {inode} 1 "
            "0000000000000000 20 4 30 10 -1\n")
        header = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
                  "   uid  timeout inode\n")
        (self.proc / "net" / "tcp").write_text(header + "".join(self._tcp))

    def addresses(self, ips: list[str]) -> None:
        """The host's own IPv4 addresses, in /proc/net/fib_trie's layout (Local table)."""
        body = "".join(f"     |-- {ip}\n        /32 host LOCAL\n" for ip in ["127.0.0.1", *ips])
        (self.proc / "net" / "fib_trie").write_text(
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
            "Local:\n  +-- 0.0.0.0/0 3 0 5\n" + body)

    def file(self, host_path: str, data: bytes) -> Path:
        real = self.root / host_path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(data)
        return real
