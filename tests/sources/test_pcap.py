"""pcap/pcapng source: containers, link layers, the outbreak scenarios end to end, bad files, and
a real loopback capture of a Stratum client and pool (plain and TLS) made with dumpcap."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import captures as gen
from deminer.sources import pcap
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest
from tests.capture import dumpcap
from tests.stratum_pool import StratumPool

FORMATS = ("pcap", "pcap-ns", "pcap-be", "pcapng", "pcapng-be")


def parse(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"flows": [], "dns": [], "errors": []}
    for table, rows in pcap.parse(SourceContext(path, path.name, None, path.parent)):
        out[table].extend(rows)
    for r in out["flows"]:
        r["data"] = json.loads(r["data"])
    return out


def outbreak() -> gen.Capture:
    cap = gen.Capture()
    cap.dns("10.0.0.5", "10.0.0.53", "pool.supportxmr.com", answers=[bytes([198, 51, 100, 7])])
    cap.stratum("10.0.0.5", "198.51.100.7", port=3333, submits=5, jobs=3)
    cert = gen.certificate("pool.test", "Test CA")
    cap.tls("10.0.0.6", "203.0.113.9", sni="gulf.moneroocean.stream", cert=cert)
    cap.http_download("10.0.0.5", "203.0.113.50", uri="/kinsing", chunked=True)
    cap.redis_config_set("192.0.2.77", "10.0.0.9")
    cap.smb_doublepulsar("192.0.2.88", "10.0.0.10")
    cap.ssh("192.0.2.99", "10.0.0.5")
    cap.rdp("192.0.2.99", "10.0.0.11", cookie="admin")
    cap.syn_scan("192.0.2.66", "10.0.0.5", [23, 6379])
    cap.ping("10.0.0.5", "10.0.0.1")
    v6_login = b'{"method":"login","params":{"login":"v6"}}\n'
    cap.tcp_session("2001:db8::5", "2001:db8::7", 14444, [(0, v6_login)])
    return cap


def by_app(flows: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for f in flows:
        out.setdefault(f["app"], []).append(f)
    return out


# -- containers and link layers ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("link", list(gen.LINKS))
def test_every_container_and_link_layer_gives_the_same_rows(tmp_path: Path, fmt: str, link: str) -> None:
    cap = outbreak()
    ref = parse(cap.write(tmp_path / "ref.pcap"))
    got = parse(cap.write(tmp_path / f"x.{fmt}", fmt=fmt, link=link))
    assert pcap.sniff(tmp_path / "noext", (tmp_path / f"x.{fmt}").read_bytes()[:64])
    assert got["errors"] == []
    for table in ("flows", "dns"):
        for r in ref[table] + got[table]:
            r.pop("source")
        assert got[table] == ref[table]


def test_the_outbreak_capture_row_by_row(tmp_path: Path) -> None:
    rows = parse(outbreak().write(tmp_path / "o.pcap"))
    flows, apps = rows["flows"], by_app(rows["flows"])
    assert len(flows) == 12 and rows["errors"] == []
    first = flows[0]
    assert first["ts"] == dt.datetime(2024, 3, 30, 8, 0, 0, 1000) and first["source_line"] == 1
    assert first["source"] == "o.pcap" and first["host"] is None
    (dns,) = rows["dns"]
    assert (dns["client"], dns["qname"], dns["qtype"], dns["answers"], dns["rcode"]) == (
        "10.0.0.5", "pool.supportxmr.com", "A", ["198.51.100.7"], "NOERROR")
    stratum = apps["stratum"]
    assert [(s["dst_ip"], s["dst_port"]) for s in stratum] == [("198.51.100.7", 3333), ("2001:db8::7", 14444)]
    d = stratum[0]["data"]
    assert (d["login"], d["agent"], d["submits"], d["jobs"]) == (gen.WALLET, gen.XMRIG_AGENT, 5, 4)
    assert stratum[0]["state"] == "SF" and stratum[1]["data"]["login"] == "v6"
    (tls,) = apps["tls"]
    assert tls["data"]["sni"] == "gulf.moneroocean.stream"
    assert tls["data"]["cert_subject"] == "CN=pool.test,O=Test Pool"
    assert tls["data"]["ja4"] == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    (http,) = apps["http"]
    assert (http["data"]["uri"], http["data"]["body_magic"][:8]) == ("/kinsing", "7f454c46")
    assert apps["redis"][0]["data"]["commands"][0] == "CONFIG SET dir /var/spool/cron/"
    assert apps["smb"][0]["data"]["doublepulsar"] is True
    assert apps["ssh"][0]["data"]["client_banner"] == "SSH-2.0-libssh2_1.10.0"
    assert apps["rdp"][0]["data"]["cookie"] == "admin"
    scans = [f for f in flows if f["src_ip"] == "192.0.2.66"]
    assert [(f["dst_port"], f["state"]) for f in scans] == [(23, "REJ"), (6379, "REJ")]
    (icmp,) = [f for f in flows if f["proto"] == "icmp"]
    assert (icmp["src_port"], icmp["dst_port"], icmp["packets"], icmp["state"]) == (8, 0, 2, "SF")


def test_ingest_into_a_case_and_query_the_stratum_login(tmp_path: Path) -> None:
    cap = outbreak()
    cap.packets.insert(40, (cap.packets[40][0], cap.packets[40][1]))   # a retransmission
    path = cap.write(tmp_path / "sensor.pcapng", fmt="pcapng")
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [path], sources=(pcap.SOURCE,))
        assert summary.errors == [] and summary.rows == {"flows": 12, "dns": 1}
        (row,) = case.query("SELECT src_ip, dst_port, json_extract_string(data, '$.login') AS login, "
                            "json_extract(data, '$.submits')::INT AS submits FROM flows "
                            "WHERE app = 'stratum' AND dst_port = 3333")
        assert row == {"src_ip": "10.0.0.5", "dst_port": 3333, "login": gen.WALLET, "submits": 5}


def test_pcapng_sections_of_both_byte_orders_in_one_file(tmp_path: Path) -> None:
    first, second = gen.Capture(), gen.Capture(start=gen.T0 + 3600)
    first.ssh("192.0.2.99", "10.0.0.5")
    second.rdp("192.0.2.99", "10.0.0.11")
    both = tmp_path / "both.pcapng"
    both.write_bytes(first.write(tmp_path / "a.pcapng", fmt="pcapng").read_bytes()
                     + second.write(tmp_path / "b.pcapng", fmt="pcapng-be", link="sll2").read_bytes())
    rows = parse(both)
    got = [(f["app"], f["source_line"], f["ts"].hour) for f in rows["flows"]]
    assert got == [("ssh", 1, 8), ("rdp", 10, 9)]
    assert rows["errors"] == []


def test_nanosecond_stamps_and_timezone(tmp_path: Path) -> None:
    cap = gen.Capture(start=1711785600.123456)
    cap.ping("10.0.0.1", "10.0.0.2")
    for fmt in ("pcap-ns", "pcapng-be"):
        (flow,) = parse(cap.write(tmp_path / f"t.{fmt}", fmt=fmt))["flows"]
        assert flow["ts"] == dt.datetime(2024, 3, 30, 8, 0, 0, 124456)


def test_ipv6_extension_headers_and_fragments(tmp_path: Path) -> None:
    src, dst = (socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "2001:db8::2"))
    tcp = bytes(dpkt.tcp.TCP(sport=40000, dport=22, seq=1, flags=dpkt.tcp.TH_ACK, data=b"SSH-2.0-x\r\n"))
    hop = bytes([60, 0]) + bytes(6)                       # hop-by-hop → destination options
    dst_opts = bytes([44, 0]) + bytes(6)                  # → fragment header (first fragment)
    frag0 = bytes([6, 0, 0, 1]) + b"\x00\x00\x00\x07"
    later = bytes([6, 0, 0, 0x18]) + b"\x00\x00\x00\x07"  # offset 3 → a later fragment
    first = hop + dst_opts + frag0 + tcp
    ip6 = struct.pack("!IHBB", 0x60000000, len(first), 0, 64) + src + dst + first
    ip6_later = struct.pack("!IHBB", 0x60000000, 16, 44, 64) + src + dst + later + bytes(8)
    v4 = bytearray(bytes(dpkt.ip.IP(src=b"\x0a\0\0\1", dst=b"\x0a\0\0\2", p=17, data=bytes(16))))
    v4[6:8] = b"\x00\x14"                                 # fragment offset 160: a later fragment
    v4_later = bytes(v4)
    cap = gen.Capture()
    short_v4, bad_ihl = v4_later[:12], b"\x44" + v4_later[1:]
    cap.packets += [(gen.T0, ip6), (gen.T0 + 1, ip6_later), (gen.T0 + 2, v4_later), (gen.T0 + 3, short_v4),
                    (gen.T0 + 4, bad_ihl)]
    rows = parse(cap.write(tmp_path / "v6.pcap"))
    (flow,) = rows["flows"]
    assert (flow["src_ip"], flow["dst_port"], flow["app"], flow["state"]) == ("2001:db8::1", 22, "ssh", "OTH")
    assert [e["message"] for e in rows["errors"]] == [
        "2 packets were shorter than their own headers and were skipped",
        "2 IP fragments after the first were not reassembled (their bytes are missing from the flows)"]


# -- bad input --------------------------------------------------------------------------------
def test_a_capture_cut_inside_its_last_packet_keeps_the_rest(tmp_path: Path) -> None:
    path = outbreak().write(tmp_path / "cut.pcap")
    whole = parse(path)
    path.write_bytes(path.read_bytes()[:-30])
    rows = parse(path)
    assert len(rows["flows"]) == len(whole["flows"])
    (err,) = rows["errors"]
    n = sum(f["packets"] for f in whole["flows"])
    assert err["message"].startswith(f"capture ends inside packet {n} at byte ")
    assert f"the {n - 1} packets before it were kept" in err["message"] and err["source"] == "cut.pcap"
    first = struct.unpack_from("<I", path.read_bytes(), 24 + 8)[0]
    path.write_bytes(path.read_bytes()[:24 + 16 + first + 7])  # cut inside the 2nd record header
    assert "capture ends inside a packet header" in parse(path)["errors"][0]["message"]


def test_a_pcapng_cut_inside_a_block(tmp_path: Path) -> None:
    path = outbreak().write(tmp_path / "cut.pcapng", fmt="pcapng")
    path.write_bytes(path.read_bytes()[:-10])
    rows = parse(path)
    assert len(rows["flows"]) == 12
    assert rows["errors"][0]["message"].startswith("capture ends inside a block at byte ")


def test_wrong_magic_is_a_source_error_and_ingest_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "evil\x1b[31m.pcap"
    bad.write_bytes(b"\x00\x01\x02\x03 not a capture")
    with pytest.raises(SourceError, match="not a pcap or pcapng capture"):
        parse(bad)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    good = outbreak().write(tmp_path / "good.pcap")
    with Case(None) as case:
        summary = ingest(case, [bad, empty, good], sources=(pcap.SOURCE,))
        assert summary.rows["flows"] == 12
        assert [e.split(": ", 1)[0] for e in summary.errors] == [str(bad), str(empty)]
        assert "an empty file" in summary.errors[1]


def test_snaplen_zero_oversize_records_and_snaplen_cuts(tmp_path: Path) -> None:
    cap = gen.Capture()
    cap.http_download("10.0.0.5", "203.0.113.50")
    path = cap.write(tmp_path / "s.pcap", fmt="pcap-be", snaplen=80)
    rows = parse(path)
    (flow,) = rows["flows"]
    assert flow["data"]["truncated"] is True and flow["data"]["method"] == "GET"
    assert flow["bytes"] == 82 + 315                          # counted from the IP lengths
    assert "host" not in flow["data"] and flow["data"]["status"] == 200
    raw = bytearray(path.read_bytes())
    raw[16:20] = struct.pack(">I", 0)                         # snaplen 0
    path.write_bytes(raw)
    assert "snaplen 0" in parse(path)["errors"][0]["message"]
    raw[16:20] = struct.pack(">I", 60)                        # records longer than the snaplen
    path.write_bytes(raw)
    assert any("longer than the capture's snaplen" in e["message"] for e in parse(path)["errors"])
    raw[24 + 8:24 + 12] = struct.pack(">I", 0x7FFFFFF0)       # a corrupt record length
    path.write_bytes(raw)
    rows = parse(path)
    assert rows["flows"] == [] and "claims 2147483632 bytes (corrupt)" in rows["errors"][0]["message"]


def test_unknown_link_types_and_pcapng_junk_are_reported(tmp_path: Path) -> None:
    cap = outbreak()
    path = cap.write(tmp_path / "l.pcap")
    raw = bytearray(path.read_bytes())
    raw[20:24] = struct.pack("<I", 147)
    path.write_bytes(raw)
    rows = parse(path)
    assert rows["flows"] == []
    assert rows["errors"][0]["message"] == "frames of link type 147 (not decoded) were skipped"
    ng = bytearray(cap.write(tmp_path / "j.pcapng", fmt="pcapng-be").read_bytes())
    epb = 28 + 20 + 32                       # after the section header and two interfaces
    ng[epb + 8:epb + 12] = struct.pack(">I", 9)                       # first packet: no interface 9
    (tmp_path / "j.pcapng").write_bytes(ng)
    rows = parse(tmp_path / "j.pcapng")
    assert rows["errors"][0]["message"].startswith("1 pcapng packet blocks were unreadable")
    ng[epb + 4:epb + 8] = struct.pack(">I", 13)                       # a block length that is not /4
    (tmp_path / "j.pcapng").write_bytes(ng)
    rows = parse(tmp_path / "j.pcapng")
    assert rows["flows"] == [] and "corrupt pcapng block" in rows["errors"][0]["message"]


def test_hostile_text_is_stored_as_found(tmp_path: Path) -> None:
    cap = gen.Capture()
    cap.tcp_session("10.0.0.5", "10.0.0.6", 80, [(0, b"GET /\x00\xff HTTP/1.1\r\nHost: \x1b[2J\xfe\r\n\r\n")])
    (flow,) = parse(cap.write(tmp_path / "h.pcap"))["flows"]
    assert flow["data"]["uri"] == "/\x00\\xff" and flow["data"]["host"] == "\x1b[2J\\xfe"
    with Case(None) as case:
        assert ingest(case, [tmp_path / "h.pcap"], sources=(pcap.SOURCE,)).errors == []


def test_a_flow_flood_through_the_source_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcap, "FLOW_CAP", 1000)
    cap = gen.Capture()
    for i in range(20000):
        cap.ip(f"10.9.{i >> 8 & 255}.{i & 255}", "10.0.0.5", 6,
               dpkt.tcp.TCP(sport=1024 + i % 50000, dport=22, flags=dpkt.tcp.TH_SYN), gap=0.00001)
    rows = parse(cap.write(tmp_path / "flood.pcap"))
    assert len(rows["flows"]) == 20000 and {f["state"] for f in rows["flows"]} == {"S0"}
    (err,) = rows["errors"]
    assert err["message"].startswith("flow table full (1000 flows): 19000 flows were emitted")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_captures_never_crash(tmp_path: Path, data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(FORMATS))
    path = tmp_path / f"m.{fmt}"
    blob = bytearray(outbreak().write(path, fmt=fmt).read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(4, len(blob) - 1))
        blob[pos:pos + 4] = data.draw(st.binary(min_size=1, max_size=4))
    path.write_bytes(bytes(blob[:data.draw(st.integers(4, len(blob)))]))
    try:
        rows = parse(path)
    except SourceError:
        return
    assert all(isinstance(f["bytes"], int) for f in rows["flows"])


# -- against tshark ---------------------------------------------------------------------------
def tshark(*args: str) -> list[str]:
    exe = shutil.which("tshark")
    if exe is None:
        pytest.skip("tshark is not installed (make sysdeps)")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_ja3_agrees_with_tshark(tmp_path: Path) -> None:
    cap = gen.Capture()
    hellos = [gen.client_hello("a.example"), gen.client_hello(None, exts=(10, 11, 13, 43), grease=False),
              gen.client_hello("b.example", legacy=0x0301, versions=(), alpn=(), ciphers=(47, 53, 10))]
    for hello in hellos:
        cap.tls("10.0.0.5", "203.0.113.9", hello=hello)
    path = cap.write(tmp_path / "ja3.pcap")
    expected = tshark("-n", "-r", str(path), "-Y", "tls.handshake.type == 1", "-T", "fields",
                      "-e", "tls.handshake.ja3")
    assert [f["data"]["ja3_hash"] for f in parse(path)["flows"]] == expected and len(expected) == 3


# -- a real capture on the loopback interface -------------------------------------------------
class TlsFront:
    """A TLS endpoint on 127.0.0.1 that relays each connection to the plain pool."""

    def __init__(self, cert: Path, key: Path, pool_port: int) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.pool_port = pool_port
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        try:
            raw, _ = self.sock.accept()
            conn = self.ctx.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.pool_port))
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
            self._pump(conn, upstream)
        except OSError:
            return

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(4096):
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)     # a FIN now, even while the other pump reads b
            b.close()


def miner(sock: socket.socket) -> None:
    """An XMRig-style client: login, wait for the job, submit, keepalive."""
    login = {"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
        "login": gen.WALLET, "pass": "rig-lo", "agent": gen.XMRIG_AGENT, "algo": ["rx/0"]}}
    sock.sendall(json.dumps(login).encode() + b"\n")
    reply = sock.recv(65536)
    assert b'"job"' in reply
    for i, method in enumerate(("submit", "keepalived")):
        sock.sendall(json.dumps({"id": i + 2, "jsonrpc": "2.0", "method": method,
                                 "params": {"id": "1", "job_id": "1", "nonce": "00"}}).encode() + b"\n")
        sock.recv(65536)
    sock.close()


@pytest.fixture()
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj",
                    "/O=Test Pool/CN=pool.test"], check=True, capture_output=True, timeout=60)
    return crt, key


def test_real_loopback_capture_of_a_miner_plain_and_tls(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    out = tmp_path / "lo.pcapng"
    with StratumPool() as pool:
        front = TlsFront(*cert, pool.port)
        try:
            with dumpcap(f"tcp port {pool.port} or tcp port {front.port}", out):
                miner(socket.create_connection(("127.0.0.1", pool.port)))
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2       # the certificate travels in clear
                miner(ctx.wrap_socket(socket.create_connection(("127.0.0.1", front.port)),
                                      server_hostname="pool.supportxmr.com"))
                time.sleep(0.5)
        finally:
            front.close()
    flows = parse(out)["flows"]
    plain = [f for f in flows if f["dst_port"] == pool.port and f["app"] == "stratum"]
    assert len(plain) == 2          # the miner's own session and the TLS front's relay
    for f in plain:
        assert (f["data"]["login"], f["data"]["agent"]) == (gen.WALLET, gen.XMRIG_AGENT)
        assert f["data"]["submits"] == 1
        # The client closed; the pool keeps its side open until the capture has stopped.
        assert f["state"] == "S2" and f["src_ip"] == "127.0.0.1" and f["data"]["jobs"] == 1
    (tls,) = [f for f in flows if f["dst_port"] == front.port]
    assert tls["app"] == "tls" and tls["data"]["sni"] == "pool.supportxmr.com"
    assert tls["data"]["version"] == "TLS 1.2" and tls["data"]["cert_subject"] == "CN=pool.test,O=Test Pool"
    if shutil.which("tshark"):
        assert tshark("-n", "-r", str(out), "-Y", "tls.handshake.type == 1", "-T", "fields",
                      "-e", "tls.handshake.ja3") == [tls["data"]["ja3_hash"]]
