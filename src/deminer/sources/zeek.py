"""Zeek logs (TSV with ``#fields`` headers, or JSON lines) → ``flows``, ``dns`` and ``events``.

Every log line becomes its own row; nothing is merged, so a half-copied log folder still
gives every fact it holds. Rows of one connection share Zeek's ``uid`` in ``data.uid``, so
rules join ``ssl``/``http``/``ssh`` rows to their ``conn`` row in SQL::

    conn.log    flows: bytes (payload, as Zeek and the pcap source count it) and packets
                both directions, duration, state = ``conn_state``, app = ``service`` (``ssl``
                is called ``tls``); data: orig/resp bytes and pkts, orig/resp_ip_bytes (IP
                level), history, missed_bytes (``truncated`` when > 0), uid
    dns.log     dns: client = id.orig_h, qname lower-case without the final dot, qtype,
                answers, rcode
    ssl.log     flows app ``tls``: sni, version, cipher, ja3/ja3_hash, ja3s_hash, ja4,
                cert_subject, cert_issuer (what the log has; Zeek ≥ 4 keeps certs in x509.log)
    http.log    flows app ``http``: method, uri, host, user_agent, status, content_type, …
    ssh.log     flows app ``ssh``: client_banner, server_banner, auth_success, auth_attempts
    notice.log  events ``ids_notice``: status = the note, data.msg/sub/n/actions

Other logs (files, x509, weird, …) are read and counted, not stored. TSV: the
``#separator``/``#set_separator``/``#empty_field``/``#unset_field`` lines are obeyed, ``\\xHH``
escapes decoded (bytes that are not UTF-8 come back as ``\\xHH``), ``(empty)`` is an empty
value and ``-`` an unset one; a new header block mid-file (rotated logs concatenated) starts a
new layout. JSON: ``_path`` names the log, else the field names do; ``ts`` may be epoch
seconds, milliseconds or ISO 8601. Plain or gzip'd. ``flows.host`` stays NULL (a sensor saw
the traffic) unless the user names the host.

Lines that cannot be read (wrong column count, broken JSON, binary junk, over 1 MiB)
are skipped and summed in one ``errors`` row naming the first of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from deminer.sources.base import Batch, Batcher, Source, SourceContext, host_id
from deminer.sources.netlog import (
    Problems,
    json_head,
    json_text,
    parse_time,
    proto_name,
    read_lines,
    to_float,
    to_int,
)
from deminer.sources.textlog import head_text

RAW_CAP = 2048                # ``raw`` keeps this many characters
Row = dict[str, Any]
Mapped = tuple[str, Row]      # (table, row)


def epoch(value: Any) -> dt.datetime | None:
    """A record's time (epoch seconds/ms/ns or ISO 8601); None when it is none of these."""
    try:
        return parse_time(value)
    except ValueError:
        return None


def skipped_note(kind: str, counts: Counter[str], what: str) -> str:
    listed = ", ".join(f"{name} {n}" for name, n in counts.most_common(8))
    return f"{kind}: {sum(counts.values())} {what} without a table skipped ({listed})"


# -- Zeek values ----------------------------------------------------------------------------
_HEX = re.compile(r"\\x([0-9a-fA-F]{2})")
_SERVICES = {"ssl": "tls", "dtls": "tls", "krb": "kerberos", "krb_tcp": "kerberos", "http2": "http"}
_AUX = frozenset({"gssapi", "ntlm"})         # helpers inside another protocol, never the app
# Container fields of the logs we map, for headerless ``tsv=T`` output (no #types line).
_TEXT_TYPES = frozenset({"string", "enum", "pattern", "file", "func", "addr", "subnet", ""})
_LISTS = frozenset({"answers", "TTLs", "resp_mime_types", "orig_mime_types", "tunnel_parents",
                    "actions", "resp_fuids", "orig_fuids", "cert_chain_fps", "tags", "proxied"})


def unescape(text: str) -> str:
    """Zeek's ``\\xHH`` escapes decoded; bytes that are not UTF-8 come back as ``\\xHH``."""
    if "\\x" not in text:
        return text
    parts = _HEX.split(text)
    raw = b"".join(bytes([int(p, 16)]) if i % 2 else p.encode("utf-8", "surrogateescape")
                   for i, p in enumerate(parts))
    return raw.decode("utf-8", "backslashreplace")


_BOOL: dict[Any, bool] = {"T": True, "F": False, True: True, False: False}


def _bool(value: Any) -> bool | None:
    return _BOOL.get(value) if isinstance(value, (str, bool)) else None


_APP_CACHE: dict[str, tuple[str | None, list[str] | None]] = {}


