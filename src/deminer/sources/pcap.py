"""Packet captures (pcap and pcapng) → ``flows`` and ``dns`` rows, streamed through a bounded table.

Containers: classic pcap in both byte orders with micro- or nanosecond stamps, and pcapng
(sections in either byte order, several interfaces, ``if_tsresol``/``if_tsoffset``; enhanced,
simple and obsolete packet blocks). Link layers: Ethernet with 802.1Q/802.1ad VLAN tags
(stacked), Linux cooked SLL and SLL2, raw IP, BSD loopback (null, either byte order, and
``LOOP``). Then IPv4 and IPv6 (hop-by-hop, routing, destination-options, fragment and AH
headers skipped) and TCP, UDP and ICMP; other IP protocols become port-less flows.

The file is read in large chunks and decoded with slices and shifts, not per-packet objects
(dpkt is several times slower here); ``flowtable`` keeps the conversations and ``payload``
names what they carry. Nothing is held per packet, so memory stays flat as the file grows.

Bad input: a file without a capture magic raises ``SourceError``; a capture cut short keeps
every packet before the cut and adds one ``errors`` row; records larger than the snaplen or
than 256 KiB, corrupt blocks, malformed headers and IP fragments (not reassembled) are
counted and reported, one ``errors`` row each kind.
"""

from __future__ import annotations

import datetime as dt
import itertools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id
from deminer.sources.flowtable import FlowTable

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
MAX_CAPLEN = 262144          # libpcap's largest snaplen: anything above is a corrupt record
MAX_BLOCK = 16 << 20
CHUNK = 4 << 20
FLOW_CAP = 200_000           # flows held at once; past it the least recently active leaves
SUFFIXES = (".pcap", ".pcapng", ".cap")
Packet = tuple[float, int, bytes, int]      # (time, link type, frame, packet number)

_VLAN = (0x8100, 0x88A8, 0x9100)
_V6_EXT = (0, 43, 60, 51)                   # hop-by-hop, routing, dest. options, AH (+ 44 frag)
_ICMP_REQUEST = {0: 8, 14: 13, 16: 15, 18: 17, 129: 128}   # reply type → its request's type
_PROTO = [bytes([i]) for i in range(256)]
_NO_PORTS = b"\0\0\0\0"


def sniff(path: Path, head: bytes) -> bool:
    # A known suffix claims the file, so a broken capture gets a clear error from this source.
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_SHB or path.suffix.lower() in SUFFIXES


