"""NetFlow/IPFIX exports (nfdump, goflow2, VPC, SiLK, any CSV), column mappings, damage, and
the proposed ``SOURCES`` order routing every network format and its neighbours correctly."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import net_logs as gen
from deminer.scenarios import web_logs as webaccess_gen
from deminer.scenarios import win_events as winevent_gen
from deminer.scenarios.auth_log import AuthLog
from deminer.sources import (
    auth_log,
    bundle,
    evtx,
    file_listing,
    netflow,
    netlog,
    registry_hive,
    suricata,
    task_xml,
    web_access,
    winevent_json,
    winevent_xml,
    zeek,
)
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest

T0 = dt.datetime(2024, 3, 30, 8, 0)
Rows = dict[str, list[dict[str, Any]]]
# The order proposed for ``sources.SOURCES``: the network formats after the Windows JSON
# lines and before the syslog/web readers; the permissive flow CSV before the file listings.
PROPOSED = (bundle.SOURCE, registry_hive.SOURCE, evtx.SOURCE, winevent_xml.SOURCE, task_xml.SOURCE,
            winevent_json.SOURCE, zeek.SOURCE, suricata.SOURCE, auth_log.SOURCE, web_access.SOURCE,
            netflow.SOURCE, file_listing.SOURCE)


def parse(path: Path, mapping: dict[str, str] | None = None, host: str | None = None) -> Rows:
    out: Rows = {}
    ctx = SourceContext(path, path.name, host, path.parent)
    for table, rows in netflow.parse_with_mapping(ctx, mapping):
        out.setdefault(table, []).extend(rows)
    for row in out.get("flows", []):
        row["data"] = json.loads(row["data"])
    return out


def story() -> gen.Network:
    net = gen.Network(start=T0)
    net.browse("10.0.0.21", visits=4)
    net.miner("10.0.0.5", "pool.supportxmr.com", "198.51.100.7", port=3333, hours=6)
    net.smb_worm("10.0.0.7", "10.0.1.", count=250)
    return net


def sniffs(path: Path) -> bool:
    return netflow.sniff(path, path.read_bytes()[:65536])


# -- layouts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["nfdump", "vpc", "silk", "generic", "goflow1", "goflow2"])
def test_every_layout_gives_one_row_per_conversation(tmp_path: Path, layout: str) -> None:
    net = story()
    p = tmp_path / "flows.txt"
    if layout == "nfdump":
        net.write_nfdump(p)
    elif layout.startswith("goflow"):
        net.write_goflow2(p, version=int(layout[-1]))
    else:
        net.write_flow_csv(p, layout)
    assert sniffs(p)
    rows = parse(p)
    assert "errors" not in rows
    flows = sorted(rows["flows"], key=lambda r: r["source_line"])
    assert len(flows) == len(net.conns)                 # the reply records joined their request
    flags = layout != "vpc"                             # VPC flow logs v2 carry no TCP flags

    def state(c: gen.Conn) -> str | None:
        return "SF" if c.proto == "udp" else c.state if flags else None

    assert [(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"], r["bytes"], r["packets"],
             r["state"]) for r in flows] == [
        (c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto, c.ip_bytes(True) + c.ip_bytes(False),
         c.orig_pkts + c.resp_pkts, state(c)) for c in net.conns]
    whole_seconds = layout in ("vpc", "goflow1", "goflow2")
    assert [r["ts"] for r in flows] == [
        c.ts.replace(microsecond=0) if whole_seconds else
        c.ts.replace(microsecond=c.ts.microsecond // 1000 * 1000) if layout in ("nfdump", "silk") else c.ts
        for c in net.conns]
    miner = next(r for r in flows if r["dst_port"] == 3333)
    c = next(c for c in net.conns if c.resp_p == 3333)
    assert miner["duration"] == 21600.0 and miner["host"] is None
    assert {k: miner["data"][k] for k in ("orig_bytes", "orig_pkts", "resp_bytes", "resp_pkts")} == {
        "orig_bytes": c.ip_bytes(True), "orig_pkts": c.orig_pkts, "resp_bytes": c.ip_bytes(False),
        "resp_pkts": c.resp_pkts}
    worm = [r for r in flows if r["src_ip"] == "10.0.0.7"]
    if flags:
        assert {s: sum(r["state"] == s for r in worm) for s in ("S0", "REJ", "SF")} == {
            "S0": 158, "REJ": 80, "SF": 12}


def test_pairing_is_bounded_and_picks_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = "srcaddr dstaddr srcport dstport protocol packets bytes start end action\n"
    reply = "10.0.0.5 203.0.113.50 22 40001 6 15 3050 1711785600 1711785603 ACCEPT\n"
    request = "203.0.113.50 10.0.0.5 40001 22 6 17 2330 1711785600 1711785603 ACCEPT\n"
    late = "10.0.0.5 203.0.113.50 22 40002 6 1 60 1711786600 1711786600 ACCEPT\n"
    orphan = "203.0.113.50 10.0.0.5 40002 22 6 1 60 1711785600 1711785600 ACCEPT\n"
    p = tmp_path / "vpc.log"
    p.write_text(header + reply + request + orphan + late)
    first, second, third = sorted(parse(p)["flows"], key=lambda r: r["source_line"])
    # same second: the side on the ephemeral port is the client, whichever record came first
    assert (first["src_ip"], first["dst_port"], first["bytes"], first["packets"]) == (
        "203.0.113.50", 22, 5380, 32)
    assert (first["data"]["orig_bytes"], first["data"]["resp_bytes"]) == (2330, 3050)
    assert (first["source_line"], first["data"]["resp_line"]) == (3, 2)    # both records named
    # a "reply" 1000 s later is another conversation
    assert [(r["src_port"], r["dst_port"]) for r in (second, third)] == [(40002, 22), (22, 40002)]
    monkeypatch.setattr(netflow, "PAIR_MAX", 0)           # nothing may wait: nothing pairs
    assert len(parse(p)["flows"]) == 4


def test_nfdump_fields_and_summary_trailer(tmp_path: Path) -> None:
    p = tmp_path / "nfdump.csv"
    p.write_text(gen.NFDUMP_HEADER + "\n"
                 "2024-03-30 08:00:00.250,2024-03-30 09:00:00.750,3600.500,10.0.0.5,198.51.100.7,51234,"
                 "3333,TCP,.AP.S.,0,0,600,41000,580,233000" + ",0" * 8 + ",0.0.0.0,0.0.0.0,0,0"
                 + ",00:00:00:00:00:00" * 4 + ",0-0-0" * 10
                 + ",0.000,0.000,0.000,10.0.0.1,0/0,1,1970-01-01 00:00:00.000\n"
                 "Summary\nflows,bytes,packets,avg_bps,avg_pps,avg_bpp\n1,274000,1180,0,0,0\n")
    assert sniffs(p)
    (row,) = parse(p)["flows"]
    assert row == {"host": None, "ts": dt.datetime(2024, 3, 30, 8, 0, 0, 250000), "source": "nfdump.csv",
                   "source_line": 2, "src_ip": "10.0.0.5", "src_port": 51234, "dst_ip": "198.51.100.7",
                   "dst_port": 3333, "proto": "tcp", "bytes": 274000, "packets": 1180, "duration": 3600.5,
                   "app": None, "state": None,
                   "data": {"orig_bytes": 41000, "orig_pkts": 600, "resp_bytes": 233000, "resp_pkts": 580,
                            "tcp_flags": ".AP.S.", "exporter": "10.0.0.1"}}


def test_vpc_nodata_records_and_rejects(tmp_path: Path) -> None:
    net = gen.Network(start=T0)
    net.smb_worm("10.0.0.7", count=6, answered=1, vulnerable=0)
    p = net.write_flow_csv(tmp_path / "vpc.log", "vpc")
    with p.open("a") as fh:
        fh.write("2 123456789012 eni-0a1b2c3d4e5f67890 - - - - - - - 1711785600 1711785660 - NODATA\n")
    rows = parse(p)
    assert {r["data"]["action"] for r in rows["flows"] if r["dst_port"] == 445} == {"ACCEPT", "REJECT"}
    assert [e["message"] for e in rows["errors"]] == [
        "netflow: 1 record(s) without a source or destination address skipped"]


def test_explicit_mapping_for_an_unknown_layout(tmp_path: Path) -> None:
    p = tmp_path / "fw.csv"
    p.write_text('client;server;c_port;s_port;octets_total;when;proto\n'
                 '10.0.0.5;198.51.100.7;51234;3333;9000;"2024-03-30T10:00:00+02:00";6\n')
    assert not sniffs(p)                                  # nothing here names a role it knows
    mapping = {"src_ip": "client", "dst_ip": "server", "src_port": "c_port", "dst_port": "s_port",
               "bytes": "octets_total", "start": "when"}
    (row,) = parse(p, mapping)["flows"]
    assert (row["src_ip"], row["dst_port"], row["bytes"], row["ts"], row["proto"]) == (
        "10.0.0.5", 3333, 9000, dt.datetime(2024, 3, 30, 8, 0), "tcp")
    with pytest.raises(SourceError, match="unknown flow column role"):
        parse(p, {"src_ip": "client", "colour": "x"})
    with pytest.raises(SourceError, match="no source and destination address columns"):
        parse(p)


def test_times_in_any_unit(tmp_path: Path) -> None:
    want = dt.datetime(2024, 3, 30, 8, 0, 0, 500000)
    for value in ("1711785600.5", "1711785600500", "1711785600500000", "1711785600500000000",
                  "2024-03-30T08:00:00.5Z", "2024-03-30 08:00:00.500", "2024/03/30T08:00:00.500",
                  "2024-03-30T09:00:00.5+01:00"):
        assert netlog.parse_time(value) == want, value
    assert netlog.parse_time("-") is None
    with pytest.raises(ValueError):
        netlog.parse_time("yesterday")


# -- damage ------------------------------------------------------------------------------------
def test_bad_lines_and_values_are_named(tmp_path: Path) -> None:
    net = story()
    lines = gen.flow_csv(net.conns[:3], "generic").splitlines()
    lines.insert(2, "2024-03-30T08:00:00Z,10.0.0.5")                   # truncated
    lines.insert(3, "\x00\x00\x00 binary")
    lines.insert(4, "soon,later,10.0.0.5,1,10.0.0.6,2,tcp,1,60,S")      # times nobody wrote
    lines.insert(5, "x" * (netlog.MAX_LINE + 1))
    p = tmp_path / "flows.csv"
    p.write_text("\n".join(lines) + "\n")
    rows = parse(p)
    assert len(rows["flows"]) == 3 + 1                  # three conversations and the odd row
    (error,) = rows["errors"]
    assert error["message"] == (
        "netflow: 3 unreadable line(s) skipped, first: line 3: 2 fields where the header has 10; "
        "line 4: binary data; line 6: longer than 1048576 bytes | netflow: 1 value(s) of 'start_time' "
        "not understood as a time (first: 'soon') | netflow: 1 value(s) of 'end_time' not understood as a "
        "time (first: 'later')")


def test_json_lines_damage(tmp_path: Path) -> None:
    net = story()
    recs = gen.goflow2_records(net.conns[:2])
    p = tmp_path / "goflow.json"
    p.write_text(json.dumps(recs[0]) + "\n[1]\n" + json.dumps(recs[1])[:25] + "\n"
                 + json.dumps(recs[1]) + "\n")
    rows = parse(p)
    assert [r["state"] for r in rows["flows"]] == ["SF"]       # both directions of one lookup
    assert rows["errors"][0]["message"].startswith(
        "netflow: 2 unreadable line(s) skipped, first: line 2: not a JSON object; line 3: not JSON (")


def test_sniff_refuses_other_tables(tmp_path: Path) -> None:
    samples = {
        "listing.csv": "FullName,Length,LastWriteTimeUtc,SHA256\nC:\\x.exe,12,2024-03-30T08:00:00Z,"
                       + "0" * 64,
        "contacts.csv": "source,destination,comment\nalice,bob,hello\n",
        "eve.json": '{"timestamp":"2024-03-30T08:00:00+0000","event_type":"flow","src_ip":"10.0.0.5",'
                    '"dest_ip":"10.0.0.6","dest_port":80,"proto":"TCP"}\n',
        "conn.json": '{"ts":1711785600.0,"uid":"C1","id.orig_h":"10.0.0.5","id.resp_h":"10.0.0.6",'
                     '"id.resp_p":80,"proto":"tcp","orig_bytes":10}\n',
        "prose.txt": "src and dst went to the bar\n",
    }
    for name, text in samples.items():
        p = tmp_path / name
        p.write_text(text)
        assert not sniffs(p), name


# -- every source, one order -------------------------------------------------------------------
def _neighbours(d: Path) -> dict[str, Path]:
    """Files the other text sources own, written by their generators."""
    auth = AuthLog(host="web1", start=T0)
    auth.brute_force("203.0.113.7", ["root"], attempts=12)
    access = webaccess_gen.AccessLog(start=T0)
    access.visit("192.0.2.10")
    events = [winevent_gen.logon(success=False), winevent_gen.sysmon_dns()]
    files = {
        "auth_log": auth.write(d / "auth.log"),
        "auth_log ": auth.write(d / "journal.json", fmt="journald"),
        "web_access": access.write(d / "access.log"),
        "web_access ": access.write(d / "u_ex240330.log", fmt="iis"),
        "winevent_json": d / "winlogbeat.json",
        "winevent_json ": d / "nxlog.json",
        "file_listing": d / "listing.csv",
        "file_listing ": d / "velociraptor.json",
        "file_listing  ": d / "find.tsv",
    }
    files["winevent_json"].write_text("".join(json.dumps(winevent_gen.to_winlogbeat(e)) + "\n"
                                              for e in events))
    files["winevent_json "].write_text("".join(json.dumps(winevent_gen.to_nxlog(e)) + "\n" for e in events))
    files["file_listing"].write_text("FullName,Length,LastWriteTimeUtc\nC:\\Windows\\Temp\\x.exe,12,"
                                     "2024-03-30T08:00:00Z\n")
    files["file_listing "].write_text(json.dumps({"OSPath": "/tmp/.x/kswapd0", "Size": 2048,
                                                  "Hash": {"SHA256": "0" * 64}}) + "\n")
    files["file_listing  "].write_text("path\tsize\tmtime\n/var/tmp/.ICE/xmrig\t7340032\t1711785600\n")
    return files


def _network_files(d: Path) -> dict[str, Path]:
    net = story()
    net.ssh_brute_force("203.0.113.50", "10.0.0.5", connections=3)
    tsv = net.write_zeek(d / "zeek_tsv")
    js = net.write_zeek(d / "zeek_json", fmt="json", gz=True)
    return {
        "zeek": tsv[0], "zeek ": js[1], "zeek  ": tsv[-1],
        "suricata": net.write_eve(d / "eve.json"), "suricata ": net.write_eve(d / "eve.1.json",
                                                                              dns_version=1),
        "netflow": net.write_nfdump(d / "nfcapd.csv"), "netflow ": net.write_flow_csv(d / "vpc.log", "vpc"),
        "netflow  ": net.write_flow_csv(d / "rwcut.txt", "silk"),
        "netflow   ": net.write_flow_csv(d / "flows.csv"),
        "netflow    ": net.write_goflow2(d / "goflow2.json", version=1),
        "netflow     ": net.write_goflow2(d / "goflow2v2.json", version=2),
    }


def test_proposed_order_routes_every_file_to_its_source(tmp_path: Path) -> None:
    files = {**_neighbours(tmp_path), **_network_files(tmp_path)}
    with Case(None) as case:
        summary = ingest(case, list(files.values()), sources=PROPOSED)
        assert summary.errors == []
        kinds = {r["path"]: r["kind"] for r in case.query("SELECT path, kind FROM inputs")}
    assert {name: kinds[str(path)] for name, path in files.items()} == {name: name.strip() for name in files}


def test_network_sniffers_and_their_neighbours_refuse_each_other(tmp_path: Path) -> None:
    neighbours = _neighbours(tmp_path)
    network = _network_files(tmp_path)
    mine = {"zeek": zeek.SOURCE, "suricata": suricata.SOURCE, "netflow": netflow.SOURCE}
    theirs = {s.name: s for s in PROPOSED if s.name not in mine}
    for path in neighbours.values():
        head = path.read_bytes()[:65536]
        assert [s.name for s in mine.values() if s.sniff(path, head)] == [], path.name
    for name, path in network.items():
        head = path.read_bytes()[:65536]
        assert [s.name for s in mine.values() if s.sniff(path, head)] == [name.strip()], path.name
        assert [s.name for s in theirs.values() if s.sniff(path, head)] == [], path.name


def test_ingest_worm_fan_out_from_flows(tmp_path: Path) -> None:
    net = story()
    p = net.write_nfdump(tmp_path / "nfcapd.202403300800.csv")
    with Case(None) as case:
        ingest(case, [p], sources=PROPOSED)
        fan = case.query("SELECT src_ip, count(DISTINCT dst_ip) AS targets FROM flows WHERE dst_port = 445 "
                         "GROUP BY src_ip ORDER BY targets DESC LIMIT 1")
        assert fan == [{"src_ip": "10.0.0.7", "targets": 250}]


# -- fuzz --------------------------------------------------------------------------------------
SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
GOFLOW = st.fixed_dictionaries(
    {"src_addr": st.just("10.0.0.5") | JSON, "dst_addr": st.just("10.0.0.6") | JSON},
    optional={k: JSON for k in ("bytes", "packets", "proto", "src_port", "dst_port", "time_flow_start_ns",
                                "time_flow_end_ns", "sampling_rate", "tcp_flags", "TimeFlowStart")})


@pytest.fixture(scope="module")
def shared_case() -> Iterator[Case]:
    with Case(None) as case:
        yield case


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(GOFLOW, min_size=1, max_size=5),
       rows=st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=12), max_size=5))
def test_hostile_values_never_break_the_reader_or_the_case(
        tmp_path: Path, shared_case: Case, records: list[dict[str, Any]], rows: list[list[str]]) -> None:
    js = tmp_path / "goflow.json"
    js.write_text("".join(json.dumps(r) + "\n" for r in records))
    csv_file = tmp_path / "flows.csv"
    csv_file.write_text("ts,te,td,sa,da,sp,dp,pr,ipkt,ibyt,flg\n" + "".join(
        ",".join(v.replace("\n", " ").replace("\r", " ") for v in row) + "\n" for row in rows))
    for path in (js, csv_file):
        written = shared_case.add_batches(netflow.parse(SourceContext(path, path.name, None, tmp_path)))
        assert written.get("flows", 0) <= max(len(records), len(rows))
