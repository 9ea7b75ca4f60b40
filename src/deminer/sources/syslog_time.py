"""Timestamps and line headers of syslog-style logs, shared by the sources that read them.

Three shapes occur in the wild:

    Mar 27 13:06:56                       RFC 3164 / BSD syslog: no year, no zone
    2024-03-27T13:06:56.123456+00:00      RFC 5424 and rsyslog's high-precision format (ISO 8601)
    1711544816123456                      journald ``__REALTIME_TIMESTAMP``: microseconds since 1970

RFC 3164 lines carry no year, so one is inferred: the log's last line belongs to the year of a
*reference* time (the file's mtime, or a year the user gives), and walking backwards from it
every Dec → Jan turn over is one year earlier. ``MonthScan`` finds the first line's year with
a cheap first pass over the bytes; ``YearTracker`` then walks forwards line by line. Both
passes read the log through ``Blocks`` (whole lines, over-long lines cut, ``.gz`` opened on
the fly by ``open_log``), so they see exactly the same lines. Times without a zone are taken
as UTC (the host's zone is not in the log).

``iso_header`` and ``journald_record`` take apart the other line shapes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from deminer.sources.base import ZERO_RUN, ZERO_RUN_MIN

MONTHS: dict[str, int] = {
    m: i for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
EPOCH = dt.datetime(1970, 1, 1)
BLOCK = 4 << 20           # bytes read at a time, cut back to the last newline
MAX_LINE = 64 << 10       # longer lines are cut
# A local time may be ahead of UTC by up to 14 hours (UTC+14), so a line written just before
# the file was copied can look "later" than the file's mtime by that much.
ZONE_SLACK = dt.timedelta(hours=14)

# The start of an RFC 3164 line, on bytes (first pass) and on text (second pass); both
# passes must accept exactly the same lines or the years drift apart.
RFC3164_START = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
_ISO_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) (.*)")
# RFC 5424: <PRI>1 TIME HOST APP PROCID MSGID [SD-ELEMENT...]|- MSG; SD values may hold "\]".
_RFC5424 = re.compile(r'<\d{1,3}>1 (\S+) (\S+) (\S+) (\S+) \S+ '
                      r'(-|(?:\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\])+) ?(.*)')
RFC3164_START_TEXT = re.compile(RFC3164_START.pattern.decode(), re.ASCII)
_MONTH_BYTES = frozenset(m.encode() for m in MONTHS)


def rfc3164(text: str, year: int) -> dt.datetime | None:
    """``Mmm dd hh:mm:ss`` in ``year``; None when it is not a valid time (e.g. Feb 29)."""
    try:
        return dt.datetime(year, MONTHS[text[:3]], int(text[4:6]), int(text[7:9]),
                           int(text[10:12]), int(text[13:15]))
    except (KeyError, ValueError):
        return None


def iso8601(text: str) -> dt.datetime | None:
    """A naive UTC datetime from ISO 8601 text (``Z``, ``+00:00`` or ``+0000``; none = UTC)."""
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
    return stamp


def journald_realtime(value: object) -> dt.datetime | None:
    """``__REALTIME_TIMESTAMP`` (microseconds since the epoch, as text or number)."""
    try:
        micros = int(str(value))
        return EPOCH + dt.timedelta(microseconds=micros)
    except (TypeError, ValueError, OverflowError):
        return None


def year_step(prev: int, month: int) -> int:
    """How many years the log moved going from month ``prev`` to ``month`` (-1, 0 or 1).

    Logs are in time order, except that lines written a moment apart are sometimes swapped.
    So a month going back by one (``Apr`` then ``Mar``) is such a swap within the year, and
    ``Jan`` then ``Dec`` a swap across New Year (one year back); any other decrease (``Dec``
    then ``Jan``, or a long gap) is the next year.
    """
    if month == prev:
        return 0
    if month > prev:
        return -1 if (prev == 1 and month == 12) else 0
    return 0 if month == prev - 1 else 1


class YearTracker:
    """Gives each RFC 3164 line its year, in file order, starting from ``start_year``."""

    def __init__(self, start_year: int) -> None:
        self.year = start_year
        self.month = 0   # none seen yet

    def feed(self, month: int) -> int:
        if self.month:
            self.year += year_step(self.month, month)
        self.month = month
        return self.year


class MonthScan:
    """The cheap first pass over a log's bytes: month turns and the last line's time.

    Feed it the file in blocks of whole lines, in order. It counts exactly the lines that
    ``RFC3164_START`` (and so ``YearTracker`` in the second pass) accepts.
    """

    def __init__(self) -> None:
        self.net_years = 0           # years between the first and the last RFC 3164 line
        self.month = 0
        self.last: tuple[int, int, int, int, int] | None = None   # month, day, h, m, s

    def feed(self, block: bytes) -> None:
        """Take the next block of whole lines (split on ``\\n``)."""
        lines = block.split(b"\n")
        # Logs stay in one month for thousands of lines: look at every line only when the
        # block's line starts show more than one month (a slice per line is cheap, a regex
        # match per line is not).
        heads = {line[:4] for line in lines}
        months = [MONTHS[h[:3].decode()] for h in heads if h[3:4] == b" " and h[:3] in _MONTH_BYTES]
        if not months:
            return
        prev = self.month
        if len(months) > 1 or prev != months[0]:
            for line in lines:
                if RFC3164_START.match(line):
                    month = MONTHS[line[:3].decode()]
                    if month != prev:
                        if prev:
                            self.net_years += year_step(prev, month)
                        prev = month
            self.month = prev
        for line in reversed(lines):
            m = RFC3164_START.match(line)
            if m:
                mon, d, hh, mm, ss = m.groups()
                self.last = (MONTHS[mon.decode()], int(d), int(hh), int(mm), int(ss))
                break

    def start_year(self, reference: dt.datetime, slack: dt.timedelta = ZONE_SLACK) -> int:
        """Year of the first line: the last line is the latest time not after ``reference``."""
        end_year = reference.year
        if self.last is not None:
            end_year = last_line_year(self.last, reference, slack)
        return end_year - self.net_years


def last_line_year(last: tuple[int, int, int, int, int], reference: dt.datetime,
                   slack: dt.timedelta) -> int:
    """The latest year in which the time ``last`` is not after ``reference + slack``."""
    limit = reference + slack
    month, day, hh, mm, ss = last
    for year in (limit.year, limit.year - 1, limit.year - 2, limit.year - 3, limit.year - 4):
        try:
            candidate = dt.datetime(year, month, day, hh, mm, ss)
        except ValueError:      # Feb 29 outside a leap year: try an earlier year
            continue
        if candidate <= limit:
            return year
    return reference.year


def reference_from_year(year: int) -> dt.datetime:
    """The reference time meaning "the log ends in ``year``"."""
    return dt.datetime(year, 12, 31, 23, 59, 59)


# -- line headers -----------------------------------------------------------------------------
def iso_header(line: str) -> tuple[dt.datetime | None, str] | None:
    """(time, ``host tag: msg``) of an ISO-timestamped or RFC 5424 line."""
    if line[0].isdigit():
        m = _ISO_LINE.match(line)
        return None if m is None else (iso8601(m.group(1)), m.group(2))
    if line[0] == "<":
        m5 = _RFC5424.match(line)
        if m5 is None:
            return None
        stamp, hostname, app, procid, _sd, text = m5.groups()
        tag = app if procid == "-" else f"{app}[{procid}]"
        return iso8601(stamp), f"{hostname} {tag}: {text.removeprefix(chr(0xFEFF))}"
    return None


def journald_record(line: str) -> tuple[dt.datetime | None, str, str, int | None, str] | None:
    """(time, host, program, pid, message) of one ``journalctl -o json`` line."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict):
        return None
    message = rec.get("MESSAGE")
    if isinstance(message, list):     # journald writes non-UTF-8 messages as byte arrays
        try:
            message = bytes(message).decode("utf-8", "backslashreplace")
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    pid_text = rec.get("_PID") or rec.get("SYSLOG_PID")
    # isdecimal, not isdigit ("²" is a digit int() refuses); no pid has 20 digits, and int() of
    # thousands is an error that would lose the whole file
    pid = (int(pid_text) if isinstance(pid_text, str) and pid_text.isdecimal() and len(pid_text) < 20
           else None)
    program = rec.get("SYSLOG_IDENTIFIER") or rec.get("_COMM") or ""
    return (journald_realtime(rec.get("__REALTIME_TIMESTAMP")), str(rec.get("_HOSTNAME") or ""),
            str(program), pid, message)


