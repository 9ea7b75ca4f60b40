"""STIX 2.x bundles as indicators: a parser for STIX patterns and the observables a bundle holds.

``iocs.read_iocs`` calls ``read_bundle`` for a JSON ``--ioc`` file. What it takes, by design:

* ``indicator`` objects with ``pattern_type: stix`` (or none, as in STIX 2.0). The pattern is
  parsed for real (``parse_pattern``): observation expressions ``[...]`` joined by ``AND``,
  ``OR`` and ``FOLLOWEDBY`` with qualifiers (``WITHIN``, ``REPEATS``, ``START/STOP``), and
  inside them comparisons joined by ``AND``/``OR`` with parentheses; string literals with the
  ``\\'`` and ``\\\\`` escapes; numbers, booleans and ``t''``/``h''``/``b''`` literals.
* Every comparison ``path = 'value'`` or ``path IN ('a', 'b')`` whose path names something the
  rules can match becomes one indicator: ``domain-name:value``, ``ipv4-addr:value``,
  ``ipv6-addr:value``, ``url:value``, ``network-traffic:dst_ref.value``, ``file:name``,
  ``process:name`` and ``…hashes.'SHA-256'``/``'SHA-1'``/``MD5``.
* ``AND``, ``FOLLOWEDBY`` and qualifiers are not enforced: each supported comparison loads on
  its own. That is looser than the pattern, and what a sweep for known-bad values wants.
* Anything else (other paths, ``LIKE``/``MATCHES``/``ISSUBSET``/ordering operators, ``NOT``,
  ``EXISTS``) is listed per indicator as a problem; the indicator's supported comparisons
  still load. Patterns that do not parse and other pattern types (Sigma, YARA, Snort) are
  reported and skipped. Revoked objects are skipped.
* Cyber-observable objects at the top level of the bundle (``domain-name``, ``ipv4-addr``,
  ``ipv6-addr``, ``url``, ``file``) and inside STIX 2.0 ``observed-data`` load as indicators.
* ``family`` is the name of the malware, intrusion set, threat actor, campaign or tool an
  ``indicates`` relationship links the indicator to.

Values are checked and normalised by ``iocs.make_row``; this module only finds them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
_SCO_TYPES = ("domain-name", "ipv4-addr", "ipv6-addr", "url", "file")
_NAMED_TYPES = ("malware", "intrusion-set", "threat-actor", "campaign", "tool")
_HASHES = {"SHA256": "sha256", "SHA1": "sha1", "MD5": "md5"}
_VALUE_PATHS = {
    ("domain-name", "value"): "domain",
    ("ipv4-addr", "value"): "ip",
    ("ipv6-addr", "value"): "ip",
    ("url", "value"): "url",
    ("network-traffic", "dst_ref", "value"): "ip_or_domain",
    ("file", "name"): "filename",
    ("process", "name"): "process_name",
    ("process", "image_ref", "name"): "process_name",
    ("process", "binary_ref", "name"): "process_name",
}


class PatternError(ValueError):
    """A STIX pattern that does not parse; ``pos`` is the 0-based offset of the problem."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"column {pos + 1}: {message}")
        self.pos = pos


class StixError(ValueError):
    """A JSON document that is not a STIX bundle (or STIX objects) at all."""


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


@dataclass(frozen=True)
class Candidate:
    """A value found in a bundle, before ``iocs`` checks it."""

    kind: str
    value: str
    family: str | None
    description: str | None
    ref: str                   # the STIX id (and path) it came from


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


def _path_text(path: tuple[str, ...]) -> str:
    rest = "".join(p if p.startswith("[") else "." + p for p in path[2:])
    return f"{path[0]}:{path[1]}{rest}"


def comparison_kind(comp: Comparison) -> tuple[str | None, str]:
    """The indicator kind a comparison yields, or ``None`` and the reason it is not loaded."""
    path = comp.path
    if len(path) >= 3 and path[-2].lower() == "hashes":
        algo = path[-1].upper().replace("-", "").replace("_", "")
        kind: str | None = _HASHES.get(algo)
        if kind is None:
            return None, f"hash {path[-1]} is not one of SHA-256, SHA-1, MD5"
    else:
        kind = _VALUE_PATHS.get(path)
        if kind is None:
            return None, f"no indicator kind for {_path_text(path)}"
    if comp.negated:
        return None, "negated comparison"
    if comp.op not in ("=", "==", "IN"):
        return None, f"operator {comp.op}"
    if not all(v.kind == "str" for v in comp.values):
        return None, "value is not a string"
    return kind, ""


def _ip_or_domain(kind: str, value: str) -> str:
    if kind == "ip_or_domain":
        try:
            ipaddress.ip_address(value.strip("[]"))
            return "ip"
        except ValueError:
            return "domain"
    return kind


def _single_host(value: str) -> str:
    # A /32 or /128 "network" is one address; other prefixes stay and fail as networks.
    for suffix in ("/32", "/128"):
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


