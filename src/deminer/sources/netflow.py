"""NetFlow/IPFIX exports as CSV or JSON lines → ``flows``.

Flow collectors write the same facts under different column names, so one reader serves
them all, driven by a mapping from roles (``src_ip``, ``dst_ip``, ``bytes``, ``start``, …)
to the file's columns. The mapping comes from the header: names are compared lower-cased
without punctuation against ``ROLES`` (first alias present wins), or the caller gives it with
``parse_with_mapping`` (the later ``--flow-columns`` option). Known layouts:

    nfdump -o csv   ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,… then a
                    ``Summary`` block (the end of the flows); what softflowd, routers and
                    switches export (NetFlow v5/v9, IPFIX) reaches us this way, via nfcapd
    goflow2 JSON    v1 ``SrcAddr``/``DstAddr``/``Bytes``/``Packets``/``TimeFlowStart`` (s) and
                    v2 ``src_addr``/``bytes``/``time_flow_start_ns`` (ns)
    AWS VPC flow    space-separated, ``srcaddr dstaddr srcport dstport protocol packets bytes
                    start end action log-status`` (``-`` = no data)
    SiLK rwcut      ``sIP|dIP|sPort|dPort|pro|packets|bytes|flags|sTime|duration|eTime|``
    any CSV/TSV     with source and destination address columns and two of port, protocol,
                    bytes, packets, start time (``src_ip``, ``srcaddr``, ``source``, …)

NetFlow records are one-way, so a conversation's request and reply records are joined into
one row (``_Pairs``, as ``nfdump -B`` does): ``bytes`` (IP-level octets, not payload as in
Zeek) and ``packets`` are both directions, data.orig_*/resp_* each, data.tcp_flags/
resp_tcp_flags as found, and ``state`` follows from the flags (a lone SYN-only record is S0,
a reply of RST without SYN is REJ); without flags (VPC) or for one-way UDP it stays NULL.
data also keeps action, exporter and sampling_rate (bytes are not scaled by it).
Times: epoch s/ms/µs/ns by magnitude, ISO 8601 with a zone → UTC; times without one (nfdump
prints the collector's local ``2024-03-30 08:00:00.123``) are taken as UTC. ``flows.host``
stays NULL unless the user names the host. Unreadable lines and values are counted in one
``errors`` row naming the first.

The helpers it shares with the ``zeek`` and ``suricata`` sources live in ``netlog``.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id
from deminer.sources.netlog import (
    Problems,
    Row,
    flag_bits,
    json_head,
    json_text,
    parse_time,
    proto_name,
    read_lines,
    state_from_flags,
    to_float,
    to_int,
)
from deminer.sources.textlog import head_text

# -- flow exports ---------------------------------------------------------------------------
ROLES: dict[str, tuple[str, ...]] = {
    "src_ip": ("srcip", "srcaddr", "sa", "sip", "src", "source", "sourceip", "sourceaddress", "srcaddress",
               "ipsrc", "ipv4srcaddr", "ipv6srcaddr", "sourceipv4address", "sourceipv6address", "clientip"),
    "dst_ip": ("dstip", "dstaddr", "da", "dip", "dst", "destination", "destinationip", "destinationaddress",
               "dstaddress", "destip", "destaddr", "ipdst", "ipv4dstaddr", "ipv6dstaddr",
               "destinationipv4address", "destinationipv6address", "serverip"),
    "src_port": ("srcport", "sp", "sport", "sourceport", "srcpt", "l4srcport", "sourcetransportport"),
    "dst_port": ("dstport", "dp", "dport", "destinationport", "destport", "dstpt", "l4dstport",
                 "destinationtransportport"),
    "proto": ("proto", "protocol", "pr", "pro", "ipproto", "protocolidentifier", "protoname", "transport"),
    "bytes": ("bytes", "ibyt", "byt", "octets", "inbytes", "bytesin", "inoctets", "octetdeltacount",
              "doctets", "totalbytes", "bytecount"),
    "out_bytes": ("obyt", "outbytes", "bytesout", "outoctets"),
    "packets": ("packets", "ipkt", "pkt", "pkts", "inpkts", "inpackets", "packetsin", "packetdeltacount",
                "dpkts", "totalpackets", "packetcount"),
    "out_packets": ("opkt", "outpkts", "outpackets", "packetsout"),
    "start": ("ts", "start", "starttime", "first", "firstseen", "stime", "flowstart", "timeflowstart",
              "timeflowstartns", "timeflowstartms", "flowstartmilliseconds", "flowstartseconds",
              "datefirstseen", "firstswitched", "timestamp", "time", "timereceived", "timereceivedns"),
    "end": ("te", "end", "endtime", "last", "lastseen", "etime", "flowend", "timeflowend", "timeflowendns",
            "flowendmilliseconds", "flowendseconds", "lastswitched", "datelastseen"),
    "duration": ("td", "duration", "dur", "elapsed"),
    "tcp_flags": ("flg", "flags", "tcpflags", "tcpcontrolbits"),
    "action": ("action", "fwaction"),
    "app": ("app", "application", "appname", "l7proto"),
    "exporter": ("ra", "sampleraddress", "exporter", "exporteraddress", "router"),
    "sampling_rate": ("samplingrate",),
}
PAIR_WINDOW = dt.timedelta(minutes=2)     # a reply record starts this close to its request
PAIR_MAX = 100_000                        # records waiting for their reply
_NORM = re.compile(r"[^a-z0-9]")
_BARE = frozenset({"src", "dst", "source", "destination", "sa", "da"})   # too common alone
_DELIMS = (",", "\t", "|", ";")


def _norm(name: str) -> str:
    return _NORM.sub("", name.lower())


def plan_of(names: list[str]) -> dict[str, str]:
    """role → column name, from a header's names (the earliest alias in ``ROLES`` wins)."""
    present = {_norm(n): n for n in reversed(names) if n}
    plan: dict[str, str] = {}
    for role, aliases in ROLES.items():
        for alias in aliases:
            if alias in present:
                plan[role] = present[alias]
                break
    return plan


