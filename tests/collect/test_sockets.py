"""The sockets collector: kernel hex addresses decoded, states named, each socket's process."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deminer.collect import processes, sockets
from deminer.collect.bundle import Context
from deminer.scenarios.proc_tree import FakeProc
from tests.collect.conftest import LiveHost, collect_into_rows

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
              "timeout inode                                                     \n")
TCP6_HEADER = ("  sl  local_address                         remote_address                        "
               "st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
UDP_HEADER = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
              "timeout inode ref pointer drops            \n")
# Lines as a Linux 6.x x86_64 kernel prints them.
TCP_LISTEN = ("   0: 0100007F:8C17 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0     "
              "   0 9592 1 000000009a6fcf3b 100 0 0 10 0                      \n")
TCP_ESTAB = ("   1: 0100007F:9F7E 0100007F:8C17 01 00000000:00000000 00:00000000 00000000     0     "
             "   0 9593 2 00000000bac31e87 20 0 0 10 -1                      \n")
TCP_TIMEWAIT = ("   2: 0500000A:D431 5DB8D822:0D05 06 00000000:00000000 03:00000E2F 00000000     0    "
                "    0 0 3 0000000000000000\n")
TCP6_LISTEN = ("   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
               "00000000:00000000 00:00000000 00000000     0        0 9607 1 00000000653a834a 100 0 0 "
               "10 0\n")
TCP6_MAPPED = ("   1: 0000000000000000FFFF00000100007F:92ED 0000000000000000FFFF00000100007F:DF0E 01 "
               "00000000:00000000 00:00000000 00000000     0        0 9609 1 0000000069f63cee 20 0 0 "
               "10 -1\n")
TCP6_GLOBAL = ("   2: B80D0120000000000000000001000000:01BB 000080FE000000000000000002000100:C350 01 "
               "00000000:00000000 00:00000000 00000000  1000        0 9700 1 0000000069f63cee 20 0 0 "
               "10 -1\n")
UDP_UNCONN = (" 4058: 0100007F:B4C6 00000000:0000 07 00000000:00000000 00:00000000 00000000     0     "
              "   0 9610 2 00000000046273fc 0          \n")


def test_decode_addresses_as_the_kernel_prints_them() -> None:
    assert sockets.decode_address("0100007F:0050", "little") == ("127.0.0.1", 80)
    assert sockets.decode_address("00000000:0000", "little") == ("0.0.0.0", 0)
    assert sockets.decode_address("7F000001:0050", "big") == ("127.0.0.1", 80)
    v6 = "00000000000000000000000001000000:1F90"
    assert sockets.decode_address(v6, "little") == ("::1", 8080)
    assert sockets.decode_address("B80D0120000000000000000001000000:01BB", "little") \
        == ("2001:db8::1", 443)
    assert sockets.decode_address("000080FE000000000000000002000100:C350", "little") \
        == ("fe80::1:2", 50000)
    # v4-mapped IPv6 comes back as plain IPv4, so IPv4 indicators match dual-stack sockets.
    assert sockets.decode_address("0000000000000000FFFF00000302010A:0D05", "little") \
        == ("10.1.2.3", 3333)
    for junk in ("", "0100007F", "0100007F:", "0100007F:00500", "XYZ0007F:0050", "01007F:0050",
                 "0100 07F:0050", "0100007F:-001", "0100007F:+0x1"):
        with pytest.raises(ValueError):
            sockets.decode_address(junk, "little")


def _kernel_hex(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    raw = ip.packed
    words = "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, len(raw), 4))
    return f"{words}:{port:04X}"


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.integers(0, 65535))
def test_decode_reads_back_any_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                       port: int) -> None:
    addr, got_port = sockets.decode_address(_kernel_hex(ip, port), "little")
    mapped = getattr(ip, "ipv4_mapped", None)
    assert (addr, got_port) == (str(mapped or ip), port)


def test_parse_line_names_the_state() -> None:
    row = sockets.parse_line(TCP_ESTAB.encode(), "tcp", "little")
    assert row == {"proto": "tcp", "laddr": "127.0.0.1", "lport": 0x9F7E, "raddr": "127.0.0.1",
                   "rport": 0x8C17, "state": "ESTABLISHED", "inode": 9593}
    assert sockets.parse_line(TCP_LISTEN.encode(), "tcp", "little")["state"] == "LISTEN"
    assert sockets.parse_line(TCP_TIMEWAIT.encode(), "tcp", "little")["state"] == "TIME_WAIT"
    assert sockets.parse_line(UDP_UNCONN.encode(), "udp", "little")["state"] == "UNCONN"


@given(st.binary(max_size=300))
def test_parse_line_rejects_junk_with_value_error(data: bytes) -> None:
    try:
        row = sockets.parse_line(data, "tcp")
    except (ValueError, UnicodeDecodeError):
        return
    assert set(row) == {"proto", "laddr", "lport", "raddr", "rport", "state", "inode"}


def test_fake_tree_tables_and_owners(fake_proc: FakeProc) -> None:
    if sys.byteorder != "little":
        pytest.skip("the fixture lines are a little-endian kernel's")
    fake_proc.add(1, b"systemd", exe="/usr/lib/systemd/systemd")
    fake_proc.add(700, b"xmrig", sockets=(9592, 9593))
    fake_proc.add(800, b"xmrig", sockets=(9593,))  # the same socket inherited by a fork
    fake_proc.add(900, b"nginx", sockets=(9607, 9609, 9700, 9610))
    net = fake_proc.proc / "net"
    (net / "tcp").write_bytes(
        (TCP_HEADER + TCP_LISTEN + TCP_ESTAB + TCP_TIMEWAIT).encode()
        + b"\x00\xff\xfe\x01 binary junk\n"
        + b"   9: " + b"A" * 100_000 + b"\n"
        + b"  10: 0100007F:9F7E 0100007F:8C17 01 00000000:00000000 00:00000000 000000")
    (net / "tcp6").write_text(TCP6_HEADER + TCP6_LISTEN + TCP6_MAPPED + TCP6_GLOBAL)
    (net / "udp").write_text(UDP_HEADER + UDP_UNCONN)  # and no udp6: a host without IPv6
    ctx = Context(root=str(fake_proc.root))
    tables, _ = collect_into_rows(ctx, fake_proc.root.parent / "b.tar.gz", sockets.collect)
    rows = [(r["proto"], r["laddr"], r["lport"], r["raddr"], r["rport"], r["state"], r["pid"],
             r["source"], r["source_line"]) for r in tables["connections"]]
    assert rows == [
        ("tcp", "127.0.0.1", 35863, "0.0.0.0", 0, "LISTEN", 700, "/proc/net/tcp", 2),
        ("tcp", "127.0.0.1", 40830, "127.0.0.1", 35863, "ESTABLISHED", 700, "/proc/net/tcp", 3),
        ("tcp", "10.0.0.5", 54321, "34.216.184.93", 3333, "TIME_WAIT", None, "/proc/net/tcp", 4),
        ("tcp6", "::1", 8080, "::", 0, "LISTEN", 900, "/proc/net/tcp6", 2),
        ("tcp6", "127.0.0.1", 37613, "127.0.0.1", 57102, "ESTABLISHED", 900, "/proc/net/tcp6", 3),
        ("tcp6", "2001:db8::1", 443, "fe80::1:2", 50000, "ESTABLISHED", 900, "/proc/net/tcp6", 4),
        ("udp", "127.0.0.1", 46278, "0.0.0.0", 0, "UNCONN", 900, "/proc/net/udp", 2),
    ]
    errors = tables["errors"]
    assert len(errors) == 1 and errors[0]["source"] == "/proc/net/tcp"
    assert errors[0]["message"].startswith("skipped 3 malformed lines (first at line 5:")


def test_owners_from_the_processes_collector_are_reused(fake_proc: FakeProc) -> None:
    fake_proc.add(700, b"xmrig", sockets=(9593,))
    (fake_proc.proc / "net" / "tcp").write_text(TCP_HEADER + TCP_ESTAB)
    ctx = Context(root=str(fake_proc.root))
    processes.collect(ctx)
    assert getattr(ctx, sockets.OWNERS_ATTR) == {9593: 700}
    (fake_proc.proc / "700" / "fd" / "3").unlink()  # gone from fd/: only the remembered map knows
    tables, _ = collect_into_rows(ctx, fake_proc.root.parent / "b.tar.gz", sockets.collect)
    assert [r["pid"] for r in tables["connections"]] == [700]


def test_root_without_proc_emits_nothing(tmp_path: Path) -> None:
    ctx = Context(root=str(tmp_path))
    sockets.collect(ctx)
    assert ctx.counts == {}
    ctx.discard()


# -- live sockets of this test and its children ------------------------------------------------

def _find(live: LiveHost, **want: object) -> dict[str, object]:
    hits = [r for r in live.connections if all(r.get(k) == v for k, v in want.items())]
    assert len(hits) == 1, (want, hits)
    return hits[0]


def test_established_connection_has_the_child_pid(live_host: LiveHost) -> None:
    ports = live_host.facts["net_ports"]
    row = _find(live_host, proto="tcp", lport=ports["local"], rport=live_host.facts["listen_port"])
    assert row["pid"] == live_host.pids["net"]
    assert row["laddr"] == "127.0.0.1" and row["raddr"] == "127.0.0.1"
    assert row["state"] == "ESTABLISHED" and row["source"] == "/proc/net/tcp"
    assert isinstance(row["inode"], int) and row["inode"] > 0


def test_listen_and_udp_sockets_have_their_pids(live_host: LiveHost) -> None:
    ports = live_host.facts["net_ports"]
    mine = _find(live_host, proto="tcp", lport=live_host.facts["listen_port"], state="LISTEN")
    assert mine["pid"] == os.getpid() and mine["laddr"] == "127.0.0.1"
    child = _find(live_host, proto="tcp", lport=ports["listen"], state="LISTEN")
    assert child["pid"] == live_host.pids["net"] and child["raddr"] == "0.0.0.0"
    udp = _find(live_host, proto="udp", lport=ports["udp"])
    assert udp["pid"] == live_host.pids["net"] and udp["state"] == "UNCONN"
    if "listen6" in ports:
        v6 = _find(live_host, proto="tcp6", lport=ports["listen6"], state="LISTEN")
        assert v6["laddr"] == "::1" and v6["pid"] == live_host.pids["net"]