def _app(service: Any) -> tuple[str | None, list[str] | None]:
    """(app, all services) from Zeek's ``service`` (``ssl``, ``gssapi,smb,ntlm``, ``-http``)."""
    if service is None:
        return None, None
    if isinstance(service, str) and service in _APP_CACHE:     # a handful of values, 1e6 lines
        return _APP_CACHE[service]
    names = service if isinstance(service, list) else str(service or "").split(",")
    cleaned = (str(s).strip().lower() for s in names)
    found = [_SERVICES.get(n, n) for n in cleaned if n and not n.startswith("-")]
    main = [n for n in found if n not in _AUX] or found
    result = (main[0] if main else None), (found if len(found) > 1 else None)
    if isinstance(service, str) and len(_APP_CACHE) < 256:
        _APP_CACHE[service] = result
    return result


def _first(value: Any) -> Any:
    """The first element of a Zeek container (``resp_mime_types``), or the value itself."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


# -- one row per log line -------------------------------------------------------------------
def _flow(r: Row, host: str | None, app: str | None, data: Row) -> Row:
    return {"host": host, "ts": epoch(r.get("ts")), "src_ip": r.get("id.orig_h"),
            "src_port": to_int(r.get("id.orig_p")), "dst_ip": r.get("id.resp_h"),
            "dst_port": to_int(r.get("id.resp_p")), "app": app,
            "data": json_text({"uid": r.get("uid"), **data})}


def _conn(r: Row, host: str | None) -> Mapped:
    g = r.get
    ob, rb = to_int(g("orig_bytes")), to_int(g("resp_bytes"))
    op, rp = to_int(g("orig_pkts")), to_int(g("resp_pkts"))
    oip, rip, missed = to_int(g("orig_ip_bytes")), to_int(g("resp_ip_bytes")), to_int(g("missed_bytes"))
    app, services = _app(g("service"))
    data = {"uid": g("uid"), "orig_bytes": ob, "resp_bytes": rb, "orig_pkts": op, "resp_pkts": rp,
            "orig_ip_bytes": oip, "resp_ip_bytes": rip, "history": g("history"),
            "missed_bytes": missed or None, "truncated": True if missed else None, "services": services,
            "community_id": g("community_id"),
            "local_orig": _bool(g("local_orig")), "local_resp": _bool(g("local_resp"))}
    return "flows", {
        "host": host, "ts": epoch(g("ts")), "src_ip": g("id.orig_h"), "src_port": to_int(g("id.orig_p")),
        "dst_ip": g("id.resp_h"), "dst_port": to_int(g("id.resp_p")), "proto": proto_name(g("proto")),
        # payload bytes, as Zeek and the pcap source count them (unset for S0/REJ: none sent)
        "bytes": (ob or 0) + (rb or 0) if (ob, rb, oip, rip) != (None, None, None, None) else None,
        "packets": op + rp if op is not None and rp is not None else None,
        "duration": to_float(g("duration")), "app": app, "state": g("conn_state") or None,
        "data": json_text(data)}


def _dns(r: Row, host: str | None) -> Mapped:
    query = r.get("query")
    answers = r.get("answers")
    return "dns", {"host": host, "ts": epoch(r.get("ts")), "client": r.get("id.orig_h"),
                   "qname": str(query).lower().rstrip(".") if query is not None else None,
                   "qtype": r.get("qtype_name") or (str(r["qtype"]) if r.get("qtype") is not None else None),
                   "answers": [str(a) for a in answers] if isinstance(answers, list) else None,
                   "rcode": r.get("rcode_name") or None}


def _ssl(r: Row, host: str | None) -> Mapped:
    ja3, ja3s = str(r.get("ja3") or ""), str(r.get("ja3s") or "")
    version = r.get("version")
    row = _flow(r, host, "tls", {
        "sni": r.get("server_name"), "version": version, "cipher": r.get("cipher"), "curve": r.get("curve"),
        "established": _bool(r.get("established")), "resumed": _bool(r.get("resumed")),
        "next_protocol": r.get("next_protocol"), "cert_subject": r.get("subject"),
        "cert_issuer": r.get("issuer"), "validation_status": r.get("validation_status"),
        # the ja3 package logs the MD5 in ``ja3``; a full string would have commas
        "ja3_hash": ja3 if len(ja3) == 32 else None, "ja3": ja3 if "," in ja3 else None,
        "ja3s_hash": ja3s if len(ja3s) == 32 else None, "ja3s": ja3s if "," in ja3s else None,
        "ja4": r.get("ja4"), "ja4s": r.get("ja4s")})
    row["proto"] = "udp" if str(version or "").startswith("DTLS") else "tcp"
    return "flows", row


def _http(r: Row, host: str | None) -> Mapped:
    row = _flow(r, host, "http", {
        "method": r.get("method"), "uri": r.get("uri"), "host": r.get("host"),
        "user_agent": r.get("user_agent"), "status": to_int(r.get("status_code")),
        "status_msg": r.get("status_msg"), "content_type": _first(r.get("resp_mime_types")),
        "referrer": r.get("referrer"), "username": r.get("username"), "version": r.get("version"),
        "trans_depth": to_int(r.get("trans_depth")), "request_body_len": to_int(r.get("request_body_len")),
        "response_body_len": to_int(r.get("response_body_len"))})
    row["proto"] = "tcp"
    return "flows", row


def _ssh(r: Row, host: str | None) -> Mapped:
    row = _flow(r, host, "ssh", {
        "client_banner": r.get("client"), "server_banner": r.get("server"),
        "auth_success": _bool(r.get("auth_success")), "auth_attempts": to_int(r.get("auth_attempts")),
        "direction": r.get("direction"), "version": to_int(r.get("version")), "hassh": r.get("hassh"),
        "hassh_server": r.get("hasshServer"), "cipher_alg": r.get("cipher_alg"), "kex_alg": r.get("kex_alg"),
        "host_key": r.get("host_key")})
    row["proto"] = "tcp"
    return "flows", row


def _notice(r: Row, host: str | None) -> Mapped:
    data = {"note": r.get("note"), "msg": r.get("msg"), "sub": r.get("sub"), "uid": r.get("uid"),
            "n": to_int(r.get("n")), "actions": r.get("actions"), "peer_descr": r.get("peer_descr"),
            "fuid": r.get("fuid"), "suppress_for": to_float(r.get("suppress_for"))}
    return "events", {"host": host, "ts": epoch(r.get("ts")), "event": "ids_notice", "program": "zeek",
                      "src_ip": r.get("src") or r.get("id.orig_h"), "src_port": to_int(r.get("id.orig_p")),
                      "dst_ip": r.get("dst") or r.get("id.resp_h"),
                      "dst_port": to_int(r.get("id.resp_p")) or to_int(r.get("p")),
                      "status": r.get("note"), "data": json_text(data)}


MAPPERS: dict[str, Callable[[Row, str | None], Mapped]] = {
    "conn": _conn, "dns": _dns, "ssl": _ssl, "http": _http, "ssh": _ssh, "notice": _notice}
_NAMED = re.compile(r"(?:^|[._-])(conn|dns|ssl|http|ssh|notice)(?=[._-]|$)")


def log_kind(keys: Any) -> str | None:
    """Which log a record's field names belong to (for JSON lines and headers without #path)."""
    if "conn_state" in keys or "orig_ip_bytes" in keys:
        return "conn"
    if "note" in keys and "msg" in keys:
        return "notice"
    if "qtype_name" in keys or ("query" in keys and "trans_id" in keys):
        return "dns"
    if "auth_attempts" in keys or "auth_success" in keys:
        return "ssh"
    if "method" in keys and "trans_depth" in keys:
        return "http"
    if "server_name" in keys or "ja3" in keys or ("cipher" in keys and "established" in keys):
        return "ssl"
    return None


