"""File listings from other collectors (CSV, TSV or JSON lines) → ``files`` rows, reason ``listing``.

KAPE's MFTECmd, Velociraptor (``Windows.Search.FileFinder``, ``Windows.NTFS.MFT``, …),
PowerShell ``Get-ChildItem | Export-Csv`` / ``Get-FileHash``, and ``dir /s`` or ``find``
output converted to CSV all list files with a path, a size, some times and maybe a hash; only
the column names differ. A file is taken when its header (or first JSON object) has a path
column (or MFTECmd's ParentPath + FileName) and a size or hash column. Column names are
compared lower-cased without punctuation, so ``Last Write Time``, ``LastWriteTime`` and
``last_write_time`` are one name; the first alias present in ``COLUMNS`` order wins (UTC
columns before local ones). Velociraptor's nested ``Hash: {SHA256: …}`` counts as ``hashsha256``.

Times: ISO 8601 (with ``Z``/offset → UTC; without, stored as written: MFTECmd and Velociraptor
write UTC, PowerShell's non-``Utc`` columns are host local time), epoch seconds/milliseconds,
FILETIME, ``M/D/YYYY h:mm:ss [AM|PM]`` and ``D.M.YYYY H:MM:SS``. ``ctime`` is the *change*
time (MFT record change, Velociraptor CTime, ``st_ctime``), never the creation time: the
``files`` table has no creation-time column yet. Only SHA-256 is stored (the table has no
MD5/SHA-1 column); directories are skipped. Values not understood become NULL and are counted
in one ``errors`` row; lines over ``MAX_LINE`` are skipped the same way.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deminer.case import to_utc
from deminer.sources.base import Batch, Batcher, Source, SourceContext, bom_encoding, host_id

MAX_LINE = 1 << 20                 # characters; a listing line is a few hundred
_ERRORS_SHOWN = 3
COLUMNS: dict[str, tuple[str, ...]] = {
    "path": ("path", "fullpath", "fullname", "filepath", "ospath", "pathname", "file"),
    "parent": ("parentpath", "directory", "directoryname", "folder", "dirname"),
    "name": ("filename", "name"),
    "size": ("size", "filesize", "length", "sizebytes", "bytes", "stsize"),
    "mtime": ("mtime", "lastwritetimeutc", "lastmodified0x10", "modifiedutc", "lastmodified", "modified",
              "modificationtime", "modifiedtime", "lastwritetime", "lastwrite", "stmtime"),
    "ctime": ("ctime", "lastrecordchange0x10", "changetime", "changed", "metadatachanged", "stctime"),
    "sha256": ("sha256", "hashsha256", "sha256hash", "filesha256"),
    "hash": ("hash",),                 # Get-FileHash: Hash + Algorithm
    "algorithm": ("algorithm", "hashalgorithm"),
    "other_hash": ("md5", "sha1", "hashmd5", "hashsha1", "md5hash", "sha1hash"),
    "owner": ("owner", "fileowner"),
    "mode": ("mode", "stmode", "permissions"),
    "is_dir": ("isdir", "isdirectory"),
    "host": ("host", "hostname", "computername", "computer", "fqdn"),
}
_NORM = re.compile(r"[^a-z0-9]")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OCTAL = re.compile(r"^0?[0-7]{3,6}$")
_DIR_MODE = re.compile(r"^d[-rwxahsltSTl]{5,9}$")
_LOCAL_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M",
                  "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y/%m/%d %H:%M:%S")
_FILETIME_EPOCH = dt.datetime(1601, 1, 1)
Records = Iterator[tuple[int, dict[str, Any]]]       # (line number, record by column name)


def _norm(name: str) -> str:
    return _NORM.sub("", name.lower())


def _plan(names: list[str]) -> dict[str, str]:
    """role → the column name that fills it, from a header's (normalized) names."""
    present = {_norm(n): n for n in reversed(names)}      # first occurrence wins
    plan: dict[str, str] = {}
    for role, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in present:
                plan[role] = present[alias]
                break
    if "path" not in plan and not ("parent" in plan and "name" in plan):
        plan.pop("name", None)
    return plan


