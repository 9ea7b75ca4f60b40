"""Sigma rules converted to DuckDB SQL: every modifier, correlations, and broken input.

Each modifier case is one Sigma rule run over rows that must match and rows that must not;
the rows are built by the real Windows mapping (``sigma_gen``), so a rule sees what an
ingested EVTX would give it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.policy.profiles import TrustedPolicy
from sigma.types import SigmaRegularExpression

from deminer.case import Case
from deminer.detect.sigma.backend import DuckDBBackend
from deminer.detect.sigma.loader import ConvertedRule, SigmaSet, load
from deminer.detect.sigma.run import execute, sigma_findings
from tests.detect import sigma_gen as g

Row = g.Row
NET = "{product: windows, category: network_connection}"


def net(ip: str, port: int = 443, **extra: str) -> Row:
    return g.win(g.SYSMON, 3, {"Image": r"C:\Users\bob\m.exe", "DestinationIp": ip,
                               "DestinationPort": str(port), "Initiated": "true", "User": "bob",
                               **extra})


def b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode()


# (name, logsource, detection, rows that match, rows that do not)
CASES: list[tuple[str, str, str, Callable[[], list[Row]], Callable[[], list[Row]]]] = [
    ("equals_ignores_case", "", r"sel: {Image: 'C:\Windows\System32\cmd.exe'}",
     lambda: [g.proc(r"c:\windows\system32\CMD.EXE", "m1")],
     lambda: [g.proc(r"C:\Windows\System32\cmd.exe.bak", "n1")]),
    # a backslash before a wildcard escapes it, so a path separator before one is doubled
    ("wildcards", "", r"sel: {Image: 'C:\Users\\*\AppData\\?pdate.exe'}",
     lambda: [g.proc(r"C:\Users\bob\AppData\Update.exe", "m1"),
              g.proc(r"C:\Users\a\b\AppData\xpdate.exe", "m2")],
     lambda: [g.proc(r"C:\Users\bob\AppData\Uppdate.exe", "n1"),
              g.proc(r"D:\Users\bob\AppData\Update.exe", "n2")]),
    ("escaped_wildcard_is_literal", "", r"sel: {CommandLine|contains: 'a\*b'}",
     lambda: [g.proc("x.exe", "xa*by")], lambda: [g.proc("x.exe", "xaXby")]),
    ("percent_underscore_quote_are_literal", "", "sel: {CommandLine|contains: \"50%_o'ff\"}",
     lambda: [g.proc("x.exe", "sale 50%_o'ff now")],
     lambda: [g.proc("x.exe", "sale 50a_o'ff"), g.proc("x.exe", "sale 50%xo'ff"),
              g.proc("x.exe", "sale 50%_off")]),
    ("backslash_is_literal", "", r"sel: {CommandLine|endswith: '\share\x'}",
     lambda: [g.proc("net.exe", r"net use \\srv\share\x")],
     lambda: [g.proc("net.exe", "net use /share/x"), g.proc("net.exe", r"net use \share\xy")]),
    ("startswith", "", "sel: {CommandLine|startswith: 'powershell'}",
     lambda: [g.proc("p.exe", "PowerShell -nop")], lambda: [g.proc("c.exe", "cmd /c powershell")]),
    ("contains_all", "", "sel: {CommandLine|contains|all: ['-o ', 'stratum']}",
     lambda: [g.proc("x.exe", "x -o stratum+tcp://p:3333")],
     lambda: [g.proc("x.exe", "x -o p:3333"), g.proc("x.exe", "stratum only")]),
    ("cased_contains", "", "sel: {CommandLine|cased|contains: 'XMRig'}",
     lambda: [g.proc("x.exe", "run XMRig now")], lambda: [g.proc("x.exe", "run xmrig now")]),
    ("cased_equals", "", "sel: {CommandLine|cased: 'ABC'}",
     lambda: [g.proc("x.exe", "ABC")], lambda: [g.proc("x.exe", "abc"), g.proc("x.exe", "ABCD")]),
    ("regex_is_case_sensitive", "", r"sel: {CommandLine|re: '-o\s+[a-z0-9.]+:\d{4}\b'}",
     lambda: [g.proc("x.exe", "x -o pool.example:3333 -u w")],
     lambda: [g.proc("x.exe", "x -o pool.example:80"), g.proc("x.exe", "X -O POOL.EXAMPLE:3333")]),
    ("regex_ignorecase", "", "sel: {CommandLine|re|i: 'invoke-(expression|webrequest)'}",
     lambda: [g.proc("x.exe", "INVOKE-EXPRESSION $a")], lambda: [g.proc("x.exe", "invoke-command")]),
    ("windash", "", "sel: {CommandLine|windash|contains: ' -enc '}",
     lambda: [g.proc("p.exe", "powershell /enc AAA"), g.proc("p.exe", "powershell \u2013enc BBB"),
              g.proc("p.exe", "powershell -ENC CCC")],
     lambda: [g.proc("p.exe", "powershell -encx A"), g.proc("p.exe", "powershell enc A")]),
    ("base64offset_contains", "", "sel: {CommandLine|base64offset|contains: 'http://evil'}",
     lambda: [g.proc("p.exe", "-e " + b64(p + "http://evil.example/x")) for p in ("", "a", "ab")],
     lambda: [g.proc("p.exe", "-e " + b64("https://good.example/"))]),
    ("wide_base64offset", "", "sel: {CommandLine|wide|base64offset|contains: 'IEX'}",
     lambda: [g.proc("p.exe", "powershell -enc " + b64("IEX (New-Object x)", "utf-16le"))],
     lambda: [g.proc("p.exe", "powershell -enc " + b64("Get-Date", "utf-16le"))]),
    ("cidr_ipv4", NET, "sel: {DestinationIp|cidr: '10.8.0.0/13'}",
     lambda: [net("10.8.0.1"), net("10.15.255.254"), net("::ffff:10.9.1.1")],
     lambda: [net("10.16.0.1"), net("10.7.255.255"), net("10.8.0.1.5"), net("110.8.0.1"),
              net("10.8.0.256"), net("10.8.x.1")]),
    ("cidr_ipv6", NET, "sel: {DestinationIp|cidr: '2001:db8::/32'}",
     lambda: [net("2001:db8:1::5"), net("2001:DB8::1")], lambda: [net("2001:db9::1")]),
    ("null", "", "sel: {ParentCommandLine: null}",
     lambda: [g.proc("x.exe", "m1")], lambda: [g.proc("x.exe", "n1", ParentCommandLine="x")]),
    ("exists", "", "sel: {ParentCommandLine|exists: true}",
     lambda: [g.proc("x.exe", "m1", ParentCommandLine="x")], lambda: [g.proc("x.exe", "n1")]),
    ("not_exists", "", "sel: {ParentCommandLine|exists: false}",
     lambda: [g.proc("x.exe", "m1")], lambda: [g.proc("x.exe", "n1", ParentCommandLine="x")]),
    ("number_on_int_column", NET, "sel: {DestinationPort: 3333}",
     lambda: [net("1.1.1.1", 3333)], lambda: [net("1.1.1.2", 33333), net("1.1.1.3", 80)]),
    ("number_on_data_field", "", "sel: {ProcessId: 4242}",
     lambda: [g.proc("x.exe", "m1")], lambda: [g.proc("x.exe", "n1", ProcessId="4243")]),
    ("unquoted_hex_number", "{product: windows, category: process_access}", "sel: {GrantedAccess: 0x1410}",
     lambda: [g.win(g.SYSMON, 10, {"SourceImage": r"C:\m.exe", "GrantedAccess": "0x1410"})],
     lambda: [g.win(g.SYSMON, 10, {"SourceImage": r"C:\n.exe", "GrantedAccess": "0x1010"})]),
    ("compare", NET, "sel: {DestinationPort|gte: 3000, DestinationPort|lt: 4000}",
     lambda: [net("1.1.1.1", 3333), net("1.1.1.2", 3000)],
     lambda: [net("1.1.1.3", 4444), net("1.1.1.4", 80)]),
    ("keywords", "", "keywords: ['stratum+tcp']",
     lambda: [g.proc("x.exe", "x -o STRATUM+TCP://p:1")], lambda: [g.proc("x.exe", "x -o p:1")]),
    ("fieldref", "", "sel: {Image|fieldref: ParentImage}",
     lambda: [g.proc(r"C:\a.exe", "m1", parent=r"c:\A.EXE")], lambda: [g.proc(r"C:\a.exe", "n1")]),
    ("hour", "", "sel: {timestamp|hour: 11}",
     lambda: [g.proc("x.exe", "m1", seconds=3600)], lambda: [g.proc("x.exe", "n1")]),
    ("security_4688_has_the_same_fields", "",
     r"sel: {Image|endswith: '\cmd.exe', ParentImage|endswith: '\w3wp.exe'}",
     lambda: [g.proc_4688(r"C:\Windows\System32\cmd.exe", "m1", parent=r"C:\inetpub\w3wp.exe"),
              g.proc(r"C:\Windows\System32\cmd.exe", "m2", parent=r"C:\inetpub\w3wp.exe")],
     lambda: [g.proc_4688(r"C:\Windows\System32\cmd.exe", "n1")]),
    ("linux_process_creation_reads_shell_history", "{product: linux, category: process_creation}",
     "sel: {CommandLine|contains: 'xmrig'}",
     lambda: [g.linux("shell_command", "./xmrig -o p:3333"), g.linux("cron_run", "/tmp/xmrig -B")],
     lambda: [g.proc("x.exe", "xmrig.exe -o p"), g.linux("logon_failure", "xmrig", program="sshd")]),
]


def _detection(text: str) -> str:
    return text + ("\ncondition: keywords" if text.startswith("keywords") else "")


@pytest.mark.parametrize("name,logsource,detection,matching,other", CASES, ids=[c[0] for c in CASES])
def test_modifier(tmp_path: Path, name: str, logsource: str, detection: str,
                  matching: Callable[[], list[Row]], other: Callable[[], list[Row]]) -> None:
    folder = g.write_rules(tmp_path / "r", {f"{name}.yml": g.rule(
        _detection(detection), **({"logsource": logsource} if logsource else {}))})
    yes, no = matching(), other()
    run = g.run(folder, yes + no)
    assert run.problems == []
    assert sorted(f.evidence["source_line"] for f in run.findings) == sorted(r["source_line"] for r in yes)


def test_not_of_a_missing_field_is_true(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"r.yml": g.rule(r"""
        sel: {Image|endswith: '\x.exe'}
        filter: {ParentCommandLine|contains: 'legit'}
        condition: sel and not filter
        """)})
    yes = g.proc(r"C:\x.exe", "no parent command line at all")
    no = g.proc(r"C:\x.exe", "filtered", ParentCommandLine="legit run")
    run = g.run(folder, [yes, no])
    assert [f.evidence["record_id"] for f in run.findings] == [yes["record_id"]]


def test_finding_carries_rule_metadata_and_evidence(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"xmrig.yml": """
        title: Miner Started
        id: 6d0e1f5a-8a44-4d4e-9a3c-0d6f1b9c2e11
        status: test
        logsource: {product: windows, category: process_creation}
        detection:
          sel: {CommandLine|contains: '--donate-level'}
          condition: sel
        level: informational
        tags: [attack.defense-evasion, attack.impact, attack.t1496, attack.s0001, cve.2021-1]
        """})
    rows = [g.proc(r"C:\Temp\m.exe", "m.exe --donate-level 1", seconds=s) for s in (0, 60, 120)]
    (f,) = g.run(folder, rows).findings
    assert f.rule == "defense_evasion.miner_started" and f.severity == "info"
    assert f.attack == ("T1496",)
    assert (f.host, f.ts, f.entity) == ("win1", g.T0, "m.exe --donate-level 1")
    ev = f.evidence
    assert ev["count"] == 3 and ev["first"] == "2024-05-01T10:00:00Z" and ev["last"] == "2024-05-01T10:02:00Z"
    assert ev["record_id"] == rows[0]["record_id"] and ev["source"] == rows[0]["source"]
    assert ev["exe"] == r"C:\Temp\m.exe" and ev["user.name"] == r"CORP\alice"
    assert ev["sigma.id"] == "6d0e1f5a-8a44-4d4e-9a3c-0d6f1b9c2e11"
    assert ev["sigma.file"].endswith("xmrig.yml") and ev["event_id"] == 1
    assert "Miner Started" in f.summary and "3 events" in f.summary and "win1" in f.summary


# --- loading: broken files are reported, the rest runs ----------------------------------------

GOOD = g.rule("sel: {CommandLine|contains: 'payload'}", title="Good rule")


def test_broken_files_are_reported_with_reasons(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {
        "good.yml": GOOD,
        "broken.yml": "title: [unclosed\n",
        "bad_modifier.yml": g.rule("sel: {CommandLine|frobnicate: 'x'}", title="Bad modifier"),
        "expand.yml": g.rule("sel: {User|expand: '%admins%'}", title="Expand"),
        "aws.yml": g.rule("sel: {eventName: ConsoleLogin}", "{product: aws, service: cloudtrail}", "Aws"),
        "lookahead.yml": g.rule("sel: {CommandLine|re: 'a(?=b)'}", title="Lookahead"),
        "bad_condition.yml": g.rule("sel: {CommandLine: x}\ncondition: sel and missing", title="Cond"),
        "orphan.yml": g.correlation("event_count", "  timespan: 5m\n  condition: {gte: 2}\n",
                                  rules="[no_such_rule]"),
        "not_sigma.yml": "jobs:\n  build: {runs-on: ubuntu}\n",
        "quote_field.yml": g.rule("sel: {'Com\"and''x': 1}", title="Quoted field"),
        "bomb.yml": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
                    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e]\n"
                    "title: Bomb\nlogsource: {product: windows}\ndetection: {sel: {x: *f}, condition: sel}\n",
    })
    (folder / "junk.yml").write_bytes(b"\x00\x01\x02\xff" * 50)
    (folder / "latin1.yml").write_bytes(b"title: caf\xe9\n")
    (folder / "huge.yml").write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    (folder / "deep.yml").write_text("[" * 5000 + "]" * 5000)
    hostile = folder / os.fsdecode(b"evil\x1b[31m\xff.yml")
    hostile.write_bytes(b"title: [")
    with Case(None) as case:
        case.add("events", [g.proc("x.exe", "run payload now")])
        run = execute(case, load([folder]))
        errors = case.query("SELECT source, message FROM errors WHERE stage = 'sigma'")
    reasons = {Path(p.path).name: (p.kind, p.reason) for p in run.problems}
    assert [f.title for f in run.findings] == ["Good rule"]
    assert reasons["broken.yml"][0] == "invalid" and "invalid YAML" in reasons["broken.yml"][1]
    assert reasons["junk.yml"] == ("invalid", "binary content, not a YAML rule")
    assert "not UTF-8" in reasons["latin1.yml"][1]
    assert "larger than" in reasons["huge.yml"][1]
    assert "invalid YAML" in reasons["deep.yml"][1] or "Recursion" in reasons["deep.yml"][1]
    assert reasons["bad_modifier.yml"][0] == "invalid" and "frobnicate" in reasons["bad_modifier.yml"][1]
    assert reasons["expand.yml"][0] == "unsupported" and "placeholder" in reasons["expand.yml"][1]
    assert reasons["aws.yml"] == ("unsupported",
                                  "no deminer log for logsource product=aws service=cloudtrail")
    # pySigma's safe policy already refuses what RE2 cannot run (look-arounds, back-references)
    assert reasons["lookahead.yml"][0] == "invalid" and "Regular expression" in reasons["lookahead.yml"][1]
    assert reasons["bad_condition.yml"][0] == "invalid"
    assert reasons["orphan.yml"][0] == "unsupported" and "no_such_rule" in reasons["orphan.yml"][1]
    assert reasons["bomb.yml"][0] == "invalid"
    assert reasons["quote_field.yml"] == ("unsupported", reasons["quote_field.yml"][1])
    assert "cannot be mapped" in reasons["quote_field.yml"][1]
    hostile_name = next(n for n in reasons if n.startswith("evil"))
    assert "\\xff" in hostile_name and reasons[hostile_name][0] == "invalid"
    assert [Path(s).name for s in run.skipped] == ["not_sigma.yml"]
    # broken files are case errors; valid Sigma deminer cannot run is only reported
    error_files = {Path(e["source"]).name for e in errors}
    assert {"broken.yml", "junk.yml", "bad_modifier.yml"} <= error_files
    assert not {"aws.yml", "expand.yml", "orphan.yml"} & error_files


def test_backend_refuses_a_regex_duckdb_cannot_run() -> None:
    # With pySigma's trusted policy a Python-only pattern gets through parsing; the backend
    # still refuses it at conversion time instead of failing the query later.
    value = SigmaRegularExpression("a(?=b)", policy=TrustedPolicy)
    cond = ConditionFieldEqualsValueExpression("CommandLine", value)
    with pytest.raises(SigmaFeatureNotSupportedByBackendError, match="RE2"):
        DuckDBBackend().convert_condition_field_eq_val_re(cond, ConversionState())


def test_a_failing_query_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    good = load([g.write_rules(tmp_path / "r", {"good.yml": GOOD})])
    broken = ConvertedRule("execution.broken", "Broken", "high", (), None, "broken.yml",
                           "SELECT no_such_column FROM events", False, 0.0)
    with Case(None) as case:
        case.add("events", [g.proc("x.exe", "payload")])
        run = execute(case, SigmaSet(rules=[broken, *good.rules]))
        errors = case.query("SELECT source, message FROM errors WHERE stage = 'sigma'")
    assert [f.title for f in run.findings] == ["Good rule"]
    assert [(p.kind, p.path) for p in run.problems] == [("query", "broken.yml")]
    assert errors[0]["source"] == "broken.yml" and "query failed" in errors[0]["message"]


def test_rerun_replaces_only_sigma_findings(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"good.yml": GOOD})
    with Case(None) as case:
        case.add("events", [g.proc("x.exe", "payload")])
        case.add("findings", [{"rule": "impact.other", "title": "t", "severity": "low",
                               "evidence": '{"source": "x"}'}])
        for _ in range(2):
            findings, problems = sigma_findings(case, [folder], pack=False)
        rules = [r["rule"] for r in case.query("SELECT rule FROM findings ORDER BY rule")]
    assert problems == [] and len(findings) == 1
    assert rules == ["execution.good_rule", "impact.other"]


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with Case(None) as case:
        findings, problems = sigma_findings(case, [tmp_path / "nope"], pack=False)
    assert findings == [] and problems[0].reason == "no such file or folder"
