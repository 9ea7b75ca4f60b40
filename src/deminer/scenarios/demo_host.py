"""The demo host: one Linux web server after a cryptomining intrusion, as a tree under a root.

SSH brute force from one address cracks root; a dropper plants cron, systemd, rc, profile,
ld.so.preload and authorized_keys persistence; a masquerading miner runs from a hidden tmp
folder with its file deleted, connected to a pool. Processes and sockets are written as a
/proc tree, so ``deminer scan --root`` reads the whole host without running anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from deminer.scenarios import linux_host
from deminer.scenarios.auth_log import AuthLog
from deminer.scenarios.proc_tree import FakeProc
from deminer.scenarios.treefs import INFECTED_MTIME, write

ATTACKER_IP = "203.0.113.50"
ADMIN_IP = "192.0.2.10"
POOL_IP = "198.51.100.23"          # RFC 5737 documentation address standing for the pool
HOST_IP = "10.0.0.5"
LOG_START = dt.datetime(2024, 3, 2, 1, 0)

MINER_CONFIG = {
    "autosave": True, "donate-level": 1,
    "cpu": {"enabled": True, "huge-pages": True, "max-threads-hint": 75},
    "randomx": {"1gb-pages": False},
    "pools": [{"url": linux_host.POOL, "user": linux_host.WALLET, "pass": "x", "keepalive": True,
               "tls": True, "algo": "rx/0"}],
}


def write_processes(root: Path, infected: bool = True) -> None:
    """A /proc tree: the usual daemons, plus the miners and their pool socket when infected."""
    proc = FakeProc(root, btime=INFECTED_MTIME - 86400 * 30)
    proc.addresses([HOST_IP])
    proc.add(1, b"systemd", cmdline=[b"/sbin/init"], exe="/usr/lib/systemd/systemd", ppid=0)
    proc.add(612, b"sshd", cmdline=[b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"],
             exe="/usr/sbin/sshd", sockets=(30001,))
    proc.add(640, b"cron", cmdline=[b"/usr/sbin/cron", b"-f", b"-P"], exe="/usr/sbin/cron")
    proc.add(700, b"nginx", cmdline=[b"nginx: master process /usr/sbin/nginx"], exe="/usr/sbin/nginx",
             sockets=(30002,))
    proc.add(701, b"nginx", uid=33, cmdline=[b"nginx: worker process"], exe="/usr/sbin/nginx", ppid=700)
    proc.add(800, b"postgres", uid=105, cmdline=[b"/usr/lib/postgresql/15/bin/postgres", b"-D",
                                                  b"/var/lib/postgresql/15/main"],
             exe="/usr/lib/postgresql/15/bin/postgres", ticks=(5_000_000, 100_000))
    proc.add(2, b"kthreadd", ppid=0, flags=0x00200000 | 0x40, cwd=None)
    proc.add(95, b"kswapd0", ppid=2, flags=0x00200000 | 0x40, cwd=None)
    proc.tcp(30001, ("0.0.0.0", 22), ("0.0.0.0", 0), "LISTEN")
    proc.tcp(30002, ("0.0.0.0", 80), ("0.0.0.0", 0), "LISTEN")
    proc.tcp(30101, (HOST_IP, 22), (ADMIN_IP, 50022))
    if not infected:
        return
    proc.add(4242, b"kdevtmpfsi", uid=33, ppid=1, starttime=2_600_000, ticks=(9_000_000, 40_000),
             cmdline=[b"kdevtmpfsi", b"-o", linux_host.POOL.encode(), b"-u", linux_host.WALLET.encode(),
                      b"--donate-level", b"1", b"--cpu-max-threads-hint", b"75", b"-a", b"rx/0",
                      b"-k", b"--tls"],
             exe=f"{linux_host.MINER_PATH} (deleted)", cwd="/tmp/.ICE-unix", sockets=(30100,))
    proc.add(4250, b"kworkerds", uid=33, ppid=1, cmdline=[b"[kworker/0:2]"],
             exe="/var/tmp/.sys/update", cwd="/var/tmp/.sys")
    proc.tcp(30100, (HOST_IP, 50514), (POOL_IP, 3333))


def write_auth_log(root: Path, infected: bool = True) -> None:
    """/var/log/auth.log: admin logins, and the brute force that cracked root when infected."""
    log = AuthLog(host=linux_host.HOSTNAME, start=LOG_START)
    log.benign_login("admin", ADMIN_IP)
    log.cron("root", "cd / && run-parts --report /etc/cron.hourly")
    if infected:
        log.brute_force(ATTACKER_IP, ["root", "admin", "test", "oracle", "ubuntu"], attempts=180,
                        success_user="root")
    log.sudo("admin", "/usr/bin/systemctl status nginx")
    log.benign_login("admin", ADMIN_IP)
    path = root / "var/log/auth.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log.write(path)
    stamp = (LOG_START + dt.timedelta(days=1)).replace(tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))


def write_clean_demo_host(root: Path) -> Path:
    """The same server before the intrusion: daemons, admin logins, normal jobs and keys."""
    linux_host.write_clean_host(root)
    write_processes(root, infected=False)
    write_auth_log(root, infected=False)
    return root


def write_demo_host(root: Path) -> Path:
    """Write the demo host under ``root`` and return it."""
    linux_host.write_infected_host(root)
    write(root, "/tmp/.ICE-unix/config.json", json.dumps(MINER_CONFIG, indent=2), 0o644, INFECTED_MTIME)
    write(root, "/var/tmp/.sys/update", b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"xmrig " * 8,
          0o755, INFECTED_MTIME)
    write_processes(root)
    write_auth_log(root)
    return root
