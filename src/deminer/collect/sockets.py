"""Collector: ``connections`` rows from /proc/net/{tcp,tcp6,udp,udp6}, each with its process.

A line of those tables, as the kernel prints it::

    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode
    2: 0100007F:9F7E 0100007F:8C17 01 00000000:00000000 00:00000000 00000000  0  0 9593 ...

Addresses are the in-memory bytes of the address printed as 32-bit words in the host's byte
order (``0100007F`` is 127.0.0.1 on little-endian hosts; IPv6 is four such words); ports are
plain hex. The owning pid comes from the socket inode, matched against the
``/proc/PID/fd/* -> socket:[inode]`` links that ``processes`` already walked.

Only the collector's own network namespace is read (``/proc/net`` is ``/proc/self/net``).
Sockets of containers in other namespaces are in ``/proc/PID/net/*`` of a process inside each
namespace; reading one per distinct ``/proc/PID/ns/net`` would cover them, and is left for
later.
"""

import errno
import ipaddress
import os
import sys
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from deminer.collect.bundle import Context

TABLES = (("tcp", "net/tcp"), ("tcp6", "net/tcp6"), ("udp", "net/udp"), ("udp6", "net/udp6"))
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}
# UDP reuses the TCP numbers: 1 for a connected socket, 7 (CLOSE) for an unconnected one,
# which ss calls UNCONN.
UDP_STATES = {1: "ESTABLISHED", 7: "UNCONN"}
LINE_CAP = 4096  # real lines are ~150 bytes; anything longer is not a /proc/net line
OWNERS_ATTR = "deminer_socket_owners"  # ctx attribute: socket inode -> pid, set by processes
_HEX = frozenset("0123456789abcdefABCDEF")


def is_number(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²' and other digits int() refuses)."""
    return bool(text) and all("0" <= c <= "9" for c in text)


def _is_hex(text: str, also: str = "") -> bool:
    return all(c in _HEX or c in also for c in text)


def socket_inodes(fd_dir: str) -> List[int]:
    """Socket inodes a process holds open: its ``fd/*`` links that read ``socket:[N]``."""
    out = []  # type: List[int]
    for name in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:[") and link.endswith("]") and is_number(link[8:-1]):
            out.append(int(link[8:-1]))
    return out


def decode_address(text: str, byteorder: str = sys.byteorder) -> Tuple[str, int]:
    """``0100007F:0050`` -> ``("127.0.0.1", 80)``; v4-mapped IPv6 comes back as plain IPv4.

    Mapped addresses are stored as IPv4 so that indicator lists of IPv4 addresses match a
    dual-stack socket too; the ``proto`` column (tcp6/udp6) still says which table it was.
    """
    hexaddr, sep, hexport = text.partition(":")
    if not sep or len(hexaddr) not in (8, 32) or len(hexport) != 4 or not _is_hex(text, ":"):
        raise ValueError("not ADDR:PORT in hex: %r" % text[:80])
    raw = bytes.fromhex(hexaddr)
    if byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), int(hexport, 16)
    return str(ip), int(hexport, 16)


def parse_line(line: bytes, proto: str, byteorder: str = sys.byteorder) -> Dict[str, Any]:
    """One line of a /proc/net table as a ``connections`` row (without host and pid)."""
    fields = line.decode("ascii").split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        raise ValueError("expected 'sl: local remote st ... inode', got %d fields" % len(fields))
    laddr, lport = decode_address(fields[1], byteorder)
    raddr, rport = decode_address(fields[2], byteorder)
    if len(fields[3]) != 2 or not _is_hex(fields[3]) or not is_number(fields[9]):
        raise ValueError("bad state %r or inode %r" % (fields[3][:8], fields[9][:24]))
    code = int(fields[3], 16)
    names = UDP_STATES if proto.startswith("udp") else TCP_STATES
    return {"proto": proto, "laddr": laddr, "lport": lport, "raddr": raddr, "rport": rport,
            "state": names.get(code, "UNKNOWN_%02X" % code), "inode": int(fields[9])}


def _lines(fh: BinaryIO) -> Iterator[Tuple[int, Optional[bytes]]]:
    """(line number, line) with overlong lines skipped whole and given as None."""
    number = 0
    while True:
        line = fh.readline(LINE_CAP)
        if not line:
            return
        number += 1
        if len(line) == LINE_CAP and not line.endswith(b"\n"):
            while True:  # drop the rest of the line without holding it in memory
                rest = fh.readline(LINE_CAP)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
        else:
            yield number, line


def socket_owners(ctx: Context) -> Dict[int, int]:
    """Socket inode -> pid: from ``processes`` when it ran, else by walking /proc/*/fd here."""
    owners = getattr(ctx, OWNERS_ATTR, None)
    if isinstance(owners, dict):
        return owners
    owners = {}
    refused = []  # type: List[str]
    try:
        pids = sorted(int(n) for n in os.listdir(ctx.proc()) if is_number(n))
    except OSError:
        pids = []
    for pid in pids:  # ascending, so a socket shared after fork goes to its lowest pid
        try:
            inodes = socket_inodes(ctx.proc("%d/fd" % pid))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):  # exited meanwhile: normal
                refused.append("%d (%s)" % (pid, exc.strerror or exc))
            continue
        for inode in inodes:
            owners.setdefault(inode, pid)
    if refused:
        ctx.error("/proc/*/fd", "cannot list fd of %d processes, their sockets have no pid: %s"
                  % (len(refused), ", ".join(refused[:5]) + (", ..." if len(refused) > 5 else "")))
    return owners


def _read_table(ctx: Context, fh: BinaryIO, proto: str, source: str,
                owners: Dict[int, int]) -> None:
    bad = 0
    first = ""
    for number, line in _lines(fh):
        try:
            if line is None:
                raise ValueError("line longer than %d bytes" % LINE_CAP)
            if (number == 1 and line.split()[:1] == [b"sl"]) or not line.strip():
                continue  # the header
            row = parse_line(line, proto)
        except (ValueError, UnicodeDecodeError) as exc:
            bad += 1
            first = first or "line %d: %s" % (number, exc)
            continue
        # Inode 0 is a socket no process holds any more (TIME_WAIT and the like).
        row.update(source=source, source_line=number, pid=owners.get(row["inode"]) or None)
        ctx.emit("connections", row)
    if bad:
        ctx.error(source, "skipped %d malformed line%s (first at %s)"
                  % (bad, "" if bad == 1 else "s", first))


def collect(ctx: Context) -> None:
    """Emit one ``connections`` row per socket of tcp, tcp6, udp and udp6."""
    owners = None  # type: Optional[Dict[int, int]]
    for proto, sub in TABLES:
        source = "/proc/" + sub
        try:
            fh = open(ctx.proc(sub), "rb")  # noqa: SIM115 - closed below, after the walk
        except OSError as exc:
            # No /proc under a mounted image, or no IPv6 on this host: nothing to report.
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                ctx.error(source, "cannot read: %s" % (exc.strerror or exc))
            continue
        with fh:
            if owners is None:
                owners = socket_owners(ctx)
            _read_table(ctx, fh, proto, source, owners)