def _sco(obj: dict[str, Any], ref: str) -> list[Candidate]:
    kind = obj.get("type")
    desc = f"STIX {kind} object"
    out: list[Candidate] = []
    if kind in ("domain-name", "ipv4-addr", "ipv6-addr", "url"):
        value = obj.get("value")
        if isinstance(value, str):
            k = {"domain-name": "domain", "url": "url"}.get(kind, "ip")
            out.append(Candidate(k, _single_host(value) if k == "ip" else value, None, desc, ref))
    elif kind == "file":
        hashes = obj.get("hashes")
        if isinstance(hashes, dict):
            for algo, value in sorted(hashes.items()):
                hkind = _HASHES.get(str(algo).upper().replace("-", "").replace("_", ""))
                if hkind and isinstance(value, str):
                    out.append(Candidate(hkind, value, None, desc, ref))
        name = obj.get("name")
        if isinstance(name, str) and not out:
            # A name alone is weak, but it is what the bundle says; with hashes, hashes win.
            out.append(Candidate("filename", name, None, desc, ref))
    return out


def _label(obj: dict[str, Any], index: int) -> str:
    ref = obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]"
    name = obj.get("name")
    return clean(f"{ref} ({name})" if isinstance(name, str) and name else ref, 200)


def _indicator(obj: dict[str, Any], index: int, family: str | None,
               problems: list[str]) -> list[Candidate]:
    label = _label(obj, index)
    ref = clean(obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]", 200)
    pattern_type = obj.get("pattern_type", "stix")
    if not isinstance(pattern_type, str) or pattern_type.lower() != "stix":
        problems.append(f"{label}: pattern_type {clean(pattern_type, 40)!r} is not loaded "
                        "(only STIX patterns)")
        return []
    pattern = obj.get("pattern")
    if not isinstance(pattern, str):
        problems.append(f"{label}: indicator without a pattern")
        return []
    try:
        comparisons = parse_pattern(pattern)
    except PatternError as exc:
        problems.append(f"{label}: pattern does not parse: {exc}")
        return []
    name, text = obj.get("name"), obj.get("description")
    desc = name if isinstance(name, str) and name else text if isinstance(text, str) else None
    out: list[Candidate] = []
    skipped: list[str] = []
    for comp in comparisons:
        kind, reason = comparison_kind(comp)
        if kind is None:
            skipped.append(f"{clean(comp.text, 160)} ({reason})")
            continue
        for tok in comp.values:
            k = _ip_or_domain(kind, tok.value)
            value = _single_host(tok.value) if k == "ip" else tok.value
            out.append(Candidate(k, value, family, desc[:300] if desc else None, ref))
    if skipped:
        problems.append(f"{label}: {len(skipped)} of {len(comparisons)} comparisons not loaded: "
                        + "; ".join(skipped[:10]) + (" …" if len(skipped) > 10 else ""))
    return out


def read_bundle(doc: Any) -> tuple[list[Candidate], list[str]]:
    """Indicator candidates of a STIX bundle (or a bare list of STIX objects) and the problems.

    Raises ``StixError`` when ``doc`` is not STIX at all.
    """
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        objects = doc.get("objects", [])
        if not isinstance(objects, list):
            raise StixError("the bundle's 'objects' is not a list")
    elif isinstance(doc, dict) and isinstance(doc.get("type"), str) and "--" in str(doc.get("id", "")):
        objects = [doc]                                  # one STIX object on its own
    elif isinstance(doc, list) and doc and all(isinstance(o, dict) and "type" in o for o in doc):
        objects = doc
    else:
        raise StixError("JSON but not a STIX 2 bundle (expected \"type\": \"bundle\" and objects)")

    names: dict[str, str] = {}
    for obj in objects:
        if isinstance(obj, dict) and obj.get("type") in _NAMED_TYPES and isinstance(obj.get("name"), str):
            names[str(obj.get("id"))] = clean(obj["name"], 100)
    families: dict[str, set[str]] = {}
    for obj in objects:
        if (isinstance(obj, dict) and obj.get("type") == "relationship"
                and obj.get("relationship_type") == "indicates"
                and str(obj.get("target_ref")) in names):
            families.setdefault(str(obj.get("source_ref")), set()).add(names[str(obj["target_ref"])])

    candidates: list[Candidate] = []
    problems: list[str] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            problems.append(f"objects[{index}]: not a STIX object")
            continue
        if obj.get("revoked") is True:
            continue
        otype = obj["type"]
        ref = clean(obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]", 200)
        if otype == "indicator":
            family = ", ".join(sorted(families.get(str(obj.get("id")), ()))) or None
            candidates.extend(_indicator(obj, index, family, problems))
        elif otype in _SCO_TYPES:
            candidates.extend(_sco(obj, ref))
        elif otype == "observed-data" and isinstance(obj.get("objects"), dict):
            # STIX 2.0 embeds its observables; 2.1 refers to top-level SCOs (loaded above).
            for key, sco in sorted(obj["objects"].items()):
                if isinstance(sco, dict):
                    candidates.extend(_sco(sco, f"{ref}/{clean(key, 40)}"))
    return candidates, problems
