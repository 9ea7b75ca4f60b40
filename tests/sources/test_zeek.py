"""Zeek logs: TSV and JSON, every mapped log, escapes, header changes, damage, and the case."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import net_logs as gen
from deminer.sources import netlog, zeek
from deminer.sources.base import SourceContext
from deminer.sources.ingest import ingest

T0 = dt.datetime(2024, 3, 30, 8, 0)
Rows = dict[str, list[dict[str, Any]]]


def parse(path: Path, host: str | None = None) -> Rows:
    return gen.parsed(zeek.parse, path, host)


def story() -> gen.Network:
    net = gen.Network(start=T0)
    net.browse("10.0.0.21", visits=6)
    net.miner("10.0.0.5", "pool.supportxmr.com", "198.51.100.7", port=3333, hours=6)
    net.smb_worm("10.0.0.7", "10.0.1.", count=250)
    net.ssh_brute_force("203.0.113.50", "10.0.0.5", connections=30)
    return net


def sniffs(path: Path) -> bool:
    return zeek.sniff(path, path.read_bytes()[:65536])


# -- every log, both formats -------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "gz"), [("tsv", False), ("json", False), ("tsv", True)])
def test_story_rows_from_every_log(tmp_path: Path, fmt: str, gz: bool) -> None:
    net = story()
    rows: Rows = {}
    for path in net.write_zeek(tmp_path, fmt=fmt, gz=gz):
        assert sniffs(path), path.name
        for table, found in parse(path).items():
            rows.setdefault(table, []).extend(found)
    assert "errors" not in rows
    apps = sum(len(c.extra) for c in net.conns)
    assert len(rows["flows"]) == len(net.conns) + apps
    assert len(rows["dns"]) == len(net.lookups) == 7
    assert [e["event"] for e in rows["events"]] == ["ids_notice"]
    assert {r["host"] for r in rows["flows"]} == {None}                   # a sensor: no host

    conn = [r for r in rows["flows"] if r["source"].startswith("conn.log")]
    miner = next(r for r in conn if r["dst_port"] == 3333)
    c = next(c for c in net.conns if c.resp_p == 3333)
    assert (miner["ts"], miner["src_ip"], miner["src_port"], miner["dst_ip"], miner["proto"]) == (
        c.ts, "10.0.0.5", c.orig_p, "198.51.100.7", "tcp")
    assert (miner["state"], miner["app"], miner["duration"]) == ("S1", None, 21600.0)
    assert miner["bytes"] == c.orig_bytes + c.resp_bytes                # payload, both ways
    assert miner["packets"] == c.orig_pkts + c.resp_pkts
    assert miner["data"] == {"uid": c.uid, "orig_bytes": c.orig_bytes, "resp_bytes": c.resp_bytes,
                             "orig_pkts": c.orig_pkts, "resp_pkts": c.resp_pkts,
                             "orig_ip_bytes": c.ip_bytes(True), "resp_ip_bytes": c.ip_bytes(False),
                             "history": "ShADad", "local_orig": True, "local_resp": False}

    worm = [r for r in conn if r["src_ip"] == "10.0.0.7"]
    assert len({r["dst_ip"] for r in worm}) == 250
    states = {s: sum(r["state"] == s for r in worm) for s in ("S0", "REJ", "SF")}
    assert states == {"S0": 158, "REJ": 80, "SF": 12}
    assert {r["app"] for r in worm if r["state"] == "SF"} == {"smb"}
    s0 = next(r for r in worm if r["state"] == "S0")
    assert (s0["duration"], s0["data"].get("orig_bytes"), s0["bytes"]) == (None, None, 0)
    assert s0["data"]["orig_ip_bytes"] == 80

    pool = next(r for r in rows["dns"] if r["qname"] == "pool.supportxmr.com")
    assert (pool["client"], pool["qtype"], pool["answers"], pool["rcode"]) == (
        "10.0.0.5", "A", ["198.51.100.7"], "NOERROR")

    tls = [r for r in rows["flows"] if r["app"] == "tls" and r["source"].startswith("ssl.log")]
    assert tls and all(r["data"]["ja3_hash"] == "579ccef312d18482fc42e2b822ca2430" for r in tls)
    assert {r["data"]["sni"] for r in tls} <= {name for name, _ in gen.SITES}
    ssh = [r for r in rows["flows"] if r["source"].startswith("ssh.log")]
    assert len(ssh) == 30 and sum(r["data"]["auth_attempts"] for r in ssh) == 180
    assert {(r["data"]["client_banner"], r["data"]["auth_success"]) for r in ssh} == {
        ("SSH-2.0-libssh2_1.8.0", False)}
    notice = rows["events"][0]
    assert (notice["status"], notice["src_ip"], notice["program"]) == (
        "SSH::Password_Guessing", "203.0.113.50", "zeek")
    assert notice["data"]["n"] == 30 and "guessing SSH passwords" in notice["data"]["msg"]


def test_tsv_and_json_agree_row_for_row(tmp_path: Path) -> None:
    net = story()

    def rows(fmt: str) -> list[tuple[Any, ...]]:
        out = []
        for path in net.write_zeek(tmp_path / fmt, fmt=fmt):
            for table, found in parse(path).items():
                out += [(table, *sorted((k, json.dumps(v, default=str)) for k, v in r.items()
                                        if k not in ("raw", "source", "source_line"))) for r in found]
        return sorted(out)

    assert rows("tsv") == rows("json")


def test_conn_line_fields_exactly(tmp_path: Path) -> None:
    rec = {"ts": dt.datetime(2024, 3, 30, 8, 0, 0, 123456), "uid": "CXWv6p3arKYeMETxOg",
           "id.orig_h": "10.0.0.5",
           "id.orig_p": 49152, "id.resp_h": "2001:db8::7", "id.resp_p": 443, "proto": "tcp",
           "service": "ssl,-http", "duration": 12.5, "orig_bytes": 1000, "resp_bytes": 2000,
           "conn_state": "SF", "missed_bytes": 1400, "history": "ShADadFf", "orig_pkts": 10,
           "orig_ip_bytes": 1400, "resp_pkts": 12, "resp_ip_bytes": 2480}
    p = tmp_path / "conn.log"
    p.write_text(gen.zeek_tsv("conn", [rec]))
    (row,) = parse(p)["flows"]
    assert row == {"host": None, "ts": rec["ts"], "source": "conn.log", "source_line": 9,
                   "src_ip": "10.0.0.5", "src_port": 49152, "dst_ip": "2001:db8::7", "dst_port": 443,
                   "proto": "tcp", "bytes": 3000, "packets": 22, "duration": 12.5, "app": "tls",
                   "state": "SF",
                   "data": {"uid": "CXWv6p3arKYeMETxOg", "orig_bytes": 1000, "resp_bytes": 2000,
                            "orig_pkts": 10, "resp_pkts": 12, "orig_ip_bytes": 1400, "resp_ip_bytes": 2480,
                            "history": "ShADadFf", "missed_bytes": 1400, "truncated": True}}


@pytest.mark.parametrize(("service", "app", "services"), [
    ("ssl", "tls", None), ("gssapi,smb,ntlm", "smb", ["gssapi", "smb", "ntlm"]), ("krb_tcp", "kerberos",
                                                                                  None),
    ("-", None, None), ("ssl,http", "tls", ["tls", "http"])])
def test_service_becomes_app(tmp_path: Path, service: str, app: str | None,
                             services: list[str] | None) -> None:
    p = tmp_path / "conn.log"
    p.write_text(gen.zeek_tsv("conn", [{"ts": T0, "uid": "C1",
                                        "service": None if service == "-" else service}]))
    (row,) = parse(p)["flows"]
    assert (row["app"], row["data"].get("services")) == (app, services)


def test_dns_names_are_lower_case_without_the_root_dot(tmp_path: Path) -> None:
    recs = [{"ts": T0, "uid": "C1", "id.orig_h": "10.0.0.5", "query": "XMR.Pool.MineXMR.com.",
             "qtype_name": "A",
             "rcode_name": "NOERROR", "answers": ["xmr-eu.minexmr.com", "94.130.164.60"]},
            {"ts": T0, "uid": "C2", "id.orig_h": "10.0.0.5", "query": "c2.example", "qtype_name": "TXT"}]
    p = tmp_path / "dns.log"
    p.write_text(gen.zeek_tsv("dns", recs))
    answered, unanswered = parse(p)["dns"]
    assert (answered["qname"], answered["answers"], answered["rcode"]) == (
        "xmr.pool.minexmr.com", ["xmr-eu.minexmr.com", "94.130.164.60"], "NOERROR")
    assert (unanswered["qname"], unanswered["qtype"], unanswered["answers"], unanswered["rcode"]) == (
        "c2.example", "TXT", None, None)


# -- escapes and markers -----------------------------------------------------------------------
def test_escapes_empty_and_unset_values(tmp_path: Path) -> None:
    rec = {"ts": T0, "uid": "C1", "id.orig_h": "10.0.0.9", "id.orig_p": 5555, "id.resp_h": "10.0.0.5",
           "id.resp_p": 80, "trans_depth": 1, "method": "GET", "host": "-", "uri": "/a\tb\\x41\x1b[31m",
           "user_agent": b"curl/\xff\xfe\xc3\xa9", "referrer": "(empty)", "status_code": 200,
           "status_msg": "", "resp_mime_types": ["text/plain", "a,b"], "tags": []}
    p = tmp_path / "http.log"
    p.write_text(gen.zeek_tsv("http", [rec]))
    line = p.read_text().splitlines()[8]
    assert "\\x2d" in line and "\\x09" in line and "\\x5c" in line and "(empty)" in line
    (row,) = parse(p)["flows"]
    data = row["data"]
    assert data["host"] == "-" and data["referrer"] == "(empty)"          # escaped markers are values
    assert data["uri"] == "/a\tb\\x41\x1b[31m"                           # decoded once, no more
    assert data["user_agent"] == "curl/\\xff\\xfeé"                       # not UTF-8: shown as \xHH
    assert data["status_msg"] == ""
    assert data["content_type"] == "text/plain"
    assert "version" not in data and "username" not in data               # unset: left out


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
       items=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
                      max_size=3))
def test_any_text_round_trips_through_zeek_escaping(tmp_path: Path, text: str, items: list[str]) -> None:
    p = tmp_path / "http.log"
    p.write_text(gen.zeek_tsv("http", [{"ts": T0, "uid": "C1", "method": "GET", "uri": text,
                                        "resp_mime_types": items}]), encoding="utf-8")
    (row,) = parse(p)["flows"]
    assert row["data"]["uri"] == text
    assert row["data"].get("content_type") == (items[0] if items else None)


def test_unescape_decodes_utf8_byte_escapes() -> None:
    assert zeek.unescape("caf\\xc3\\xa9 \\x2d\\xff") == "café -\\xff"
    assert zeek.unescape("plain") == "plain"


# -- layouts -----------------------------------------------------------------------------------
def test_rotated_logs_concatenated_change_layout_mid_file(tmp_path: Path) -> None:
    net = story()
    conn = gen.zeek_tsv("conn", net.zeek_records("conn")[:3])
    short = [(n, t) for n, t in gen.FIELDS["conn"] if n not in ("local_orig", "local_resp", "tunnel_parents")]
    conn2 = gen.zeek_tsv("conn", net.zeek_records("conn")[3:5], fields=short)
    dns = gen.zeek_tsv("dns", net.zeek_records("dns")[:2], close=False)
    p = tmp_path / "all.log"
    p.write_text(conn + conn2 + dns)
    assert sniffs(p)
    rows = parse(p)
    assert "errors" not in rows
    assert [r["source_line"] for r in rows["flows"]] == [9, 10, 11, 21, 22]
    assert [r["dst_ip"] for r in rows["flows"]] == [c.resp_h for c in net.conns[:5]]
    assert [r["qname"] for r in rows["dns"]] == [lk.query for lk in net.lookups[:2]]


def test_json_without_path_is_told_apart_by_its_fields(tmp_path: Path) -> None:
    net = story()
    lines = (gen.zeek_json(net.zeek_records("conn")[:2]) + gen.zeek_json(net.zeek_records("dns")[:1])
             + gen.zeek_json(net.zeek_records("notice")) + gen.zeek_json(net.zeek_records("ssh")[:1],
                                                                         path="ssh")
             + gen.zeek_json([{"ts": 1711785600.5, "fuid": "F1", "mime_type": "text/plain"}], path="files"))
    p = tmp_path / "zeek.json"
    p.write_text(lines)
    rows = parse(p)
    assert [r["source_line"] for r in rows["flows"]] == [1, 2, 5]
    assert rows["flows"][2]["app"] == "ssh"
    assert [r["source_line"] for r in rows["dns"]] == [3]
    assert [r["source_line"] for r in rows["events"]] == [4]
    assert rows["errors"][0]["message"] == "zeek: 1 lines of logs without a table skipped (files 1)"


def test_tsv_without_meta_lines_and_iso_json_times(tmp_path: Path) -> None:
    p = tmp_path / "conn.tsv"
    p.write_text("ts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\ttunnel_parents\n"
                 "1711785600.250000\tC1\t10.0.0.5\t50000\t10.0.0.9\t445\ttcp\tS0\t(empty)\n")
    assert sniffs(p)
    (row,) = parse(p)["flows"]
    assert (row["ts"], row["state"], row["dst_port"]) == (dt.datetime(2024, 3, 30, 8, 0, 0, 250000), "S0",
                                                          445)
    q = tmp_path / "dns.json"
    q.write_text('{"ts":"2024-03-30T08:00:00.5Z","uid":"C2","id.orig_h":"10.0.0.5","query":"a.example",'
                 '"qtype_name":"A","trans_id":7}\n'
                 '{"ts":1711785600123,"uid":"C3","id":{"orig_h":"10.0.0.6","orig_p":5353},"query":"b.example",'
                 '"trans_id":8}\n')
    assert sniffs(q)
    a, b = parse(q)["dns"]
    assert (a["ts"], a["client"]) == (dt.datetime(2024, 3, 30, 8, 0, 0, 500000), "10.0.0.5")
    assert (b["ts"], b["client"]) == (dt.datetime(2024, 3, 30, 8, 0, 0, 123000), "10.0.0.6")


# -- damage ------------------------------------------------------------------------------------
def test_bad_lines_are_named_and_the_rest_kept(tmp_path: Path) -> None:
    net = story()
    lines = gen.zeek_tsv("conn", net.zeek_records("conn")[:4]).splitlines()
    lines.insert(9, lines[9][:40])                                        # truncated copy
    lines.insert(11, "\x00\x01\x02binary\tjunk")
    lines.insert(12, "1711785600.0\t" + "x" * (netlog.MAX_LINE + 10))       # one huge line
    p = tmp_path / "conn.log"
    p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"ts": 1711785600, "uid": "C9", "id.orig_h":')
    rows = parse(p)
    assert len(rows["flows"]) == 4
    (error,) = rows["errors"]
    assert error["source"] == "conn.log"
    assert error["message"].startswith("zeek: 4 unreadable line(s) skipped, first: line 10: 3 fields where "
                                       "the header has 21; line 12: binary data; line 13: longer than")


def test_data_before_any_header(tmp_path: Path) -> None:
    p = tmp_path / "conn.log"
    p.write_text("1711785600.0\tC1\t10.0.0.5\n")
    assert parse(p)["errors"][0]["message"] == (
        "zeek: 1 unreadable line(s) skipped, first: line 1: data before a #fields header")


def test_truncated_gzip_keeps_what_came_before(tmp_path: Path) -> None:
    net = story()
    data = gzip.compress(gen.zeek_tsv("conn", net.zeek_records("conn")).encode())
    p = tmp_path / "conn.00:00:00-01:00:00.log.gz"
    p.write_bytes(data[: len(data) * 2 // 3])
    assert sniffs(p)
    rows = parse(p)
    assert 0 < len(rows["flows"]) < len(net.conns)
    assert "compressed data ends early after line" in rows["errors"][0]["message"]


def test_sniff_refuses_other_text(tmp_path: Path) -> None:
    samples = {
        "eve.json": '{"timestamp":"2024-03-30T08:00:00.000000+0000","event_type":"flow",'
                    '"src_ip":"10.0.0.5"}\n',
        "flows.csv": gen.NFDUMP_HEADER + "\n",
        "auth.log": "Mar 30 08:00:00 web1 sshd[12]: Failed password for root from 203.0.113.50 port 4 ssh2\n",
        "tab.tsv": "path\tsize\tsha256\n/tmp/x\t1\t" + "0" * 64 + "\n",
        "hash.json": '{"ts": 1, "EventID": 4625}\n',
        "bin.log": "\x00\x01" * 100,
    }
    for name, text in samples.items():
        p = tmp_path / name
        p.write_text(text)
        assert not sniffs(p), name


# -- in the case -------------------------------------------------------------------------------
def test_ingest_joins_app_rows_to_their_connection_by_uid(tmp_path: Path) -> None:
    net = story()
    folder = tmp_path / "zeek"
    net.write_zeek(folder, fmt="json")
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [folder], sources=(zeek.SOURCE,))
        assert summary.errors == [] and summary.files == 6
        joined = case.query(
            "SELECT a.app, c.state, c.dst_port, json_extract_string(a.data, '$.sni') AS sni "
            "FROM flows a JOIN flows c "
            "ON json_extract_string(c.data, '$.uid') = json_extract_string(a.data, '$.uid') "
            "AND c.source LIKE '%conn.log' AND a.source NOT LIKE '%conn.log' ORDER BY a.ts")
        apps = sum(len(c.extra) for c in net.conns)
        assert len(joined) == apps
        assert {(r["app"], r["dst_port"]) for r in joined} == {("tls", 443), ("http", 80), ("ssh", 22)}
        kinds = case.query("SELECT kind, count(*) AS n FROM inputs GROUP BY kind")
        assert kinds == [{"kind": "zeek", "n": 6}]
    with Case(None) as case:
        ingest(case, [folder / "conn.log"], host="Sensor-1", sources=(zeek.SOURCE,))
        assert case.query("SELECT DISTINCT host FROM flows") == [{"host": "sensor-1"}]


# -- fuzz --------------------------------------------------------------------------------------
SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
KEYS = sorted({name for fields in gen.FIELDS.values() for name, _ in fields if name != "ts"}
              | {"_path", "id", "community_id"})
RECORD = st.fixed_dictionaries({"ts": st.just(1711785600.5) | JSON},
                               optional={k: JSON | st.sampled_from(list(gen.FIELDS)) for k in KEYS})


@pytest.fixture(scope="module")
def shared_case() -> Iterator[Case]:
    with Case(None) as case:
        yield case


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORD, max_size=5), garbage=st.lists(st.text(max_size=60), max_size=4))
def test_hostile_records_never_break_the_reader_or_the_case(
        tmp_path: Path, shared_case: Case, records: list[dict[str, Any]], garbage: list[str]) -> None:
    p = tmp_path / "conn.log"
    tsv = gen.zeek_tsv("conn", [{"ts": T0, "uid": "C1"}]).splitlines()
    lines = [json.dumps(r) for r in records] + tsv[:9] + [g.replace("\n", " ") for g in garbage]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    written = shared_case.add_batches(zeek.parse(SourceContext(p, "conn.log", None, tmp_path)))
    assert sum(n for t, n in written.items() if t != "errors") <= len(records) + 1 + len(garbage)


def test_hostile_file_name(tmp_path: Path) -> None:
    net = story()
    name = os.fsdecode(b"conn\xff\x1b[31m\n.log")                    # not UTF-8, escape, newline
    p = tmp_path / name
    p.write_text(gen.zeek_tsv("conn", net.zeek_records("conn")[:2]))
    with Case(None) as case:
        summary = ingest(case, [tmp_path], sources=(zeek.SOURCE,))
        assert summary.errors == [] and summary.rows == {"flows": 2}
        (source,) = {r["source"] for r in case.query("SELECT source FROM flows")}
    assert source.endswith("conn\\xff\x1b[31m\n.log")                  # stored as found, escaped bytes
