"""Blast radius: which hosts the outbreak can still reach, and why (``host_verdicts.at_risk``).

A host that is not infected is at risk when

- an infected host reached it on a port miner worms spread through (SMB, RPC, RDP, SSH,
  Redis, databases, …) and it answered (``flows``); such an address with no host in the case
  is added as an ``unknown`` host, so the responder sees it must be checked;
- a private key stored on an infected host is in its authorized keys, or an infected host's
  SSH config, known_hosts, history or orchestration inventory names it (``remote_targets``);
- it has an account whose password was guessed on an infected host (shared passwords:
  seed cases 1, 5, 9);
- someone tried to get in and failed (its ``targeted`` signs).

Any Windows host, infected or not, whose installed updates (``hotfix_installed`` events from
the SOFTWARE hive) hold no MS17-010 update is at risk of EternalBlue (re-)infection. Reasons
are short phrases; the list is cut at ``MAX_REASONS``, and a shared-account reason names at most
``MAX_NAMED`` of the infected hosts the account was guessed on.
"""

from __future__ import annotations

from collections import defaultdict

from deminer.case import Case
from deminer.correlate.coverage import Coverage
from deminer.correlate.facts import ANSWERED_SQL, PORTS_SQL, Fact, as_ip, cite, is_internal
from deminer.correlate.identity import Identity
from deminer.correlate.verdict import HostVerdict
from deminer.sources.registry_hive import MS17_010_KBS

MAX_REASONS = 8
MAX_NEW_HOSTS = 500
MAX_NAMED = 5              # infected hosts a shared-account reason names before "and N more"


# Per host, its reasons in the order found: a dict used as an ordered set, since a host
# attacked from 20,000 addresses has 20,000 "targeted" reasons (a list made that quadratic).
Reasons = dict[str, dict[str, None]]


def _add(reasons: Reasons, host: str, text: str) -> None:
    reasons[host][text] = None


def _reachable(case: Case, ident: Identity, infected: set[str], verdicts: dict[str, HostVerdict],
               reasons: Reasons) -> list[str]:
    """At-risk reasons from flows; returns the addresses that are no case host."""
    ips = {ip: h for h in infected for ip in ident.ips_of(h)}
    if not ips:
        return []
    rows = case.query(
        "SELECT src_ip, dst_ip, min(ts) AS first, string_agg(DISTINCT CAST(dst_port AS VARCHAR), ',' "
        "ORDER BY CAST(dst_port AS VARCHAR)) AS ports FROM flows "
        f"WHERE list_contains(?, src_ip) AND dst_port IN {PORTS_SQL} AND {ANSWERED_SQL} "
        "GROUP BY src_ip, dst_ip ORDER BY src_ip, dst_ip LIMIT 20000", [sorted(ips)])
    strangers = []
    for r in rows:
        dst_ip = as_ip(str(r["dst_ip"]))
        if not dst_ip:
            continue
        dst = ident.host_for_ip(dst_ip, r["first"]) or ident.aliases.get(dst_ip)
        src = ident.host_for_ip(r["src_ip"], r["first"]) or ips[r["src_ip"]]
        if dst is None:
            if not is_internal(dst_ip):
                continue
            dst = dst_ip
            if dst not in verdicts and dst not in strangers:
                strangers.append(dst)
        if dst in infected or dst == src:
            continue
        _add(reasons, dst, f"reachable from infected {src} on port {r['ports']}")
    return strangers[:MAX_NEW_HOSTS]


