"""Auth-log lines → event rows, one block of lines at a time, and rows → Arrow columns.

A row is a plain tuple in ``COLUMNS`` order (no dict per line); ``to_arrow`` turns a batch
of them into one Arrow table for the case store. ``LineReader`` reads a log's blocks in order
in one of two ways that give the same rows:

- ``read_block``, the fast path. One regex over the whole block (``findall``: one tuple per
  line, all in C) takes apart the common lines: a BSD syslog or ISO-timestamped header
  (``Mar 27 13:06:56 host sshd[12]: msg``, ``2024-03-27T13:06:56.1+00:00 host sshd: msg``)
  with the tag of a program that has a handler. Everything else (journald JSON, RFC 5424,
  other programs, BSD's tagless "last message repeated", odd tags) goes to ``line``.
- ``read_per_line``: every line through ``line``, the way the source always read; kept as
  the reference the fast path is tested against (tests/sources/test_auth_log_fast.py).

Measured on a 500k-line auth.log the two cost about the same (the fast path ~10% less): what
a line costs is the regex work of its message and building its values, not the dict the
source used to make per row (see BENCHMARKS.md).

Both feed the same state — the BSD syslog year, the row a "last message repeated" line
repeats, cut lines, unreadable JSON — so they can take turns within a block.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any

import pyarrow as pa

from deminer.case import arrow_schema, rows_to_arrow
from deminer.model import TABLES
from deminer.sources import syslog_time as st
from deminer.sources.base import host_id
from deminer.sources.textlog import CutLines, truncation_problem

RAW_CAP = 2048            # ``raw`` keeps this many characters of a line
MAX_DIGITS = 4000         # longer numbers are not read (Python refuses int() past 4,300 digits)

# What a handler makes of a message: (event, user, src_ip, src_port, status, data, count,
# command); count is None unless the message itself says how many ("PAM 5 more …").
Message = tuple[str, str | None, str | None, int | None, str | None, str | None, int | None, str | None]
Handler = Callable[[str], Message | None]
# One event row, in COLUMNS order; ``source`` (the same for a whole file) is added per batch.
Row = tuple[int, dt.datetime | None, str | None, str, int | None, str,
            str, str | None, str | None, int | None, str | None, str | None, int | None, str | None]
COLUMNS = ("source_line", "ts", "host", "program", "pid", "raw",
           "event", "user", "src_ip", "src_port", "status", "data", "count", "command")
_SCHEMA = arrow_schema(TABLES["events"])
_TYPES = [_SCHEMA.field(name).type for name in COLUMNS]

_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]?$")
_LAST_REPEATED = re.compile(r"last message repeated (\d+) times?")
_SECONDS = {f"{n:02d}": dt.timedelta(seconds=n) for n in range(60)}


def number(text: str | None) -> int | None:
    """Digits as an int; None when absent or absurdly long (``int`` of more than 4,300 digits
    is an error, and one hostile line must not stop a file). Values past 64 bits stay ints
    here; the case store's rules make them NULL, as they always did."""
    return int(text) if text and len(text) <= MAX_DIGITS else None


def unrepeat(msg: str) -> tuple[int | None, str]:
    """(N, the message) of rsyslog's "message repeated N times: [ msg]"; (1, msg) otherwise."""
    rep = _REPEATED.match(msg)
    return (number(rep.group(1)), rep.group(2)) if rep else (1, msg)


@functools.lru_cache(maxsize=8)
def _fast_line(programs: tuple[str, ...]) -> re.Pattern[str]:
    """One alternative per line shape, so ``findall`` gives exactly one tuple per line:
    (bsd time, iso time, host, program, pid, message), all empty for a line the fast path
    leaves to ``line``. It accepts only lines ``line`` reads the same way: ASCII digits,
    a tag of exactly ``program`` or ``program[digits]`` followed by ": "."""
    months = "|".join(st.MONTHS)
    names = "|".join(re.escape(p) for p in sorted(programs, key=len, reverse=True))
    return re.compile(
        rf"^(?:(?:((?:{months}) [ 0-9][0-9] [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}})"
        r"|([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
        r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?))"
        rf" ([^ \n]*) ({names})(?:\[([0-9]+)\])?: (.*)|.*)$", re.MULTILINE)


