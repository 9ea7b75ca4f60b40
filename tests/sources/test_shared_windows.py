"""Windows sources on real evidence (``../shared/data``): exact counts, checked independently.

Every count asserted here is also recomputed without deminer — by matching the compact JSON
pyevtx-rs gives for each record, or by counting the lines of the JSON datasets — so a
disagreement says which side is wrong. Skipped when the evidence folder is absent.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from deminer.case import Case
from deminer.sources import evtx, winevent_json, winevent_xml
from deminer.sources.base import SourceContext
from deminer.sources.ingest import ingest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EVTX = DATA / "windows-evtx"
JSONL = DATA / "windows-jsonl"

pytestmark = pytest.mark.skipif(not EVTX.is_dir() or not JSONL.is_dir(), reason="no ../shared/data")

Rows = list[dict[str, Any]]


@functools.cache
def parsed(path: Path) -> tuple[Rows, Rows]:
    module = evtx if path.suffix == ".evtx" else winevent_json if path.suffix == ".zip" else winevent_xml
    events: Rows = []
    errors: Rows = []
    for table, rows in module.parse(SourceContext(path, path.name, None, path.parent)):
        (events if table == "events" else errors).extend(rows)
    return events, errors


@functools.cache
def raw_records(name: str) -> tuple[str, ...]:
    """Independent view: each record's JSON text straight from pyevtx-rs."""
    import evtx as pyevtx

    return tuple(str(r["data"]) for r in pyevtx.PyEvtxParser(str(EVTX / name)).records_json() if r)


def raw_count(name: str, *needles: str) -> int:
    return sum(all(n in text for n in needles) for text in raw_records(name))


def of(rows: Rows, event: str) -> Rows:
    return [r for r in rows if r["event"] == event]


