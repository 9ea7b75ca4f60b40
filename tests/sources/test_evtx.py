"""EVTX source without the shared evidence: record mapping, broken files, completeness.

Real files are exercised in ``test_shared_windows.py``; here the pyevtx JSON layout comes
from ``winevent_gen.to_evtx_json`` and broken files are built byte by byte.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import win_events as gen
from deminer.sources import evtx
from deminer.sources import windows_events as we
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest


def header(chunks: int = 1, next_record: int = 1) -> bytes:
    """An EVTX file header block: 128 described bytes (with CRC32) padded to 4096."""
    head = bytearray(128)
    head[0:8] = evtx.MAGIC
    struct.pack_into("<QQQIHHHH", head, 8, 0, max(chunks - 1, 0), next_record, 128, 1, 3, 4096, chunks)
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head[:120])))
    return bytes(head) + bytes(4096 - 128)


def parse(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for table, rows in evtx.parse(SourceContext(path, path.name, None, path.parent)):
        (events if table == "events" else errors).extend(rows)
    return events, errors


def test_record_row_maps_the_pyevtx_layout() -> None:
    ev = gen.service_install(name="WinSysUpd", computer="WS01", record_id=8623)
    r = evtx.record_row(gen.to_evtx_json(ev), "System.evtx", None)
    assert (r["event"], r["event_id"], r["record_id"], r["source_line"], r["host"]) == (
        "service_installed", 7045, 8623, 8623, "ws01")
    assert r["ts"] == gen.T0 and r["user"] == "S-1-5-21-1-2-3-500"
    assert orjson.loads(r["data"])["service_name"] == "WinSysUpd"


def test_record_row_falls_back_to_the_header_time() -> None:
    rec = gen.to_evtx_json(gen.logon())
    doc = orjson.loads(rec["data"])
    del doc["Event"]["System"]["TimeCreated"]
    rec["data"] = orjson.dumps(doc).decode()
    assert evtx.record_row(rec, "x", None)["ts"] == gen.T0.replace(microsecond=123000)


def test_record_row_rejects_unusable_json() -> None:
    with pytest.raises(ValueError, match="record 7"):
        evtx.record_row({"event_record_id": 7, "data": "{not json"}, "x", None)


def test_flatten_shapes() -> None:
    unnamed = orjson.loads(gen.to_evtx_json(gen.Event("EventSystem", "{0}", "Application", 4625,
                                                     ["86400", "x"]))["data"])["Event"]
    assert evtx.flatten(unnamed) == {"param1": "86400", "param2": "x", "Binary": None}
    user = orjson.loads(gen.to_evtx_json(gen.log_cleared(user="bob"))["data"])["Event"]
    flat = evtx.flatten(user)
    assert flat["SubjectUserName"] == "bob" and flat["xml_name"] == "LogFileCleared"
    with_attrs = {"EventData": {"#attributes": {"Name": "EVENT_HIVE_LEAK"}, "Detail": "leak",
                                "Path": {"#attributes": {"x": "1"}, "#text": "C:\\a"}}}
    assert evtx.flatten(with_attrs) == {"Detail": "leak", "Path": "C:\\a"}
    assert evtx.flatten({"EventData": None}) == {}
    assert evtx.flatten({"EventData": {"Data": {"#text": "only"}}}) == {"param1": "only"}
    long = {"EventData": {"ScriptBlockText": "x" * (we.VALUE_CAP + 10)}}
    assert len(evtx.flatten(long)["ScriptBlockText"]) == we.VALUE_CAP


@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("Data", "#attributes")),
                       st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
                                 st.booleans())))
def test_fast_path_equals_slow_path(named: dict[str, Any]) -> None:
    event = {"EventData": {"#attributes": {"xmlns": "x"}, **named}}
    slow = evtx.flatten(orjson.loads(orjson.dumps(event)))
    fast = evtx.flatten(orjson.loads(orjson.dumps(event)), plain=True)
    assert fast == slow == named


def test_not_evtx_with_the_name_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "Security.evtx"
    p.write_bytes(b"<Events>not binary</Events>")
    assert evtx.sniff(p, p.read_bytes())
    with pytest.raises(SourceError, match="not an EVTX file"):
        parse(p)


def test_file_shorter_than_its_header(tmp_path: Path) -> None:
    p = tmp_path / "cut.bin"
    p.write_bytes(header()[:900])
    assert evtx.sniff(p, p.read_bytes())
    with pytest.raises(SourceError, match="truncated EVTX file: 900 bytes"):
        parse(p)


def test_random_chunks_after_a_valid_header(tmp_path: Path) -> None:
    p = tmp_path / "junk.evtx"
    p.write_bytes(header(chunks=3) + os.urandom(3 * evtx.CHUNK_SIZE))
    events, errors = parse(p)
    assert events == []
    assert len(errors) == 1
    assert errors[0]["message"].startswith("0 records read; 3 parse errors (3 chunk, 0 record)")


def test_undecodable_file_name(tmp_path: Path) -> None:
    p = tmp_path / os.fsdecode(b"Sec\xffurity\n.evtx")
    p.write_bytes(header(chunks=1) + os.urandom(evtx.CHUNK_SIZE))
    with Case(None) as case:
        summary = ingest(case, [tmp_path], sources=(evtx.SOURCE,))
        assert summary.files == 1 and summary.errors == []
        (err,) = case.query("SELECT source, message FROM errors")
        assert err["source"].endswith("Sec\\xffurity\n.evtx") and "1 chunk" in err["message"]


def test_ingest_records_the_failure_and_continues(tmp_path: Path) -> None:
    bad = tmp_path / "bad.evtx"
    bad.write_bytes(b"MZ\x90\x00" + bytes(5000))
    other = tmp_path / "empty.evtx"
    other.write_bytes(header(chunks=0))
    with Case(None) as case:
        summary = ingest(case, [bad, other], sources=(evtx.SOURCE,))
        assert summary.files == 2 and len(summary.errors) == 1 and "bad.evtx" in summary.errors[0]
        inputs = case.query("SELECT path, kind, error FROM inputs ORDER BY path")
        assert inputs[0]["error"].startswith("evtx: not an EVTX file") and inputs[1]["kind"] == "evtx"


def test_completeness_per_channel_across_renamed_hosts() -> None:
    c = evtx.Completeness()
    for rid in [*range(1, 11), *range(14, 20), 40, 25, 26]:
        c.add("old-name" if rid < 15 else "new-name", "Security", rid)
    for rid in range(100, 105):
        c.add("old-name", "System", rid)
    gaps = list(c.gaps())
    assert gaps == [(["new-name", "old-name"], "Security", 1, 40, 19, [(11, 13), (20, 24), (27, 39)])]
    msg = evtx.completeness_message("Security", ["h"], 1, 40, 19, [(11, 13), (20, 20)])
    assert msg.startswith("records 11–13, 20 missing from Security on host h")


def test_completeness_handles_duplicates_and_disorder() -> None:
    c = evtx.Completeness()
    for rid in [5, 5, 6, 3, 4, 4, 9, 8, 7]:
        c.add("h", "Security", rid)
    assert list(c.gaps()) == []


def test_complete_end_keeps_only_whole_records() -> None:
    chunk = bytearray(evtx.CHUNK_MAGIC + bytes(504))
    for size in (100, 200, 300):
        chunk += b"**\x00\x00" + struct.pack("<IQ", size, 1) + bytes(size - 16)
    cut = len(chunk) - 50                                  # inside the third record
    fh = io.BytesIO(bytes(chunk[:cut]))
    assert evtx._complete_end(fh, 0, cut) == 512 + 100 + 200
    assert evtx._complete_end(io.BytesIO(b"garbage" * 100), 0, 700) == 0


def test_padded_view_reads_zeros_past_the_cut() -> None:
    view = evtx._Padded(io.BytesIO(b"abcdef"), 4, 10)
    assert view.read() == b"abcd" + bytes(6)
    view.seek(2)
    assert view.read(4) == b"cd\x00\x00" and view.seek(0, 2) == 10 and view.read() == b""
