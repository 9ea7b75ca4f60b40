"""``correlate(case)``: run every correlate step and store the outbreak picture.

Steps, in order: identity (aliases), findings as facts, evidence coverage and clock skew,
signs and per-host verdicts, infection edges, patient zero and entry vectors, blast radius.
The result replaces the ``host_verdicts`` and ``infection_edges`` tables and the
``host_aliases`` table, and is returned as an ``Outbreak``. A step after the verdicts that
fails on odd data is recorded in ``errors`` (stage ``correlate``, naming the step) and the
rest still completes; the verdicts are never lost to a broken graph or risk query.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb

from deminer.case import Case
from deminer.correlate import risk
from deminer.correlate.coverage import Coverage, take_stock
from deminer.correlate.facts import load_facts
from deminer.correlate.graph import Edge, build_graph
from deminer.correlate.identity import Identity, resolve_identity, write_aliases
from deminer.correlate.patient_zero import Entry, find_patient_zero
from deminer.correlate.verdict import HostVerdict, gather_signs, judge

T = TypeVar("T")
_STEP_ERRORS = (duckdb.Error, ValueError, KeyError, TypeError, OverflowError)


@dataclass
class Outbreak:
    """What correlate concluded; see the package docstring for every field."""

    verdicts: list[HostVerdict] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    patient_zero: list[str] = field(default_factory=list)
    entry_vector: str = "unknown"
    explanations: list[str] = field(default_factory=list)
    entries: dict[str, Entry] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)

    def verdict(self, host: str) -> HostVerdict | None:
        """The verdict of a host, by canonical id or any alias."""
        canon = self.aliases.get(host, self.aliases.get(host.lower(), host))
        return next((v for v in self.verdicts if v.host == canon), None)

    @property
    def infected(self) -> list[HostVerdict]:
        return sorted((v for v in self.verdicts if v.verdict == "infected"),
                      key=lambda v: (v.reference_time or dt.datetime.max, v.host))

    @property
    def at_risk(self) -> list[HostVerdict]:
        return [v for v in self.verdicts if v.verdict != "infected" and v.at_risk]


def _step(case: Case, name: str, fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except _STEP_ERRORS as exc:
        case.error(f"correlate step {name}", f"{type(exc).__name__}: {exc}", stage="correlate")
        return default


def _summary(out: Outbreak, ident: Identity, coverage: dict[str, Coverage]) -> list[str]:
    counts = Counter(v.verdict for v in out.verdicts)
    lines = [", ".join(f"{counts[k]} {k}" for k in ("infected", "suspicious", "clean", "unknown"))
             + f" host(s); {len(out.edges)} infection edge(s); {len(out.at_risk)} host(s) at risk"]
    for host, cov in sorted(coverage.items()):
        lines += [f"{host}: {note}" for note in cov.skew_notes]
    lines += ident.notes
    return lines


def correlate(case: Case) -> Outbreak:
    """Build the outbreak picture of ``case`` (after ``detect``) and store it."""
    case.db.execute("DELETE FROM errors WHERE stage = 'correlate'")
    ident = resolve_identity(case)
    _step(case, "host aliases", lambda: write_aliases(case, ident), 0)
    facts = load_facts(case, ident.aliases)
    no_coverage: dict[str, Coverage] = {}
    coverage = _step(case, "coverage", lambda: take_stock(case, ident), no_coverage)
    signs = gather_signs(case, ident, facts)
    verdicts = judge(ident, signs, coverage)
    no_graph: tuple[list[Edge], list[str]] = ([], [])
    edges, rejected = _step(case, "infection graph",
                            lambda: build_graph(case, ident, facts, verdicts, coverage), no_graph)
    no_pz: tuple[list[str], dict[str, Entry], str] = (
        [], {}, "patient zero could not be determined (see errors)")
    pz, entries, why = _step(case, "patient zero",
                             lambda: find_patient_zero(case, ident, facts, verdicts, edges), no_pz)
    entered = {e.dst for e in edges}
    for host, v in verdicts.items():
        if v.verdict == "infected":
            v.entry_vector = entries[host].vector if host in entries else (
                "lateral" if host in entered else None)
        v.patient_zero = host in pz
    _step(case, "blast radius", lambda: risk.assess(case, ident, facts, verdicts, coverage), None)
    out = Outbreak(verdicts=[verdicts[h] for h in sorted(verdicts)], edges=edges, patient_zero=pz,
                   entry_vector=entries[pz[0]].vector if pz and pz[0] in entries else "unknown",
                   entries=entries, rejected=rejected, aliases=dict(ident.aliases))
    out.explanations = [why, *(f"entry point {h}: {e.reason}" for h, e in sorted(entries.items())
                               if h not in pz), *_summary(out, ident, coverage)]
    case.db.execute("DELETE FROM host_verdicts")
    case.db.execute("DELETE FROM infection_edges")
    case.add("host_verdicts", [v.row() for v in out.verdicts])
    case.add("infection_edges", [e.row() for e in out.edges])
    case.flush()
    return out
