"""EVTX event log files (``ElfFile`` format) into ``events`` rows, via pyevtx-rs.

The ``evtx`` package parses the binary XML in Rust and hands each record over as compact
JSON; we ``orjson.loads`` it once, flatten EventData/UserData into one dict and let
``windows_events.event_row`` map it. A bad chunk or record does not stop the file: the
parser raises per chunk/record and carries on, and we sum those into ONE ``errors`` row per
file. A copy cut short inside a chunk is read as if zero-padded, so the records before the
cut survive, and the errors row says where it ends. A file that is not EVTX at all, or too
short to hold the file header, is a ``SourceError``.

Record ids (``EventRecordID``) grow by one per record in a channel, so holes in them are
records the log no longer has (cleared, overwritten, lost chunks, filtered export). Those
holes are reported per channel, naming its hosts, as ``errors`` rows with stage
``completeness`` (evidence-completeness rules can read them there).
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from deminer.sources import windows_events as we
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id

MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
HEADER_BLOCK = 4096
CHUNK_SIZE = 65536
_ERRORS_SHOWN = 3


def sniff(path: Path, head: bytes) -> bool:
    # The name alone is enough to claim a file, so a broken ``.evtx`` gets a clear error
    # from this source instead of "not a recognised evidence format".
    return head.startswith(MAGIC) or path.suffix.lower() == ".evtx"


def _header(path: Path) -> tuple[int, int]:
    """(file size, chunk count from the header); SourceError if this is not EVTX."""
    with path.open("rb") as fh:
        head = fh.read(HEADER_BLOCK)
        size = fh.seek(0, 2)
    if not head.startswith(MAGIC):
        raise SourceError(f"not an EVTX file: no 'ElfFile' signature (starts with {head[:8]!r})")
    if len(head) < HEADER_BLOCK:
        raise SourceError(f"truncated EVTX file: {size} bytes, shorter than the "
                          f"{HEADER_BLOCK}-byte file header")
    (chunks,) = struct.unpack_from("<H", head, 42)
    return size, chunks


class _Padded(io.RawIOBase):
    """A file cut inside a chunk, read as if zero-filled to the chunk's end.

    pyevtx skips a partial last chunk entirely; padded, it yields the records written
    before the cut and stops at the zeros.
    """

    def __init__(self, fh: BinaryIO, size: int, padded: int) -> None:
        super().__init__()
        self.fh, self.size, self.padded, self.pos = fh, size, padded, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.padded}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), max(0, self.padded - self.pos))
        real = 0
        if n and self.pos < self.size:
            self.fh.seek(self.pos)
            data = self.fh.read(min(n, self.size - self.pos))
            real = len(data)
            buffer[:real] = data
        buffer[real:n] = bytes(n - real)
        self.pos += n
        return n


def _open(path: Path, size: int) -> tuple[Any, BinaryIO | None]:
    """A PyEvtxParser over ``path`` and the file object to close afterwards, if any."""
    try:
        import evtx  # optional dependency: only needed when an EVTX file is ingested
    except ImportError as exc:
        raise SourceError("reading EVTX needs the 'evtx' package (pip install evtx)") from exc

    tail = (size - HEADER_BLOCK) % CHUNK_SIZE
    try:
        str(path).encode("utf-8")
        plain = not tail
    except UnicodeEncodeError:
        plain = False       # Rust wants UTF-8 paths; undecodable names go through Python
    if plain:
        return evtx.PyEvtxParser(str(path), indent=False), None
    fh = path.open("rb")
    try:
        stream: Any = fh
        if tail:
            stream = _Padded(fh, _complete_end(fh, size - tail, size), size + CHUNK_SIZE - tail)
        return evtx.PyEvtxParser(stream, indent=False), fh
    except BaseException:
        fh.close()
        raise


def _complete_end(fh: BinaryIO, chunk_start: int, size: int) -> int:
    """End of the last whole record in the cut chunk; a record the cut split is not kept."""
    fh.seek(chunk_start)
    chunk = fh.read(size - chunk_start)
    offset = 512                                   # records follow the 512-byte chunk header
    if not chunk.startswith(CHUNK_MAGIC) or len(chunk) < offset:
        return chunk_start
    while offset + 24 <= len(chunk) and chunk[offset:offset + 4] == b"**\x00\x00":
        (length,) = struct.unpack_from("<I", chunk, offset + 4)
        if length < 24 or offset + length > len(chunk):
            break
        offset += length
    return chunk_start + offset


def _attr(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        attrs = node.get("#attributes")
        if isinstance(attrs, dict):
            return attrs.get(name)
    return None


def _value(value: Any) -> Any:
    if isinstance(value, dict) and "#text" in value:   # a <Data> that also has attributes
        value = value["#text"]
    if isinstance(value, str) and len(value) > we.VALUE_CAP:
        return value[: we.VALUE_CAP]
    return value


def flatten(event: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    """EventData (named, or unnamed as ``param1..N`` like Winlogbeat) and UserData fields.

    ``plain`` says the record text has no ``#text`` node and no over-long value, so a
    named-only EventData can be taken over as it is: the common case, and the hot path.
    """
    data = event.get("EventData")
    if plain and type(data) is dict and "Data" not in data and "UserData" not in event:
        data.pop("#attributes", None)
        return data
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "#attributes":
                continue
            if key == "Data":                      # unnamed <Data> elements, in order
                texts = value.get("#text") if isinstance(value, dict) else value
                if isinstance(texts, list):
                    for i, t in enumerate(texts, 1):
                        out[f"param{i}"] = _value(t)
                elif texts is not None:
                    out["param1"] = _value(texts)
                continue
            out[key] = _value(value)
    elif data is not None:
        out["EventData"] = _value(data)
    user = event.get("UserData")
    if isinstance(user, dict):
        for name, inner in user.items():
            if name == "#attributes":
                continue
            out["xml_name"] = name                  # e.g. LogFileCleared, Operation_ClientFailure
            if isinstance(inner, dict):
                for key, value in inner.items():
                    if key != "#attributes":
                        out[key] = _value(value)
            elif inner is not None:
                out[name] = _value(inner)
    return out


class _Failures:
    """Parse errors of one file: counted, the first few kept for the errors row."""

    def __init__(self) -> None:
        self.count = self.chunks = 0
        self.first: list[str] = []

    def add(self, message: str) -> None:
        self.count += 1
        self.chunks += "chunk" in message
        if len(self.first) < _ERRORS_SHOWN:
            self.first.append(message[:300])


def _records(iterator: Iterator[dict[str, Any]], failures: _Failures, limit: int) -> Iterator[dict[str, Any]]:
    """pyevtx's records; its per-chunk/record RuntimeErrors are counted and skipped."""
    while True:
        try:
            yield from iterator        # the iterator carries on after raising
            return
        except RuntimeError as exc:
            failures.add(str(exc))
            if failures.count > limit:  # more errors than there can be records: no progress
                return


