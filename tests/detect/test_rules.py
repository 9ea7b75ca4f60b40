"""Every shipped rule: its metadata is complete and its own examples fire or stay quiet."""

from __future__ import annotations

from typing import Any

import pytest

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import run_rule
from deminer.detect.rules import Rule, load_rules

RULES = load_rules()


def _run(rule: Rule, example: dict[str, Any]) -> list[Any]:
    with Case(None) as case:
        iocs.load_shipped(case)
        for table, rows in example.items():
            if table != "expect":
                case.add(table, rows)
        return run_rule(case, rule)


def test_there_are_rules() -> None:
    assert len(RULES) >= 1


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_metadata(rule: Rule) -> None:
    assert rule.title[0].isupper() and len(rule.title) < 100
    assert "false positive" in rule.description.lower(), "say what else can cause it"
    assert rule.attack


def _examples(kind: str) -> list[Any]:
    return [pytest.param(r, i, id=f"{r.id}[{i}]") for r in RULES if r.query
            for i in range(len(getattr(r, kind)))]


@pytest.mark.parametrize(("rule", "index"), _examples("fires"))
def test_rule_fires(rule: Rule, index: int) -> None:
    example = rule.fires[index]
    found = _run(rule, example)
    assert found, f"{rule.id} did not fire on fires[{index}]"
    expect = example.get("expect", {})
    if "count" in expect:
        assert len(found) == expect["count"], [f.summary for f in found]
    for key in ("entity", "severity", "host"):
        if key in expect:
            assert {getattr(f, key) for f in found} == {expect[key]}
    for f in found:
        assert f.summary and f.entity, f"{rule.id} gives an empty summary or entity"
        assert isinstance(f.evidence, dict) and f.evidence


@pytest.mark.parametrize(("rule", "index"), _examples("quiet"))
def test_rule_quiet(rule: Rule, index: int) -> None:
    found = _run(rule, rule.quiet[index])
    assert not found, f"{rule.id} fired on quiet[{index}]: {[f.summary for f in found]}"