def is_flow_plan(plan: Mapping[str, str]) -> bool:
    if "src_ip" not in plan or "dst_ip" not in plan:
        return False
    found = sum(role in plan for role in ("src_port", "dst_port", "proto", "bytes", "packets", "start"))
    bare = _norm(plan["src_ip"]) in _BARE
    return found >= (3 if bare else 2)


def _split(line: str, delim: str | None) -> list[str]:
    if delim is None:
        return line.split()
    if '"' in line:
        try:
            return next(csv.reader([line], delimiter=delim), [])
        except csv.Error:                  # a broken quote: the field count check names it
            return line.split(delim)
    return line.split(delim)


def _layout(first: str) -> tuple[str | None, list[str]]:
    """(delimiter, column names) of a header line; None as delimiter means runs of spaces."""
    delim = max(_DELIMS, key=first.count)
    if not first.count(delim):
        return None, first.split()
    return delim, [c.strip() for c in _split(first, delim)]


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                out.setdefault(f"{key}.{sub}", inner)
        else:
            out.setdefault(str(key), value)
    return out


def _json_flow(obj: dict[str, Any]) -> bool:
    # Suricata and Zeek records name addresses too; they have sources of their own
    return (not any(k in obj for k in ("event_type", "uid", "_path", "id.orig_h"))
            and is_flow_plan(plan_of(list(_flatten(obj)))))


def sniff(path: Path, head: bytes) -> bool:
    text = head_text(head)
    if text is None:
        return False
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0].lstrip().startswith("{"):
        return json_head(text, _json_flow)
    first = lines[0].strip()
    delim, names = _layout(first)
    if len(names) < 3 or not is_flow_plan(plan_of(names)):
        return False
    # the first record, when the head has one, must have the header's shape
    return len(lines) < 2 or len(_split(lines[1].strip(), delim)) >= len(names) - 1


