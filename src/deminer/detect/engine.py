"""Run the rules over a case store and write ``findings``.

Rules run in stage order; the findings of a stage are written before the next stage starts,
so a stage-2 rule can raise or combine what stage 1 found (e.g. a CPU hog that is also a miner).
A rule that fails is recorded in ``errors`` with its id; the other rules still run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import groupby
from typing import Any

import duckdb

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.detect.python import DETECTORS
from deminer.detect.rules import REQUIRED_COLUMNS, Rule, load_rules
from deminer.model import SEVERITIES, TABLES


def _findings_from_query(case: Case, rule: Rule) -> list[Finding]:
    assert rule.query is not None
    rows = case.query(rule.query)
    out = []
    for row in rows:
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"query does not return {', '.join(missing)}")
        severity = row.get("severity") or rule.severity
        if severity not in SEVERITIES:
            severity = rule.severity
        evidence: Any = row["evidence"]
        if isinstance(evidence, str):
            try:
                evidence = json.loads(evidence)
            except json.JSONDecodeError:
                evidence = {"value": evidence}
        if not isinstance(evidence, dict):
            evidence = {"value": evidence}
        out.append(Finding(
            rule=rule.id, title=rule.title, severity=str(severity), attack=rule.attack,
            host=row["host"], ts=row["ts"], entity=str(row["entity"] or ""),
            summary=str(row["summary"] or ""),
            evidence={k: v for k, v in evidence.items() if v is not None},
        ))
    return out


def run_rule(case: Case, rule: Rule) -> list[Finding]:
    """Findings of one rule (raises on a broken rule; ``detect`` records that instead)."""
    if rule.query:
        return _findings_from_query(case, rule)
    assert rule.detector is not None
    try:
        detector = DETECTORS[rule.detector]
    except KeyError:
        raise ValueError(f"unknown detector '{rule.detector}'") from None
    return detector(case, rule)


# Tables a rule can read through a view.
_VIEWS = {"ssh_logons": ("events",), "ip_hosts": ("hosts",)}
# Filled by deminer itself, not by evidence: reading them alone finds nothing.
_NOT_EVIDENCE = frozenset({"iocs"})
_WORDS = re.compile(r"[a-z_]+")


def tables_read(sql: str) -> set[str]:
    """Every table (or view's table) whose name appears as a word in ``sql``; a column or
    literal of the same name only makes the set larger, which is the safe side."""
    words = set(_WORDS.findall(sql.lower()))
    out = {t for t in TABLES if t in words}
    for view, bases in _VIEWS.items():
        if view in words:
            out.update(bases)
    return out - _NOT_EVIDENCE


def _empty_tables(case: Case) -> set[str]:
    checks = " UNION ALL ".join(f"SELECT '{t}' AS t WHERE NOT EXISTS (SELECT 1 FROM {t})" for t in TABLES)
    return {str(r["t"]) for r in case.query(checks)}


def detect(case: Case, rules: Iterable[Rule] | None = None) -> list[Finding]:
    """Replace the case's findings with those of ``rules`` (default: every shipped rule).

    A SQL rule whose tables are all empty is not run: it cannot find anything, and each
    query costs a few milliseconds to plan (a third of the rule set reads host tables that an
    EVTX-only or log-only case does not have).
    """
    rule_list = sorted(rules if rules is not None else load_rules(), key=lambda r: (r.stage, r.id))
    case.db.execute("DELETE FROM findings")
    case.db.execute("DELETE FROM errors WHERE stage = 'detect'")
    found: list[Finding] = []
    for _stage, group in groupby(rule_list, key=lambda r: r.stage):
        stage_findings: list[Finding] = []
        empty = _empty_tables(case)      # again per stage: stage 2 reads stage 1's findings
        for rule in group:
            if rule.query and (read := tables_read(rule.query)) and read <= empty:
                continue
            try:
                stage_findings.extend(run_rule(case, rule))
            except (duckdb.Error, ValueError, OSError) as exc:
                case.error(f"rule {rule.id} ({rule.path.name})", str(exc), stage="detect")
        case.add("findings", [f.row() for f in stage_findings])
        found.extend(stage_findings)
    return sort_findings(found)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by host, time, rule and entity: a stable, readable order."""
    return sorted(
        findings,
        key=lambda f: (-SEVERITIES.index(f.severity), f.host or "", f.ts.isoformat() if f.ts else "",
                       f.rule, f.entity),
    )
