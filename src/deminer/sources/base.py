"""What every source module provides, and the small helpers they share.

A source turns one kind of evidence into batches of rows of the normalized tables
(``model.TABLES``). It says how to recognise its input by content (``sniff``) and yields
``(table, rows)`` batches from ``parse``; only the case store writes them. A source raises
``SourceError`` for input it cannot read at all and yields ``errors`` rows for parts it skips.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

# Dict rows, or an Arrow table of the table's columns from a columnar source.
Batch = tuple[str, list[dict[str, Any]] | pa.Table]
BATCH_ROWS = 50_000


class SourceError(Exception):
    """Input a source cannot read; the message says why (the dispatcher adds the file name)."""


@dataclass(frozen=True)
class SourceContext:
    path: Path            # the file to read
    display: str          # how to name it in errors and provenance (``source`` column)
    host: str | None      # host id given by the user or the container, if any
    workdir: Path         # a folder this source may write extracted material into


@dataclass(frozen=True)
class Source:
    name: str
    sniff: Callable[[Path, bytes], bool]          # (path, first 64 KiB) -> is it mine?
    parse: Callable[[SourceContext], Iterator[Batch]]


def host_id(name: str | None) -> str | None:
    """A stable host id from a hostname or FQDN: lower case, short name kept whole."""
    if not name:
        return None
    return name.strip().lower() or None


_CONTROL = bytes(b for b in range(32) if not 9 <= b <= 13)
# A zero-filled region in a text file: 16 or more NULs in a row (a crash's unwritten blocks
# are thousands); shorter runs are damage inside a line.
ZERO_RUN_MIN = 16
ZERO_RUN = re.compile(rb"\x00{%d,}" % ZERO_RUN_MIN)


def looks_binary(head: bytes) -> bool:
    """True for content that is not text (NUL bytes, or mostly non-printable).

    Runs of NUL bytes are holes, not content: a text log left zero-filled by a crash, or
    truncated while its writer kept its offset, is still a text log (the line readers skip
    the zeros and say where they were). A NUL on its own (UTF-16, binaries) is not text.
    """
    if not head:
        return False
    if b"\x00" in head:
        head = ZERO_RUN.sub(b"", head)
        if b"\x00" in head:
            return True
    sample = head[:4096]
    # Control bytes other than \t\n\v\f\r, counted in C (a Python loop over 4 KiB per
    # file was 11 s of a 10,000-host ingest).
    bad = len(sample) - len(sample.translate(None, _CONTROL))
    return bad > len(sample) // 20


_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


def bom_encoding(head: bytes, xml: bool = False) -> tuple[str, int] | None:
    """(codec, BOM length) when ``head`` starts with a byte-order mark, else None.

    With ``xml``, a BOM-less UTF-16 document is recognised by its first ``<``, as Windows
    tools (wevtutil, PowerShell redirection, the Task Scheduler) write them.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    if xml and head[:2] == b"<\x00":
        return "utf-16-le", 0
    if xml and head[:2] == b"\x00<":
        return "utf-16-be", 0
    return None


class Batcher:
    """Collects rows per table and hands out full batches, so sources stay streaming."""

    def __init__(self, size: int = BATCH_ROWS) -> None:
        self.size = size
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, table: str, row: dict[str, Any]) -> Batch | None:
        bucket = self.rows.setdefault(table, [])
        bucket.append(row)
        if len(bucket) >= self.size:
            self.rows[table] = []
            return table, bucket
        return None

    def flush(self) -> Iterator[Batch]:
        for table, bucket in self.rows.items():
            if bucket:
                yield table, bucket
        self.rows = {}
