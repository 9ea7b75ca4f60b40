"""Indicator lists: the shipped CSVs, user CSV files, content sniffing and hostile input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import run_rule
from deminer.detect.rules import RULES_DIR, load_rule
from deminer.model import IOC_KINDS

HEADER = "kind,value,family,description\n"
WALLET = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A"


def shipped() -> list[dict[str, str]]:
    rows = []
    for path in sorted(iocs.LISTS_DIR.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == ["kind", "value", "family", "description"], path.name
            rows += [dict(r, file=path.name) for r in reader]
    return rows


def test_shipped_lists_are_valid_unique_and_described() -> None:
    rows = shipped()
    assert {r["file"] for r in rows} >= {"pool_domains.csv", "pool_ports.csv", "miner_names.csv",
                                         "key_comments.csv", "families.csv"}
    seen: set[tuple[str, str]] = set()
    for r in rows:
        assert r["kind"] in IOC_KINDS
        assert iocs.normalize(r["kind"], r["value"]) == r["value"], "ship values already normalised"
        assert r["family"] and r["description"], r
        assert (r["kind"], r["value"]) not in seen, f"duplicate {r}"
        seen.add((r["kind"], r["value"]))
    values = {(r["kind"], r["value"]) for r in rows}
    for must in [("domain", "supportxmr.com"), ("domain", "moneroocean.stream"), ("domain", "c3pool.com"),
                 ("domain", "i.haqo.net"), ("domain", "p.abbny.com"), ("port", "3333"), ("port", "45700"),
                 ("process_name", "kdevtmpfsi"), ("process_name", "xmrig"), ("filename", "solr.sh"),
                 ("key_comment", "mdrfckr")]:
        assert must in values, must


def test_load_shipped_replaces_instead_of_doubling() -> None:
    with Case(None) as case:
        first = iocs.load_shipped(case)
        assert first == len(shipped())
        iocs.load_shipped(case)
        assert case.count("iocs") == first
        others = "SELECT count(*) AS n FROM iocs WHERE NOT starts_with(source, 'shipped:')"
        assert case.query(others) == [{"n": 0}]


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    ("domain", " Pool.SupportXMR.com. ", "pool.supportxmr.com"),
    ("domain", "*.evil.example", "evil.example"),
    ("domain", "evil[.]example", "evil.example"),
    ("domain", "bücher.example", "xn--bcher-kva.example"),
    ("ip", "203.0.113[.]9", "203.0.113.9"),
    ("ip", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("url", "hxxp://evil[.]example/x.sh", "http://evil.example/x.sh"),
    ("sha256", "AB" * 32, "ab" * 32),
    ("port", "03333", "3333"),
    ("filename", "/tmp/.X/KDEVTMPFSI", "kdevtmpfsi"),
    ("key_comment", "  mdrfckr ", "mdrfckr"),
])
def test_normalize(kind: str, raw: str, expected: str) -> None:
    assert iocs.normalize(kind, raw) == expected


@pytest.mark.parametrize(("kind", "raw", "words"), [
    ("domain", "http://evil.example/", "use kind url"),
    ("domain", "evil..example", "not a valid domain"),
    ("ip", "10.0.0.0/8", "networks are not supported"),
    ("port", "70000", "1 to 65535"),
    ("sha256", "abc", "64 hexadecimal"),
    ("md5", "z" * 32, "32 hexadecimal"),
    ("wallet", "4short", "20 to 128"),
    ("url", "evil.example/x", "scheme"),
    ("domain", "evil\x1b[31m.example", "control characters"),
    ("filename", "x" * 3000, "longer than"),
])
def test_normalize_rejects(kind: str, raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        iocs.normalize(kind, raw)


def test_user_csv_loads_good_rows_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "team list.csv"
    path.write_text(HEADER
                    + "domain,Evil-Pool.Example,CustomMiner,our pool\n"
                    + "# comment,ignored,,\n"
                    + "\n"
                    + "ip,198.51.100.23,CustomMiner,\n"
                    + "hash,abc,,\n"
                    + "sha256,xyz,,\n"
                    + f"wallet,{WALLET},x,\n"
                    + "domain,evil-pool.example,dup,\n", encoding="utf-8")
    with Case(None) as case:
        assert iocs.load_user(case, path) == 3
        rows = case.query("SELECT kind, value, family, source FROM iocs ORDER BY kind")
        assert [(r["kind"], r["value"], r["family"]) for r in rows] == [
            ("domain", "evil-pool.example", "CustomMiner"), ("ip", "198.51.100.23", "CustomMiner"),
            ("wallet", WALLET, "x")]
        assert rows[0]["source"] == f"user:{path}:2"
        errors = case.query("SELECT source, message FROM errors WHERE stage = 'ioc' ORDER BY message")
        assert [e["source"] for e in errors] == [str(path)] * 2
        assert "line 6: unknown indicator kind 'hash'" in errors[0]["message"]
        assert "line 7: a sha256 is 64 hexadecimal digits" in errors[1]["message"]


def test_content_decides_the_format(tmp_path: Path) -> None:
    csv_named_json = tmp_path / "list.json"
    csv_named_json.write_text(HEADER + "domain,a.example,,\n", encoding="utf-8")
    stix_named_csv = tmp_path / "list.csv"
    stix_named_csv.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "domain-name", "id": "domain-name--1", "value": "b.example"}]}), encoding="utf-8")
    assert iocs.read_iocs(csv_named_json).format == "csv"
    assert iocs.read_iocs(stix_named_csv).format == "stix"
    assert [r["value"] for r in iocs.read_iocs(stix_named_csv).rows] == ["b.example"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + "ip,192.0.2.1,,\n").encode())
    assert [r["value"] for r in iocs.read_iocs(bom).rows] == ["192.0.2.1"]


@pytest.mark.parametrize(("content", "words"), [
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "binary content"),
    (gzip.compress(b"kind,value\ndomain,a.example\n"), "binary content"),
    ("kind,value\ndomain,caf\xe9.example\n".encode("latin-1"), "not UTF-8 text (byte 21)"),
    (b"", "neither an indicator CSV"),
    (b"domain,value\nfoo,bar\n", "neither an indicator CSV"),
    (b'{"type": "bundle", "objects": [', "does not parse: Expecting value at line 1 column 32"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"hello": "world"}', "not a STIX 2 bundle"),
    (HEADER.encode() + b"domain,a.exam\x00ple,,\n", "binary content"),
    (HEADER.encode() + b"url,\x1b]0;pwned\x07http://x,,\n", "no usable indicators"),
])
def test_bad_files_are_errors_naming_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad\nname\x1b[2J.csv"   # a hostile file name must not reach the terminal raw
    path.write_bytes(content)
    with Case(None) as case, pytest.raises(iocs.IocError) as err:
        iocs.load_user(case, path)
    message = str(err.value)
    assert words in message, message
    assert "bad\\x0aname\\x1b[2J.csv" in message
    assert "\n" not in message and "\x1b" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(iocs.IocError, match="cannot read indicator file"):
        iocs.read_iocs(tmp_path / "nope.csv")


def test_a_huge_row_is_skipped_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "domain,a.example,,\n" + "domain," + "x" * 300_000 + ",,\n"
                    + "domain,b.example,,\n", encoding="utf-8")
    read = iocs.read_iocs(path)
    assert [r["value"] for r in read.rows] == ["a.example", "b.example"]
    assert len(read.problems) == 1 and "unreadable" in read.problems[0].detail


def test_shipped_list_errors_are_strict(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(HEADER + "domain,ok.example,,\nbogus,x,,\n", encoding="utf-8")
    with pytest.raises(iocs.IocError, match="line 3: unknown indicator kind 'bogus'"):
        iocs.read_csv_iocs(path)


def test_user_indicators_overlapping_shipped_ones_do_not_double_findings(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + "domain,supportxmr.com,mining-pool,again\nport,3333,mining-pool,again\n"
                    + "process_name,xmrig,miner,again\n", encoding="utf-8")
    rules = [load_rule(RULES_DIR / p) for p in ("impact/mining_pool_reference.yml",
                                                 "command_and_control/pool_connection.yml",
                                                 "impact/known_miner_name.yml")]
    with Case(None) as case:
        iocs.load_shipped(case)
        iocs.load_user(case, path)
        case.add("processes", [{"host": "h", "pid": 9, "name": "xmrig", "exe": "/opt/xmrig",
                                "cmdline": "xmrig -o pool.supportxmr.com:3333"}])
        case.add("connections", [{"host": "h", "pid": 9, "proto": "tcp", "laddr": "10.0.0.2",
                                  "lport": 50000, "raddr": "198.51.100.1", "rport": 3333,
                                  "state": "ESTABLISHED"}])
        assert [len(run_rule(case, r)) for r in rules] == [1, 1, 1]
