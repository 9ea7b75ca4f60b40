"""The outbreak as the report sees it, read once from the case, and its machine exports.

``load_hosts`` and ``load_edges`` read what correlate wrote (``host_verdicts``,
``infection_edges``) joined with ``hosts`` and the finding counts; every report output
(``hosts.jsonl``, ``graph.json``, the HTML page and its SVG graph) is drawn from them::

    HostView  host, verdict (infected/suspicious/clean/unknown), infected_at, patient_zero,
              entry_vector, reason, missing, at_risk, ips, counts of findings by severity
    EdgeView  src -> dst, technique, ts, attack, confidence, reason, finding ids

When correlate has not run (no ``host_verdicts`` rows) every host still appears, with a
verdict derived from its findings and ``correlated`` false, so a detect-only case reports too.
``timeline`` is the one place the merged timeline comes from (findings and infection edges by
time until ``deminer.correlate.timeline`` lands). Exports are deterministic: sorted rows, no
wall clock, timestamps as ISO 8601 UTC with ``Z``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.model import SEVERITIES, severity_rank

VERDICTS: tuple[str, ...] = ("infected", "suspicious", "clean", "unknown")
# Severity as a number in SQL (unknown names below info), for "most severe first".
RANK_SQL = ("CASE severity " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SEVERITIES))
            + " ELSE -1 END")


@dataclass(frozen=True)
class HostView:
    host: str
    verdict: str
    infected_at: dt.datetime | None = None
    first_finding: str | None = None
    reason: str | None = None
    missing: tuple[str, ...] = ()
    clock_skew_seconds: float | None = None
    patient_zero: bool = False
    entry_vector: str | None = None
    at_risk: tuple[str, ...] = ()
    hostname: str | None = None
    os: str | None = None
    ips: tuple[str, ...] = ()
    findings: dict[str, int] = field(default_factory=dict)   # severity -> count
    correlated: bool = True

    @property
    def total(self) -> int:
        return sum(self.findings.values())

    @property
    def worst(self) -> str | None:
        ranked = [s for s in self.findings if self.findings[s]]
        return max(ranked, key=severity_rank) if ranked else None


@dataclass(frozen=True)
class EdgeView:
    src: str
    dst: str
    technique: str
    ts: dt.datetime | None
    attack: tuple[str, ...] = ()
    confidence: str | None = None
    reason: str | None = None
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimelineEntry:
    ts: dt.datetime | None
    host: str | None
    severity: str
    kind: str          # "finding" or "spread"
    title: str
    summary: str
    ref: str           # finding id, or "src -> dst" for a spread edge


@dataclass(frozen=True)
class Timeline:
    entries: list[TimelineEntry]
    total: int          # findings + edges in the case
    min_severity: str   # the lowest finding severity shown


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with ``Z`` (the case stores naive UTC)."""
    return value.isoformat() + "Z" if value is not None else None


def text_list(value: Any) -> tuple[str, ...]:
    """``missing``/``at_risk`` as a list: correlate stores them joined by ``"; "``; a JSON list
    is read as one too."""
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if v not in (None, ""))
    text = str(value)
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return (text,)
        if isinstance(parsed, list):
            return tuple(str(v) for v in parsed if v not in (None, ""))
    return tuple(part.strip() for part in text.split("; ") if part.strip())


def _counts(case: Case) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in case.query("SELECT host, severity, count(*) AS n FROM findings "
                          "WHERE host IS NOT NULL GROUP BY host, severity"):
        out.setdefault(str(row["host"]), {})[str(row["severity"])] = int(row["n"])
    return out


def _derived(counts: dict[str, int]) -> tuple[str, str]:
    # Without correlate, findings alone never prove an infection: high ones make a host
    # suspicious, anything else leaves it unknown (no finding is not proof of clean either).
    worst = max((s for s in counts if counts[s]), key=severity_rank, default=None)
    if worst in ("high", "critical"):
        return "suspicious", f"not correlated; highest finding severity is {worst}"
    if worst:
        return "unknown", f"not correlated; highest finding severity is {worst}"
    return "unknown", "not correlated; no findings"


def load_hosts(case: Case) -> list[HostView]:
    """Every host the case knows (hosts table, verdicts, findings, edge ends), patient zero
    first, then by verdict, infection time and name."""
    counts = _counts(case)
    inventory = {str(r["host"]): r for r in case.query(
        "SELECT host, any_value(hostname) AS hostname, any_value(os) AS os, "
        "flatten(list(ips)) AS ips FROM hosts WHERE host IS NOT NULL GROUP BY host")}
    verdicts = {str(r["host"]): r for r in case.query(
        "SELECT * FROM host_verdicts WHERE host IS NOT NULL ORDER BY host, infected_at NULLS LAST")}
    correlated = bool(verdicts)
    names = set(inventory) | set(verdicts) | set(counts)
    for row in case.query("SELECT src_host, dst_host FROM infection_edges"):
        names.update(str(h) for h in (row["src_host"], row["dst_host"]) if h)
    out = []
    for name in names:
        inv, ver, cnt = inventory.get(name, {}), verdicts.get(name), counts.get(name, {})
        common: dict[str, Any] = {"host": name, "hostname": inv.get("hostname"), "os": inv.get("os"),
                  "ips": tuple(sorted({str(i) for i in inv.get("ips") or () if i})),
                  "findings": dict(sorted(cnt.items(), key=lambda kv: -severity_rank(kv[0])))}
        if ver is not None:
            verdict = str(ver.get("verdict") or "unknown").lower()
            out.append(HostView(
                verdict=verdict if verdict in VERDICTS else "unknown",
                infected_at=ver.get("infected_at"), first_finding=ver.get("first_finding"),
                reason=ver.get("reason") if verdict in VERDICTS
                else f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}; {ver.get('reason') or ''}",
                missing=text_list(ver.get("missing")),
                clock_skew_seconds=ver.get("clock_skew_seconds"),
                patient_zero=bool(ver.get("patient_zero")), entry_vector=ver.get("entry_vector"),
                at_risk=text_list(ver.get("at_risk")), correlated=True, **common))
        else:
            verdict, reason = _derived(cnt)
            if correlated:
                reason = "correlate gave no verdict for this host"
            out.append(HostView(verdict=verdict, reason=reason, correlated=False, **common))
    far = dt.datetime.max
    out.sort(key=lambda h: (not h.patient_zero, VERDICTS.index(h.verdict), h.infected_at or far,
                            h.host))
    return out


