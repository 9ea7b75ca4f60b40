"""Per-host verdicts: infected / suspicious / clean / unknown, since when, and why.

The rules, in order (signs come from ``signs.py``):

- **infected**: at least one compromise sign. ``infected_at`` is the earliest *trustworthy*
  compromise time: a log record's time (malicious logon, remote execution, first pool
  connection, exploit), a file time (autostart entry written, malicious file dropped: its
  mtime, or its ctime when the mtime lies more than a day before it, i.e. was set by a tool),
  a registry key time (WannaMine's ``LastBackup``). Times before 2000 or later than the
  host's collection are not trusted; a time within minutes of the collection is "seen at
  collection", used only when nothing earlier exists.
- **suspicious**: indicators only (see ``signs.py``).
- **clean**: no compromise or indicator, and host-level evidence that would show one
  (``coverage.py``). Attacks that failed (guessing, probes) do not change it; they are named.
- **unknown**: no compromise or indicator and too little evidence; ``missing`` says what.
  A host with missing evidence is never clean: no host-level evidence, or records lost
  (``evidence_gap_record_ids``) or starting too late (``evidence_gap_log_starts_late``). A
  missing Sysmon log or command lines are named in ``missing`` but do not stop ``clean``
  when the Security log is there.

``clock_skew_seconds`` is the host clock's offset when one was measured; ordering across
hosts (edges, patient zero) uses ``reference_time`` = ``infected_at`` minus that offset.
Every reason names the findings that caused it by id.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from deminer.case import Case
from deminer.correlate.coverage import AHEAD_TOLERANCE, Coverage
from deminer.correlate.facts import Fact, believable, cite, iso
from deminer.correlate.identity import Identity
from deminer.correlate.signs import Sign, signs_of

VERDICTS = ("infected", "suspicious", "clean", "unknown")
AT_COLLECTION = dt.timedelta(minutes=2)
TOOL_SET_MTIME = dt.timedelta(days=1)
_PATH_KEYS = ("path", "exe")
BLOCKING_GAPS = frozenset({"defense_evasion.evidence_gap_record_ids",
                           "defense_evasion.evidence_gap_log_starts_late"})


@dataclass
class HostVerdict:
    host: str
    verdict: str
    infected_at: dt.datetime | None = None
    first_finding: str | None = None
    reason: str = ""
    missing: list[str] = field(default_factory=list)
    clock_skew_seconds: float | None = None
    patient_zero: bool = False
    entry_vector: str | None = None
    at_risk: list[str] = field(default_factory=list)
    signs: list[Sign] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    @property
    def reference_time(self) -> dt.datetime | None:
        """``infected_at`` on the reference clock (skew removed), for ordering hosts."""
        if self.infected_at is None or not self.clock_skew_seconds:
            return self.infected_at
        return self.infected_at - dt.timedelta(seconds=self.clock_skew_seconds)

    def of_kind(self, kind: str) -> list[Sign]:
        return [s for s in self.signs if s.kind == kind]

    def row(self) -> dict[str, Any]:
        return {"host": self.host, "verdict": self.verdict, "infected_at": self.infected_at,
                "first_finding": self.first_finding, "reason": self.reason,
                "missing": "; ".join(self.missing) or None,
                "clock_skew_seconds": self.clock_skew_seconds, "patient_zero": self.patient_zero,
                "entry_vector": self.entry_vector, "at_risk": "; ".join(self.at_risk) or None}


def gather_signs(case: Case, ident: Identity, facts: list[Fact]) -> list[Sign]:
    """Signs of every finding, file-drop times of the files they name, and raw events that
    date a compromise on their own (WannaMine's ``LastBackup`` registry value)."""
    signs = [s for f in facts for s in signs_of(f, ident)]
    compromise = {s.finding for s in signs if s.kind == "compromise"}
    wanted = [(f.raw_host, f.ev(k), f) for f in facts if f.id in compromise and f.raw_host
              for k in _PATH_KEYS if f.ev(k)]
    if wanted:
        pairs = pa.table({"host": [w[0] for w in wanted], "path": [w[1] for w in wanted],
                          "n": list(range(len(wanted)))})
        with case.registered("_paths", pairs) as db:
            rows = db.execute(
                "SELECT p.n, min(f.mtime), min(f.ctime) FROM _paths p JOIN files f "
                "ON f.host = p.host AND f.path = p.path GROUP BY p.n ORDER BY p.n").fetchall()
        for n, mtime, ctime in rows:
            _host, path, f = wanted[n]
            drop = ctime if mtime and ctime and ctime - mtime > TOOL_SET_MTIME else (mtime or ctime)
            if drop and f.host:
                signs.append(Sign(f.host, "compromise", drop, f"file drop {path}", f.rule, f.id, "file"))
    # Other registry values of note may come later; only LastBackup dates a compromise.
    for r in case.query("SELECT host, ts, source, source_line, data FROM events "
                        "WHERE event = 'registry_value' AND host IS NOT NULL "
                        "AND lower(coalesce(data, '')) LIKE '%lastbackup%' ORDER BY ts"):
        host = ident.canonical(str(r["host"])) or str(r["host"])
        where = f"{r['source']}" + (f"#{r['source_line']}" if r["source_line"] else "")
        signs.append(Sign(host, "compromise", r["ts"], f"WannaMine LastBackup value written ({where})",
                          "events.registry_value", None, "file", hive=True))
    return signs


def _trust(sign: Sign, cov: Coverage) -> Sign:
    if sign.kind != "compromise":
        return sign
    ts, at = sign.ts, cov.collected_at
    if not believable(ts) or (at and ts and ts > at + AHEAD_TOLERANCE):
        trust = "untrusted"
    elif at and ts and ts >= at - AT_COLLECTION and sign.trust == "log":
        trust = "collection"
    elif sign.rule.startswith("persistence.") or sign.trust == "file":
        trust = "file"
    else:
        trust = "log"
    return replace(sign, trust=trust)


def judge(ident: Identity, signs: list[Sign], coverage: dict[str, Coverage]) -> dict[str, HostVerdict]:
    """A verdict for every host named in the case or in a sign."""
    by_host: dict[str, list[Sign]] = defaultdict(list)
    for s in signs:
        by_host[s.host].append(s)
    aliases: dict[str, list[str]] = defaultdict(list)
    for alias, canon in ident.aliases.items():
        if alias != canon:
            aliases[canon].append(alias)
    out = {}
    for host in sorted(ident.hosts | set(by_host) | set(coverage)):
        cov = coverage.get(host, Coverage())
        host_signs = sorted((_trust(s, cov) for s in by_host.get(host, [])),
                            key=lambda s: (s.ts is None, s.ts or dt.datetime.min, s.rule, s.finding or ""))
        v = HostVerdict(host, "unknown", signs=host_signs, missing=cov.missing(),
                        clock_skew_seconds=cov.skew_seconds, aliases=sorted(aliases.get(host, [])))
        _decide(v, cov)
        out[host] = v
    _clear_by_hives(out, coverage)
    return out


def _clear_by_hives(verdicts: dict[str, HostVerdict], coverage: dict[str, Coverage]) -> None:
    """A Windows host with no logon log nor process list is still clean when its SYSTEM and
    SOFTWARE hives were read and hives were enough in this case: every infected Windows host
    showed a compromise sign in its registry (WannaMine's LastBackup, a random service), and
    this one shows none (seed case 10: a classroom with nothing but hives)."""
    infected = [v for v in verdicts.values() if v.verdict == "infected"
                and coverage.get(v.host, Coverage()).windows]
    if not infected or not all(any(s.hive for s in v.of_kind("compromise")) for v in infected):
        return
    kinds = sorted({next(s for s in v.of_kind("compromise") if s.hive).what.split(" (")[0] for v in infected})
    proof = f"({'; '.join(kinds)})"
    for v in verdicts.values():
        cov = coverage.get(v.host, Coverage())
        if (v.verdict == "unknown" and cov.windows and {"system", "software"} <= cov.hives
                and not any(s.rule in BLOCKING_GAPS for s in v.of_kind("gap"))):
            v.verdict = "clean"
            v.reason = (f"clean: its SYSTEM and SOFTWARE hives show none of the registry signs that gave "
                        f"away all {len(infected)} infected Windows host(s) of this case {proof}"
                        + (f"; {v.reason.split('; ', 1)[1]}" if "; targeted" in v.reason else ""))


def _decide(v: HostVerdict, cov: Coverage) -> None:
    compromise = v.of_kind("compromise")
    indicators = v.of_kind("indicator")
    targeted = v.of_kind("targeted")
    notes = v.of_kind("gap")
    # Lost or late records hide what happened: no clean verdict over them. A missing Sysmon
    # or Security log is already in ``missing`` (coverage) and decides nothing more here.
    gaps = [s for s in notes if s.rule in BLOCKING_GAPS]
    v.missing += [f"evidence gap: {s.what}" for s in gaps]
    if any(s.rule == "defense_evasion.evidence_missing_command_line" for s in notes):
        v.missing.append("process starts logged without command lines")
    if compromise:
        v.verdict = "infected"
        ids = cite(s.finding for s in compromise)
        trusted = [s for s in compromise if s.trust in ("log", "file")]
        at_collection = [s for s in compromise if s.trust == "collection"]
        if trusted or at_collection:
            first = min(trusted or at_collection, key=lambda s: (s.ts or dt.datetime.max, s.rule))
            v.infected_at, v.first_finding = first.ts, first.finding
            how = "earliest trustworthy sign" if trusted else "first sign, seen only at collection time,"
            v.reason = (f"infected since {iso(first.ts)} UTC: the {how} is {first.what} "
                        f"({first.rule} {cite([first.finding])}); {len(compromise)} compromise "
                        f"sign(s) in all {ids}")
            return
        v.first_finding = compromise[0].finding
        v.reason = (f"infected, time unknown: every compromise sign's time is untrusted "
                    f"(before 2000 or after the collection) {ids}")
    elif indicators:
        v.verdict = "suspicious"
        first = indicators[0]
        v.first_finding = first.finding
        v.reason = (f"suspicious: {first.what} ({first.rule}) and {len(indicators) - 1} more "
                    f"indicator(s) {cite(s.finding for s in indicators)}, but no sign of compromise")
    else:
        tried = (f"; targeted by {targeted[0].what} without success "
                 f"{cite(s.finding for s in targeted)}" if targeted else "")
        if cov.can_clear and not gaps:
            v.verdict = "clean"
            v.reason = f"clean: no sign of compromise in {cov.describe()}{tried}"
        else:
            v.verdict = "unknown"
            lacking = ", ".join(v.missing) or "evidence gaps"
            gap_ids = f" {cite(s.finding for s in gaps)}" if gaps else ""
            v.reason = f"unknown: too little evidence to call it clean ({lacking}){gap_ids}{tried}"
