"""Patient zero and the entry vector: who was first, and how the attacker got in.

Patient zero is the earliest infected host (by ``reference_time``) among those with no
inbound infection edge; hosts infected at the same second are all patient zero. Every other
infected host without an inbound edge is a separate entry point and gets its own vector; an
infected host with an inbound edge has the vector ``lateral``. When every infected host has
an inbound edge (a cycle of equal times), the earliest infected hosts are taken.

The entry vector of a root host H infected at T comes from the evidence on H, from an
address that belongs to no infected case host:

    web_exploit       an exploit request the web server answered 2xx, a web shell upload or
                      use, or a web server process (httpd, nginx, php-fpm, w3wp) spawning the
                      first malicious process
    service_rce       Redis takeover, a Consul/Hadoop/Jenkins/Docker API exploit answered
                      2xx (access log or a sensor's HTTP log), EternalBlue sent to it, or a
                      service process (redis-server, postgres, java, consul, mongod,
                      sqlservr) spawning a shell or downloader, or lsass.exe / spoolsv.exe
                      doing so (where SMB exploit payloads run)
    brute_force       a brute-force login that succeeded
    phishing          a browser, mail client or Office program spawning a script host,
                      shell or a program from a user-writable folder
    poisoned_update   a software updater or installer doing the same
    usb               a USB storage device (``usb_device`` events from SYSTEM's USBSTOR) first
                      installed or last seen between 24 hours before T and 1 hour after
    unknown           none of these: the reason says which evidence was missing

Process-based vectors look at process starts (Sysmon 1, 4688, auditd) between 1 hour before
and 1 hour after T, and at the parents of processes that findings flagged. Of all the
candidates up to 1 hour after T, the one closest before T wins (the last thing that happened
before the compromise showed); ties go in the order above.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from deminer.case import Case, to_utc
from deminer.correlate import edges_net as net
from deminer.correlate.facts import Fact, cite, iso
from deminer.correlate.graph import Edge
from deminer.correlate.identity import Identity
from deminer.correlate.signs import source_host
from deminer.correlate.verdict import HostVerdict

VECTORS = ("web_exploit", "service_rce", "brute_force", "phishing", "poisoned_update", "usb")
AFTER = dt.timedelta(hours=1)
PROCESS_BEFORE = dt.timedelta(hours=1)
USB_BEFORE = dt.timedelta(hours=24)
_SERVICE_TARGETS = {"consul_service_register", "hadoop_yarn_submit", "jenkins_script_console",
                    "docker_api_container"}
_BRUTE = {"initial_access.ssh_brute_force_success", "initial_access.win_brute_force_success"}
_PARENTS = (
    ("phishing", re.compile(r"(?i)(^|[\\/])(chrome|firefox|msedge|iexplore|opera|brave|safari|outlook"
                            r"|thunderbird|winmail|hxoutlook|winword|excel|powerpnt|acrord32)(\.exe)?$")),
    ("poisoned_update", re.compile(r"(?i)(^|[\\/])[^\\/]*(update|updater|upgrade|setup|install|patch"
                                   r"|msiexec|dpkg|rpm)[^\\/]*$")),
    ("service_rce", re.compile(r"(?i)(^|[\\/])(redis-server|postgres|postmaster|consul|java|mongod|mysqld"
                               r"|sqlservr|elasticsearch|nomad)(\.exe)?$")),
    # EternalBlue/DoublePulsar payloads run inside lsass.exe or spoolsv.exe: the exposed SMB
    # service was exploited.
    ("service_rce", re.compile(r"(?i)(^|[\\/])(lsass|spoolsv)\.exe$")),
    ("web_exploit", re.compile(r"(?i)(^|[\\/])(httpd|apache2|nginx|php-fpm[\d.]*|php-cgi|php|w3wp|lighttpd"
                               r"|tomcat\d*)(\.exe)?$")),
)
# Microsoft's own updaters start programs all day; they are not a third-party update.
_WINDOWS_UPDATE = re.compile(r"(?i)(wuauclt|trustedinstaller|tiworker|usoclient|musnotification)")
_SUSPICIOUS_CHILD = re.compile(
    r"(?i)((^|[\\/])(powershell|pwsh|cmd|wscript|cscript|mshta|rundll32|regsvr32|bitsadmin|certutil|sh|bash"
    r"|dash|curl|wget|python\d?|perl)(\.exe)?$)|[\\/](temp|tmp|appdata|downloads|public|shm)[\\/]")


@dataclass(frozen=True)
class Entry:
    vector: str
    ts: dt.datetime | None
    reason: str
    findings: tuple[str, ...] = ()


def _from_findings(host: str, facts: list[Fact], ident: Identity, infected: set[str]) -> list[Entry]:
    out = []
    for f in facts:
        if f.host != host:
            continue
        src = source_host(f, ident)
        if src in infected and src != host:
            continue                     # lateral: graph.py's business
        origin = f.ev("source.ip") or "?"
        if src and src not in infected:
            origin += f" ({src}, a case host not found infected)"
        vector, ts = None, f.ts
        if f.rule == "initial_access.web_exploit_request" and f.ev_int("ok"):
            vector = "service_rce" if f.ev("target") in _SERVICE_TARGETS else "web_exploit"
        elif f.rule in ("persistence.webshell_upload", "persistence.webshell_request"):
            vector = "web_exploit"
        elif f.rule == "initial_access.net_redis_abuse":
            vector = "service_rce"
        elif f.rule == "lateral_movement.net_eternalblue_traits" and (
                f.ev_int("overflows") or f.ev_int("implant_replies")):
            vector = "service_rce"          # SMB exposed to an outside address and exploited
        elif f.rule in _BRUTE:
            vector, ts = "brute_force", f.ev_time("success_ts") or f.ts
        elif f.rule == "credential_access.net_ssh_brute_force" and f.ev("success_at"):
            vector, ts = "brute_force", f.ev_time("success_at")
        if vector:
            out.append(Entry(vector, ts, f"{f.rule} {cite([f.id])} from {origin} at {iso(ts)} UTC", (f.id,)))
    return out


def _parent_vector(parent: str, child: str, flagged: bool) -> str | None:
    if not parent or not (flagged or _SUSPICIOUS_CHILD.search(child or "")):
        return None
    for vector, pattern in _PARENTS:
        if pattern.search(parent.strip().strip('"')) and not _WINDOWS_UPDATE.search(parent):
            return vector
    return None


def _flagged_pids(host: str, facts: list[Fact]) -> set[int]:
    """Processes a finding on the host is about (``pid`` evidence or a ``pid N`` entity)."""
    pids = {f.ev_int("pid") for f in facts if f.host == host}
    pids |= {int(m.group(1)) for f in facts if f.host == host and (m := re.match(r"pid (\d+)$", f.entity))}
    return pids - {0}


def _from_processes(case: Case, raw: list[str], t: dt.datetime, flagged: set[int]) -> list[Entry]:
    """Process starts near T (logs), and processes alive at collection that started near T,
    whose parent is a browser, mail client, updater, service or web server."""
    rows = case.query(
        "SELECT ts, pid, process, command, source, source_line, "
        "json_extract_string(data, '$.parent_process') AS parent FROM events "
        "WHERE event = 'process_start' AND list_contains(?, host) AND ts BETWEEN ? AND ? "
        "AND json_valid(data) ORDER BY ts LIMIT 100000", [raw, t - PROCESS_BEFORE, t + AFTER])
    # A collection names each process by its /proc folder: parent and child share the snapshot.
    rows += case.query(
        "SELECT coalesce(c.started, c.ts) AS ts, c.pid, coalesce(c.exe, c.name) AS process, "
        "c.cmdline AS command, c.source, c.source_line, coalesce(p.exe, p.name) AS parent FROM processes c "
        "JOIN processes p ON p.host = c.host AND p.pid = c.ppid AND p.ts IS NOT DISTINCT FROM c.ts "
        "WHERE list_contains(?, c.host) AND coalesce(c.started, c.ts) BETWEEN ? AND ? "
        "ORDER BY 1 LIMIT 100000",
        [raw, t - PROCESS_BEFORE, t + AFTER])
    out = []
    for r in rows:
        child = str(r["process"] or r["command"] or "")
        vector = _parent_vector(str(r["parent"] or ""), child, r["pid"] in flagged)
        if vector:
            out.append(Entry(vector, r["ts"], f"{r['parent']} started {child} at {iso(r['ts'])} UTC "
                                              f"({r['source']}:{r['source_line']})"))
    return out


def _from_http(case: Case, ident: Identity, host: str, infected: set[str]) -> list[Entry]:
    """Service exploits a sensor saw sent to the host by an address of no infected host."""
    out = []
    for r in net.http_requests(case, ident.ips_of(host)):
        if ident.host_for_ip(r["src_ip"], r["ts"]) in infected:
            continue
        out.append(Entry("service_rce", r["ts"], f"{r['label']} request {r['method'] or '?'} {r['uri']} from "
                                          f"{r['src_ip']} at {iso(r['ts'])} UTC, status {r['status'] or '?'} "
                                          f"({r['source']})"))
    return out


def _from_usb(case: Case, raw: list[str], t: dt.datetime) -> list[Entry]:
    rows = case.query("SELECT ts, data, source FROM events WHERE event = 'usb_device' "
                      "AND list_contains(?, host) AND json_valid(data) ORDER BY ts", [raw])
    out = []
    for r in rows:
        data = json.loads(r["data"])
        if not isinstance(data, dict):
            continue
        name = data.get("friendly_name") or data.get("device") or "a USB storage device"
        for label, value in (("first installed", data.get("first_install")),
                             ("last arrived", data.get("last_arrival")), ("key written", r["ts"])):
            ts = to_utc(value)
            if ts and t - USB_BEFORE <= ts <= t + AFTER:
                out.append(Entry("usb", ts, f"USB storage {name} (serial {data.get('serial', '?')}) "
                                            f"{label} at {iso(ts)} UTC ({r['source']})"))
                break
    return out


def entry_vector(case: Case, ident: Identity, facts: list[Fact], v: HostVerdict,
                 infected: set[str], missing: list[str]) -> Entry:
    """How the attacker entered root host ``v``."""
    t = v.infected_at
    if t is None:
        return Entry("unknown", None, f"{v.host}'s infection time is unknown, so its entry cannot be placed")
    raw = sorted(a for a, c in ident.aliases.items() if c == v.host) or [v.host]
    found = [*_from_findings(v.host, facts, ident, infected),
             *_from_processes(case, raw, t, _flagged_pids(v.host, facts)),
             *_from_http(case, ident, v.host, infected), *_from_usb(case, raw, t)]
    found = [e for e in found if e.ts is not None and e.ts <= t + AFTER]
    if not found:
        lacking = f"; missing: {', '.join(missing)}" if missing else ""
        return Entry("unknown", None, "no web exploit, exposed-service, brute-force, phishing, update or "
                                      f"USB evidence on {v.host} up to 1 h after its infection at "
                                      f"{iso(t)} UTC{lacking}")
    before = [e for e in found if e.ts and e.ts <= t]
    pick = (max(before, key=lambda e: (e.ts, -VECTORS.index(e.vector))) if before
            else min(found, key=lambda e: (e.ts, VECTORS.index(e.vector))))
    others = sorted({e.vector for e in found} - {pick.vector})
    also = f"; also seen: {', '.join(others)}" if others else ""
    return Entry(pick.vector, pick.ts, f"{pick.vector} into {v.host}: {pick.reason}{also}", pick.findings)


def find_patient_zero(case: Case, ident: Identity, facts: list[Fact], verdicts: dict[str, HostVerdict],
                      edges: list[Edge]) -> tuple[list[str], dict[str, Entry], str]:
    """(patient zero hosts, entry per root host, a sentence saying why)."""
    infected = {h for h, v in verdicts.items() if v.verdict == "infected"}
    if not infected:
        return [], {}, "no host is infected, so there is no patient zero"
    entered = {e.dst for e in edges}
    roots = sorted(infected - entered)
    note = ""
    if not roots:
        roots, note = sorted(infected), " (every infected host has an inbound edge: a cycle of equal times)"
    timed = [t for t in (verdicts[h].reference_time for h in roots) if t is not None]
    first = min(timed) if timed else None
    pz = [h for h in roots if verdicts[h].reference_time == first] if first else roots
    entries = {h: entry_vector(case, ident, facts, verdicts[h], infected, verdicts[h].missing) for h in roots}
    why = (f"patient zero {', '.join(pz)}: the earliest infected host(s) with no inbound infection edge, "
           f"infected at {iso(verdicts[pz[0]].infected_at)} UTC{note}; entry "
           + "; ".join(entries[h].reason for h in pz))
    return pz, entries, why