# -- reading --------------------------------------------------------------------------------
def _zeek_json(obj: dict[str, Any]) -> bool:
    # notice.log lines for scans and guessing carry no uid or connection id
    return "ts" in obj and ("uid" in obj or "id.orig_h" in obj or "_path" in obj
                            or isinstance(obj.get("id"), dict) or log_kind(obj) is not None)


def sniff(path: Path, head: bytes) -> bool:
    """A ``#separator`` or ``#fields`` header, a ``tsv=T`` column row, or Zeek JSON lines."""
    text = head_text(head)
    if text is None:
        return False
    first = text.split("\n", 1)[0].rstrip("\r")
    if first.startswith(("#separator ", "#fields\t")):
        return True
    cols = first.split("\t")
    if len(cols) > 3 and cols[0] == "ts" and ("uid" in cols or "id.orig_h" in cols):
        return True
    return json_head(text, _zeek_json)


class _Layout:
    """The header state of a TSV log: separators, field names and how to read each value."""

    def __init__(self, default_path: str | None) -> None:
        self.sep, self.set_sep, self.empty, self.unset = "\t", ",", "(empty)", "-"
        self.default_path = self.path = default_path
        self.kind: str | None = None             # the log the data lines belong to
        self.fields: list[str] = []
        self.types: list[str] = []
        self.texts: list[tuple[int, str]] = []       # (index, name) of string-like fields
        self.lists: list[tuple[int, str]] = []       # … and of sets and vectors
        self.text_at: frozenset[int] = frozenset()

    def header(self, line: str) -> None:
        if line.startswith("#separator "):      # a new header block: rotated logs concatenated
            self.sep = unescape(line[11:]) or "\t"
            self.path, self.fields, self.types = self.default_path, [], []
            self._replan()
            return
        key, _, value = line[1:].partition(self.sep)
        if key == "set_separator":
            self.set_sep = unescape(value) or ","
        elif key == "empty_field":
            self.empty = value
        elif key == "unset_field":
            self.unset = value
        elif key == "path":
            self.path = value
            self._replan()
        elif key == "fields":
            self.fields, self.types = value.split(self.sep), []
            self._replan()
        elif key == "types":
            self.types = value.split(self.sep)
            self._replan()

    def _replan(self) -> None:
        texts, lists = [], []
        for i, name in enumerate(self.fields):
            typ = self.types[i] if i < len(self.types) else ""
            if typ.startswith(("set[", "vector[", "table[")) or (not typ and name in _LISTS):
                lists.append((i, name))
            elif typ in _TEXT_TYPES:
                texts.append((i, name))
        self.texts, self.lists = texts, lists
        self.text_at = frozenset(i for i, _ in texts)
        self.kind = self.path or log_kind(self.fields)

    def record(self, line: str) -> Row | None:
        values = line.split(self.sep)
        if len(values) != len(self.fields):
            return None
        unset, empty = self.unset, self.empty
        rec: Row = {name: v for name, v in zip(self.fields, values, strict=True) if v != unset}
        # Escapes and empty strings are rare: look for them in the line before the values.
        if "\\" in line:
            for i, name in self.texts:
                if "\\x" in values[i] and values[i] != unset:
                    rec[name] = unescape(values[i])
        if empty in line:
            at = -1
            with contextlib.suppress(ValueError):       # raised after the last one
                while True:
                    at = values.index(empty, at + 1)
                    if at in self.text_at:
                        rec[self.fields[at]] = ""
        for i, name in self.lists:
            v = values[i]
            if v != unset:
                rec[name] = [] if v == empty else [unescape(x) for x in v.split(self.set_sep)]
        return rec


