"""The flow table: direction, conn_state, in-order payload, Stratum counting, DNS rows, bounds."""

from __future__ import annotations

import json
import socket
import tracemalloc
from typing import Any

import pytest

from deminer.scenarios import captures as gen
from deminer.sources import flowtable as ft

S, A, F, R, P = ft.SYN, ft.ACK, ft.FIN, ft.RST, 0x08
C, SRV = "10.0.0.5", "198.51.100.7"


def key(src: str, dst: str, sport: int, dport: int, proto: int = 6) -> bytes:
    return bytes([proto]) + socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + \
        dport.to_bytes(2, "big")


class Feed:
    """Packets straight into a FlowTable, numbered and timed like a capture."""

    def __init__(self, **kw: Any) -> None:
        self.table = ft.FlowTable("sensor1", "t.pcap", **kw)
        self.no = 0
        self.ts = 1000.0

    def tcp(self, src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 0,
            data: bytes = b"", gap: float = 0.01, paylen: int | None = None) -> None:
        self.no += 1
        self.ts += gap
        n = len(data) if paylen is None else paylen
        self.table.packet(key(src, dst, sport, dport), self.ts, self.no, flags, seq, data, 0, n, 40 + n)

    def udp(self, src: str, dst: str, sport: int, dport: int, data: bytes, gap: float = 0.01) -> None:
        self.no += 1
        self.ts += gap
        self.table.packet(key(src, dst, sport, dport, 17), self.ts, self.no, 0, 0, data, 0, len(data),
                          28 + len(data))

    def rows(self, table: str = "flows") -> list[dict[str, Any]]:
        self.table.close()
        out = [dict(r) for t, r in self.table.out if t == table]
        for r in out:
            if "data" in r:
                r["data"] = json.loads(r["data"])
        return out


def handshake(f: Feed, sport: int = 40000, cseq: int = 100, sseq: int = 900) -> None:
    f.tcp(C, SRV, sport, 3333, S, cseq - 1)
    f.tcp(SRV, C, 3333, sport, S | A, sseq - 1)
    f.tcp(C, SRV, sport, 3333, A, cseq)


# -- direction and state ----------------------------------------------------------------------
@pytest.mark.parametrize(("packets", "state"), [
    ([(0, S)], "S0"),
    ([(0, S), (1, R | A)], "REJ"),
    ([(0, S), (1, S | A), (0, A)], "S1"),
    ([(0, S), (1, S | A), (0, A), (0, F | A), (1, F | A), (0, A)], "SF"),
    ([(0, S), (1, S | A), (0, A), (0, R)], "RSTO"),
    ([(0, S), (1, S | A), (0, A), (1, R)], "RSTR"),
    ([(0, S), (1, S | A), (0, F | A)], "S2"),
    ([(0, S), (1, S | A), (1, F | A)], "S3"),
    ([(0, S), (0, F)], "SH"),
    ([(0, S), (0, R)], "RSTOS0"),
    ([(0, A), (1, A)], "OTH"),
])
def test_conn_state_like_zeek(packets: list[tuple[int, int]], state: str) -> None:
    f = Feed()
    for side, flags in packets:
        f.tcp(*((C, SRV, 40000, 22) if side == 0 else (SRV, C, 22, 40000)), flags)
    (row,) = f.rows()
    assert row["state"] == state
    assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (C, 40000, SRV, 22)
    assert row["packets"] == len(packets) and row["host"] == "sensor1" and row["source_line"] == 1


def test_a_syn_ack_seen_first_makes_its_receiver_the_originator() -> None:
    f = Feed()
    f.tcp(SRV, C, 22, 40000, S | A)
    f.tcp(C, SRV, 40000, 22, A)
    f.tcp(SRV, C, 22, 40000, R)
    (row,) = f.rows()
    assert (row["src_ip"], row["dst_port"], row["state"]) == (C, 22, "RSTR")
    assert (row["data"]["orig_pkts"], row["data"]["resp_pkts"]) == (1, 2)