class LineReader:
    """Rows of one log's lines, in file order, by either reader (see the module docstring)."""

    def __init__(self, handlers: Mapping[str, Handler], ctx_host: str | None, start_year: int,
                 blocks: st.Blocks) -> None:
        self.handlers = handlers
        self.fast = _fast_line(tuple(handlers))
        self.ctx_host = ctx_host
        self.blocks = blocks
        self.cuts = CutLines(blocks)
        self.tracker = st.YearTracker(start_year)
        self.lines = 0                        # lines read so far
        # ``line`` reuses the time of the last BSD header when the next line has the same one.
        self.last_prefix, self.last_month = "\0", 0      # "\0": matches no line
        self.last_ts: dt.datetime | None = None
        self.host_name, self.host = "", ctx_host
        self.prev_row: Row | None = None
        self.bad_json, self.first_bad = 0, 0

    # -- the per-line reader -------------------------------------------------------------
    def read_per_line(self, block: bytes) -> list[Row]:
        rows: list[Row] = []
        lineno = self.lines
        for line in block.decode("utf-8", "backslashreplace").split("\n"):
            lineno += 1
            if not line:
                continue
            if line[-1] == "\r":
                line = line[:-1]
                if not line:
                    continue
            if len(line) > st.MAX_LINE:
                line = self.cuts.clip(line, lineno)
            row = self.line(line, lineno)
            if row is not None:
                rows.append(row)
        self.lines = lineno
        return rows

    def line(self, line: str, lineno: int) -> Row | None:
        """The row of one line (one ``\\r`` taken off, not empty, cut to ``MAX_LINE``), or None."""
        if line[0] == "{":
            parsed = st.journald_record(line)
            if parsed is None:
                self.bad_json += 1
                self.first_bad = self.first_bad or lineno
                return None
            ts, hostname, program, pid, msg = parsed
            handler = self.handlers.get(program)
            if handler is None:
                return None
        else:
            if line.startswith(self.last_prefix):      # most lines share their second with the last
                ts, text, start = self.last_ts, line, 16
            elif (m := st.RFC3164_START_TEXT.match(line)) is not None:
                month = st.MONTHS[m.group(1)]
                year = self.tracker.feed(month) if month != self.last_month else self.tracker.year
                self.last_month, self.last_prefix = month, line[:16]
                ts = self.last_ts = st.rfc3164(self.last_prefix, year)
                text, start = line, 16
            else:
                iso = st.iso_header(line)
                if iso is None:
                    return None
                (ts, text), start = iso, 0
            sp = text.find(" ", start)
            colon = text.find(": ", sp + 1)
            if sp < 0 or colon < 0 or text.find(" ", sp + 1, colon) >= 0:
                return self._repeat_last(text, sp, line, lineno, ts)
            # the tag is "prog[pid]" or "prog"; look the program up before anything else
            at = text.find("[", sp + 1, colon)
            bracket = at > 0 and text[colon - 1] == "]"
            program = text[sp + 1:at] if bracket else text[sp + 1:colon]
            handler = self.handlers.get(program)
            if handler is None:
                return None
            pid_text = text[at + 1:colon - 1] if bracket else ""
            pid = number(pid_text) if pid_text.isdecimal() else None
            hostname = text[start:sp]
            msg = text[colon + 2:]
        count: int | None = 1
        if msg.startswith("message repeated "):
            count, msg = unrepeat(msg)
        message = handler(msg)
        if message is None:
            return None
        if self.ctx_host is None and hostname != self.host_name:
            self.host_name, self.host = hostname, host_id(hostname) if hostname != "-" else None
        event, user, ip, port, status, data, own_count, command = message
        if count == 1 and own_count is not None:
            count = own_count
        row: Row = (lineno, ts, self.host, program, pid, line if len(line) <= RAW_CAP else line[:RAW_CAP],
                    event, user, ip, port, status, data, count, command)
        self.prev_row = row
        return row

    def _repeat_last(self, text: str, sp: int, line: str, lineno: int, ts: dt.datetime | None) -> Row | None:
        # BSD syslogd's "last message repeated N times" names no program: it repeats the line
        # just before it.
        rep = _LAST_REPEATED.match(text, sp + 1)
        p = self.prev_row
        if rep is None or p is None or p[0] != lineno - 1:
            return None
        row: Row = (lineno, ts, p[2], p[3], p[4], line[:RAW_CAP], p[6], p[7], p[8], p[9], p[10], p[11],
                    number(rep.group(1)), p[13])
        self.prev_row = row
        return row

    # -- the block reader ----------------------------------------------------------------
    def read_block(self, block: bytes) -> list[Row]:
        text = block.decode("utf-8", "backslashreplace")
        if "\r" in text:            # CRLF: one "\r" off the end of each line, as ``line`` expects
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        first = self.lines
        self.lines += len(lines)
        if len(text) > st.MAX_LINE and max(map(len, lines)) > st.MAX_LINE:
            clip = self.cuts.clip
            lines = [ln if len(ln) <= st.MAX_LINE else clip(ln, n) for n, ln in enumerate(lines, first + 1)]
            text = "\n".join(lines)
        found = self.fast.findall(text)
        if len(found) != len(lines):    # cannot happen (every line matches one branch); stay exact anyway
            return [r for n, ln in enumerate(lines, first + 1) if ln and (r := self.line(ln, n))]
        handlers, ctx_host, tracker = self.handlers, self.ctx_host, self.tracker
        months, rfc3164, iso8601, seconds = st.MONTHS, st.rfc3164, st.iso8601, _SECONDS
        last_month, year, prev = self.last_month, tracker.year, self.prev_row
        # The time of each minute (``Mar 27 13:06``) in ``year`` and of each ISO stamp: a
        # datetime from the cache plus a timedelta is a quarter of the cost of a new one.
        minutes: dict[str, dt.datetime | None] = {}
        stamps: dict[str, dt.datetime | None] = {}
        host_name, host = "", ctx_host
        rows: list[Row] = []
        for i, (bsd, iso, hostname, program, pid_text, msg) in enumerate(found):
            if not program:
                line = lines[i]
                if not line:
                    continue
                # Not a common line: ``line`` reads it, from the state the fast lines left.
                self.last_month, self.last_prefix, self.prev_row = last_month, "\0", prev
                row = self.line(line, first + 1 + i)
                last_month, prev = self.last_month, self.prev_row
                if tracker.year != year:
                    year = tracker.year
                    minutes.clear()
                if row is not None:
                    rows.append(row)
                continue
            ts: dt.datetime | None
            if bsd:
                month = months[bsd[:3]]
                if month != last_month:
                    last_month = month
                    if tracker.feed(month) != year:
                        year = tracker.year
                        minutes.clear()
                minute = bsd[:12]
                if minute in minutes:
                    ts = minutes[minute]
                else:
                    ts = minutes[minute] = rfc3164(minute + ":00", year)
                if ts is not None:
                    second = seconds.get(bsd[13:])
                    ts = rfc3164(bsd, year) if second is None else ts + second
            elif iso in stamps:
                ts = stamps[iso]
            else:
                ts = stamps[iso] = iso8601(iso)
            count: int | None = 1
            if msg.startswith("message repeated "):
                count, msg = unrepeat(msg)
            message = handlers[program](msg)
            if message is None:
                continue
            if ctx_host is None and hostname != host_name:
                host_name, host = hostname, host_id(hostname) if hostname != "-" else None
            event, user, ip, port, status, data, own_count, command = message
            if count == 1 and own_count is not None:
                count = own_count
            line = lines[i]
            prev = (first + 1 + i, ts, host, program,
                    int(pid_text) if pid_text and len(pid_text) <= MAX_DIGITS else None,
                    line if len(line) <= RAW_CAP else line[:RAW_CAP],
                    event, user, ip, port, status, data, count, command)
            rows.append(prev)
        self.last_month, self.last_prefix, self.prev_row = last_month, "\0", prev
        return rows

    def problems(self) -> list[str]:
        """What the ``errors`` table should say about this log, once it has been read."""
        found = [self.cuts.problem(f"{st.MAX_LINE} bytes")]
        if self.bad_json:
            found.append(f"{self.bad_json} journald JSON line(s) could not be read (first at line "
                         f"{self.first_bad}); the other lines were kept")
        found.append(truncation_problem(self.blocks, self.lines))
        return [p for p in found if p]