def open_log(path: Path) -> io.BufferedIOBase:
    """A log's bytes, decompressed on the fly when it is gzip'd (rotated ``.gz`` logs), after
    a UTF-8 byte-order mark if it starts with one (Windows tools write them): left in, it
    would make the first line unreadable to every line grammar."""
    fh = _open_raw(path)
    try:
        if fh.read(3) != b"\xef\xbb\xbf":
            fh.seek(0)
        return fh
    except (EOFError, OSError, zlib.error):
        # A gzip stream broken in its first bytes: reopened, so the reader meets the damage
        # where it reports damage.
        fh.close()
        return gzip.open(path, "rb")


def _open_raw(path: Path) -> io.BufferedIOBase:
    fh = path.open("rb")
    if fh.read(2) == b"\x1f\x8b":
        fh.close()
        return gzip.open(path, "rb")
    fh.seek(0)
    return fh



class Blocks:
    """Whole-line blocks of a byte stream, for both passes over a log.

    A line longer than ``max_line`` keeps only its first ``max_line`` bytes (so one hostile
    line cannot fill memory); ``cut_at`` holds the numbers of the lines cut here (the first
    10,000 of them; ``cut_lines`` counts all).
    A compressed stream that ends early stops the iteration and sets ``truncated``.
    """

    def __init__(self, fh: io.BufferedIOBase, max_line: int = MAX_LINE, block: int = BLOCK) -> None:
        self.fh = fh
        self.max_line = max_line
        self.block = block
        self.cut_lines = 0
        self.cut_at: set[int] = set()
        self.truncated: str | None = None
        # NUL bytes dropped (zero-filled regions: a crash, or a truncation under a writer),
        # how many separate runs, and the line the first one came before.
        self.zero_bytes = self.zero_regions = self.zero_first_line = 0
        self._held = b""            # NULs that ended the last read, too few yet for a hole
        self._in_hole = False       # the last read ended inside a hole it dropped

    def _read(self) -> bytes:
        """The next ``block`` bytes; a damaged stream gives what came before the damage."""
        parts: list[bytes] = []
        size = 0
        # read1, not read: a gzip read that hits a truncated end would drop what it had
        while size < self.block and self.truncated is None:
            try:
                piece = self.fh.read1(self.block - size)
            except (EOFError, OSError, zlib.error) as exc:
                self.truncated = f"{type(exc).__name__}: {exc}"
                break
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
        return b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:
        carry = b""
        skipping = False             # in the tail of a line already cut
        lineno = 0                   # lines handed out so far
        while chunk := self._read():
            if self._held or self._in_hole or b"\x00" in chunk:
                # Before the line logic: a zero-filled region is not one endless line.
                chunk = self._drop_zeros(chunk, lineno)
                if not chunk:
                    continue
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                chunk, skipping = chunk[nl:], False
            buf = carry + chunk
            end = buf.rfind(b"\n")
            body, carry = (buf[:end], buf[end + 1:]) if end >= 0 else (None, buf)
            if len(carry) > self.max_line:
                carry, skipping = carry[:self.max_line], True
                self.cut_lines += 1
                if len(self.cut_at) < 10_000:
                    self.cut_at.add(lineno + 1 if body is None else lineno + body.count(b"\n") + 2)
            if body is not None:
                lineno += body.count(b"\n") + 1
                yield body
        carry += self._held          # a few NULs at the very end: damage, left to the reader
        if carry:
            yield carry

    def _drop_zeros(self, chunk: bytes, lineno: int) -> bytes:
        """``chunk`` without its zero-filled runs, counted; ``lineno`` whole lines come before
        it. A hole may span reads: NULs that end a read wait for the next one (too few yet to
        call a hole), and a read that ends inside a hole drops the NULs the next one starts
        with. A NUL or two inside a line are left to the reader (damage, not a hole)."""
        if self._held:
            chunk, self._held = self._held + chunk, b""
        if self._in_hole:
            rest = chunk.lstrip(b"\x00")
            self.zero_bytes += len(chunk) - len(rest)
            chunk = rest
            if not chunk:
                return b""
        tail = len(chunk) - len(chunk.rstrip(b"\x00"))
        if 0 < tail < ZERO_RUN_MIN:
            self._held, chunk = chunk[-tail:], chunk[:-tail]
        self._in_hole = tail >= ZERO_RUN_MIN
        first = ZERO_RUN.search(chunk)
        if first is None:
            return chunk
        kept, runs = ZERO_RUN.subn(b"", chunk)
        self.zero_bytes += len(chunk) - len(kept)
        self.zero_regions += runs
        if not self.zero_first_line:
            self.zero_first_line = lineno + chunk[:first.start()].count(b"\n") + 1
        return kept
