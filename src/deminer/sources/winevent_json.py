"""Windows events as JSON lines: Winlogbeat/Elastic Agent (ECS) and NXLog-style flat records.

Two layouts are common in shipped logs and public datasets (e.g. OTRF Security-Datasets):

* Winlogbeat / Elastic Agent: ``winlog.channel``, ``winlog.provider_name``, ``winlog.event_id``,
  ``winlog.record_id``, ``winlog.computer_name`` (or ``host.name``), ``winlog.event_data.*``,
  ``winlog.user_data.*`` and ``@timestamp`` (the event's own time, UTC).
* NXLog ``im_msvistalog`` and look-alikes: everything at top level — ``EventID``, ``Channel``,
  ``SourceName``, ``Hostname``, ``RecordNumber``, ``TimeCreated`` or ``EventTime`` — with
  the EventData fields beside them. ``EventTime`` is the collector's *local* time without
  a zone; when ``EventReceivedTime`` (local) and ``@timestamp`` (UTC, stamped on receipt)
  are both present their difference, rounded to 15 minutes, is the zone offset we apply.

A ``.zip`` holding such files (how the datasets ship) is read member by member, streaming,
without extracting. Lines that are not JSON, not a Windows event or absurdly long are
skipped and summed into one ``errors`` row per file; ``source_line`` is the line number.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from deminer.sources import windows_events as we
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id

MAX_LINE = 8 << 20
_ERRORS_SHOWN = 3
_ZIP_MAGIC = b"PK\x03\x04"
_SNIFF = re.compile(rb'"(?:winlog"\s*:\s*\{|winlog\.event_id"\s*:|EventID"\s*:)')
_QUARTER = dt.timedelta(minutes=15)

# NXLog/Logstash envelope: facts about the record or its transport, not EventData fields.
_ENVELOPE = frozenset({
    "EventTime", "EventReceivedTime", "Hostname", "SourceName", "ProviderGuid", "Channel",
    "EventID", "RecordNumber", "Message", "Keywords", "EventType", "EventTypeOrignal",
    "Severity", "SeverityValue", "Version", "Task", "OpcodeValue", "Opcode", "Category",
    "Level", "ExecutionProcessID", "ThreadID", "ActivityID", "RelatedActivityID",
    "SourceModuleName", "SourceModuleType", "@version", "@timestamp", "host", "port", "tags",
    "TimeCreated", "ERROR_EVT_UNRESOLVED", "UserID",
})


def _looks_like(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head = head.decode("utf-16", "replace").encode("utf-8")
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and _SNIFF.search(head) is not None


def sniff(path: Path, head: bytes) -> bool:
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                return any(_member_head(zf, info) is not None for info in zf.infolist()[:64])
        except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, ValueError, EOFError):
            return False
    return _looks_like(head)


def _member_head(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    """The first bytes of a member that holds Windows JSON lines, else None."""
    if info.is_dir() or info.flag_bits & 0x1:       # encrypted members are not ours to guess
        return None
    with zf.open(info) as fh:
        head = fh.read(4096)
    return head if _looks_like(head) else None


def _is_utf16(head: bytes) -> bool:
    return head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


def _lines(raw: IO[bytes], utf16: bool) -> Iterator[tuple[int, bytes | str | None]]:
    """(line number, line) with ``None`` for a line over ``MAX_LINE`` (skipped, not held)."""
    wrapper = io.TextIOWrapper(raw, encoding="utf-16", errors="backslashreplace") if utf16 else None
    stream: IO[Any] = wrapper or raw
    newline: str | bytes = "\n" if utf16 else b"\n"
    number = 0
    try:
        while True:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE:
                while line and line[-1:] != newline:      # drain the rest of the long line
                    line = stream.readline(MAX_LINE)
                yield number, None
                continue
            yield number, line
    finally:
        if wrapper is not None:
            wrapper.detach()                               # the caller closes the file


def _nxlog_time(obj: dict[str, Any]) -> dt.datetime | None:
    for key in ("TimeCreated", "SystemTime"):
        stamp = we.parse_time(obj.get(key))
        if stamp:
            return stamp
    utc = we.parse_time(obj.get("@timestamp"))
    local = _local(obj.get("EventTime"))
    if local and local.tzinfo:                        # an exporter that did write the zone
        return we.parse_time(obj.get("EventTime"))
    received = _local(obj.get("EventReceivedTime"))
    if local and received and utc and not received.tzinfo:
        offset = utc - received
        offset = round(offset / _QUARTER) * _QUARTER
        if abs(offset) <= dt.timedelta(hours=14):
            return local + offset
    return utc or local


def _local(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _capped(value: Any) -> Any:
    return value[: we.VALUE_CAP] if isinstance(value, str) and len(value) > we.VALUE_CAP else value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"winlog.event_data.User": x}`` → ``{"winlog": {"event_data": {"User": x}}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".", 2) if key.startswith("winlog.event_data.") or key.startswith(
            "winlog.user_data.") else key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def event_parts(obj: Any) -> dict[str, Any] | None:
    """Keyword arguments for ``event_row`` (bar source/host/raw), or None if not an event."""
    if not isinstance(obj, dict):
        return None
    if "winlog" not in obj and "winlog.event_id" in obj:
        obj = _nest(obj)            # ECS with dotted keys, as some exporters flatten it
    winlog = obj.get("winlog")
    if isinstance(winlog, dict):
        fields: dict[str, Any] = {}
        for key in ("event_data", "user_data"):
            part = winlog.get(key)
            if isinstance(part, dict):
                fields.update((k, _capped(v)) for k, v in part.items())
        event, hostinfo, user = _dict(obj.get("event")), _dict(obj.get("host")), _dict(winlog.get("user"))
        event_id = we.to_event_id(winlog.get("event_id", event.get("code")))
        return {"channel": winlog.get("channel"),
                "provider": winlog.get("provider_name") or event.get("provider"),
                "event_id": event_id, "record_id": we.to_int(winlog.get("record_id")),
                "computer": winlog.get("computer_name") or hostinfo.get("name"),
                "ts": we.parse_time(obj.get("@timestamp")), "user_sid": user.get("identifier"),
                "fields": fields}
    if "EventID" not in obj:
        return None
    return {"channel": obj.get("Channel"), "provider": obj.get("SourceName") or obj.get("ProviderName"),
            "event_id": we.to_event_id(obj.get("EventID")),
            "record_id": we.to_int(obj.get("RecordNumber", obj.get("EventRecordID"))),
            "computer": obj.get("Hostname") or obj.get("Computer"), "ts": _nxlog_time(obj),
            "user_sid": obj.get("UserID"),
            "fields": {k: _capped(v) for k, v in obj.items() if k not in _ENVELOPE}}


class _Skips:
    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.count += 1
        if len(self.first) < _ERRORS_SHOWN:
            self.first.append(f"{where}: {why}")


def _parse_stream(raw: IO[bytes], utf16: bool, source: str, host: str | None, batcher: Batcher,
                  skips: _Skips) -> Iterator[Batch]:
    loads = orjson.loads
    for number, line in _lines(raw, utf16):
        if line is None:
            skips.add(f"{source} line {number}", f"longer than {MAX_LINE} bytes")
            continue
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except orjson.JSONDecodeError as exc:
            if isinstance(line, bytes):
                try:                                  # non-UTF-8 text: keep it, marked
                    obj = loads(line.decode("utf-8", "replace"))
                except orjson.JSONDecodeError:
                    skips.add(f"{source} line {number}", f"not JSON ({exc})")
                    continue
            else:
                skips.add(f"{source} line {number}", f"not JSON ({exc})")
                continue
        parts = event_parts(obj)
        if parts is None:
            skips.add(f"{source} line {number}", "not a Windows event (no EventID or winlog)")
            continue
        text = line if isinstance(line, str) else line[: we.RAW_CAP * 4].decode("utf-8", "backslashreplace")
        row = we.event_row(**parts, source=source, host=host, raw=text.rstrip("\r\n"))
        row["source_line"] = number
        full = batcher.add("events", row)
        if full:
            yield full


def parse(ctx: SourceContext) -> Iterator[Batch]:
    batcher = Batcher()
    skips = _Skips()
    host = host_id(ctx.host)
    with ctx.path.open("rb") as fh:
        head = fh.read(4)
    if head == _ZIP_MAGIC:
        try:
            zf = zipfile.ZipFile(ctx.path)
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise SourceError(f"unreadable zip archive: {exc}") from exc
        with zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = f"{ctx.display}!{info.filename}"
                try:
                    member_head = _member_head(zf, info)
                    if member_head is None:
                        skips.add(name, "member is not Windows JSON lines")
                        continue
                    with zf.open(info) as member:
                        yield from _parse_stream(member, _is_utf16(member_head), name, host,
                                                 batcher, skips)
                except (zipfile.BadZipFile, zlib.error, RuntimeError, OSError, EOFError, ValueError) as exc:
                    skips.add(name, f"unreadable member ({type(exc).__name__}: {exc})")
    else:
        with ctx.path.open("rb") as fh:
            yield from _parse_stream(fh, _is_utf16(head), ctx.display, host, batcher, skips)
    yield from batcher.flush()
    if skips.count:
        yield "errors", [{"host": host, "ts": dt.datetime.now(dt.UTC), "source": ctx.display,
                          "stage": "ingest", "message": f"{skips.count} lines or members skipped; "
                          "first: " + " | ".join(skips.first)}]


SOURCE = Source("winevent_json", sniff, parse)
