"""The STIX 2.1 patterning language, parsed for real: the comparisons a pattern holds.

``parse_pattern`` reads a whole pattern (STIX 2.1 part 9): observation expressions ``[...]``
joined by ``AND``, ``OR`` and ``FOLLOWEDBY`` (in that order of binding, loosest last) with
qualifiers (``WITHIN n SECONDS``, ``REPEATS n TIMES``, ``START t'..' STOP t'..'``), and
inside them comparisons joined by ``AND``/``OR`` with parentheses; object paths with
``.property``, ``[n]`` and ``[*]`` steps; string literals with the ``\\'`` and ``\\\\``
escapes; numbers, booleans and ``t''``/``h''``/``b''`` literals. It returns every
comparison in order, each with its path, operator, ``NOT``, values and text;
``PatternError`` names the column of the first problem. What the comparisons mean for
indicators is ``ioc_stix``'s business.

Patterns are untrusted input: their length and nesting depth are bounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from deminer.textsafe import clean

MAX_PATTERN_CHARS = 100_000
MAX_DEPTH = 64

_KEYWORDS = {"AND", "OR", "NOT", "FOLLOWEDBY", "IN", "LIKE", "MATCHES", "ISSUBSET",
             "ISSUPERSET", "EXISTS", "WITHIN", "SECONDS", "REPEATS", "TIMES", "START", "STOP"}
_OPERATORS = {"=", "==", "!=", "<>", "<", "<=", ">", ">="}
_WORD_OPERATORS = {"IN", "LIKE", "MATCHES", "ISSUBSET", "ISSUPERSET"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<prefix>[thb])?'(?P<body>(?:[^'\\]|\\.)*)'
  | (?P<open>')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<num>[+-]?\d+(?:\.\d+)?)
  | (?P<punct>==|!=|<>|<=|>=|[=<>\[\]():.,*])
""", re.VERBOSE | re.DOTALL)