def test_a_reused_tuple_after_close_is_a_new_flow() -> None:
    f = Feed()
    f.tcp(C, SRV, 40000, 22, S)
    f.tcp(SRV, C, 22, 40000, R | A)
    f.tcp(C, SRV, 40000, 22, S, gap=1)
    f.tcp(SRV, C, 22, 40000, S | A)
    rows = f.rows()
    assert [(r["state"], r["source_line"]) for r in rows] == [("REJ", 1), ("S1", 3)]


def test_udp_state_and_directional_counts() -> None:
    f = Feed()
    f.udp(C, SRV, 5000, 9999, b"abc")
    f.udp(SRV, C, 9999, 5000, b"defgh")
    f.udp(C, SRV, 6000, 9999, b"x")
    rows = f.rows()
    assert [(r["state"], r["bytes"], r["packets"], r["proto"]) for r in rows] == [
        ("SF", 8, 2, "udp"), ("S0", 1, 1, "udp")]
    assert rows[0]["data"] == {"orig_bytes": 3, "resp_bytes": 5, "orig_pkts": 1, "resp_pkts": 1,
                               "orig_ip_bytes": 31, "resp_ip_bytes": 33}
    assert rows[0]["duration"] == pytest.approx(0.01)


# -- in-order payload -------------------------------------------------------------------------
def test_segments_are_joined_in_order_retransmissions_dropped_overlaps_trimmed() -> None:
    f = Feed()
    handshake(f)
    f.tcp(C, SRV, 40000, 3333, A | P, 100, b"GET /a")
    f.tcp(C, SRV, 40000, 3333, A | P, 100, b"GET /a")            # retransmission
    f.tcp(C, SRV, 40000, 3333, A | P, 103, b" /a HTTP/1.1\r\n")  # overlaps three bytes
    f.tcp(C, SRV, 40000, 3333, A | P, 117, b"Host: x\r\n\r\n")
    (row,) = f.rows()
    assert row["app"] == "http" and row["data"]["uri"] == "/a" and row["data"]["host"] == "x"
    assert "truncated" not in row["data"]


def test_a_hole_stops_the_kept_bytes_and_marks_the_flow_truncated() -> None:
    f = Feed()
    handshake(f)
    f.tcp(C, SRV, 40000, 3333, A | P, 200, b"Host: late\r\n\r\n")  # bytes 100..199 never seen
    f.tcp(SRV, C, 3333, 40000, A | P, 900, b"SSH-2.0-OpenSSH_9.6\r\n")
    (row,) = f.rows()
    assert row["data"]["truncated"] is True
    assert row["app"] == "ssh" and row["data"] == {**row["data"], "server_banner": "SSH-2.0-OpenSSH_9.6"}
    assert "client_banner" not in row["data"]


def test_sequence_numbers_wrap_around() -> None:
    f = Feed()
    handshake(f, cseq=0xFFFFFFFE)
    f.tcp(C, SRV, 40000, 3333, A | P, 0xFFFFFFFE, b"SSH-2.")
    f.tcp(C, SRV, 40000, 3333, A | P, 4, b"0-wrap\r\n")
    (row,) = f.rows()
    assert row["data"]["client_banner"] == "SSH-2.0-wrap" and "truncated" not in row["data"]


def test_a_snaplen_cut_segment_marks_truncated() -> None:
    f = Feed()
    handshake(f)
    f.tcp(C, SRV, 40000, 3333, A | P, 100, b"SSH-2.0-cut", paylen=1400)
    (row,) = f.rows()
    assert row["data"]["truncated"] is True and row["bytes"] == 1400
    assert row["data"]["client_banner"] == "SSH-2.0-cut"


def test_only_the_first_bytes_are_kept() -> None:
    f = Feed(keep=64)
    handshake(f)
    seq = 100
    for _ in range(100):
        f.tcp(C, SRV, 40000, 3333, A | P, seq, b"x" * 50)
        seq += 50
    assert f.table.buffered == 64
    (row,) = f.rows()
    assert row["bytes"] == 5000 and f.table.buffered == 0


