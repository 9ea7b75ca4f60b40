"""Windows events exported as XML (``wevtutil qe LOG /f:xml``, ``Get-WinEvent … ToXml()``).

The export is a run of ``<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event">``
elements, with or without an ``<Events>`` root. We stream the file, cut it at ``<Event …>`` /
``</Event>`` and parse each event on its own with expat, so one broken event costs only
itself, memory stays bounded by the largest event, and the raw text of each event is at
hand for ``raw``. Any DOCTYPE or ENTITY declaration refuses the whole file: a Windows export
never has one, and entity expansion is how an "XML bomb" eats memory.

Encoding: BOM (UTF-8/UTF-16, as PowerShell redirection writes), the XML declaration, or
UTF-8; undecodable bytes become ``\\xNN`` escapes rather than failing the file.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from xml.parsers import expat

from deminer.sources import windows_events as we
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, bom_encoding, host_id

EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"
READ_BYTES = 1 << 20
MAX_EVENT_CHARS = 4 << 20          # far above any real event (a 4104 block is ≤ 32 K chars)
_EVENT_START = re.compile(r"<Event[\s>]")
_EVENT_END = "</Event>"
_DTD_MARKS = ("<!DOCTYPE", "<!ENTITY")
_ERRORS_SHOWN = 3


class XmlRefused(ValueError):
    """XML we will not parse (a DTD or entity declaration) or that is not well-formed."""


def _refuse_dtd(*_: Any) -> None:
    raise XmlRefused("DTD/ENTITY declarations are refused (entity expansion attack?)")


def safe_expat() -> expat.XMLParserType:
    """An expat parser that raises ``XmlRefused`` on any DOCTYPE or entity declaration."""
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


_XML_DECL = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")


def parse_task_xml(content: str) -> tuple[list[str], str | None]:
    """The ``<Exec>`` command lines and the principal's ``<UserId>`` of a task definition."""
    parser = safe_expat()
    path: list[str] = []
    actions: list[str] = []
    exec_parts: dict[str, str] = {}
    run_as: list[str] = []
    buf: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        path.append(name.rpartition(":")[2])
        buf.clear()

    def end(name: str) -> None:
        local = path.pop()
        value = "".join(buf).strip()
        buf.clear()
        if local in ("Command", "Arguments") and path and path[-1] == "Exec":
            exec_parts[local] = value
        elif local == "Exec":
            line = " ".join(v for v in (exec_parts.get("Command"), exec_parts.get("Arguments")) if v)
            if line:
                actions.append(line)
            exec_parts.clear()
        elif local == "UserId" and path and path[-1] == "Principal":
            run_as.append(value)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = buf.append
    try:
        # The declaration says UTF-16 but we hold decoded text: drop it so expat takes str.
        parser.Parse(_XML_DECL.sub("", content, count=1), True)
    except expat.ExpatError as exc:
        raise XmlRefused(f"task XML not well-formed: {exc}") from exc
    return actions, (run_as[0] if run_as else None)


def _encoding(head: bytes) -> tuple[str, int]:
    """(codec, BOM length) for an export."""
    found = bom_encoding(head, xml=True)
    if found:
        return found
    declared = re.match(rb"\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]{1,40})", head)
    if declared:
        try:
            return codecs.lookup(declared.group(1).decode("ascii")).name, 0
        except LookupError:
            pass
    return "utf-8", 0


def sniff(path: Path, head: bytes) -> bool:
    name, bom = _encoding(head)
    if name == "utf-8" and b"\x00" in head:
        return False
    text = head[bom:].decode(name, "replace")
    return EVENT_NS in text and _EVENT_START.search(text) is not None


def _split(fh: BinaryIO, decoder: codecs.IncrementalDecoder) -> Iterator[tuple[int, str | None, str]]:
    """(character offset, event text or None, error) for each ``<Event>`` in the stream."""
    buf, base, eof = "", 0, False
    while not eof:
        chunk = fh.read(READ_BYTES)
        eof = not chunk
        buf += decoder.decode(chunk, final=eof)
        pos = 0
        keep = len(buf)
        while True:
            m = _EVENT_START.search(buf, pos)
            if m is None:
                _check_gap(buf[pos:])
                # Keep a tail so a marker cut by the read boundary is seen next round.
                keep = len(buf) if eof else max(pos, len(buf) - 16)
                break
            _check_gap(buf[pos:m.start()])
            end = buf.find(_EVENT_END, m.end())
            if end < 0:
                if len(buf) - m.start() > MAX_EVENT_CHARS:
                    yield base + m.start(), None, f"event longer than {MAX_EVENT_CHARS} characters"
                    pos = m.start() + 1
                    continue
                if eof:
                    yield base + m.start(), None, "file ends inside this event (truncated?)"
                    keep = len(buf)
                else:
                    keep = m.start()
                break
            yield base + m.start(), buf[m.start(): end + len(_EVENT_END)], ""
            pos = end + len(_EVENT_END)
        buf = buf[keep:]
        base += keep


