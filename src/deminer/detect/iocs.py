"""Indicator lists: the ones deminer ships (``ioc_lists/*.csv``) and the user's ``--ioc`` files.

Indicators live in the ``iocs`` table so SQL rules can join on them. Domains match by suffix
(``pool.minexmr.com`` matches the indicator ``minexmr.com``); that is done in the rules.

A shipped or CSV list has the header ``kind,value,family,description``. A ``--ioc`` file may
also be a STIX 2.x bundle (see ``ioc_stix``); the format is recognised by content, never by
the file name. Every value is checked and normalised for its kind here, whatever the format:
lower-case domains and hashes, canonical IP text, defanged ``hxxp``/``[.]`` forms refanged.

User files are forgiving: a bad row or an unsupported STIX pattern is a *problem* (an
``IocError`` naming file and row or indicator), the good indicators still load, and the
problems go to the case's ``errors`` table (stage ``ioc``) where the CLI prints them. Only a
file that yields no indicator at all is fatal. Shipped lists are strict: a bad row is our bug.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.detect import ioc_stix
from deminer.model import IOC_KINDS
from deminer.textsafe import clean

LISTS_DIR = Path(__file__).parent / "ioc_lists"
MAX_FILE_BYTES = 64 * 1024 * 1024   # a threat-intel export, not a data set
MAX_VALUE_CHARS = 2048
MAX_REPORTED = 20                   # problems named in a fatal error message

_HEX = {"sha256": 64, "sha1": 40, "md5": 32}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_WALLET = re.compile(r"^[0-9A-Za-z]{20,128}$")


class IocError(ValueError):
    """An indicator file or entry that cannot be used; ``source`` names the file (and row)."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


@dataclass
class IocRead:
    """What one indicator file gave: usable rows, and what was skipped and why."""

    format: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[IocError] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False, compare=False)

    def add(self, row: dict[str, Any]) -> None:
        """Keep ``row`` unless the file already gave the same (kind, value)."""
        key = (row["kind"], row["value"])
        if key not in self._seen:
            self._seen.add(key)
            self.rows.append(row)


def _refang(value: str) -> str:
    # Threat reports publish indicators defanged so nobody clicks them by accident.
    value = re.sub(r"\[\.\]|\(\.\)|\[dot\]|\(dot\)", ".", value, flags=re.IGNORECASE)
    value = value.replace("[:]", ":").replace("[://]", "://")
    return re.sub(r"^hxxp(s?)://", r"http\1://", value, flags=re.IGNORECASE)


def _domain(value: str) -> str:
    value = value.lower().rstrip(".")
    if value.startswith("*."):
        value = value[2:]          # a wildcard is what suffix matching does anyway
    if "://" in value or "/" in value or ":" in value:
        raise ValueError("a domain has no scheme, port or path (use kind url for URLs)")
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name ({exc})") from None
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError("not a valid domain name")
    return value


def normalize(kind: str, value: str) -> str:
    """``value`` in the form the rules compare for ``kind``; ``ValueError`` says what is wrong."""
    value = value.strip()
    if not value:
        raise ValueError("empty value")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"value longer than {MAX_VALUE_CHARS} characters")
    if _CONTROL.search(value):
        raise ValueError("value contains control characters")
    if kind in ("domain", "ip", "url"):
        value = _refang(value)
    if kind == "domain":
        return _domain(value)
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ValueError("not an IPv4 or IPv6 address (networks are not supported)") from None
    if kind == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ValueError("a port is a number from 1 to 65535")
        return str(int(value))
    if kind in _HEX:
        value = value.lower()
        if len(value) != _HEX[kind] or not all(c in "0123456789abcdef" for c in value):
            raise ValueError(f"a {kind} is {_HEX[kind]} hexadecimal digits")
        return value
    if kind == "wallet":
        if not _WALLET.match(value):
            raise ValueError("a wallet address is 20 to 128 letters and digits")
        return value
    if kind in ("filename", "process_name"):
        # Rules compare base names; a path given here is taken for its last part.
        base = value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
        if not base:
            raise ValueError("no file name")
        return base
    if kind == "url":
        if "://" not in value or any(c.isspace() for c in value):
            raise ValueError("a URL has a scheme (http://...) and no spaces")
        return value
    return value   # key_comment: compared as found


def make_row(kind: str, value: str, family: str | None, description: str | None,
             source: str) -> dict[str, Any]:
    """A checked ``iocs`` row; ``ValueError`` when kind or value cannot be used."""
    kind = kind.strip().lower()
    if kind not in IOC_KINDS:
        raise ValueError(f"unknown indicator kind '{clean(kind, 40)}' (one of {', '.join(IOC_KINDS)})")
    return {"kind": kind, "value": normalize(kind, value),
            "family": clean(family.strip(), 200) if family and family.strip() else None,
            "description": clean(description.strip(), 500) if description and description.strip()
            else None,
            "source": source}


