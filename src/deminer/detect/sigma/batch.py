"""Many Sigma rules of one log-source route as one DuckDB query (``batch_query``).

A SigmaHQ checkout has thousands of rules and most share a handful of routes (process
creation, PowerShell, Security logons). One query per rule pays planning, a scan of the
route and the parsing of ``data`` each time, which at that scale costs more than the
matching itself; a batch scans the route once, parses each data field once per event and
lower-cases each compared field once, and returns what ``rule_query`` returns per rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deminer.detect.sigma.backend import ENTITY, EVIDENCE_SQL, sql_literal
from deminer.detect.sigma.mapping import EVENTS_RELATION, data_field

# ``data_field``'s SQL, whatever its form; inside a string literal its quotes would be
# doubled, so a rule's value cannot match it.
_DATA_FIELD = re.compile(re.escape(data_field("NAME")).replace("NAME", "([^\"']+)"))


def _literal_end(sql: str, i: int) -> int:
    """Index just past the literal or quoted identifier opening at ``sql[i]`` (doubled quotes
    are part of it)."""
    quote, j, n = sql[i], i + 1, len(sql)
    while j < n:
        if sql[j] == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _hoist_lower(conditions: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each ``lower(EXPR)`` outside string literals replaced by a column ``"_lN"``; returns
    the new conditions and the distinct EXPRs in column order."""
    exprs: dict[str, int] = {}
    out = []
    for cond in conditions:
        parts, i, n = [], 0, len(cond)
        while i < n:
            if cond[i] in "'\"":
                end = _literal_end(cond, i)
                parts.append(cond[i:end])
                i = end
                continue
            if not cond.startswith("lower(", i) or (i and (cond[i - 1].isalnum() or cond[i - 1] == "_")):
                parts.append(cond[i])
                i += 1
                continue
            depth, j = 1, i + 6
            while j < n and depth:
                if cond[j] in "'\"":
                    j = _literal_end(cond, j)
                    continue
                depth += {"(": 1, ")": -1}.get(cond[j], 0)
                j += 1
            if depth:                                   # unbalanced: leave the rest as it is
                parts.append(cond[i:])
                break
            parts.append(f'"_l{exprs.setdefault(cond[i + 6:j - 1], len(exprs))}"')
            i = j
        out.append("".join(parts))
    return out, list(exprs)


def batch_query(route: str, conditions: Sequence[str]) -> str:
    """``rule_query`` for many rules of one route in one scan; ``_rule`` numbers the rule.

    A SigmaHQ checkout has thousands of rules and most share a handful of routes (process
    creation, PowerShell, Security logons): one query per rule pays planning and a scan of
    the route each time, which at that scale costs more than the matching itself.
    """
    # Each data field a condition reads is parsed out of ``data`` once per event for the
    # whole batch (one JSON parse), not once per rule that mentions it.
    names = list(dict.fromkeys(m for c in conditions for m in _DATA_FIELD.findall(c)))
    # Each becomes a column of its own: reading an element of the list in every condition
    # copied the value each time (2 s for 64 rules over 3,700 PowerShell script blocks).
    slot = {n: f'"_f{i + 1}"' for i, n in enumerate(names)}
    conditions = [_DATA_FIELD.sub(lambda m: slot[m.group(1)], c) for c in conditions]
    paths = ", ".join(sql_literal(f'$."{n}"') for n in names)
    columns = ", ".join(f'_d[{i + 1}] AS "_f{i + 1}"' for i in range(len(names)))
    source = f"(SELECT * FROM {EVENTS_RELATION} WHERE ({route}))"
    if names:
        source = (f"(SELECT * EXCLUDE (_d), {columns} FROM (SELECT *, json_extract_string(data, [{paths}]) "
                  f"AS _d FROM {source} r) d)")
    # Every lower-cased field is computed once per event for the batch (see string_match).
    conditions, lowered = _hoist_lower(conditions)
    if lowered:
        cols = ", ".join(f'lower({e}) AS "_l{i}"' for i, e in enumerate(lowered))
        source = f"(SELECT *, {cols} FROM {source} f)"
    tagged = ", ".join(f"CASE WHEN ({c}) THEN {i} END" for i, c in enumerate(conditions))
    # Matching rows are narrowed to the output's columns (and the entity worked out) before
    # they are repeated per matching rule: carrying ``data``/``raw`` of big PowerShell script
    # blocks through the unnest and the window sort cost more than the matching.
    # MATERIALIZED: otherwise the optimiser copies the rule list into the filter and
    # evaluates every condition twice.
    return (
        f"WITH hit AS MATERIALIZED (\n"
        f"  SELECT host, ts, data, {EVIDENCE_SQL},\n"
        f"         list_filter([{tagged}], lambda x: x IS NOT NULL) AS _rules\n"
        f"  FROM {source} fields),\n"
        f"matched AS (\n"
        f"  SELECT unnest(_rules) AS _rule, host, ts, entity, {EVIDENCE_SQL}\n"
        f"  FROM (SELECT *, {ENTITY} AS entity FROM hit WHERE len(_rules) > 0) h)\n"
        f"SELECT _rule, host, ts, entity, hits, last_ts, {EVIDENCE_SQL} FROM (\n"
        f"  SELECT *, count(*) OVER (PARTITION BY _rule, host, entity) AS hits,\n"
        f"         max(ts) OVER (PARTITION BY _rule, host, entity) AS last_ts,\n"
        f"         row_number() OVER (PARTITION BY _rule, host, entity\n"
        f"                            ORDER BY ts NULLS LAST, source, source_line, record_id) AS _rn\n"
        f"  FROM matched\n"
        f") ranked WHERE _rn = 1\nORDER BY _rule, host NULLS FIRST, entity"
    )