_fromiso = dt.datetime.fromisoformat


def record_row(record: dict[str, Any], source: str, host: str | None) -> dict[str, Any]:
    """The ``events`` row for one pyevtx JSON record; ValueError if the JSON is unusable."""
    text = record["data"]
    try:
        event = orjson.loads(text)["Event"]
        system = event["System"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"record {record.get('event_record_id')}: unusable JSON ({exc})") from exc
    # Direct subscripts for the usual layout; ``_attr`` for anything unusual.
    try:
        provider = system["Provider"]["#attributes"]["Name"]
    except (KeyError, TypeError):
        provider = _attr(system.get("Provider"), "Name")
    try:
        stamp = system["TimeCreated"]["#attributes"]["SystemTime"]
        ts = _fromiso(stamp[:-1]) if stamp[-1] == "Z" else we.parse_time(stamp)
    except (KeyError, TypeError, ValueError, IndexError):
        ts = None
    if ts is None:                                  # fall back to the record header's time
        ts = we.parse_time(str(record.get("timestamp", "")).removesuffix(" UTC"))
    event_id = system.get("EventID")
    if event_id.__class__ is not int:              # <EventID Qualifiers="16384">7045</EventID>
        event_id = we.to_event_id(event_id.get("#text") if isinstance(event_id, dict) else event_id)
    record_id = system.get("EventRecordID")
    if record_id.__class__ is not int:
        record_id = we.to_int(record_id)
    security = system.get("Security")
    return we.event_row(
        channel=system.get("Channel"), provider=provider, event_id=event_id, record_id=record_id,
        computer=system.get("Computer"), ts=ts,
        user_sid=_attr(security, "UserID") if security else None,
        fields=flatten(event, len(text) <= we.VALUE_CAP and '"#text"' not in text),
        # No raw copy: ``data`` holds every field and (source, record_id) finds the record
        # again; a second copy of each record doubled the case's size and ingest memory.
        source=source, host=host, raw=None,
    )