def parse_csv(text: str, display: str, source_prefix: str) -> IocRead:
    """Indicator rows of CSV ``text``; bad rows become problems naming ``display`` and line."""
    out = IocRead("csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        names = reader.fieldnames
    except csv.Error as exc:
        raise IocError(display, f"not a readable CSV file ({exc})") from None
    if not names or not {"kind", "value"} <= {n.strip().lower() for n in names if n}:
        raise IocError(display, "neither an indicator CSV (header kind,value[,family,description]) "
                                "nor a STIX 2 bundle")
    failures = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:   # a field over the size limit, a broken quote: skip the row
            out.problems.append(IocError(display, f"row after line {reader.line_num}: unreadable ({exc})"))
            failures += 1
            if failures > 100:
                out.problems.append(IocError(display, "too many unreadable rows; stopped reading"))
                break
            continue
        line = reader.line_num
        rec = {(k or "").strip().lower(): v for k, v in rec.items() if isinstance(v, str)}
        kind, value = (rec.get("kind") or "").strip(), rec.get("value") or ""
        if kind.startswith("#") or (not kind and not value.strip()):
            continue   # comments and blank lines
        try:
            row = make_row(kind, value, rec.get("family"), rec.get("description"),
                           f"{source_prefix}:{line}")
        except ValueError as exc:
            out.problems.append(IocError(display, f"line {line}: {exc}"))
            continue
        out.add(row)
    return out


def _stix(doc: Any, display: str, source_prefix: str) -> IocRead:
    out = IocRead("stix")
    try:
        candidates, problems = ioc_stix.read_bundle(doc)
    except ioc_stix.StixError as exc:
        raise IocError(display, str(exc)) from None
    out.problems.extend(IocError(display, p) for p in problems)
    for cand in candidates:
        try:
            row = make_row(cand.kind, cand.value, cand.family, cand.description,
                           f"{source_prefix}:{cand.ref}")
        except ValueError as exc:
            out.problems.append(IocError(display, f"{cand.ref}: {clean(cand.value, 120)}: {exc}"))
            continue
        out.add(row)
    return out


def read_iocs(path: Path, source_prefix: str | None = None) -> IocRead:
    """Read an indicator file, CSV or STIX 2.x JSON, told apart by content."""
    display = clean(path, None)
    prefix = source_prefix if source_prefix is not None else f"user:{display}"
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise IocError(display, f"cannot read indicator file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise IocError(display, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not an indicator list")
    if b"\x00" in raw[:65536]:
        raise IocError(display, "binary content; expected a CSV indicator list or a STIX 2 JSON bundle")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IocError(display, f"not UTF-8 text (byte {exc.start}); save the list as UTF-8") from None
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IocError(display, f"looks like JSON but does not parse: {exc.msg} at line "
                                    f"{exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise IocError(display, "JSON nested too deeply") from None
        return _stix(doc, display, prefix)
    return parse_csv(text, display, prefix)


def read_csv_iocs(path: Path, text: str | None = None) -> list[dict[str, Any]]:
    """Rows of a shipped indicator CSV; any bad row is an ``IocError`` (strict)."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IocError(str(path), f"cannot read indicator list: {exc}") from exc
    read = parse_csv(text, str(path), path.name)
    if read.problems:
        raise read.problems[0]
    return read.rows


def load_shipped(case: Case) -> int:
    """Replace the shipped indicators in ``case`` with the lists in ``ioc_lists/``."""
    case.db.execute("DELETE FROM iocs WHERE starts_with(source, 'shipped:')")
    rows: list[dict[str, Any]] = []
    for path in sorted(LISTS_DIR.glob("*.csv")):
        for row in read_csv_iocs(path):
            row["source"] = "shipped:" + row["source"]
            rows.append(row)
    return case.add("iocs", rows)


def load_user(case: Case, path: Path) -> int:
    """Add (or replace, on a re-run) the indicators of a user's CSV or STIX file.

    Skipped entries are written to ``errors`` (stage ``ioc``) so the run reports them; an
    ``IocError`` is raised only when the file gives no usable indicator at all.
    """
    read = read_iocs(path)
    display = clean(path, None)
    prefix = f"user:{display}:"
    case.db.execute("DELETE FROM iocs WHERE starts_with(source, ?)", [prefix])
    case.db.execute("DELETE FROM errors WHERE stage = 'ioc' AND source = ?", [display])
    if not read.rows:
        listed = "; ".join(p.detail for p in read.problems[:MAX_REPORTED])
        more = f" (and {len(read.problems) - MAX_REPORTED} more)" if len(read.problems) > MAX_REPORTED else ""
        raise IocError(display, f"no usable indicators in this {read.format.upper()} file"
                                + (f": {listed}{more}" if listed else ""))
    for problem in read.problems:
        case.error(display, f"indicator skipped: {problem.detail}", stage="ioc")
    return case.add("iocs", read.rows)
