"""Sigma correlation rules as DuckDB SQL: counts and sequences over time windows.

A correlation rule names base rules, a ``group-by`` and a ``timespan``. Every base rule is
already a WHERE expression over ``events`` (``backend.py``), so all of them are read in one
pass; each row carries one ``_m<i>`` flag per base rule and its group values ``_g<i>``::

    events ──► f (rows of any base rule, one flag per rule) ──► m (group values)
           ──► w (per row: aggregate over the window that ends at it)
           ──► hit (rows where the condition holds) ──► one row per host and group

Windows slide (``RANGE BETWEEN <timespan> PRECEDING AND CURRENT ROW``) for ``gt``/``gte``
conditions, so a burst is found wherever it starts; other operators ("fewer than N") only
make sense per fixed bucket and use ``time_bucket``. Groups are also split by ``host``:
findings belong to one host, and a password guesser against five hosts is five findings.

    event_count       count(*)                    value_count   count(DISTINCT field)
    value_sum/avg     sum/avg of field            value_percentile/median  quantile_cont
    temporal          how many base rules matched within the window (default: all)
    temporal_ordered  the base rules matched in order within the window (a chain of maxima)

Each result row is the event at which the condition first held (``met_ts``, and the
evidence columns): ``ts`` is the start of its window, ``last_ts`` the group's last matching
event, ``hits`` the highest aggregate a window reached.
"""

from __future__ import annotations

from collections.abc import Sequence

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.rule import SigmaRule

from deminer.detect.sigma.backend import EVIDENCE
from deminer.detect.sigma.mapping import EVENTS_RELATION, UnmappableField, field_sql

_OPS = {SigmaCorrelationConditionOperator.LT: "<", SigmaCorrelationConditionOperator.LTE: "<=",
        SigmaCorrelationConditionOperator.GT: ">", SigmaCorrelationConditionOperator.GTE: ">=",
        SigmaCorrelationConditionOperator.EQ: "=", SigmaCorrelationConditionOperator.NEQ: "<>"}
_SLIDING = (SigmaCorrelationConditionOperator.GT, SigmaCorrelationConditionOperator.GTE)
_VALUE_AGG = {
    SigmaCorrelationType.VALUE_COUNT: "count(DISTINCT _v)",
    SigmaCorrelationType.VALUE_SUM: "sum(TRY_CAST(_v AS DOUBLE))",
    SigmaCorrelationType.VALUE_AVG: "avg(TRY_CAST(_v AS DOUBLE))",
    SigmaCorrelationType.VALUE_MEDIAN: "quantile_cont(TRY_CAST(_v AS DOUBLE), 0.5)",
}


def _unsupported(message: str) -> SigmaFeatureNotSupportedByBackendError:
    return SigmaFeatureNotSupportedByBackendError(message)


def _field(name: str) -> str:
    try:
        return field_sql(name).sql
    except UnmappableField as exc:
        raise _unsupported(str(exc)) from None


def _per_rule_field(rule: SigmaCorrelationRule, name: str, refs: Sequence[SigmaRule]) -> str:
    """A group-by or value field, resolving a correlation alias to each base rule's field."""
    alias = rule.aliases.aliases.get(name)
    if alias is None:
        return _field(name)
    branches = []
    for ref, field in alias.mapping.items():
        target = getattr(ref, "rule", None)
        index = next((i for i, r in enumerate(refs) if r is target), None)
        if index is None:
            raise _unsupported(f"alias {name!r} names rule {ref.reference!r} the correlation does not use")
        branches.append(f"WHEN _m{index} THEN CAST({_field(field)} AS VARCHAR)")
    return "CASE " + " ".join(branches) + " END"


def base_rules(rule: SigmaCorrelationRule) -> list[SigmaRule]:
    """The plain rules a correlation reads (a correlation of correlations is refused)."""
    refs = []
    for ref in rule.referenced_rules:
        target = getattr(ref, "rule", None)
        if not isinstance(target, SigmaRule):
            raise _unsupported(f"rule {ref.reference!r} is a correlation; chained correlations "
                               "are not supported")
        refs.append(target)
    if not refs:
        raise _unsupported("the correlation names no rules")
    return refs


