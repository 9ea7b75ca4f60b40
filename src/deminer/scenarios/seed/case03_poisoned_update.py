"""Seed case 3: a third-party update package carries the "EternalBlue downloader" (DTLMiner).

The driver-management tool on ``ERP-APP`` fetches an update that drops
``C:\\Windows\\Temp\\svchost.exe``; it registers the tasks ``Ddrivers``, ``DnsScan`` and
``WebServers``, writes ``m.ps1`` (obfuscated Mimikatz) and ``mkatz.ini`` (the dumped
credentials) to ``C:\\Windows\\Temp``, turns the firewall on with a rule closing 445 behind it,
looks up ``i.haqo.net`` / ``p.abbny.com`` and fans out on 445. Its IPC$ guessing reaches
``MES-01`` (network logons that succeed about as often as they fail, for days, and the tasks
registered over the network); EternalBlue takes ``MES-02`` and, from there, the subsidiary's
``SUB-PC01``. ``QA-PC`` is patched with its own password (failed logons only, clean);
``WH-PC`` came as hives only (unknown). In January the responders delete the tasks on
``ERP-APP`` and they are back within minutes. The sensor is Suricata.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios import win_events as wg
from deminer.scenarios.net_logs import MS17_010, Alert, Network
from deminer.scenarios.seed.common import Persist, Truth, resolve_names, utc
from deminer.scenarios.seed.hosts_windows import WinBox, workstation

START = utc("2023-11-02 07:00:00")
TEMP_SVCHOST = r"C:\Windows\Temp\svchost.exe"
UPDATER = r"C:\Program Files (x86)\DTLSoft\DriverHelper\DTLUpdate.exe"
ENC = "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA"
TASKS = {
    "Ddrivers": ("cmd.exe", f"/c powershell -nop -w hidden -ep bypass -enc {ENC}"),
    "DnsScan": (TEMP_SVCHOST, ""),
    "WebServers": (TEMP_SVCHOST, "-p 445"),
}
DOMAINS = (("i.haqo.net", "198.51.100.131"), ("p.abbny.com", "198.51.100.132"))
NETSH = r"C:\Windows\System32\netsh.exe"


def _dtl(box: WinBox, at: dt.datetime, parent: str, truth: Truth, logon_id: str = "0x3e7",
         author: str = "SYSTEM") -> None:
    """What the downloader leaves on a host it owns."""
    box.process(at, TEMP_SVCHOST, f"{TEMP_SVCHOST} -k netsvcs", parent)
    for i, (name, (command, args)) in enumerate(TASKS.items()):
        box.task(at + dt.timedelta(seconds=5 + i), name, command, args, author=author, logon_id=logon_id)
    for path, size in ((TEMP_SVCHOST, 3_485_184), (r"C:\Windows\Temp\m.ps1", 2_164_211),
                       (r"C:\Windows\Temp\mkatz.ini", 1_418)):
        box.file(path, size, at + dt.timedelta(seconds=30), content_seed=path.rsplit("\\", 1)[1])
    box.process(at + dt.timedelta(seconds=40), NETSH, "netsh advfirewall set allprofiles state on",
                TEMP_SVCHOST)
    box.process(at + dt.timedelta(seconds=41), NETSH, 'netsh advfirewall firewall add rule name="deny445" '
                "dir=in protocol=tcp localport=445 action=block", TEMP_SVCHOST)
    truth.infect(box.name.lower(), at, *(Persist("task", "\\" + n) for n in TASKS))


def _fanout(box: WinBox, at: dt.datetime, targets: int = 40) -> None:
    """Sysmon 3: the Temp svchost.exe connecting to port 445 all over its subnet, and its C2 lookups."""
    prefix = ".".join(box.ip.split(".")[:3])
    for name, ip in DOMAINS:
        box.add(wg.sysmon_dns(query=name, answers=f"::ffff:{ip};", image=TEMP_SVCHOST, time=at))
    for i in range(targets):
        box.add(wg.sysmon_network(image=TEMP_SVCHOST, src_ip=box.ip, dst_ip=f"{prefix}.{100 + i}",
                                  dst_port=445, time=at + dt.timedelta(seconds=i)))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(3, "Poisoned third-party update carrying the EternalBlue downloader", "poisoned_update")
    erp = WinBox("ERP-APP", "10.3.1.15", START, product="Windows Server 2008 R2 Standard", version="6.1",
                 build="7601", sp="Service Pack 1")
    mes1, mes2 = workstation("MES-01", "10.3.2.21", START), workstation("MES-02", "10.3.2.22", START)
    sub = workstation("SUB-PC01", "10.3.5.31", START)
    qa = workstation("QA-PC", "10.3.2.40", START, patched=True)
    wh = workstation("WH-PC", "10.3.3.50", START)
    for box, verdict in ((erp, "infected"), (mes1, "infected"), (mes2, "infected"), (sub, "infected"),
                         (qa, "clean"), (wh, "unknown")):
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"erp-app"}
    net = Network(start=START, seed=3, resolver="10.3.0.2")

    # 1. The update: the vendor's updater starts the dropper, which becomes Temp\svchost.exe.
    t0 = utc("2023-11-02 10:05:00")
    erp.process(t0 - dt.timedelta(minutes=2), UPDATER, f'"{UPDATER}" /silent /update',
                r"C:\Windows\System32\services.exe")
    _dtl(erp, t0, UPDATER, truth)
    _fanout(erp, t0 + dt.timedelta(minutes=2))
    net.now = t0
    for name, ip in DOMAINS:
        net.lookup(erp.ip, name, [ip])

    # 2. IPC$ guessing from ERP-APP, day after day: MES-01 and QA-PC.
    users = ["administrator", "admin", "user", "test", "guest", "administrator"]
    for box, ok in ((mes1, True), (qa, False)):
        for day in range(4):
            base = utc("2023-11-02 10:30:00") + dt.timedelta(days=day)
            for i in range(12):
                t = base + dt.timedelta(seconds=30 * i)
                box.logon(t, users[i % len(users)], erp.ip, ok=False, workstation="ERP-APP")
                if ok:
                    box.logon(t + dt.timedelta(seconds=2), "administrator", erp.ip, workstation="ERP-APP",
                              logon_id=f"0x{0x7a000 + day * 100 + i:x}")
    t_mes1 = utc("2023-11-02 10:31:02")
    _dtl(mes1, t_mes1 + dt.timedelta(seconds=3), r"C:\Windows\System32\svchost.exe", truth,
         logon_id=f"0x{0x7a000 + 2:x}", author="administrator")
    truth.infected_at["mes-01"] = t_mes1
    truth.edge("erp-app", "mes-01", "smb_brute_force", t_mes1)

    # 3. EternalBlue: ERP-APP -> MES-02 -> SUB-PC01 (the sensor's MS17-010 alerts).
    for src, dst, at in ((erp, mes2, utc("2023-11-02 11:10:00")), (mes2, sub, utc("2023-11-02 14:25:00"))):
        net.now = at - dt.timedelta(seconds=15)
        c = net.conn(src.ip, dst.ip, 445, service="smb", duration=7.0, orig_bytes=130_000, resp_bytes=3_000,
                     orig_pkts=170, resp_pkts=40)
        for sig in MS17_010:
            net.alerts.append(Alert(c.ts + dt.timedelta(seconds=1), c, sig, "smb"))
        _dtl(dst, at, r"C:\Windows\System32\lsass.exe", truth)
        _fanout(dst, at + dt.timedelta(minutes=1), targets=20)
        truth.edge(src.name.lower(), dst.name.lower(), "eternalblue", at)
        for name, ip in DOMAINS:
            net.lookup(dst.ip, name, [ip])
    net.smb_worm(erp.ip, "10.3.2.", count=60, answered=0, vulnerable=0)
    net.now = utc("2023-11-03 01:00:00")
    resolve_names(net, "10.3.9.20", {b.name.lower(): b.ip for b in (erp, mes1, mes2, sub, qa, wh)})

    # 4. January: the responders delete the tasks on ERP-APP; the malware puts them back.
    t_del = utc("2024-01-15 09:00:00")
    erp.logon(t_del - dt.timedelta(minutes=5), "Administrator", "10.3.9.9", logon_type=10, logon_id="0x5a1f2")
    for i, (name, (command, args)) in enumerate(TASKS.items()):
        erp.task_deleted(t_del + dt.timedelta(seconds=i), name, "Administrator")
        erp.task(t_del + dt.timedelta(minutes=10, seconds=i), name, command, args)

    for box in (erp, mes1, mes2, sub, qa):
        box.write(out)
    wh.write(out, logs=False)
    (out / "sensor").mkdir(parents=True, exist_ok=True)
    net.write_eve(out / "sensor" / "eve.json")

    for name in ("erp-app", "mes-02", "sub-pc01"):
        truth.want(name, "defense_evasion.win_svchost_outside_system32")
        truth.want(name, "command_and_control.net_pool_dns", needs="network")
    for name in ("erp-app", "mes-01", "mes-02", "sub-pc01"):
        truth.want(name, "defense_evasion.win_firewall_or_defender_tamper")
    truth.want("erp-app", "persistence.win_task_readded")
    truth.want("mes-01", "initial_access.win_brute_force_success", "lateral_movement.win_remote_task")
    truth.want("mes-02", "lateral_movement.net_eternalblue_traits", needs="network")
    truth.want("sub-pc01", "lateral_movement.net_eternalblue_traits", needs="network")
    truth.want("erp-app", "lateral_movement.net_worm_fanout", needs="network")
    truth.clean_may = {"credential_access.win_smb_brute_force",
                       "credential_access.password_guessing_against_windows_logons"}
    truth.notes.append("MES-01's logon storm (success about equal to failure, four days) is the worm's IPC$ "
                       "guessing; its tasks were registered in one of those network sessions.")
    return truth
