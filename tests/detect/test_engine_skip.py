"""The engine skips SQL rules whose tables are all empty, and only those."""

from __future__ import annotations

from pathlib import Path

from deminer.case import Case
from deminer.detect.engine import detect, tables_read
from deminer.detect.rules import Rule

# A query that fails when it runs: an errors row proves it ran.
BROKEN = (
    "SELECT host, ts, 'x' AS entity, 's' AS summary, '{{}}' AS evidence FROM {table} WHERE no_such_column"
)


def rule(rid: str, query: str) -> Rule:
    return Rule(
        id=rid, title=rid, severity="high", attack=(), description="", path=Path(f"{rid}.yml"), query=query
    )


def test_tables_read_sees_tables_and_views_but_not_iocs() -> None:
    assert tables_read("SELECT * FROM ssh_logons JOIN iocs ON true") == {"events"}
    assert tables_read("SELECT 1 FROM processes p LEFT JOIN connections c USING (pid)") == {
        "processes",
        "connections",
    }
    assert tables_read("SELECT (SELECT min(host) FROM ip_hosts) FROM flows") == {"hosts", "flows"}


def test_rules_on_empty_tables_are_skipped_the_others_run() -> None:
    rules = [
        rule("execution.on_processes", BROKEN.format(table="processes")),
        rule("execution.on_events", BROKEN.format(table="events")),
        rule("execution.on_both", BROKEN.format(table="processes JOIN events ON true")),
    ]
    with Case(None) as case:
        case.add("events", [{"host": "a", "event": "logon_failure"}])
        detect(case, rules)
        ran = sorted(r["source"] for r in case.query("SELECT source FROM errors WHERE stage = 'detect'"))
    assert ran == [
        "rule execution.on_both (execution.on_both.yml)",
        "rule execution.on_events (execution.on_events.yml)",
    ]


def test_stage_two_rules_see_the_findings_of_stage_one() -> None:
    first = rule(
        "execution.first", "SELECT host, ts, 'e' AS entity, 's' AS summary, '{}' AS evidence FROM events"
    )
    second = Rule(
        id="impact.second",
        title="second",
        severity="high",
        attack=(),
        description="",
        path=Path("second.yml"),
        stage=2,
        query="SELECT host, ts, 'f' AS entity, 's' AS summary, '{}' AS evidence FROM findings",
    )
    with Case(None) as case:
        case.add("events", [{"host": "a", "event": "logon_failure"}])
        found = detect(case, [first, second])
    assert sorted(f.rule for f in found) == ["execution.first", "impact.second"]
