"""The infection graph: who infected whom, how, when, and on what evidence.

A node is a host with its verdict; an edge is one way the infection went from one host to
another::

    ┌──────────────────────────┐   ssh_brute_force  2024-03-30 09:01:10   ┌──────────────────────────┐
    │ web1  infected           │ ───────────────────────────────────────► │ db1  infected            │
    │ since 08:17:56 (pz)      │   T1110, T1078 · high                    │ since 09:01:10           │
    │ 10.0.0.5                 │   "web1 guessed root's SSH password      │ 10.0.0.9                 │
    └──────────────────────────┘    (from 10.0.0.5) …" [430aab135d97d139] └──────────────────────────┘

Rules of inference. Candidates come from ``edges.py`` and ``edges_net.py`` (one function per
kind of evidence: brute force that got in, EternalBlue, PsExec/service/task/WMI, pass-the-hash,
Redis, service and web exploits, web shells, worm fan-out victims, SMB right before a Windows
host fell, HTTP service exploits a sensor saw, SSH key trust, orchestration inventories,
shared credentials, logons replayed from an infected host). A candidate A → B is kept only when

1. A and B are different hosts of the case, both with the verdict ``infected``;
2. B's infection is not before A's (``reference_time``, clock skew removed): a host cannot
   have been infected by one that fell later;
3. it happened no later than 10 minutes after B's infection time: evidence of A reaching an
   already infected B is not how B was infected (it is reported as rejected).

Kept candidates between the same two hosts become one edge. Its technique is the one that best
explains the infection (``PRECEDENCE``: an exploit before the credential it used, a credential
before the remote execution it enabled, anything before a bare connection; low-confidence
candidates last); the others are named in its reason, its findings and ATT&CK ids are all of
theirs, its confidence the highest. Its time is when the evidence says it happened; key trust
and orchestration without a logon say no time, so theirs is B's infection time. Last, an
infecting logon (SSH key, shared or replayed credentials, an orchestration push over SSH)
earlier than every sign on its target dates the target's infection (``infected_at``; the
reason says so). Rejected candidates are returned with the reason, so the report can show
what was considered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from deminer.case import Case
from deminer.correlate import edges as ev
from deminer.correlate import edges_net as net
from deminer.correlate.coverage import Coverage
from deminer.correlate.facts import Fact, cite, iso
from deminer.correlate.identity import Identity
from deminer.correlate.verdict import HostVerdict
from deminer.sources.registry_hive import MS17_010_KBS

LATE = dt.timedelta(minutes=10)
_RANK = {"low": 0, "medium": 1, "high": 2}
_NOISY = {"worm_fanout", "eternalblue"}   # too many victims to report each one that stays clean
LOGONS = {"ssh_key", "shared_credentials", "credential_reuse", "orchestration_push"}
# Which technique names an edge when the evidence shows several between the same two hosts:
# an exploit explains the infection better than the credentials it used, a credential better
# than the remote execution it enabled, and any of them better than a mere connection.
PRECEDENCE = ("eternalblue", "redis_rce", "consul_rce", "hadoop_rce", "jenkins_rce", "docker_api_rce",
              "web_exploit", "webshell", "orchestration_push", "ssh_brute_force", "rdp_brute_force",
              "smb_brute_force", "windows_brute_force", "shared_credentials", "pass_the_hash", "ssh_key",
              "psexec_service", "remote_task", "wmi_exec", "admin_share_exec", "credential_reuse",
              "worm_fanout")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    technique: str
    ts: dt.datetime | None
    attack: tuple[str, ...]
    confidence: str
    reason: str
    findings: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        return {"src_host": self.src, "dst_host": self.dst, "technique": self.technique,
                "ts": self.ts, "attack": list(self.attack), "confidence": self.confidence,
                "reason": self.reason, "findings": list(self.findings)}


def _check(c: ev.Candidate, verdicts: dict[str, HostVerdict]) -> str | None:
    """Why a candidate is not an edge, or None when it is one."""
    vs, vd = verdicts.get(c.src), verdicts.get(c.dst)
    if vs is None or vs.verdict != "infected":
        return f"{c.src} is {vs.verdict if vs else 'not a case host'}, not infected"
    if vd is None or vd.verdict != "infected":
        return f"{c.dst} is {vd.verdict if vd else 'not a case host'}, not infected"
    ts_src, ts_dst = vs.reference_time, vd.reference_time
    if ts_src is None or ts_dst is None:
        return "an infection time is unknown, so the order cannot be checked"
    if ts_dst < ts_src:
        return (f"{c.dst} was infected at {iso(vd.infected_at)} UTC, before {c.src} "
                f"({iso(vs.infected_at)} UTC)")
    if c.ts is not None and vd.infected_at is not None and c.ts > vd.infected_at + LATE:
        return (f"it happened at {iso(c.ts)} UTC, after {c.dst} was already infected "
                f"({iso(vd.infected_at)} UTC)")
    return None


def _edge(c: ev.Candidate, verdicts: dict[str, HostVerdict], also: str = "") -> Edge:
    vs, vd = verdicts[c.src], verdicts[c.dst]
    ts = c.ts or vd.infected_at
    # Sorted: a merged candidate's findings come from a set, and a reason must read the same
    # in every run.
    cited = f" {cite(sorted(c.findings))}" if c.findings else ""
    reason = (f"{c.src} {c.what} at {iso(ts)} UTC{cited}{also}; {c.src} was infected at "
              f"{iso(vs.infected_at)} UTC, {c.dst} showed its first sign at {iso(vd.infected_at)} UTC")
    return Edge(c.src, c.dst, c.technique, ts, tuple(sorted(set(c.attack))), c.confidence, reason,
                tuple(sorted(set(c.findings))))


def _rank(c: ev.Candidate) -> tuple[bool, int, dt.datetime]:
    order = PRECEDENCE.index(c.technique) if c.technique in PRECEDENCE else len(PRECEDENCE)
    return c.confidence == "low", order, c.ts or dt.datetime.max


def _merge(found: list[ev.Candidate], verdicts: dict[str, HostVerdict]) -> list[Edge]:
    """One edge per (source, target): the technique that best explains the infection."""
    pairs: dict[tuple[str, str], list[ev.Candidate]] = {}
    for c in found:
        pairs.setdefault((c.src, c.dst), []).append(c)
    out = []
    for group in pairs.values():
        main = min(group, key=_rank)
        # Weak candidates add nothing but doubt to a pair a stronger one explains.
        kept = [c for c in group if main.confidence == "low" or c.confidence != "low"]
        rest = sorted((c for c in kept if c is not main), key=lambda c: c.ts or dt.datetime.max)
        also_ts: dict[str, dt.datetime | None] = {}
        for c in rest:
            if c.technique != main.technique:
                also_ts.setdefault(c.technique, c.ts)
        also = ("; also " + ", ".join(t + (f" at {iso(ts)} UTC" if ts else "") for t, ts in also_ts.items())
                if also_ts else "")
        confidence = max((c.confidence for c in kept), key=_RANK.__getitem__)
        merged = ev.Candidate(main.src, main.dst, main.technique, main.ts or (rest[0].ts if rest else None),
                              tuple({a for c in kept for a in c.attack}), confidence, main.what,
                              tuple({f for c in kept for f in c.findings}))
        out.append(_edge(merged, verdicts, also))
    return sorted(out, key=lambda e: (e.ts or dt.datetime.max, e.src, e.dst, e.technique))


def _entered_from_outside(v: HostVerdict, facts_by_id: dict[str, Fact], ident: Identity) -> bool:
    """The host's first compromise sign is a logon or exploit from an address no case host has."""
    first = facts_by_id.get(v.first_finding or "")
    if first is None or not first.ev("source.ip"):
        return False
    return ident.host_for_ip(first.ev("source.ip"), first.ts) is None


