"""Detector: periodic connections from one host to one internet endpoint (beaconing).

Implants, droppers' re-download jobs and miners' watchdogs call home on a timer; their
connections to one endpoint come at near-constant intervals, unlike people and most
software. Over millions of flows the work is split so that Python only sees candidates::

    flows ──► DuckDB: one row per (source, destination, port, protocol, second)
          ──► inter-arrival gaps (lag over the pair's connection times)
          ──► per pair: connections, median gap, mean, standard deviation, share of gaps
              within ±20 % of the median                       (all vectorised in SQL)
          ──► candidates: ≥ 8 connections, median gap ≥ 10 s, and CV < 0.2 or ≥ 60 % of
              the gaps near the median (a beacon with missed beats has a large CV)
          ──► Python, per candidate: fold missed beats, drop stray gaps, final CV test

The Python step makes the test robust to what real captures do to a timer: a gap that is
k times the median (within 20 % per beat) is k beats with k-1 missed — the host was off,
the capture had a hole — and counts as k intervals of gap/k; a gap that fits no multiple
(a retry, a manual connection) is an outlier. The pair is a beacon when outliers are at
most 10 % of the gaps, missed beats at most 25 % of the beats, and the coefficient of
variation (standard deviation / mean) of the folded intervals is below 0.2. Jittered C2
timers (±20 % uniform jitter gives a CV near 0.12) pass; people browsing do not.

Destinations inside the network (private, loopback, link-local, multicast) and DNS, NTP,
DHCP, NetBIOS, SSDP and mDNS ports are skipped: those are periodic by design.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deminer.detect.finding import Finding

if TYPE_CHECKING:
    from deminer.case import Case
    from deminer.detect.rules import Rule

MIN_CONNECTIONS = 8
MIN_PERIOD = 10.0          # seconds: faster repeats are keep-alives and streams
MAX_CV = 0.2
TOLERANCE = 0.2            # a gap is on the beat grid when within 20 % of k × period
MAX_OUTLIERS = 0.10
MAX_MISSED = 0.25
MAX_CANDIDATES = 20000     # pairs examined in Python (the SQL filter keeps far fewer)
MAX_GAPS = 100000          # gaps read per pair

_INSIDE = (r"^(10\.|127\.|0\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|169\.254\."
           r"|100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|22[4-9]\.|2[3-5][0-9]\.|::1$|f[cdf]|fe[89ab])")
_PERIODIC_PORTS = (53, 67, 68, 123, 137, 138, 1900, 5353)

_CANDIDATES = f"""
WITH ih AS (SELECT ip, min(host) AS host FROM ip_hosts GROUP BY ip),
c AS (
  SELECT DISTINCT src_ip, dst_ip, dst_port, lower(coalesce(proto, 'tcp')) AS proto,
         date_trunc('second', ts) AS t
  FROM flows
  WHERE ts IS NOT NULL AND src_ip IS NOT NULL AND dst_ip IS NOT NULL AND dst_port IS NOT NULL
    AND dst_port NOT IN ({", ".join(str(p) for p in _PERIODIC_PORTS)})
    AND NOT regexp_matches(lower(dst_ip), '{_INSIDE}')
),
d AS (
  SELECT src_ip, dst_ip, dst_port, proto, t,
         epoch(t) - epoch(lag(t) OVER (PARTITION BY src_ip, dst_ip, dst_port, proto ORDER BY t)) AS gap
  FROM c
),
s AS (
  SELECT src_ip, dst_ip, dst_port, proto, count(gap) AS gaps, median(gap) AS med,
         avg(gap) AS mean, stddev_pop(gap) AS sd
  FROM d WHERE gap IS NOT NULL
  GROUP BY src_ip, dst_ip, dst_port, proto
  HAVING count(gap) >= {MIN_CONNECTIONS - 1} AND median(gap) >= {MIN_PERIOD}
),
near AS (
  SELECT s.src_ip, s.dst_ip, s.dst_port, s.proto, s.gaps, s.sd / s.mean AS cv,
         count(*) FILTER (WHERE abs(d.gap - s.med) <= {TOLERANCE} * s.med) AS near_median
  FROM s JOIN d ON d.src_ip = s.src_ip AND d.dst_ip = s.dst_ip AND d.dst_port = s.dst_port
                   AND d.proto = s.proto AND d.gap IS NOT NULL
  GROUP BY s.src_ip, s.dst_ip, s.dst_port, s.proto, s.gaps, s.sd, s.mean
),
cand AS (SELECT * FROM near WHERE cv < {MAX_CV} OR near_median >= 0.6 * gaps),
firsts AS (
  SELECT f.src_ip, f.dst_ip, f.dst_port, lower(coalesce(f.proto, 'tcp')) AS proto,
         min(f.ts) AS first_ts, max(f.ts) AS last_ts, count(*) AS flows,
         arg_min(f.source, (f.ts, f.source, f.source_line)) AS source,
         arg_min(f.source_line, (f.ts, f.source, f.source_line)) AS source_line
  FROM flows f JOIN cand c ON c.src_ip = f.src_ip AND c.dst_ip = f.dst_ip AND c.dst_port = f.dst_port
                           AND c.proto = lower(coalesce(f.proto, 'tcp'))
  WHERE f.ts IS NOT NULL
  GROUP BY f.src_ip, f.dst_ip, f.dst_port, lower(coalesce(f.proto, 'tcp'))
),
lists AS (
  SELECT d.src_ip, d.dst_ip, d.dst_port, d.proto, list(d.gap ORDER BY d.t)[1:{MAX_GAPS}] AS gap_list
  FROM d JOIN cand c ON c.src_ip = d.src_ip AND c.dst_ip = d.dst_ip AND c.dst_port = d.dst_port
                     AND c.proto = d.proto
  WHERE d.gap IS NOT NULL
  GROUP BY d.src_ip, d.dst_ip, d.dst_port, d.proto
)
SELECT coalesce(ih.host, c.src_ip) AS host, c.src_ip, c.dst_ip, c.dst_port, c.proto, c.cv,
       f.first_ts, f.last_ts, f.flows, f.source, f.source_line, l.gap_list
