"""A Linux host of a seed-case scenario: a tree under a temp root, collected by the real collector.

``LinuxBox`` starts from ``deminer.scenarios.linux_host``'s stock server (packaged units,
logrotate/certbot cron jobs, the admin's key: the noise every real server has), gives it its
name and address (``/etc/hosts``, ``/etc/os-release``, a kernel ``/proc`` with its own address
in ``/proc/net/fib_trie`` and in its sockets), and lets a case add what its story leaves:
cron lines, units, keys, dropped files, processes with their pool sockets, shell history
and an ``auth.log`` (``AuthLog``). ``collect`` then runs ``deminer.collect.main.collect`` on
the tree, as a responder runs the collector on a mounted disk, and writes the bundle to
``CASE/<host>/<host>.tar.gz``. A host can lose its logs or its processes (``logs=False``,
``proc=False``): the evidence a responder often lacks.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from pathlib import Path

from deminer.collect.main import collect
from deminer.scenarios import linux_host
from deminer.scenarios.auth_log import AuthLog
from deminer.scenarios.proc_tree import FakeProc
from deminer.scenarios.seed.common import epoch
from deminer.scenarios.treefs import public_key, ssh_string, write

HZ = 100                                   # USER_HZ: /proc/PID/stat counts these
ADMIN_IP = "192.0.2.10"                    # the admins' jump desk (RFC 5737)
SHADOW_HASH = "$6$rounds=5000$saltsalt$" + "x" * 86


def openssh_private_key(seed: str, comment: str) -> tuple[str, str]:
    """An unencrypted openssh-key-v1 ed25519 key file and its public line (deterministic)."""
    blob = base64.b64decode(public_key("ssh-ed25519", seed))
    pub = blob[-32:]
    secret = hashlib.sha512(seed.encode()).digest()
    check = struct.pack(">II", 0x5EED5EED, 0x5EED5EED)
    inner = (check + ssh_string(b"ssh-ed25519") + ssh_string(pub) + ssh_string(secret)
             + ssh_string(comment.encode()))
    inner += bytes(range(1, 1 + (-len(inner)) % 8))
    body = (b"openssh-key-v1\x00" + ssh_string(b"none") + ssh_string(b"none") + ssh_string(b"")
            + struct.pack(">I", 1) + ssh_string(blob) + ssh_string(inner))
    text = base64.b64encode(body).decode()
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    return key, f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def fib_trie(ip: str) -> str:
    """/proc/net/fib_trie of a host with one /24 interface (the lines ``ip route`` reads)."""
    net = ".".join(ip.split(".")[:3])
    return (f"Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
            f"     +-- {net}.0/24 2 0 2\n        |-- {net}.0\n           /24 link UNICAST\n"
            f"        |-- {ip}\n           /32 host LOCAL\n        |-- {net}.255\n"
            f"           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n"
            f"           /32 host LOCAL\n")


class LinuxBox:
    """One Linux host's tree; the case adds its story, ``collect`` makes the bundle."""

    def __init__(self, work: Path, name: str, ip: str, boot: dt.datetime, log_start: dt.datetime,
                 os_name: str = "Ubuntu 22.04.4 LTS", seed: int = 7) -> None:
        self.name, self.ip, self.boot = name, ip, boot
        self.root = work / "trees" / name
        linux_host.write_clean_host(self.root, name)
        write(self.root, "/etc/hosts", f"127.0.0.1\tlocalhost\n{ip}\t{name}.corp.example {name}\n")
        write(self.root, "/etc/os-release", f'NAME="{os_name.split()[0]}"\nPRETTY_NAME="{os_name}"\n')
        write(self.root, "/etc/machine-id", hashlib.md5(name.encode()).hexdigest() + "\n")
        write(self.root, "/etc/shadow", "".join(
            f"{u}:{SHADOW_HASH if u in ('root', 'admin', 'deploy') else '*'}:19500:0:99999:7:::\n"
            for u in ("root", "daemon", "www-data", "sshd", "admin", "deploy", "nobody")), 0o640)
        # Its own host key: known_hosts entries elsewhere name this host by it.
        host_key, self.host_key = openssh_private_key(f"host:{name}", f"root@{name}")
        write(self.root, "/etc/ssh/ssh_host_ed25519_key", host_key, 0o600)
        write(self.root, "/etc/ssh/ssh_host_ed25519_key.pub", self.host_key + "\n")
        self.auth = AuthLog(host=name, start=log_start, seed=seed)
        self.proc = FakeProc(self.root, btime=epoch(boot))
        (self.root / "proc/net/fib_trie").write_text(fib_trie(ip))
        self._inode = 40000
        self.proc.add(1, b"systemd", cmdline=[b"/sbin/init"], exe="/usr/lib/systemd/systemd", ppid=0,
                      starttime=1)
        self.proc.add(2, b"kthreadd", ppid=0, flags=0x00200000 | 0x40, cwd=None, starttime=1)
        self.proc.add(480, b"rsyslogd", cmdline=[b"/usr/sbin/rsyslogd", b"-n", b"-iNONE"],
                      exe="/usr/sbin/rsyslogd", starttime=400)
        self.proc.add(640, b"cron", cmdline=[b"/usr/sbin/cron", b"-f", b"-P"], exe="/usr/sbin/cron",
                      starttime=420)
        self.listen(612, b"sshd", [b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"],
                    "/usr/sbin/sshd", 22)
        # The responder's own session: it also puts the host's address in its socket table.
        self.proc.add(3100, b"sshd", cmdline=[b"sshd: admin [priv]"], exe="/usr/sbin/sshd", ppid=612,
                      sockets=(self._socket((ip, 22), (ADMIN_IP, 50022)),), starttime=self._ticks(log_start))

    # -- processes ----------------------------------------------------------------------------
    def _ticks(self, when: dt.datetime) -> int:
        return max(1, int((when - self.boot).total_seconds() * HZ))

    def _socket(self, local: tuple[str, int], remote: tuple[str, int], state: str = "ESTABLISHED") -> int:
        self._inode += 1
        self.proc.tcp(self._inode, local, remote, state)
        return self._inode

    def listen(self, pid: int, comm: bytes, cmdline: list[bytes], exe: str, port: int, uid: int = 0) -> None:
        self.proc.add(pid, comm, uid=uid, cmdline=cmdline, exe=exe, starttime=450,
                      sockets=(self._socket(("0.0.0.0", port), ("0.0.0.0", 0), "LISTEN"),))

    def process(self, pid: int, comm: bytes, cmdline: list[bytes], exe: str, started: dt.datetime,
                remote: tuple[str, int] | None = None, uid: int = 0, cwd: str = "/",
                cpu_seconds: int = 0, ppid: int = 1) -> None:
        """A process started at ``started``; ``remote`` gives it an established TCP socket."""
        sockets = (self._socket((self.ip, 40000 + pid % 20000), remote),) if remote else ()
        ticks = cpu_seconds * HZ
        self.proc.add(pid, comm, uid=uid, cmdline=cmdline, exe=exe, cwd=cwd, sockets=sockets, ppid=ppid,
                      starttime=self._ticks(started), ticks=(ticks * 9 // 10 + 7, ticks // 10 + 3))

    # -- files -----------------------------------------------------------------------------------
    def file(self, path: str, content: str | bytes, when: dt.datetime, mode: int = 0o644) -> None:
        write(self.root, path, content, mode, epoch(when))

    def append(self, path: str, text: str, when: dt.datetime) -> None:
        real = self.root / path.lstrip("/")
        old = real.read_bytes() if real.exists() else b""
        mode = real.stat().st_mode & 0o7777 if real.exists() else 0o600
        write(self.root, path, old + text.encode(), mode, epoch(when))

    def crontab(self, user: str, line: str, when: dt.datetime) -> None:
        """A line added to ``user``'s crontab (``crontab -l`` style file, mode 600)."""
        path = f"/var/spool/cron/crontabs/{user}"
        if not (self.root / path.lstrip("/")).exists():
            self.file(path, "# DO NOT EDIT THIS FILE - edit the master and reinstall.\n", when, 0o600)
        self.append(path, line.rstrip("\n") + "\n", when)

    def unit(self, name: str, text: str, when: dt.datetime, folder: str = "/etc/systemd/system",
             wanted_by: str = "multi-user.target") -> None:
        """A systemd unit, enabled (its ``.wants`` symlink) as ``systemctl enable`` does."""
        self.file(f"{folder}/{name}", text, when)
        link = self.root / f"etc/systemd/system/{wanted_by}.wants/{name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(f"{folder}/{name}")

    def authorized_key(self, user: str, line: str, when: dt.datetime) -> None:
        home = "/root" if user == "root" else f"/home/{user}"
        self.append(f"{home}/.ssh/authorized_keys", line + "\n", when)

    def private_key(self, user: str, seed: str, when: dt.datetime) -> str:
        """An unencrypted key in ``~/.ssh/id_ed25519``; returns its public line."""
        home = "/root" if user == "root" else f"/home/{user}"
        key, pub = openssh_private_key(seed, f"{user}@{self.name}")
        self.file(f"{home}/.ssh/id_ed25519", key, when, 0o600)
        self.file(f"{home}/.ssh/id_ed25519.pub", pub + "\n", when)
        return pub

    def known_host(self, user: str, pattern: str, other: LinuxBox, when: dt.datetime) -> None:
        """``ssh`` from here to ``other`` (as ``pattern``) recorded its host key in known_hosts."""
        home = "/root" if user == "root" else f"/home/{user}"
        key_type, blob, _ = other.host_key.split(" ", 2)
        self.append(f"{home}/.ssh/known_hosts", f"{pattern} {key_type} {blob}\n", when)

    def history(self, user: str, commands: list[tuple[dt.datetime, str]]) -> None:
        """A bash history with ``HISTTIMEFORMAT`` stamps (``#epoch`` before each command)."""
        home = "/root" if user == "root" else f"/home/{user}"
        text = "".join(f"#{epoch(t)}\n{c}\n" for t, c in commands)
        self.file(f"{home}/.bash_history", text, commands[-1][0], 0o600)

    # -- the bundle --------------------------------------------------------------------------------
    def collect(self, case_dir: Path, logs: bool = True, proc: bool = True) -> Path:
        """Write the auth log, run the collector on the tree and return the bundle path."""
        if logs:
            path = self.root / "var/log/auth.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.auth.write(path)
        if not proc:
            # A disk image of a powered-off host: no /proc to read.
            for p in sorted(self.proc.proc.rglob("*"), reverse=True):
                p.unlink() if p.is_symlink() or p.is_file() else p.rmdir()
            self.proc.proc.rmdir()
        folder = case_dir / self.name
        folder.mkdir(parents=True, exist_ok=True)
        out, _ = collect(root=str(self.root), output=str(folder / f"{self.name}.tar.gz"), budget=60,
                         cpu_window=0, nice=False)
        return Path(out)


WALLET = "4" + "8bWqN3k" * 13 + "gHzq7Lm"          # 98 characters of Monero-wallet shape, not real


def miner(box: LinuxBox, pid: int, path: str, started: dt.datetime, pool: str, pool_ip: str,
          port: int = 3333, comm: bytes = b"kworkerds", wallet: str = WALLET, uid: int = 0,
          ppid: int = 1) -> None:
    """An XMRig-family miner running from ``path`` with its pool socket, busy for hours."""
    folder = path.rsplit("/", 1)[0]
    box.file(path, b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"XMRig " * 16 + b"stratum+tcp://", started,
             0o755)
    box.process(pid, comm, [path.encode(), b"-o", f"{pool}:{port}".encode(), b"-u", wallet.encode(), b"-k",
                            b"--donate-level", b"1", b"-B"],
                path, started, remote=(pool_ip, port), uid=uid, cwd=folder, cpu_seconds=36_000, ppid=ppid)


def accepted_at(box: LinuxBox, ip: str) -> dt.datetime:
    """When the last ``Accepted …`` login from ``ip`` was logged on ``box``."""
    times = [r.ts for r in box.auth.records
             if r.message.startswith("Accepted ") and f" from {ip} " in r.message]
    if not times:
        raise ValueError(f"{box.name}: no accepted login from {ip}")
    return times[-1]