class _Rows:
    """Flow records (dicts keyed by the file's column names) → ``flows`` rows."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.host = host_id(ctx.host)
        self.bad: dict[str, tuple[int, str]] = {}

    def _time(self, rec: Mapping[str, Any], plan: Mapping[str, str], role: str) -> dt.datetime | None:
        value = rec.get(plan[role]) if role in plan else None
        if value in (0, "0"):                     # exporters write 0 for "not known"
            return None
        try:
            return parse_time(value)
        except (ValueError, OverflowError):
            count, first = self.bad.get(plan[role], (0, str(value)[:60]))
            self.bad[plan[role]] = (count + 1, first)
            return None

    def row(self, rec: Mapping[str, Any], plan: Mapping[str, str], line: int) -> Row | None:
        def get(role: str) -> Any:
            value = rec.get(plan[role]) if role in plan else None
            return None if value in ("", "-") else value.strip() if isinstance(value, str) else value

        src, dst = get("src_ip"), get("dst_ip")
        if src is None or dst is None:
            return None
        start, end = self._time(rec, plan, "start"), self._time(rec, plan, "end")
        ib, ob, ip, op = (to_int(get(r)) for r in ("bytes", "out_bytes", "packets", "out_packets"))
        duration = to_float(get("duration"))
        if duration is None and start and end:
            duration = (end - start).total_seconds()
        return {
            "host": self.host, "ts": start or end, "source": self.ctx.display, "source_line": line,
            "src_ip": str(src), "src_port": to_int(get("src_port")), "dst_ip": str(dst),
            "dst_port": to_int(get("dst_port")), "proto": proto_name(get("proto")),
            "bytes": (ib or 0) + (ob or 0) if ib is not None or ob is not None else None,
            "packets": (ip or 0) + (op or 0) if ip is not None or op is not None else None,
            "duration": duration, "app": get("app"), "_end": end,
            "data": {"orig_bytes": ib, "orig_pkts": ip, "resp_bytes": ob or None, "resp_pkts": op or None,
                     "tcp_flags": get("tcp_flags"), "action": get("action"), "exporter": get("exporter"),
                     "sampling_rate": to_int(get("sampling_rate"))}}


class _Pairs:
    """Makes the two one-way records of a conversation one row, as ``nfdump -B`` does: the
    reply record (reversed 5-tuple, starting within ``PAIR_WINDOW``) gives resp_bytes/pkts
    and, with the flags, the state; without it a SYN-only TCP record is S0. Records wait at
    most ``PAIR_WINDOW`` of file time and ``PAIR_MAX`` records, so memory stays bounded."""

    def __init__(self) -> None:
        self.open: dict[tuple[Any, ...], Row] = {}

    def add(self, row: Row) -> Iterator[Row]:
        key = (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"], row["proto"])
        if row["data"]["resp_bytes"] is not None:          # a bidirectional export already
            yield _done(row, None)
            return
        other = self.open.pop((key[2], key[3], key[0], key[1], key[4]), None)
        if other is not None and _near(other["ts"], row["ts"]):
            yield _merge(other, row)
        else:
            for old in (other, self.open.pop(key, None)):
                if old is not None:
                    yield _done(old, None)
            self.open[key] = row
        while self.open:
            first = next(iter(self.open))
            if len(self.open) <= PAIR_MAX and _near(self.open[first]["ts"], row["ts"]):
                break
            yield _done(self.open.pop(first), None)

    def flush(self) -> Iterator[Row]:
        for row in self.open.values():
            yield _done(row, None)
        self.open = {}


def _near(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    return a is None or b is None or abs(a - b) <= PAIR_WINDOW


def _merge(a: Row, b: Row) -> Row:
    """One row of two opposite records; the earlier (or, at the same time, the one from the
    higher port, a client's ephemeral port) is the originator."""
    def order(r: Row) -> tuple[dt.datetime, int]:
        return r["ts"] or dt.datetime.max, -(r["src_port"] or 0)

    if order(b) < order(a):
        a, b = b, a
    starts = [t for t in (a["ts"], b["ts"]) if t]
    ends = [t for t in (a["_end"], b["_end"]) if t]
    a["bytes"] = None if a["bytes"] is None and b["bytes"] is None else (a["bytes"] or 0) + (b["bytes"] or 0)
    a["packets"] = None if a["packets"] is None and b["packets"] is None else (
        (a["packets"] or 0) + (b["packets"] or 0))
    if starts and ends:
        a["duration"] = (max(ends) - min(starts)).total_seconds()
    a["data"].update(resp_bytes=b["data"]["orig_bytes"], resp_pkts=b["data"]["orig_pkts"],
                     resp_tcp_flags=b["data"]["tcp_flags"], resp_line=b["source_line"])
    return _done(a, b)


def _done(row: Row, reply: Row | None) -> Row:
    data = row["data"]
    row.pop("_end", None)
    resp = flag_bits(reply["data"]["tcp_flags"]) if reply else None
    replied = reply is not None or data["resp_bytes"] is not None
    row["state"] = state_from_flags(flag_bits(data["tcp_flags"]), resp, replied, row["proto"] == "tcp")
    row["data"] = json_text(data)
    return row


def _records(ctx: SourceContext, problems: Problems,
             mapping: Mapping[str, str] | None) -> Iterator[tuple[int, dict[str, Any], dict[str, str]]]:
    """(line, record, plan) of a CSV or JSON-lines flow export."""
    delim: str | None = None
    names: list[str] = []
    plan: dict[str, str] = {}
    plans: dict[tuple[str, ...], dict[str, str]] = {}
    json_lines: bool | None = None             # the first meaningful line decides
    for number, line in read_lines(ctx.path, problems):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if json_lines is None:
            json_lines = text.startswith("{")
        if json_lines:
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                problems.add(number, f"not JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                problems.add(number, "not a JSON object")
                continue
            rec = _flatten(obj)
            keys = tuple(rec)
            if keys not in plans:
                if len(plans) > 4096:             # bounded: hostile files vary their keys
                    plans.clear()
                plans[keys] = {**plan_of(list(keys)), **(mapping or {})}
            if "src_ip" not in plans[keys] or "dst_ip" not in plans[keys]:
                problems.add(number, "no source or destination address field")
                continue
            yield number, rec, plans[keys]
            continue
        if not names:
            delim, names = _layout(text)
            plan = {**plan_of(names), **(mapping or {})}
            if "src_ip" not in plan or "dst_ip" not in plan:
                raise SourceError("no source and destination address columns "
                                  "(give them with a column mapping)")
            continue
        if text == "Summary":              # nfdump's trailer: totals, not flows
            return
        values = [v.strip() for v in _split(text, delim)]      # rwcut pads with spaces
        if len(values) != len(names):
            problems.add(number, f"{len(values)} fields where the header has {len(names)}")
            continue
        yield number, dict(zip(names, values, strict=True)), plan


def parse_with_mapping(ctx: SourceContext, mapping: Mapping[str, str] | None = None) -> Iterator[Batch]:
    """Flows of a CSV/JSON-lines export; ``mapping`` (role → column) overrides the header's
    guesses, e.g. ``{"src_ip": "client", "dst_ip": "server", "bytes": "octets_total"}``."""
    unknown = sorted(set(mapping or {}) - set(ROLES))
    if unknown:
        raise SourceError(f"unknown flow column role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    problems = Problems()
    rows = _Rows(ctx)
    pairs = _Pairs()
    batcher = Batcher()
    empty = 0
    for number, rec, plan in _records(ctx, problems, mapping):
        row = rows.row(rec, plan, number)
        if row is None:               # VPC NODATA/SKIPDATA records, collector keep-alives
            empty += 1
            continue
        for out in pairs.add(row):
            if full := batcher.add("flows", out):
                yield full
    for out in pairs.flush():
        if full := batcher.add("flows", out):
            yield full
    yield from batcher.flush()
    if empty:
        problems.notes.append(f"netflow: {empty} record(s) without a source or destination address skipped")
    for column, (count, first) in rows.bad.items():
        problems.notes.append(f"netflow: {count} value(s) of {column!r} not understood as a time "
                              f"(first: {first!r})")
    yield from problems.batch(ctx, "netflow")


def parse(ctx: SourceContext) -> Iterator[Batch]:
    return parse_with_mapping(ctx, None)


SOURCE = Source("netflow", sniff, parse)


def parse_mapping(text: str) -> dict[str, str]:
    """``"src_ip=client,dst_ip=server"`` → role → column; ValueError naming what is wrong."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, sep, column = part.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ValueError(f"{part!r} is not ROLE=COLUMN")
        if role not in ROLES:
            raise ValueError(f"unknown flow column role {role!r}; known: {', '.join(ROLES)}")
        mapping[role] = column
    if not mapping:
        raise ValueError("no ROLE=COLUMN pairs given")
    return mapping


def mapped_source(mapping: Mapping[str, str]) -> Source:
    """The netflow source with the user's column mapping: it also claims a flow export whose
    header names every mapped column even when the header's own names say nothing."""
    wanted = set(mapping.values())

    def sniff_mapped(path: Path, head: bytes) -> bool:
        if sniff(path, head):
            return True
        text = head_text(head)
        lines = [ln for ln in (text or "").split("\n") if ln.strip() and not ln.startswith("#")]
        if not lines:
            return False
        first = lines[0].strip()
        if first.startswith("{"):
            try:
                keys = set(_flatten(orjson.loads(first)))
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                return False
        else:
            keys = set(_layout(first)[1])
        plan = {**plan_of(sorted(keys)), **mapping}
        return wanted <= keys and "src_ip" in plan and "dst_ip" in plan

    return Source("netflow", sniff_mapped, lambda ctx: parse_with_mapping(ctx, mapping))
