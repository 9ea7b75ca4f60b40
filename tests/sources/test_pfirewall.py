"""Windows Firewall logs (pfirewall.log) → flows of the host that wrote them, in UTC.

Logs are written here in XP's 1.5 layout and Windows 10's (``pid`` added), in local time;
the host's time zone comes from a real SYSTEM hive written with hivex (those tests skip
without it), laid out as a copy of ``C:\\`` the way KAPE or the seed cases do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import hives as hg
from deminer.scenarios import web_logs
from deminer.sources import SOURCES, host_timezone, pfirewall, windows_tree
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest, pick_source
from tests.hivex import skip_without_hivex

XP_FIELDS = ["date", "time", "action", "protocol", "src-ip", "dst-ip", "src-port", "dst-port", "size",
             "tcpflags", "tcpsyn", "tcpack", "tcpwin", "icmptype", "icmpcode", "info", "path"]
WIN10_FIELDS = [*XP_FIELDS, "pid"]
OWN, TEACHER, GATEWAY = "192.168.10.21", "192.168.10.18", "192.168.10.1"
Row = dict[str, Any]


@dataclasses.dataclass
class Record:
    """One line of a firewall log; ``when`` is the host's local time, as Windows writes it."""

    when: dt.datetime
    action: str
    protocol: str
    src: str
    dst: str
    src_port: int | None = None
    dst_port: int | None = None
    size: int | None = None
    flags: str | None = None
    info: int | None = None
    path: str | None = None
    pid: int | None = None

    def values(self) -> dict[str, str]:
        def text(value: object) -> str:
            return "-" if value is None else str(value)
        syn = "1795018745" if self.flags else None
        return {"date": f"{self.when:%Y-%m-%d}", "time": f"{self.when:%H:%M:%S}", "action": self.action,
                "protocol": self.protocol, "src-ip": self.src, "dst-ip": self.dst,
                "src-port": text(self.src_port), "dst-port": text(self.dst_port), "size": text(self.size),
                "tcpflags": text(self.flags), "tcpsyn": text(syn), "tcpack": text(0 if syn else None),
                "tcpwin": text(65535 if syn else None), "icmptype": "-", "icmpcode": "-",
                "info": text(self.info), "path": text(self.path), "pid": text(self.pid)}


def firewall_log(records: list[Record], fields: list[str] = XP_FIELDS, software: bool = True) -> str:
    """A pfirewall.log as Windows writes it: header block, a blank line, CRLF line ends."""
    lines = ["#Version: 1.5", *(["#Software: Microsoft Windows Firewall"] if software else []),
             "#Time Format: Local", "#Fields: " + " ".join(fields), ""]
    lines += [" ".join(r.values()[f] for f in fields) for r in records]
    return "\r\n".join(lines) + "\r\n"


