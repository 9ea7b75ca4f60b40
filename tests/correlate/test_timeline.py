"""The merged timeline and its Timesketch JSONL / CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

from deminer.case import Case
from deminer.correlate import correlate, write_timeline
from deminer.correlate.timeline import FIELDS, build_timeline
from tests.correlate.builders import OUTSIDE, add, at, brute_success, finding, host, miner


def _case(case: Case) -> list[str]:
    host(case, "web1", "10.0.0.5", collected=at(6000))
    host(case, "db1", "10.0.0.9", collected=at(6000))
    case.add("events", [
        {"host": "web1", "ts": at(10), "event": "logon_success", "program": "sshd", "user": "root",
         "src_ip": OUTSIDE, "status": "password", "source": "/var/log/auth.log", "source_line": 47,
         "raw": "Accepted password for root from 203.0.113.7 port 46779 ssh2\x1b[2J"},
        # The same machine's Windows logs name it by FQDN: one host in the timeline.
        {"host": "db1.corp.example", "ts": at(30), "event": "logon_success", "channel": "Security",
         "event_id": 4624, "user": "CORP\\admin", "src_ip": "10.0.0.5", "source": "Security.evtx",
         "record_id": 9001, "raw": None}])
    case.add("flows", [{"ts": at(31), "src_ip": "10.0.0.5", "src_port": 50001, "dst_ip": "10.0.0.9",
                        "dst_port": 445, "proto": "tcp", "app": "smb", "state": "SF", "bytes": 4096,
                        "source": "sensor.pcap", "source_line": 3}])
    first = brute_success("web1", OUTSIDE, at(10))
    first.evidence.update(source="/var/log/auth.log", source_line=47)
    twin = finding("credential_access.ssh_brute_force", "web1", at(8), severity="medium", source__ip=OUTSIDE,
                   source="/var/log/auth.log", source_line=47)   # points at the same line
    rdp = finding("initial_access.win_brute_force_success", "db1.corp.example", at(30), severity="critical",
                  source__ip="10.0.0.5", logon_type=3, record=9001, source="Security.evtx",
                  success_ts="2024-03-30T08:30:00Z")
    eb = finding("lateral_movement.net_eternalblue_traits", "db1", at(31), source__ip="10.0.0.5",
                 overflows=1, source="sensor.pcap", source_line=3)
    undated = finding("impact.known_miner_name", "db1", None, entity="=cmd|' /C calc'!A0")
    return add(case, first, twin, rdp, eb, miner("web1", at(12)), undated)


def test_timeline_merges_findings_events_flows_and_correlation(tmp_path: Path) -> None:
    with Case(None) as case:
        ids = _case(case)
        out = correlate(case)
        # The password guess and the exploit between the same two hosts are one edge.
        [edge] = out.edges
        assert (edge.src, edge.dst, edge.technique) == ("web1", "db1", "eternalblue")
        assert "; also smb_brute_force at 2024-03-30 08:30:00 UTC" in edge.reason
        entries = build_timeline(case)
        jsonl, csv_path = write_timeline(case, tmp_path / "out")
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(entries) == 11
    assert all(set(r) == set(FIELDS) for r in rows)
    assert [r["datetime"] for r in rows] == sorted(r["datetime"] for r in rows)
    first = rows[0]
    assert first["datetime"] == "2024-03-30T08:08:00+00:00"
    assert first["timestamp"] == int(at(8).replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
    assert first["timestamp_desc"] == "Finding first seen" and first["finding_id"] == ids[1]
    # The auth.log line both web1 findings point at appears once, its control characters escaped.
    events = [r for r in rows if r["timestamp_desc"] == "Event time"]
    assert [(e["host"], e["source"]) for e in events] == [("web1", "/var/log/auth.log:47"),
                                                          ("db1", "Security.evtx:9001")]
    assert events[0]["message"].endswith("ssh2\\x1b[2J") and "\x1b" not in jsonl.read_text(encoding="utf-8")
    assert (events[0]["rule"], events[0]["finding_id"]) == ("initial_access.ssh_brute_force_success", ids[0])
    assert events[1]["message"] == "logon_success user CORP\\admin from 10.0.0.5"
    flow = next(r for r in rows if r["timestamp_desc"] == "Flow start")
    assert flow["message"] == "flow 10.0.0.5:50001 → 10.0.0.9:445 tcp smb state SF 4096 bytes"
    assert (flow["host"], flow["plane"], flow["rule"]) == (
        "web1", "network", "lateral_movement.net_eternalblue_traits")
    infected = [r for r in rows if r["timestamp_desc"] == "Infection time"]
    assert [(r["host"], r["datetime"]) for r in infected] == [("web1", "2024-03-30T08:10:00+00:00"),
                                                               ("db1", "2024-03-30T08:30:00+00:00")]
    moves = [r for r in rows if r["timestamp_desc"] == "Lateral movement"]
    assert [m["message"].split(":")[0] for m in moves] == ["web1 → db1 via eternalblue (high)"]
    assert moves[0]["finding_id"] == ",".join(sorted(ids[2:4]))
    assert {r["host"] for r in rows} == {"web1", "db1"}                  # no FQDN left
    assert ids[5] not in {r["finding_id"] for r in rows}                  # no time: left out
    with csv_path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(FIELDS) and len(table) == len(rows)
    assert [t["message"] for t in table] == [r["message"] for r in rows]


def test_csv_cells_that_look_like_formulas_are_quoted(tmp_path: Path) -> None:
    with Case(None) as case:
        add(case, finding("impact.known_miner_name", "=HYPERLINK(\"http://x\")", at(1), entity="x"))
        _, csv_path = write_timeline(case, tmp_path)
    with csv_path.open(encoding="utf-8", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["host"] == "'=HYPERLINK(\"http://x\")"
    assert row["message"].startswith("[high] impact.known_miner_name on =HYPERLINK")


def test_timeline_without_correlation_or_findings(tmp_path: Path) -> None:
    with Case(None) as case:
        case.add("events", [{"host": "pc-18", "ts": at(-5), "event": "usb_device", "program": "registry",
                             "source": "SYSTEM", "data": '{"serial": "6&2c5c8a7f&0"}'}])
        jsonl, csv_path = write_timeline(case, tmp_path)
    [row] = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert row["message"] == 'USB storage device: {"serial": "6&2c5c8a7f&0"}'
    assert (row["host"], row["plane"], row["timestamp_desc"]) == (
        "pc-18", "windows", "Registry key last written")
    assert csv_path.read_text(encoding="utf-8").startswith(",".join(FIELDS))
