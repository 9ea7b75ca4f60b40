"""One merged timeline of the outbreak, in Timesketch's import format.

Entries, deduplicated by (time, host, message) and sorted by time, host, rule, message:

- every finding at its first-seen time (``timestamp_desc`` "Finding first seen");
- the log records and flows behind the findings: the rows their evidence points to by
  ``source`` + ``source_line`` / ``record`` / ``first_record`` ("Event time", "Flow start");
- registry values of note and USB storage arrivals ("Registry key last written");
- each host's infection time and each infection edge, when correlate has filled
  ``host_verdicts`` and ``infection_edges`` ("Infection time", "Lateral movement").

Hosts are canonical ids (``identity.py``), so a Windows log's FQDN and the bundle's short name
land on one host. ``write_timeline(case, dir)`` writes ``timeline.jsonl`` and ``timeline.csv``
with Timesketch's fields ``message``, ``timestamp`` (microseconds since the epoch),
``datetime`` (ISO 8601, UTC) and ``timestamp_desc``, plus ``host``, ``rule``, ``severity``,
``source`` (the evidence file and line), ``plane`` (windows, linux, web, network, host,
correlate) and ``finding_id``. Entries without a time cannot be placed and are left out.
Text from evidence has control characters escaped (``textsafe.clean``); in the CSV a cell that
starts with ``= + - @`` gets a leading ``'`` so a spreadsheet never runs it as a formula.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from deminer.case import Case
from deminer.correlate.facts import Fact, load_facts
from deminer.correlate.identity import Identity, resolve_identity
from deminer.model import severity_rank
from deminer.textsafe import clean

FIELDS = ("message", "timestamp", "datetime", "timestamp_desc", "host", "rule", "severity", "source",
          "plane", "finding_id")
_LINE_KEYS = ("source_line", "record", "first_record", "line")


@dataclass(frozen=True)
class TimelineEntry:
    ts: dt.datetime
    message: str
    timestamp_desc: str
    host: str | None
    rule: str
    severity: str
    source: str
    plane: str
    finding_id: str | None = None

    def record(self) -> dict[str, Any]:
        """The Timesketch row."""
        stamp = self.ts.replace(tzinfo=dt.UTC)
        # Plain attribute reads: ``dataclasses.asdict`` deep-copies every field, which was a
        # third of the timeline's time at 60,000 entries.
        return {"message": self.message, "timestamp": int(stamp.timestamp() * 1_000_000),
                "datetime": stamp.isoformat(), **{k: getattr(self, k) for k in FIELDS[3:]}}


def plane(rule: str) -> str:
    if ".net_" in rule or rule.startswith("events.flow"):
        return "network"
    if ".win_" in rule or "evidence_" in rule or rule.startswith("events.registry"):
        return "windows"
    if ".web_" in rule or ".webshell" in rule:
        return "web"
    return "host"


def _finding_entries(facts: list[Fact]) -> list[TimelineEntry]:
    return [TimelineEntry(f.ts, clean(f"[{f.severity}] {f.summary}"), "Finding first seen", f.host, f.rule,
                          f.severity, clean(f.ev("source") or "findings", 500), plane(f.rule), f.id)
            for f in facts if f.ts is not None]


def _refs(facts: list[Fact]) -> dict[tuple[str, int], Fact]:
    """(file, line or record) -> the most severe finding that points at it."""
    refs: dict[tuple[str, int], Fact] = {}
    for f in sorted(facts, key=lambda f: (-severity_rank(f.severity), f.ts or dt.datetime.max, f.id)):
        src = f.ev("source")
        for key in _LINE_KEYS:
            line = f.ev_int(key)
            if src and line:
                refs.setdefault((src, line), f)
    return refs


def _event_entries(case: Case, ident: Identity, facts: list[Fact]) -> list[TimelineEntry]:
    refs = _refs(facts)
    keys = sorted(refs)
    if not keys:
        return []
    table = pa.table({"source": pa.array([k[0] for k in keys], pa.string()),
                      "line": pa.array([k[1] for k in keys], pa.int64())})
    out = []
    with case.registered("_refs", table) as db:
        # Two equi-joins, not one join on "line = source_line OR line = record_id": with an OR
        # DuckDB can hash only on source, and one big log is one source, so every event met
        # every finding (11 s at 500k auth.log lines, growing with the square).
        cols = ("e.ts, e.host, e.event, e.program, e.user, e.src_ip, e.process, e.command, e.status, "
                "e.raw, e.source, coalesce(e.source_line, e.record_id) AS line, k.line AS ref")
        events = db.execute(
            f"SELECT * FROM (SELECT {cols} FROM events e JOIN _refs k "
            "ON e.source = k.source AND e.source_line = k.line WHERE e.ts IS NOT NULL "
            f"UNION SELECT {cols} FROM events e JOIN _refs k "
            "ON e.source = k.source AND e.record_id = k.line WHERE e.ts IS NOT NULL) "
            "ORDER BY ts LIMIT 200000").fetchall()
        flows = db.execute(
            "SELECT f.ts, f.host, f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.proto, f.app, f.state, "
            "f.bytes, f.source, f.source_line, k.line FROM flows f "
            "JOIN _refs k ON f.source = k.source AND f.source_line = k.line "
            "WHERE f.ts IS NOT NULL ORDER BY f.ts LIMIT 200000").fetchall()
    for ts, host, event, program, user, src_ip, process, command, status, raw, source, line, ref in events:
        f = refs[(source, ref)]
        bits = [f"{event or 'event'}", f"({program})" if program else "", f"user {user}" if user else "",
                f"from {src_ip}" if src_ip else "", str(process or command or ""),
                f"status {status}" if status else ""]
        text = " ".join(b for b in bits if b) + (f" | {raw}" if raw else "")
        out.append(TimelineEntry(ts, clean(text), "Event time", ident.canonical(host), f.rule, f.severity,
                                 clean(f"{source}:{line}", 500), plane(f.rule), f.id))
    for ts, host, sip, sport, dip, dport, proto, app, state, size, source, line, ref in flows:
        f = refs[(source, ref)]
        text = (f"flow {sip}:{sport} → {dip}:{dport} {proto or ''} {app or ''} state {state or '?'} "
                f"{size or 0} bytes")
        who = ident.canonical(host) if host else ident.host_for_ip(sip, ts) or sip
        out.append(TimelineEntry(ts, clean(text), "Flow start", who, f.rule, f.severity,
                                 clean(f"{source}:{line}", 500), "network", f.id))
    return out


def _registry_entries(case: Case, ident: Identity) -> list[TimelineEntry]:
    out = []
    for r in case.query("SELECT ts, host, event, data, source FROM events WHERE event IN "
                        "('registry_value', 'usb_device') AND ts IS NOT NULL ORDER BY ts LIMIT 100000"):
        what = "USB storage device" if r["event"] == "usb_device" else "Registry value"
        out.append(TimelineEntry(r["ts"], clean(f"{what}: {r['data']}"), "Registry key last written",
                                 ident.canonical(r["host"]), f"events.{r['event']}", "info",
                                 clean(r["source"] or "", 500), "windows"))
    return out


def _correlate_entries(case: Case) -> list[TimelineEntry]:
    out = []
    for r in case.query("SELECT host, infected_at, reason FROM host_verdicts "
                        "WHERE infected_at IS NOT NULL ORDER BY infected_at, host"):
        out.append(TimelineEntry(r["infected_at"], clean(f"{r['host']} infected: {r['reason']}"),
                                 "Infection time", r["host"], "correlate.infection", "critical",
                                 "host_verdicts", "correlate"))
    for r in case.query("SELECT * FROM infection_edges WHERE ts IS NOT NULL ORDER BY ts, src_host, dst_host"):
        ids = ",".join(r["findings"] or [])
        out.append(TimelineEntry(
            r["ts"], clean(f"{r['src_host']} → {r['dst_host']} via {r['technique']} ({r['confidence']}): "
                           f"{r['reason']}"), "Lateral movement", r["dst_host"], "correlate.edge", "high",
            "infection_edges", "correlate", ids or None))
    return out


def build_timeline(case: Case, ident: Identity | None = None) -> list[TimelineEntry]:
    """The merged, deduplicated, sorted timeline of ``case``."""
    ident = ident or resolve_identity(case)
    facts = load_facts(case, ident.aliases)
    entries = [*_finding_entries(facts), *_event_entries(case, ident, facts),
               *_registry_entries(case, ident), *_correlate_entries(case)]
    seen: set[tuple[dt.datetime, str, str]] = set()
    out = []
    for e in sorted(entries, key=lambda e: (e.ts, e.host or "", e.rule, e.message)):
        key = (e.ts, e.host or "", e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _cell(value: Any) -> Any:
    """Evidence text that a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def write_timeline(case: Case, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``timeline.jsonl`` and ``timeline.csv`` into ``out_dir``; returns both paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [e.record() for e in build_timeline(case)]
    jsonl, csv_path = folder / "timeline.jsonl", folder / "timeline.csv"
    with jsonl.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return jsonl, csv_path
