"""`deminer scan` end to end: a real (stand-in) miner process plus an infected host tree.

The miner is our own C program (tests/e2e/miner.c) that speaks XMRig's Stratum login to a
pool this test runs on 127.0.0.1, burns a CPU, and runs from a hidden tmp folder under a
masquerading name with its file deleted after start. Files come from a generated host tree
(``--root``) and processes from the live /proc (``--proc /proc``), so nothing of the real
host's cron, systemd, users or keys is touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deminer.cli import main
from deminer.scenarios import demo_host, linux_host
from deminer.scenarios.auth_log import AuthLog
from tests.stratum_pool import StratumPool

HERE = Path(__file__).parent
ATTACKER_IP = "203.0.113.50"
POOL_PORTS = (3333, 5555, 7777, 14444, 45700)
LOG_START = dt.datetime(2024, 3, 2, 1, 0)


@pytest.fixture(scope="module")
def miner_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler to build the stand-in miner")
    out = tmp_path_factory.mktemp("build") / "miner"
    subprocess.run([cc, "-O1", "-o", str(out), str(HERE / "miner.c")], check=True, timeout=120)
    return out


def _auth_log(tree: Path, attack: bool) -> None:
    log = AuthLog(host=linux_host.HOSTNAME, start=LOG_START)
    log.benign_login("admin", "192.0.2.10")
    if attack:
        log.brute_force(ATTACKER_IP, ["root", "admin", "test", "oracle"], attempts=60,
                        success_user="root")
    log.benign_login("admin", "192.0.2.10")
    path = tree / "var/log/auth.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log.write(path)
    stamp = (LOG_START + dt.timedelta(days=1)).replace(tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))


@pytest.fixture
def running_miner(tmp_path: Path, miner_binary: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The stand-in miner, logged in to the loopback pool, its binary already deleted."""
    hidden = tmp_path / "tmp" / ".ICE-unix"
    hidden.mkdir(parents=True)
    exe = hidden / "kdevtmpfsi"
    shutil.copy2(miner_binary, exe)
    with StratumPool(POOL_PORTS) as pool:
        proc = subprocess.Popen([str(exe), "-o", f"127.0.0.1:{pool.port}", "-u", linux_host.WALLET,
                                 "--donate-level", "1", "--cpu-max-threads-hint", "75", "-a", "rx/0"])
        try:
            assert pool.logged_in.wait(15), "the stand-in miner never logged in"
            assert pool.logins[0]["login"] == linux_host.WALLET
            exe.unlink()
            yield proc, pool.port, exe
        finally:
            proc.kill()
            proc.wait()


def _scan(tmp_path: Path, tree: Path, proc: str = "/proc") -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / "findings.jsonl"
    rc = main(["scan", "--root", str(tree), "--proc", proc, "--case", str(tmp_path / "case"),
               "--cpu-window", "2", "--jsonl", str(out), "--quiet"])
    return rc, [json.loads(line) for line in out.read_text().splitlines()]


def _where(findings: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["rule"] == rule]


def test_scan_names_miner_persistence_key_and_brute_force(
        tmp_path: Path, running_miner: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, port, exe = running_miner
    tree = linux_host.write_infected_host(tmp_path / "host")
    _auth_log(tree, attack=True)
    rc, findings = _scan(tmp_path, tree)
    assert rc == 1

    # The miner: by pid, with its deleted exe, the pool connection and its CPU.
    miner = [f for f in _where(findings, "impact.miner_process") if f["evidence"]["pid"] == proc.pid]
    assert len(miner) == 1, [f["summary"] for f in findings if "pid" in f["entity"]]
    ev = miner[0]["evidence"]
    assert ev["exe"] == str(exe) and ev["exe_deleted"] is True
    assert f"127.0.0.1:{port} ESTABLISHED" in ev["connections"]
    assert miner[0]["severity"] == "critical"
    deleted = [f for f in _where(findings, "defense_evasion.deleted_running_exe")
               if f["evidence"].get("pid") == proc.pid]
    assert deleted and deleted[0]["evidence"].get("exe_sha256")
    # It burns a CPU; how much of one it gets depends on what else the machine runs, so the
    # hog rule's 80% threshold is checked by the rule's own examples, not here.
    assert ev["cpu_percent"] is not None and ev["cpu_percent"] > 10
    hog = [f for f in _where(findings, "impact.cpu_hog") if f["evidence"].get("pid") == proc.pid]
    assert all(f["severity"] == "high" for f in hog)  # raised: the hog is a known miner

    # Every planted persistence item is named with its file and line.
    named = {(f["evidence"].get("location"), f["evidence"].get("line")) for f in findings}
    named |= {tuple(f["entity"].rsplit(":", 1)) for f in findings if ":" in f["entity"]}
    named |= {(f["entity"], None) for f in findings}
    missing = [e for e in linux_host.INFECTED_ENTRIES
               if (e[1], e[2]) not in named and (e[1], str(e[2])) not in named]
    assert not missing, missing

    # The attacker's key.
    keys = _where(findings, "persistence.attacker_authorized_key")
    assert any(linux_host.ATTACKER_KEY_COMMENT in json.dumps(f["evidence"]) for f in keys)

    # The brute force, with source IP and the cracked account.
    cracked = _where(findings, "initial_access.ssh_brute_force_success")
    assert len(cracked) == 1
    assert cracked[0]["entity"].startswith(ATTACKER_IP) or ATTACKER_IP in json.dumps(cracked[0])
    assert cracked[0]["evidence"]["user.name"] == "root" and cracked[0]["severity"] == "critical"


def test_clean_host_reports_nothing_above_low(tmp_path: Path) -> None:
    # The clean host's processes come from its own /proc tree: this machine's live processes
    # are not a controlled clean host (sandbox tools here run from deleted memfd binaries).
    tree = demo_host.write_clean_demo_host(tmp_path / "host")
    rc, findings = _scan(tmp_path, tree, proc=str(tree / "proc"))
    loud = [(f["rule"], f["severity"], f["summary"]) for f in findings
            if f["severity"] not in ("info", "low")]
    assert not loud
    assert rc == 0


def test_demo_host_is_found_whole(tmp_path: Path) -> None:
    """The demo host's miners come from its /proc tree, with the pool socket."""
    tree = demo_host.write_demo_host(tmp_path / "host")
    rc, findings = _scan(tmp_path, tree, proc=str(tree / "proc"))
    assert rc == 1
    miners = {f["evidence"]["pid"]: f for f in _where(findings, "impact.miner_process")}
    assert set(miners) == {4242, 4250}
    assert f"{demo_host.POOL_IP}:3333 ESTABLISHED" in miners[4242]["evidence"]["connections"]
    assert miners[4242]["evidence"]["exe_deleted"] is True
    cracked = _where(findings, "initial_access.ssh_brute_force_success")
    assert [(f["evidence"]["user.name"], f["evidence"]["source.ip"]) for f in cracked] == [
        ("root", demo_host.ATTACKER_IP)]
