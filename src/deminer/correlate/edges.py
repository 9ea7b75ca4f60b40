"""Candidate infection edges: every way the evidence says host A may have infected host B.

``graph.py`` keeps a candidate only when both ends are infected in the right order; this
module only reads the evidence. One function per kind of evidence:

    from_findings     brute force that succeeded, EternalBlue, PsExec/service/task/WMI,
                      pass-the-hash fan-out, Redis takeover, service and web exploits, web
                      shells — each from a source address that belongs to a case host
    key_trust         a private key on A whose fingerprint is authorized on B
    orchestration     A's Ansible/Salt/Chef/Puppet/pdsh inventory lists B (or B's minion or
                      client config names A as its master)
    shared_credentials an account guessed on A, then used on B without guessing, from the same
                      attacker address or from A
    valid_logons      a logon without guessing on B from infected A's address (or an MSSQL
                      login, Application 18454, from it) within the hour before B's infection

The network-only kinds (worm fan-out victims, SMB exploitation, HTTP service exploits seen by
a sensor) are in ``edges_net.py``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from deminer.case import Case
from deminer.correlate.facts import Fact, as_ip, cite, iso
from deminer.correlate.identity import Identity
from deminer.correlate.signs import source_host


@dataclass(frozen=True)
class Candidate:
    src: str
    dst: str
    technique: str
    ts: dt.datetime | None        # when it happened; None: at the target's infection time
    attack: tuple[str, ...]
    confidence: str               # high | medium | low
    what: str                     # a clause for the reason: "guessed root's SSH password"
    findings: tuple[str, ...]


_REMOTE = {"lateral_movement.win_remote_service_install": ("psexec_service", "installed a service"),
           "lateral_movement.win_remote_task": ("remote_task", "created a scheduled task"),
           "lateral_movement.win_wmi_exec": ("wmi_exec", "ran a process over WMI"),
           "lateral_movement.win_admin_share_then_exec": ("admin_share_exec",
                                                          "copied a program to an admin share and ran it")}
_WEB = {"consul_service_register": "consul_rce", "hadoop_yarn_submit": "hadoop_rce",
        "jenkins_script_console": "jenkins_rce", "docker_api_container": "docker_api_rce"}
PUSH_KINDS = {"ansible_inventory": "Ansible", "ansible_cfg": "Ansible", "salt_roster": "Salt SSH",
              "salt_minion": "Salt", "chef_knife": "Chef knife", "puppet_node": "Puppet",
              "pdsh_group": "pdsh", "clush_group": "ClusterShell"}
PULL_KINDS = {"salt_master": "Salt", "chef_client": "Chef"}


Shape = tuple[str, str, dt.datetime | None, str]   # technique, confidence, time, clause


def _brute(f: Fact) -> Shape | None:
    """The shape of a brute-force finding that got in."""
    who = f.ev("user.name") or f.ev("accounts") or "an account"
    success, long_session = f.ev_time("success_at"), f.ev_time("long_session_at")
    if f.rule == "initial_access.ssh_brute_force_success":
        return "ssh_brute_force", "high", f.ev_time("success_ts") or f.ts, f"guessed {who}'s SSH password"
    if f.rule == "initial_access.win_brute_force_success":
        kind = {10: "rdp", 3: "smb"}.get(f.ev_int("logon_type"), "windows")
        when = f.ev_time("success_ts") or f.ts
        return f"{kind}_brute_force", "high", when, f"guessed {who}'s password ({kind})"
    if f.rule == "credential_access.net_ssh_brute_force" and success:
        return "ssh_brute_force", "high", success, "guessed an SSH password (seen on the wire)"
    if f.rule == "credential_access.net_ssh_brute_force" and long_session:
        return "ssh_brute_force", "low", long_session, "held a long SSH session after guessing"
    if f.rule == "credential_access.net_rdp_brute_force" and long_session:
        return "rdp_brute_force", "medium", long_session, "held a long RDP session after guessing"
    return None


def _one(f: Fact) -> Shape | None:
    """(technique, confidence, time, clause) for findings with one source and one target."""
    if (b := _brute(f)) is not None:
        return b
    if f.rule == "lateral_movement.net_eternalblue_traits":
        if f.ev_int("implant_replies") or f.ev_int("overflows"):
            return "eternalblue", "high", f.ts, "sent the EternalBlue exploit over SMB"
        return "eternalblue", "low", f.ts, "probed it for DoublePulsar"
    if f.rule in _REMOTE:
        technique, clause = _REMOTE[f.rule]
        return technique, "high", f.ts, clause + " on it"
    if f.rule == "initial_access.net_redis_abuse":
        return "redis_rce", "high" if f.severity == "critical" else "low", f.ts, "took over its Redis"
    if f.rule == "initial_access.web_exploit_request":
        technique = _WEB.get(f.ev("target") or "", "web_exploit")
        return technique, "high" if f.ev_int("ok") else "low", f.ts, f"sent {f.ev('exploit') or 'an exploit'}"
    if f.rule in ("persistence.webshell_upload", "persistence.webshell_request"):
        return "webshell", "medium", f.ts, "used a web shell on it"
    return None


def from_findings(facts: list[Fact], ident: Identity) -> list[Candidate]:
    out = []
    for f in facts:
        if f.rule == "lateral_movement.win_pass_the_hash" and f.ev("host_list"):
            src = source_host(f, ident)
            for name in f.ev_words("host_list"):
                dst = ident.host_of(name)
                if src and dst:
                    what = f"logged on with a reused NTLM hash as {f.ev('user.name')}"
                    out.append(Candidate(src, dst, "pass_the_hash", f.ts, f.attack, "medium", what, (f.id,)))
            continue
        shape = _one(f)
        src = source_host(f, ident) if shape else None
        if shape and src and f.host:
            technique, confidence, ts, clause = shape
            if f.ev("source.ip"):
                clause += f" (from {f.ev('source.ip')})"
            out.append(Candidate(src, f.host, technique, ts, f.attack, confidence, clause, (f.id,)))
    return out


def key_trust(case: Case, facts: list[Fact], ident: Identity,
              times: dict[str, dt.datetime]) -> list[Candidate]:
    """A private key on A opens B: its fingerprint is in B's authorized keys. The first logon
    with the key on B after A's infection (``times``) dates it; earlier ones are the owner's."""
    rows = case.query(
        "SELECT DISTINCT p.host AS src, p.path AS key_path, p.fingerprint AS fp, a.host AS dst, "
        "a.path AS auth_path, a.user AS auth_user FROM ssh_keys p JOIN ssh_keys a "
        "ON a.fingerprint = p.fingerprint AND a.kind = 'authorized' "
        "WHERE p.kind = 'private' AND p.fingerprint IS NOT NULL AND p.host IS NOT NULL "
        "AND a.host IS NOT NULL ORDER BY fp, src, dst")
    if not rows:
        return []
    logons = case.query(
        "SELECT host, ts, src_ip, user, json_extract_string(data, '$.fingerprint') AS fp FROM events "
        "WHERE event = 'logon_success' AND json_valid(data) "
        "AND list_contains(?, json_extract_string(data, '$.fingerprint')) ORDER BY ts",
        [sorted({str(r["fp"]) for r in rows})])
    used: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for lg in logons:
        used[(ident.canonical(str(lg["host"])) or "", str(lg["fp"]))].append(lg)
    out = []
    for r in rows:
        src, dst, fp = ident.canonical(str(r["src"])), ident.canonical(str(r["dst"])), str(r["fp"])
        if not src or not dst or src == dst:
            continue
        ids = tuple(f.id for f in facts if f.ev("fingerprint") == fp and f.host in (src, dst))
        what = (f"holds private key {r['key_path']} ({fp}) that {dst}'s {r['auth_path']} authorizes"
                f" for {r['auth_user'] or '?'}")
        mine = set(ident.ips_of(src))
        since = times.get(src)
        hits = [lg for lg in used.get((dst, fp), []) if since is None or lg["ts"] >= since]
        from_src = [lg for lg in hits if as_ip(str(lg["src_ip"])) in mine]
        if from_src or hits:
            lg = (from_src or hits)[0]
            what += f"; the key logged in from {lg['src_ip']} at {iso(lg['ts'])} UTC"
            out.append(Candidate(src, dst, "ssh_key", lg["ts"], ("T1021.004", "T1552.004"),
                                 "high" if from_src else "medium", what, ids))
        else:
            out.append(Candidate(src, dst, "ssh_key", None, ("T1021.004", "T1552.004"), "medium", what, ids))
    return out


def orchestration(case: Case, facts: list[Fact], ident: Identity) -> list[Candidate]:
    kinds = sorted({*PUSH_KINDS, *PULL_KINDS})
    rows = case.query("SELECT DISTINCT host, kind, target, location FROM remote_targets "
                      "WHERE list_contains(?, kind) AND target IS NOT NULL AND host IS NOT NULL "
                      "ORDER BY host, kind, target", [kinds])
    out = []
    for r in rows:
        here, there = ident.canonical(str(r["host"])), ident.host_of(str(r["target"]))
        if not here or not there or here == there:
            continue
        kind = str(r["kind"])
        src, dst = (here, there) if kind in PUSH_KINDS else (there, here)
        tool = PUSH_KINDS.get(kind) or PULL_KINDS[kind]
        ids = tuple(f.id for f in facts if f.rule == "lateral_movement.orchestration_config"
                    and f.host == here and f.entity == r["location"])
        what = (f"manages it with {tool} ({r['location']} on {here} names {r['target']})")
        out.append(Candidate(src, dst, "orchestration_push", None, ("T1072",), "medium", what, ids))
    return out


def shared_credentials(case: Case, facts: list[Fact], ident: Identity) -> list[Candidate]:
    """An account guessed on A and later used on B from the same attacker or from A, without
    guessing on B: the password cracked on A opened B."""
    cracked = []
    for f in facts:
        if f.rule in ("initial_access.ssh_brute_force_success", "initial_access.win_brute_force_success") \
                and f.host and f.ev("source.ip"):
            names = {n.split("\\")[-1].lower() for n in f.ev_words("accounts") + f.ev_words("user.name")}
            cracked.append((f, names, f.ev_time("success_ts") or f.ts))
    if not cracked:
        return []
    guessed_at = {(f.host, f.ev("source.ip")) for f, _, _ in cracked}
    accounts = sorted({n for _, names, _ in cracked for n in names})
    rows = case.query(
        "SELECT host, ts, src_ip, lower(regexp_replace(\"user\", '^.*\\\\', '')) AS account FROM events "
        "WHERE event = 'logon_success' AND src_ip IS NOT NULL AND host IS NOT NULL AND ts IS NOT NULL "
        "AND coalesce(status, '') <> 'publickey' "     # a key is no cracked password
        "AND list_contains(?, lower(regexp_replace(\"user\", '^.*\\\\', ''))) ORDER BY ts", [accounts])
    # Each cracked account looks only at the logons from its own origin addresses (the rows
    # by address, in time order): looking at every logon for every crack grew with the square
    # of the fleet (3,000 cracks x 30,000 logons at 10,000 hosts).
    targets = [ident.canonical(str(r["host"])) for r in rows]
    by_address: dict[str, list[int]] = defaultdict(list)
    for n, r in enumerate(rows):
        by_address[str(r["src_ip"])].append(n)
    out, seen = [], set()
    for f, names, t1 in cracked:
        origin = {f.ev("source.ip"), *ident.ips_of(f.host or "")}
        for n in sorted(n for ip in origin if ip for n in by_address.get(ip, ())):
            r, dst = rows[n], targets[n]
            if (not dst or dst == f.host or r["account"] not in names
                    or (t1 and r["ts"] < t1) or (dst, r["src_ip"]) in guessed_at
                    or (f.host, dst) in seen):
                continue
            seen.add((f.host, dst))
            out.append(Candidate(
                f.host or "", dst, "shared_credentials", r["ts"], ("T1078", "T1110"), "medium",
                f"had account {r['account']} guessed {cite([f.id])} at {iso(t1)} UTC; the same account "
                f"logged in on it from {r['src_ip']} at {iso(r['ts'])} UTC without guessing", (f.id,)))
    return out


REUSE_WINDOW = dt.timedelta(hours=1)
PROMPT = dt.timedelta(minutes=10)
# Logons that name their client: sshd/4624 logons and MSSQL's 18454/18453 ("Login succeeded
# for user 'sa'. [CLIENT: 10.5.1.10]"), which SQL logins leave instead of a 4624.
_LOGONS = """
SELECT host, ts, src_ip AS src, "user", source, coalesce(source_line, record_id) AS line
FROM events WHERE event = 'logon_success' AND src_ip IS NOT NULL AND ts IS NOT NULL
  AND list_contains(?, src_ip)
