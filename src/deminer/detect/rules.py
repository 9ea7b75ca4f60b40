"""Rules as data: load and validate the YAML rule files under ``detect/rules/``.

A rule file holds one rule::

    id: persistence.cron_pipe_to_shell        # <tactic>.<what>
    title: Cron entry downloads and runs a script
    severity: high                            # info < low < medium < high < critical
    attack: [T1053.003, T1105]                # ATT&CK technique ids
    description: what it means, and "False positives:" what else can cause it
    query: SELECT host, ts, entity, summary, evidence FROM ...   # DuckDB SQL
    stage: 1                                  # optional; stage 2 rules may read findings
    fires:  [{persistence: [{...row...}]}]    # examples that must produce a finding; an
                                              # ``expect: {count, entity, severity, host}``
                                              # key checks what it produces
    quiet:  [{persistence: [{...row...}]}]    # examples that must not

A rule whose logic is not SQL names a Python detector instead of ``query``:
``detector: yara_scan`` (a key of ``detect.python.DETECTORS``); its
examples live in the detector's own tests, named by ``examples_in``.

A query returns the columns ``host, ts, entity, summary, evidence`` (evidence a JSON object,
e.g. ``json_object(...)``) and may return ``severity`` to override the rule's default per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deminer.model import SEVERITIES, TABLES

RULES_DIR = Path(__file__).parent / "rules"
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ID = re.compile(r"^[a-z_]+\.[a-z0-9_]+$")
_ATTACK = re.compile(r"^T\d{4}(\.\d{3})?$")
TACTICS = (
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence",
    "privilege_escalation", "defense_evasion", "credential_access", "discovery",
    "lateral_movement", "collection", "command_and_control", "exfiltration", "impact",
)
REQUIRED_COLUMNS = ("host", "ts", "entity", "summary", "evidence")

Example = dict[str, Any]


class RuleError(ValueError):
    """A rule file that does not follow the format; the message names the file."""


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    attack: tuple[str, ...]
    description: str
    path: Path
    query: str | None = None
    detector: str | None = None
    stage: int = 1
    fires: tuple[Example, ...] = field(default_factory=tuple)
    quiet: tuple[Example, ...] = field(default_factory=tuple)
    examples_in: str | None = None


def _examples(path: Path, raw: Any, key: str) -> tuple[Example, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError(f"{path}: '{key}' must be a list of examples")
    out = []
    for i, ex in enumerate(raw):
        if not isinstance(ex, dict):
            raise RuleError(f"{path}: {key}[{i}] must map table names to rows")
        for table, rows in ex.items():
            if table == "expect":
                if not isinstance(rows, dict) or set(rows) - {"count", "entity", "severity", "host"}:
                    raise RuleError(f"{path}: {key}[{i}].expect takes count, entity, severity, host")
                continue
            if table not in TABLES:
                raise RuleError(f"{path}: {key}[{i}] names unknown table '{table}'")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise RuleError(f"{path}: {key}[{i}].{table} must be a list of rows")
            unknown = {k for r in rows for k in r} - set(TABLES[table].names)
            if unknown:
                raise RuleError(f"{path}: {key}[{i}].{table} has unknown columns {sorted(unknown)}")
        out.append(ex)
    return tuple(out)


def load_rule(path: Path) -> Rule:
    """Parse and validate one rule file."""
    try:
        # The C loader when PyYAML has it: the pure-Python one took seconds for all rules.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path}: cannot read rule: {exc}") from exc
    if not isinstance(data, dict):
        raise RuleError(f"{path}: a rule file holds one mapping")
    for key in ("id", "title", "severity", "attack", "description"):
        if not data.get(key):
            raise RuleError(f"{path}: missing '{key}'")
    rid = str(data["id"])
    if not _ID.match(rid) or rid.split(".")[0] not in TACTICS:
        raise RuleError(f"{path}: id '{rid}' is not <tactic>.<what> with a known tactic")
    if path.stem != rid.split(".", 1)[1] and path.stem != rid:
        raise RuleError(f"{path}: file name must be the rule's <what> part ({rid})")
    if data["severity"] not in SEVERITIES:
        raise RuleError(f"{path}: severity must be one of {', '.join(SEVERITIES)}")
    attack = data["attack"]
    if not isinstance(attack, list) or not all(isinstance(a, str) and _ATTACK.match(a) for a in attack):
        raise RuleError(f"{path}: attack must be a list of ATT&CK ids like T1496 or T1053.003")
    query, detector = data.get("query"), data.get("detector")
    if bool(query) == bool(detector):
        raise RuleError(f"{path}: give exactly one of 'query' or 'detector'")
    rule = Rule(
        id=rid, title=str(data["title"]), severity=str(data["severity"]),
        attack=tuple(attack), description=str(data["description"]), path=path,
        query=str(query) if query else None, detector=str(detector) if detector else None,
        stage=int(data.get("stage", 1)),
        fires=_examples(path, data.get("fires"), "fires"),
        quiet=_examples(path, data.get("quiet"), "quiet"),
        examples_in=data.get("examples_in"),
    )
    if rule.query and (not rule.fires or not rule.quiet):
        raise RuleError(f"{path}: a SQL rule needs at least one 'fires' and one 'quiet' example")
    if rule.detector and not (rule.fires or rule.examples_in):
        raise RuleError(f"{path}: a detector rule needs examples or 'examples_in'")
    return rule


def load_rules(folder: Path = RULES_DIR) -> list[Rule]:
    """Every rule under ``folder`` (recursively), sorted by stage then id."""
    rules = [load_rule(p) for p in sorted(folder.rglob("*.yml"))]
    seen: dict[str, Path] = {}
    for r in rules:
        if r.id in seen:
            raise RuleError(f"{r.path}: duplicate rule id '{r.id}' (also in {seen[r.id]})")
        seen[r.id] = r.path
    return sorted(rules, key=lambda r: (r.stage, r.id))
