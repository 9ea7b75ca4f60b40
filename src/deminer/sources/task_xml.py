"""Scheduled tasks: Task Scheduler XML files (``C:\\Windows\\System32\\Tasks\\…``) → ``persistence``.

A task file is one ``<Task xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">``
document, written by Windows as UTF-16 LE with a BOM (exports and hand-made copies are often
UTF-8). Each action becomes one ``persistence`` row, kind ``task``:

    name      the task path: ``<RegistrationInfo><URI>``, else the file path below ``…\\Tasks\\``
    command   Exec: ``Command Arguments``; COM handler: ``{CLSID} Data``; then, so one column
              tells what runs and when, a suffix ``[triggers: TimeTrigger every PT1H; BootTrigger]``
              and ``[hidden]`` for ``<Settings><Hidden>true`` (the style systemd rows use for
              ``[Restart=…]``)
    user      ``<Principal><UserId>`` (else ``<GroupId>``)
    mtime/ts  ``<RegistrationInfo><Date>``; a date without offset is the host's local time and is
              stored as written (Windows writes it so), one with ``Z``/offset is turned to UTC
    enabled   ``<Settings><Enabled>`` (the schema default is true)
    source_line  the line of the ``<Exec>``/``<ComHandler>`` element

The parser is expat with any DOCTYPE/ENTITY refused before it is read (``winevent_xml.safe_expat``),
and files are capped in size: a task file is a few KiB, entity expansion is how an XML bomb
eats memory. ``decode_actions`` reads the same actions from the binary ``Actions`` value the
Task Scheduler caches in the registry (``TaskCache\\Tasks\\{GUID}``), for the hive source.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from xml.parsers import expat

from deminer.case import to_utc
from deminer.sources.base import Batch, Source, SourceContext, SourceError, bom_encoding, host_id
from deminer.sources.winevent_xml import XmlRefused, safe_expat

TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
MAX_TASK_BYTES = 4 << 20          # real definitions are 2-20 KiB
VALUE_CAP = 32768                 # characters kept of one command or argument string
_TRIGGERS = ("TimeTrigger", "CalendarTrigger", "BootTrigger", "LogonTrigger", "IdleTrigger",
             "EventTrigger", "RegistrationTrigger", "SessionStateChangeTrigger", "WnfStateChangeTrigger")
_DTD = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
_DECL = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")


def _encoding(head: bytes) -> tuple[str, int]:
    """(codec, BOM length) of a task file."""
    return bom_encoding(head, xml=True) or ("utf-8", 0)


def sniff(path: Path, head: bytes) -> bool:
    name, bom = _encoding(head)
    if name == "utf-8" and b"\x00" in head[:4096]:
        return False
    text = head[bom:bom + 8192].decode(name, "replace")
    start = text.find("<Task")
    return start >= 0 and TASK_NS in text[start:start + 2048] and "<Events" not in text[:start]


@dataclass
class Trigger:
    kind: str
    interval: str | None = None           # Repetition/Interval, or the calendar period
    enabled: bool = True


@dataclass
class Action:
    line: int
    command: str                          # Command + Arguments, or {CLSID} Data


@dataclass
class TaskDef:
    uri: str | None = None
    date: str | None = None
    author: str | None = None
    user: str | None = None
    enabled: bool = True
    hidden: bool = False
    triggers: list[Trigger] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


def _cap(text: str) -> str:
    return text if len(text) <= VALUE_CAP else text[:VALUE_CAP] + "…"


def exec_command(command: str | None, arguments: str | None) -> str:
    """How an Exec action reads as one command line."""
    return _cap(" ".join(p for p in ((command or "").strip(), (arguments or "").strip()) if p))


def com_command(clsid: str | None, data: str | None) -> str:
    return _cap(" ".join(p for p in ((clsid or "").strip(), (data or "").strip()) if p))


class _Reader:
    """expat callbacks that fill a TaskDef; element names are matched without namespace."""

    def __init__(self, parser: expat.XMLParserType) -> None:
        self.parser = parser
        self.task = TaskDef()
        self.path: list[str] = []
        self.buf: list[str] = []
        self.parts: dict[str, str] = {}
        self.action_line = 0
        self.trigger: Trigger | None = None
        self.calendar: str | None = None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(":")[2].rpartition("}")[2]
        self.buf.clear()
        parent = self.path[-1] if self.path else ""
        self.path.append(local)
        if parent == "Actions" and local in ("Exec", "ComHandler"):
            self.action_line = self.parser.CurrentLineNumber
            self.parts = {}
        elif parent == "Triggers" and local in _TRIGGERS:
            self.trigger = Trigger(local)
            self.calendar = None
        elif self.trigger and local.startswith("ScheduleBy"):
            # ScheduleByDay / ByWeek / ByMonth / ByMonthDayOfWeek: the period, refined below
            self.calendar = "month" if "Month" in local else local.removeprefix("ScheduleBy").lower()
            self.trigger.interval = self.calendar

    def end(self, name: str) -> None:
        local = self.path.pop()
        value = "".join(self.buf).strip()
        self.buf.clear()
        parent = self.path[-1] if self.path else ""
        task, trig = self.task, self.trigger
        if parent in ("Exec", "ComHandler"):
            self.parts[local] = value
        elif local == "Exec" and parent == "Actions":
            task.actions.append(Action(self.action_line, exec_command(
                self.parts.get("Command"), self.parts.get("Arguments"))))
        elif local == "ComHandler" and parent == "Actions":
            task.actions.append(Action(self.action_line, com_command(
                self.parts.get("ClassId"), self.parts.get("Data"))))
        elif parent == "RegistrationInfo" and local in ("URI", "Date", "Author"):
            setattr(task, local.lower(), value or None)
        elif parent == "Principal" and local in ("UserId", "GroupId") and value:
            task.user = task.user or value
        elif parent == "Settings" and local in ("Enabled", "Hidden"):
            setattr(task, local.lower(), value.lower() == "true")
        elif trig is not None:
            if local == "Interval" and parent == "Repetition":
                trig.interval = value
            elif local == "Enabled" and parent == trig.kind:
                trig.enabled = value.lower() != "false"
            elif local in ("DaysInterval", "WeeksInterval") and self.calendar and value != "1":
                trig.interval = f"{value} {self.calendar}s"
            elif local == trig.kind and parent == "Triggers":
                task.triggers.append(trig)
                self.trigger = None


def parse_task(text: str) -> TaskDef:
    """The definition in one task document; ``XmlRefused`` for DTDs or malformed XML."""
    if _DTD.search(text):
        raise XmlRefused("DTD/ENTITY declarations are refused (entity expansion attack?)")
    parser = safe_expat()
    reader = _Reader(parser)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.buf.append
    try:
        # The declaration names UTF-16 but expat gets decoded text: drop it.
        parser.Parse(_DECL.sub("", text, count=1), True)
    except expat.ExpatError as exc:
        raise XmlRefused(f"not well-formed XML: {exc}") from exc
    return reader.task


def describe(task: TaskDef) -> str:
    """The ``[triggers: …]`` / ``[hidden]`` suffix for a task's command."""
    out = ""
    if task.triggers:
        parts = []
        for t in task.triggers:
            part = t.kind + (f" every {t.interval}" if t.interval else "")
            parts.append(part + ("" if t.enabled else " (disabled)"))
        out += " [triggers: " + "; ".join(parts) + "]"
    if task.hidden:
        out += " [hidden]"
    return out