def _is_listing(plan: dict[str, str]) -> bool:
    has_path = "path" in plan or ("parent" in plan and "name" in plan)
    return has_path and any(r in plan for r in ("size", "sha256", "hash", "other_hash"))


def _encoding(head: bytes) -> tuple[str, int]:
    return bom_encoding(head) or ("utf-8", 0)


def _delimiter(line: str) -> str:
    return max(("\t", ",", ";", "|"), key=line.count)


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting joined into the key: ``{"Hash": {"SHA256": x}}`` → ``HashSHA256``."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                out.setdefault(f"{key}{sub}", inner)
        else:
            out.setdefault(str(key), value)
    return out


def _header(text: str) -> tuple[str, str]:
    """(first meaningful line, kind) of a listing's text; PowerShell's ``#TYPE`` line skipped."""
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#TYPE")):
        lines.pop(0)
    first = lines[0] if lines else ""
    return first, "jsonl" if first.lstrip().startswith("{") else "csv"


def sniff(path: Path, head: bytes) -> bool:
    name, bom = _encoding(head)
    if name == "utf-8" and b"\x00" in head[:4096]:
        return False
    first, kind = _header(head[bom:bom + 65536].decode(name, "replace"))
    if kind == "jsonl":
        try:
            obj = orjson.loads(first)
        except orjson.JSONDecodeError:
            return False
        return isinstance(obj, dict) and _is_listing(_plan(list(_flatten(obj))))
    names = next(csv.reader([first], delimiter=_delimiter(first)), [])
    return len(names) >= 2 and _is_listing(_plan(names))


