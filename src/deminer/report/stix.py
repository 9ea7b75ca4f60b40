"""The case's indicators: gathered from findings and evidence, and exported as a STIX 2.1 bundle.

``collect_iocs`` reads what the detections concluded, not raw traffic, so every indicator is
tied to findings and hosts:

* pool and C2 domains, IPs and URLs named in the evidence of the network, miner and IOC rules
  (``_ROLE_RULES``; the evidence ``family`` decides pool vs C2 when it is given), plus the
  addresses those domains resolved to (``dns``) and every Stratum peer in ``flows``;
* download URLs (cron jobs piping to a shell, payload downloads) and the servers behind them;
* SHA-256/SHA-1/MD5 of flagged items: hashes in evidence, and the executable or file a
  finding names (``processes.exe_sha256``, ``files.sha256``);
* wallets (evidence ``wallet``/``login``, Monero addresses in flagged command lines);
* attacker SSH keys (``persistence.attacker_authorized_key``) and the outside addresses of
  brute-force successes and exploits.

Values are normalised and checked by ``detect.iocs.normalize`` (the same rules as ``--ioc``
files), so a mangled value from evidence is dropped, never exported.

``bundle`` turns them into STIX 2.1: one ``indicator`` per value with a STIX pattern,
``infrastructure`` for pool/C2/download endpoints, ``malware`` for named families, and
``indicates``/``uses`` relationships. Wallets and SSH keys have no STIX core observable, so
their patterns use the custom types ``cryptocurrency-wallet:address`` and
``x-ssh-key:fingerprint``. Ids are uuid5 of the content and timestamps are first-seen times,
so two runs over the same evidence give identical bundles.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from deminer.case import Case
from deminer.detect.iocs import normalize

_POOL_RULES = {
    "impact.net_stratum_session", "command_and_control.net_pool_dns", "command_and_control.net_pool_tls",
    "command_and_control.pool_connection", "command_and_control.net_xmrig_donation",
    "impact.miner_process", "impact.mining_pool_reference", "impact.xmrig_flags",
    "impact.win_miner_execution", "defense_evasion.base64_hidden_miner", "impact.net_wallet_cluster"}
_C2_RULES = {"command_and_control.ioc_domain_lookup", "command_and_control.ioc_in_command",
             "command_and_control.net_frp_proxy", "command_and_control.net_beaconing",
             "command_and_control.net_ids_miner_alert"}
_DOWNLOAD_RULES = {"execution.net_payload_download", "persistence.cron_pipe_to_shell"}
_ROLE_RULES = {**{r: "pool" for r in _POOL_RULES}, **{r: "c2" for r in _C2_RULES},
               **{r: "download" for r in _DOWNLOAD_RULES}}
_ATTACKER_RULES = {"initial_access.ssh_brute_force_success", "initial_access.win_brute_force_success",
                   "initial_access.web_exploit_request", "initial_access.net_redis_abuse",
                   "persistence.webshell_request"}
# Evidence fields that name network endpoints, and those that hold commands to search for URLs.
# (Not ``indicator``: that is the list entry a value matched, e.g. the parent domain.)
_HOST_FIELDS = ("destination.domain", "destination.ip", "qname", "sni", "names", "pool", "matched",
                "raddr", "connections", "connected_to", "answers", "endpoints", "frps", "server",
                "stratum")
_TEXT_FIELDS = ("cmdline", "command", "decoded", "download", "url", "urls", "stratum", "pool")
_NOT_FAMILIES = {"mining-pool", "miner", ""}
_URL = re.compile(r"(?i)\b(?:https?|ftp|tftp|stratum2?(?:\+(?:tcp|ssl|tls))*)://[^\s'\"`;|&<>(){}\\]+")
_WALLET = re.compile(r"(?<![1-9A-HJ-NP-Za-km-z])[48][1-9AB][1-9A-HJ-NP-Za-km-z]{93}"
                     r"(?:[1-9A-HJ-NP-Za-km-z]{11})?(?![1-9A-HJ-NP-Za-km-z])")
_TOKEN = re.compile(r"[^\s,;|'\"()<>{}]+")
_FINGERPRINT = re.compile(r"^[A-Za-z0-9+/=:._-]{8,300}$")
_HASH_KINDS = {"sha256": "sha256", "exe_sha256": "sha256", "sha1": "sha1", "md5": "md5"}
# Private networks (RFC 1918, CGNAT, ULA): an address there is a case host, never shared as an
# attacker, C2 or download indicator (a worm's internal payload host is in the graph instead).
_INTERNAL = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                     "100.64.0.0/10", "fc00::/7"))
NAMESPACE = uuid.UUID("5b0f4a2e-6c1d-5e0a-9f3b-de41ce0a1701")   # deminer's uuid5 namespace
EPOCH = dt.datetime(1970, 1, 1)
MAX_FINDING_IDS = 50   # finding ids kept per indicator (the description names 20)


@dataclass
class Ioc:
    kind: str          # domain, ip, url, sha256, sha1, md5, wallet, ssh_key
    value: str
    role: str          # pool, c2, download, file, wallet, attacker
    families: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    findings: set[str] = field(default_factory=set)
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    details: set[str] = field(default_factory=set)   # path, key type, "resolved from ..."


@dataclass(frozen=True)
class _Seen:
    """Where a value was seen: hosts, finding ids and the time range."""

    hosts: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    first: dt.datetime | None = None
    last: dt.datetime | None = None


@lru_cache(maxsize=65536)
def _norm(kind: str, value: str) -> str | None:
    if kind == "ssh_key":           # a fingerprint: SHA256:<base64> or MD5:<hex pairs>
        return value if _FINGERPRINT.match(value) else None
    try:
        return normalize(kind, value)
    except ValueError:
        return None                                     # not a usable value: never exported


def _internal(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in _INTERNAL)


@lru_cache(maxsize=65536)
def _endpoint(token: str) -> tuple[tuple[str, str], ...]:
    """A host, ``host:port``, ``[v6]:port`` or URL token as (kind, value) pairs."""
    token = token.strip().rstrip(".,")
    out: list[tuple[str, str]] = []
    if "://" in token:
        out.append(("url", token))
        try:
            token = urlsplit(token).hostname or ""
        except ValueError:
            return tuple(out)
    elif token.startswith("[") and "]" in token:          # [v6] or [v6]:port
        token = token[1:token.index("]")]
    elif token.count(":") == 1:                           # host:port, v4:port
        token = token.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(token)
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast):
            out.append(("ip", token))
    except ValueError:
        if "." in token and re.search(r"[A-Za-z]", token.rsplit(".", 1)[-1]):
            out.append(("domain", token))
    return tuple(out)


class _Gather:
    def __init__(self) -> None:
        self.iocs: dict[tuple[str, str], Ioc] = {}

    def add(self, kind: str, value: Any, role: str, seen: _Seen, family: str = "",
            detail: str | None = None) -> None:
        norm = _norm(kind, str(value)) if value is not None else None
        if not norm:
            return
        ioc = self.iocs.setdefault((kind, norm), Ioc(kind, norm, role))
        if _ROLE_ORDER.index(role) < _ROLE_ORDER.index(ioc.role):
            ioc.role = role                              # the strongest reading wins
        ioc.hosts.update(seen.hosts)
        if len(ioc.findings) < MAX_FINDING_IDS:
            ioc.findings.update(seen.findings)
        for fam in family.split(","):
            if fam.strip().lower() not in _NOT_FAMILIES:
                ioc.families.add(fam.strip()[:100])
        if detail:
            ioc.details.add(detail[:300])
        if seen.first:
            ioc.first_seen = min(ioc.first_seen or seen.first, seen.first)
        if seen.last:
            ioc.last_seen = max(ioc.last_seen or seen.last, seen.last)

    def endpoint(self, token: str, role: str, seen: _Seen, family: str = "",
                 detail: str | None = None) -> None:
        found = _endpoint(token)
        if role != "pool" and any(kind == "ip" and _internal(value) for kind, value in found):
            return              # an internal server (or a misread one): not an outside indicator
        for kind, value in found:
            self.add(kind, value, role, seen, family, detail)


_ROLE_ORDER = ("pool", "c2", "download", "attacker", "wallet", "file")
_EV_KEYS = tuple(sorted({*_HOST_FIELDS, *_TEXT_FIELDS, *_HASH_KINDS, "wallet", "login", "family",
                         "ioc_family", "fingerprint", "key_type", "comment", "source.ip", "exe", "path",
                         "location", "file"}))
# One JSON path per key; evidence keys contain dots ("source.ip"), hence the quoting.
_EV_PATHS = "[" + ", ".join(f"'$.\"{k}\"'" for k in _EV_KEYS) + "]"


def _from_evidence(g: _Gather, rule: str, flagged: bool, ev: dict[str, str], seen: _Seen) -> None:
    family = ",".join(ev[k] for k in ("family", "ioc_family") if ev.get(k))
    role = _ROLE_RULES.get(rule)
    if role in ("pool", "c2") and family:
        # The indicator list's family says what the endpoint is: a pool, or a family's C2.
        role = "pool" if "mining-pool" in family else "c2"
    if role:
        for key in _HOST_FIELDS:
            for token in _TOKEN.findall(ev.get(key, "")[:20_000]):
                g.endpoint(token, role, seen, family)
        for key in _TEXT_FIELDS:
            for url in _URL.findall(ev.get(key, "")[:20_000]):
                g.endpoint(url, "pool" if url.lower().startswith("stratum") else role, seen, family)
        for key in ("wallet", "login"):
            for token in _TOKEN.findall(ev.get(key, "")[:5_000]):
                g.add("wallet", re.split(r"[.+/]", token)[0], "wallet", seen, family)
        for key in ("cmdline", "command", "decoded"):
            for wallet in _WALLET.findall(ev.get(key, "")[:20_000]):
                g.add("wallet", wallet, "wallet", seen, family)
    if flagged:
        path = next((ev[k] for k in ("exe", "path", "location", "file") if ev.get(k)), None)
        for key, kind in _HASH_KINDS.items():
            g.add(kind, ev.get(key), "file", seen, family, path)
    if rule == "persistence.attacker_authorized_key" and ev.get("fingerprint"):
        detail = " ".join(ev[k] for k in ("key_type", "comment") if ev.get(k)) or None
        g.add("ssh_key", ev["fingerprint"], "attacker", seen, family, detail)
    if rule in _ATTACKER_RULES and ev.get("source.ip"):
        for kind, value in _endpoint(ev["source.ip"]):
            if kind == "ip" and not _internal(value):
                g.add("ip", value, "attacker", seen)


def collect_iocs(case: Case) -> list[Ioc]:
    """Every indicator of the case, sorted by role, kind and value."""
    g = _Gather()
    # Findings with the same rule and the same indicator-bearing evidence are read once: a
    # fleet has thousands of findings naming the same pool.
    for row in case.query(f"""
        SELECT rule, severity IN ('medium', 'high', 'critical') AS flagged,
               json_extract_string(evidence, {_EV_PATHS}) AS vals,
               list(DISTINCT host ORDER BY host) FILTER (WHERE host IS NOT NULL) AS hosts,
               list(id ORDER BY id)[1:{MAX_FINDING_IDS}] AS ids, min(ts) AS first, max(ts) AS last
          FROM findings WHERE json_valid(evidence) GROUP BY ALL ORDER BY rule, flagged, vals"""):
        ev = {k: v for k, v in zip(_EV_KEYS, row["vals"], strict=True) if v}
        seen = _Seen(tuple(row["hosts"] or ()), tuple(row["ids"] or ()), row["first"], row["last"])
        _from_evidence(g, str(row["rule"]), bool(row["flagged"]), ev, seen)
    # The executable or file a medium+ finding points at, by pid or path on the same host.
    for row in case.query("""
        WITH f AS (SELECT id, host, ts, TRY_CAST(json_extract_string(evidence, '$.pid') AS BIGINT) AS pid,
                          json_extract_string(evidence, '$.exe') AS exe,
                          json_extract_string(evidence, '$.path') AS path
                   FROM findings WHERE severity IN ('medium', 'high', 'critical')
                     AND json_valid(evidence)),
        h AS (SELECT f.id, f.host, f.ts, p.exe_sha256 AS sha256, p.exe AS path
                FROM f JOIN processes p ON p.host = f.host AND p.pid = f.pid WHERE p.exe_sha256 IS NOT NULL
              UNION ALL
              SELECT f.id, f.host, f.ts, x.sha256, x.path
                FROM f JOIN files x ON x.host = f.host AND (x.path = f.exe OR x.path = f.path)
               WHERE x.sha256 IS NOT NULL)
        SELECT sha256, min(path) AS path, list(DISTINCT host ORDER BY host) AS hosts,
               list(DISTINCT id ORDER BY id)[1:50] AS ids, min(ts) AS first, max(ts) AS last
          FROM h GROUP BY sha256 ORDER BY sha256"""):
        g.add("sha256", row["sha256"], "file", _Seen(tuple(row["hosts"]), tuple(row["ids"]), row["first"],
                                                      row["last"]), detail=row["path"])
    _enrich(case, g)
    return sorted(g.iocs.values(), key=lambda i: (_ROLE_ORDER.index(i.role), i.kind, i.value))


def _enrich(case: Case, g: _Gather) -> None:
    """Addresses the pool/C2 domains resolved to, Stratum peers, and families from ``iocs``."""
    domains = [(i.value, i.role) for i in g.iocs.values() if i.kind == "domain" and i.role in ("pool", "c2")]
    if domains:
        for row in case.query("""
            WITH w AS (SELECT unnest(?) AS value, unnest(?) AS role),
            d AS (SELECT d.qname, unnest(d.answers) AS answer, d.ts, w.role,
                         coalesce(d.host, (SELECT min(host) FROM ip_hosts WHERE ip = d.client)) AS host
                    FROM dns d JOIN w ON d.qname = w.value OR d.qname LIKE '%.' || w.value)
            SELECT qname, answer, role, list(DISTINCT host ORDER BY host) FILTER (WHERE host IS NOT NULL)
                   AS hosts, min(ts) AS first, max(ts) AS last
              FROM d GROUP BY ALL ORDER BY qname, answer, role""",
                [[d for d, _ in domains], [r for _, r in domains]]):
            g.endpoint(str(row["answer"]), str(row["role"]),
                       _Seen(tuple(row["hosts"] or ()), (), row["first"], row["last"]),
                       detail=f"resolved from {row['qname']}")
    for row in case.query("""
        WITH f AS (SELECT dst_ip, ts, CASE WHEN json_valid(data) THEN json_extract_string(data, '$.login')
                          END AS login,
                          coalesce(host, (SELECT min(host) FROM ip_hosts WHERE ip = src_ip)) AS host
                     FROM flows WHERE app = 'stratum')
        SELECT dst_ip, login, list(DISTINCT host ORDER BY host) FILTER (WHERE host IS NOT NULL) AS hosts,
               min(ts) AS first, max(ts) AS last FROM f GROUP BY ALL ORDER BY dst_ip, login"""):
        seen = _Seen(tuple(row["hosts"] or ()), (), row["first"], row["last"])
        g.add("ip", row["dst_ip"], "pool", seen, detail="Stratum peer in flows")
        if row["login"]:
            g.add("wallet", re.split(r"[.+/]", str(row["login"]))[0], "wallet", seen)
    known = case.query("SELECT kind, value, family FROM iocs WHERE family IS NOT NULL")
    by_value = {(str(r["kind"]), str(r["value"])): str(r["family"]) for r in known}
    for ioc in g.iocs.values():
        fam = by_value.get((ioc.kind, ioc.value))
        if fam is None and ioc.kind == "domain":     # domains match their listed parents
            labels = ioc.value.split(".")
            parents = (".".join(labels[i:]) for i in range(1, len(labels) - 1))
            fam = next((by_value[("domain", p)] for p in parents if ("domain", p) in by_value), None)
        if fam is None and ioc.kind == "ssh_key":    # a known botnet's key comment
            words = (w for d in sorted(ioc.details) for w in d.split())
            fam = next((by_value[("key_comment", w)] for w in words if ("key_comment", w) in by_value), None)
        if fam and fam.lower() not in _NOT_FAMILIES:
            ioc.families.add(fam)
        if fam == "mining-pool" and ioc.role == "c2":
            ioc.role = "pool"


# ---- STIX 2.1 ---------------------------------------------------------------------------

def _sid(kind: str, *key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, chr(31).join((kind, *key)))}"


def _stamp(ts: dt.datetime | None) -> str:
    return (ts or EPOCH).strftime("%Y-%m-%dT%H:%M:%S.") + f"{(ts or EPOCH).microsecond // 1000:03d}Z"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pattern(ioc: Ioc) -> str:
    """The STIX pattern that matches ``ioc``."""
    if ioc.kind == "ip":
        typ = "ipv6-addr" if ":" in ioc.value else "ipv4-addr"
        return f"[{typ}:value = {_quote(ioc.value)}]"
    path = {"domain": "domain-name:value", "url": "url:value", "sha256": "file:hashes.'SHA-256'",
            "sha1": "file:hashes.'SHA-1'", "md5": "file:hashes.MD5",
            "wallet": "cryptocurrency-wallet:address", "ssh_key": "x-ssh-key:fingerprint"}[ioc.kind]
    return f"[{path} = {_quote(ioc.value)}]"


_ROLE_TEXT = {"pool": "Mining pool", "c2": "Command and control", "download": "Payload download",
              "file": "Malicious file", "wallet": "Miner wallet", "attacker": "Attacker"}
_INFRA_TYPES = {"pool": "undefined", "c2": "command-and-control", "download": "hosting-malware"}


def _describe(ioc: Ioc) -> str:
    hosts = sorted(ioc.hosts)
    parts = [f"{_ROLE_TEXT[ioc.role]} {ioc.kind} seen by deminer"]
    if hosts:
        more = f" and {len(hosts) - 20} more" if len(hosts) > 20 else ""
        parts.append(f"on {len(hosts)} host(s): {', '.join(hosts[:20])}{more}")
    if ioc.details:
        parts.append("(" + "; ".join(sorted(ioc.details)[:5]) + ")")
    if ioc.findings:
        parts.append(f"findings: {', '.join(sorted(ioc.findings)[:20])}")
    return " ".join(parts)


def bundle(iocs: list[Ioc]) -> dict[str, Any]:
    """The STIX 2.1 bundle for ``iocs`` (deterministic: same input, same bytes)."""
    ident = _sid("identity", "deminer")
    first = min((i.first_seen for i in iocs if i.first_seen), default=EPOCH)
    objects: list[dict[str, Any]] = [{
        "type": "identity", "spec_version": "2.1", "id": ident, "created": _stamp(EPOCH),
        "modified": _stamp(EPOCH), "name": "deminer", "identity_class": "system",
        "description": "deminer, a cryptomining incident-response toolkit"}]
    common = {"spec_version": "2.1", "created_by_ref": ident}
    malware: dict[str, dict[str, Any]] = {}
    for fam in sorted({f for i in iocs for f in i.families}):
        seen = min((i.first_seen or first for i in iocs if fam in i.families), default=first)
        malware[fam] = {"type": "malware", **common, "id": _sid("malware", fam),
                        "created": _stamp(seen), "modified": _stamp(seen), "name": fam,
                        "description": f"Malware family {fam}, named by indicator lists matched in this case",
                        "is_family": True, "malware_types": ["resource-exploitation"]}
    objects += malware.values()
    relations: list[dict[str, Any]] = []

    def relate(src: str, kind: str, dst: str, when: str) -> None:
        relations.append({"type": "relationship", **common, "id": _sid("relationship", src, kind, dst),
                          "created": when, "modified": when, "relationship_type": kind,
                          "source_ref": src, "target_ref": dst})

    for ioc in iocs:
        when = _stamp(ioc.first_seen or first)
        ind = _sid("indicator", ioc.kind, ioc.value)
        objects.append({
            "type": "indicator", **common, "id": ind, "created": when, "modified": when,
            "name": f"{_ROLE_TEXT[ioc.role]} {ioc.kind} {ioc.value}"[:300],
            "description": _describe(ioc), "indicator_types": ["malicious-activity"],
            "pattern": pattern(ioc), "pattern_type": "stix", "pattern_version": "2.1",
            "valid_from": when})
        if ioc.role in _INFRA_TYPES and ioc.kind in ("domain", "ip"):
            infra = _sid("infrastructure", ioc.kind, ioc.value)
            objects.append({
                "type": "infrastructure", **common, "id": infra, "created": when, "modified": when,
                "name": f"{_ROLE_TEXT[ioc.role]} {ioc.value}"[:300],
                "description": f"{_ROLE_TEXT[ioc.role]} endpoint contacted in this case",
                "infrastructure_types": [_INFRA_TYPES[ioc.role]]})
            relate(ind, "indicates", infra, when)
            for fam in sorted(ioc.families):
                relate(malware[fam]["id"], "uses", infra, when)
        for fam in sorted(ioc.families):
            relate(ind, "indicates", malware[fam]["id"], when)
    objects += sorted(relations, key=lambda r: str(r["id"]))
    ids = "\n".join(str(o["id"]) for o in objects)
    return {"type": "bundle", "id": _sid("bundle", ids), "objects": objects}