class Reader:
    """Packets of one capture file; ``problems`` collects what could not be read."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.problems: list[str] = []
        self.buf = fh.read(CHUNK)
        self.pos = 0
        self.base = 0          # file offset of buf[0]
        self.count = 0
        self.oversize = 0      # records longer than the snaplen
        magic = self.buf[:4]
        if magic not in PCAP_MAGICS and magic != PCAPNG_SHB:
            shown = self.buf[:8].hex() or "an empty file"
            raise SourceError(f"not a pcap or pcapng capture (starts with {shown})")

    def _need(self, n: int) -> bool:
        """Make ``buf[pos:pos+n]`` available; False at the end of the file."""
        if self.pos + n <= len(self.buf):
            return True
        self.buf = self.buf[self.pos:] + self.fh.read(max(CHUNK, n))
        self.base += self.pos
        self.pos = 0
        return n <= len(self.buf)

    def _cut(self, what: str) -> None:
        self.problems.append(f"capture ends inside {what} at byte {self.base + self.pos} "
                             f"({len(self.buf) - self.pos} bytes left); the {self.count} "
                             "packets before it were kept")

    def packets(self) -> Iterator[Packet]:
        if self.buf[:4] == PCAPNG_SHB:
            yield from self._pcapng()
        else:
            yield from self._pcap()
        if self.oversize:
            self.problems.append(f"{self.oversize} packets were longer than the capture's snaplen "
                                 "(kept as recorded, bounded to 256 KiB)")

    def _pcap(self) -> Iterator[Packet]:
        order, scale = PCAP_MAGICS[self.buf[:4]]
        if not self._need(24):
            raise SourceError(f"truncated pcap header ({len(self.buf)} bytes, need 24)")
        snaplen, link = struct.unpack_from(order + "II", self.buf, 16)
        link &= 0xFFFF                       # upper bits carry FCS length flags
        if snaplen == 0:
            self.problems.append("pcap header has snaplen 0; packets bounded to 256 KiB")
        limit = snaplen if 0 < snaplen < MAX_CAPLEN else MAX_CAPLEN
        unpack = struct.Struct(order + "IIII").unpack_from
        self.pos = 24
        while True:
            buf, pos = self.buf, self.pos
            if pos + 16 > len(buf) and not self._need(16):
                if self.pos < len(self.buf):
                    self._cut("a packet header")
                return
            buf, pos = self.buf, self.pos
            sec, frac, caplen, _ = unpack(buf, pos)
            if caplen > limit:
                if caplen > MAX_CAPLEN:
                    self.problems.append(f"record {self.count + 1} at byte {self.base + pos} claims "
                                         f"{caplen} bytes (corrupt); reading stopped there")
                    return
                self.oversize += 1
            end = pos + 16 + caplen
            if end > len(buf):
                if not self._need(16 + caplen):
                    self._cut(f"packet {self.count + 1}")
                    return
                buf, pos, end = self.buf, 0, 16 + caplen
            self.count += 1
            self.pos = end
            yield sec + frac * scale, link, buf[pos + 16:end], self.count

    def _pcapng(self) -> Iterator[Packet]:
        order = "<"
        ifaces: list[tuple[int, float, float]] = []      # (link, seconds per tick, offset)
        bad = 0
        while True:
            if not self._need(12):
                if self.pos < len(self.buf):
                    self._cut("a block header")
                break
            buf, pos = self.buf, self.pos
            btype = struct.unpack_from(order + "I", buf, pos)[0]
            if buf[pos:pos + 4] == PCAPNG_SHB:
                bom = buf[pos + 8:pos + 12]
                order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                if not order:
                    self.problems.append(f"bad pcapng section header at byte {self.base + pos}; "
                                         "reading stopped there")
                    break
                btype, ifaces = 0x0A0D0D0A, []
            blen = struct.unpack_from(order + "I", buf, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                self.problems.append(f"corrupt pcapng block at byte {self.base + pos} (length {blen}); "
                                     "reading stopped there")
                break
            if not self._need(blen):
                self._cut("a block")
                break
            buf, pos = self.buf, self.pos
            self.pos = pos + blen
            if btype == 1:
                ifaces.append(self._idb(buf, pos, blen, order))
                continue
            if btype in (6, 2):
                if btype == 6:
                    iface, hi, lo, caplen = struct.unpack_from(order + "IIII", buf, pos + 8)
                else:
                    iface, _, hi, lo, caplen = struct.unpack_from(order + "HHIII", buf, pos + 8)
                start = pos + 28
            elif btype == 3:
                iface, hi, lo, start = 0, 0, 0, pos + 12
                caplen = min(struct.unpack_from(order + "I", buf, pos + 8)[0], blen - 16)
            else:
                continue                      # name resolution, statistics, custom blocks
            if iface >= len(ifaces) or start + caplen > pos + blen - 4:
                bad += 1
                continue
            if caplen > MAX_CAPLEN:
                self.oversize += 1
                caplen = MAX_CAPLEN
            link, tick, offset = ifaces[iface]
            self.count += 1
            yield ((hi << 32) | lo) * tick + offset, link, buf[start:start + caplen], self.count
        if bad:
            self.problems.append(f"{bad} pcapng packet blocks were unreadable (unknown interface "
                                 "or a length past the block) and skipped")

    @staticmethod
    def _idb(buf: bytes, pos: int, blen: int, order: str) -> tuple[int, float, float]:
        link = struct.unpack_from(order + "H", buf, pos + 8)[0]
        tick, offset, opt, end = 1e-6, 0.0, pos + 16, pos + blen - 4
        while opt + 4 <= end:
            code, n = struct.unpack_from(order + "HH", buf, opt)
            if code == 0:
                break
            value = buf[opt + 4:opt + 4 + n]
            if code == 9 and n >= 1:        # if_tsresol: 10^-v, or 2^-v with the top bit set
                v = value[0]
                tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -min(v, 30)
            elif code == 14 and n == 8:     # if_tsoffset: seconds added to every stamp
                offset = float(struct.unpack_from(order + "q", value)[0])
            opt += 4 + ((n + 3) & ~3)
        return link, tick, offset


def _link(link: int, frame: bytes) -> tuple[int, int]:
    """(ethertype, offset of the network header) for the non-Ethernet link types; (0, 0) if none."""
    if link == 113 and len(frame) >= 16:                      # Linux cooked (SLL)
        return (frame[14] << 8) | frame[15], 16
    if link == 276 and len(frame) >= 20:                      # Linux cooked v2 (SLL2)
        return (frame[0] << 8) | frame[1], 20
    if link in (101, 12, 14, 228, 229) and frame:             # raw IP
        return {4: 0x0800, 6: 0x86DD}.get(frame[0] >> 4, 0), 0
    if link in (0, 108) and len(frame) >= 4:                  # BSD loopback: an AF number
        family = int.from_bytes(frame[:4], "big" if link == 108 or frame[0] == 0 else "little")
        return (0x0800 if family == 2 else 0x86DD if family in (10, 24, 28, 30) else 0), 4
    return 0, 0


def _decode(reader: Reader, table: FlowTable, counts: dict[str, int]) -> Iterator[None]:
    """Feed every packet to ``table``; yields every 8192 packets so rows can be drained."""
    packet = table.packet
    unknown_links: set[int] = set()
    for ts, link, frame, no in reader.packets():
        if not no & 8191:
            table.expire(ts)
            yield None
        if link == 1:
            if len(frame) < 14:
                counts["malformed"] += 1
                continue
            et, off = (frame[12] << 8) | frame[13], 14
            while et in _VLAN and off + 4 <= len(frame):
                et, off = (frame[off + 2] << 8) | frame[off + 3], off + 4
        else:
            et, off = _link(link, frame)
            if not et and link not in (113, 276, 101, 12, 14, 228, 229, 0, 108):
                unknown_links.add(link)
        if et == 0x0800:
            ihl = (frame[off] & 15) << 2 if len(frame) >= off + 20 else 0
            if ihl < 20:
                counts["malformed"] += 1
                continue
            if ((frame[off + 6] & 0x1F) << 8) | frame[off + 7]:
                counts["fragments"] += 1     # no ports in a later fragment
                continue
            # Total length 0: a TSO segment captured on its own host; the frame tells the size.
            iplen = ((frame[off + 2] << 8) | frame[off + 3]) or len(frame) - off
            proto, addr, l4, end = frame[off + 9], frame[off + 12:off + 20], off + ihl, off + iplen
        elif et == 0x86DD:
            if len(frame) < off + 40:
                counts["malformed"] += 1
                continue
            iplen = 40 + ((frame[off + 4] << 8) | frame[off + 5])
            proto, addr, l4, end = frame[off + 6], frame[off + 8:off + 40], off + 40, off + iplen
            while (proto in _V6_EXT or proto == 44) and l4 + 8 <= len(frame):
                if proto == 44:
                    if ((frame[l4 + 2] << 8) | frame[l4 + 3]) & 0xFFF8:
                        break                # a later fragment
                    step = 8
                else:
                    step = (frame[l4 + 1] + 2) << 2 if proto == 51 else (frame[l4 + 1] + 1) << 3
                proto, l4 = frame[l4], l4 + step
            if proto == 44:
                counts["fragments"] += 1
                continue
        else:
            continue                         # ARP, LLDP, ...: not IP
        flags = seq = 0
        if proto == 6:
            if len(frame) < l4 + 20:
                counts["malformed"] += 1
                continue
            ports = frame[l4:l4 + 4]
            seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
            flags = frame[l4 + 13]
            poff = l4 + ((frame[l4 + 12] >> 4) << 2)
        elif proto == 17 or proto == 1 or proto == 58:
            if len(frame) < l4 + 8:
                counts["malformed"] += 1
                continue
            if proto == 17:
                ports = frame[l4:l4 + 4]
            else:
                ports = bytes((0, _ICMP_REQUEST.get(frame[l4], frame[l4]), 0, frame[l4 + 1]))
            poff = l4 + 8
        else:
            ports, poff = _NO_PORTS, l4
        packet(_PROTO[proto] + addr + ports, ts, no, flags, seq, frame, poff,
               end - poff if end > poff else 0, iplen)
    for link in sorted(unknown_links):
        counts[f"link type {link} (not decoded)"] = 1


def parse(ctx: SourceContext) -> Iterator[Batch]:
    host = host_id(ctx.host)
    batcher = Batcher()
    table = FlowTable(host, ctx.display, cap=FLOW_CAP)
    counts = {"malformed": 0, "fragments": 0}
    with ctx.path.open("rb") as fh:
        reader = Reader(fh)
        for _ in itertools.chain(_decode(reader, table, counts), table.finish(), [None]):
            for name, row in table.out:
                batch = batcher.add(name, row)
                if batch:
                    yield batch
            table.out.clear()
    yield from batcher.flush()
    problems = reader.problems + table.problems()
    malformed = counts.pop("malformed")
    if malformed:
        problems.append(f"{malformed} packets were shorter than their own headers and were skipped")
    if counts["fragments"]:
        problems.append(f"{counts['fragments']} IP fragments after the first were not reassembled "
                        "(their bytes are missing from the flows)")
    problems += [f"frames of {name} were skipped" for name in counts if name.startswith("link")]
    if problems:
        now = dt.datetime.now(dt.UTC)
        yield "errors", [{"host": host, "ts": now, "source": ctx.display, "stage": "ingest",
                          "message": p} for p in problems]


SOURCE = Source("pcap", sniff, parse)
