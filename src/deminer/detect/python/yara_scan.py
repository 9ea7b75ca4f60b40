"""YARA scan of collected file contents with deminer's own rules (``detect/yara/*.yar``).

The collector saves flagged files (process executables, also deleted ones, files in temp
folders, miner configs, scripts) and ingest stores them content-addressed at
``CASE/evidence/files/<sha256>``. This detector scans every such blob that a ``files`` or
``processes`` row names, once per sha256, with the rule set compiled once per process, and
writes one finding per (host, path, matching YARA rule)::

    files/processes rows ──► sha256 ──► evidence/files/<sha256> ──► yara-x ──► findings
    (host, path, pid)                    (regular file, size cap,    (timeout,   severity and
                                          hash checked)              time cap)   ATT&CK from meta

Severity, ATT&CK ids and family come from each YARA rule's meta; the matched strings are
shown as escaped excerpts so a person can go back to the bytes. A blob that cannot be read or
scanned becomes an ``errors`` row naming it; the other blobs are still scanned.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yara_x

from deminer.detect.finding import Finding
from deminer.model import SEVERITIES
from deminer.textsafe import clean

if TYPE_CHECKING:
    from deminer.case import Case
    from deminer.detect.rules import Rule

YARA_DIR = Path(__file__).resolve().parent.parent / "yara"

# Bounds that keep one hostile or huge blob from stalling a case. The collector caps saved
# files at 32 MiB, so the size cap only bites on blobs that came from elsewhere.
MAX_BLOB_BYTES = 64 * 1024 * 1024
SCAN_TIMEOUT_SECONDS = 20
TOTAL_BUDGET_SECONDS = 900.0
MAX_MATCHES_PER_PATTERN = 100
MAX_MATCHES_SHOWN = 16
MATCHES_SHOWN_PER_PATTERN = 3
EXCERPT_BYTES = 64

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ATTACK_ID = re.compile(r"T\d{4}(\.\d{3})?")


class YaraRulesError(ValueError):
    """The shipped YARA rules cannot be compiled; the message names the file."""


def compiled_rules(folder: Path | None = None) -> yara_x.Rules:
    """The rules under ``folder`` (default: the shipped ones), compiled once per process."""
    return _compile(folder or YARA_DIR)


@functools.cache
def _compile(folder: Path) -> yara_x.Rules:
    compiler = yara_x.Compiler()
    sources = sorted(folder.glob("*.yar"))
    if not sources:
        raise YaraRulesError(f"{folder}: no YARA rule files (*.yar)")
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise YaraRulesError(f"{path}: cannot read YARA rules: {exc}") from exc
        try:
            compiler.add_source(text, origin=str(path))
        except yara_x.CompileError as exc:
            raise YaraRulesError(f"{path}: YARA rules do not compile: {exc}") from exc
    return compiler.build()


def _scanner(rules: yara_x.Rules) -> Any:
    """A scanner with our bounds; a seam so tests can stand in a failing scanner."""
    scanner = yara_x.Scanner(rules)
    scanner.set_timeout(SCAN_TIMEOUT_SECONDS)
    scanner.max_matches_per_pattern(MAX_MATCHES_PER_PATTERN)
    return scanner


def parse_attack(value: object) -> tuple[str, ...]:
    """ATT&CK ids from a meta value like ``"T1496,T1059.004"``; anything else is dropped."""
    if not isinstance(value, str):
        return ()
    return tuple(t for t in re.split(r"[\s,;]+", value.strip()) if _ATTACK_ID.fullmatch(t))


def excerpt(data: bytes, offset: int, length: int) -> str:
    """At most ``EXCERPT_BYTES`` matched bytes as printable ASCII; all else as ``\\xNN``."""
    chunk = data[offset:offset + min(max(length, 0), EXCERPT_BYTES)]
    out = []
    for b in chunk:
        if b == 0x5C:
            out.append("\\\\")  # escape the escape character so the text reads back exactly
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


@dataclass
class _Ref:
    """One row that names a blob: a file of interest or a process executable."""

    host: str | None
    path: str | None
    ts: dt.datetime | None
    table: str
    pid: int | None = None
    content_saved: bool = False
    reason: str | None = None


@dataclass
class _Blob:
    sha256: str
    refs: list[_Ref] = field(default_factory=list)

    def where(self) -> str:
        """How to name the blob in an error: its host paths and its sha256."""
        paths = sorted({r.path for r in self.refs if r.path})
        shown = ", ".join(clean(p, 200) for p in paths[:3]) + (" …" if len(paths) > 3 else "")
        return f"{shown or 'unnamed file'} (sha256 {self.sha256})"

    def host(self) -> str | None:
        hosts = {r.host for r in self.refs}
        return hosts.pop() if len(hosts) == 1 else None


def _references(case: Case) -> tuple[dict[str, _Blob], list[str]]:
    """Blobs named by ``files``/``processes`` rows, keyed by sha256, and bad sha256 values."""
    rows = case.query(
        "SELECT host, path, sha256, coalesce(mtime, ts) AS ts, 'files' AS tbl, NULL AS pid, "
        "content_saved, reason FROM files WHERE sha256 IS NOT NULL AND sha256 <> '' "
        "UNION ALL "
        "SELECT host, exe, exe_sha256, coalesce(started, ts), 'processes', pid, NULL, NULL "
        "FROM processes WHERE exe_sha256 IS NOT NULL AND exe_sha256 <> '' "
        "ORDER BY 3, 1, 2, 6")
    blobs: dict[str, _Blob] = {}
    bad: list[str] = []
    for row in rows:
        sha = str(row["sha256"]).strip().lower()
        # The value becomes a file name below: anything but 64 hex digits could escape.
        if not _SHA256.fullmatch(sha):
            bad.append(clean(row["sha256"], 100))
            continue
        blobs.setdefault(sha, _Blob(sha)).refs.append(_Ref(
            host=row["host"], path=row["path"], ts=row["ts"], table=row["tbl"], pid=row["pid"],
            content_saved=bool(row["content_saved"]), reason=row["reason"]))
    return blobs, sorted(set(bad))


class _BlobError(Exception):
    """A blob that cannot be scanned; the message says why."""


def _read_blob(path: Path, sha: str) -> tuple[bytes, int]:
    """The first ``MAX_BLOB_BYTES`` of a blob and its size, after checking its hash."""
    try:
        # O_NOFOLLOW: a symlink planted in the evidence folder must not lead out of it;
        # O_NONBLOCK: a FIFO planted there must not hang the scan (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _BlobError(f"cannot open: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _BlobError("not a regular file")
    with os.fdopen(fd, "rb") as fh:
        digest = hashlib.sha256()
        head = bytearray()
        try:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                if len(head) < MAX_BLOB_BYTES:
                    head.extend(chunk[:MAX_BLOB_BYTES - len(head)])
        except OSError as exc:
            raise _BlobError(f"cannot read: {exc.strerror or exc}") from exc
    # A blob whose content is not its name would pin findings on the wrong file.
    if digest.hexdigest() != sha:
        raise _BlobError(f"content does not match its name (sha256 {digest.hexdigest()})")
    return bytes(head), info.st_size


def _meta(rule: Any) -> dict[str, Any]:
    return {str(k): v for k, v in rule.metadata}


def _matches(data: bytes, rule: Any) -> tuple[list[dict[str, Any]], int]:
    """Shown matches (a few per pattern, capped overall) and the total number found."""
    shown: list[dict[str, Any]] = []
    total = 0
    for pattern in rule.patterns:
        hits = pattern.matches
        total += len(hits)
        for m in hits[:MATCHES_SHOWN_PER_PATTERN]:
            if len(shown) < MAX_MATCHES_SHOWN:
                shown.append({"identifier": pattern.identifier, "offset": m.offset,
                              "length": m.length, "excerpt": excerpt(data, m.offset, m.length)})
    shown.sort(key=lambda m: (m["offset"], m["identifier"]))
    return shown, total


def _findings(rule: Rule, blob: _Blob, yrule: Any, data: bytes, size: int) -> list[Finding]:
    """One finding per (host, path) that holds the blob, for one matching YARA rule."""
    meta = _meta(yrule)
    name = str(yrule.identifier)
    severity = meta.get("severity")
    if severity not in SEVERITIES:
        severity = rule.severity
    attack = parse_attack(meta.get("attack")) or rule.attack
    description = str(meta.get("description") or name)
    shown, total = _matches(data, yrule)
    groups: dict[tuple[str | None, str | None], list[_Ref]] = {}
    for ref in blob.refs:
        groups.setdefault((ref.host, ref.path), []).append(ref)
    out = []
    for (host, path), refs in sorted(groups.items(), key=lambda g: (g[0][0] or "", g[0][1] or "")):
        pids = sorted({r.pid for r in refs if r.pid is not None})
        stamps = [r.ts for r in refs if r.ts is not None]
        same_host = sorted({r.path for r in blob.refs if r.host == host and r.path})
        entity = path or f"sha256:{blob.sha256}"
        evidence: dict[str, Any] = {
            "path": path, "sha256": blob.sha256, "yara_rule": name, "description": description,
            "matches": shown, "match_count": total, "size": size,
            "blob": f"evidence/files/{blob.sha256}", "tables": sorted({r.table for r in refs}),
        }
        if "family" in meta:
            evidence["family"] = str(meta["family"])
        if pids:
            evidence["pids"] = pids
        if len(same_host) > 1:
            evidence["paths"] = same_host
        reasons = sorted({r.reason for r in refs if r.reason})
        if reasons:
            evidence["reasons"] = reasons
        if size > len(data):
            evidence["scanned_bytes"] = len(data)
        who = f" (pid {', '.join(map(str, pids))})" if pids else ""
        summary = (f"{clean(entity, 300)}{who} matches YARA rule {name}: {description}; "
                   f"sha256 {blob.sha256}")
        out.append(Finding(
            rule=rule.id, title=rule.title, severity=str(severity), attack=attack, host=host,
            ts=min(stamps) if stamps else None, entity=entity, summary=summary, evidence=evidence))
    return out


def scan_case(case: Case, rule: Rule, folder: Path | None = None,
              clock: Callable[[], float] = time.monotonic) -> list[Finding]:
    """Scan the case's collected blobs with the rules under ``folder`` (default: shipped)."""
    if case.dir is None:
        return []
    store = case.dir / "evidence" / "files"
    blobs, bad = _references(case)
    for value in bad:
        case.error(f"sha256 '{value}'", "a files/processes row names a sha256 that is not "
                   "64 hex digits; its content was not scanned", stage="detect")
    if not blobs:
        return []
    rules = compiled_rules(folder)
    scanner = _scanner(rules)
    started = clock()
    found: list[Finding] = []
    pending = sorted(blobs)
    for i, sha in enumerate(pending):
        blob = blobs[sha]
        if clock() - started > TOTAL_BUDGET_SECONDS:
            left = len(pending) - i
            case.error(str(store), f"YARA time budget of {TOTAL_BUDGET_SECONDS:g} s used up; "
                       f"{left} blob(s) not scanned, first {blob.where()}", stage="detect")
            break
        path = store / sha
        if not path.exists() and not path.is_symlink():
            # Hashed-only content (too big, unreadable on the host) is normal; a missing blob
            # the collector says it saved is not.
            if any(r.content_saved for r in blob.refs):
                case.error(f"evidence/files/{sha}", f"saved content of {blob.where()} is "
                           "missing from the case", stage="detect", host=blob.host())
            continue
        try:
            data, size = _read_blob(path, sha)
            results = scanner.scan(data)
        except _BlobError as exc:
            case.error(f"evidence/files/{sha}", f"cannot scan {blob.where()}: {exc}",
                       stage="detect", host=blob.host())
            continue
        except yara_x.TimeoutError:
            case.error(f"evidence/files/{sha}", f"YARA scan of {blob.where()} timed out after "
                       f"{SCAN_TIMEOUT_SECONDS} s", stage="detect", host=blob.host())
            continue
        except yara_x.ScanError as exc:
            case.error(f"evidence/files/{sha}", f"YARA scan of {blob.where()} failed: {exc}",
                       stage="detect", host=blob.host())
            continue
        if size > len(data):
            case.error(f"evidence/files/{sha}", f"only the first {len(data)} of {size} bytes of "
                       f"{blob.where()} were scanned", stage="detect", host=blob.host())
        for yrule in sorted(results.matching_rules, key=lambda r: str(r.identifier)):
            found.extend(_findings(rule, blob, yrule, data, size))
    return found


def detect(case: Case, rule: Rule) -> list[Finding]:
    """The registered detector: scan with the shipped rules."""
    return scan_case(case, rule)
