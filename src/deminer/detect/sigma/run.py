"""Run Sigma rules over a case and write their findings next to the other rules' findings.

``sigma_findings(case, dirs)`` is the entry point for the CLI: it loads deminer's own pack
(``detect/sigma/rules``) and every folder given (``--sigma DIR``), converts them
(``loader.py``), runs each query and returns ``(findings, problems)``. Call it after
``engine.detect`` — that one replaces the whole ``findings`` table — because this one only
replaces the findings of earlier Sigma runs (those whose evidence names a ``sigma.file``).

A plain rule gives one finding per host and entity (the domain, driver, task, service,
command or account it fired on) with the first matching event as evidence and ``count``
the number of events; a correlation rule gives one finding per host and group. Broken rule
files and queries that fail at run time are also written to ``errors`` (stage ``sigma``);
rules deminer cannot run (unknown log source, unsupported modifier) are only returned.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.detect.sigma.batch import batch_query
from deminer.detect.sigma.loader import PACK_DIR, ConvertedRule, Problem, SigmaSet, load

SUMMARY_VALUE_CAP = 300

# events column -> evidence key (Elastic Common Schema names where one exists)
_EVIDENCE_KEYS = {
    "source": "source", "source_line": "source_line", "record_id": "record_id",
    "event_id": "event_id", "channel": "channel", "event": "event", "process": "exe",
    "command": "command", "user": "user.name", "src_ip": "source.ip",
    "dst_ip": "destination.ip", "dst_port": "destination.port", "dst_host": "destination.domain",
}


@dataclass(frozen=True)
class RuleTiming:
    rule_id: str
    path: str
    convert_seconds: float
    query_seconds: float
    findings: int


@dataclass
class SigmaRun:
    findings: list[Finding] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    timings: list[RuleTiming] = field(default_factory=list)
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def _cap(value: Any, limit: int = SUMMARY_VALUE_CAP) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _stamp(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, dt.datetime) else None


def summary(rule: ConvertedRule, row: dict[str, Any]) -> str:
    """Title, what it fired on and the key facts of the first event, in one sentence."""
    entity = row.get("entity") or ""
    text = f"{rule.title}: {_cap(entity)}" if entity else rule.title
    facts = []
    if row.get("process") and row["process"] != entity and not rule.correlation:
        facts.append(f"process {_cap(row['process'])}")
    if row.get("command") and row["command"] != entity and not rule.correlation:
        facts.append(f"command {_cap(row['command'])}")
    if row.get("user") and not rule.correlation:
        facts.append(f"user {_cap(row['user'], 80)}")
    if row.get("src_ip") and not rule.correlation:
        facts.append(f"from {row['src_ip']}")
    if facts:
        text += " (" + ", ".join(facts) + ")"
    if row.get("host"):
        text += f" on {row['host']}"
    hits, first, last = row.get("hits"), _stamp(row.get("ts")), _stamp(row.get("last_ts"))
    if rule.correlation:
        peak = f"{hits:g}" if isinstance(hits, (int, float)) else "?"
        text += (f"; {rule.condition} first met at {_stamp(row.get('met_ts'))} (window from {first}, "
                 f"peak {peak}, last matching event {last})")
    elif isinstance(hits, int) and hits > 1:
        text += f"; {hits} events from {first} to {last}"
    elif first:
        text += f" at {first}"
    return text


def to_finding(rule: ConvertedRule, row: dict[str, Any]) -> Finding:
    evidence: dict[str, Any] = {key: row[col] for col, key in _EVIDENCE_KEYS.items()
                                if row.get(col) is not None}
    hits = row.get("hits")
    evidence["count"] = float(hits) if isinstance(hits, float) and not hits.is_integer() else (
        int(hits) if hits is not None else None)
    evidence["first"], evidence["last"] = _stamp(row.get("ts")), _stamp(row.get("last_ts"))
    evidence["sigma.id"], evidence["sigma.file"] = rule.sigma_id, rule.path
    if rule.correlation:
        evidence["met"] = _stamp(row.get("met_ts"))
        evidence["sigma.correlation"] = True
        evidence["group"] = row.get("entity") or None
    return Finding(
        rule=rule.rule_id, title=rule.title, severity=rule.severity, attack=rule.attack,
        host=row.get("host"), ts=row.get("ts"), entity=str(row.get("entity") or ""),
        summary=summary(rule, row),
        evidence={k: v for k, v in evidence.items() if v is not None},
    )


BATCH_RULES = 64   # rules of one route per query: enough to amortise, small enough to plan fast


def _run_one(case: Case, rule: ConvertedRule, run: SigmaRun) -> None:
    started = time.perf_counter()
    try:
        rows = case.query(rule.sql)
    except duckdb.Error as exc:
        run.problems.append(Problem(rule.path, rule.title, f"query failed: {exc}", "query"))
        return
    found = [to_finding(rule, row) for row in rows]
    run.timings.append(RuleTiming(rule.rule_id, rule.path, rule.convert_seconds,
                                  time.perf_counter() - started, len(found)))
    run.findings.extend(found)


def _run_batch(case: Case, batch: Sequence[ConvertedRule], run: SigmaRun) -> None:
    """Rules sharing a route in one scan; if the scan fails, each rule alone names its error."""
    started = time.perf_counter()
    try:
        rows = case.query(batch_query(batch[0].route, [r.where for r in batch]))
    except duckdb.Error:
        for rule in batch:
            _run_one(case, rule, run)
        return
    per_rule: dict[int, list[Finding]] = {}
    for row in rows:
        per_rule.setdefault(row["_rule"], []).append(to_finding(batch[row["_rule"]], row))
    share = (time.perf_counter() - started) / len(batch)
    for i, rule in enumerate(batch):
        found = per_rule.get(i, [])
        run.timings.append(RuleTiming(rule.rule_id, rule.path, rule.convert_seconds, share, len(found)))
        run.findings.extend(found)


def execute(case: Case, rules: SigmaSet) -> SigmaRun:
    """Run converted rules; replaces earlier Sigma findings and errors in the case."""
    run = SigmaRun(problems=list(rules.problems), files=rules.files, skipped=list(rules.skipped))
    routes: dict[str, list[ConvertedRule]] = {}
    for rule in rules.rules:
        if rule.correlation or not rule.route:
            _run_one(case, rule, run)
        else:
            routes.setdefault(rule.route, []).append(rule)
    for group in routes.values():
        for start in range(0, len(group), BATCH_RULES):
            _run_batch(case, group[start:start + BATCH_RULES], run)
    case.db.execute("DELETE FROM findings WHERE json_extract_string(TRY_CAST(evidence AS JSON), "
                    "'$.\"sigma.file\"') IS NOT NULL")
    case.db.execute("DELETE FROM errors WHERE stage = 'sigma'")
    case.add("findings", [f.row() for f in run.findings])
    for problem in run.problems:
        if problem.kind != "unsupported":
            message = f"{problem.rule}: {problem.reason}" if problem.rule else problem.reason
            case.error(problem.path, message, stage="sigma")
    return run


def run_sigma(case: Case, rules_dir: Path, problems: list[Problem] | None = None) -> list[Finding]:
    """Findings of the Sigma rules under ``rules_dir``; what could not run goes to ``problems``."""
    run = execute(case, load([rules_dir]))
    if problems is not None:
        problems.extend(run.problems)
    return run.findings


def sigma_findings(case: Case, dirs: Iterable[Path] = (), pack: bool = True
                   ) -> tuple[list[Finding], list[Problem]]:
    """Run deminer's own pack (unless ``pack`` is False) and every folder in ``dirs``."""
    folders: Sequence[Path] = ([PACK_DIR] if pack else []) + list(dirs)
    run = execute(case, load(folders))
    return run.findings, run.problems