def parse(ctx: SourceContext) -> Iterator[Batch]:
    size, header_chunks = _header(ctx.path)
    try:
        parser, fh = _open(ctx.path, size)
    except (OSError, RuntimeError) as exc:
        raise SourceError(f"cannot open as EVTX: {exc}") from exc
    batcher = Batcher()
    tracker = Completeness()
    failures = _Failures()
    host, source = host_id(ctx.host), ctx.display
    records = 0
    try:
        for record in _records(parser.records_json(), failures, size // 64 + 100):
            try:
                row = record_row(record, source, host)
            except ValueError as exc:
                failures.add(str(exc))
                continue
            records += 1
            tracker.add(row["host"], row["channel"], row["record_id"])
            full = batcher.add("events", row)
            if full:
                yield full
    finally:
        if fh is not None:
            fh.close()
    yield from batcher.flush()
    problems = _problems(size, header_chunks, records, failures)
    now = dt.datetime.now(dt.UTC)
    errors = []
    if problems:
        errors.append({"host": host, "ts": now, "source": source, "stage": "ingest",
                       "message": problems})
    for hosts, channel, first, last, count, missing in tracker.gaps():
        errors.append({"host": hosts[0] if len(hosts) == 1 else host, "ts": now, "source": source,
                       "stage": "completeness",
                       "message": completeness_message(channel, hosts, first, last, count, missing)})
    if errors:
        yield "errors", errors


def _problems(size: int, header_chunks: int, records: int, failures: _Failures) -> str | None:
    """One sentence for everything that went wrong in a file, or None."""
    notes = []
    body = size - HEADER_BLOCK
    if body % CHUNK_SIZE:
        # pyevtx silently drops a partial last chunk: say so, it means the copy was cut short.
        notes.append(f"file ends {body % CHUNK_SIZE} bytes into chunk {body // CHUNK_SIZE} "
                     "(truncated copy?): records after the cut are lost")
    elif body // CHUNK_SIZE < header_chunks:
        notes.append(f"header lists {header_chunks} chunks but the file holds {body // CHUNK_SIZE}")
    if failures.count:
        kinds = f"{failures.chunks} chunk, {failures.count - failures.chunks} record"
        notes.append(f"{failures.count} parse errors ({kinds}) skipped; first: " + " | ".join(failures.first))
    if not notes:
        return None
    return f"{records} records read; " + "; ".join(notes)


class Completeness:
    """Record-id coverage per channel, to say which records a log no longer holds.

    Ids are numbered per log file, not per computer name (a renamed machine keeps
    counting), so gaps are computed over all hosts of a channel. Records arrive mostly in
    order: runs are extended in place and memory grows with the number of gaps, not records.
    """

    def __init__(self) -> None:
        self.runs: dict[tuple[str | None, str | None], list[list[int]]] = {}

    def add(self, host: str | None, channel: str | None, record_id: int | None) -> None:
        if record_id is None:
            return
        runs = self.runs.get((host, channel))
        if runs is None:
            self.runs[(host, channel)] = [[record_id, record_id]]
            return
        last = runs[-1]
        if record_id == last[1] + 1:
            last[1] = record_id
        elif not last[0] <= record_id <= last[1]:
            runs.append([record_id, record_id])
            if len(runs) > 100_000:
                runs[:] = _merge(runs)

    def gaps(self) -> Iterator[tuple[list[str], str | None, int, int, int, list[tuple[int, int]]]]:
        """(hosts, channel, first, last, distinct ids, missing ranges) per channel with gaps."""
        channels: dict[str | None, list[str | None]] = {}
        for host, channel in self.runs:
            channels.setdefault(channel, []).append(host)
        for channel in sorted(channels, key=str):
            hosts = channels[channel]
            merged = _merge([run for h in hosts for run in self.runs[(h, channel)]])
            missing = [(a[1] + 1, b[0] - 1) for a, b in itertools.pairwise(merged)]
            if missing:
                present = sum(end - start + 1 for start, end in merged)
                names = sorted(h for h in hosts if h)
                yield names, channel, merged[0][0], merged[-1][1], present, missing


def _merge(runs: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for start, end in sorted(runs):
        if out and start <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def completeness_message(channel: str | None, hosts: list[str], first: int, last: int,
                         records: int, missing: list[tuple[int, int]], shown: int = 10) -> str:
    """``records 120–340 missing from Security on host x`` with totals, listing ≤ ``shown``."""
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in missing[:shown]]
    more = f" and {len(missing) - shown} more ranges" if len(missing) > shown else ""
    lost = sum(b - a + 1 for a, b in missing)
    where = f"host {hosts[0]}" if len(hosts) == 1 else f"hosts {', '.join(hosts) or '?'}"
    return (f"records {', '.join(parts)}{more} missing from {channel or '?'} on {where} "
            f"({lost} of the ids {first}–{last} absent, {records} present)")


SOURCE = Source("evtx", sniff, parse)
