"""The ground truth of a seed-case scenario, and the vocabularies the truth is written in.

Every scenario builder (``caseNN_*.py``) writes one folder per host of evidence in the formats
deminer ingests and returns a ``Truth``: which hosts are infected, clean or unknown, the
patient zero(s), the entry vector, who infected whom (``Edge``: source host, target host,
technique, time), the persistence each infected host carries, and the findings a responder
expects deminer to raise per host. ``Truth.write`` puts it next to the evidence as
``truth.json`` so a person (or another tool) can check a run by hand.

Host ids follow the case store: lower-case short host names. Times are naive UTC.

Expectations are tagged with the evidence they need (``needs``): ``host`` for what deminer
reads today from bundles, hives, tasks and event exports; ``network`` for the sensor's Zeek,
Suricata or pcap files; ``weblog`` for a Linux web server's access log (the collector does
not copy it yet). The golden tests check a tag's expectations only when deminer ingested
evidence of that kind, so they sharpen by themselves as sources land.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How the outbreak got in (host_verdicts.entry_vector of the patient zero).
ENTRY_VECTORS: tuple[str, ...] = (
    "web_exploit", "phishing", "poisoned_update", "service_rce", "brute_force", "usb",
)
# How it went from one host to the next (infection_edges.technique): deminer.correlate's
# vocabulary (see its package docstring).
TECHNIQUES: tuple[str, ...] = (
    "ssh_brute_force", "rdp_brute_force", "smb_brute_force", "windows_brute_force", "eternalblue",
    "worm_fanout", "psexec_service", "remote_task", "wmi_exec", "admin_share_exec", "pass_the_hash",
    "redis_rce", "consul_rce", "hadoop_rce", "jenkins_rce", "docker_api_rce", "web_exploit", "webshell",
    "ssh_key", "orchestration_push", "shared_credentials", "credential_reuse",
)
VERDICTS: tuple[str, ...] = ("infected", "clean", "unknown")
NEEDS: tuple[str, ...] = ("host", "network", "weblog")
EDGE_TOLERANCE = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    technique: str
    ts: dt.datetime

    def key(self) -> tuple[str, str, str]:
        return self.src, self.dst, self.technique


@dataclass(frozen=True)
class Expect:
    """A finding deminer must raise: rule ``rule`` on ``host`` (from evidence ``needs``)."""

    host: str
    rule: str
    needs: str = "host"


@dataclass(frozen=True)
class Persist:
    """A persistence item an infected host carries: ``kind`` and ``name`` as in the table."""

    kind: str
    name: str


@dataclass
class Truth:
    case: int
    title: str
    entry_vector: str
    infected: set[str] = field(default_factory=set)
    clean: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    patient_zero: set[str] = field(default_factory=set)
    edges: list[Edge] = field(default_factory=list)
    infected_at: dict[str, dt.datetime] = field(default_factory=dict)
    persistence: dict[str, list[Persist]] = field(default_factory=dict)
    ips: dict[str, list[str]] = field(default_factory=dict)
    expect: list[Expect] = field(default_factory=list)
    # Events a host's evidence must yield (host, events.event): facts no rule reports yet.
    events: list[tuple[str, str]] = field(default_factory=list)
    # Rules that may fire on a clean host (noise a responder accepts: a scan, a stored key).
    clean_may: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    edge_tolerance: dt.timedelta = EDGE_TOLERANCE

    # -- building ------------------------------------------------------------------------------
    def host(self, name: str, ip: str | list[str], verdict: str) -> str:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
        self.ips[name] = [ip] if isinstance(ip, str) else list(ip)
        {"infected": self.infected, "clean": self.clean, "unknown": self.unknown}[verdict].add(name)
        return name

    def infect(self, host: str, at: dt.datetime, *items: Persist) -> None:
        self.infected_at[host] = at
        self.persistence.setdefault(host, []).extend(items)

    def edge(self, src: str, dst: str, technique: str, ts: dt.datetime) -> None:
        if technique not in TECHNIQUES:
            raise ValueError(f"technique {technique!r} is not one of {TECHNIQUES}")
        self.edges.append(Edge(src, dst, technique, ts))

    def want(self, host: str, *rules: str, needs: str = "host") -> None:
        if needs not in NEEDS:
            raise ValueError(f"needs {needs!r} is not one of {NEEDS}")
        self.expect.extend(Expect(host, r, needs) for r in rules)

    # -- checking the truth is a truth ------------------------------------------------------------
    def check(self, max_hosts: int = 20) -> None:
        """Raise ``ValueError`` when the truth contradicts itself (a builder bug); a seed case
        has 3 to 20 hosts, a generated fleet (``deminer.scenarios.fleet``) up to ``max_hosts``."""
        groups = (self.infected, self.clean, self.unknown)
        every = set().union(*groups)
        if sum(len(g) for g in groups) != len(every):
            raise ValueError("a host is in more than one verdict group")
        if not 3 <= len(every) <= max_hosts:
            raise ValueError(f"{len(every)} hosts: a scenario has 3 to {max_hosts}")
        if self.entry_vector not in ENTRY_VECTORS:
            raise ValueError(f"entry vector {self.entry_vector!r} is not one of {ENTRY_VECTORS}")
        if not self.patient_zero or not self.patient_zero <= self.infected:
            raise ValueError("patient zero must be among the infected hosts")
        for e in self.edges:
            if e.dst not in self.infected or e.src not in self.infected:
                raise ValueError(f"edge {e} joins a host that is not infected")
            if e.dst in self.patient_zero:
                raise ValueError(f"edge {e} ends at a patient zero")
        reached = self.patient_zero | {e.dst for e in self.edges}
        if reached != self.infected:
            raise ValueError(f"infected hosts not reached by an edge: {sorted(self.infected - reached)}")
        if set(self.infected_at) != self.infected or set(self.persistence) - self.infected:
            raise ValueError("infection times and persistence are for the infected hosts exactly")
        for e in self.edges:
            if abs(self.infected_at[e.dst] - e.ts) > self.edge_tolerance:
                raise ValueError(f"edge {e} is far from {e.dst}'s infection time")

    # -- output -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def iso(t: dt.datetime) -> str:
            return t.isoformat() + "Z"

        return {
            "case": self.case, "title": self.title, "entry_vector": self.entry_vector,
            "infected": sorted(self.infected), "clean": sorted(self.clean),
            "unknown": sorted(self.unknown), "patient_zero": sorted(self.patient_zero),
            "edges": [{"src": e.src, "dst": e.dst, "technique": e.technique, "ts": iso(e.ts)}
                      for e in sorted(self.edges, key=lambda e: (e.ts, e.key()))],
            "edge_tolerance_seconds": self.edge_tolerance.total_seconds(),
            "infected_at": {h: iso(t) for h, t in sorted(self.infected_at.items())},
            "persistence": {h: [{"kind": p.kind, "name": p.name} for p in items]
                            for h, items in sorted(self.persistence.items())},
            "ips": dict(sorted(self.ips.items())),
            "expect": [{"host": x.host, "rule": x.rule, "needs": x.needs} for x in self.expect],
            "events": [{"host": h, "event": e} for h, e in self.events],
            "clean_may": sorted(self.clean_may), "notes": self.notes,
        }

    def write(self, folder: Path) -> Path:
        path = folder / "truth.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


def utc(text: str) -> dt.datetime:
    """``2024-03-05 02:14:07`` → naive UTC datetime (scenario times read like a timeline)."""
    return dt.datetime.fromisoformat(text)


def epoch(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp())


def resolve_names(net: Any, client: str, hosts: dict[str, str], domain: str = "corp.example") -> None:
    """The internal resolver answering ``client`` for every host's name (a backup or inventory
    server walking its list): in a sensor's DNS log this ties each name to its address."""
    for name, ip in sorted(hosts.items()):
        net.lookup(client, f"{name}.{domain}", [ip])