def task_name(uri: str | None, path: Path) -> str:
    """The task path: its URI, else the file path below a ``Tasks`` folder, else the file name."""
    if uri:
        return uri
    parts = PureWindowsPath(str(path).replace("/", "\\")).parts
    lowered = [p.lower() for p in parts]
    if "tasks" in lowered:
        below = parts[len(lowered) - lowered[::-1].index("tasks"):]
        if below:
            return "\\" + "\\".join(below)
    return "\\" + path.name


def parse(ctx: SourceContext) -> Iterator[Batch]:
    size = ctx.path.stat().st_size
    if size > MAX_TASK_BYTES:
        raise SourceError(f"task file of {size} bytes is over the {MAX_TASK_BYTES}-byte cap; "
                          "real task definitions are a few KiB")
    raw = ctx.path.read_bytes()
    name, bom = _encoding(raw[:4])
    try:
        task = parse_task(raw[bom:].decode(name, "backslashreplace"))
    except XmlRefused as exc:
        raise SourceError(f"task XML refused: {exc}") from exc
    when = to_utc(task.date) if task.date else None
    rows = []
    title = task_name(task.uri, ctx.path)
    suffix = describe(task)
    host = host_id(ctx.host)
    actions = task.actions or [Action(0, "")]
    for action in actions:
        rows.append({
            "host": host, "ts": when, "source": ctx.display, "source_line": action.line or None,
            "kind": "task", "location": ctx.display, "name": title,
            "command": (action.command + suffix) if action.command else (suffix.strip() or None),
            "user": task.user, "mtime": when, "enabled": task.enabled,
        })
    yield "persistence", rows


# --- the same actions as the registry caches them (TaskCache\Tasks\{GUID}\Actions) ------------

class _Blob:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"blob ends inside a field at byte {self.pos}")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u16(self) -> int:
        return int.from_bytes(self.raw(2), "little")

    def bstr(self) -> str:
        n = int.from_bytes(self.raw(4), "little")
        if n > len(self.data) - self.pos:
            raise ValueError(f"string of {n} bytes runs past the end of the blob")
        return self.raw(n).decode("utf-16-le", "backslashreplace").rstrip("\0")


def _guid(b: bytes) -> str:
    a, b1, c = struct.unpack_from("<IHH", b)
    return f"{{{a:08X}-{b1:04X}-{c:04X}-{b[8:10].hex().upper()}-{b[10:16].hex().upper()}}}"


def decode_actions(blob: bytes) -> list[str]:
    """Commands of a binary Actions value: version u16, (v3) a context string, then actions
    as magic u16 + id string + fields — 0x6666 Exec (command, arguments, working folder, v3
    flags u16), 0x7777 COM handler (16-byte CLSID, data); e-mail/message actions end the read.
    ``ValueError`` when the blob is cut or malformed before any action could be read."""
    r = _Blob(blob)
    version = r.u16()
    if version == 3:
        r.bstr()
    out: list[str] = []
    try:
        while r.pos + 2 <= len(blob) and len(out) < 32:
            magic = r.u16()
            r.bstr()                                     # the action id
            if magic == 0x6666:
                command, arguments = r.bstr(), r.bstr()
                r.bstr()
                if version == 3:
                    r.u16()
                out.append(exec_command(command, arguments))
            elif magic == 0x7777:
                clsid = _guid(r.raw(16))
                out.append(com_command(clsid, r.bstr()))
            else:
                break                                    # e-mail / message box: nothing runs
    except ValueError:
        if not out:
            raise
    return out


def dynamic_info_created(blob: bytes) -> int | None:
    """The creation FILETIME in a ``DynamicInfo`` value (4-byte magic, then FILETIME)."""
    if len(blob) < 12:
        return None
    (created,) = struct.unpack_from("<Q", blob, 4)
    return int(created) or None


SOURCE = Source("task_xml", sniff, parse)