FROM cand c
JOIN firsts f ON f.src_ip = c.src_ip AND f.dst_ip = c.dst_ip AND f.dst_port = c.dst_port AND f.proto = c.proto
JOIN lists l ON l.src_ip = c.src_ip AND l.dst_ip = c.dst_ip AND l.dst_port = c.dst_port AND l.proto = c.proto
LEFT JOIN ih ON ih.ip = c.src_ip
ORDER BY host, c.dst_ip, c.dst_port, c.proto, c.src_ip
LIMIT {MAX_CANDIDATES + 1}
"""


@dataclass(frozen=True)
class Beacon:
    """The timer found in one pair's gaps."""

    period: float       # seconds between beats (mean of the folded intervals)
    cv: float           # coefficient of variation of the folded intervals
    beats: int          # intervals the span holds, missed ones included
    missed: int
    outliers: int


def assess(gaps: list[float]) -> Beacon | None:
    """The beacon in a pair's inter-arrival ``gaps`` (seconds, in time order), or ``None``."""
    gaps = [g for g in gaps if g > 0]
    if len(gaps) < MIN_CONNECTIONS - 1:
        return None
    med = statistics.median(gaps)
    if med < MIN_PERIOD:
        return None
    intervals: list[float] = []
    missed = outliers = 0
    for gap in gaps:
        k = round(gap / med)
        # on the grid when each of the k beats is within TOLERANCE of the median
        if k >= 1 and abs(gap / k - med) <= TOLERANCE * med:
            intervals.extend([gap / k] * k)
            missed += k - 1
        else:
            outliers += 1
    beats = len(intervals)
    if (len(intervals) < MIN_CONNECTIONS - 1 or outliers > MAX_OUTLIERS * len(gaps)
            or missed > MAX_MISSED * beats):
        return None
    mean = statistics.fmean(intervals)
    cv = statistics.pstdev(intervals) / mean
    if cv >= MAX_CV:
        return None
    return Beacon(period=mean, cv=cv, beats=beats, missed=missed, outliers=outliers)


def _finding(row: dict[str, Any], beacon: Beacon, others: int, rule: Rule) -> Finding:
    endpoint = f"{row['dst_ip']}:{row['dst_port']}"
    who = row["host"] if row["host"] == row["src_ip"] else f"{row['host']} ({row['src_ip']})"
    summary = (f"{who} connects to {endpoint}/{row['proto']} every {beacon.period:.0f} s "
               f"(jitter {beacon.cv:.0%}): {row['flows']} connection(s) between "
               f"{row['first_ts']} and {row['last_ts']} UTC"
               + (f", {beacon.missed} beat(s) missed" if beacon.missed else "")
               + (f"; {others} other host(s) beacon to it the same way" if others > 0 else "") + ".")
    evidence: dict[str, Any] = {
        "source.ip": row["src_ip"], "destination.ip": row["dst_ip"],
        "destination.port": row["dst_port"], "network.transport": row["proto"],
        "period_seconds": round(beacon.period, 1), "cv": round(beacon.cv, 3),
        "connections": row["flows"], "beats": beacon.beats, "missed_beats": beacon.missed,
        "outlier_gaps": beacon.outliers, "other_hosts_same_beacon": others,
        "first_seen": row["first_ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_seen": row["last_ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": row["source"], "source_line": row["source_line"],
    }
    return Finding(rule=rule.id, title=rule.title, severity=rule.severity, attack=rule.attack,
                   host=row["host"], ts=row["first_ts"], entity=endpoint, summary=summary,
                   evidence={k: v for k, v in evidence.items() if v is not None})


def detect(case: Case, rule: Rule) -> list[Finding]:
    """One finding per source host and endpoint whose connections keep a timer."""
    rows = case.query(_CANDIDATES)
    if len(rows) > MAX_CANDIDATES:
        rows = rows[:MAX_CANDIDATES]
        case.error(f"rule {rule.id}", f"more than {MAX_CANDIDATES} periodic-looking pairs; "
                   f"only the first {MAX_CANDIDATES} were examined", stage="detect")
    found: list[tuple[dict[str, Any], Beacon]] = []
    for row in rows:
        beacon = assess([float(g) for g in row["gap_list"] or [] if g is not None])
        if beacon is not None:
            found.append((row, beacon))
    # several hosts keeping the same timer to one endpoint is an outbreak's C2, not one app
    sources: dict[tuple[str, int, str], set[str]] = {}
    for row, _ in found:
        sources.setdefault((row["dst_ip"], row["dst_port"], row["proto"]), set()).add(row["src_ip"])
    return [_finding(row, beacon, len(sources[(row["dst_ip"], row["dst_port"], row["proto"])]) - 1, rule)
            for row, beacon in found]