def _lines(path: Path, encoding: str, skipped: list[int]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file; lines over ``MAX_LINE`` characters are skipped whole and
    their numbers put in ``skipped``, so one runaway line never fills memory."""
    with path.open(encoding=encoding, errors="backslashreplace", newline="") as text:
        number = 0
        while line := text.readline(MAX_LINE):
            number += 1
            if len(line) >= MAX_LINE and not line.endswith(("\n", "\r")):
                skipped.append(number)
                while (rest := text.readline(MAX_LINE)) and not rest.endswith(("\n", "\r")):
                    pass
                continue
            yield number, line


def parse_time(value: Any) -> dt.datetime | None:
    """A listing's timestamp; ``ValueError`` when the text is not one of the known forms."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) or re.fullmatch(r"\d{9,19}(\.\d+)?", str(value).strip()):
        n = float(value)
        if n > 1e16:                      # FILETIME: 100 ns since 1601 (integer maths: exact)
            return _FILETIME_EPOCH + dt.timedelta(microseconds=int(str(value).partition(".")[0]) // 10)
        return to_utc(n / 1000 if n > 1e11 else n)       # epoch milliseconds, else seconds
    text = str(value).strip()
    stamp = to_utc(text)
    if stamp is not None:
        return stamp
    for fmt in _LOCAL_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


class _Rows:
    """Turns listing records (dicts keyed by the file's own column names) into ``files`` rows."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.host = host_id(ctx.host)
        self.bad: dict[str, tuple[int, str]] = {}       # column → (count, first bad value)

    def _time(self, rec: dict[str, Any], plan: dict[str, str], role: str) -> dt.datetime | None:
        column = plan.get(role)
        if column is None:
            return None
        try:
            return parse_time(rec.get(column))
        except (ValueError, OverflowError):
            count, first = self.bad.get(column, (0, str(rec.get(column))[:80]))
            self.bad[column] = (count + 1, first)
            return None

    def row(self, rec: dict[str, Any], plan: dict[str, str], line: int) -> dict[str, Any] | None:
        def get(role: str) -> str:
            value = rec.get(plan[role]) if role in plan else None
            return "" if value is None else str(value).strip()

        path = get("path")
        if not path and get("name"):
            parent = get("parent").rstrip("\\/")
            sep = "/" if parent.startswith("/") else "\\"
            path = f"{parent}{sep}{get('name')}" if parent else get("name")
        if not path:
            return None
        mode_text = get("mode")
        if get("is_dir").lower() in ("true", "1", "yes") or _DIR_MODE.match(mode_text):
            return None
        size = re.sub(r"[,\s_']", "", get("size"))
        digest = get("sha256").lower()
        if not digest and get("hash") and get("algorithm").upper() in ("SHA256", ""):
            digest = get("hash").lower()
        mtime = self._time(rec, plan, "mtime")
        return {
            "host": self.host or host_id(get("host")), "ts": mtime, "source": self.ctx.display,
            "source_line": line, "path": path, "size": int(size) if size.isdigit() else None,
            "mtime": mtime, "ctime": self._time(rec, plan, "ctime"),
            "mode": int(mode_text, 8) if _OCTAL.match(mode_text) else None,
            "owner": get("owner") or None, "sha256": digest if _SHA256.match(digest) else None,
            "reason": "listing",
        }


def _csv_records(lines: Iterator[tuple[int, str]], errors: list[str]) -> Records:
    """Records of a delimited listing; quoted fields may span lines (the csv module joins them)."""
    first_line: list[int | None] = [None]     # where the record being read began

    def texts() -> Iterator[str]:
        for number, line in lines:
            if first_line[0] is None:
                first_line[0] = number
            yield line

    stream = texts()
    first = next((line for line in stream if line.strip() and not line.startswith("#TYPE")), "")
    delimiter = _delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter), [])
    reader = csv.reader(stream, delimiter=delimiter)
    while True:
        first_line[0] = None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:            # the reader starts afresh on the next line
            errors.append(f"line {first_line[0]}: {exc}")
            continue
        if fields:
            yield first_line[0] or 0, dict(zip(header, fields, strict=False))


def _json_records(lines: Iterator[tuple[int, str]], errors: list[str]) -> Records:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"line {number}: not a JSON object")
            continue
        yield number, _flatten(obj)


def parse(ctx: SourceContext) -> Iterator[Batch]:
    batcher = Batcher()
    rows = _Rows(ctx)
    errors: list[str] = []
    skipped: list[int] = []
    plans: dict[tuple[str, ...], dict[str, str]] = {}     # JSON lines may vary in their keys
    with ctx.path.open("rb") as fh:
        head = fh.read(65536)
    encoding, bom = _encoding(head)
    kind = _header(head[bom:].decode(encoding, "replace"))[1]
    # The utf-8-sig / utf-16 codecs drop the BOM themselves.
    lines = _lines(ctx.path, {"utf-8": "utf-8-sig"}.get(encoding, "utf-16" if bom else encoding), skipped)
    records = _json_records(lines, errors) if kind == "jsonl" else _csv_records(lines, errors)
    for number, rec in records:
        keys = tuple(rec)
        plan = plans.get(keys)
        if plan is None:
            plan = plans[keys] = _plan(list(keys))
        row = rows.row(rec, plan, number)
        if row is not None and (full := batcher.add("files", row)):
            yield full
    yield from batcher.flush()
    problems = [f"{len(skipped)} line(s) over {MAX_LINE} characters skipped (first: line {skipped[0]})"
                ] if skipped else []
    if errors:
        problems.append(f"{len(errors)} unreadable line(s), first: " + "; ".join(errors[:_ERRORS_SHOWN]))
    for column, (count, first_bad) in rows.bad.items():
        problems.append(f"{count} value(s) of {column!r} not understood as a time (first: {first_bad!r})")
    if problems:
        yield "errors", [{"host": rows.host, "ts": dt.datetime.now(dt.UTC), "source": ctx.display,
                          "stage": "ingest", "message": " | ".join(problems)}]


SOURCE = Source("file_listing", sniff, parse)
