"""wevtutil XML exports: layouts, encodings, broken events, and refusing XML bombs."""

from __future__ import annotations

import codecs
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from deminer.case import Case
from deminer.scenarios import win_events as gen
from deminer.sources import winevent_xml as wx
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest


def parse(path: Path, host: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for table, rows in wx.parse(SourceContext(path, path.name, host, path.parent)):
        (events if table == "events" else errors).extend(rows)
    return events, errors


def write(tmp_path: Path, text: str, name: str = "security.xml", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


@pytest.mark.parametrize("root", [False, True], ids=["bare", "rooted"])
def test_export_with_and_without_root(tmp_path: Path, root: bool) -> None:
    evs = gen.intrusion()
    p = write(tmp_path, gen.export(evs, root=root, declaration=root))
    assert wx.sniff(p, p.read_bytes()[:65536])
    events, errors = parse(p)
    assert errors == []
    assert [e["event"] for e in events] == [
        "logon_failure"] * 4 + ["logon_success", "process_start", "service_installed", "task_created",
                                "dns_query", "process_start", "network_connection", "powershell_script",
                                "log_cleared"]
    first = events[0]
    assert (first["host"], first["record_id"], first["source_line"], first["event_id"]) == (
        "ws01.corp.example", 5000, 5000, 4625)
    assert first["ts"] == gen.T0                          # 7-digit SystemTime, naive UTC
    assert first["raw"] == gen.to_xml(evs[0])             # the event's own text
    task = events[7]
    assert task["command"].endswith("powershell.exe -nop -w hidden -enc SQBFAFgA")


def test_escapes_and_unnamed_data(tmp_path: Path) -> None:
    cmd = 'cmd /c "a & b" < in > out \'q\''
    ev = gen.process_creation(command_line=cmd)
    legacy = gen.Event("EventSystem", "{0}", "Application", 4625, ["86400", "SuppressDuplicateDuration"])
    p = write(tmp_path, gen.export([ev, legacy]))
    events, _ = parse(p)
    assert events[0]["command"] == cmd
    assert orjson.loads(events[1]["data"]) == {"param1": "86400", "param2": "SuppressDuplicateDuration"}


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-8", codecs.BOM_UTF8),
                                          ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_powershell_redirected_exports(tmp_path: Path, encoding: str, bom: bytes) -> None:
    # `wevtutil qe Security /f:xml > out.xml` in Windows PowerShell 5 writes UTF-16 LE with a BOM.
    ev = gen.logon(False, user="Jürgen")
    p = tmp_path / "ps.xml"
    p.write_bytes(bom + gen.export([ev, ev]).encode(encoding))
    assert wx.sniff(p, p.read_bytes()[:65536])
    events, errors = parse(p)
    assert errors == [] and [e["user"] for e in events] == ["Jürgen", "Jürgen"]


def test_events_cut_by_read_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wx, "READ_BYTES", 7)
    p = write(tmp_path, gen.export(gen.intrusion(), root=True))
    events, errors = parse(p)
    assert len(events) == 13 and errors == []


def test_broken_event_costs_only_itself(tmp_path: Path) -> None:
    good = [gen.logon(False, record_id=i) for i in (1, 3)]
    broken = gen.to_xml(gen.logon(False, record_id=2)).replace("</EventData>", "</EventDat>")
    p = write(tmp_path, gen.to_xml(good[0]) + broken + gen.to_xml(good[1]))
    events, errors = parse(p)
    assert [e["record_id"] for e in events] == [1, 3]
    assert len(errors) == 1 and errors[0]["stage"] == "ingest"
    assert errors[0]["message"].startswith("1 events skipped") and "not well-formed" in errors[0]["message"]


def test_truncated_export_keeps_whole_events(tmp_path: Path) -> None:
    text = gen.export(gen.intrusion())
    p = write(tmp_path, text[: len(text) - 200])
    events, errors = parse(p)
    assert len(events) == 12
    assert "truncated" in errors[0]["message"]


def test_control_characters_and_bad_bytes_are_kept_escaped(tmp_path: Path) -> None:
    ev = gen.process_creation(command_line="calc.exe\x01\x1b[31m")
    raw = gen.to_xml(ev).encode()
    raw = raw.replace(b"calc.exe", b"calc\xff.exe")      # not UTF-8
    p = tmp_path / "odd.xml"
    p.write_bytes(raw)
    events, errors = parse(p)
    assert errors == []
    assert events[0]["command"] == "calc\\xff.exe\\x01\\x1b[31m"


def test_control_character_references_are_escaped(tmp_path: Path) -> None:
    text = gen.to_xml(gen.process_creation(command_line="a")).replace(">a</Data>", ">a&#x1;b&#27;</Data>")
    events, _ = parse(write(tmp_path, text))
    assert events[0]["command"] == "a\\x01b\\x1b"


def test_xml_bomb_is_refused_fast_without_memory(tmp_path: Path) -> None:
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (f'<?xml version="1.0"?>\n<!DOCTYPE Event [<!ENTITY lol0 "lol">{lol}]>\n'
            f"<Event xmlns='{gen.NS}'><System><EventID>4624</EventID></System>"
            "<EventData><Data Name='TargetUserName'>&lol9;</Data></EventData></Event>")
    p = write(tmp_path, bomb)
    assert wx.sniff(p, p.read_bytes())
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SourceError, match="DTD"):
        parse(p)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 5_000_000


