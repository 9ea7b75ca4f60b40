"""The normalized tables: the one place their names, columns and types are defined.

Every stage speaks these tables. Sources produce rows of them, the case store derives its DDL
from them, rules query them and reports read them. A row is a plain ``dict`` keyed by column
name; columns a source does not know are left out and stored as NULL.

    hosts           a machine seen in the case
    processes       a process at collection time
    connections     a socket at collection time
    files           a file of interest (with why it was collected)
    persistence     an autostart item (cron, systemd, rc, profile, ld_preload, authorized_key, ...)
    accounts        a local account
    ssh_keys        a key found on a host: private key, authorized key or known_hosts entry
    remote_targets  a host this host can reach with what it stores (ssh config, inventories)
    events          a log record (logons, process starts, service installs, web requests, ...)
    flows           a network conversation
    dns             a DNS question and its answers
    iocs            an indicator (shipped lists and the user's ``--ioc`` files)
    findings        one conclusion of a rule or detector (``id`` is stable across runs)
    host_verdicts   correlate's verdict per host: infected/suspicious/clean/unknown, since when
    infection_edges who infected whom: source host -> target host, technique, time, findings
    host_aliases    every name or address seen for a host -> its canonical host id
    errors          something that could not be read, with the input named
    inputs          one piece of evidence ingested into the case

Timestamps are naive ``datetime`` values in UTC (no session time zones, see design.md).
Every evidence row carries ``source`` (the file it came from) and, where it has one,
``source_line`` (line number, record id or offset) so a finding can point back to the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    """Position of a severity in ``SEVERITIES``; unknown names rank below ``info``."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type name


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self) -> str:
        cols = ", ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({cols})"


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse ``"name TYPE, name TYPE"`` so the tables below read like DDL."""
    out = []
    for part in spec.split(","):
        name, _, typ = part.strip().partition(" ")
        out.append(Column(name, typ.strip()))
    return tuple(out)


# Columns every evidence table starts with.
_COMMON = "host VARCHAR, ts TIMESTAMP, source VARCHAR, source_line BIGINT"

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("hosts", _cols(
            "host VARCHAR, hostname VARCHAR, os VARCHAR, ips VARCHAR[], machine_id VARCHAR, "
            "collected_at TIMESTAMP, collector_version VARCHAR, is_root BOOLEAN, source VARCHAR")),
        Table("processes", _cols(
            f"{_COMMON}, pid BIGINT, ppid BIGINT, name VARCHAR, exe VARCHAR, cmdline VARCHAR, "
            "user VARCHAR, uid BIGINT, started TIMESTAMP, cpu_percent DOUBLE, rss BIGINT, "
            "exe_deleted BOOLEAN, exe_sha256 VARCHAR, cwd VARCHAR, ld_preload VARCHAR, "
            "hidden BOOLEAN, threads BIGINT")),
        Table("connections", _cols(
            f"{_COMMON}, pid BIGINT, proto VARCHAR, laddr VARCHAR, lport BIGINT, raddr VARCHAR, "
            "rport BIGINT, state VARCHAR, inode BIGINT")),
        Table("files", _cols(
            f"{_COMMON}, path VARCHAR, size BIGINT, mtime TIMESTAMP, ctime TIMESTAMP, "
            "mode BIGINT, owner VARCHAR, sha256 VARCHAR, immutable BOOLEAN, append_only BOOLEAN, "
            "reason VARCHAR, magic VARCHAR, content_saved BOOLEAN")),
        Table("persistence", _cols(
            f"{_COMMON}, kind VARCHAR, location VARCHAR, name VARCHAR, command VARCHAR, "
            "user VARCHAR, mtime TIMESTAMP, enabled BOOLEAN, packaged VARCHAR")),
        Table("accounts", _cols(
            f"{_COMMON}, user VARCHAR, uid BIGINT, gid BIGINT, home VARCHAR, shell VARCHAR, "
            "password_state VARCHAR, keys BIGINT")),
        Table("ssh_keys", _cols(
            f"{_COMMON}, kind VARCHAR, path VARCHAR, user VARCHAR, key_type VARCHAR, "
            "fingerprint VARCHAR, comment VARCHAR, encrypted BOOLEAN, options VARCHAR, "
            "mtime TIMESTAMP")),
        Table("remote_targets", _cols(
            f"{_COMMON}, kind VARCHAR, target VARCHAR, user VARCHAR, port BIGINT, "
            "key_path VARCHAR, location VARCHAR")),
        Table("events", _cols(
            f"{_COMMON}, event VARCHAR, program VARCHAR, user VARCHAR, src_ip VARCHAR, "
            "src_port BIGINT, dst_host VARCHAR, dst_ip VARCHAR, dst_port BIGINT, "
            "logon_type BIGINT, process VARCHAR, pid BIGINT, command VARCHAR, status VARCHAR, "
            "event_id BIGINT, channel VARCHAR, record_id BIGINT, count BIGINT, data VARCHAR, "
            "raw VARCHAR")),
        Table("flows", _cols(
            f"{_COMMON}, src_ip VARCHAR, src_port BIGINT, dst_ip VARCHAR, dst_port BIGINT, "
            "proto VARCHAR, bytes BIGINT, packets BIGINT, duration DOUBLE, app VARCHAR, "
            "state VARCHAR, data VARCHAR")),
        Table("dns", _cols(
            f"{_COMMON}, client VARCHAR, qname VARCHAR, qtype VARCHAR, answers VARCHAR[], "
            "rcode VARCHAR")),
        Table("iocs", _cols(
            "kind VARCHAR, value VARCHAR, family VARCHAR, description VARCHAR, source VARCHAR")),
        Table("findings", _cols(
            "id VARCHAR, rule VARCHAR, title VARCHAR, severity VARCHAR, attack VARCHAR[], host VARCHAR, "
            "ts TIMESTAMP, entity VARCHAR, summary VARCHAR, evidence VARCHAR")),
        Table("host_verdicts", _cols(
            "host VARCHAR, verdict VARCHAR, infected_at TIMESTAMP, first_finding VARCHAR, "
            "reason VARCHAR, missing VARCHAR, clock_skew_seconds DOUBLE, "
            "patient_zero BOOLEAN, entry_vector VARCHAR, at_risk VARCHAR")),
        Table("infection_edges", _cols(
            "src_host VARCHAR, dst_host VARCHAR, technique VARCHAR, ts TIMESTAMP, "
            "attack VARCHAR[], confidence VARCHAR, reason VARCHAR, findings VARCHAR[]")),
        Table("host_aliases", _cols("alias VARCHAR, host VARCHAR, reason VARCHAR")),
        Table("errors", _cols(
            "host VARCHAR, ts TIMESTAMP, source VARCHAR, stage VARCHAR, message VARCHAR")),
        Table("inputs", _cols(
            "path VARCHAR, kind VARCHAR, sha256 VARCHAR, size BIGINT, host VARCHAR, "
            "rows BIGINT, ingested_at TIMESTAMP, error VARCHAR")),
    )
}

# What ``iocs.kind`` may be; rules join on these.
IOC_KINDS: tuple[str, ...] = (
    "domain", "ip", "port", "sha256", "md5", "sha1", "wallet", "filename", "key_comment",
    "url", "process_name",
)
