"""Suricata eve.json → ``events`` (alerts), ``flows`` and ``dns``.

One JSON object per line; ``event_type`` says what it is:

    alert   events ``ids_alert``: src/dst ip and ports, status = the action (allowed/blocked),
            data: signature, signature_id, category, severity, gid, rev, flow_id, app_proto,
            community_id, metadata, and the hostname/url/sni/rrname the alert carries
    flow    flows: ts = flow.start, duration = end − start, bytes/packets both directions
            (data: orig_/resp_bytes and _pkts = toserver/toclient; Suricata counts whole
            packets, so these are IP-level, not payload as in Zeek), app = app_proto (none when
            detection ``failed``), state in Zeek's ``conn_state`` words worked out from the TCP
            flags each side sent (S0, REJ, SF, S1, S2, S3, RSTO, RSTR, SH, OTH); data keeps
            Suricata's own flow_state, reason and flags
    tls     flows app ``tls``: sni, version, ja3/ja3_hash, ja3s/ja3s_hash, ja4, cert_subject,
            cert_issuer, serial, fingerprint, not_before/not_after
    http    flows app ``http``: method, uri, host, user_agent, status, content_type, …
    ssh     flows app ``ssh``: client_banner, server_banner (``SSH-2.0-OpenSSH_8.9`` rebuilt)
    dns     dns: one row per question with its answers. Suricata logs the query and the answer
            apart (log version 1: one event per answer record; 2: one answer event with an
            ``answers`` list; 3 (Suricata 8): ``request``/``response`` with ``queries`` arrays,
            responses sent *from* the server), so questions wait, keyed by flow, DNS id and
            name, for their answer; unanswered ones are written with no answers
    other   counted by type in one ``errors`` row and not stored (stats, fileinfo, anomaly, …)

Rows of one connection share ``data.flow_id`` (and ``community_id`` when enabled), so rules
join them. Timestamps carry an offset (``+0000``, ``-0700``) and become naive UTC.
``flows.host`` stays NULL (sensor data) unless the user names a host. Unreadable lines are
skipped and summed in one ``errors`` row naming the first.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deminer.sources.base import Batch, Batcher, Source, SourceContext, host_id
from deminer.sources.netlog import (
    Problems,
    json_head,
    json_text,
    proto_name,
    read_lines,
    state_from_flags,
    to_int,
)
from deminer.sources.syslog_time import iso8601
from deminer.sources.textlog import head_text
from deminer.sources.zeek import RAW_CAP, skipped_note

Row = dict[str, Any]
PENDING_MAX = 100_000        # questions kept waiting for their answer; the oldest go out first
_APPS = {"failed": None, "unknown": None, "http2": "http", "krb5": "kerberos", "tls": "tls"}


def sniff(path: Path, head: bytes) -> bool:
    text = head_text(head)
    return text is not None and json_head(
        text, lambda o: isinstance(o.get("event_type"), str) and "timestamp" in o)


def when(value: Any) -> dt.datetime | None:
    """``2024-03-30T08:00:00.123456+0000`` (any offset) → naive UTC."""
    if not isinstance(value, str):
        return None
    if value.endswith("+0000"):
        try:
            return dt.datetime.fromisoformat(value[:-5])
        except ValueError:
            return None
    return iso8601(value)


def conn_state(proto: str | None, flow: Row, tcp: Row | None) -> str | None:
    """Zeek's ``conn_state`` from the flags each side sent (``tcp_flags_ts``/``_tc``, hex)."""
    to_client = to_int(flow.get("pkts_toclient")) or 0
    if proto != "tcp":
        return "SF" if to_client else "S0"     # the sensor saw every packet: no reply is S0
    if not tcp:
        return None
    try:
        ts, tc = int(str(tcp.get("tcp_flags_ts") or "0"), 16), int(str(tcp.get("tcp_flags_tc") or "0"), 16)
    except ValueError:
        return None
    return state_from_flags(ts, tc, bool(to_client and tc))


def _base(ev: Row, host: str | None) -> Row:
    return {"host": host, "ts": when(ev.get("timestamp")), "src_ip": ev.get("src_ip"),
            "src_port": to_int(ev.get("src_port")), "dst_ip": ev.get("dest_ip"),
            "dst_port": to_int(ev.get("dest_port")), "proto": proto_name(ev.get("proto"))}


def _sub(ev: Row, key: str) -> Row:
    value = ev.get(key)
    return value if isinstance(value, dict) else {}


def _ids(ev: Row) -> Row:
    return {"flow_id": ev.get("flow_id"), "community_id": ev.get("community_id")}


def _app(value: Any) -> str | None:
    text = str(value).lower() if value else None
    return _APPS.get(text, text) if text else None