def build_graph(case: Case, ident: Identity, facts: list[Fact], verdicts: dict[str, HostVerdict],
                coverage: dict[str, Coverage] | None = None) -> tuple[list[Edge], list[str]]:
    """(edges, rejected candidates as sentences)."""
    coverage = coverage or {}
    infected = {h for h, v in verdicts.items() if v.verdict == "infected"}
    times: dict[str, dt.datetime] = {}
    for h in infected:
        at = verdicts[h].infected_at
        if at is not None:
            times[h] = at
    windows = {h for h in infected if coverage.get(h, Coverage()).windows}
    patched = {h for h in infected if coverage.get(h, Coverage()).kbs & MS17_010_KBS}
    by_id = {f.id: f for f in facts}
    inside = {h for h in infected if not _entered_from_outside(verdicts[h], by_id, ident)}
    candidates = [*ev.from_findings(facts, ident), *net.worm_victims(case, facts, ident, infected),
                  *net.smb_exploits(case, ident, times, patched, windows),
                  *net.http_exploits(case, ident, times), *ev.key_trust(case, facts, ident, times),
                  *ev.orchestration(case, facts, ident), *ev.shared_credentials(case, facts, ident),
                  *ev.valid_logons(case, ident, times, inside)]
    found, rejected = [], []
    for c in candidates:
        if c.src == c.dst:
            continue
        why = _check(c, verdicts)
        if why is None:
            found.append(c)
        elif not (c.technique in _NOISY and c.dst not in infected):
            rejected.append(f"{c.technique} {c.src} → {c.dst} ({c.what}) is not an infection edge: {why}")
    edges = _merge(found, verdicts)
    _date_by_logons(edges, verdicts)
    return edges, rejected


def _date_by_logons(edges: list[Edge], verdicts: dict[str, HostVerdict]) -> None:
    """An infecting logon the graph found (a stolen key, a cracked or dumped password) is the
    target's first malicious logon: it dates the infection when it is earlier than every sign
    on the target and not earlier than the source's own infection."""
    for e in edges:
        vs, vd = verdicts[e.src], verdicts[e.dst]
        if (e.technique in LOGONS and e.ts and vd.infected_at and vs.infected_at
                and vs.infected_at <= e.ts < vd.infected_at):
            vd.reason = (f"infected since {iso(e.ts)} UTC: the earliest sign is the {e.technique} logon "
                         f"from {e.src} on the infection edge {cite(e.findings)}; before the graph: "
                         + vd.reason)
            vd.infected_at = e.ts
            vd.first_finding = e.findings[0] if e.findings else vd.first_finding
