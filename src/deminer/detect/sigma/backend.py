"""A pySigma backend that turns Sigma detection logic into DuckDB SQL over ``events``.

pySigma parses the rule, applies the value modifiers (``contains``, ``all``, ``windash``,
``base64offset``, ``wide``, ...) and hands over a condition tree; this backend writes each
leaf as a boolean SQL expression and pySigma joins them with AND/OR/NOT::

    Image|endswith: '\\xmrig.exe'   ->  "process" ILIKE '%\\xmrig.exe' ESCAPE '\\'
    CommandLine|re: 'a.+b'          ->  regexp_matches(CAST("command" AS VARCHAR), 'a.+b')
    IpAddress|cidr: 10.0.0.0/8      ->  integer range test on the dotted quad
    keywords: [stratum+tcp]         ->  ("raw" ILIKE '%stratum+tcp%' ... OR "command" ILIKE ...)

Sigma compares strings case-insensitively, so plain values become ``ILIKE`` (``|cased``:
``LIKE``); ``*``/``?`` become ``%``/``_`` and literal ``%``, ``_`` and ``\\`` are escaped.
A missing field never matches, and ``not`` of a missing field is true (SQL's NULL would
make it unknown), hence ``NOT coalesce(…, false)``. Regular expressions run on DuckDB's RE2:
ones RE2 cannot compile (look-arounds, back-references) are refused at conversion time.

``mapping.field_sql`` decides where a field lives; ``rule_condition`` returns the WHERE
expression of one rule (its conditions OR-ed), ``rule_query`` the SELECT that yields
finding rows (one per host and entity, with the first event as evidence).
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import duckdb
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.deferred import DeferredQueryExpression
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError, SigmaValueError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaFieldReference,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from deminer.detect.sigma.mapping import EVENTS_RELATION, FieldSql, UnmappableField, field_sql

# Columns a keyword (a value without a field) is searched in.
# EVTX rows keep no raw copy (data holds every field), so keywords search data too.
KEYWORD_COLUMNS = ('"raw"', '"command"', '"data"')

_PARTS = {TimestampPart.MINUTE: "minute", TimestampPart.HOUR: "hour", TimestampPart.DAY: "day",
          TimestampPart.WEEK: "week", TimestampPart.MONTH: "month", TimestampPart.YEAR: "year"}
_OPS = {CompareOperators.LT: "<", CompareOperators.LTE: "<=", CompareOperators.GT: ">",
        CompareOperators.GTE: ">=", CompareOperators.NEQ: "<>"}
_RE_FLAGS = {SigmaRegularExpressionFlag.IGNORECASE: "i", SigmaRegularExpressionFlag.MULTILINE: "m",
             SigmaRegularExpressionFlag.DOTALL: "s"}
# A dotted quad with every octet 0-255 (text before the check must not reach the casts).
_DOTTED_QUAD = r"(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}"


def sql_literal(text: str) -> str:
    """A SQL string literal; NUL cannot be stored in one, so it is refused."""
    if "\x00" in text:
        raise SigmaValueError("value contains a NUL character")
    return "'" + text.replace("'", "''") + "'"


def like_pattern(value: SigmaString) -> tuple[str, bool]:
    """``(LIKE pattern with '\\' escapes, has wildcards)`` for a Sigma string."""
    out: list[str] = []
    wild = False
    for part in value.s:
        if isinstance(part, str):
            out.append(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
        elif part is SpecialChars.WILDCARD_MULTI:
            out.append("%")
            wild = True
        elif part is SpecialChars.WILDCARD_SINGLE:
            out.append("_")
            wild = True
        else:  # a Placeholder from |expand: only a processing pipeline could fill it
            raise SigmaFeatureNotSupportedByBackendError(
                f"placeholder %{getattr(part, 'name', part)}% (|expand) has no value here")
    return "".join(out), wild


def as_text(field: FieldSql) -> str:
    return field.sql if field.kind == "text" else f"CAST({field.sql} AS VARCHAR)"


def string_match(expr: str, value: SigmaString, cased: bool) -> str:
    """``expr`` compared with a Sigma string (wildcards honoured).

    Case-insensitive matches compare ``lower(expr)`` with the lower-cased value, and the
    common shapes (contains, starts with, ends with, equals) use plain string functions: a
    batch of rules then lower-cases each field once (``batch_query``) instead of every
    ``ILIKE`` doing it again over the whole text.
    """
    pattern, wild = like_pattern(value)
    plain = "".join(p for p in value.s if isinstance(p, str))
    if cased and not wild:
        return f"{expr} = {sql_literal(plain)}"
    if cased:
        return f"{expr} LIKE {sql_literal(pattern)} ESCAPE '\\'"
    lowered = f"lower({expr})"
    parts = value.s
    inner = parts[1:-1] if len(parts) >= 2 else ()
    if not wild:
        return f"{lowered} = {sql_literal(plain.lower())}"
    if all(isinstance(p, str) for p in inner) and inner:
        text = "".join(inner).lower()                    # type: ignore[arg-type]
        if parts[0] is SpecialChars.WILDCARD_MULTI and parts[-1] is SpecialChars.WILDCARD_MULTI:
            return f"contains({lowered}, {sql_literal(text)})"
    if len(parts) == 2 and isinstance(parts[0], str) and parts[1] is SpecialChars.WILDCARD_MULTI:
        return f"starts_with({lowered}, {sql_literal(parts[0].lower())})"
    if len(parts) == 2 and parts[0] is SpecialChars.WILDCARD_MULTI and isinstance(parts[1], str):
        return f"ends_with({lowered}, {sql_literal(parts[1].lower())})"
    return f"{lowered} LIKE {sql_literal(pattern.lower())} ESCAPE '\\'"


class DuckDBBackend(TextQueryBackend):
    """Sigma conditions as DuckDB boolean expressions over one ``events`` row."""

    name: ClassVar[str] = "deminer DuckDB events"
    formats: ClassVar[dict[str, str]] = {"default": "DuckDB WHERE expression over events"}
    requires_pipeline: ClassVar[bool] = False
    correlation_methods: ClassVar[dict[str, str] | None] = {"default": "window functions"}

    precedence: ClassVar[tuple[type[ConditionItem], type[ConditionItem], type[ConditionItem]]] = (
        ConditionNOT, ConditionAND, ConditionOR)
    group_expression: ClassVar[str | None] = "({expr})"
    or_token: ClassVar[str] = "OR"
    and_token: ClassVar[str] = "AND"
    not_token: ClassVar[str] = "NOT"
    eq_token: ClassVar[str] = " = "
    field_null_expression: ClassVar[str | None] = "{field} IS NULL"
    field_exists_expression: ClassVar[str | None] = "{field} IS NOT NULL"
    field_not_exists_expression: ClassVar[str | None] = "{field} IS NULL"

    def __init__(self) -> None:
        super().__init__()
        # A private connection used only to let RE2 compile patterns at conversion time.
        self._re_check = duckdb.connect(":memory:")

    def close(self) -> None:
        self._re_check.close()

    # --- fields ------------------------------------------------------------------------------

    def escape_and_quote_field(self, field_name: str) -> str:
        return self._field(field_name).sql

    def _field(self, name: str) -> FieldSql:
        try:
            return field_sql(name)
        except UnmappableField as exc:
            raise SigmaFeatureNotSupportedByBackendError(str(exc)) from None

    # --- boolean structure -------------------------------------------------------------------

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> str:
        arg = cond.args[0]
        inner = self.convert_condition(arg, state)
        if isinstance(inner, DeferredQueryExpression) or inner is None:
            raise SigmaFeatureNotSupportedByBackendError("negation of an empty condition")
        # NULL (field missing) must count as "did not match", so the negation is true.
        return f"NOT coalesce({inner}, false)"

    # --- field = value -----------------------------------------------------------------------

    def convert_condition_field_eq_val_str(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaString)
        return string_match(as_text(self._field(cond.field)), cond.value, cased=False)

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaCasedString)
        return string_match(as_text(self._field(cond.field)), cond.value, cased=True)

    def convert_condition_field_eq_val_num(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaNumber)
        return f"{self._number(self._field(cond.field), cond.value)} = {cond.value.number!r}"

    @staticmethod
    def _number(field: FieldSql, value: SigmaNumber) -> str:
        if field.kind == "int":
            return field.sql
        # Text holds numbers as found: "3", "0x10" (DuckDB's BIGINT cast reads hex).
        target = "BIGINT" if isinstance(value.number, int) else "DOUBLE"
        return f"TRY_CAST({as_text(field)} AS {target})"

    def convert_condition_field_eq_val_bool(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaBool)
        word = "true" if cond.value.boolean else "false"
        return f"lower({as_text(self._field(cond.field))}) = '{word}'"

    def convert_condition_field_compare_op_val(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaCompareExpression)
        number = cond.value.number
        field = self._field(cond.field)
        expr = field.sql if field.kind == "int" else f"TRY_CAST({as_text(field)} AS DOUBLE)"
        return f"{expr} {_OPS[cond.value.op]} {number.number!r}"

    def convert_condition_field_eq_val_timestamp_part(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaTimestampPart)
        field = self._field(cond.field)
        stamp = field.sql if field.kind == "time" else f"TRY_CAST({as_text(field)} AS TIMESTAMP)"
        return f"date_part('{_PARTS[cond.value.timestamp_part]}', {stamp}) = {cond.value.number!r}"

    def convert_condition_field_eq_val_re(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaRegularExpression)
        return self._regex(as_text(self._field(cond.field)), cond.value)

    def _regex(self, expr: str, value: SigmaRegularExpression) -> str:
        flags = "".join(sorted(_RE_FLAGS[f] for f in value.flags))
        pattern = (f"(?{flags})" if flags else "") + str(value.regexp)
        literal = sql_literal(pattern)
        try:
            self._re_check.execute("SELECT regexp_matches('', ?)", [pattern])
        except duckdb.Error as exc:
            raise SigmaFeatureNotSupportedByBackendError(
                f"regular expression {pattern!r} is not supported by RE2: {exc}") from None
        return f"regexp_matches({expr}, {literal})"

    def convert_condition_field_eq_val_cidr(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaCIDRExpression)
        return cidr_match(as_text(self._field(cond.field)), cond.value)

    def convert_condition_field_eq_field(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaFieldReference)
        left = f"lower({as_text(self._field(cond.field))})"
        right = f"lower({as_text(self._field(cond.value.field))})"
        ref = cond.value
        if ref.starts_with and ref.ends_with:
            return f"contains({left}, {right})"
        if ref.starts_with:
            return f"starts_with({left}, {right})"
        if ref.ends_with:
            return f"ends_with({left}, {right})"
        return f"{left} = {right}"

    def convert_condition_field_eq_query_expr(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        raise SigmaFeatureNotSupportedByBackendError("query expressions need a processing pipeline")

    # --- keywords (values without a field) ---------------------------------------------------

    def _keyword(self, value: SigmaString) -> str:
        # Full-text semantics: the keyword may appear anywhere in the line.
        cased = isinstance(value, SigmaCasedString)
        if not value.startswith(SpecialChars.WILDCARD_MULTI):
            value = SpecialChars.WILDCARD_MULTI + value
        if not value.endswith(SpecialChars.WILDCARD_MULTI):
            value = value + SpecialChars.WILDCARD_MULTI
        return "(" + " OR ".join(string_match(c, value, cased) for c in KEYWORD_COLUMNS) + ")"

    def convert_condition_val_str(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        assert isinstance(cond.value, SigmaString)
        return self._keyword(cond.value)

    def convert_condition_val_num(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        return self._keyword(SigmaString(str(cond.value)))

    def convert_condition_val_re(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        assert isinstance(cond.value, SigmaRegularExpression)
        value = cond.value
        return "(" + " OR ".join(self._regex(c, value) for c in KEYWORD_COLUMNS) + ")"

    def convert_condition_query_expr(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        raise SigmaFeatureNotSupportedByBackendError("query expressions need a processing pipeline")

    # --- whole rules -------------------------------------------------------------------------

    def rule_condition(self, rule: SigmaRule) -> str:
        """The rule's detection as one WHERE expression (several conditions are OR-ed)."""
        self.convert_rule(rule)
        queries: list[Any] = rule.get_conversion_result()
        if not queries or not all(isinstance(q, str) for q in queries):
            raise SigmaFeatureNotSupportedByBackendError("the condition converts to no query")
        return queries[0] if len(queries) == 1 else " OR ".join(f"({q})" for q in queries)