def test_dtd_between_events_is_refused(tmp_path: Path) -> None:
    text = gen.to_xml(gen.logon()) + '<!ENTITY x "y">' + gen.to_xml(gen.logon())
    with pytest.raises(SourceError, match="ENTITY"):
        parse(write(tmp_path, text))


def test_undefined_entity_skips_the_event(tmp_path: Path) -> None:
    bad = gen.to_xml(gen.logon(user="x")).replace(">x<", ">&lol9;<")
    events, errors = parse(write(tmp_path, bad + gen.to_xml(gen.logon(user="y"))))
    assert [e["user"] for e in events] == ["y"] and "undefined entity" in errors[0]["message"]


def test_oversized_event_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wx, "MAX_EVENT_CHARS", 5000)
    monkeypatch.setattr(wx, "READ_BYTES", 1000)
    huge = gen.script_block("x" * 20_000)
    events, errors = parse(write(tmp_path, gen.to_xml(huge) + gen.to_xml(gen.logon(user="after"))))
    assert [e["user"] for e in events] == ["after"]
    assert "longer than 5000" in errors[0]["message"]


def test_pyevtx_style_indented_records_with_declarations(tmp_path: Path) -> None:
    ev = gen.log_cleared(user="IEUser")
    pretty = ('<?xml version="1.0" encoding="utf-8"?>\n' + gen.to_xml(ev)
              .replace("><", ">\n  <").replace("'", '"'))
    events, errors = parse(write(tmp_path, pretty + "\n" + pretty))
    assert errors == [] and [e["user"] for e in events] == ["IEUser", "IEUser"]


def test_sniff_rejects_other_xml_and_binary(tmp_path: Path) -> None:
    assert not wx.sniff(tmp_path / "a.xml", b"<?xml version='1.0'?><Event><x/></Event>")
    assert not wx.sniff(tmp_path / "a.xml", b"ElfFile\x00" + bytes(100))
    assert not wx.sniff(tmp_path / "a.json", b'{"EventID": 4624}')


def test_ingest_into_a_case(tmp_path: Path) -> None:
    p = write(tmp_path, gen.export(gen.intrusion()), name="exp\nort\u202e.xml")
    with Case(None) as case:
        summary = ingest(case, [p], sources=(wx.SOURCE,))
        assert summary.errors == [] and summary.rows["events"] == 13
        rows = case.query("SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
        assert {r["event"]: r["n"] for r in rows}["logon_failure"] == 4
        svc = case.query("SELECT process, json_extract_string(data, '$.service_name') AS name, ts "
                         "FROM events WHERE event = 'service_installed'")
        assert svc[0]["name"] == "WinSysUpd" and svc[0]["process"].startswith("C:\\Windows\\Temp\\xmrig.exe")


def test_bomb_through_ingest_is_an_error_row_and_the_rest_continues(tmp_path: Path) -> None:
    bomb = write(tmp_path, f"<!DOCTYPE x [<!ENTITY a 'b'>]><Event xmlns='{gen.NS}'>&a;</Event>", "bomb.xml")
    good = write(tmp_path, gen.export([gen.logon()]), "good.xml")
    with Case(None) as case:
        summary = ingest(case, [bomb, good], sources=(wx.SOURCE,))
        assert summary.rows == {"events": 1}
        assert len(summary.errors) == 1 and "bomb.xml" in summary.errors[0] and "DTD" in summary.errors[0]