def _check_gap(text: str) -> None:
    for mark in _DTD_MARKS:
        if mark in text:
            raise SourceError(f"refused: the XML declares a DTD/entities ({mark}); Windows exports "
                              "never do and entity expansion can exhaust memory")


_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_BAD_REFS = re.compile(r"&#(?:[xX]0*(1?[0-9a-fA-F])|0*([0-9]{1,2}));")


def _sanitize(text: str) -> str:
    """Control characters XML 1.0 forbids, raw or as ``&#N;``, shown as ``\\xNN`` text."""
    def ref(m: re.Match[str]) -> str:
        code = int(m.group(1), 16) if m.group(1) is not None else int(m.group(2))
        if code in (9, 10, 13) or code > 31:
            return m.group(0)
        return f"\\x{code:02x}"
    return _BAD_REFS.sub(ref, _BAD_CHARS.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text))


class _Event:
    """expat callbacks that collect System values and EventData/UserData fields."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.buf: list[str] = []
        self.system: dict[str, str | None] = {}
        self.fields: dict[str, Any] = {}
        self.data_name: str | None = None
        self.params = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(":")[2]
        path = self.path
        path.append(local)
        self.buf.clear()
        if len(path) == 3:
            section = path[1]
            if section == "System":
                if local == "Provider":
                    self.system["provider"] = attrs.get("Name")
                elif local == "TimeCreated":
                    self.system["time"] = attrs.get("SystemTime")
                elif local == "Security":
                    self.system["user_sid"] = attrs.get("UserID")
            elif section == "EventData" and local == "Data":
                self.data_name = attrs.get("Name")
            elif section == "UserData":
                self.fields["xml_name"] = local

    def end(self, name: str) -> None:
        local = self.path.pop()
        path = self.path
        value = "".join(self.buf)
        self.buf.clear()
        if len(path) == 2:
            section = path[1]
            if section == "System":
                self.system[local] = value.strip()
            elif section == "EventData":
                if local == "Data" and not self.data_name:
                    self.params += 1
                    key = f"param{self.params}"
                else:
                    key = self.data_name if local == "Data" and self.data_name else local
                self.fields[key] = we.cap(value) if value else None
                self.data_name = None
        elif len(path) >= 3 and path[1] == "UserData":
            self.fields.setdefault(local, we.cap(value) if value else None)


def _run(text: str) -> tuple[dict[str, str | None], dict[str, Any]]:
    event = _Event()
    parser = safe_expat()
    parser.StartElementHandler = event.start
    parser.EndElementHandler = event.end
    parser.CharacterDataHandler = event.buf.append
    parser.Parse(text, True)
    return event.system, event.fields


def parse_event(text: str) -> tuple[dict[str, str | None], dict[str, Any]]:
    """(System values, fields) of one ``<Event>`` element; XmlRefused if it cannot be read."""
    try:
        return _run(text)
    except expat.ExpatError as exc:
        clean = _sanitize(text)
        if clean == text:
            raise XmlRefused(f"not well-formed XML: {exc}") from exc
    try:
        # Retry with forbidden control characters escaped: the rest of the event is fine.
        return _run(clean)
    except expat.ExpatError as exc:
        raise XmlRefused(f"not well-formed XML: {exc}") from exc


def parse(ctx: SourceContext) -> Iterator[Batch]:
    batcher = Batcher()
    forced_host = host_id(ctx.host)
    skipped = 0
    first_errors: list[str] = []
    with ctx.path.open("rb") as fh:
        name, bom = _encoding(fh.read(4096))
        fh.seek(bom)
        decoder = codecs.getincrementaldecoder(name)(errors="backslashreplace")
        for offset, text, error in _split(fh, decoder):
            if text is not None:
                try:
                    system, fields = parse_event(text)
                except XmlRefused as exc:
                    error = str(exc)
            if error or text is None:
                skipped += 1
                if len(first_errors) < _ERRORS_SHOWN:
                    first_errors.append(f"event at character {offset}: {error}")
                continue
            record_id = we.to_int(system.get("EventRecordID"))
            row = we.event_row(
                channel=system.get("Channel"), provider=system.get("provider"),
                event_id=we.to_event_id(system.get("EventID")), record_id=record_id,
                computer=system.get("Computer"), ts=we.parse_time(system.get("time")),
                user_sid=system.get("user_sid"), fields=fields, source=ctx.display,
                host=forced_host, raw=text,
            )
            full = batcher.add("events", row)
            if full:
                yield full
    yield from batcher.flush()
    if skipped:
        yield "errors", [{"host": forced_host, "ts": dt.datetime.now(dt.UTC), "source": ctx.display,
                          "stage": "ingest",
                          "message": f"{skipped} events skipped; first: " + " | ".join(first_errors)}]


SOURCE = Source("winevent_xml", sniff, parse)
