"""Windows Firewall logs (``pfirewall.log``) → ``flows`` of the host that wrote them.

XP SP2 and later write ``%windir%\\pfirewall.log``; Vista and later
``%windir%\\System32\\LogFiles\\Firewall\\pfirewall.log`` (Group Policy often renames it
``domainfw.log`` and so on). The format is W3C-like::

    #Version: 1.5
    #Software: Microsoft Windows Firewall
    #Time Format: Local
    #Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn
             tcpack tcpwin icmptype icmpcode info path [pid]           (one line in the file)
    2024-03-18 16:13:29 OPEN-INBOUND TCP 192.168.10.18 192.168.10.21 1030 445 - - - - - - - - RECEIVE

Columns come from the latest ``#Fields:`` line (Windows 10 adds ``pid``; a new header block
mid-file, from logs joined together, starts a new layout); ``-`` is an empty value.

Rows (``flows``): ``host`` is the host whose log it is (``--host``, else the drive copy's SYSTEM
hive ComputerName); src/dst ip and port, ``proto`` (``TCP`` → ``tcp``), ``ts`` naive UTC.
``data``: ``action`` as logged (``OPEN``, ``OPEN-INBOUND``, ``ALLOW``, ``DROP``, ``CLOSE``),
``path`` (``SEND``/``RECEIVE``/``FORWARD``), and where logged ``size`` (bytes of the logged
packet), ``tcp_flags``, ``tcp_syn``, ``tcp_ack``, ``tcp_win``, ``icmp_type``, ``icmp_code``,
``info``, ``pid``; other columns under their own names. ``bytes``/``packets`` stay NULL: the
log has one packet's size, not a conversation's.

- ``DROP`` lines are flows too: a blocked attempt is still an attempt (scans, worms). Their
  ``state`` is ``S0`` (no answer), or ``OTH`` for a dropped packet that was not a bare SYN; the
  other actions leave ``state`` NULL, the firewall does not say whether the peer answered.
- ``CLOSE`` ends a connection whose ``OPEN`` line is already a row, so it is not a row again
  (rules count connections by rows); a ``CLOSE`` whose ``OPEN`` is not in the file (the log
  wrapped in between) is kept, as the only trace of that connection.
- ``INFO-EVENTS-LOST`` lines are not flows: the number lost is reported in the errors row.

Times: the log is in the host's local time (``#Time Format: Local``). The bias comes from
the SYSTEM hive of the same drive copy (``host_timezone``); without one the times are taken
as UTC and one ``errors`` row (stage ``timezone``) says so. Lines that cannot be read are
counted in one ``errors`` row naming the first (a crash leaves runs of NUL bytes); a file that
does not start as text raises ``SourceError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deminer.sources import host_timezone, textlog, windows_tree
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id, looks_binary
from deminer.sources.host_timezone import HostTimeZone
from deminer.sources.netlog import Problems, json_text, proto_name, read_lines, to_int

Row = dict[str, Any]
REQUIRED = ("date", "time", "action", "src-ip", "dst-ip")
MAX_OPEN = 1 << 16            # open connections remembered to pair CLOSE lines (bounded memory)
# data keys for the log's own column names; columns not listed keep their name
_DATA_KEYS = {"action": "action", "path": "path", "size": "size", "tcpflags": "tcp_flags",
              "tcpsyn": "tcp_syn", "tcpack": "tcp_ack", "tcpwin": "tcp_win", "icmptype": "icmp_type",
              "icmpcode": "icmp_code", "info": "info", "pid": "pid"}
_FLOW_COLUMNS = frozenset({"date", "time", "protocol", "src-ip", "dst-ip", "src-port", "dst-port"})
_NUMERIC = frozenset({"size", "tcp_syn", "tcp_ack", "tcp_win", "icmp_type", "icmp_code", "pid"})
# Names Windows and Group Policy give the log; only used to claim a *binary* file so that it
# gets a clear error instead of being skipped silently.
_LOG_NAME = re.compile(r"^(pfirewall|domainfw|privatefw|publicfw)\.log(\.old|\.\d+)?$", re.IGNORECASE)


def sniff(path: Path, head: bytes) -> bool:
    """A ``#Software: Microsoft Windows Firewall`` line or a ``#Fields:`` header naming
    ``action``, ``src-ip`` and ``dst-ip`` (IIS's W3C logs say ``c-ip``/``s-ip``)."""
    text = textlog.head_text(head)
    if text is None:
        return bool(_LOG_NAME.match(path.name))
    for line in [ln for ln in text.split("\n") if ln.strip()][:20]:
        if line.startswith("#Software:") and "Windows Firewall" in line:
            return True
        if line.startswith("#Fields:") and {"action", "src-ip", "dst-ip"} <= set(line[8:].split()):
            return True
    return False


class _Layout:
    """Where each column of the current ``#Fields:`` header is."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = [f.lower() for f in fields]
        self.at = {name: i for i, name in enumerate(self.fields)}
        self.missing = [name for name in REQUIRED if name not in self.at]
        # A line may lack trailing empty columns, never the ones a flow needs.
        self.least = max((self.at[n] for n in _FLOW_COLUMNS | {"action"} if n in self.at), default=0) + 1
        self.extra = [(i, _DATA_KEYS.get(name, name)) for i, name in enumerate(self.fields)
                      if name not in _FLOW_COLUMNS]


def _value(values: list[str], at: dict[str, int], name: str) -> str | None:
    i = at.get(name)
    if i is None or i >= len(values):
        return None
    value = values[i]
    return None if value == "-" or value == "" else value


def _port(text: str | None) -> int | None:
    """A port, None for an empty one; ``ValueError`` for anything else."""
    if text is None:
        return None
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _state(action: str, proto: str | None, flags: str | None) -> str | None:
    if action != "DROP":
        return None
    if proto == "tcp" and flags is not None and flags.upper() != "S":
        return "OTH"                  # a stray ACK/RST/FIN: not a connection attempt
    return "S0"


class _Reader:
    """One file's lines → flows rows, and what it could not use."""

    def __init__(self, ctx: SourceContext, host: str | None, zone: HostTimeZone) -> None:
        self.ctx, self.host, self.zone = ctx, host, zone
        self.layout: _Layout | None = None
        self.local = True                     # "#Time Format: Local" (the only one Windows writes)
        self.problems = Problems()
        self.lost = 0                         # events the firewall says it did not log
        self.open: set[tuple[Any, ...]] = set()
        self.rows = 0

    def header(self, line: str) -> None:
        if line.startswith("#Fields:"):
            self.layout = _Layout(line[8:].split())
        elif line.lower().startswith("#time format:"):
            self.local = line[13:].strip().lower() != "utc"

    def row(self, number: int, line: str) -> Row | None:
        layout = self.layout
        if layout is None:
            self.problems.add(number, "no #Fields header before it")
            return None
        if layout.missing:
            self.problems.add(number, f"the #Fields header lacks {', '.join(layout.missing)}")
            return None
        values = line.split()
        if not layout.least <= len(values) <= len(layout.fields):
            self.problems.add(number, f"{len(values)} values for {len(layout.fields)} fields")
            return None
        at = layout.at
        action = (_value(values, at, "action") or "").upper()
        try:
            local = dt.datetime.fromisoformat(f"{values[at['date']]} {values[at['time']]}")
            if local.tzinfo is not None or len(values[at["date"]]) != 10:
                raise ValueError("not a local date and time")
            src_port, dst_port = _port(_value(values, at, "src-port")), _port(_value(values, at, "dst-port"))
        except ValueError:
            self.problems.add(number, f"unreadable date, time or port: {line[:80]!r}")
            return None
        if action == "INFO-EVENTS-LOST":
            self.lost += to_int(_value(values, at, "info")) or 0
            return None
        proto = proto_name(_value(values, at, "protocol"))
        src, dst = _value(values, at, "src-ip"), _value(values, at, "dst-ip")
        conn, reverse = (proto, src, src_port, dst, dst_port), (proto, dst, dst_port, src, src_port)
        if action in ("OPEN", "OPEN-INBOUND") and len(self.open) < MAX_OPEN:
            self.open.add(conn)
        elif action == "CLOSE" and (conn in self.open or reverse in self.open):
            self.open.difference_update((conn, reverse))    # either direction pairs: be lenient
            return None
        data: Row = {}
        for i, key in layout.extra:
            if i < len(values) and values[i] != "-":
                data[key] = to_int(values[i]) if key in _NUMERIC else values[i]
        data["action"] = action or None
        self.rows += 1
        return {"host": self.host, "ts": self.zone.to_utc(local) if self.local else local,
                "source": self.ctx.display, "source_line": number, "src_ip": src, "src_port": src_port,
                "dst_ip": dst, "dst_port": dst_port, "proto": proto,
                "state": _state(action, proto, _value(values, at, "tcpflags")), "data": json_text(data)}


def _zone_error(ctx: SourceContext, host: str | None, zone: HostTimeZone) -> Row:
    row = textlog.error_row(ctx.display, host, f"times were taken as UTC because the host's time zone "
                                               f"is unknown: {zone.problem}")
    row["stage"] = "timezone"
    return row


def _check_text(path: Path) -> None:
    """``SourceError`` unless the file starts as text. NUL runs further on are tolerated (their
    lines are counted as unreadable): Windows pads a log cut short by a crash with zeros."""
    head = textlog.read_head(path)
    if not head.strip():
        return                              # empty: logging was just switched on
    start = head.split(b"\0", 1)[0]
    if not start.strip() or looks_binary(start):
        raise SourceError("binary content, not a Windows Firewall log")


def parse(ctx: SourceContext) -> Iterator[Batch]:
    _check_text(ctx.path)
    zone = host_timezone.time_zone_for(ctx.path)
    host = host_id(ctx.host)
    if host is None and zone.hive is not None:
        # A log given on its own (not by walking a folder): its drive copy still names the host.
        root = windows_tree.detect_windows_root(zone.hive.parents[3])
        host = root.host if root is not None else None
    reader = _Reader(ctx, host, zone)
    batcher = Batcher()
    for number, line in read_lines(ctx.path, reader.problems):
        if not line.strip():
            continue
        if line[0] == "#":
            reader.header(line)
            continue
        row = reader.row(number, line)
        if row is not None and (full := batcher.add("flows", row)):
            yield full
    yield from batcher.flush()
    if reader.lost:
        reader.problems.notes.append(f"the firewall reported {reader.lost} event(s) it did not log "
                                     "(INFO-EVENTS-LOST)")
    yield from reader.problems.batch(dataclasses.replace(ctx, host=host), "Windows Firewall log")
    if reader.rows and reader.local and zone.bias is None:
        yield "errors", [_zone_error(ctx, host, zone)]


SOURCE = Source("pfirewall", sniff, parse)