def _stored_access(case: Case, ident: Identity, infected: set[str], reasons: Reasons) -> None:
    for r in case.query(
            "SELECT DISTINCT p.host AS src, a.host AS dst, p.fingerprint AS fp FROM ssh_keys p "
            "JOIN ssh_keys a ON a.fingerprint = p.fingerprint AND a.kind = 'authorized' "
            "WHERE p.kind = 'private' AND p.host IS NOT NULL AND a.host IS NOT NULL ORDER BY 1, 2, 3"):
        src, dst = ident.canonical(str(r["src"])), ident.canonical(str(r["dst"]))
        if src in infected and dst and dst not in infected:
            _add(reasons, dst, f"authorizes key {str(r['fp'])[:19]}… stored on infected {src}")
    for r in case.query("SELECT DISTINCT host, kind, target FROM remote_targets "
                        "WHERE host IS NOT NULL AND target IS NOT NULL ORDER BY 1, 2, 3"):
        src, dst = ident.canonical(str(r["host"])), ident.host_of(str(r["target"]))
        if src in infected and dst and dst not in infected and dst != src:
            _add(reasons, dst, f"named in infected {src}'s {r['kind']}")


def _shared_accounts(case: Case, ident: Identity, facts: list[Fact], infected: set[str],
                     reasons: Reasons) -> None:
    guessed: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.rule in ("initial_access.ssh_brute_force_success", "initial_access.win_brute_force_success") \
                and f.host in infected:
            for name in f.ev_words("accounts") + f.ev_words("user.name"):
                guessed[name.split("\\")[-1].lower()].add(f.host or "")
    if not guessed:
        return
    account = "lower(regexp_replace(\"user\", '^.*\\\\', ''))"   # DOMAIN\\name -> name
    rows = case.query(
        f"SELECT DISTINCT host, {account} AS account FROM accounts WHERE list_contains(?, {account}) "
        f"UNION SELECT DISTINCT host, {account} FROM events "
        f"WHERE event = 'logon_success' AND list_contains(?, {account}) ORDER BY 1, 2",
        [sorted(guessed), sorted(guessed)])
    # One phrase per account, naming a few of the hosts: a worm that guessed root on 2,000
    # hosts would otherwise write all 2,000 names into every other host's reasons.
    phrases = {account: f"has account {account}, guessed on infected {_some(hosts)} (shared password?)"
               for account, hosts in guessed.items()}
    for r in rows:
        host = ident.canonical(str(r["host"]))
        if host and host not in infected:
            _add(reasons, host, phrases[str(r["account"])])


def _some(hosts: set[str], shown: int = MAX_NAMED) -> str:
    """``a, b, c`` or ``a, b, c and 1,997 more`` (sorted, so the same hosts are named)."""
    names = sorted(hosts)
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _unpatched(coverage: dict[str, Coverage], reasons: Reasons) -> None:
    for host, cov in sorted(coverage.items()):
        if cov.windows and cov.kbs and not cov.kbs & MS17_010_KBS:
            _add(reasons, host, f"no MS17-010 update among {len(cov.kbs)} installed updates")


def assess(case: Case, ident: Identity, facts: list[Fact], verdicts: dict[str, HostVerdict],
           coverage: dict[str, Coverage]) -> None:
    """Fill ``at_risk`` of every verdict; add hosts known only as reachable addresses."""
    infected = {h for h, v in verdicts.items() if v.verdict == "infected"}
    reasons: Reasons = defaultdict(dict)
    strangers = _reachable(case, ident, infected, verdicts, reasons) if infected else []
    if infected:
        _stored_access(case, ident, infected, reasons)
        _shared_accounts(case, ident, facts, infected, reasons)
    _unpatched(coverage, reasons)
    for ip in strangers:
        verdicts[ip] = HostVerdict(
            ip, "unknown", missing=["only network sightings"],
            reason=f"unknown: address {ip} is known only from connections infected hosts made to it; "
                   "collect it")
    for host, v in verdicts.items():
        if v.verdict != "infected":
            for s in v.of_kind("targeted"):
                _add(reasons, host, f"targeted: {s.what} {cite([s.finding])}")
        found = list(reasons.get(host, {}))
        more = [f"+{len(found) - MAX_REASONS} more"] if len(found) > MAX_REASONS else []
        v.at_risk = found[:MAX_REASONS] + more

