"""``report.html``: the whole case on one self-contained page a responder can open offline.

Sections, in order: summary (hosts by verdict, patient zero and entry vector with the
reasoning, time span), infection graph (inline SVG from ``graph_svg``), timeline, one section
per host (verdict, reason, missing evidence, infection time, findings by severity with
evidence excerpts), IOCs, and recommendations tied to what was found
(``templates/recommendations.yml``; only those something triggered, each naming what did).

Safety: every string from the case goes through ``graph_svg.esc`` (control and bidi
characters shown as escapes, markup characters as entities, length capped); ids and
``data-*`` attributes are derived hashes or numbers, never evidence. CSS and the small
timeline filter are inline, pinned by a Content-Security-Policy with their hashes and
``default-src 'none'``, so the page loads nothing from anywhere and nothing injected can run.

Size: large cases are capped (``Limits``) with a note at each cap saying where the full data
is (``findings.jsonl``, ``hosts.jsonl``, ``graph.json``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deminer.case import Case
from deminer.model import SEVERITIES, severity_rank
from deminer.report.exports import VERDICTS, EdgeView, HostView, Timeline, host_findings, timeline
from deminer.report.graph_svg import esc, host_anchor, render_graph
from deminer.report.stix import Ioc

TEMPLATES = Path(__file__).parent / "templates"
# Evidence keys worth showing, provenance first; the rest is in findings.jsonl.
_EV_KEYS = ("source", "location", "path", "file", "line", "source_line", "record_id", "records",
            "first_record", "pid", "ppid", "exe", "cmdline", "command", "user", "user.name", "source.ip",
            "destination.ip", "destination.port", "destination.domain", "raddr", "rport", "qname",
            "sha256", "exe_sha256", "pool", "wallet", "url", "fingerprint", "key_type", "comment", "count",
            "failures", "decoded", "flags", "targets", "signature")
_ID = re.compile(r"^[0-9a-f]{1,64}$")
_CITED = re.compile(r"\b[0-9a-f]{16}\b")      # a finding id as correlate cites it: [4fdf14f5ca648c8e]


@dataclass(frozen=True)
class Limits:
    hosts_detailed: int = 100      # hosts with their own section
    findings_per_host: int = 20
    evidence_keys: int = 10
    timeline: int = 1000
    other_hosts: int = 2000        # hosts in the compact table
    graph_nodes: int = 150
    triggers: int = 25             # per recommendation


def _ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "\u2014"


def _finding_anchor(fid: Any) -> str:
    text = str(fid or "")
    if _ID.match(text):
        return "f-" + text
    return "f-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def _cite(escaped: str, rendered: set[str]) -> str:
    """Escaped text with the finding ids it cites linked to those findings on this page."""
    return _CITED.sub(lambda m: f'<a href="#f-{m.group()}">{m.group()}</a>' if m.group() in rendered
                      else m.group(), escaped)


def _sev(severity: str) -> str:
    cls = severity if severity in SEVERITIES else "info"
    return f'<span class="sev {cls}">{esc(severity, 12)}</span>'


def _chip(verdict: str) -> str:
    return f'<span class="chip {verdict if verdict in VERDICTS else "unknown"}">{esc(verdict, 20)}</span>'


def _few(names: set[str], n: int) -> str:
    """Up to ``n`` names, escaped, and how many more."""
    more = f" +{len(names) - n}" if len(names) > n else ""
    return esc(", ".join(sorted(names)[:n]), 120 * n) + more


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _evidence(raw: Any, keys: int) -> str:
    try:
        ev = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        ev = {"raw": raw}
    if not isinstance(ev, dict):
        ev = {"value": ev}
    chosen: dict[str, str] = {}          # key -> text, a value shown once (source == location)
    for k in _EV_KEYS:
        v = ev.get(k)
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
        if v not in (None, "", []) and text not in chosen.values() and len(chosen) < keys:
            chosen[k] = text
    parts = [f"<b>{esc(k, 40)}</b>: {esc(text, 240)}" for k, text in chosen.items()]
    rest = len([k for k in ev if ev[k] not in (None, "", [])]) - len(chosen)
    if rest > 0:
        parts.append(f'<span class="note">+{rest} more fields in findings.jsonl</span>')
    return '<span class="ev">' + " \u00b7 ".join(parts) + "</span>" if parts else ""


def _summary(case: Case, hosts: Sequence[HostView], edges: Sequence[EdgeView], rendered: set[str]) -> str:
    by_verdict = {v: sum(1 for h in hosts if h.verdict == v) for v in VERDICTS}
    cards = "".join(f'<div class="card {v}"><b>{n}</b>{v}</div>' for v, n in by_verdict.items())
    sev = {str(r["severity"]): int(r["n"]) for r in case.query(
        "SELECT severity, count(*) AS n FROM findings GROUP BY severity")}
    span = case.query("SELECT min(ts) AS a, max(ts) AS b FROM (SELECT ts FROM findings UNION ALL "
                      "SELECT ts FROM infection_edges UNION ALL SELECT infected_at FROM host_verdicts)")[0]
    out = [f'<section id="summary"><h2>Summary</h2><div class="cards">{cards}'
           f'<div class="card"><b>{len(edges)}</b>infection edges</div></div>',
           "<p>Findings: " + (", ".join(f"{_sev(s)} {sev[s]}" for s in reversed(SEVERITIES) if sev.get(s))
                              or "none") + "</p>",
           f"<p>Time span of the evidence: <b>{_ts(span['a'])}</b> to <b>{_ts(span['b'])}</b> UTC</p>"]
    zeros = [h for h in hosts if h.patient_zero]
    for h in zeros:
        vector = esc(h.entry_vector or "not determined", 200)
        out.append(f'<div class="pz-box"><b>Patient zero: <a href="#{host_anchor(h.host)}">'
                   f'{esc(h.host, 120)}</a></b>, infected {_ts(h.infected_at)} UTC. Entry vector: '
                   f'<b>{vector}</b>.<div class="reason">Why: '
                   f'{_cite(esc(h.reason or "no reason recorded", 2000), rendered)}'
                   '</div></div>')
    # Infected hosts no edge leads to, other than patient zero: a second intrusion (two
    # outbreaks in one case) or spread the evidence does not show. Each has its own way in.
    for h in hosts:
        if h.verdict == "infected" and not h.patient_zero and h.entry_vector not in (None, "lateral"):
            out.append(f'<div class="pz-box entry-point"><b>Separate entry point: '
                       f'<a href="#{host_anchor(h.host)}">{esc(h.host, 120)}</a></b>, infected '
                       f'{_ts(h.infected_at)} UTC. Entry vector: <b>{esc(h.entry_vector or "", 200)}</b>. '
                       'No infection edge inside the case leads to it: another intrusion, or spread '
                       'the evidence does not show.<div class="reason">Why: '
                       f'{_cite(esc(h.reason or "no reason recorded", 2000), rendered)}</div></div>')
    if not zeros:
        why = ("correlation has not run on this case: verdicts are derived from findings only"
               if not any(h.correlated for h in hosts) else "correlation named no patient zero")
        out.append(f'<p class="pz-box">Patient zero: not determined ({why}).</p>')
    n_err = case.count("errors")
    if n_err:
        first = case.query("SELECT source, message FROM errors ORDER BY source, message LIMIT 10")
        items = "".join(f"<li><code>{esc(r['source'], 200)}</code>: {esc(r['message'], 400)}</li>"
                        for r in first)
        more = f"<li>\u2026 {n_err - 10} more in the case's errors table</li>" if n_err > 10 else ""
        out.append(f"<p>Inputs or stages with problems ({n_err}):</p><ul>{items}{more}</ul>")
    return "".join(out) + "</section>"


def _graph(hosts: Sequence[HostView], edges: Sequence[EdgeView], limits: Limits) -> str:
    legend = "".join(f'<span>{_chip(v)}</span>' for v in VERDICTS)
    if not edges and not any(h.verdict in ("infected", "suspicious") for h in hosts):
        body = '<p class="note">No infected or suspicious host and no infection edge: nothing to draw.</p>'
    else:
        body = f'<div class="graph-wrap">{render_graph(hosts, edges, limits.graph_nodes)}</div>'
    return (f'<section id="graph"><h2>Infection graph</h2><p class="legend">{legend}'
            '<span>\u2605 / thick border: patient zero</span><span>dashed red: against infection order</span>'
            f'</p>{body}<p class="note">Left to right by infection time. Hover an edge for its reason; '
            'click a host for its section. Every host and edge is in graph.json.</p></section>')


def _timeline(tl: Timeline, hosts: Sequence[HostView], rendered: set[str]) -> str:
    options = "".join(f'<option value="{host_anchor(h.host)}">{esc(h.host, 60)}</option>'
                      for h in sorted(hosts, key=lambda h: h.host)[:2000])
    sev_opts = "".join(f'<option value="{i}">{s} and above</option>' for i, s in enumerate(SEVERITIES))
    rows = []
    for e in tl.entries:
        ref = (f'<a href="#{_finding_anchor(e.ref)}">{esc(e.title, 200)}</a>'
               if _finding_anchor(e.ref)[2:] in rendered else esc(e.title, 200))
        host = (f'<a href="#{host_anchor(e.host)}">{esc(e.host, 80)}</a>' if e.host else "\u2014")
        rows.append(f'<tr class="{e.kind}" data-host="{host_anchor(e.host) if e.host else ""}" '
                    f'data-sev="{max(severity_rank(e.severity), 0)}"><td>{_ts(e.ts)}</td><td>{host}</td>'
                    f'<td>{_sev(e.severity) if e.kind == "finding" else "spread"}</td>'
                    f'<td>{ref}<br><span class="note">{esc(e.summary, 400)}</span></td></tr>')
    cap = (f'<p class="note">Showing {len(tl.entries)} of {tl.total} entries, the most severe '
           f'(findings of severity {esc(tl.min_severity, 12)} and above); all findings are in '
           'findings.jsonl.</p>') if len(tl.entries) < tl.total else ""
    return ('<section id="timeline"><h2>Timeline</h2>'
            '<form id="tl-filter" class="filter" hidden><label>Host <select name="host">'
            f'<option value="">all</option>{options}</select></label><label>Severity <select name="sev">'
            f'{sev_opts}</select></label>'
            f'<span id="tl-count" class="note"></span></form>{cap}<table><colgroup><col class="ts">'
            '<col class="hostc"><col class="sevc"><col></colgroup><thead><tr><th>Time (UTC)</th><th>Host</th>'
            f'<th>Severity</th><th>What</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _host_section(h: HostView, rows: list[dict[str, Any]], edges: Sequence[EdgeView], limits: Limits,
                  is_open: bool, rendered: set[str]) -> str:
    uncorrelated = "" if h.correlated else ' <span class="note">(not correlated)</span>'
    facts = [("Verdict", _chip(h.verdict) + uncorrelated),
             ("Reason", _cite(esc(h.reason or "\u2014", 2000), rendered)),
             ("Infected at", _ts(h.infected_at) + (" UTC" if h.infected_at else "")
              + (f" (clock corrected by {h.clock_skew_seconds:+.0f} s)" if h.clock_skew_seconds else ""))]
    if h.first_finding:
        fid = esc(h.first_finding, 64)
        shown = any(str(r["id"]) == h.first_finding for r in rows)
        facts.append(("First finding", f'<a href="#{_finding_anchor(h.first_finding)}">{fid}</a>'
                      if shown else f"{fid} (in findings.jsonl)"))
    if h.patient_zero or h.entry_vector:
        facts.append(("Entry vector", ("<b>patient zero</b> \u2014 " if h.patient_zero else "")
                      + esc(h.entry_vector or "not determined", 300)))
    if h.missing:
        facts.append(("Missing evidence", "<br>".join(esc(m, 400) for m in h.missing[:20])))
    if h.at_risk:
        facts.append(("At risk", "<br>".join(esc(m, 400) for m in h.at_risk[:20])))
    if h.os or h.ips:
        facts.append(("System", esc(" ".join(x for x in (h.os or "", ", ".join(h.ips[:20])) if x), 400)))
    for label, pairs in (("Infected by", [(e, e.src) for e in edges if e.dst == h.host]),
                         ("Spread to", [(e, e.dst) for e in edges if e.src == h.host])):
        lines = [f'<a href="#{host_anchor(other)}">{esc(other, 80)}</a> via {esc(e.technique, 80)} '
                 f'at {_ts(e.ts)}'
                 + (f' <span class="note">{_cite(esc(e.reason, 300), rendered)}</span>' if e.reason else "")
                 for e, other in pairs[:20]]
        if len(pairs) > 20:
            lines.append(f"\u2026 {len(pairs) - 20} more in graph.json")
        if lines:
            facts.append((label, "<br>".join(lines)))
    body = ['<dl class="kv">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r["severity"])].append(r)
    for sev in sorted(groups, key=severity_rank, reverse=True):
        items = "".join(
            f'<li id="{_finding_anchor(r["id"])}">{_sev(sev)} <b>{esc(r["title"], 200)}</b> '
            f'<span class="note">{_ts(r["ts"])} \u00b7 {esc(r["rule"], 80)} \u00b7 {esc(r["id"], 20)}</span>'
            f'<br>{esc(r["summary"], 600)}{_evidence(r["evidence"], limits.evidence_keys)}</li>'
            for r in groups[sev])
        body.append(f'<h3>{esc(sev, 12).upper()} ({h.findings.get(sev, len(groups[sev]))})</h3>'
                    f'<ul class="findings">{items}</ul>')
    if h.total > len(rows):
        body.append(f'<p class="note">{h.total - len(rows)} more findings for this host are in '
                    f'findings.jsonl (host = &quot;{esc(h.host, 120)}&quot;).</p>')
    pz = " \u2605 patient zero" if h.patient_zero else ""
    worst = f" \u00b7 worst {h.worst}" if h.worst else ""
    when = " \u00b7 infected " + _ts(h.infected_at) if h.infected_at else ""
    return (f'<details class="host" id="{host_anchor(h.host)}"{" open" if is_open else ""}><summary>'
            f'{_chip(h.verdict)} {esc(h.host, 120)}{pz} <span class="note">{h.total} '
            f'finding{"" if h.total == 1 else "s"}{worst}{when}</span></summary>'
            f'{"".join(body)}</details>')


def _hosts(case: Case, hosts: Sequence[HostView], edges: Sequence[EdgeView], limits: Limits,
           rendered: set[str]) -> str:
    wanted = [h for h in hosts
              if h.verdict in ("infected", "suspicious") or h.total or h.missing or h.at_risk]
    detailed = wanted[:limits.hosts_detailed]
    rows = host_findings(case, [h.host for h in detailed], limits.findings_per_host)
    for group in rows.values():
        rendered.update(_finding_anchor(r["id"])[2:] for r in group)
    is_open = len(detailed) <= 12
    out = ['<section id="hosts"><h2>Hosts</h2>']
    out += [_host_section(h, rows.get(h.host, []), edges, limits, is_open and h.verdict == "infected",
                          rendered)
            for h in detailed]
    if len(wanted) > len(detailed):
        out.append(f'<p class="note">{len(wanted) - len(detailed)} more hosts with findings are listed '
                   'below without details; hosts.jsonl and findings.jsonl have them all.</p>')
    shown = {h.host for h in detailed}
    rest = [h for h in hosts if h.host not in shown]
    if rest:
        trs = "".join(f'<tr id="{host_anchor(h.host)}"><td>{esc(h.host, 120)}</td><td>{_chip(h.verdict)}'
                      f'</td><td>{h.total}</td><td>{esc(h.reason or "", 300)}</td></tr>'
                      for h in rest[:limits.other_hosts])
        more = (f'<p class="note">{len(rest) - limits.other_hosts} more hosts in hosts.jsonl.</p>'
                if len(rest) > limits.other_hosts else "")
        out.append(f'<h3>Other hosts ({len(rest)})</h3><table><thead><tr><th>Host</th><th>Verdict</th>'
                   f'<th>Findings</th><th>Reason</th></tr></thead><tbody>{trs}</tbody></table>{more}')
    return "".join(out) + "</section>"


_ROLE_TITLES = {"pool": "Mining pools", "c2": "Command and control", "download": "Download servers and URLs",
                "attacker": "Attacker addresses and keys", "wallet": "Wallets", "file": "File hashes"}


def _iocs(iocs: Sequence[Ioc]) -> str:
    if not iocs:
        return ('<section id="iocs"><h2>Indicators (IOCs)</h2><p class="note">No indicators found.</p>'
                '</section>')
    out = ['<section id="iocs"><h2>Indicators (IOCs)</h2><p class="note">All of them, as STIX 2.1, '
           'are in iocs.stix.json.</p>']
    for role, title in _ROLE_TITLES.items():
        group = [i for i in iocs if i.role == role]
        if not group:
            continue
        trs = "".join(
            f'<tr><td>{esc(i.kind, 20)}</td><td class="mono">{esc(i.value, 400)}</td>'
            f'<td>{esc(", ".join(sorted(i.families)) or "", 200)}</td>'
            f'<td>{_few(i.hosts, 10)}</td><td>{_ts(i.first_seen)}</td>'
            f'<td>{esc("; ".join(sorted(i.details)[:3]), 400)}</td></tr>'
            for i in group[:500])
        more = f'<p class="note">{len(group) - 500} more in iocs.stix.json.</p>' if len(group) > 500 else ""
        out.append(f'<h3>{title} ({len(group)})</h3><table><colgroup><col class="kind"><col>'
                   '<col class="fam"><col class="hostc"><col class="ts"><col class="detail"></colgroup>'
                   '<thead><tr><th>Kind</th><th>Value</th><th>Family</th><th>Hosts</th><th>First seen</th>'
                   f'<th>Detail</th></tr></thead><tbody>{trs}</tbody></table>{more}')
    return "".join(out) + "</section>"


def _words(text: str | None, words: Sequence[str]) -> bool:
    low = (text or "").lower()
    return any(str(w).lower() in low for w in words)


def _rec_triggers(case: Case, rec: Mapping[str, Any], hosts: Sequence[HostView],
                  edges: Sequence[EdgeView], iocs: Sequence[Ioc], cap: int) -> tuple[list[str], int]:
    out: list[str] = []
    total = 0
    specs = [str(r) for r in rec.get("rules") or []]
    present = [str(r["rule"]) for r in case.query("SELECT DISTINCT rule FROM findings")]
    rules = [r for r in present if any(r == s or (s.endswith(".") and r.startswith(s)) for s in specs)]
    if rules:
        rows = case.query("SELECT id, host, rule, title, ts, evidence FROM findings "
                          "WHERE list_contains(?, rule) ORDER BY host NULLS LAST, ts NULLS LAST, id", [rules])
        total += len(rows)
        for r in rows[:cap]:
            where = ""
            if rec.get("per_host"):
                ev = _evidence(r["evidence"], 4)
                where = f" {ev}"
            host = f'<a href="#{host_anchor(r["host"])}">{esc(r["host"], 80)}</a>' if r["host"] else "network"
            out.append(f'{host}: <a href="#{_finding_anchor(r["id"])}">{esc(r["title"], 160)}</a> '
                       f'<span class="note">({esc(r["rule"], 80)}, {_ts(r["ts"])})</span>{where}')
    attack = [str(a) for a in rec.get("attack") or []]
    for e in edges:
        # The technique, never the free-text reason: a reason names hosts ("ansible-01").
        if (_words(e.technique, rec.get("edges") or [])
                or any(a == t or a.startswith(t + ".") for a in e.attack for t in attack)):
            total += 1
            if len(out) < cap:
                out.append(f'spread {esc(e.src, 80)} \u2192 {esc(e.dst, 80)} via {esc(e.technique, 80)} '
                           f'at {_ts(e.ts)}')
    for h in hosts:
        entry = (h.entry_vector,) if h.entry_vector else ()
        for label, values, words in (("at risk", h.at_risk, rec.get("at_risk")),
                                     ("missing", h.missing, rec.get("at_risk")),
                                     ("entry vector", entry, rec.get("entry"))):
            hits = [v for v in values if words and _words(v, words)]
            if hits:
                total += 1
                if len(out) < cap:
                    out.append(f'<a href="#{host_anchor(h.host)}">{esc(h.host, 80)}</a> {label}: '
                               f'{esc("; ".join(hits), 300)}')
    roles = rec.get("iocs") or []
    for i in iocs:
        if i.role in roles and i.kind in ("domain", "ip", "url"):
            total += 1
            if len(out) < cap:
                out.append(f'{esc(i.role, 10)} {esc(i.kind, 10)} <code>{esc(i.value, 300)}</code> '
                           f'<span class="note">(hosts: {_few(i.hosts, 5) or "none named"})</span>')
    return out, total


def _recommendations(case: Case, hosts: Sequence[HostView], edges: Sequence[EdgeView],
                     iocs: Sequence[Ioc], limits: Limits) -> str:
    recs = yaml.safe_load((TEMPLATES / "recommendations.yml").read_text(encoding="utf-8"))
    out = ['<section id="recommendations"><h2>Recommendations</h2>']
    shown = 0
    for rec in recs:
        triggers, total = _rec_triggers(case, rec, hosts, edges, iocs, limits.triggers)
        if not total:
            continue
        shown += 1
        more = (f'<li class="note">\u2026 {total - len(triggers)} more (findings.jsonl, graph.json, '
                'iocs.stix.json)</li>') if total > len(triggers) else ""
        out.append(f'<div class="rec" id="rec-{esc(rec["id"], 40)}"><h3>{esc(rec["title"], 200)}</h3>'
                   f'<p>{esc(rec["text"], 2000)}</p><p class="note">Because of ({total}):</p><ul>'
                   + "".join(f"<li>{t}</li>" for t in triggers) + f"{more}</ul></div>")
    if not shown:
        out.append('<p class="note">Nothing found that calls for a specific recommendation.</p>')
    return "".join(out) + "</section>"


def render(case: Case, hosts: Sequence[HostView], edges: Sequence[EdgeView], iocs: Sequence[Ioc],
           files: Sequence[str] = (), limits: Limits | None = None) -> str:
    """The complete HTML page."""
    limits = limits or Limits()
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    rendered: set[str] = set()
    host_html = _hosts(case, hosts, edges, limits, rendered)
    tl = timeline(case, list(edges), limits.timeline)
    name = case.dir.name if case.dir else "in-memory case"
    csp = (f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
           "base-uri 'none'; form-action 'none'")
    listed = "".join(f"<li><code>{esc(f, 100)}</code></li>" for f in files)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>deminer report \u2014 {esc(name, 100)}</title><style>{css}</style></head><body>'
            f'<header><h1>Cryptomining incident report \u2014 {esc(name, 100)}</h1><nav>'
            '<a href="#summary">Summary</a><a href="#graph">Infection graph</a>'
            '<a href="#timeline">Timeline</a><a href="#hosts">Hosts</a><a href="#iocs">IOCs</a>'
            '<a href="#recommendations">Recommendations</a>'
            f'</nav></header><main>{_summary(case, hosts, edges, rendered)}{_graph(hosts, edges, limits)}'
            f'{_timeline(tl, hosts, rendered)}{host_html}{_iocs(iocs)}'
            f'{_recommendations(case, hosts, edges, iocs, limits)}</main>'
            f'<footer><h2>Files</h2><p class="note">Written next to this page; they hold everything the page '
            f'caps.</p><ul>{listed}</ul></footer><script>{js}</script></body></html>')
