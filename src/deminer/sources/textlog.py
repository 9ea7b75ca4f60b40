"""What the line-by-line text log sources share: sniffing a head, the binary check, the
``errors`` rows, and the accounting of lines cut short or lost to a damaged ``.gz``.

Used by the text log sources (auth, audit, web, firewall; the network ones sniff with
``head_text`` too); the reading itself (``open_log``, ``Blocks``) is
``syslog_time``'s. Messages name what went wrong and where, so a responder can look.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deminer.sources.base import ZERO_RUN, SourceError, looks_binary
from deminer.sources.syslog_time import MAX_LINE, Blocks, open_log

HEAD = 65536


def head_text(head: bytes) -> str | None:
    """A file's first bytes as text for sniffing (gunzipped when gzip'd); None when binary or
    empty. When the head filled the read its last line is cut short, so it is dropped."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(31).decompress(head, HEAD)
        except zlib.error:
            return None
    if looks_binary(head):
        return None
    head = ZERO_RUN.sub(b"", head)              # holes, not text (``looks_binary``)
    if not head.strip():
        return None
    text = head.decode("utf-8", "backslashreplace").lstrip("\ufeff")   # Windows tools write BOMs
    if len(head) >= HEAD:
        text = text[:text.rfind("\n") + 1]
    return text


def read_head(path: Path) -> bytes:
    """The first ``HEAD`` bytes of a (maybe gzip'd) log; ``SourceError`` for a broken gzip."""
    with open_log(path) as fh:
        try:
            return fh.read(HEAD)
        except (EOFError, OSError, zlib.error) as exc:
            raise SourceError(f"unreadable compressed log ({type(exc).__name__}: {exc})") from None


def text_head(path: Path, what: str) -> bytes:
    """The first bytes of a (maybe gzip'd) text log; ``SourceError`` if it is not one."""
    head = read_head(path)
    if looks_binary(head):
        raise SourceError(f"binary content, not a {what}")
    return head


def error_row(display: str, host: str | None, message: str, stage: str = "ingest") -> dict[str, Any]:
    return {"source": display, "host": host, "stage": stage, "message": message,
            "ts": dt.datetime.now(dt.UTC).replace(tzinfo=None)}


def error_rows(display: str, host: str | None, problems: Iterable[str | None],
               blocks: Blocks | None) -> list[dict[str, Any]]:
    """An ``ingest`` row per problem, then the ``completeness`` row for the zero-filled
    regions ``blocks`` dropped, if any."""
    rows = [error_row(display, host, p) for p in problems if p]
    if blocks is not None and blocks.zero_bytes:
        rows.append(error_row(display, host, _zero_message(blocks), stage="completeness"))
    return rows


class CutLines:
    """Lines longer than ``MAX_LINE``, cut by ``Blocks`` (those spanning its read blocks) or by
    the reader's loop (the others), each counted once."""

    def __init__(self, blocks: Blocks) -> None:
        self.blocks = blocks
        self.count = 0
        self.first = 0

    def clip(self, line: str, lineno: int) -> str:
        """``line`` cut to ``MAX_LINE`` characters (callers test the length first: hot loop)."""
        if lineno not in self.blocks.cut_at:
            self.count += 1
            self.first = self.first or lineno
        return line[:MAX_LINE]

    def problem(self, limit: str) -> str | None:
        count = self.count + self.blocks.cut_lines
        if not count:
            return None
        first = min((n for n in (self.first, min(self.blocks.cut_at, default=0)) if n), default=0)
        return f"{count} line(s) longer than {limit} were cut (first at line {first})"


def _zero_message(blocks: Blocks) -> str:
    return (f"{blocks.zero_bytes} zero bytes in {blocks.zero_regions} zero-filled region(s), the "
            f"first before line {blocks.zero_first_line}: left by a crash while the log was "
            "written, or by truncating it while its writer kept its offset; lines that were "
            "there are lost")


def truncation_problem(blocks: Blocks, lines: int) -> str | None:
    if not blocks.truncated:
        return None
    return (f"compressed log ends early ({blocks.truncated}); the {lines} lines before that "
            "point were kept")
