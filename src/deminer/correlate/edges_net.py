"""Candidate infection edges that rest on network conversations (``flows``).

Three kinds, each from an infected host A to an infected host B (``graph.py`` checks both):

    worm_victims    A has a ``lateral_movement.net_worm_fanout`` finding: its first
                    connection to B on a worm port (confidence medium when B answered)
    smb_exploits    an SMB connection (445/139) from A within 10 minutes before B's
                    infection, and either B's lsass.exe or spoolsv.exe starting a program
                    right after (where EternalBlue/DoublePulsar payloads run: high), or B a
                    Windows host without an MS17-010 update (medium). Technique eternalblue.
    http_exploits   an HTTP request from A to B that a sensor logged (Zeek http.log in
                    ``flows.data``: method, uri, status) for a service miner worms take over:
                    Jenkins script console, Hadoop YARN application submission, Consul
                    service/check registration, Docker Engine container create/exec —
                    within the hour before B's infection; high when B answered 2xx

``http_requests`` is shared with ``patient_zero.py``, which reads the same requests from an
outside address as an entry.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Any

from deminer.case import Case
from deminer.correlate.edges import Candidate
from deminer.correlate.facts import ANSWERED_SQL, PORTS_SQL, Fact, iso
from deminer.correlate.identity import Identity

BEFORE = dt.timedelta(minutes=10)
PAYLOAD_AFTER = dt.timedelta(minutes=10)
HTTP_BEFORE = dt.timedelta(hours=1)
SLACK = dt.timedelta(minutes=2)
_PAYLOAD_PARENT = re.compile(r"(?i)(^|[\\/])(lsass|spoolsv)\.exe\"?$")
HTTP_EXPLOITS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("jenkins_rce", "Jenkins script console", re.compile(r"(?i)^/(script|scripttext)\b|/checkscript\b")),
    ("hadoop_rce", "Hadoop YARN application submission", re.compile(r"(?i)^/ws/v1/cluster/apps")),
    ("consul_rce", "Consul service/check registration",
     re.compile(r"(?i)^/v1/agent/(service|check)/register")),
    ("docker_api_rce", "Docker Engine API container create/exec",
     re.compile(r"(?i)^(/v[\d.]+)?/(containers/create|containers/[^/]+/exec|exec/[^/]+/start)")),
)


def worm_victims(case: Case, facts: list[Fact], ident: Identity, infected: set[str]) -> list[Candidate]:
    """First connection from each fan-out source to each infected case host, on worm ports."""
    sources = {f.ev("source.ip"): f for f in facts if f.rule == "lateral_movement.net_worm_fanout"
               and f.ev("source.ip") and f.host}
    targets = {ip: host for host in infected for ip in ident.ips_of(host)}
    if not sources or not targets:
        return []
    rows = case.query(
        f"SELECT src_ip, dst_ip, min(ts) AS first, bool_or({ANSWERED_SQL}) AS answered, "
        "string_agg(DISTINCT CAST(dst_port AS VARCHAR), ',' ORDER BY CAST(dst_port AS VARCHAR)) AS ports "
        f"FROM flows WHERE dst_port IN {PORTS_SQL} AND list_contains(?, src_ip) "
        "AND list_contains(?, dst_ip) GROUP BY src_ip, dst_ip ORDER BY src_ip, dst_ip",
        [sorted(k for k in sources if k), sorted(targets)])
    out = []
    for r in rows:
        f = sources[r["src_ip"]]
        dst = ident.host_for_ip(r["dst_ip"], r["first"]) or targets[r["dst_ip"]]
        answered = ", answered" if r["answered"] else ", unanswered"
        out.append(Candidate(f.host or "", dst, "worm_fanout", r["first"], f.attack,
                             "medium" if r["answered"] else "low",
                             f"connected to it ({r['dst_ip']} port {r['ports']}{answered}) while fanning out",
                             (f.id,)))
    return out


def smb_exploits(case: Case, ident: Identity, times: dict[str, dt.datetime],
                 patched: set[str], windows: set[str]) -> list[Candidate]:
    """SMB from an infected host just before a Windows host's infection (see the module doc)."""
    owned = {ip: h for h in times for ip in ident.ips_of(h)}
    if not owned:
        return []
    contacts = case.query(
        "SELECT src_ip, dst_ip, dst_port, ts, source, source_line FROM flows "
        "WHERE dst_port IN (445, 139) AND ts IS NOT NULL AND list_contains(?, src_ip) "
        "AND list_contains(?, dst_ip) ORDER BY ts", [sorted(owned), sorted(owned)])
    payloads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in case.query(
            "SELECT host, ts, process, json_extract_string(data, '$.parent_process') AS parent FROM events "
            "WHERE event = 'process_start' AND ts IS NOT NULL AND json_valid(data) "
            "AND regexp_matches(coalesce(json_extract_string(data, '$.parent_process'), ''), "
            "'(?i)(lsass|spoolsv)\\.exe') ORDER BY ts"):
        if _PAYLOAD_PARENT.search(str(r["parent"]).strip()):
            payloads[ident.canonical(str(r["host"])) or ""].append(r)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in contacts:
        src, dst = ident.host_for_ip(r["src_ip"], r["ts"]) or owned[r["src_ip"]], owned[r["dst_ip"]]
        if src != dst and dst in windows and times[dst] - BEFORE <= r["ts"] <= times[dst] + SLACK:
            best[(src, dst)] = r             # ordered by time: the last contact before it fell
    out = []
    for (src, dst), r in sorted(best.items()):
        ran = [p for p in payloads.get(dst, []) if r["ts"] - SLACK <= p["ts"] <= times[dst] + PAYLOAD_AFTER]
        seen = (f"SMB from {r['src_ip']} to {r['dst_ip']}:{r['dst_port']} at {iso(r['ts'])} UTC "
                f"({r['source']})")
        if ran:
            what = (f"opened {seen}, then its {ran[0]['parent']} started {ran[0]['process']} at "
                    f"{iso(ran[0]['ts'])} UTC (where EternalBlue payloads run)")
            out.append(Candidate(src, dst, "eternalblue", r["ts"], ("T1210",), "high", what, ()))
        elif dst not in patched:
            what = f"opened {seen}, minutes before its infection; it has no MS17-010 update"
            out.append(Candidate(src, dst, "eternalblue", r["ts"], ("T1210",), "medium", what, ()))
    return out