def parse(ctx: SourceContext) -> Iterator[Batch]:
    host = host_id(ctx.host)
    problems = Problems()
    skipped: Counter[str] = Counter()
    batcher = Batcher()
    named = _NAMED.search(ctx.path.name.lower())
    layout = _Layout(named.group(1) if named else None)
    kinds: dict[tuple[str, ...], str | None] = {}
    for number, line in read_lines(ctx.path, problems):
        if not line:
            continue
        if line[0] == "#":
            layout.header(line)
            continue
        if line[0] == "{":
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                problems.add(number, f"not JSON ({exc})")
                continue
            if not isinstance(rec, dict) or "ts" not in rec:
                problems.add(number, "not a Zeek record")
                continue
            if isinstance(rec.get("id"), dict):
                rec.update({f"id.{k}": v for k, v in rec.pop("id").items()})
            kind = rec.get("_path")
            if not isinstance(kind, str):
                keys = tuple(rec)
                if keys not in kinds:
                    if len(kinds) > 4096:             # bounded: hostile files vary their keys
                        kinds.clear()
                    kinds[keys] = log_kind(keys) or layout.default_path
                kind = kinds[keys]
        elif not layout.fields and "\t" in line and line.startswith("ts\t"):
            layout.header("#fields\t" + line)            # ``tsv=T``: one row of column names
            continue
        else:
            if not layout.fields:
                problems.add(number, "data before a #fields header")
                continue
            rec = layout.record(line)
            if rec is None:
                problems.add(number, f"{len(line.split(layout.sep))} fields where the header has "
                                     f"{len(layout.fields)}")
                continue
            kind = layout.kind
        mapper = MAPPERS.get(kind or "")
        if mapper is None:
            name = (kind or "unknown")[:40]
            skipped[name if len(skipped) < 100 or name in skipped else "other"] += 1
            continue
        table, row = mapper(rec, host)
        row["source"], row["source_line"] = ctx.display, number
        if table == "events":
            row["raw"] = line[:RAW_CAP]
        if full := batcher.add(table, row):
            yield full
    yield from batcher.flush()
    if skipped:
        problems.notes.append(skipped_note("zeek", skipped, "lines of logs"))
    yield from problems.batch(ctx, "zeek")


SOURCE = Source("zeek", sniff, parse)
