"""Load folders of Sigma rules (e.g. a SigmaHQ checkout) and convert each rule to DuckDB SQL.

Every ``*.yml``/``*.yaml`` file under a folder is read (symlinks are not followed, files
over ``MAX_FILE_BYTES`` are refused). YAML that is not Sigma (no ``detection``,
``correlation``, ``filter`` or ``action`` key: CI configs, test data) is skipped and
counted. Every rule that cannot run is listed as a ``Problem`` with the file and the
reason — unreadable file, invalid rule, unknown log source, unsupported modifier, a
correlation whose base rule failed — and never silently dropped; the rest still convert.

How a Sigma rule becomes a deminer rule (``meta``):

    rule id   <tactic>.<slug of title> from the first ATT&CK tactic tag
              (attack.defense-evasion -> defense_evasion.<slug>), else sigma.<slug>;
              a clash gets the first 8 characters of the Sigma id appended
    severity  informational -> info; low, medium, high, critical as they are (none: medium)
    attack    technique tags: attack.t1059.001 -> T1059.001
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaFeatureNotSupportedByBackendError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from deminer.detect.rules import TACTICS
from deminer.detect.sigma.backend import DuckDBBackend, rule_query
from deminer.detect.sigma.correlation import base_rules, correlation_query
from deminer.detect.sigma.mapping import describe, route

MAX_FILE_BYTES = 1 << 20
# libyaml's safe loader where PyYAML was built with it: the pure-Python one took 85 % of
# loading a SigmaHQ-sized checkout.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PACK_DIR = Path(__file__).parent / "rules"
_RULE_KEYS = frozenset({"detection", "correlation", "filter", "action"})
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")
_LEVELS = {"informational": "info", "low": "low", "medium": "medium", "high": "high",
           "critical": "critical"}

AnyRule = SigmaRule | SigmaCorrelationRule
_CORR_OPS = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">=", "EQ": "=", "NEQ": "!="}


@dataclass(frozen=True)
class Problem:
    """A file or rule that will not run. ``kind``: ``invalid`` (broken file or rule),
    ``unsupported`` (valid Sigma deminer cannot run) or ``query`` (failed at run time)."""

    path: str
    rule: str | None
    reason: str
    kind: str

    def __str__(self) -> str:
        where = f"{self.path} ({self.rule})" if self.rule else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ConvertedRule:
    rule_id: str
    title: str
    severity: str
    attack: tuple[str, ...]
    sigma_id: str | None
    path: str
    sql: str
    correlation: bool
    convert_seconds: float
    condition: str = ""   # a correlation's condition in words: "event_count >= 10 within 5m by IpAddress"
    # A plain rule's route and detection as SQL, so many rules of a route run in one scan.
    route: str = ""
    where: str = ""


@dataclass
class SigmaSet:
    rules: list[ConvertedRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    skipped: list[str] = field(default_factory=list)   # YAML files that are not Sigma


# --- metadata ------------------------------------------------------------------------------

def slug(text: str, limit: int = 64) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_")


def meta(rule: AnyRule) -> tuple[str | None, str, tuple[str, ...]]:
    """(tactic, severity, ATT&CK technique ids) of a Sigma rule."""
    tactic = None
    techniques: list[str] = []
    for tag in rule.tags:
        if tag.namespace.lower() != "attack":
            continue
        name = tag.name.lower()
        if _TECHNIQUE.match(name):
            techniques.append(name.upper())
        elif tactic is None and name.replace("-", "_") in TACTICS:
            tactic = name.replace("-", "_")
    level = str(rule.level).lower() if rule.level is not None else "medium"
    return tactic, _LEVELS.get(level, "medium"), tuple(dict.fromkeys(techniques))


def _rule_name(rule: AnyRule) -> str:
    return f"{rule.title or '(untitled)'} [{rule.id}]" if rule.id else (rule.title or "(untitled)")


# --- reading files -------------------------------------------------------------------------

def rule_files(folder: Path) -> Iterator[Path]:
    """``*.yml``/``*.yaml`` under ``folder``, sorted, never following symlinks."""
    if folder.is_file():
        yield folder
        return
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in (".yml", ".yaml") and not path.is_symlink() and path.is_file():
                yield path


def _display(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file(path: Path, out: SigmaSet) -> tuple[list[AnyRule], list[SigmaFilter]]:
    """The rules and filters of one file; problems and non-Sigma files are recorded in ``out``."""
    name = _display(path)
    out.files += 1

    def bad(reason: str, rule: str | None = None) -> None:
        out.problems.append(Problem(name, rule, reason, "invalid"))

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            bad(f"file is larger than {MAX_FILE_BYTES} bytes")
            return [], []
        raw = path.read_bytes()
    except OSError as exc:
        bad(f"cannot read: {exc.strerror or exc}")
        return [], []
    if b"\x00" in raw:
        bad("binary content, not a YAML rule")
        return [], []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad(f"not UTF-8 text (byte {exc.start})")
        return [], []
    try:
        docs = list(yaml.load_all(text, Loader=_YAML_LOADER))
    except (yaml.YAMLError, RecursionError) as exc:
        bad("invalid YAML: " + " ".join(str(exc).split())[:300])
        return [], []
    if not any(isinstance(d, dict) and _RULE_KEYS & set(d) for d in docs):
        out.skipped.append(name)
        return [], []
    try:
        collection = SigmaCollection.from_dicts(
            docs, collect_errors=True, source=SigmaRuleLocation(path),
            collect_filters=True, resolve_references=False)
    except Exception as exc:
        bad(f"not a valid Sigma rule: {type(exc).__name__}: {exc}")
        return [], []
    for error in collection.errors:
        if not any(error in r.errors for r in collection.rules):
            bad(f"not a valid Sigma rule: {error}")
    rules: list[AnyRule] = []
    for rule in collection.rules:
        if rule.errors:
            bad("; ".join(str(e) for e in rule.errors[:3]), _rule_name(rule))
        else:
            rules.append(rule)
    return rules, list(collection.filters)


# --- conversion ----------------------------------------------------------------------------

def load(folders: Iterable[Path]) -> SigmaSet:
    """Read and convert every Sigma rule under ``folders`` (files may be given too)."""
    out = SigmaSet()
    rules: list[AnyRule] = []
    filters: list[SigmaFilter] = []
    paths: dict[int, str] = {}
    seen: set[Path] = set()    # a file reached twice (overlapping folders) is read once
    for folder in folders:
        if not folder.exists():
            out.problems.append(Problem(_display(folder), None, "no such file or folder", "invalid"))
            continue
        for path in rule_files(folder):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            found, found_filters = read_file(path, out)
            for rule in found:
                paths[id(rule)] = _display(path)
            rules.extend(found)
            filters.extend(found_filters)
    rules = _drop_duplicates(rules, paths, out)
    _apply_filters(rules, filters, out)
    collection = SigmaCollection(list[AnyRule | SigmaFilter](rules), resolve_references=False)
    backend = DuckDBBackend()
    wheres: dict[int, str | Problem] = {}
    taken: set[str] = set()
    plain: list[tuple[SigmaRule, int]] = []    # (rule, its index in out.rules)
    for rule in rules:
        if isinstance(rule, SigmaRule):
            wheres[id(rule)] = _convert_plain(backend, rule, paths[id(rule)], out, taken)
            if isinstance(wheres[id(rule)], str):
                plain.append((rule, len(out.rules) - 1))
    for rule in rules:
        if isinstance(rule, SigmaCorrelationRule):
            _convert_correlation(rule, collection, wheres, paths[id(rule)], out, taken)
    backend.close()
    # Base rules of a correlation without ``generate: true`` give no findings of their own
    # (resolving the correlation switched their output off).
    silent = {index for rule, index in plain if not rule._output}
    out.rules = [r for i, r in enumerate(out.rules) if i not in silent]
    return out


def _drop_duplicates(rules: list[AnyRule], paths: dict[int, str], out: SigmaSet) -> list[AnyRule]:
    seen: dict[str, str] = {}
    kept = []
    for rule in rules:
        rid = str(rule.id) if rule.id else None
        if rid and rid in seen:
            out.problems.append(Problem(paths[id(rule)], _rule_name(rule),
                                        f"duplicate Sigma id (also in {seen[rid]}); skipped", "invalid"))
            continue
        if rid:
            seen[rid] = paths[id(rule)]
        kept.append(rule)
    return kept


def _apply_filters(rules: list[AnyRule], filters: list[SigmaFilter], out: SigmaSet) -> None:
    for sigma_filter in filters:
        for rule in rules:
            if isinstance(rule, SigmaRule):
                try:
                    sigma_filter.apply_on_rule(rule)
                except SigmaError as exc:
                    where = _display(sigma_filter.source.path) if sigma_filter.source else "?"
                    out.problems.append(Problem(where, sigma_filter.title,
                                                f"filter not applied to {rule.title}: {exc}", "invalid"))


def _rule_id(rule: AnyRule, tactic: str | None, path: str, taken: set[str]) -> str:
    what = slug(rule.title or "") or slug(Path(path).stem) or "rule"
    rid = f"{tactic or 'sigma'}.{what}"
    if rid in taken:
        suffix = slug(str(rule.id))[:8] if rule.id else str(len(taken))
        rid = f"{rid}_{suffix}"
    taken.add(rid)
    return rid


def _convert_plain(backend: DuckDBBackend, rule: SigmaRule, path: str, out: SigmaSet,
                   taken: set[str]) -> str | Problem:
    """The rule's full WHERE expression (route and detection), or the problem it has."""
    started = time.perf_counter()
    status = str(rule.status).lower() if rule.status is not None else ""
    logsource = rule.logsource
    where: str | Problem
    if status in ("deprecated", "unsupported"):
        where = Problem(path, _rule_name(rule), f"status is {status}", "unsupported")
    elif (routed := route(logsource.product, logsource.category, logsource.service)) is None:
        where = Problem(path, _rule_name(rule), "no deminer log for logsource "
                        + describe(logsource.product, logsource.category, logsource.service),
                        "unsupported")
    else:
        try:
            condition = backend.rule_condition(rule)
        except SigmaFeatureNotSupportedByBackendError as exc:
            where = Problem(path, _rule_name(rule), f"cannot convert: {exc}", "unsupported")
        except SigmaError as exc:   # e.g. a condition that does not parse
            where = Problem(path, _rule_name(rule), f"invalid rule: {exc}", "invalid")
        except (NotImplementedError, ValueError, TypeError, KeyError) as exc:
            where = Problem(path, _rule_name(rule), f"cannot convert: {type(exc).__name__}: {exc}",
                            "unsupported")
        else:
            where = f"({routed}) AND ({condition})"
            tactic, severity, attack = meta(rule)
            out.rules.append(ConvertedRule(
                rule_id=_rule_id(rule, tactic, path, taken), title=rule.title, severity=severity,
                attack=attack, sigma_id=str(rule.id) if rule.id else None, path=path,
                sql=rule_query(routed, condition), correlation=False,
                convert_seconds=time.perf_counter() - started, route=routed, where=condition))
    if isinstance(where, Problem):
        out.problems.append(where)
    return where


