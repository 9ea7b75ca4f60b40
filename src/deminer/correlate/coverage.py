"""What evidence each host has, and whether its clock agrees with the others.

A verdict of ``clean`` is only as good as the evidence behind it, so before judging a host
correlate takes stock of what the case holds for it:

    collected   a host collection (a bundle or Velociraptor: ``hosts.collected_at``), or
                rows of processes, autostarts, files, accounts or keys
    security    Windows Security log records (``events.channel`` Security)
    sysmon      Sysmon records
    authlog     Linux authentication records (sshd, sudo, su, PAM)
    web         web access-log records
    windows     the host runs Windows (Windows channels, ``hosts.os``, hive-only autostarts)

A host can be called clean only with host-level evidence that would show a compromise: a
live process list (a collection), or its logon log (the Security log on Windows, the auth log
on Linux); a disk without processes or logs is not enough. ``missing`` says in words what a
verdict lacks; "only network sightings" when the host is known only from traffic and the
network rules. ``kbs`` (installed updates) and ``hives`` (registry hives read) feed the
patch check and the registry-only clean verdict of ``verdict.py``.

Clock skew is measured two ways. Evidence that runs ahead of the host's own collection time
(log records later than ``collected_at``) shows a log clock or time zone off. The same
connection logged by two clocks (a host's own connection log and a sensor, or both ends)
gives an offset: the median difference of their start times. Against a sensor the offset is
the host's skew; between two hosts without a sensor it is put on the name that sorts later
(the first is taken as the reference). Offsets under a minute are network delay, not skew.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from deminer.case import Case
from deminer.correlate.identity import Identity

AHEAD_TOLERANCE = dt.timedelta(minutes=5)
HIVES = frozenset({"system", "software", "ntuser.dat", "sam", "security", "usrclass.dat"})
SKEW_MIN_SECONDS = 60.0
_HOST_TABLES = ("processes", "persistence", "files", "accounts", "ssh_keys", "remote_targets",
                "connections")


@dataclass
class Coverage:
    collected: bool = False
    collected_at: dt.datetime | None = None
    host_rows: int = 0
    security: int = 0
    sysmon: int = 0
    authlog: int = 0
    web: int = 0
    events: int = 0
    hotfixes: int = 0
    processes: int = 0
    kbs: set[str] = field(default_factory=set)       # installed updates (hotfix_installed)
    hives: set[str] = field(default_factory=set)     # registry hives read: system, software, …
    windows: bool = False
    last_event: dt.datetime | None = None
    skew_seconds: float | None = None
    skew_notes: list[str] = field(default_factory=list)

    @property
    def can_clear(self) -> bool:
        """Enough host-level evidence for ``clean`` to mean something: its logon log or a
        live process list (``verdict.py`` adds registry hives, when they proved enough)."""
        if self.windows:
            return self.security > 0 or self.processes > 0
        return self.processes > 0 or self.authlog > 0

    def missing(self) -> list[str]:
        out = []
        if not (self.collected or self.host_rows or self.events):
            return ["only network sightings"]
        if self.events and self.events == self.web and not (self.collected or self.host_rows):
            out.append("only web access logs")
        if not self.collected:
            out.append("no host collection")
        elif not self.processes:
            out.append("no process list")
        if self.windows:
            if not self.security:
                out.append("no Security log")
            if not self.sysmon:
                out.append("no Sysmon log")
            if not self.hotfixes:
                out.append("no patch list")
        elif not self.authlog:
            out.append("no auth log")
        return out

    def describe(self) -> str:
        parts = []
        if self.collected:
            parts.append("a host collection")
        elif self.host_rows:
            parts.append("host artefacts")
        if self.security:
            parts.append(f"{self.security} Security log records")
        if self.authlog:
            parts.append(f"{self.authlog} auth log records")
        if self.web:
            parts.append(f"{self.web} web requests")
        return ", ".join(parts) or "no host evidence"


def take_stock(case: Case, ident: Identity) -> dict[str, Coverage]:
    """Coverage per canonical host id."""
    cov: dict[str, Coverage] = defaultdict(Coverage)

    def of(raw: object) -> Coverage:
        return cov[ident.canonical(str(raw)) or str(raw)]

    for r in case.query("SELECT host, collected_at, os FROM hosts WHERE host IS NOT NULL"):
        c = of(r["host"])
        if r["collected_at"]:
            c.collected = True
            c.collected_at = max(filter(None, (c.collected_at, r["collected_at"])))
        c.windows = c.windows or "windows" in str(r["os"] or "").lower()
    for table in _HOST_TABLES:
        for r in case.query(f"SELECT host, count(*) AS n FROM {table} WHERE host IS NOT NULL GROUP BY host"):
            of(r["host"]).host_rows += int(r["n"])
            if table == "processes":
                of(r["host"]).processes += int(r["n"])
    for r in case.query("SELECT DISTINCT host, upper(json_extract_string(data, '$.kb')) AS kb FROM events "
                        "WHERE event = 'hotfix_installed' AND host IS NOT NULL AND json_valid(data)"):
        if r["kb"]:
            of(r["host"]).kbs.add(str(r["kb"]))
    # Which hives were read: the files the hive rows came from, by name.
    for r in case.query(
            "SELECT DISTINCT host, lower(regexp_extract(source, '([^/\\\\]+)$', 1)) AS name FROM ("
            "SELECT host, source FROM persistence UNION ALL SELECT host, source FROM hosts "
            "UNION ALL SELECT host, source FROM events WHERE program = 'registry') x "
            "WHERE host IS NOT NULL AND source IS NOT NULL"):
        if r["name"] in HIVES:
            of(r["host"]).hives.add(str(r["name"]))
    for r in case.query("SELECT host, count(*) AS n FROM persistence WHERE kind IN "
                        "('run_key', 'service', 'task', 'winlogon', 'ifeo', 'wmi') GROUP BY host"):
        of(r["host"]).windows = True
    for r in case.query("""
        SELECT host,
          count(*) FILTER (WHERE lower(channel) = 'security') AS security,
          count(*) FILTER (WHERE lower(channel) LIKE '%sysmon%') AS sysmon,
          count(*) FILTER (WHERE channel IS NOT NULL OR program = 'registry') AS windows,
          count(*) FILTER (WHERE channel IS NULL AND (program LIKE 'sshd%' OR program IN ('sudo', 'su')
                           OR event IN ('logon_success', 'logon_failure', 'session_opened'))) AS authlog,
          count(*) FILTER (WHERE event = 'web_request') AS web,
          count(*) FILTER (WHERE event = 'hotfix_installed') AS hotfixes,
          count(*) FILTER (WHERE event NOT IN ('ids_alert', 'ids_notice')) AS events,
          max(ts) FILTER (WHERE program IS DISTINCT FROM 'registry') AS last_event
        FROM events WHERE host IS NOT NULL GROUP BY host"""):
        c = of(r["host"])
        c.security += int(r["security"])
        c.sysmon += int(r["sysmon"])
        c.authlog += int(r["authlog"])
        c.web += int(r["web"])
        c.hotfixes += int(r["hotfixes"])
        c.events += int(r["events"])
        c.windows = c.windows or int(r["windows"]) > 0
        if r["last_event"] and (c.last_event is None or r["last_event"] > c.last_event):
            c.last_event = r["last_event"]
    _ahead_of_collection(cov)
    _flow_offsets(case, ident, cov)
    return dict(cov)


def _ahead_of_collection(cov: dict[str, Coverage]) -> None:
    for c in cov.values():
        if c.collected_at and c.last_event and c.last_event > c.collected_at + AHEAD_TOLERANCE:
            ahead = (c.last_event - c.collected_at).total_seconds()
            c.skew_notes.append(f"log records run up to {ahead:.0f} s past the collection time "
                                f"{c.collected_at:%Y-%m-%d %H:%M:%S} (log clock or time zone off)")
            if c.skew_seconds is None:
                c.skew_seconds = ahead


def _flow_offsets(case: Case, ident: Identity, cov: dict[str, Coverage]) -> None:
    rows = case.query("""
        WITH f AS (SELECT host, ts, src_ip, src_port, dst_ip, dst_port FROM flows
                   WHERE ts IS NOT NULL AND src_port IS NOT NULL AND dst_port IS NOT NULL)
        SELECT a.host AS host, b.host AS peer, count(*) AS n,
               median(date_diff('millisecond', b.ts, a.ts) / 1000.0) AS offset
        FROM (SELECT * FROM f WHERE host IS NOT NULL) a
        JOIN f b ON a.src_ip = b.src_ip AND a.src_port = b.src_port AND a.dst_ip = b.dst_ip
                AND a.dst_port = b.dst_port AND (b.host IS NULL OR b.host > a.host)
                AND abs(date_diff('second', b.ts, a.ts)) < 86400
        GROUP BY 1, 2 ORDER BY 1, 2""")
    sensor: dict[str, float] = {}
    pairs: list[tuple[str, str, float, int]] = []
    for r in rows:
        host = ident.canonical(str(r["host"])) or str(r["host"])
        offset = float(r["offset"])
        if r["peer"] is None:
            sensor[host] = offset
            if abs(offset) >= SKEW_MIN_SECONDS:
                cov[host].skew_seconds = offset
                cov[host].skew_notes.append(
                    f"clock {offset:+.0f} s against the network sensor ({r['n']} connections seen by both)")
        else:
            peer = ident.canonical(str(r["peer"])) or str(r["peer"])
            if peer != host:
                pairs.append((host, peer, offset, int(r["n"])))
    for a, b, offset, n in pairs:
        if abs(offset) < SKEW_MIN_SECONDS:
            continue
        if b in sensor and a not in sensor:
            target, value = a, offset + sensor[b]
        elif a in sensor and b not in sensor:
            target, value = b, sensor[a] - offset
        elif a in sensor:
            continue
        else:
            target, value = (b, -offset) if a < b else (a, offset)
        ref = b if target == a else a
        cov[target].skew_seconds = value
        cov[target].skew_notes.append(
            f"clock {value:+.0f} s against {ref} ({n} connections logged at both ends)")