def correlation_query(rule: SigmaCorrelationRule, wheres: Sequence[str]) -> str:
    """SQL yielding one finding row per host and group; ``wheres`` align with ``base_rules``."""
    refs = base_rules(rule)
    if len(wheres) != len(refs):
        raise ValueError("one WHERE expression per base rule is needed")
    condition = rule.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        raise _unsupported("extended (boolean) temporal conditions are not supported")
    seconds = int(rule.timespan.seconds)
    if seconds <= 0:
        raise _unsupported("timespan must be positive")
    groups = [_per_rule_field(rule, g, refs) for g in (rule.group_by or [])]
    group_names = list(rule.group_by or [])

    flags = ", ".join(f"coalesce(({w}), false) AS _m{i}" for i, w in enumerate(wheres))
    # Group values are computed on top of the flags: an alias picks its field by rule flag.
    cols = [f"{g} AS _g{i}" for i, g in enumerate(groups)]
    kind = rule.type
    if kind in _VALUE_AGG or kind is SigmaCorrelationType.VALUE_PERCENTILE:
        fieldref = condition.fieldref
        if not isinstance(fieldref, str):
            raise _unsupported("the condition's field must be one field name")
        cols.append(f"{_per_rule_field(rule, fieldref, refs)} AS _v")
    any_rule = " OR ".join(f"({w})" for w in wheres)
    partition = ", ".join(["host"] + [f"_g{i}" for i in range(len(groups))])
    frame = (f"PARTITION BY {partition} ORDER BY ts "
             f"RANGE BETWEEN INTERVAL {seconds} SECOND PRECEDING AND CURRENT ROW")
    ctes = [f"f AS (\n  SELECT *, {flags}\n  FROM {EVENTS_RELATION}\n"
            f"  WHERE ts IS NOT NULL AND ({any_rule})\n)",
            f"m AS (SELECT *{''.join(', ' + c for c in cols)} FROM f)"]

    if kind is SigmaCorrelationType.TEMPORAL_ORDERED:
        # _s<i>: the latest start of a chain r0 … r<i> ending at this row, within the window.
        ctes.append("s0 AS (SELECT *, CASE WHEN _m0 THEN ts END AS _s0 FROM m)")
        for i in range(1, len(refs)):
            ctes.append(f"s{i} AS (SELECT *, CASE WHEN _m{i} THEN max(_s{i - 1}) OVER win END "
                        f"AS _s{i} FROM s{i - 1} WINDOW win AS ({frame}))")
        last = len(refs) - 1
        ctes.append(f"w AS (SELECT *, {len(refs)} AS _n, _s{last} AS _start FROM s{last}\n"
                    f"  WHERE _s{last} IS NOT NULL AND ts - _s{last} <= INTERVAL {seconds} SECOND)")
        test = "TRUE"
    else:
        if kind is SigmaCorrelationType.EVENT_COUNT:
            agg = "count(*) OVER win"
        elif kind is SigmaCorrelationType.TEMPORAL:
            agg = " + ".join(f"CAST(bool_or(_m{i}) OVER win AS INTEGER)" for i in range(len(refs)))
        elif kind is SigmaCorrelationType.VALUE_PERCENTILE:
            pct = condition.percentile if condition.percentile is not None else 50
            agg = f"quantile_cont(TRY_CAST(_v AS DOUBLE), {min(max(pct, 0), 100) / 100!r}) OVER win"
        elif kind in _VALUE_AGG:
            agg = f"{_VALUE_AGG[kind]} OVER win"
        else:
            raise _unsupported(f"correlation type {kind.name.lower()} is not supported")
        op, count = condition.op, condition.count
        if (kind is SigmaCorrelationType.TEMPORAL and op is SigmaCorrelationConditionOperator.GTE
                and count == 1 and condition.fieldref is None):
            count = len(refs)  # no condition given: the spec's "all rules within the timespan"
        if op in _SLIDING:
            ctes.append(f"w AS (SELECT *, {agg} AS _n, min(ts) OVER win AS _start FROM m\n"
                        f"  WINDOW win AS ({frame}))")
        else:
            bucket = f"PARTITION BY {partition}, time_bucket(INTERVAL {seconds} SECOND, ts)"
            ctes.append(f"w AS (SELECT *, {agg} AS _n, min(ts) OVER win AS _start FROM m\n"
                        f"  WINDOW win AS ({bucket}))")
        test = f"_n {_OPS[op]} {count!r}"

    ctes.append(
        f"hit AS (SELECT *, row_number() OVER (PARTITION BY {partition}\n"
        f"          ORDER BY ts, source, source_line, record_id) AS _rn,\n"
        f"        max(_n) OVER (PARTITION BY {partition}) AS _peak\n"
        f"  FROM (SELECT *, max(ts) OVER (PARTITION BY {partition}) AS _last FROM w) w WHERE {test})")
    if groups:
        entity = "concat_ws(', ', " + ", ".join(
            f"{_quote(n + '=')} || coalesce(CAST(_g{i} AS VARCHAR), '?')"
            for i, n in enumerate(group_names)) + ")"
    else:
        entity = "''"
    evidence = ", ".join(f'"{c}"' for c in EVIDENCE)
    return ("WITH " + ",\n".join(ctes) +
            f"\nSELECT host, _start AS ts, {entity} AS entity, _peak AS hits, _last AS last_ts, "
            f"ts AS met_ts, {evidence}\nFROM hit WHERE _rn = 1\nORDER BY host NULLS FIRST, entity")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
