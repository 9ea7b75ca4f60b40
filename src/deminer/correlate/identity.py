"""Host identity: which names and addresses in a case are the same machine.

Evidence names one machine many ways: a bundle says ``web1``, its Windows logs say
``WEB1.corp.example`` (``Computer``), a 4625 names the NetBIOS name cut to 15 characters, a
network rule names ``10.0.0.5``, an Ansible inventory names ``web1.corp``. Every name and
address becomes an alias of one canonical host id, by these rules (each merge keeps its reason):

1. a ``hosts`` row's ``host`` and its ``hostname`` (a bundle collected with ``--host``);
2. ``hosts`` rows with one ``machine_id`` when their names or addresses also agree (cloned VM
   images share a machine id, so a shared id alone is only noted);
3. a fully qualified name and the short name that is its first label, when exactly one FQDN
   in the case has that first label (``web1`` and ``web1.prod`` + ``web1.dev`` stay apart);
   a 15-character name that begins exactly one longer first label (NetBIOS truncation);
4. an address used as a host id joins the host that owns it (below) when exactly one does;
5. a name in a ``known_hosts`` entry whose host key is a host's own key (``ssh_keys`` kind
   ``host_private``, same fingerprint) is that host.

Address ownership, strongest first: ``hosts.ips`` (the host's own interface list, timed by
``collected_at``), a ``known_hosts`` address whose key is the host's key, a DNS answer for
the host's name (timed by the answer). An address several hosts claimed (DHCP reuse) goes to
the owner seen first at or after the time asked about, else the last one before it.

The canonical id of a group is, in order of preference, a host that was collected (has
``collected_at``), one with a ``hosts`` row, a name rather than an address, then the one with
fewest dots, then the shortest, then alphabetical. ``write_aliases`` stores the map as the
table ``host_aliases(alias, host, reason)``: one row per alias, canonical ids map to
themselves, addresses with one owner included, so any host column joins to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

from deminer.case import Case
from deminer.correlate.facts import as_ip, is_host_address, is_internal
from deminer.sources.base import host_id

# Tables whose ``host`` column names a machine (errors and inputs only repeat them).
HOST_TABLES = ("hosts", "processes", "connections", "files", "persistence", "accounts", "ssh_keys",
               "remote_targets", "events", "flows", "dns", "findings")
STRENGTH = {"hosts.ips": 3, "host key": 2, "dns": 1}
NETBIOS = 15
RawClaim = tuple[str, str, dt.datetime | None, str]   # address, raw host id, seen, how


@dataclass(frozen=True)
class IpClaim:
    host: str                 # canonical host id
    seen: dt.datetime | None  # when the claim was true (collection time, DNS answer time)
    how: str                  # a key of STRENGTH


@dataclass
class Identity:
    aliases: dict[str, str] = field(default_factory=dict)     # alias -> canonical host id
    reasons: dict[str, str] = field(default_factory=dict)     # alias -> why
    claims: dict[str, list[IpClaim]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    collected_at: dict[str, dt.datetime] = field(default_factory=dict)  # canonical -> latest
    heads: dict[str, set[str]] = field(default_factory=dict)  # first label -> canonical ids

    @cached_property
    def hosts(self) -> set[str]:
        """Canonical ids of every machine named in the case (addresses without owner too)."""
        return set(self.aliases.values())

    @cached_property
    def _ips_by_host(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for ip, claims in self.claims.items():
            for c in claims:
                out[c.host].add(ip)
        return {h: sorted(ips) for h, ips in out.items()}

    def canonical(self, name: str | None) -> str | None:
        if not name:
            return None
        return self.aliases.get(name, self.aliases.get(name.strip().lower(), name))

    def host_for_ip(self, ip: str | None, ts: dt.datetime | None = None) -> str | None:
        """The case host that had address ``ip`` (at ``ts`` when several did), else None."""
        claims = self.claims.get(as_ip(ip) or "", [])
        if not claims:
            return None
        best = max(STRENGTH[c.how] for c in claims)
        top = [c for c in claims if STRENGTH[c.how] == best]
        owners = {c.host for c in top}
        if len(owners) == 1:
            return owners.pop()
        if ts is None:
            return None
        after = sorted((c for c in top if c.seen and c.seen >= ts), key=lambda c: (c.seen, c.host))
        if after:
            return after[0].host
        before = sorted((c for c in top if c.seen and c.seen < ts), key=lambda c: (c.seen, c.host))
        return before[-1].host if before else None

    def host_of(self, ref: str | None, ts: dt.datetime | None = None) -> str | None:
        """The case host a name, FQDN, ``user@host:port`` or address refers to, else None."""
        if not ref:
            return None
        ip = as_ip(ref)
        if ip:
            return self.host_for_ip(ip, ts) or self.aliases.get(ip)
        name = _name(ref)
        if not name:
            return None
        if name in self.aliases:
            return self.aliases[name]
        head = name.split(".", 1)[0]
        if "." in name and head in self.aliases:
            return self.aliases[head]
        owners = self.heads.get(head, set())
        return next(iter(owners)) if len(owners) == 1 else None

    def ips_of(self, host: str) -> list[str]:
        """Every address any claim gives ``host`` (read once the identity is resolved)."""
        return self._ips_by_host.get(host, [])


def _name(ref: str) -> str | None:
    """``root@Web1.corp.:2222`` -> ``web1.corp``; wildcards and hashed names -> None."""
    s = ref.strip().rsplit("@", 1)[-1].strip("[]").lower()
    s = re.sub(r"\]?:\d+$", "", s).rstrip(".")
    if not s or s.startswith("|") or re.search(r"[*?!\s/\\]", s):
        return None
    return s


def _is_ip(name: str) -> bool:
    return as_ip(name) == name


class _Groups:
    """Union-find over names, remembering why each name joined."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.why: dict[str, str] = {}

    def add(self, name: str) -> None:
        self.parent.setdefault(name, name)

    def find(self, name: str) -> str:
        self.add(name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.why.setdefault(b, why)
            self.why.setdefault(a, why)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for name in self.parent:
            out[self.find(name)].append(name)
        return out


def _names(case: Case) -> set[str]:
    sql = " UNION ".join(f"SELECT DISTINCT host FROM {t} WHERE host IS NOT NULL" for t in HOST_TABLES)
    return {str(r["host"]) for r in case.query(sql) if str(r["host"]).strip()}


def resolve_identity(case: Case) -> Identity:
    """Group every host name and address of ``case`` into machines (see the module doc)."""
    ident = Identity()
    g = _Groups()
    names = _names(case)
    for n in names:
        g.add(n)
    rows = case.query("SELECT host, hostname, ips, machine_id, collected_at FROM hosts "
                      "WHERE host IS NOT NULL ORDER BY host, collected_at NULLS FIRST")
    collected: set[str] = set()
    in_hosts = {str(r["host"]) for r in rows}
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    raw_claims: list[RawClaim] = []
    for r in rows:
        h = str(r["host"])
        if r["collected_at"]:
            collected.add(h)
        alias = host_id(str(r["hostname"])) if r["hostname"] else None
        if alias and alias != h:
            g.union(h, alias, f"{h} was collected with hostname {alias}")
        mid = str(r["machine_id"] or "").strip().lower()
        if mid and set(mid) != {"0"}:
            by_machine[mid].append(r)
        for ip in r["ips"] or []:
            addr = as_ip(str(ip))
            if addr and is_host_address(addr):
                raw_claims.append((addr, h, r["collected_at"], "hosts.ips"))
    _merge_machine_ids(g, by_machine, ident)
    _merge_fqdns(g, ident)
    raw_claims += _host_key_claims(case, g, ident)
    # DNS answers name hosts by FQDN: a draft of the groups so far says which host each is.
    draft = Identity()
    _finish(g, draft, collected, in_hosts, names)
    raw_claims += _dns_claims(case, draft)
    # Addresses used as host ids join their owner when the strongest claims agree on one.
    by_ip: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for addr, h, _seen, how in raw_claims:
        by_ip[addr].append((h, how))
    for addr, owners in sorted(by_ip.items()):
        best = max(STRENGTH[how] for _, how in owners)
        top = [(h, how) for h, how in owners if STRENGTH[how] == best]
        roots = {g.find(h) for h, _ in top}
        if len(roots) == 1:
            g.union(top[0][0], addr, f"address {addr} belongs to {top[0][0]} ({top[0][1]})")
        elif addr in names:
            ident.notes.append(f"address {addr} was claimed by several hosts "
                               f"({', '.join(sorted(roots))}); its rows stay under the address")
    _finish(g, ident, collected, in_hosts, names)
    for addr, h, seen, how in raw_claims:
        ident.claims.setdefault(addr, []).append(IpClaim(ident.aliases[g.find(h)], seen, how))
    for r in rows:
        canon, at = ident.aliases.get(str(r["host"])), r["collected_at"]
        if canon and at and (canon not in ident.collected_at or at > ident.collected_at[canon]):
            ident.collected_at[canon] = at
    return ident


def _merge_machine_ids(g: _Groups, by_machine: dict[str, list[dict[str, Any]]],
                       ident: Identity) -> None:
    for mid, rows in sorted(by_machine.items()):
        first = rows[0]
        for other in rows[1:]:
            a, b = str(first["host"]), str(other["host"])
            if g.find(a) == g.find(b):
                continue
            short = {str(x["hostname"] or x["host"]).lower().split(".")[0] for x in (first, other)}
            shared = set(first["ips"] or []) & set(other["ips"] or [])
            if len(short) == 1 or shared:
                g.union(a, b, f"{a} and {b} share machine id {mid[:12]}…")
            else:
                ident.notes.append(f"{a} and {b} share machine id {mid[:12]}… but not their names "
                                   "or addresses (a cloned image?); kept apart")


def _merge_fqdns(g: _Groups, ident: Identity) -> None:
    names = [n for n in list(g.parent) if not _is_ip(n)]
    heads: dict[str, list[str]] = defaultdict(list)
    for n in names:
        if "." in n:
            heads[n.split(".", 1)[0]].append(n)
    for head, fqdns in sorted(heads.items()):
        roots = {g.find(f) for f in fqdns}
        if len(roots) == 1 and head in g.parent:
            g.union(head, fqdns[0], f"{head} is the short name of {fqdns[0]}")
        elif len(roots) > 1 and head in g.parent:
            ident.notes.append(f"short name {head} matches several hosts ({', '.join(sorted(fqdns))}); "
                               "kept apart")
    longer = [h for h in {n.split(".", 1)[0] for n in names} if len(h) > NETBIOS]
    for n in names:
        if "." not in n and len(n) == NETBIOS:
            matches = [h for h in longer if h.startswith(n)]
            if len(matches) == 1:
                target = matches[0] if matches[0] in g.parent else next(
                    x for x in names if x.split(".", 1)[0] == matches[0])
                g.union(target, n, f"{n} is the NetBIOS name (15 characters) of {target}")


def _host_key_claims(case: Case, g: _Groups, ident: Identity) -> list[RawClaim]:
    """known_hosts entries whose key is a collected host's own host key."""
    rows = case.query(
        "SELECT DISTINCT k.comment AS patterns, h.host AS owner, h.fingerprint AS fp "
        "FROM ssh_keys k JOIN ssh_keys h ON h.kind = 'host_private' AND h.fingerprint = k.fingerprint "
        "WHERE k.kind = 'known_host' AND k.fingerprint IS NOT NULL AND h.host IS NOT NULL "
        "ORDER BY fp, owner LIMIT 100000")
    owners: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        owners[str(r["fp"])].add(g.find(str(r["owner"])))
    out: list[RawClaim] = []
    for r in rows:
        fp, owner = str(r["fp"]), str(r["owner"])
        if len(owners[fp]) > 1:
            continue                      # cloned host keys name no single machine
        for pattern in str(r["patterns"] or "").split(","):
            name = _name(pattern)
            if not name:
                continue
            if _is_ip(name):
                out.append((name, owner, None, "host key"))
            elif name not in g.parent:
                g.union(owner, name, f"{name} is known by {owner}'s host key (known_hosts)")
            elif g.find(name) != g.find(owner):
                ident.notes.append(f"{name} is known by {owner}'s host key but is also another host; "
                                   "kept apart")
    return out


def _dns_claims(case: Case, draft: Identity) -> list[RawClaim]:
    """Internal addresses in DNS answers for names of case hosts (a resolver log, a sensor's
    DNS records: often the only tie between a Windows host's name and its address)."""
    rows = case.query(
        "SELECT lower(qname) AS qname, a AS ip, max(ts) AS seen FROM "
        "(SELECT qname, ts, unnest(answers) AS a FROM dns "
        " WHERE coalesce(qtype, 'A') IN ('A', 'AAAA') AND answers IS NOT NULL AND qname IS NOT NULL) x "
        "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 100000")
    out = []
    for r in rows:
        addr = as_ip(str(r["ip"]))
        name = _name(str(r["qname"]))
        host = draft.host_of(name) if name else None
        if addr and host and is_internal(addr):
            out.append((addr, host, r["seen"], "dns"))
    return out


def _finish(g: _Groups, ident: Identity, collected: set[str], in_hosts: set[str],
            names: set[str]) -> None:
    for members in g.groups().values():
        canon = min(members, key=lambda n: (n not in collected, n not in in_hosts, _is_ip(n),
                                            n not in names, n.count("."), len(n), n))
        for m in members:
            ident.aliases[m] = canon
            ident.reasons[m] = "canonical host id" if m == canon else g.why.get(m, "same group")
    for alias, canon in ident.aliases.items():
        if not _is_ip(alias):
            ident.heads.setdefault(alias.split(".", 1)[0], set()).add(canon)


def write_aliases(case: Case, ident: Identity) -> int:
    """Store ``host_aliases(alias, host, reason)``; addresses with one owner are included."""
    rows = dict(ident.aliases)
    reasons = dict(ident.reasons)
    for addr in sorted(ident.claims):
        owner = ident.host_for_ip(addr)
        if owner and addr not in rows:
            rows[addr] = owner
            how = sorted({c.how for c in ident.claims[addr]})
            reasons[addr] = f"address of {owner} ({', '.join(how)})"
    names = sorted(rows)
    table = pa.table({"alias": names, "host": [rows[n] for n in names],
                      "reason": [reasons.get(n, "") for n in names]})
    case.db.execute("DELETE FROM host_aliases")
    case.add("host_aliases", table)
    case.flush()
    return len(names)