def _flow(ev: Row, host: str | None) -> Row:
    flow, tcp = _sub(ev, "flow"), _sub(ev, "tcp")
    row = _base(ev, host)
    start, end = when(flow.get("start")), when(flow.get("end"))
    ob, rb = to_int(flow.get("bytes_toserver")), to_int(flow.get("bytes_toclient"))
    op, rp = to_int(flow.get("pkts_toserver")), to_int(flow.get("pkts_toclient"))
    row.update(ts=start or row["ts"], app=_app(ev.get("app_proto")),
               state=conn_state(row["proto"], flow, tcp),
               bytes=(ob or 0) + (rb or 0) if ob is not None or rb is not None else None,
               packets=(op or 0) + (rp or 0) if op is not None or rp is not None else None,
               duration=(end - start).total_seconds() if start and end else None)
    row["data"] = json_text({
        **_ids(ev), "orig_bytes": ob, "resp_bytes": rb, "orig_pkts": op, "resp_pkts": rp,
        "flow_state": flow.get("state"), "reason": flow.get("reason"), "alerted": flow.get("alerted"),
        "tcp_flags_ts": tcp.get("tcp_flags_ts"), "tcp_flags_tc": tcp.get("tcp_flags_tc"),
        "tcp_state": tcp.get("state"),
        "app_proto": ev.get("app_proto")})
    return row


def _tls(ev: Row, host: str | None) -> Row:
    t = _sub(ev, "tls")
    ja3, ja3s = _sub(t, "ja3"), _sub(t, "ja3s")
    row = _base(ev, host)
    row["app"] = "tls"
    row["data"] = json_text({
        **_ids(ev), "sni": t.get("sni"), "version": t.get("version"), "cert_subject": t.get("subject"),
        "cert_issuer": t.get("issuerdn"), "serial": t.get("serial"), "fingerprint": t.get("fingerprint"),
        "not_before": t.get("notbefore"), "not_after": t.get("notafter"), "ja3": ja3.get("string"),
        "ja3_hash": ja3.get("hash"), "ja3s": ja3s.get("string"), "ja3s_hash": ja3s.get("hash"),
        "ja4": t.get("ja4")})
    return row


def _http(ev: Row, host: str | None) -> Row:
    h = _sub(ev, "http")
    row = _base(ev, host)
    row["app"] = "http"
    row["data"] = json_text({
        **_ids(ev), "method": h.get("http_method"), "uri": h.get("url"), "host": h.get("hostname"),
        "user_agent": h.get("http_user_agent"), "status": to_int(h.get("status")),
        "content_type": h.get("http_content_type"), "referrer": h.get("http_refer"),
        "protocol": h.get("protocol"), "length": to_int(h.get("length")), "tx_id": ev.get("tx_id")})
    return row


def _banner(side: Any) -> str | None:
    if not isinstance(side, dict) or not side.get("software_version"):
        return None
    return f"SSH-{side.get('proto_version') or '2.0'}-{side['software_version']}"


def _ssh(ev: Row, host: str | None) -> Row:
    s = _sub(ev, "ssh")
    client, server = _sub(s, "client"), _sub(s, "server")
    row = _base(ev, host)
    row["app"] = "ssh"
    row["data"] = json_text({
        **_ids(ev), "client_banner": _banner(client), "server_banner": _banner(server),
        "hassh": _sub(client, "hassh").get("hash"), "hassh_server": _sub(server, "hassh").get("hash")})
    return row


def _alert(ev: Row, host: str | None, raw: str) -> Row:
    a, dns = _sub(ev, "alert"), _sub(ev, "dns")
    queries = dns.get("queries")
    first = queries[0] if isinstance(queries, list) and queries and isinstance(queries[0], dict) else {}
    row = _base(ev, host)
    del row["proto"]
    # what the alerting transaction was about, when the alert record carries it
    context = {"hostname": _sub(ev, "http").get("hostname"), "url": _sub(ev, "http").get("url"),
               "sni": _sub(ev, "tls").get("sni"),
               "rrname": dns.get("rrname") or first.get("rrname")}
    row.update(event="ids_alert", program="suricata", status=a.get("action"), raw=raw[:RAW_CAP])
    row["data"] = json_text({
        "signature": a.get("signature"), "signature_id": to_int(a.get("signature_id")),
        "category": a.get("category"), "severity": to_int(a.get("severity")), "gid": to_int(a.get("gid")),
        "rev": to_int(a.get("rev")), **_ids(ev), "proto": proto_name(ev.get("proto")),
        "app_proto": ev.get("app_proto"), "metadata": a.get("metadata"), **context})
    return row


def _qname(name: Any) -> str | None:
    return str(name).lower().rstrip(".") if name is not None else None


