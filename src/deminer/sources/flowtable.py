"""The bounded flow table: packets in, one ``flows`` row per conversation (plus ``dns`` rows) out.

A flow is keyed by its 5-tuple as bytes (``proto | src | dst | sport | dport``, addresses 4 or
16 bytes); the originator is the SYN sender, the receiver of a SYN-ACK seen first, or else the
first packet's sender. Per direction it counts packets, payload and IP bytes, keeps TCP flag
history for a Zeek-like ``conn_state`` and the first ``keep`` bytes of payload *in order*: TCP
is reassembled only as far as the recognisers in ``payload`` need. Retransmissions are
dropped, overlaps trimmed, and a hole (a segment the capture missed, or a snaplen cut) stops
the kept bytes of that direction and marks the flow ``truncated``. A JSON-RPC (Stratum) flow
keeps counting submits and jobs past the kept bytes, so a day-long miner session is counted.

Memory stays bounded whatever the capture holds: idle flows leave by capture time (TCP 5 min,
5 s once closed; UDP/ICMP 1 min), each timeout class in its own least-recently-active queue
(``OrderedDict``) so expiry only looks at queue fronts; past ``cap`` flows the least recently
active is emitted early and counted; kept payload has a global budget.

UDP flows that carry DNS (by content, any port) give one ``dns`` row per question with its
answers; DNS over TCP is paired from the kept bytes when the flow leaves.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import orjson

from deminer.sources import payload

TCP, UDP = 6, 17
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
# Flag history bits (``Flow.bits``).
O_SYN, R_SYNACK, O_FIN, R_FIN, O_RST, R_RST = 1, 2, 4, 8, 16, 32
CLOSED = O_RST | R_RST
BOTH_FIN = O_FIN | R_FIN
OPEN, OTHER, CLOSED_Q = 0, 1, 2             # timeout classes: TCP, UDP/ICMP, closed TCP
TIMEOUTS = (300.0, 60.0, 5.0)
STEP = 4096                                 # flows emitted between two drains of ``out``
BUFFERING, COUNTING, DONE = 1, 2, 0        # what a direction does with new payload
TAIL = 64                                  # bytes carried between segments for the counters
_EPOCH = dt.datetime(1970, 1, 1)
PROTO_NAMES = {TCP: "tcp", UDP: "udp", 1: "icmp", 58: "icmp"}
Row = dict[str, Any]


class Flow:
    __slots__ = ("bits", "bufs", "collect", "dns", "extra", "first", "key", "last", "mode", "no",
                 "obytes", "oip", "onxt", "opkts", "queue", "rbytes", "rip", "rkey", "rnxt", "rpkts",
                 "tail", "truncated")

    def __init__(self, key: bytes, rkey: bytes, ts: float, no: int) -> None:
        self.key, self.rkey, self.no = key, rkey, no
        self.queue = OPEN
        self.first = self.last = ts
        self.opkts = self.rpkts = self.obytes = self.rbytes = self.oip = self.rip = self.bits = 0
        self.onxt = self.rnxt = -1               # next expected TCP sequence number, -1 unknown
        self.collect = True                      # any direction still buffering or counting
        self.truncated = False
        # Made on the first payload (most flows of a scan or flood have none): kept bytes and
        # what each direction does with new bytes; then, for Stratum, the counters' state.
        self.bufs: list[bytearray] | None = None
        self.mode: list[int] | None = None
        self.tail: list[bytes] | None = None     # last bytes seen, for matches across segments
        self.extra: list[int] | None = None      # submits, jobs counted past the kept bytes
        self.dns: dict[int, tuple[float, int, int, str, str]] | None = None


def utc(ts: float) -> dt.datetime | None:
    try:
        return _EPOCH + dt.timedelta(seconds=ts)
    except OverflowError:
        return None


def conn_state(proto: int, bits: int, opkts: int, rpkts: int) -> str:
    """Zeek's ``conn_state`` from the flag history (UDP/ICMP: answered or not)."""
    if proto != TCP:
        return "SF" if opkts and rpkts else "S0"
    if not bits & (O_SYN | R_SYNACK):
        return "OTH"
    if not bits & R_SYNACK:                      # the SYN was never answered with a SYN-ACK
        return "REJ" if bits & R_RST else "RSTOS0" if bits & O_RST else "SH" if bits & O_FIN else "S0"
    if not bits & O_SYN and not opkts:           # only the responder's SYN-ACK was seen
        return "RSTRH" if bits & R_RST else "SHR" if bits & R_FIN else "OTH"
    if bits & CLOSED:
        return "RSTO" if bits & O_RST else "RSTR"
    if bits & O_FIN and bits & R_FIN:
        return "SF"
    return "S2" if bits & O_FIN else "S3" if bits & R_FIN else "S1"


