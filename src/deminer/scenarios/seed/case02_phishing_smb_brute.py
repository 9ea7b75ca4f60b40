"""Seed case 2: a phishing link on an endpoint, SMB password guessing to a server, then EternalBlue.

A sales employee on ``PC-SALES07`` follows a link in a mail, opens the downloaded
``Invoice_0412.js``; wscript starts PowerShell, which runs the miner in memory and plants a
task (Sysmon saw it all: process tree, DNS, connections). The worm then guesses passwords over
SMB/IPC$ from the endpoint: ``SRV-FILE``'s Administrator password falls and a service runs the
payload there; ``SRV-MAIL`` holds out (failures only, clean). From ``SRV-FILE`` EternalBlue
takes the unpatched ``SRV-ERP``. ``PC-HR02`` is a clean endpoint with the same Sysmon set-up;
``SRV-BACKUP`` came as hives only (unknown). A capture at the core switch holds the
DoublePulsar exchange and the pool sessions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios import win_events as wg
from deminer.scenarios.captures import Capture
from deminer.scenarios.seed.common import Persist, Truth, epoch, utc
from deminer.scenarios.seed.hosts_windows import WinBox, powershell_miner, sid, workstation

LURE = "docs-invoice.top"
LURE_IP, C2, POOL_IP = "203.0.113.140", "198.51.100.9", "198.51.100.77"
START = utc("2024-04-12 07:30:00")
TASK = r"Microsoft\Windows\WindowsUpdate\sihost32"
OUTLOOK = r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE"
EDGE = r"C:\Program Files (x86)\Microsoft\Edge\Application\msedge.exe"
WSCRIPT = r"C:\Windows\System32\wscript.exe"
POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"


def _sysmon(box: WinBox, ev: wg.Event, user: str) -> None:
    assert isinstance(ev.data, dict)
    ev.data["User"] = f"{box.name}\\{user}"
    ev.data["UtcTime"] = ev.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    box.add(ev)


def _browse(box: WinBox, user: str, at: dt.datetime) -> None:
    """Everyday traffic Sysmon logs on an endpoint: the browser resolving and connecting."""
    sites = (("www.bing.com", "204.79.197.200"), ("outlook.office365.com", "52.97.1.2"))
    for i, (name, ip) in enumerate(sites):
        t = at + dt.timedelta(minutes=3 * i)
        _sysmon(box, wg.sysmon_dns(query=name, answers=f"::ffff:{ip};", image=EDGE, time=t), user)
        _sysmon(box, wg.sysmon_network(image=EDGE, src_ip=box.ip, dst_ip=ip, dst_port=443, time=t), user)


def build(out: Path, work: Path) -> Truth:
    truth = Truth(2, "Phishing link on an endpoint, SMB brute force to servers, then EternalBlue", "phishing")
    pc = workstation("PC-SALES07", "10.2.10.57", START, "10")
    hr = workstation("PC-HR02", "10.2.10.62", START, "10", patched=True)
    fs = WinBox("SRV-FILE", "10.2.1.10", START)
    erp = WinBox("SRV-ERP", "10.2.1.20", START, product="Windows Server 2008 R2 Standard", version="6.1",
                 build="7601", sp="Service Pack 1")
    mail = WinBox("SRV-MAIL", "10.2.1.30", START, patched=True)
    bak = WinBox("SRV-BACKUP", "10.2.1.40", START, patched=True)
    for box, verdict in ((pc, "infected"), (fs, "infected"), (erp, "infected"), (hr, "clean"),
                         (mail, "clean"), (bak, "unknown")):
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"pc-sales07"}
    cap = Capture(start=epoch(START))

    # 1. The lure: mail link → browser download → wscript → PowerShell (all in Sysmon).
    _browse(pc, "lwang", utc("2024-04-12 08:40:00"))
    _browse(hr, "mzhou", utc("2024-04-12 08:45:00"))
    t0 = utc("2024-04-12 09:14:00")
    _sysmon(pc, wg.sysmon_process(image=EDGE, command_line=f'"{EDGE}" --single-argument https://{LURE}/inv/0412',
                                  parent=OUTLOOK, parent_cmd=f'"{OUTLOOK}"', pid=6120, time=t0), "lwang")
    _sysmon(pc, wg.sysmon_dns(query=LURE, answers=f"::ffff:{LURE_IP};", image=EDGE,
                              time=t0 + dt.timedelta(seconds=1)), "lwang")
    script = r"C:\Users\lwang\Downloads\Invoice_0412.js"
    t1 = t0 + dt.timedelta(seconds=40)
    # Opened from the browser's download bar: Edge starts the script host.
    _sysmon(pc, wg.sysmon_process(image=WSCRIPT, command_line=f'"{WSCRIPT}" "{script}"', parent=EDGE,
                                  parent_cmd=f'"{EDGE}" --single-argument https://{LURE}/inv/0412',
                                  pid=6444, time=t1), "lwang")
    cradle = powershell_miner(pc, t1 + dt.timedelta(seconds=3), WSCRIPT, C2, TASK, user="lwang")
    _sysmon(pc, wg.sysmon_process(image=POWERSHELL, command_line=cradle, parent=WSCRIPT,
                                  parent_cmd=f'"{WSCRIPT}" "{script}"', pid=6480,
                                  time=t1 + dt.timedelta(seconds=3)), "lwang")
    _sysmon(pc, wg.sysmon_network(image=POWERSHELL, src_ip=pc.ip, dst_ip=POOL_IP, dst_port=4444,
                                  time=t1 + dt.timedelta(seconds=12)), "lwang")
    pc.file(script, 18_422, t0 + dt.timedelta(seconds=20))
    truth.infect("pc-sales07", t1, Persist("task", "\\" + TASK))

    # 2. SMB/IPC$ guessing from the endpoint: SRV-FILE's Administrator falls, SRV-MAIL holds.
    users = ["administrator", "admin", "test", "backup", "administrator"]
    for box, start in ((fs, utc("2024-04-12 09:40:00")), (mail, utc("2024-04-12 09:41:00"))):
        for i in range(150):
            box.logon(start + dt.timedelta(seconds=4 * i), users[i % len(users)], pc.ip, ok=False,
                      workstation="PC-SALES07")
    t_fs = utc("2024-04-12 09:52:00")
    fs.logon(t_fs - dt.timedelta(seconds=20), "Administrator", pc.ip, workstation="PC-SALES07")
    fs.service(t_fs, "kvbrtxqz", r"C:\Windows\kvbrtxqz.exe", installer_sid=sid("Administrator"))
    powershell_miner(fs, t_fs + dt.timedelta(seconds=10), r"C:\Windows\kvbrtxqz.exe", C2, TASK)
    fs.file(r"C:\Windows\kvbrtxqz.exe", 224_768, t_fs)
    truth.edge("pc-sales07", "srv-file", "smb_brute_force", t_fs)
    truth.infect("srv-file", t_fs, Persist("task", "\\" + TASK), Persist("service", "kvbrtxqz"))

    # 3. EternalBlue from SRV-FILE to SRV-ERP (DoublePulsar in the capture).
    t_erp = utc("2024-04-12 10:20:00")
    cap.now = epoch(t_erp) - 5.0
    cap.smb_doublepulsar(fs.ip, erp.ip)
    powershell_miner(erp, t_erp, r"C:\Windows\System32\spoolsv.exe", C2, TASK)
    truth.edge("srv-file", "srv-erp", "eternalblue", t_erp)
    truth.infect("srv-erp", t_erp, Persist("task", "\\" + TASK))

    # Pool sessions of the three miners, and the everyday traffic around them.
    cap.now = epoch(utc("2024-04-12 10:40:00"))
    for box in (pc, fs, erp):
        cap.http_download(box.ip, C2, uri="/x64.bin", host=C2, body=b"MZ\x90\x00" + bytes(300),
                          agent="Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1")
        cap.stratum(box.ip, POOL_IP, port=4444)
    cap.dns(hr.ip, "10.2.0.2", "www.bing.com", answers=[bytes([204, 79, 197, 200])])
    cap.tls(hr.ip, "204.79.197.200", sni="www.bing.com")
    for box in (pc, hr, fs, erp, mail, bak):         # the backup server resolving its list
        cap.dns(bak.ip, "10.2.0.2", f"{box.name.lower()}.corp.example",
                answers=[bytes(int(x) for x in box.ip.split("."))])
    cap.smb2_negotiate(bak.ip, fs.ip)

    for box in (pc, hr, fs, erp, mail):
        box.write(out)
    bak.write(out, logs=False)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    cap.write(out / "sensor" / "core-switch.pcap")

    for name in ("pc-sales07", "srv-file", "srv-erp"):
        truth.want(name, "impact.win_miner_execution")
    truth.want("srv-file", "credential_access.win_smb_brute_force", "initial_access.win_brute_force_success",
               "execution.win_random_service_binary")
    truth.want("srv-mail", "credential_access.win_smb_brute_force")
    truth.want("srv-erp", "lateral_movement.net_eternalblue_traits", needs="network")
    truth.want("pc-sales07", "impact.net_stratum_session", needs="network")
    truth.clean_may = {"credential_access.win_smb_brute_force",
                       "credential_access.password_guessing_against_windows_logons"}
    return truth
