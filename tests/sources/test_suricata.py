"""Suricata eve.json: alerts, flows and their states, DNS log versions 1-3, TLS/HTTP/SSH, damage."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import net_logs as gen
from deminer.sources import suricata
from deminer.sources.base import SourceContext
from deminer.sources.ingest import ingest

T0 = dt.datetime(2024, 3, 30, 8, 0)
Rows = dict[str, list[dict[str, Any]]]


def parse(path: Path, host: str | None = None) -> Rows:
    return gen.parsed(suricata.parse, path, host)


def story() -> gen.Network:
    net = gen.Network(start=T0)
    net.browse("10.0.0.21", visits=6)
    net.miner("10.0.0.5", "pool.hashvault.pro", "198.51.100.7", port=3333, hours=6)
    net.lookup("10.0.0.9", "no-such-pool.example", [], rcode="NXDOMAIN")
    net.smb_worm("10.0.0.7", "10.0.1.", count=250)
    net.ssh_brute_force("203.0.113.50", "10.0.0.5", connections=30)
    return net


def write(tmp_path: Path, lines: list[dict[str, Any] | str], name: str = "eve.json") -> Path:
    p = tmp_path / name
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return p


# -- the story ---------------------------------------------------------------------------------
@pytest.mark.parametrize("utc_offset", [0, -7, 5.5])
def test_story_in_eve(tmp_path: Path, utc_offset: float) -> None:
    net = story()
    p = net.write_eve(tmp_path / "eve.json", utc_offset=utc_offset)
    assert suricata.sniff(p, p.read_bytes()[:65536])
    rows = parse(p)
    flows = [r for r in rows["flows"] if "flow_state" in r["data"]]
    assert len(flows) == len(net.conns)
    assert len(rows["flows"]) - len(flows) == sum(len(c.extra) for c in net.conns)
    assert len(rows["dns"]) == len(net.lookups)
    assert rows["errors"][0]["message"] == "suricata: 1 events of types without a table skipped (stats 1)"

    miner = next(r for r in flows if r["dst_port"] == 3333)
    c = next(c for c in net.conns if c.resp_p == 3333)
    assert (miner["ts"], miner["state"], miner["app"], miner["duration"], miner["proto"]) == (
        c.ts, "S1", None, 21600.0, "tcp")                                   # UTC whatever the offset
    assert (miner["bytes"], miner["packets"]) == (c.ip_bytes(True) + c.ip_bytes(False),
                                                  c.orig_pkts + c.resp_pkts)
    assert miner["data"] == {"flow_id": c.flow_id, "orig_bytes": c.ip_bytes(True),
                             "resp_bytes": c.ip_bytes(False),
                             "orig_pkts": c.orig_pkts, "resp_pkts": c.resp_pkts, "flow_state": "established",
                             "reason": "shutdown", "alerted": False, "tcp_flags_ts": "1a",
                             "tcp_flags_tc": "1a", "app_proto": "failed"}

    worm = [r for r in flows if r["src_ip"] == "10.0.0.7"]
    assert {s: sum(r["state"] == s for r in worm) for s in ("S0", "REJ", "SF")} == {"S0": 158, "REJ": 80,
                                                                                    "SF": 12}
    assert {r["app"] for r in worm if r["state"] == "SF"} == {"smb"}

    alerts = rows["events"]
    assert {a["event"] for a in alerts} == {"ids_alert"} and {a["program"] for a in alerts} == {"suricata"}
    sids = sorted(a["data"]["signature_id"] for a in alerts)
    assert sids == sorted([2036289, 2024792] + [sid for sid, *_ in gen.MS17_010] * 3)
    eternal = next(a for a in alerts if a["data"]["signature_id"] == 2025649)
    assert eternal["data"]["signature"] == "ET EXPLOIT Possible ETERNALBLUE Probe MS17-010 (MSF style)"
    assert (eternal["src_ip"], eternal["dst_port"], eternal["status"]) == ("10.0.0.7", 445, "allowed")
    assert (eternal["data"]["category"], eternal["data"]["severity"], eternal["data"]["app_proto"]) == (
        "A Network Trojan was detected", 1, "smb")
    checkin = next(a for a in alerts if a["data"]["signature_id"] == 2024792)
    assert checkin["ts"] == c.ts + dt.timedelta(seconds=0.4)
    assert json.loads(checkin["raw"])["alert"]["signature"] == "ET POLICY Cryptocurrency Miner Checkin"

    pool = next(r for r in rows["dns"] if r["qname"] == "pool.hashvault.pro")
    assert (pool["client"], pool["qtype"], pool["answers"], pool["rcode"]) == (
        "10.0.0.5", "A", ["198.51.100.7"], "NOERROR")
    tls = [r for r in rows["flows"] if r["app"] == "tls" and "sni" in r["data"]]
    assert tls and {r["data"]["version"] for r in tls} == {"TLS 1.3"}
    assert tls[0]["data"]["ja3_hash"] == "579ccef312d18482fc42e2b822ca2430"
    assert tls[0]["data"]["ja3"].startswith("771,")
    ssh = [r for r in rows["flows"] if "client_banner" in r["data"]]
    assert {(r["data"]["client_banner"], r["data"]["server_banner"]) for r in ssh} == {
        ("SSH-2.0-libssh2_1.8.0", gen.OPENSSH)}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_dns_versions_give_one_row_per_lookup(tmp_path: Path, version: int) -> None:
    net = story()
    cname = net.lookup("10.0.0.5", "xmr.pool.minexmr.com", ["pool.minexmr.com", "94.130.164.60"])
    p = tmp_path / "eve.json"
    p.write_text("".join(json.dumps(e) + "\n" for lk in net.lookups for e in gen.eve_dns(lk, version)))
    rows = parse(p)["dns"]
    assert sorted((r["qname"], r["client"], tuple(r["answers"]), r["rcode"]) for r in rows) == sorted(
        (lk.query, lk.conn.orig_h, tuple(lk.answers), lk.rcode) for lk in net.lookups)
    got = next(r for r in rows if r["qname"] == cname.query)
    assert got["ts"] == cname.conn.ts                                  # when it was asked
    assert got["answers"] == ["pool.minexmr.com", "94.130.164.60"]      # the CNAME chain, in order


def test_answers_without_their_query_and_queries_without_answers(tmp_path: Path) -> None:
    net = gen.Network(start=T0)
    a = net.lookup("10.0.0.5", "pool.supportxmr.com", ["141.94.96.144"])
    b = net.lookup("10.0.0.6", "c2.example", ["203.0.113.9"])
    query_only = gen.eve_dns(a, 3)[:1]
    answer_only = gen.eve_dns(b, 3)[1:]
    rows = parse(write(tmp_path, [*query_only, *answer_only]))["dns"]
    assert sorted((r["qname"], r["client"], r["answers"], r["rcode"]) for r in rows) == [
        ("c2.example", "10.0.0.6", ["203.0.113.9"], "NOERROR"),           # v3 response: client = dest_ip
        ("pool.supportxmr.com", "10.0.0.5", None, None)]


def test_waiting_questions_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = story()
    events = [e for lk in net.lookups for e in gen.eve_dns(lk, 2)]
    queries = [e for e in events if e["dns"]["type"] == "query"]
    answers = [e for e in events if e["dns"]["type"] == "answer"]
    monkeypatch.setattr(suricata, "PENDING_MAX", 2)
    rows = parse(write(tmp_path, [*queries, *answers]))["dns"]    # every answer after every query
    # the oldest questions went out unanswered to keep memory bounded; their answers came alone
    assert len(rows) == 2 * len(net.lookups) - 2
    assert sorted({r["qname"] for r in rows if r["answers"] is not None}) == sorted(
        {lk.query for lk in net.lookups})


def test_gzip_eve(tmp_path: Path) -> None:
    net = story()
    p = net.write_eve(tmp_path / "eve.json")
    gz = tmp_path / "eve.json.1.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert suricata.sniff(gz, gz.read_bytes()[:65536])
    assert {k: len(v) for k, v in parse(gz).items()} == {k: len(v) for k, v in parse(p).items()}


@pytest.mark.parametrize(("ts", "tc", "to_client", "state"), [
    ("02", "00", 0, "S0"), ("03", "00", 0, "SH"), ("02", "14", 1, "REJ"), ("1b", "1b", 9, "SF"),
    ("1a", "1a", 9, "S1"), ("1e", "1a", 9, "RSTO"), ("1a", "1e", 9, "RSTR"), ("1b", "1a", 9, "S2"),
    ("1a", "1b", 9, "S3"), ("18", "18", 9, "OTH")])
def test_tcp_flags_become_conn_state(ts: str, tc: str, to_client: int, state: str) -> None:
    assert suricata.conn_state("tcp", {"pkts_toclient": to_client}, {"tcp_flags_ts": ts,
                                                                     "tcp_flags_tc": tc}) == state


def test_udp_state_and_missing_tcp_block() -> None:
    assert suricata.conn_state("udp", {"pkts_toclient": 1}, {}) == "SF"
    assert suricata.conn_state("udp", {"pkts_toclient": 0}, {}) == "S0"
    assert suricata.conn_state("tcp", {"pkts_toclient": 3}, {}) is None
    assert suricata.conn_state("tcp", {}, {"tcp_flags_ts": "zz"}) is None


def test_alert_carries_what_the_transaction_was_about(tmp_path: Path) -> None:
    ev = {"timestamp": "2024-03-30T10:00:00.000001+0200", "flow_id": 7, "event_type": "alert",
          "src_ip": "10.0.0.5",
          "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 53, "proto": "UDP", "app_proto": "dns",
          "alert": {"action": "blocked", "gid": 1, "signature_id": 2036289, "rev": 1,
                    "signature": "ET COINMINER CoinMiner Domain in DNS Lookup (pool .hashvault .pro)",
                    "category": "Crypto Currency Mining Activity Detected", "severity": 2},
          "dns": {"version": 3, "type": "request", "queries": [{"rrname": "pool.hashvault.pro",
                                                                "rrtype": "A"}]}}
    (alert,) = parse(write(tmp_path, [ev]))["events"]
    assert alert["ts"] == dt.datetime(2024, 3, 30, 8, 0, 0, 1)
    assert alert["status"] == "blocked"
    assert alert["data"]["rrname"] == "pool.hashvault.pro" and alert["data"]["flow_id"] == 7


# -- damage ------------------------------------------------------------------------------------
def test_bad_lines_named_rest_kept(tmp_path: Path) -> None:
    net = story()
    events = net.eve_events()[:20]
    lines: list[dict[str, Any] | str] = [*events[:5], json.dumps(events[5])[:30], "[1, 2]",
                                         '{"timestamp": "x"}', "\x00\x00junk", *events[6:]]
    p = write(tmp_path, lines)
    with p.open("a") as fh:
        huge = "y" * (1 << 20)
        fh.write('{"timestamp":"2024-03-30T08:00:00+0000","event_type":"flow","x":"' + huge + '"}\n')
        fh.write(json.dumps(events[0])[:-3])                               # cut off by a full disk
    rows = parse(p)
    clean = parse(write(tmp_path, [*events[:5], *events[6:]], "clean.json"))
    assert {k: len(v) for k, v in rows.items() if k != "errors"} == {k: len(v) for k, v in clean.items()}
    assert sum(len(v) for v in clean.values()) > 10
    (error,) = rows["errors"]
    assert error["message"].startswith(
        "suricata: 6 unreadable line(s) skipped, first: line 6: not JSON (")
    assert "line 7: not an eve record (no event_type); line 8: not an eve record" in error["message"]


def test_sniff_refuses_zeek_netflow_and_windows_json(tmp_path: Path) -> None:
    net = story()
    zeek_json = gen.zeek_json(net.zeek_records("conn")[:3])
    samples = {"conn.json": zeek_json,
               "goflow.json": json.dumps(gen.goflow2_records(net.conns[:1])[0]) + "\n",
               "win.json": '{"@timestamp":"2024-03-30T08:00:00Z","winlog":{"event_id":4625}}\n',
               "notjson.json": "{not json\n", "list.json": "[1,2,3]\n"}
    for name, text in samples.items():
        p = tmp_path / name
        p.write_text(text)
        assert not suricata.sniff(p, p.read_bytes()), name


def test_ingest_joins_alerts_to_flows_by_flow_id(tmp_path: Path) -> None:
    net = story()
    p = net.write_eve(tmp_path / "eve.json", dns_version=3)
    with Case(None) as case:
        summary = ingest(case, [p], sources=(suricata.SOURCE,))
        assert summary.files == 1
        rows = case.query(
            "SELECT f.state, count(*) AS n FROM events e JOIN flows f "
            "ON json_extract(f.data, '$.flow_id') = json_extract(e.data, '$.flow_id') "
            "AND json_extract_string(f.data, '$.flow_state') IS NOT NULL "
            "WHERE json_extract(e.data, '$.signature_id') = 2025992 GROUP BY f.state")
        assert rows == [{"state": "SF", "n": 3}]
        assert case.query("SELECT count(*) AS n FROM flows WHERE host IS NOT NULL") == [{"n": 0}]


# -- fuzz --------------------------------------------------------------------------------------
SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
DNS = st.fixed_dictionaries({"type": st.sampled_from(["query", "answer", "request", "response"]) | JSON},
                            optional={"version": st.sampled_from([2, 3]) | JSON, "id": JSON, "rrname": JSON,
                                      "rrtype": JSON, "rdata": JSON, "rcode": JSON, "answers": JSON,
                                      "grouped": JSON, "queries": JSON | st.lists(st.dictionaries(
                                          st.sampled_from(["rrname", "rrtype"]), JSON), max_size=2)})
EVE = st.fixed_dictionaries(
    {"timestamp": st.just("2024-03-30T08:00:00.000001+0000") | JSON,
     "event_type": st.sampled_from(["alert", "flow", "dns", "tls", "http", "ssh", "fileinfo"])},
    optional={k: JSON for k in ("flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
                                "flow", "tcp", "alert", "tls", "http", "ssh", "tx_id")} | {"dns": DNS | JSON})


@pytest.fixture(scope="module")
def shared_case() -> Iterator[Case]:
    with Case(None) as case:
        yield case


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(EVE, max_size=6))
def test_hostile_records_never_break_the_reader_or_the_case(tmp_path: Path, shared_case: Case,
                                                            records: list[dict[str, Any]]) -> None:
    p = tmp_path / "eve.json"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    # parse without the sniffer and store every batch: odd values must fit their columns
    written = shared_case.add_batches(suricata.parse(SourceContext(p, "eve.json", None, tmp_path)))
    assert sum(n for t, n in written.items() if t != "errors") <= sum(map(_most_rows, records))


def _most_rows(record: dict[str, Any]) -> int:
    """One row per record, but one per question of a DNS record that lists several (QDCOUNT
    above one, logged by Suricata 8 as a ``queries`` array)."""
    dns = record.get("dns")
    queries = dns.get("queries") if isinstance(dns, dict) else None
    return max(1, sum(isinstance(q, dict) for q in queries) if isinstance(queries, list) else 1)