def load_edges(case: Case) -> list[EdgeView]:
    """Infection edges in time order (undated last)."""
    return [EdgeView(src=str(r["src_host"]), dst=str(r["dst_host"]),
                     technique=str(r["technique"] or "unknown"), ts=r["ts"],
                     attack=tuple(r["attack"] or ()), confidence=r["confidence"], reason=r["reason"],
                     findings=tuple(r["findings"] or ()))
            for r in case.query(
                "SELECT * FROM infection_edges WHERE src_host IS NOT NULL AND dst_host IS NOT NULL "
                "ORDER BY ts NULLS LAST, src_host, dst_host, technique")]


def timeline(case: Case, edges: list[EdgeView], cap: int = 1000) -> Timeline:
    """The merged timeline, at most ``cap`` entries in time order: every infection edge, then
    the most severe findings (earliest first within a severity) when there are too many; the
    full list is ``findings.jsonl``."""
    total = int(case.query("SELECT count(*) AS n FROM findings")[0]["n"])
    rows = case.query(
        f"SELECT id, ts, host, severity, title, summary FROM findings ORDER BY {RANK_SQL} DESC, "
        "ts NULLS LAST, host, id LIMIT ?", [max(cap - len(edges), 0)])
    entries = [TimelineEntry(r["ts"], r["host"], str(r["severity"]), "finding", str(r["title"] or ""),
                             str(r["summary"] or ""), str(r["id"] or "")) for r in rows]
    entries += [TimelineEntry(e.ts, e.dst, "high", "spread", f"{e.src} \u2192 {e.dst}: {e.technique}",
                              e.reason or "", f"{e.src} -> {e.dst}") for e in edges[:cap]]
    entries.sort(key=lambda e: (e.ts or dt.datetime.max, e.kind != "spread", e.host or "", e.ref))
    floor = min((r["severity"] for r in rows), key=severity_rank, default=SEVERITIES[0])
    return Timeline(entries, total + len(edges), str(floor))


def host_findings(case: Case, hosts: list[str], cap: int) -> dict[str, list[dict[str, Any]]]:
    """The ``cap`` most severe (then earliest) findings of each host in ``hosts``."""
    if not hosts:
        return {}
    rows = case.query(
        f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY host ORDER BY {RANK_SQL} DESC, "
        "ts NULLS LAST, id) AS n FROM findings WHERE list_contains(?, host)) WHERE n <= ? "
        f"ORDER BY host, n", [hosts, cap])
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["host"]), []).append(row)
    return out


def host_record(h: HostView) -> dict[str, Any]:
    """One line of ``hosts.jsonl``."""
    return {"host": h.host, "hostname": h.hostname, "os": h.os, "ips": list(h.ips),
            "verdict": h.verdict, "infected_at": iso(h.infected_at), "first_finding": h.first_finding,
            "reason": h.reason, "missing": list(h.missing), "clock_skew_seconds": h.clock_skew_seconds,
            "patient_zero": h.patient_zero, "entry_vector": h.entry_vector, "at_risk": list(h.at_risk),
            "findings": h.findings, "findings_total": h.total, "correlated": h.correlated}


def graph_document(hosts: list[HostView], edges: list[EdgeView]) -> dict[str, Any]:
    """``graph.json``: every host as a node and every infection edge, complete (the drawn
    graph collapses large outbreaks; this file never does)."""
    return {
        "nodes": [{"id": h.host, "verdict": h.verdict, "infected_at": iso(h.infected_at),
                   "patient_zero": h.patient_zero, "entry_vector": h.entry_vector,
                   "reason": h.reason, "findings": h.total, "ips": list(h.ips)}
                  for h in sorted(hosts, key=lambda h: h.host)],
        "edges": [{"source": e.src, "target": e.dst, "technique": e.technique, "ts": iso(e.ts),
                   "attack": list(e.attack), "confidence": e.confidence, "reason": e.reason,
                   "findings": list(e.findings)} for e in edges],
    }


def _dump(obj: Any) -> str:
    # ensure_ascii keeps control and bidi characters as \\u escapes: safe to cat in a terminal.
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, default=str)


def write_hosts_jsonl(hosts: list[HostView], path: Path) -> int:
    with path.open("w", encoding="utf-8") as fh:
        for h in sorted(hosts, key=lambda h: h.host):
            fh.write(_dump(host_record(h)) + "\n")
    return len(hosts)


def write_graph_json(hosts: list[HostView], edges: list[EdgeView], path: Path) -> None:
    path.write_text(json.dumps(graph_document(hosts, edges), sort_keys=True, ensure_ascii=True,
                               indent=1, default=str) + "\n", encoding="utf-8")
