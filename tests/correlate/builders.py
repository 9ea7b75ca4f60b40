"""Rows for correlate tests: findings with real ids, hosts, events, keys, flows.

Findings are made through ``detect.finding.Finding`` so their ids are the ones ``detect``
would give; their evidence uses the keys the shipped rules write (``source.ip``,
``user.name``, ``success_ts``, ``victim_list`` …).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from deminer.case import Case
from deminer.detect.finding import Finding

T0 = dt.datetime(2024, 3, 30, 8, 0, 0)
OUTSIDE = "203.0.113.7"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def iso(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def finding(rule: str, host: str | None, ts: dt.datetime | None, entity: str = "x",
            severity: str = "high", attack: tuple[str, ...] = ("T1496",), **evidence: Any) -> Finding:
    """A finding; evidence keys with a dot are written ``source_ip`` -> ``source.ip``."""
    ev = {k.replace("__", "."): v for k, v in evidence.items()}
    return Finding(rule=rule, title=rule, severity=severity, attack=attack, host=host, ts=ts,
                   entity=entity, summary=f"{rule} on {host}", evidence=ev)


def add(case: Case, *findings: Finding) -> list[str]:
    case.add("findings", [f.row() for f in findings])
    return [f.id for f in findings]


def host(case: Case, name: str, *ips: str, collected: dt.datetime | None = None, live: bool = True,
         **extra: Any) -> None:
    """A hosts row; a collected host is a live collection (it has a process list) unless
    ``live`` is false (a disk without processes)."""
    case.add("hosts", [{"host": name, "hostname": extra.pop("hostname", name), "ips": list(ips),
                        "collected_at": collected, **extra}])
    if collected and live:
        case.add("processes", [{"host": name, "ts": collected, "pid": 1, "ppid": 0, "name": "systemd",
                                "exe": "/usr/lib/systemd/systemd", "source": "/proc/1"}])


def brute_success(target: str, src_ip: str, ts: dt.datetime, user: str = "root") -> Finding:
    return finding("initial_access.ssh_brute_force_success", target, ts, entity=src_ip, severity="critical",
                   attack=("T1110", "T1078"), source__ip=src_ip, user__name=user, accounts=user,
                   success_ts=iso(ts), method="password", failures=40)


def miner(target: str, ts: dt.datetime, pid: int = 4242) -> Finding:
    return finding("impact.miner_process", target, ts, entity=f"pid {pid}", severity="critical", pid=pid,
                   exe="/tmp/.x/kdevtmpfsi", name="kdevtmpfsi")


def auth_events(case: Case, target: str, *rows: tuple[str, dt.datetime, str, str]) -> None:
    """(event, ts, user, src_ip) rows of an sshd auth log on ``target``."""
    case.add("events", [{"host": target, "ts": ts, "event": ev, "program": "sshd", "user": user,
                         "src_ip": ip, "status": "password", "source": f"/var/log/auth.log@{target}",
                         "source_line": n} for n, (ev, ts, user, ip) in enumerate(rows, 1)])