ORDER BY ts, host"""


def valid_logons(case: Case, ident: Identity, times: dict[str, dt.datetime],
                 targets: set[str]) -> list[Candidate]:
    """Logons on an infected host B from the address of an infected host A, after A's
    infection and within the hour before B's: credentials dumped on A and replayed (seed
    cases 1 and 5). Medium when B fell within 10 minutes of the logon, else low. ``times``
    maps infected hosts to their infection times; ``targets`` are the B to look at."""
    owned = {ip: host for host in times for ip in ident.ips_of(host)}
    if not owned or not targets:
        return []
    out, seen = [], set()
    for r in case.query(_LOGONS, [sorted(owned)]):
        dst = ident.canonical(str(r["host"]))
        src = ident.host_for_ip(r["src"], r["ts"]) or owned[r["src"]]
        if not dst or dst not in targets or src == dst or (src, dst) in seen or src not in times:
            continue
        if not (times[src] <= r["ts"] <= times[dst] + PROMPT and times[dst] - r["ts"] <= REUSE_WINDOW):
            continue
        seen.add((src, dst))
        what = (f"logged on to it as {r['user'] or '?'} from {r['src']} ({r['source']}:{r['line']}) "
                "without guessing, shortly before its infection")
        confidence = "medium" if times[dst] - r["ts"] <= PROMPT else "low"
        out.append(Candidate(src, dst, "credential_reuse", r["ts"], ("T1078", "T1021"), confidence, what, ()))
    return out
