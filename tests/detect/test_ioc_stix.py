"""STIX 2.x indicators: the pattern parser, bundle reading, and ``--ioc`` loading of bundles."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer import cli
from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import run_rule
from deminer.detect.ioc_stix import StixError, comparison_kind, read_bundle
from deminer.detect.rules import RULES_DIR, load_rule
from deminer.detect.stix_pattern import PatternError, parse_pattern

NOW = "2024-03-01T10:00:00.000Z"


def sid(kind: str, name: str) -> str:
    """A stable STIX id, as real producers make them (type--UUID)."""
    return f"{kind}--{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def indicator(name: str, pattern: str, **extra: Any) -> dict[str, Any]:
    obj = {"type": "indicator", "spec_version": "2.1", "id": sid("indicator", name), "created": NOW,
           "modified": NOW, "name": name, "indicator_types": ["malicious-activity"],
           "pattern": pattern, "pattern_type": "stix", "valid_from": NOW}
    obj.update(extra)
    return obj


def bundle(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"type": "bundle", "id": sid("bundle", json.dumps(objects, sort_keys=True)),
            "objects": list(objects)}


def quote(value: str) -> str:
    """A STIX string literal for ``value`` (only ' and \\ are escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- the pattern parser -------------------------------------------------------------------

def test_or_joined_comparisons_each_yield_an_indicator() -> None:
    comps = parse_pattern("[domain-name:value = 'pool.evil.example' OR ipv4-addr:value = '203.0.113.9'"
                          " OR url:value = 'http://203.0.113.9/x.sh']")
    assert [(c.path, c.op, [v.value for v in c.values]) for c in comps] == [
        (("domain-name", "value"), "=", ["pool.evil.example"]),
        (("ipv4-addr", "value"), "=", ["203.0.113.9"]),
        (("url", "value"), "=", ["http://203.0.113.9/x.sh"]),
    ]
    assert [comparison_kind(c)[0] for c in comps] == ["domain", "ip", "url"]


def test_hash_paths_quoted_and_bare() -> None:
    comps = parse_pattern("[file:hashes.'SHA-256' = 'ab' OR file:hashes.MD5 = 'cd' OR "
                          "file:hashes.'SHA-1' = 'ef' OR file:hashes.'SHA-512' = '00']")
    assert [comparison_kind(c)[0] for c in comps] == ["sha256", "md5", "sha1", None]
    assert "SHA-512" in comparison_kind(comps[3])[1]


def test_observation_operators_qualifiers_and_parentheses() -> None:
    text = ("([domain-name:value IN ('a.example', 'b.example')] AND [file:name = 'x'] "
            "FOLLOWEDBY ([network-traffic:dst_ref.value = '198.51.100.1' AND "
            "(network-traffic:dst_port = 3333 OR network-traffic:dst_port NOT = 4444)])) "
            "WITHIN 600 SECONDS REPEATS 2 TIMES START t'2024-01-01T00:00:00Z' STOP t'2024-02-01T00:00:00Z'")
    comps = parse_pattern(text)
    assert [c.text for c in comps] == [
        "domain-name:value IN ('a.example', 'b.example')", "file:name = 'x'",
        "network-traffic:dst_ref.value = '198.51.100.1'", "network-traffic:dst_port = 3333",
        "network-traffic:dst_port NOT = 4444"]
    assert [v.value for v in comps[0].values] == ["a.example", "b.example"]
    assert comps[4].negated and comparison_kind(comps[4])[0] is None
    assert comparison_kind(comps[2])[0] == "ip_or_domain"


def test_other_operators_and_exists_are_parsed_but_not_loaded() -> None:
    comps = parse_pattern("[file:name LIKE '%.sh' OR file:name MATCHES '^x' OR ipv4-addr:value "
                          "ISSUBSET '10.0.0.0/8' OR file:size > 1000 OR EXISTS file:name OR "
                          "process:name != 'bash' OR file:extensions.'x-ext'.sections[*].entropy >= 7.5]")
    reasons = [comparison_kind(c) for c in comps]
    assert all(kind is None for kind, _ in reasons)
    assert [r for _, r in reasons][:3] == ["operator LIKE", "operator MATCHES", "operator ISSUBSET"]
    assert comps[-1].path[-3:] == ("sections", "[*]", "entropy")


@pytest.mark.parametrize(("pattern", "column", "words"), [
    ("[domain-name:value = 'x'", 25, "expected ']'"),
    ("[domain-name:value = 'x\\n']", 24, "valid escapes"),
    ("[url:value = 'abc\\']", 14, "not closed"),
    ("[domain-name:value 'x']", 20, "comparison operator"),
    ("domain-name:value = 'x'", 1, "expected '[' or '('"),
    ("[]", 2, "object type"),
    ("[a:b = 'c'] WITHIN SECONDS", 20, "num literal"),
    ("[a:b = 'c'] junk", 13, "unexpected"),
    ("[a:b = 'c' ~]", 12, "unexpected character"),
])
def test_syntax_errors_name_the_column(pattern: str, column: int, words: str) -> None:
    with pytest.raises(PatternError) as err:
        parse_pattern(pattern)
    assert str(err.value).startswith(f"column {column}:"), str(err.value)
    assert words in str(err.value)


def test_nesting_and_size_are_bounded() -> None:
    with pytest.raises(PatternError, match="nested too deeply"):
        parse_pattern("(" * 200 + "[a:b = 'c']" + ")" * 200)
    assert len(parse_pattern("(" * 20 + "[a:b = 'c']" + ")" * 20)) == 1
    with pytest.raises(PatternError, match="longer than"):
        parse_pattern("[a:b = '" + "x" * 200_000 + "']")


@given(st.text(min_size=0, max_size=60))
@settings(max_examples=200, deadline=None)
def test_string_literals_round_trip(value: str) -> None:
    comps = parse_pattern(f"[domain-name:value = {quote(value)}]")
    assert [v.value for v in comps[0].values] == [value]


@given(st.text(alphabet="[]()'\\:.=<>!,* \nabcANDORNOTIN-_0123456789tbh", max_size=80))
@settings(max_examples=400, deadline=None)
def test_parser_fails_only_with_pattern_error(text: str) -> None:
    with contextlib.suppress(PatternError):
        parse_pattern(text)


# -- bundles ------------------------------------------------------------------------------

def test_bundle_loads_supported_and_reports_the_rest() -> None:
    malware = {"type": "malware", "spec_version": "2.1", "id": sid("malware", "kinsing"), "created": NOW,
               "modified": NOW, "name": "Kinsing", "is_family": True}
    ind = indicator("Kinsing infra", "[domain-name:value = 'c2.evil.example' OR ipv4-addr:value = "
                    "'203.0.113.7/32'] AND [network-traffic:dst_port = 4444]")
    rel = {"type": "relationship", "spec_version": "2.1", "id": sid("relationship", "r1"),
           "created": NOW, "modified": NOW, "relationship_type": "indicates",
           "source_ref": ind["id"], "target_ref": malware["id"]}
    yara = indicator("yara", "rule x { condition: true }", pattern_type="yara")
    broken = indicator("broken", "[domain-name:value = 'x'")
    revoked = indicator("old", "[domain-name:value = 'old.example']", revoked=True)
    candidates, problems = read_bundle(bundle(malware, ind, rel, yara, broken, revoked, "junk"))  # type: ignore[arg-type]
    assert [(c.kind, c.value, c.family, c.description) for c in candidates] == [
        ("domain", "c2.evil.example", "Kinsing", "Kinsing infra"),
        ("ip", "203.0.113.7", "Kinsing", "Kinsing infra"),
    ]
    assert candidates[0].ref == ind["id"]
    assert len(problems) == 4
    assert "1 of 3 comparisons not loaded: network-traffic:dst_port = 4444" in problems[0]
    assert "pattern_type 'yara' is not loaded" in problems[1]
    assert "(broken): pattern does not parse: column 25" in problems[2]
    assert problems[3] == "objects[6]: not a STIX object"


def test_observables_and_stix20_observed_data() -> None:
    objs = [
        {"type": "domain-name", "spec_version": "2.1", "id": sid("domain-name", "d"),
         "value": "Evil.Example"},
        {"type": "ipv6-addr", "spec_version": "2.1", "id": sid("ipv6-addr", "i"), "value": "2001:db8::1"},
        {"type": "file", "spec_version": "2.1", "id": sid("file", "f"), "name": "kdevtmpfsi",
         "hashes": {"SHA-256": "a" * 64, "MD5": "b" * 32}},
        {"type": "file", "spec_version": "2.1", "id": sid("file", "g"), "name": "dropper.sh"},
        {"type": "observed-data", "id": sid("observed-data", "o"), "created": NOW, "modified": NOW,
         "first_observed": NOW, "last_observed": NOW, "number_observed": 1,
         "objects": {"0": {"type": "url", "value": "http://198.51.100.3/a"},
                     "1": {"type": "ipv4-addr", "value": "198.51.100.3"}}},
        {"type": "identity", "spec_version": "2.1", "id": sid("identity", "me"), "name": "CERT"},
    ]
    candidates, problems = read_bundle(bundle(*objs))
    assert problems == []
    assert [(c.kind, c.value) for c in candidates] == [
        ("domain", "Evil.Example"), ("ip", "2001:db8::1"), ("md5", "b" * 32), ("sha256", "a" * 64),
        ("filename", "dropper.sh"), ("url", "http://198.51.100.3/a"), ("ip", "198.51.100.3")]
    assert candidates[-1].ref.endswith("/1")


@pytest.mark.parametrize("doc", [{"type": "report", "name": "x"}, {"a": 1}, [1, 2], [], "text",
                                 {"type": "bundle", "objects": {"a": 1}}])
def test_not_stix_is_an_error(doc: Any) -> None:
    with pytest.raises(StixError):
        read_bundle(doc)


def test_single_indicator_object_and_bare_object_list() -> None:
    one = indicator("one", "[url:value = 'http://x.example/a']")
    assert [c.value for c in read_bundle(one)[0]] == ["http://x.example/a"]
    assert [c.value for c in read_bundle([one])[0]] == ["http://x.example/a"]


# -- loading into a case and the CLI ------------------------------------------------------

def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def test_load_user_bundle_feeds_the_rules(tmp_path: Path) -> None:
    doc = bundle(indicator("C2", "[ipv4-addr:value = '203.0.113.66' OR "
                                 "domain-name:value = 'C2.Evil.Example.']"),
                 indicator("LIKE", "[domain-name:value LIKE '%.evil']"))
    path = write(tmp_path, "intel.csv", doc)      # the name says CSV; the content decides
    rule = load_rule(RULES_DIR / "command_and_control" / "pool_connection.yml")
    with Case(None) as case:
        iocs.load_shipped(case)
        assert iocs.load_user(case, path) == 2
        rows = case.query("SELECT kind, value, source FROM iocs "
                          "WHERE starts_with(source, 'user:') ORDER BY kind")
        assert [(r["kind"], r["value"]) for r in rows] == [("domain", "c2.evil.example"),
                                                           ("ip", "203.0.113.66")]
        assert rows[0]["source"] == f"user:{path}:{doc['objects'][0]['id']}"
        errors = case.query("SELECT source, stage, message FROM errors")
        assert errors == [{"source": str(path), "stage": "ioc", "message": errors[0]["message"]}]
        assert "operator LIKE" in errors[0]["message"]
        case.add("connections", [{"host": "web1", "pid": 7, "proto": "tcp", "laddr": "10.0.0.5",
                                   "lport": 41000, "raddr": "203.0.113.66", "rport": 443,
                                   "state": "ESTABLISHED"}])
        found = run_rule(case, rule)
        assert [(f.severity, f.entity) for f in found] == [("high", "203.0.113.66:443")]
        # a second load replaces the file's indicators and problems instead of doubling them
        assert iocs.load_user(case, path) == 2
        assert case.count("iocs") == len(case.query("SELECT DISTINCT kind, value, source FROM iocs"))
        assert len(case.query("SELECT * FROM errors WHERE stage = 'ioc'")) == 1


def test_bundle_with_nothing_usable_is_fatal(tmp_path: Path) -> None:
    path = write(tmp_path, "only-sigma.json", bundle(indicator("s", "title: x", pattern_type="sigma")))
    with Case(None) as case, pytest.raises(iocs.IocError) as err:
        iocs.load_user(case, path)
    assert str(path) in str(err.value) and "no usable indicators" in str(err.value)
    assert "pattern_type 'sigma'" in str(err.value)


def test_cli_prints_skipped_indicators_and_still_uses_the_rest(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = bundle(indicator("pool", "[domain-name:value = 'pool.evil.example']"),
                 indicator("regex", "[url:value MATCHES '^http://x']"))
    path = write(tmp_path, "intel.stix", doc)
    (tmp_path / "in").mkdir()
    code = cli.main(["investigate", str(tmp_path / "in"), "--case", str(tmp_path / "case"),
                     "--ioc", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "indicator skipped" in out and "operator MATCHES" in out
    with Case(tmp_path / "case") as case:
        assert case.query("SELECT value FROM iocs WHERE starts_with(source, 'user:')") == [
            {"value": "pool.evil.example"}]


def test_cli_fails_cleanly_on_a_bundle_without_indicators(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "empty.json", bundle())
    (tmp_path / "in").mkdir()
    code = cli.main(["investigate", str(tmp_path / "in"), "--case", str(tmp_path / "case"),
                     "--ioc", str(path)])
    assert code == 2
    assert "no usable indicators" in capsys.readouterr().out