def _convert_correlation(rule: SigmaCorrelationRule, collection: SigmaCollection,
                         wheres: dict[int, str | Problem], path: str, out: SigmaSet,
                         taken: set[str]) -> None:
    started = time.perf_counter()
    name = _rule_name(rule)
    try:
        rule.resolve_rule_references(collection)
        rule.aliases.resolve_rule_references(collection)   # not done by the call above
        refs = base_rules(rule)
    except SigmaError as exc:
        out.problems.append(Problem(path, name, f"cannot resolve: {exc}", "unsupported"))
        return
    parts: list[str] = []
    for ref in refs:
        where: Any = wheres.get(id(ref))
        if not isinstance(where, str):
            reason = where.reason if isinstance(where, Problem) else "not converted"
            out.problems.append(Problem(path, name, f"base rule {ref.title!r} cannot run: {reason}",
                                        "unsupported"))
            return
        parts.append(where)
    try:
        sql = correlation_query(rule, parts)
    except SigmaError as exc:
        out.problems.append(Problem(path, name, f"cannot convert: {exc}", "unsupported"))
        return
    tactic, severity, attack = meta(rule)
    cond = rule.condition
    words = (f"{rule.type.name.lower()} {_CORR_OPS.get(cond.op.name, cond.op.name)} {cond.count:g}"
             if isinstance(cond, SigmaCorrelationCondition) else rule.type.name.lower())
    words += f" within {rule.timespan.spec}"
    if rule.group_by:
        words += " by " + ", ".join(rule.group_by)
    if not attack:  # a correlation usually leaves its tags to the base rules
        attack = tuple(dict.fromkeys(a for ref in refs for a in meta(ref)[2]))
    if tactic is None:
        tactic = next((t for ref in refs if (t := meta(ref)[0])), None)
    out.rules.append(ConvertedRule(
        rule_id=_rule_id(rule, tactic, path, taken), title=rule.title, severity=severity,
        attack=attack, sigma_id=str(rule.id) if rule.id else None, path=path, sql=sql,
        correlation=True, convert_seconds=time.perf_counter() - started, condition=words))