def cidr_match(expr: str, cidr: SigmaCIDRExpression) -> str:
    """IPv4: an integer range test (``::ffff:`` mapped addresses included); IPv6: prefixes."""
    net = cidr.network
    if isinstance(net, ipaddress.IPv4Network):
        addr = f"regexp_replace({expr}, '^::ffff:', '', 'i')"
        octets = " + ".join(
            f"TRY_CAST(split_part({addr}, '.', {i + 1}) AS BIGINT) * {256 ** (3 - i)}" for i in range(4))
        low, high = int(net.network_address), int(net.broadcast_address)
        return (f"(regexp_full_match({addr}, {sql_literal(_DOTTED_QUAD)}) "
                f"AND ({octets}) BETWEEN {low} AND {high})")
    # IPv6 text is not canonical (zero compression), so this is a prefix match on the
    # written form, as most SIEM backends do.
    patterns = [SigmaString(p) for p in cidr.expand("*")]
    return "(" + " OR ".join(string_match(expr, p, cased=False) for p in patterns) + ")"


# --- the SELECT of a plain rule --------------------------------------------------------------

# What a finding is about, most specific first: the domain, driver, task, service, file or
# key a rule fires on, then the connection target, the command, the program, the account.
_ENTITY_FIELDS = ("QueryName", "ImageLoaded", "TaskName", "ServiceName", "TargetFilename", "TargetObject")
# The data fields are read with one JSON parse (a list of paths), first non-NULL kept.
ENTITY = ("coalesce(list_filter(json_extract_string(data, ["
          + ", ".join(sql_literal(f'$."{n}"') for n in _ENTITY_FIELDS)
          + "]), lambda x: x IS NOT NULL)[1], "
          + ", ".join(['"dst_host"', '"dst_ip"', '"command"', '"process"', '"user"', '"src_ip"', "''"]) + ")")

# Evidence columns every Sigma query returns (after host, ts, entity, hits, last_ts).
EVIDENCE = ("source", "source_line", "record_id", "event_id", "channel", "event", "process",
            "command", "user", "src_ip", "dst_ip", "dst_port", "dst_host")
EVIDENCE_SQL = ", ".join(f'"{c}"' for c in EVIDENCE)


def rule_query(route: str, condition: str) -> str:
    """Rows of matching events, one per (host, entity): the first event, hits, last time."""
    return (
        f"SELECT host, ts, entity, hits, last_ts, {EVIDENCE_SQL} FROM (\n"
        f"  SELECT *, count(*) OVER (PARTITION BY host, entity) AS hits,\n"
        f"         max(ts) OVER (PARTITION BY host, entity) AS last_ts,\n"
        f"         row_number() OVER (PARTITION BY host, entity\n"
        f"                            ORDER BY ts NULLS LAST, source, source_line, record_id) AS _rn\n"
        f"  FROM (SELECT *, {ENTITY} AS entity FROM {EVENTS_RELATION}\n"
        f"        WHERE ({route})\n          AND ({condition})) matched\n"
        f") ranked WHERE _rn = 1\nORDER BY host NULLS FIRST, entity"
    )