def http_requests(case: Case, dst_ips: list[str], src_ips: list[str] | None = None) -> list[dict[str, Any]]:
    """Requests to ``dst_ips`` (from ``src_ips``, or anyone) that match ``HTTP_EXPLOITS``,
    each with ``technique`` and ``label`` added."""
    if not dst_ips:
        return []
    rows = case.query(
        "SELECT src_ip, dst_ip, dst_port, ts, source, source_line, "
        "json_extract_string(data, '$.method') AS method, json_extract_string(data, '$.uri') AS uri, "
        "json_extract_string(data, '$.status') AS status FROM flows "
        "WHERE ts IS NOT NULL AND json_valid(data) AND list_contains(?, dst_ip) "
        "AND json_extract_string(data, '$.uri') IS NOT NULL"
        + (" AND list_contains(?, src_ip)" if src_ips is not None else "") + " ORDER BY ts",
        [dst_ips] + ([src_ips] if src_ips is not None else []))
    out = []
    for r in rows:
        for technique, label, pattern in HTTP_EXPLOITS:
            if pattern.search(str(r["uri"])):
                out.append({**r, "technique": technique, "label": label})
                break
    return out


def http_exploits(case: Case, ident: Identity, times: dict[str, dt.datetime]) -> list[Candidate]:
    owned = {ip: h for h in times for ip in ident.ips_of(h)}
    out = []
    for r in http_requests(case, sorted(owned), sorted(owned)):
        src, dst = ident.host_for_ip(r["src_ip"], r["ts"]) or owned[r["src_ip"]], owned[r["dst_ip"]]
        if src == dst or not times[dst] - HTTP_BEFORE <= r["ts"] <= times[dst] + SLACK:
            continue
        ok = str(r["status"] or "").startswith("2")
        what = (f"sent a {r['label']} request ({r['method'] or '?'} {r['uri']} to "
                f"{r['dst_ip']}:{r['dst_port']}, status {r['status'] or '?'}, {r['source']})")
        out.append(Candidate(src, dst, r["technique"], r["ts"], ("T1190", "T1210"),
                             "high" if ok else "medium", what, ()))
    return out