def local(hh_mm_ss: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2024-03-18 {hh_mm_ss}")


def classroom() -> list[Record]:
    """A student PC's day: DNS, a dropped scan, the teacher's SMB, a log that wrapped."""
    return [
        Record(local("08:00:00"), "OPEN", "UDP", OWN, GATEWAY, 1025, 53),
        Record(local("08:00:30"), "CLOSE", "UDP", OWN, GATEWAY, 1025, 53),          # pairs with the OPEN
        Record(local("15:59:58"), "CLOSE", "TCP", OWN, "10.9.9.9", 1100, 80),      # its OPEN wrapped away
        Record(local("16:00:05"), "DROP", "TCP", "192.168.10.66", OWN, 4000, 445, size=48, flags="S",
               path="RECEIVE"),
        Record(local("16:00:06"), "DROP", "TCP", "192.168.10.66", OWN, 4001, 139, size=40, flags="A",
               path="RECEIVE"),
        Record(local("16:05:00"), "INFO-EVENTS-LOST", "-", "-", "-", info=7),
        Record(local("16:13:09"), "OPEN-INBOUND", "TCP", TEACHER, OWN, 1030, 445),
        Record(local("16:13:49"), "CLOSE", "TCP", TEACHER, OWN, 1030, 445),
        Record(local("16:20:00"), "DROP", "ICMP", "192.168.10.66", OWN, path="RECEIVE", size=60),
    ]


def bias(minutes: int) -> int:
    """A signed bias as the REG_DWORD Windows stores (UTC+8's -480 is 0xFFFFFE20)."""
    return minutes & 0xFFFFFFFF


def drive_copy(top: Path, zone: list[hg.Value] | None, computer: str = "STU-PC01", current: int = 1,
               other_zone: list[hg.Value] | None = None) -> Path:
    """``top/C``: a copy of C:\\ with a SYSTEM hive naming ``computer`` and holding ``zone`` as
    the current control set's TimeZoneInformation (``other_zone`` in the other control set)."""
    config = top / "C/Windows/System32/config"
    config.mkdir(parents=True)
    keys = [hg.Key("Select", [hg.dword("Current", current), hg.dword("Default", current)])]
    for number, values in ((current, zone), (3 - current, other_zone)):
        keys.append(hg.Key(f"ControlSet{number:03d}\\Control\\ComputerName\\ComputerName",
                           [hg.sz("ComputerName", computer)]))
        if values is not None:
            keys.append(hg.Key(f"ControlSet{number:03d}\\Control\\TimeZoneInformation", values))
    hg.write_hive(config / "SYSTEM", "SYSTEM", keys)
    return top / "C"


CHINA = [hg.dword("Bias", bias(-480)), hg.dword("ActiveTimeBias", bias(-480)),
         hg.sz("StandardName", "China Standard Time"), hg.dword("DaylightBias", bias(-60))]


def parse(path: Path, host: str | None = None) -> tuple[list[Row], list[Row]]:
    flows: list[Row] = []
    errors: list[Row] = []
    for table, rows in pfirewall.parse(SourceContext(path, path.name, host, path.parent)):
        assert isinstance(rows, list)
        (flows if table == "flows" else errors).extend(rows)
    for f in flows:
        f["data"] = json.loads(f["data"])
    return flows, errors


def brief(f: Row) -> tuple[Any, ...]:
    return (f["ts"], f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["proto"], f["state"],
            f["data"].get("action"), f["data"].get("path"))


@pytest.fixture(autouse=True)
def fresh() -> None:
    windows_tree.detect_windows_root.cache_clear()


# -- the format ---------------------------------------------------------------------------------


def test_xp_log_in_a_drive_copy_becomes_utc_flows_of_its_host(tmp_path: Path) -> None:
    skip_without_hivex()
    root = drive_copy(tmp_path / "kape" / "STU-PC01", CHINA)
    log = root / "WINDOWS" / "pfirewall.log"          # XP's place; case differs from the hive's path
    log.parent.mkdir(exist_ok=True)
    log.write_text(firewall_log(classroom()), newline="")
    flows, errors = parse(log)                        # no --host: the drive copy's hive names it
    utc = dt.timedelta(hours=8)
    assert [brief(f) for f in flows] == [
        (local("08:00:00") - utc, OWN, 1025, GATEWAY, 53, "udp", None, "OPEN", None),
        (local("15:59:58") - utc, OWN, 1100, "10.9.9.9", 80, "tcp", None, "CLOSE", None),
        (local("16:00:05") - utc, "192.168.10.66", 4000, OWN, 445, "tcp", "S0", "DROP", "RECEIVE"),
        (local("16:00:06") - utc, "192.168.10.66", 4001, OWN, 139, "tcp", "OTH", "DROP", "RECEIVE"),
        (local("16:13:09") - utc, TEACHER, 1030, OWN, 445, "tcp", None, "OPEN-INBOUND", None),
        (local("16:20:00") - utc, "192.168.10.66", None, OWN, None, "icmp", "S0", "DROP", "RECEIVE"),
    ]
    assert {f["host"] for f in flows} == {"stu-pc01"}
    assert [f["source_line"] for f in flows] == [6, 8, 9, 10, 12, 14]
    assert flows[2]["data"] == {"action": "DROP", "path": "RECEIVE", "size": 48, "tcp_flags": "S",
                                "tcp_syn": 1795018745, "tcp_ack": 0, "tcp_win": 65535}
    # The only note: events the firewall itself lost. The zone was known, so no timezone row.
    assert [(e["stage"], e["host"]) for e in errors] == [("ingest", "stu-pc01")]
    assert "7 event(s) it did not log (INFO-EVENTS-LOST)" in errors[0]["message"]


def test_columns_follow_the_fields_header(tmp_path: Path) -> None:
    records = classroom()
    for r in records:
        r.pid = 4 if r.action != "INFO-EVENTS-LOST" else None
        r.path = r.path or ("SEND" if r.src == OWN else "RECEIVE")   # Windows 10 always names it
    shuffled = list(WIN10_FIELDS)
    random.Random(5).shuffle(shuffled)
    results = []
    for name, fields in (("xp", XP_FIELDS), ("win10", WIN10_FIELDS), ("shuffled", shuffled)):
        log = tmp_path / f"{name}.log"
        log.write_text(firewall_log(records, fields), newline="")
        flows, errors = parse(log, host="PC1")
        results.append([brief(f) for f in flows])
        assert {f["data"].get("pid") for f in flows} == ({None} if name == "xp" else {4}), name
        assert [e["stage"] for e in errors] == ["ingest", "timezone"], name   # lost events; no hive
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 6 and results[0][0][-1] == "SEND"


def test_a_new_header_mid_file_starts_a_new_layout(tmp_path: Path) -> None:
    """Logs joined together (pfirewall.log.old + pfirewall.log): each block has its own fields."""
    old = [Record(local("09:00:00"), "ALLOW", "TCP", OWN, GATEWAY, 50000, 443, path="SEND", pid=880)]
    new = [Record(local("10:00:00"), "DROP", "UDP", GATEWAY, OWN, 67, 68, size=328, path="RECEIVE")]
    log = tmp_path / "pfirewall.log"
    log.write_text(firewall_log(old, WIN10_FIELDS) + firewall_log(new, XP_FIELDS[::-1]), newline="")
    flows, errors = parse(log, host="pc1")
    assert [(brief(f), f["data"].get("pid")) for f in flows] == [
        ((local("09:00:00"), OWN, 50000, GATEWAY, 443, "tcp", None, "ALLOW", "SEND"), 880),
        ((local("10:00:00"), GATEWAY, 67, OWN, 68, "udp", "S0", "DROP", "RECEIVE"), None)]
    assert [e["stage"] for e in errors] == ["timezone"]


def test_a_close_pairs_with_its_open_in_either_direction(tmp_path: Path) -> None:
    log = tmp_path / "pfirewall.log"
    log.write_text(firewall_log([
        Record(local("09:00:00"), "OPEN-INBOUND", "TCP", TEACHER, OWN, 1030, 445),
        Record(local("09:00:40"), "CLOSE", "TCP", OWN, TEACHER, 445, 1030),
        Record(local("09:01:00"), "CLOSE", "TCP", TEACHER, OWN, 1030, 445)]),  # nothing open: kept
        newline="")
    flows, _ = parse(log, host="pc1")
    assert [(f["ts"], f["data"]["action"]) for f in flows] == [(local("09:00:00"), "OPEN-INBOUND"),
                                                               (local("09:01:00"), "CLOSE")]


# -- time zones ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "other", "current", "to_utc", "name"), [
    # daylight saving in force at collection: ActiveTimeBias (240) wins over Bias (300)
    ([hg.dword("Bias", 300), hg.dword("ActiveTimeBias", 240), hg.sz("StandardName", "Eastern Standard Time"),
      hg.sz("TimeZoneKeyName", "Eastern Standard Time")], None, 1, dt.timedelta(hours=4),
     "Eastern Standard Time"),
    # no ActiveTimeBias: Bias alone (India, UTC+5:30)
    ([hg.dword("Bias", bias(-330)), hg.sz("StandardName", "India Standard Time")], None, 1,
     dt.timedelta(hours=-5, minutes=-30), "India Standard Time"),
    # Select\Current = 2: ControlSet002's zone, not ControlSet001's
    ([hg.dword("Bias", bias(-60)), hg.dword("ActiveTimeBias", bias(-60))], CHINA, 2,
     dt.timedelta(hours=-1), None),
], ids=["active-bias", "bias-only", "current-control-set"])
def test_the_hive_of_the_same_drive_copy_gives_the_zone(
        tmp_path: Path, zone: list[hg.Value], other: list[hg.Value] | None, current: int,
        to_utc: dt.timedelta, name: str | None) -> None:
    skip_without_hivex()
    root = drive_copy(tmp_path / "WS01", zone, computer="WS01", current=current, other_zone=other)
    log = root / "Windows/System32/LogFiles/Firewall/pfirewall.log"      # Vista and later
    log.parent.mkdir(parents=True)
    log.write_text(firewall_log([Record(local("12:00:00"), "ALLOW", "TCP", OWN, GATEWAY, 50000, 443,
                                        path="SEND", pid=4)], WIN10_FIELDS), newline="")
    found = host_timezone.time_zone_for(log)
    assert (found.bias, found.name, found.problem) == (to_utc.total_seconds() // 60, name, None)
    assert found.hive == root / "Windows/System32/config/SYSTEM"
    flows, errors = parse(log)
    assert [(f["ts"], f["host"]) for f in flows] == [(local("12:00:00") + to_utc, "ws01")]
    assert errors == []


def test_without_a_hive_times_are_taken_as_utc_and_said_so(tmp_path: Path) -> None:
    log = tmp_path / "pfirewall.log"
    log.write_text(firewall_log(classroom()[:1]), newline="")
    flows, errors = parse(log, host="STU-PC01")
    assert [(f["ts"], f["host"]) for f in flows] == [(local("08:00:00"), "stu-pc01")]
    assert [(e["stage"], e["host"], e["source"]) for e in errors] == [
        ("timezone", "stu-pc01", "pfirewall.log")]
    assert "times were taken as UTC because the host's time zone is unknown" in errors[0]["message"]
    assert "no SYSTEM hive" in errors[0]["message"]
    # a log with no lines needs no zone: no row
    log.write_text(firewall_log([]), newline="")
    assert parse(log) == ([], [])


def test_a_hive_without_time_zone_information_is_named(tmp_path: Path) -> None:
    skip_without_hivex()
    root = drive_copy(tmp_path / "PC2", None, computer="PC2")
    log = root / "WINDOWS/pfirewall.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(firewall_log(classroom()[:1]), newline="")
    flows, errors = parse(log)
    assert [(f["ts"], f["host"]) for f in flows] == [(local("08:00:00"), "pc2")]
    assert [e["stage"] for e in errors] == ["timezone"]
    assert str(root / "Windows/System32/config/SYSTEM") in errors[0]["message"]
    assert "TimeZoneInformation" in errors[0]["message"]


def test_folder_ingest_of_a_kape_tree(tmp_path: Path) -> None:
    """What ``deminer investigate`` does with a triage folder: host and zone from the tree."""
    skip_without_hivex()
    root = drive_copy(tmp_path / "triage" / "STU-PC01", CHINA)
    log = root / "WINDOWS/pfirewall.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(firewall_log(classroom()), newline="")
    before = log.read_bytes()
    with Case(None) as case:
        summary = ingest(case, [tmp_path / "triage"])
        assert summary.errors == []
        assert case.query("SELECT host, ts, src_ip, dst_port FROM flows WHERE dst_port = 445 "
                          "AND json_extract_string(data, '$.action') = 'OPEN-INBOUND'") == [
            {"host": "stu-pc01", "ts": local("08:13:09"), "src_ip": TEACHER, "dst_port": 445}]
        assert case.query("SELECT count(*) AS n FROM errors WHERE stage = 'timezone'") == [{"n": 0}]
    assert log.read_bytes() == before


# -- bad input ----------------------------------------------------------------------------------


def test_garbage_lines_are_counted_and_the_rest_is_read(tmp_path: Path) -> None:
    good = firewall_log(classroom()[:1]).split("\r\n")
    lines = ["2024-03-18 07:00:00 OPEN UDP 1.2.3.4 5.6.7.8 1 2 - - - - - - - - -",   # before #Fields
             *good[:5], good[5],
             "hello there",
             "2024-13-45 08:00:00 OPEN UDP 1.2.3.4 5.6.7.8 1 2 - - - - - - - - -",
             "2024-03-18 08:00:00 OPEN UDP 1.2.3.4 5.6.7.8 1 99999 - - - - - - - - -",
             "2024-03-18 08:00:00 OPEN UDP 1.2.3.4 5.6.7.8 1 2 - - - - - - - - - extra",
             "\x00" * 300,                                  # a crash's zero padding
             "2024-03-18 08:00:01 OPEN UDP 1.2.3.4 5.6.7.8 1 2 - - - - - - - -",          # no path: fine
             ""]
    log = tmp_path / "pfirewall.log"
    log.write_bytes("\r\n".join(lines).encode())
    flows, errors = parse(log, host="pc1")
    assert [(f["ts"], f["src_ip"]) for f in flows] == [(local("08:00:00"), OWN),
                                                       (local("08:00:01"), "1.2.3.4")]
    ingest_errors = [e for e in errors if e["stage"] == "ingest"]
    assert len(ingest_errors) == 1
    message = ingest_errors[0]["message"]
    assert "5 unreadable line(s) skipped" in message and "line 1: no #Fields header before it" in message
    # the zero padding is a hole, reported apart (evidence completeness), not a bad line
    zeros = [e["message"] for e in errors if e["stage"] == "completeness"]
    assert len(zeros) == 1 and zeros[0].startswith("300 zero bytes in 1 zero-filled region(s), "
                                                   f"the first before line {lines.index(chr(0) * 300) + 1}")
    assert pfirewall.sniff(log, log.read_bytes())        # zeros in the head: still a text log


def test_a_binary_file_named_pfirewall_log(tmp_path: Path) -> None:
    blob = tmp_path / "pfirewall.log"
    blob.write_bytes(bytes(range(256)) * 64)
    assert pfirewall.sniff(blob, blob.read_bytes())               # claimed by name: a clear error
    assert not pfirewall.sniff(tmp_path / "blob.bin", blob.read_bytes())
    with pytest.raises(SourceError, match="binary content"):
        parse(blob)
    empty = tmp_path / "empty" / "pfirewall.log"          # logging just switched on: no error
    empty.parent.mkdir()
    empty.write_bytes(b"")
    assert pfirewall.sniff(empty, b"") and parse(empty) == ([], [])
    good = tmp_path / "good" / "pfirewall.log"
    good.parent.mkdir()
    good.write_text(firewall_log(classroom()), newline="")
    with Case(None) as case:
        summary = ingest(case, [blob, good], host="pc1")
        assert summary.errors == [f"{blob}: pfirewall: binary content, not a Windows Firewall log"]
        assert case.count("flows") == 6                                   # the good file still went in
        assert blob.read_bytes() == bytes(range(256)) * 64


# -- sniffing -------------------------------------------------------------------------------------


def test_sniffing_keeps_w3c_logs_apart(tmp_path: Path) -> None:
    """IIS logs are W3C too: each of web_access and pfirewall keeps its own files."""
    iis = web_logs.attack_story().write(tmp_path / "u_ex240330.log", fmt="iis")
    xp = tmp_path / "a.log"
    xp.write_text(firewall_log(classroom()), newline="")
    bare = tmp_path / "b.log"                    # no #Software line: the #Fields header decides
    bare.write_text(firewall_log(classroom(), WIN10_FIELDS, software=False), newline="")
    zipped = tmp_path / "pfirewall.log.gz"
    zipped.write_bytes(gzip.compress(xp.read_bytes(), mtime=0))

    def picked(path: Path) -> str | None:
        source = pick_source(path, path.read_bytes()[:65536], SOURCES)
        return source.name if source else None
    assert picked(iis) == "web_access"
    assert [picked(p) for p in (xp, bare, zipped)] == ["pfirewall"] * 3
    assert not pfirewall.sniff(iis, iis.read_bytes())
    flows, _ = parse(zipped, host="pc1")
    assert len(flows) == 6


# -- property -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_case() -> Iterator[Case]:
    with Case(None) as case:
        yield case


TOKEN = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1,
                max_size=12) | st.sampled_from(["-", "TCP", "UDP", "DROP", "CLOSE", "OPEN", "2024-03-18",
                                                "08:00:00", "445", "1.2.3.4", "99999"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(TOKEN, min_size=1, max_size=19).map(" ".join), max_size=8),
       fields=st.permutations(WIN10_FIELDS))
def test_hostile_lines_never_break_the_reader_or_the_case(
        tmp_path: Path, shared_case: Case, lines: list[str], fields: list[str]) -> None:
    log = tmp_path / "pfirewall.log"
    log.write_text("#Fields: " + " ".join(fields) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    batches = list(pfirewall.parse(SourceContext(log, log.name, "pc1", tmp_path)))
    flows = [r for table, rows in batches if table == "flows" for r in rows]
    assert len(flows) <= len(lines)
    assert all(isinstance(f["ts"], dt.datetime) for f in flows)
    shared_case.add_batches(batches)