# -- Stratum past the kept bytes --------------------------------------------------------------
@pytest.mark.parametrize("mss", [7, 100, 1400])
def test_stratum_submits_and_jobs_are_counted_over_the_whole_session(mss: int) -> None:
    cap = gen.Capture()
    cap.stratum(C, SRV, submits=300, jobs=120, compact=mss == 100)
    f = Feed()
    seqs: dict[tuple[str, int], int] = {}
    for _, pkt in cap.packets:
        src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
        sport, dport = int.from_bytes(pkt[20:22], "big"), int.from_bytes(pkt[22:24], "big")
        seq, flags, data = int.from_bytes(pkt[24:28], "big"), pkt[33], pkt[40:]
        if not data or mss == 1400:
            f.tcp(src, dst, sport, dport, flags, seq, data)
            continue
        for i in range(0, len(data), mss):                       # re-segment the stream
            f.tcp(src, dst, sport, dport, flags, (seq + i) & 0xFFFFFFFF, data[i:i + mss])
        seqs[(src, sport)] = seq
    (row,) = f.rows()
    assert row["app"] == "stratum" and row["data"]["login"] == gen.WALLET
    assert row["data"]["submits"] == 300
    assert row["data"]["jobs"] == 121                             # 120 + the one in the login result
    assert row["data"]["agent"] == gen.XMRIG_AGENT and row["data"]["rigid"] == "rig-7"
    assert row["data"]["pass"] == "x-worker01" and row["data"]["algo"] == ["rx/0", "cn/r", "cn-pico"]
    assert row["state"] == "SF"


def test_mid_session_stratum_is_turned_around_by_its_methods() -> None:
    cap = gen.Capture()
    cap.stratum(C, SRV, port=5555, submits=4, jobs=3, mid_session=True)
    f = Feed()
    for _, pkt in cap.packets:
        f.tcp(socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]), int.from_bytes(pkt[20:22], "big"),
              int.from_bytes(pkt[22:24], "big"), pkt[33], int.from_bytes(pkt[24:28], "big"), pkt[40:])
    (row,) = f.rows()
    assert (row["src_ip"], row["dst_ip"], row["dst_port"], row["state"]) == (C, SRV, 5555, "OTH")
    assert row["data"]["submits"] == 4 and row["data"]["jobs"] == 3
    assert row["data"]["orig_pkts"] == 5 and row["data"]["resp_pkts"] == 3   # counts follow the turn


# -- DNS --------------------------------------------------------------------------------------
def test_dns_questions_and_answers_on_any_port() -> None:
    f = Feed()
    f.udp(C, "10.0.0.53", 5353, 5300, gen.dns_message("xmr.pool.example", 1, 11))
    f.udp("10.0.0.53", C, 5300, 5353, gen.dns_message("xmr.pool.example", 1, 11, [b"\x01\x02\x03\x04"],
                                                        response=True))
    f.udp(C, "10.0.0.53", 5353, 5300, gen.dns_message("c2.example", 16, 12))          # unanswered
    f.udp("10.0.0.53", C, 5300, 5353, gen.dns_message("other.example", 1, 13, rcode=3, response=True))
    f.udp(C, "10.0.0.9", 5000, 53, b"\x00\x01not dns at all")                         # junk to port 53
    dns = f.rows("dns")
    got = [(d["client"], d["qname"], d["qtype"], d["answers"], d["rcode"], d["source_line"]) for d in dns]
    assert got == [
        (C, "xmr.pool.example", "A", ["1.2.3.4"], "NOERROR", 1),
        (C, "other.example", "A", [], "NXDOMAIN", 4),
        (C, "c2.example", "TXT", [], None, 3)]
    flows = [r for t, r in f.table.out if t == "flows"]
    assert [r["app"] for r in flows] == ["dns", None]


