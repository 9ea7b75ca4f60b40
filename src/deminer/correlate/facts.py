"""What correlate reads from a case: findings as ``Fact`` values, times, addresses.

The other correlate modules work on these small values instead of raw rows, so every one of
them reads a finding's evidence the same way: keys as the rules write them (``source.ip``,
``user.name``, ``victim_list``), times as naive UTC, addresses normalised by ``ipaddress``.
A value the evidence holds in an odd shape (a number where text was expected, a broken time)
reads as ``None``; it never stops correlation.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from deminer.case import Case, to_utc

# Times before this are not evidence of anything (zeroed clocks, archive-preserved mtimes).
EARLIEST_BELIEVABLE = dt.datetime(2000, 1, 1)


@dataclass(frozen=True)
class Fact:
    """One finding, with its host mapped to the canonical host id (``raw_host`` as stored)."""

    id: str
    rule: str
    severity: str
    attack: tuple[str, ...]
    host: str | None
    raw_host: str | None
    ts: dt.datetime | None
    entity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def ev(self, key: str) -> str | None:
        """An evidence value as stripped text, ``None`` when absent or empty."""
        value = self.evidence.get(key)
        if value is None or isinstance(value, (dict, list)):
            return None
        text = str(value).strip()
        return text or None

    def ev_int(self, key: str) -> int:
        value = self.evidence.get(key)
        if isinstance(value, bool):
            return int(value)
        try:
            return int(value) if value is not None else 0
        except (TypeError, ValueError):
            return 0

    def ev_time(self, key: str) -> dt.datetime | None:
        return to_utc(self.ev(key))

    def ev_words(self, key: str) -> list[str]:
        """A space- or comma-separated evidence list (``victim_list``, ``host_list``)."""
        text = self.ev(key)
        return [w for w in re.split(r"[\s,]+", text) if w] if text else []


def load_facts(case: Case, canonical: dict[str, str]) -> list[Fact]:
    """Every finding of the case, oldest first, hosts mapped through ``canonical``."""
    rows = case.query(
        "SELECT id, rule, severity, attack, host, ts, entity, summary, evidence FROM findings "
        "ORDER BY ts NULLS LAST, id")
    out = []
    for r in rows:
        evidence: Any
        try:
            evidence = json.loads(r["evidence"]) if r["evidence"] else {}
        except (json.JSONDecodeError, TypeError):
            evidence = {"raw": r["evidence"]}
        raw_host = r["host"]
        out.append(Fact(
            id=str(r["id"] or ""), rule=str(r["rule"] or ""), severity=str(r["severity"] or "info"),
            attack=tuple(r["attack"] or ()), host=canonical.get(raw_host, raw_host) if raw_host else None,
            raw_host=raw_host, ts=r["ts"], entity=str(r["entity"] or ""),
            summary=str(r["summary"] or ""),
            evidence=evidence if isinstance(evidence, dict) else {"value": evidence}))
    return out


def as_ip(text: str | None) -> str | None:
    """The address in ``text`` in canonical form (``[::1]:22``, ``10.0.0.5:445`` and
    ``user@10.0.0.5`` included), else ``None``."""
    if not text:
        return None
    s = text.strip().rsplit("@", 1)[-1]
    if s.startswith("["):
        s = s[1:].split("]", 1)[0]
    elif s.count(":") == 1:
        s = s.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return None


# Inside some organisation's network: RFC 1918, carrier-grade NAT, IPv6 unique local.
# (``ipaddress.is_private`` also counts documentation and reserved ranges, which are not.)
_INTERNAL = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def is_internal(ip: str) -> bool:
    """A private address (RFC 1918, CGNAT, ULA)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in _INTERNAL)


def is_host_address(ip: str) -> bool:
    """An address that can name one machine (not loopback, link-local, multicast, 0.0.0.0)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast
                or addr.is_reserved)


def iso(ts: dt.datetime | None) -> str:
    """``2024-03-30 08:17:56`` for reasons (UTC is said once, by the caller)."""
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "an unknown time"


def cite(ids: Iterable[str | None], limit: int = 4) -> str:
    """Finding ids for a reason sentence: ``[a1b2, c3d4 +3 more]``."""
    unique = list(dict.fromkeys(i for i in ids if i))
    if not unique:
        return "[no finding]"
    shown = ", ".join(unique[:limit])
    more = f" +{len(unique) - limit} more" if len(unique) > limit else ""
    return f"[{shown}{more}]"


def believable(ts: dt.datetime | None) -> bool:
    return ts is not None and ts >= EARLIEST_BELIEVABLE


# Ports miner worms spread through (lateral_movement.net_worm_fanout's list).
LATERAL_PORTS = (22, 23, 135, 139, 445, 1433, 2375, 2376, 3306, 3389, 5432, 5985, 6379, 7001, 8080,
                 8088, 8161, 8500, 9200, 10250, 27017)
# A connection the other side answered: Zeek conn_state says so, or (NetFlow, no state) more
# packets than a SYN and its retries.
ANSWERED_SQL = ("(upper(coalesce(state, '')) IN ('SF', 'S1', 'S2', 'S3', 'RSTO', 'RSTR') "
                "OR (state IS NULL AND coalesce(packets, 0) >= 4))")
PORTS_SQL = "(" + ", ".join(str(p) for p in LATERAL_PORTS) + ")"
