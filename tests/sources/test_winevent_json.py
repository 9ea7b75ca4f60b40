"""Winlogbeat and NXLog JSON lines (plain or zipped): mapping, time zones, broken lines."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from deminer.case import Case
from deminer.scenarios import win_events as gen
from deminer.sources import winevent_json as wj
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest


def parse(path: Path, host: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for table, rows in wj.parse(SourceContext(path, path.name, host, path.parent)):
        (events if table == "events" else errors).extend(rows)
    return events, errors


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def columns(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("host", "event", "event_id", "channel", "program", "record_id", "user", "src_ip", "src_port",
            "logon_type", "process", "pid", "command", "status", "dst_ip", "dst_port")
    return {k: r.get(k) for k in keep}


def test_winlogbeat_lines(tmp_path: Path) -> None:
    evs = gen.intrusion()
    p = tmp_path / "winlogbeat.ndjson"
    p.write_bytes(jsonl([gen.to_winlogbeat(e) for e in evs]))
    assert wj.sniff(p, p.read_bytes()[:65536])
    events, errors = parse(p)
    assert errors == [] and len(events) == 13
    fail = events[0]
    assert (fail["event"], fail["event_id"], fail["record_id"], fail["status"]) == (
        "logon_failure", 4625, 5000, "0xc000006a")
    assert fail["ts"] == dt.datetime(2024, 3, 5, 2, 14, 7, 123000)
    assert fail["source_line"] == 1 and fail["host"] == "ws01.corp.example"
    assert events[12]["event"] == "log_cleared" and events[12]["user"] == "alice"


def test_dotted_ecs_keys(tmp_path: Path) -> None:
    nested = gen.to_winlogbeat(gen.logon(False, user="bob"))

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    p = tmp_path / "flat.json"
    p.write_bytes(jsonl([flat(nested)]))
    assert wj.sniff(p, p.read_bytes())
    (r,), errors = parse(p)
    assert errors == [] and (r["event"], r["user"], r["status"]) == ("logon_failure", "bob", "0xc000006a")


def test_nxlog_local_event_time_is_made_utc(tmp_path: Path) -> None:
    ev = gen.logon(False)
    p = tmp_path / "nxlog.json"
    p.write_bytes(jsonl([gen.to_nxlog(ev, utc_offset_hours=-4, delay_s=3),
                         gen.to_nxlog(ev, utc_offset_hours=5, delay_s=50)]))
    events, errors = parse(p)
    assert errors == []
    # EventTime has whole seconds; both collectors' zones are undone.
    assert [e["ts"] for e in events] == [gen.T0.replace(microsecond=0)] * 2
    d = orjson.loads(events[0]["data"])
    assert "Message" not in d and "EventReceivedTime" not in d and d["TargetUserName"] == "alice"


def test_nxlog_prefers_time_created(tmp_path: Path) -> None:
    rec = gen.to_nxlog(gen.logon()) | {"TimeCreated": "2024-03-05T02:14:07.123Z"}
    p = tmp_path / "a.json"
    p.write_bytes(jsonl([rec]))
    assert parse(p)[0][0]["ts"] == dt.datetime(2024, 3, 5, 2, 14, 7, 123000)


def test_the_three_layouts_agree(tmp_path: Path) -> None:
    # The same events through XML, Winlogbeat and NXLog give the same columns: one mapping.
    from deminer.sources import winevent_xml as wx

    evs = gen.intrusion()
    x = tmp_path / "e.xml"
    x.write_text(gen.export(evs))
    w = tmp_path / "w.json"
    w.write_bytes(jsonl([gen.to_winlogbeat(e) for e in evs]))
    n = tmp_path / "n.json"
    n.write_bytes(jsonl([gen.to_nxlog(e) for e in evs]))
    xml_rows = [r for t, rows in wx.parse(SourceContext(x, "x", None, tmp_path)) for r in rows]
    assert [columns(r) for r in xml_rows] == [columns(r) for r in parse(w)[0]] == [
        columns(r) for r in parse(n)[0]]


def test_broken_line_costs_only_itself(tmp_path: Path) -> None:
    lines = [orjson.dumps(gen.to_winlogbeat(gen.logon(record_id=i))) for i in range(1, 5)]
    lines[1] = lines[1][:40]                                 # cut mid-object
    lines.insert(3, b'{"hello": "not a windows event"}')
    lines.insert(0, b"")
    lines.append(b"\x00\xff\xfe\x1b[2J binary junk")
    p = tmp_path / "x.json"
    p.write_bytes(b"\n".join(lines) + b"\n")
    events, errors = parse(p)
    assert [e["record_id"] for e in events] == [1, 3, 4]
    assert [e["source_line"] for e in events] == [2, 4, 6]
    assert len(errors) == 1 and errors[0]["message"].startswith("3 lines or members skipped")
    assert "x.json line 3: not JSON" in errors[0]["message"]
    assert "line 5: not a Windows event" in errors[0]["message"]


def test_non_utf8_and_control_characters(tmp_path: Path) -> None:
    line = orjson.dumps(gen.to_nxlog(gen.process_creation(command_line="calc.exe\x1b[2J"))).replace(
        b"calc.exe", b"calc\xff.exe")
    p = tmp_path / "x.json"
    p.write_bytes(line + b"\n")
    events, errors = parse(p)
    assert errors == [] and events[0]["command"] == "calc\ufffd.exe\x1b[2J"


def test_huge_line_is_skipped_without_holding_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wj, "MAX_LINE", 2000)
    big = orjson.dumps(gen.to_winlogbeat(gen.script_block("A" * 10_000)))
    p = tmp_path / "x.json"
    p.write_bytes(big + b"\n" + orjson.dumps(gen.to_winlogbeat(gen.logon(user="next"))) + b"\n")
    events, errors = parse(p)
    assert [e["user"] for e in events] == ["next"] and "longer than 2000" in errors[0]["message"]


def test_utf16_lines(tmp_path: Path) -> None:
    p = tmp_path / "ps.json"
    p.write_bytes(codecs.BOM_UTF16_LE + jsonl([gen.to_winlogbeat(gen.logon(user="Jürgen"))]).decode()
                  .encode("utf-16-le"))
    assert wj.sniff(p, p.read_bytes()[:65536])
    assert [e["user"] for e in parse(p)[0]] == ["Jürgen"]


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def test_zip_members_are_streamed(tmp_path: Path) -> None:
    data = jsonl([gen.to_nxlog(e) for e in gen.intrusion()])
    p = _zip(tmp_path / "dataset.zip", {"a/host1.json": data, "README.md": b"# about", "b/host2.json": data})
    assert wj.sniff(p, p.read_bytes()[:65536])
    events, errors = parse(p)
    assert len(events) == 26
    assert events[0]["source"] == "dataset.zip!a/host1.json"
    assert events[13]["source"] == "dataset.zip!b/host2.json"
    assert "README.md: member is not Windows JSON lines" in errors[0]["message"]


def test_zip_without_windows_json_is_not_ours(tmp_path: Path) -> None:
    p = _zip(tmp_path / "other.zip", {"x.txt": b"hello"})
    assert not wj.sniff(p, p.read_bytes()[:65536])


def test_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    data = jsonl([gen.to_nxlog(gen.logon())] * 50)
    p = _zip(tmp_path / "c.zip", {"a.json": data})
    raw = bytearray(p.read_bytes())
    p.write_bytes(bytes(raw[: len(raw) // 2]))           # central directory gone
    with pytest.raises(SourceError, match="zip"):
        parse(p)
    q = tmp_path / "d.zip"
    raw[60:80] = bytes(20)                                 # deflate stream damaged
    q.write_bytes(bytes(raw))
    _, errors = parse(q)
    assert len(errors) == 1 and "unreadable member" in errors[0]["message"]


def test_sniff_negatives(tmp_path: Path) -> None:
    assert not wj.sniff(tmp_path / "a", b'{"level": "info", "msg": "x"}\n')
    assert not wj.sniff(tmp_path / "a", b"EventID: 4624\n")
    assert not wj.sniff(tmp_path / "a", b"PK\x03\x04garbage")


def test_ingest_with_user_host(tmp_path: Path) -> None:
    p = tmp_path / "w.json"
    p.write_bytes(jsonl([gen.to_winlogbeat(e) for e in gen.intrusion()]))
    with Case(None) as case:
        summary = ingest(case, [p], host="Victim-1", sources=(wj.SOURCE,))
        assert summary.errors == []
        hosts = case.query("SELECT DISTINCT host FROM events")
        assert hosts == [{"host": "victim-1"}]
        net = case.query("SELECT dst_ip, dst_port, process FROM events WHERE event = 'network_connection'")
        assert net == [{"dst_ip": "198.51.100.23", "dst_port": 4444,
                        "process": r"C:\Users\Public\svchosts.exe"}]


def test_reader_handles_lines_straddling_buffers() -> None:
    body = b"\n".join(orjson.dumps({"EventID": i, "Channel": "Security"}) for i in range(2000)) + b"\n"
    numbers = [n for n, line in wj._lines(io.BytesIO(body), False) if line]
    assert numbers == list(range(1, 2001))