def test_dns_pending_questions_are_bounded() -> None:
    f = Feed()
    for i in range(1000):
        f.udp(C, "10.0.0.53", 5353, 53, gen.dns_message(f"q{i}.example", 1, i))
    dns = f.rows("dns")
    assert len(dns) == 1000 and {d["rcode"] for d in dns} == {None}


# -- bounds -----------------------------------------------------------------------------------
def test_idle_flows_leave_by_capture_time() -> None:
    f = Feed()
    f.udp(C, SRV, 1, 2, b"u")
    handshake(f, sport=40001)
    f.tcp(C, SRV, 40002, 22, S)
    f.tcp(SRV, C, 22, 40002, R | A)
    f.table.expire(f.ts + 10)
    assert [r["src_port"] for t, r in f.table.out] == [40002]            # closed: 5 s
    f.table.expire(f.ts + 61)
    assert [r["src_port"] for t, r in f.table.out] == [40002, 1]         # UDP: 60 s
    f.table.expire(f.ts + 299)
    assert len(f.table.out) == 2                                         # open TCP: 5 min
    f.table.expire(f.ts + 301)
    assert [r["src_port"] for t, r in f.table.out] == [40002, 1, 40001]


def test_a_flow_flood_is_bounded_and_reported() -> None:
    f = Feed(cap=500)
    handshake(f, sport=1)
    f.tcp(C, SRV, 1, 3333, A | P, 100, b"SSH-2.0-kept-alive\r\n")
    for i in range(20000):
        f.tcp("192.0.2.66", C, 1024 + i % 60000, 80, S, gap=0.0001)
        if i % 100 == 0:                                   # the long flow stays active
            f.tcp(C, SRV, 1, 3333, A, 120)
        assert f.table.count <= 500
    assert f.table.evicted == 20001 - 500
    rows = f.rows()
    assert len(rows) == 20001
    kept = [r for r in rows if r["src_port"] == 1]
    assert len(kept) == 1 and kept[0]["app"] == "ssh"       # least recently active go first
    (problem,) = f.table.problems()
    assert "flow table full (500 flows)" in problem and str(f.table.evicted) in problem


def test_memory_stays_flat_on_a_syn_flood() -> None:
    def peak(n: int) -> int:
        f = Feed(cap=500)
        tracemalloc.start()
        for i in range(n):
            f.tcp(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", C, 1024 + i % 60000, 80, S)
            if len(f.table.out) > 200:
                f.table.out.clear()
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top
    small, big = peak(2500), peak(10000)          # 2,000 and 9,500 flows through 500 places
    assert big < small * 1.25 and big < 4 << 20


def test_the_payload_budget_is_reported() -> None:
    f = Feed(budget=100)
    for port in range(3):
        handshake(f, sport=port + 1)
        f.tcp(C, SRV, port + 1, 3333, A | P, 100, b"SSH-2.0-" + b"x" * 200 + b"\r\n")
    rows = f.rows()
    assert [r["app"] for r in rows] == ["ssh", None, None]
    assert f.table.over_budget == 2 and "2 flows" in f.table.problems()[0]


def test_expiry_and_the_final_flush_emit_in_bounded_steps() -> None:
    f = Feed()
    for i in range(10000):
        f.udp(C, SRV, 1024 + i, 53, b"x", gap=0.0001)
    f.table.expire(f.ts + 120, limit=3000)            # a jump in capture time
    assert len(f.table.out) == 3000 and f.table.count == 7000
    f.table.out.clear()
    sizes = []
    for _ in f.table.finish():
        sizes.append(len(f.table.out))
        f.table.out.clear()
    assert sizes == [ft.STEP] and len(f.table.out) == 7000 - ft.STEP and f.table.count == 0
    assert [r["src_port"] for _, r in f.table.out][:2] == [1024 + 3000 + ft.STEP, 1024 + 3001 + ft.STEP]