class PatternError(ValueError):
    """A STIX pattern that does not parse; ``pos`` is the 0-based offset of the problem."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"column {pos + 1}: {message}")
        self.pos = pos


@dataclass(frozen=True)
class Token:
    kind: str     # ident, num, str, ts, hex, bin, bool, punct, eof
    value: str    # for quoted literals: the unescaped text
    pos: int      # offsets into the pattern, for messages
    end: int


@dataclass(frozen=True)
class Comparison:
    """One comparison of a pattern: ``path op values``, with its text for messages."""

    path: tuple[str, ...]      # object type, then property names; index steps as "[*]", "[0]"
    op: str
    negated: bool
    values: tuple[Token, ...]
    text: str


def _unescape(body: str, pos: int) -> str:
    """A string literal's value; only \\' and \\\\ are escapes in STIX patterns."""
    bad = re.search(r"\\[^'\\]", body.replace("\\\\", "  "))
    if bad:
        raise PatternError("only \\' and \\\\ are valid escapes in a string", pos + 1 + bad.start())
    return re.sub(r"\\(['\\])", r"\1", body)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PatternError(f"unexpected character {clean(text[pos], 10)!r}", pos)
        group = m.lastgroup
        if group == "open":
            raise PatternError("string is not closed", pos)
        if m.group("body") is not None:
            kind = {"t": "ts", "h": "hex", "b": "bin"}.get(m.group("prefix") or "", "str")
            tokens.append(Token(kind, _unescape(m.group("body"), m.start("body") - 1), pos, m.end()))
        elif group != "ws":
            assert group is not None
            tokens.append(Token(group, m.group(), pos, m.end()))
        pos = m.end()
    tokens.append(Token("eof", "", len(text), len(text)))
    return tokens


class _Parser:
    """Recursive descent over the STIX patterning grammar; collects the comparisons."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.found: list[Comparison] = []

    # -- token helpers --------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def keyword(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.value.upper() in words

    def punct(self, *symbols: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value in symbols

    def take(self) -> Token:
        tok = self.tok
        if tok.kind != "eof":
            self.i += 1
        return tok

    def expect(self, ok: bool, what: str) -> Token:
        if not ok:
            raise PatternError(f"expected {what} but found {self.describe()}", self.tok.pos)
        return self.take()

    def describe(self) -> str:
        tok = self.tok
        return "the end of the pattern" if tok.kind == "eof" else repr(clean(tok.value, 40))

    def group(self, inner: Callable[[], None]) -> None:
        """``( inner )``, bounded in depth so a hostile pattern cannot exhaust the stack."""
        self.take()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise PatternError("parentheses nested too deeply", self.tok.pos)
        inner()
        self.depth -= 1
        self.expect(self.punct(")"), "')'")

    # -- grammar --------------------------------------------------------------------------
    def pattern(self) -> list[Comparison]:
        self.observations()
        if self.tok.kind != "eof":
            raise PatternError(f"unexpected {self.describe()}", self.tok.pos)
        return self.found

    def joined(self, item: Callable[[], None], word: str) -> None:
        """``item (word item)*`` — every binary level of the grammar has this shape."""
        item()
        while self.keyword(word):
            self.take()
            item()

    def observations(self) -> None:   # FOLLOWEDBY binds loosest, then OR, then AND
        self.joined(lambda: self.joined(lambda: self.joined(self.observation, "AND"), "OR"),
                    "FOLLOWEDBY")

    def observation(self) -> None:
        if self.punct("["):
            self.take()
            self.comp_or()
            self.expect(self.punct("]"), "']'")
        elif self.punct("("):
            self.group(self.observations)
        else:
            self.expect(False, "'[' or '('")
        while self.keyword("WITHIN", "REPEATS", "START"):
            self.qualifier()

    def qualifier(self) -> None:
        word = self.take().value.upper()
        if word == "START":
            self.literal_of("ts")
            self.expect(self.keyword("STOP"), "STOP")
            self.literal_of("ts")
        else:
            self.literal_of("num")
            unit = "SECONDS" if word == "WITHIN" else "TIMES"
            self.expect(self.keyword(unit), unit)

    def literal_of(self, kind: str) -> Token:
        return self.expect(self.tok.kind == kind, f"a {kind} literal")

    def comp_or(self) -> None:
        self.joined(lambda: self.joined(self.comparison, "AND"), "OR")

    def comparison(self) -> None:
        if self.punct("("):
            self.group(self.comp_or)
            return
        start = self.tok.pos
        if self.keyword("EXISTS"):
            self.take()
            path = self.path()
            self.record(path, "EXISTS", False, (), start)
            return
        path = self.path()
        negated = self.keyword("NOT")
        if negated:
            self.take()
        if self.punct(*_OPERATORS):
            op = self.take().value
            values: tuple[Token, ...] = (self.literal(),)
        elif self.keyword(*_WORD_OPERATORS):
            op = self.take().value.upper()
            values = self.value_set() if op == "IN" else (self.literal(),)
        else:
            raise PatternError(f"expected a comparison operator but found {self.describe()}",
                               self.tok.pos)
        self.record(path, op, negated, values, start)

    def record(self, path: tuple[str, ...], op: str, negated: bool, values: tuple[Token, ...],
               start: int) -> None:
        stop = self.tokens[self.i - 1].end
        self.found.append(Comparison(path, op, negated, values, self.text[start:stop]))

    def path(self) -> tuple[str, ...]:
        ok = self.tok.kind == "ident" and self.tok.value.upper() not in _KEYWORDS
        parts = [self.expect(ok, "an object type").value.lower()]
        self.expect(self.punct(":"), "':'")
        parts.append(self.component())
        while self.punct(".", "["):
            if self.take().value == ".":
                parts.append(self.component())
            else:
                if self.punct("*"):
                    parts.append("[*]")
                    self.take()
                else:
                    parts.append(f"[{self.literal_of('num').value}]")
                self.expect(self.punct("]"), "']'")
        return tuple(parts)

    def component(self) -> str:
        return self.expect(self.tok.kind in ("ident", "str"), "a property name").value

    def literal(self) -> Token:
        if self.tok.kind in ("str", "num", "ts", "hex", "bin"):
            return self.take()
        if self.keyword("TRUE", "FALSE"):
            tok = self.take()
            return Token("bool", tok.value.lower(), tok.pos, tok.end)
        raise PatternError(f"expected a value but found {self.describe()}", self.tok.pos)

    def value_set(self) -> tuple[Token, ...]:
        self.expect(self.punct("("), "'('")
        values = [self.literal()]
        while self.punct(","):
            self.take()
            values.append(self.literal())
        self.expect(self.punct(")"), "')'")
        return tuple(values)


def parse_pattern(text: str) -> list[Comparison]:
    """Every comparison in a STIX pattern, in order; ``PatternError`` if it does not parse."""
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"pattern longer than {MAX_PATTERN_CHARS} characters", 0)
    return _Parser(text).pattern()