def in_batches(row_lists: Iterable[list[Row]], batch_rows: int) -> Iterator[tuple[str, list[Row]]]:
    """``("events", rows)`` batches of exactly ``batch_rows`` rows (the last one smaller)."""
    pending: list[Row] = []
    for rows in row_lists:
        pending = pending + rows if pending else rows
        start = 0
        while len(pending) - start >= batch_rows:
            yield "events", pending[start:start + batch_rows]
            start += batch_rows
        pending = pending[start:] if start else pending
    if pending:
        yield "events", pending


def to_dicts(rows: list[Row], source: str) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True), source=source) for row in rows]


def to_arrow(rows: list[Row], source: str) -> pa.Table:
    """The rows as an Arrow table of their ``events`` columns plus ``source``."""
    names = [*COLUMNS, "source"]
    try:
        # itemgetter per column: zip(*rows) makes an iterator per row and is 3x slower
        arrays = [pa.array(list(map(itemgetter(k), rows)), type=typ) for k, typ in enumerate(_TYPES)]
    except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
        # A value that does not fit its column (a port past 2**63): the case store's own rules.
        return rows_to_arrow("events", to_dicts(rows, source)).select(names)
    arrays.append(pa.array([source] * len(rows), pa.string()))
    return pa.Table.from_arrays(arrays, names=names)