class _Lookups:
    """Pairs DNS questions with their answers across the events of log versions 1, 2 and 3."""

    def __init__(self, host: str | None) -> None:
        self.host = host
        self.pending: dict[tuple[Any, ...], Row] = {}
        self.by_txn: dict[tuple[Any, Any], tuple[Any, ...]] = {}   # (flow, DNS id) → first question
        self.ready: list[Row] = []

    def _row(self, ev: Row, name: Any, rrtype: Any, client: Any) -> Row:
        return {"host": self.host, "ts": when(ev.get("timestamp")), "client": client, "qname": _qname(name),
                "qtype": rrtype, "answers": None, "rcode": None}

    def _wait(self, key: tuple[Any, ...], row: Row) -> None:
        if key not in self.pending:
            self.pending[key] = row
            self.by_txn.setdefault(key[:2], key)
            if len(self.pending) > PENDING_MAX:
                self.ready.append(self.pending.pop(next(iter(self.pending))))
            if len(self.by_txn) > 2 * PENDING_MAX:       # drop entries of questions gone out
                self.by_txn = {k: v for k, v in self.by_txn.items() if v in self.pending}

    def add(self, ev: Row, source: str, line: int) -> None:
        d = ev["dns"]
        kind, version, fid, txn = d.get("type"), d.get("version"), ev.get("flow_id"), d.get("id")
        # keys of the waiting questions: hostile records may put lists where numbers belong
        fid, txn = (v if isinstance(v, (int, str)) else None for v in (fid, txn))
        if kind in ("query", "request"):
            queries = d.get("queries") if isinstance(d.get("queries"), list) else [d]
            for q in queries:
                if isinstance(q, dict):
                    row = self._row(ev, q.get("rrname"), q.get("rrtype"), ev.get("src_ip"))
                    row.update(source=source, source_line=line)
                    self._wait((fid, txn, row["qname"]), row)
            return
        if kind not in ("answer", "response"):
            return
        # v3 responses come from the server; v1/v2 answers keep the client as src_ip
        client = ev.get("dest_ip") if version == 3 else ev.get("src_ip")
        listed = d.get("answers") if isinstance(d.get("answers"), list) else []
        answers = [str(a["rdata"]) for a in listed if isinstance(a, dict) and "rdata" in a]
        if not answers and isinstance(d.get("grouped"), dict):
            answers = [str(v) for vs in d["grouped"].values() if isinstance(vs, list) for v in vs]
        if version in (2, 3) or "answers" in d or "grouped" in d or "queries" in d:
            queries = d.get("queries") if isinstance(d.get("queries"), list) else [d]
            for q in queries:
                if not isinstance(q, dict):
                    continue
                asked = self.pending.pop((fid, txn, _qname(q.get("rrname"))), None)
                if asked is None:                # its query was not logged: the answer stands alone
                    asked = self._row(ev, q.get("rrname"), q.get("rrtype"), client)
                asked.setdefault("source", source)
                asked.setdefault("source_line", line)
                asked.update(answers=answers, rcode=d.get("rcode"))
                self.ready.append(asked)
            return
        # v1: one event per answer record, named by the record's owner (a CNAME chain differs
        # from the question), so records gather on the transaction's first waiting question
        key = self.by_txn.get((fid, txn))
        if key is None or key not in self.pending:
            key = (fid, txn, _qname(d.get("rrname")))
            row = self._row(ev, d.get("rrname"), d.get("rrtype"), client)
            row.update(source=source, source_line=line)
            self._wait(key, row)
        waiting = self.pending.get(key)
        if waiting is not None:
            waiting["rcode"] = d.get("rcode")
            waiting["answers"] = [*(waiting["answers"] or []), *([str(d["rdata"])] if "rdata" in d else [])]

    def take(self, final: bool = False) -> list[Row]:
        out, self.ready = self.ready, []
        if final:
            out.extend(self.pending.values())
            self.pending, self.by_txn = {}, {}
        return out


def parse(ctx: SourceContext) -> Iterator[Batch]:
    host = host_id(ctx.host)
    problems = Problems()
    skipped: Counter[str] = Counter()
    batcher = Batcher()
    lookups = _Lookups(host)
    mappers = {"flow": _flow, "tls": _tls, "http": _http, "ssh": _ssh}
    for number, line in read_lines(ctx.path, problems):
        if not line.strip():
            continue
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.add(number, f"not JSON ({exc})")
            continue
        kind = ev.get("event_type") if isinstance(ev, dict) else None
        if not isinstance(kind, str):
            problems.add(number, "not an eve record (no event_type)")
            continue
        if kind == "alert":
            table, row = "events", _alert(ev, host, line)
        elif kind in mappers:
            table, row = "flows", mappers[kind](ev, host)
        elif kind == "dns" and isinstance(ev.get("dns"), dict):
            lookups.add(ev, ctx.display, number)
            for row in lookups.take():
                if full := batcher.add("dns", row):
                    yield full
            continue
        else:
            skipped[kind[:40] if len(skipped) < 100 or kind[:40] in skipped else "other"] += 1
            continue
        row["source"], row["source_line"] = ctx.display, number
        if full := batcher.add(table, row):
            yield full
    for row in lookups.take(final=True):
        if full := batcher.add("dns", row):
            yield full
    yield from batcher.flush()
    if skipped:
        problems.notes.append(skipped_note("suricata", skipped, "events of types"))
    yield from problems.batch(ctx, "suricata")


SOURCE = Source("suricata", sniff, parse)
