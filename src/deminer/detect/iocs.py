"""Indicator lists: the ones deminer ships (``ioc_lists/*.csv``) and the user's ``--ioc`` files.

Indicators live in the ``iocs`` table so SQL rules can join on them. Domains match by suffix
(``pool.minexmr.com`` matches the indicator ``minexmr.com``); that is done in the rules.
A shipped or CSV list has the header ``kind,value,family,description``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.model import IOC_KINDS

LISTS_DIR = Path(__file__).parent / "ioc_lists"


class IocError(ValueError):
    """An indicator file that cannot be used; the message names the file."""


def _normalize(kind: str, value: str) -> str:
    value = value.strip()
    if kind in ("domain", "sha256", "md5", "sha1", "filename", "process_name"):
        value = value.lower().rstrip(".")
    return value


def read_csv_iocs(path: Path, text: str | None = None) -> list[dict[str, Any]]:
    """Rows of an indicator CSV; a bad row is an ``IocError`` naming file and line."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IocError(f"{path}: cannot read indicator list: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"kind", "value"} <= set(reader.fieldnames):
        raise IocError(f"{path}: an indicator CSV needs the columns kind,value[,family,description]")
    rows = []
    for line, rec in enumerate(reader, start=2):
        kind = (rec.get("kind") or "").strip().lower()
        value = rec.get("value") or ""
        if not value.strip() or kind.startswith("#"):
            continue
        if kind not in IOC_KINDS:
            raise IocError(f"{path}:{line}: unknown indicator kind '{kind}' (one of {', '.join(IOC_KINDS)})")
        rows.append({"kind": kind, "value": _normalize(kind, value),
                     "family": (rec.get("family") or "").strip() or None,
                     "description": (rec.get("description") or "").strip() or None,
                     "source": f"{path.name}:{line}"})
    return rows


def load_shipped(case: Case) -> int:
    """Replace the shipped indicators in ``case`` with the lists in ``ioc_lists/``."""
    case.db.execute("DELETE FROM iocs WHERE source LIKE 'shipped:%'")
    rows: list[dict[str, Any]] = []
    for path in sorted(LISTS_DIR.glob("*.csv")):
        for row in read_csv_iocs(path):
            row["source"] = "shipped:" + row["source"]
            rows.append(row)
    return case.add("iocs", rows)


def load_user(case: Case, path: Path) -> int:
    """Add the indicators of a user's CSV file."""
    return case.add("iocs", read_csv_iocs(path))