def data(r: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = orjson.loads(r["data"])
    return d


@pytest.mark.parametrize("name", sorted(p.name for p in EVTX.glob("*.evtx")) if EVTX.is_dir() else [])
def test_every_record_of_every_file_becomes_a_row(name: str) -> None:
    events, errors = parsed(EVTX / name)
    assert len(events) == len(raw_records(name))
    assert [e for e in errors if e["stage"] != "completeness"] == []
    assert all(e["ts"] and e["host"] and e["event_id"] is not None and e["channel"] for e in events)


def test_smb_password_guessing() -> None:
    name = "smb-password-guessing-security.evtx"
    events, errors = parsed(EVTX / name)
    failures = of(events, "logon_failure")
    assert len(failures) == 3561 == raw_count(name, '"EventID":4625')
    assert {(f["logon_type"], f["src_ip"], f["host"]) for f in failures} == {
        (3, "192.168.198.149", "desktop-m5sn04r")}
    assert raw_count(name, '"LogonType":3', '"IpAddress":"192.168.198.149"') == 3561
    bad_password = sum(f["status"] == "0xc000006a" for f in failures)
    assert bad_password == raw_count(name, '"SubStatus":"0xc000006a"') > 0
    # Record 3993 is absent from the export: check against the ids pyevtx reports.
    ids = {int(m) for t in raw_records(name) for m in re.findall(r'"EventRecordID":(\d+)', t)}
    assert set(range(min(ids), max(ids) + 1)) - ids == {3993}
    assert [e["message"].split(" (")[0] for e in errors] == [
        "records 3993 missing from Security on host desktop-m5sn04r"]


def test_password_spray_explicit_logons() -> None:
    name = "password-spray.evtx"
    events, _ = parsed(EVTX / name)
    explicit = of(events, "logon_explicit")
    assert len(explicit) == 294 == raw_count(name, '"EventID":4648')
    assert all(e["user"] and e["dst_host"] for e in explicit)
    assert len({e["user"] for e in explicit}) > 1                  # many accounts: a spray
    assert len(of(events, "log_cleared")) == 1


def test_psexec_service_installs() -> None:
    events, _ = parsed(EVTX / "metasploit-psexec-native-target-system.evtx")
    services = [(data(r)["service_name"], r["process"], r["command"])
                for r in of(events, "service_installed")]
    assert services == [
        ("KgXItsbKgTJzdzwl", r"%SYSTEMROOT%\duKhLYUX.exe", r"%SYSTEMROOT%\duKhLYUX.exe"),
        ("hgabms", r"cmd.exe /c echo hgabms > \\.\pipe\hgabms", r"cmd.exe /c echo hgabms > \\.\pipe\hgabms"),
    ]
    cleared = of(events, "log_cleared")
    assert [(c["user"], c["event_id"], data(c)["cleared_channel"]) for c in cleared] == [
        ("IEUser", 104, "System")]
    security, _ = parsed(EVTX / "metasploit-psexec-native-target-security.evtx")
    starts = of(security, "process_start")
    assert starts[0]["process"] == r"C:\Windows\duKhLYUX.exe" and starts[0]["pid"] == 0xEA0


def test_wmi_persistence() -> None:
    name = "wmi-event-filter-persistance.evtx"
    events, _ = parsed(EVTX / name)
    subs = of(events, "wmi_subscription")
    assert len(subs) == 12 == raw_count(name, '"EventID":5861')
    activity = sum(raw_count(name, f'"EventID":{i}') for i in range(5857, 5861))
    assert len(of(events, "wmi_activity")) == 889 == activity
    rotate = [s for s in subs if data(s)["consumer"] == 'CommandLineEventConsumer="LogRotate Consumer"']
    assert rotate and rotate[0]["command"] == (
        "powershell.exe -noP -ep bypass iex -c "
        "\"('C:\\Users\\john.goldberg\\AppData\\Roaming\\Microsoft\\Office\\Recent\\tmpA7Z2.ps1')\"")
    assert data(rotate[0])["filter_query"] == (
        "SELECT * FROM __InstanceCreationEvent WITHIN 10 WHERE TargetInstance ISA 'Win32_LoggedOnUser'")


def test_obfuscated_powershell_script_blocks() -> None:
    names = [p.name for p in EVTX.glob("Powershell-Invoke-Obfuscation-*.evtx")]
    blocks = [r for n in names for r in of(parsed(EVTX / n)[0], "powershell_script")]
    assert len(blocks) == 372 == sum(raw_count(n, '"EventID":4104') for n in names)
    assert all(b["command"] for b in blocks)


def test_sysmon_process_network_dns() -> None:
    events, _ = parsed(EVTX / "metasploit-sysmon.evtx")
    assert len(of(events, "process_start")) == 33
    (net,) = of(events, "network_connection")
    assert (net["process"], net["src_ip"], net["dst_ip"], net["dst_port"]) == (
        r"C:\hello.exe", "192.168.37.237", "192.168.37.203", 8080)
    wevtutil = [p for p in of(events, "process_start")
                if "wevtutil.exe\" cl security" in (p["command"] or "")]
    assert wevtutil and data(wevtutil[0])["parent_process"]


@pytest.mark.parametrize("name", ["smb-password-guessing-security.evtx",
                                  "metasploit-psexec-native-target-system.evtx", "metasploit-sysmon.evtx",
                                  "wmi-event-filter-persistance.evtx", "new-user-security.evtx",
                                  "disablestop-eventlog.evtx"])
def test_xml_rendering_of_real_records_maps_the_same(tmp_path: Path, name: str) -> None:
    import evtx as pyevtx

    xml = tmp_path / "export.xml"
    xml.write_text("\n".join(str(r["data"]) for r in pyevtx.PyEvtxParser(str(EVTX / name)).records() if r))
    from_xml, xml_errors = parsed(xml)
    from_evtx, _ = parsed(EVTX / name)
    assert xml_errors == []
    keep = ("host", "ts", "event", "event_id", "channel", "program", "record_id", "user", "src_ip",
            "src_port", "logon_type", "process", "pid", "command", "status", "dst_ip", "dst_port")
    assert [{k: r.get(k) for k in keep} for r in from_xml] == [{k: r.get(k) for k in keep} for r in from_evtx]


def test_truncated_copy_keeps_every_whole_record(tmp_path: Path) -> None:
    original = EVTX / "smb-password-guessing-security.evtx"
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(original.read_bytes()[:2_000_000])        # ends inside chunk 30
    events, errors = parsed(cut)
    before = {r["record_id"]: r for r in parsed(original)[0]}
    assert len(events) == 3255                                 # 30 whole chunks + 45 records of the cut one
    assert all(r["data"] == before[r["record_id"]]["data"] and r["ts"] == before[r["record_id"]]["ts"]
               for r in events)
    ingest_errors = [e for e in errors if e["stage"] == "ingest"]
    assert len(ingest_errors) == 1 and "truncated copy" in ingest_errors[0]["message"]


def test_damaged_chunk_loses_only_that_chunk(tmp_path: Path) -> None:
    original = EVTX / "smb-password-guessing-security.evtx"
    raw = bytearray(original.read_bytes())
    start = evtx.HEADER_BLOCK + 5 * evtx.CHUNK_SIZE
    raw[start + 600: start + 700] = b"\xa5" * 100               # the chunk's string table
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(bytes(raw))
    events, errors = parsed(damaged)
    assert len(events) == 3561 - 107                           # chunk 5 held 107 records
    messages = [e["message"] for e in errors]
    assert any("1 parse errors (1 chunk, 0 record)" in m for m in messages)
    assert any(m.startswith("records 2990–3096, 3993 missing from Security") for m in messages)


def test_random_bytes_after_a_real_header(tmp_path: Path) -> None:
    junk = tmp_path / "junk.evtx"
    head = (EVTX / "smb-password-guessing-security.evtx").read_bytes()[:evtx.HEADER_BLOCK]
    junk.write_bytes(head + os.urandom(2 * evtx.CHUNK_SIZE + 1234))
    events, errors = parsed(junk)
    assert events == [] and len(errors) == 1 and "parse errors" in errors[0]["message"]


def _lines(zip_path: Path, *needles: str) -> int:
    with zipfile.ZipFile(zip_path) as zf:
        return sum(all(n in line for n in needles)
                   for info in zf.infolist() for line in zf.read(info).decode().splitlines() if line.strip())


@pytest.mark.parametrize("name,count", [("empire_mimikatz_logonpasswords.zip", 6026),
                                        ("empire_psexec_dcerpc_tcp_svcctl.zip", 4348),
                                        ("schtask_create.zip", 1041)])
def test_json_datasets_parse_whole(name: str, count: int) -> None:
    events, errors = parsed(JSONL / name)
    assert errors == [] and len(events) == count == _lines(JSONL / name)
    assert all(e["ts"] and e["host"] and e["event_id"] is not None for e in events)


def test_psexec_over_svcctl_service() -> None:
    events, _ = parsed(JSONL / "empire_psexec_dcerpc_tcp_svcctl.zip")
    installs = of(events, "service_installed")
    assert sorted(r["event_id"] for r in installs) == [4697, 7045]
    assert {data(r)["service_name"] for r in installs} == {"Updater"}
    assert all(r["host"] == "workstation6.theshire.local" for r in installs)
    assert all("powershell -noP -sta -w 1 -enc" in r["command"] for r in installs)
    image_path = [r for r in of(events, "registry_set")
                  if data(r)["target_object"].endswith(r"\Services\Updater\ImagePath")]
    assert len(image_path) == 1 == _lines(JSONL / "empire_psexec_dcerpc_tcp_svcctl.zip",
                                          r'Services\\Updater\\ImagePath', '"EventID":13')


def test_nxlog_event_time_is_utc_like_sysmon_utctime() -> None:
    # Sysmon's own UtcTime shows the EventTime correction is right on real data.
    events, _ = parsed(JSONL / "empire_psexec_dcerpc_tcp_svcctl.zip")
    sysmon = [e for e in events if e["program"] == "Microsoft-Windows-Sysmon" and "UtcTime" in data(e)]
    assert len(sysmon) == 2941 == _lines(JSONL / "empire_psexec_dcerpc_tcp_svcctl.zip",
                                         '"SourceName":"Microsoft-Windows-Sysmon"', '"UtcTime":')
    for e in sysmon:
        utc = dt.datetime.fromisoformat(data(e)["UtcTime"])
        assert abs(e["ts"] - utc) < dt.timedelta(seconds=2), e["record_id"]


def test_scheduled_task_creation() -> None:
    events, _ = parsed(JSONL / "schtask_create.zip")
    (task,) = [r for r in of(events, "task_created") if r["event_id"] == 4698]
    assert task["command"] == r"C:\Windows\system32\cmd.exe /C C:\Windows\System32\notepad.exe"
    assert data(task)["task_name"] == r"\Microsoft\Windows\SoftwareProtectionPlatform\EventCacheManager"
    assert (task["user"], task["ts"]) == ("pgustavo", dt.datetime(2020, 12, 19, 7, 0, 22, 264000))
    scheduler = [r["event_id"] for r in events
                 if r["channel"] == "Microsoft-Windows-TaskScheduler/Operational"]
    assert sorted(scheduler) == [106, 140]


def test_whole_folders_through_ingest() -> None:
    with Case(None) as case:
        sources = (evtx.SOURCE, winevent_xml.SOURCE, winevent_json.SOURCE)
        summary = ingest(case, [EVTX, JSONL], sources=sources)
        assert summary.errors == [] and summary.files == 26
        assert case.count("events") == 8095 + 6026 + 4348 + 1041
        kinds = case.query("SELECT kind, count(*) AS n FROM inputs GROUP BY kind ORDER BY kind")
        assert kinds == [{"kind": "evtx", "n": 23}, {"kind": "winevent_json", "n": 3}]
        stages = case.query("SELECT DISTINCT stage FROM errors")
        assert stages == [{"stage": "completeness"}]