class FlowTable:
    """Feed ``packet`` in capture order; drain ``out`` for ``(table, row)`` pairs."""

    def __init__(self, host: str | None, source: str, keep: int = 4096, cap: int = 200_000,
                 budget: int = 256 << 20) -> None:
        self.host, self.source, self.keep, self.cap, self.budget = host, source, keep, cap, budget
        self.index: dict[bytes, Flow] = {}       # both directions' keys → the flow
        # Originator key → flow, least recently active first, one queue per timeout class.
        self.queues: tuple[OrderedDict[bytes, Flow], ...] = (OrderedDict(), OrderedDict(), OrderedDict())
        self.count = 0
        self.out: list[tuple[str, Row]] = []
        self.buffered = 0
        self.evicted = 0          # flows emitted early because the table was full
        self.over_budget = 0      # flows whose payload was not kept: the budget was spent

    # -- packets ------------------------------------------------------------------------------
    def packet(self, key: bytes, ts: float, no: int, flags: int, seq: int, frame: bytes, off: int,
               paylen: int, iplen: int) -> None:
        """One packet: ``frame[off:off+paylen]`` is its payload (maybe cut by the snaplen)."""
        f = self.index.get(key)
        if f is None:
            f = self._new(key, ts, no, flags)
        d = 0 if f.key == key else 1
        if flags & (SYN | FIN | RST):
            f, d = self._control(f, d, key, ts, no, flags, seq)
        self.queues[f.queue].move_to_end(f.key)
        f.last = ts
        if d:
            f.rpkts += 1
            f.rbytes += paylen
            f.rip += iplen
        else:
            f.opkts += 1
            f.obytes += paylen
            f.oip += iplen
        if paylen and f.collect:
            if key[0] == TCP:
                self._tcp_data(f, d, seq, frame[off:off + paylen], paylen)
            else:
                self._datagram(f, d, frame[off:off + paylen], ts, no)

    def _new(self, key: bytes, ts: float, no: int, flags: int) -> Flow:
        n = (len(key) - 5) >> 1
        a, b, ports = key[1:1 + n], key[1 + n:1 + 2 * n], key[1 + 2 * n:]
        # ICMP "ports" are (request type, code): both directions share them.
        rkey = key[:1] + b + a + (ports if key[0] not in (TCP, UDP) else ports[2:] + ports[:2])
        if key[0] == TCP and flags & (SYN | ACK) == SYN | ACK:
            key, rkey = rkey, key            # a SYN-ACK seen first: its receiver opened it
        if self.count >= self.cap:
            self.evicted += 1
            fronts = [next(iter(q.values())) for q in self.queues if q]
            self._evict(min(fronts, key=lambda g: g.last))
        f = Flow(key, rkey, ts, no)
        f.queue = OPEN if key[0] == TCP else OTHER
        self.index[key] = self.index[rkey] = f
        self.queues[f.queue][key] = f
        self.count += 1
        return f

    def _control(self, f: Flow, d: int, key: bytes, ts: float, no: int, flags: int,
                 seq: int) -> tuple[Flow, int]:
        if flags & SYN:
            if not flags & ACK and f.bits & (O_FIN | R_FIN | CLOSED) and f.opkts + f.rpkts:
                self._evict(f)                   # the 5-tuple is reused by a new connection
                f = self._new(key, ts, no, flags)
                d = 0
            if d:
                f.bits |= R_SYNACK if flags & ACK else 0
                f.rnxt = (seq + 1) & 0xFFFFFFFF
            elif not flags & ACK:
                f.bits |= O_SYN
                f.onxt = (seq + 1) & 0xFFFFFFFF
        if flags & FIN:
            f.bits |= R_FIN if d else O_FIN
        if flags & RST:
            f.bits |= R_RST if d else O_RST
        if f.queue == OPEN and (f.bits & CLOSED or f.bits & BOTH_FIN == BOTH_FIN):
            del self.queues[OPEN][f.key]         # closed: it leaves after a short wait
            self.queues[CLOSED_Q][f.key] = f
            f.queue = CLOSED_Q
        return f, d

    def _streams(self, f: Flow) -> list[int] | None:
        """The per-direction modes, made on a flow's first payload while the budget lasts."""
        if f.mode is None:
            if self.buffered >= self.budget:
                self.over_budget += 1
                f.collect = False
                return None
            f.bufs = [bytearray(), bytearray()]
            f.mode = [BUFFERING, BUFFERING]
        return f.mode

    def _tcp_data(self, f: Flow, d: int, seq: int, data: bytes, paylen: int) -> None:
        modes = self._streams(f)
        if modes is None or not modes[d]:
            return
        mode = modes[d]
        nxt = f.rnxt if d else f.onxt
        if nxt >= 0:
            delta = (seq - nxt) & 0xFFFFFFFF
            if delta >= 0x80000000:              # starts before the bytes we have
                back = 0x100000000 - delta
                if back >= paylen:
                    return                       # a retransmission
                data, paylen, seq = data[back:], paylen - back, nxt
            elif delta:                          # a hole: the capture missed a segment
                f.truncated = True
                mode = self._stop(f, d)
        end = (seq + paylen) & 0xFFFFFFFF
        if d:
            f.rnxt = end
        else:
            f.onxt = end
        short = len(data) < paylen
        if mode == BUFFERING:
            assert f.bufs is not None
            buf = f.bufs[d]
            room = self.keep - len(buf)
            buf += data[:room]
            self.buffered += min(room, len(data))
            if len(buf) >= self.keep:
                mode = self._stop(f, d, bytes(buf[-TAIL:]))
                data = data[room:]
        if mode == COUNTING and data:
            self._count(f, d, data)
        if short and modes[d]:                   # the snaplen cut this segment
            f.truncated = True
            self._stop(f, d)

    @staticmethod
    def _stop(f: Flow, d: int, tail: bytes = b"") -> int:
        """Stop keeping bytes of direction ``d``: count Stratum past here if it is JSON-RPC.

        ``tail`` is what precedes the next byte (empty after a hole in the stream).
        """
        assert f.mode is not None and f.bufs is not None
        buf = f.bufs[d]
        mode = COUNTING if f.mode[d] and (b'"method"' in buf or b'"result"' in buf) else DONE
        f.mode[d] = mode
        if mode == COUNTING:
            if f.tail is None:
                f.tail, f.extra = [b"", b""], [0, 0]
            f.tail[d] = tail
        f.collect = bool(f.mode[0] or f.mode[1])
        return mode

    @staticmethod
    def _count(f: Flow, d: int, data: bytes) -> None:
        assert f.tail is not None and f.extra is not None
        text = f.tail[d] + data
        skip = len(f.tail[d])                    # matches ending in the tail were counted
        f.extra[0] += sum(1 for m in payload.SUBMIT_RE.finditer(text) if m.end() > skip)
        f.extra[1] += sum(1 for m in payload.JOB_RE.finditer(text) if m.end() > skip)
        f.tail[d] = text[-TAIL:]

    def _datagram(self, f: Flow, d: int, data: bytes, ts: float, no: int) -> None:
        msg = None
        if f.mode is None:                       # first datagram: does this flow carry DNS?
            msg = payload.parse_dns(data)
            if msg is not None and (msg[6] or 53 in self._ports(f)):
                f.dns = {}
        modes = self._streams(f)
        if modes is not None and modes[d] == BUFFERING and f.bufs is not None:
            f.bufs[d] += data[:self.keep]        # keep the first datagram of each side
            self.buffered += min(len(data), self.keep)
            modes[d] = DONE
        if f.dns is not None:
            self._dns_message(f, d, msg or payload.parse_dns(data), ts, no)
        f.collect = f.dns is not None or bool(modes and (modes[0] or modes[1]))

    def _dns_message(self, f: Flow, d: int, msg: payload.DnsMessage | None, ts: float,
                     no: int) -> None:
        assert f.dns is not None
        if msg is None:
            return
        ident, is_resp, rcode, qname, qtype, answers, _ = msg
        if not is_resp:
            if len(f.dns) >= 256:                # a flood of unanswered ids: emit the oldest
                self._dns_row(f, *f.dns.pop(next(iter(f.dns))), None, None)
            f.dns[ident] = (ts, no, d, qname, qtype)
            return
        q = f.dns.pop(ident, None)
        if q is None:
            q = (ts, no, 1 - d, qname, qtype)
        self._dns_row(f, q[0], q[1], q[2], qname, qtype, answers, rcode)

    def _dns_row(self, f: Flow, ts: float, no: int, side: int, qname: str, qtype: str,
                 answers: list[str] | None, rcode: str | None) -> None:
        self.out.append(("dns", {"host": self.host, "ts": utc(ts), "source": self.source,
                                 "source_line": no, "client": self._addrs(f)[side],
                                 "qname": qname, "qtype": qtype, "answers": answers or [],
                                 "rcode": rcode}))

    # -- leaving the table --------------------------------------------------------------------
    def expire(self, now: float, limit: int = STEP) -> None:
        """Emit flows idle longer than their timeout (by capture time), at most ``limit``.

        The limit keeps ``out`` small after a jump in capture time; the rest leave next call.
        """
        for queue, timeout in zip(self.queues, TIMEOUTS, strict=True):
            while queue and limit:
                f = next(iter(queue.values()))
                if now - f.last <= timeout:
                    break
                self._evict(f)
                limit -= 1

    def finish(self) -> Iterator[None]:
        """Emit every flow still open, in capture order, pausing every ``STEP`` flows so the
        caller can drain ``out`` (a full table would otherwise become 200k rows at once)."""
        flows = sorted((f for q in self.queues for f in q.values()), key=lambda g: g.no)
        for i, f in enumerate(flows, 1):
            self._evict(f)
            if not i % STEP:
                yield None

    def close(self) -> None:
        for _ in self.finish():
            pass

    def _evict(self, f: Flow) -> None:
        del self.queues[f.queue][f.key]
        del self.index[f.key]
        self.index.pop(f.rkey, None)             # the same key when a host talks to itself
        self.count -= 1
        self._emit(f)

    def problems(self) -> list[str]:
        out = []
        if self.evicted:
            out.append(f"flow table full ({self.cap} flows): {self.evicted} flows were emitted "
                       "before they ended (least recently active first); a flow that went on "
                       "appears again as a new row")
        if self.over_budget:
            out.append(f"payload budget ({self.budget >> 20} MiB) spent: the first bytes of "
                       f"{self.over_budget} flows were not inspected")
        return out

    @staticmethod
    def _ports(f: Flow) -> tuple[int, int]:
        k, n = f.key, (len(f.key) - 5) >> 1
        return int.from_bytes(k[1 + 2 * n:3 + 2 * n], "big"), int.from_bytes(k[3 + 2 * n:], "big")

    @staticmethod
    def _addrs(f: Flow) -> tuple[str, str]:
        k, n = f.key, (len(f.key) - 5) >> 1
        af = socket.AF_INET if n == 4 else socket.AF_INET6
        return socket.inet_ntop(af, k[1:1 + n]), socket.inet_ntop(af, k[1 + n:1 + 2 * n])

    def _emit(self, f: Flow) -> None:
        proto = f.key[0]
        (src, dst), (sport, dport) = self._addrs(f), self._ports(f)
        app: str | None = None
        facts: Row = {}
        obuf = rbuf = b""
        swapped = False
        if f.bufs is not None:
            obuf, rbuf = bytes(f.bufs[0]), bytes(f.bufs[1])
            self.buffered -= len(obuf) + len(rbuf)
            app, facts, swapped = payload.inspect(obuf, rbuf)
            # Only a capture that missed the handshake lets the payload decide the roles.
            swapped = swapped and not f.bits & (O_SYN | R_SYNACK)
        if f.dns is not None:
            app = "dns"
            for q in list(f.dns.values()):
                self._dns_row(f, *q, None, None)
        elif app == "dns" and proto == TCP:
            self._tcp_dns(f, obuf, rbuf)
        if app == "stratum":
            login_result = facts.pop("login_result", False)
            extra = f.extra or [0, 0]
            facts["submits"] = len(payload.SUBMIT_RE.findall(obuf + b"\n" + rbuf)) + extra[0]
            facts["jobs"] = len(payload.JOB_RE.findall(obuf + b"\n" + rbuf)) + extra[1] + login_result
            if not facts["algo"]:
                del facts["algo"]
        o = (f.obytes, f.rbytes, f.opkts, f.rpkts, f.oip, f.rip)
        if swapped:
            src, dst, sport, dport = dst, src, dport, sport
            o = (f.rbytes, f.obytes, f.rpkts, f.opkts, f.rip, f.oip)
        data: Row = {"orig_bytes": o[0], "resp_bytes": o[1], "orig_pkts": o[2], "resp_pkts": o[3],
                     "orig_ip_bytes": o[4], "resp_ip_bytes": o[5], **facts}
        if f.truncated:
            data["truncated"] = True
        self.out.append(("flows", {
            "host": self.host, "ts": utc(f.first), "source": self.source, "source_line": f.no,
            "src_ip": src, "src_port": sport, "dst_ip": dst, "dst_port": dport,
            "proto": PROTO_NAMES.get(proto, str(proto)), "bytes": o[0] + o[1], "packets": o[2] + o[3],
            "duration": round(f.last - f.first, 6), "app": app,
            "state": conn_state(proto, f.bits, f.opkts, f.rpkts),
            "data": orjson.dumps(data).decode()}))

    def _tcp_dns(self, f: Flow, obuf: bytes, rbuf: bytes) -> None:
        """DNS over TCP: pair the client's questions with the server's answers by id."""
        answers = {m[0]: m for m in payload.dns_stream(rbuf) if m[1]}
        for m in payload.dns_stream(obuf):
            if not m[1]:
                a = answers.get(m[0])
                self._dns_row(f, f.first, f.no, 0, m[3], m[4], a[5] if a else None,
                              a[2] if a else None)
