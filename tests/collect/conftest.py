"""Real processes for the collector tests: children started here, collected once, then killed.

``live_host`` starts a handful of children that each carry one trait a responder looks for
(a busy loop, a deleted and renamed binary, a self-renamed shell, LD_PRELOAD, hostile
command-line bytes, TCP and UDP sockets), runs the processes and sockets collectors once over
the real /proc and hands back the rows read from the written bundle. Every child is killed by
its pid in ``finally`` right after the collection, before any test looks at the rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deminer.collect import processes, sockets
from deminer.collect.bundle import Context
from deminer.scenarios.proc_tree import FakeProc

PY = sys.executable
SLEEP = "import time; time.sleep(300)"
READY = "print('ready', flush=True); "
SYSTEM_PYTHON = "/usr/bin/python3"


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class BundleReader:
    """A written bundle in memory: every member's bytes and the rows of each table."""

    def __init__(self, path: Path) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.members: dict[str, bytes] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                fh = tar.extractfile(member)
                if fh is not None:
                    self.members[member.name] = fh.read()
        for name, data in self.members.items():
            if name.startswith("tables/"):
                self.tables[name[len("tables/"):-len(".jsonl")]] = [json.loads(x) for x in data.splitlines()]

    def errors(self) -> list[tuple[str, str]]:
        return [(r["source"], r["message"]) for r in self.tables.get("errors", [])]


def bundle_rows(bundle: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bytes]]:
    """Rows per table and saved files (``files/<sha256>`` -> content) of a written bundle."""
    tables: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, bytes] = {}
    with tarfile.open(bundle) as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            if fh is None:
                continue
            if member.name.startswith("tables/"):
                name = member.name[len("tables/"):-len(".jsonl")]
                tables[name] = [json.loads(line) for line in fh.read().splitlines()]
            elif member.name.startswith("files/"):
                files[member.name[len("files/"):]] = fh.read()
    return tables, files


def collect_into_rows(ctx: Context, out: Path, *collectors: Any
                      ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bytes]]:
    for func in collectors:
        func(ctx)
    ctx.write_bundle(str(out))
    try:
        return bundle_rows(out)
    finally:
        out.unlink()  # it holds copies of whatever suspicious binaries run on this machine


class Children:
    """Processes started by a test; ``kill_all`` ends each one by its own pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[Any], ready: bool = True, **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, **kw)
        self.procs.append(proc)
        if ready:
            line = proc.stdout.readline() if proc.stdout else b""
            assert line.startswith(b"ready"), f"child {args[:1]} did not start: {line!r}"
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, 9)
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def wait_exec(pid: int, path: str, timeout: float = 5.0) -> None:
    """Wait until ``pid`` runs ``path`` (after fork, before exec it is still Python)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if os.readlink(f"/proc/{pid}/exe") == path:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{pid} never ran {path}")


def cpu_ticks(pid: int) -> tuple[float, int]:
    """(now, utime + stime) of ``pid``, read independently of the collector."""
    fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    return time.monotonic(), int(fields[11]) + int(fields[12])


@dataclass
class LiveHost:
    pids: dict[str, int]
    procs: dict[int, dict[str, Any]]
    connections: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    files: dict[str, bytes]
    facts: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def live_host(tmp_path_factory: pytest.TempPathFactory) -> LiveHost:
    if not os.path.isdir("/proc/self") or sys.platform != "linux":
        pytest.skip("needs a Linux /proc")
    tmp = tmp_path_factory.mktemp("live")
    kids = Children()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    pids: dict[str, int] = {}
    facts: dict[str, Any] = {}
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(30)  # a child that cannot connect fails the test, not hangs it
        port = listener.getsockname()[1]
        facts["listen_port"] = port
        pids["busy"] = kids.start([PY, "-c", READY + "\nwhile True: pass"]).pid
        with contextlib.suppress(OSError):  # keeps it busy on a loaded, shared test machine
            os.setpriority(os.PRIO_PROCESS, pids["busy"], -10)
        # A copied binary under a kernel-thread-like name, deleted once it runs.
        planted = tmp / "kswapd0"
        shutil.copy2("/usr/bin/sleep", planted)
        facts["planted_sha256"] = sha256_file(planted)
        facts["planted_path"] = str(planted)
        masq = kids.start([str(planted), "300"], ready=False)
        wait_exec(masq.pid, str(planted))
        planted.unlink()
        pids["deleted"] = masq.pid
        pids["cat"] = kids.start(["cat"], ready=False, stdin=subprocess.PIPE).pid
        # A shell that renames itself the way miners do (prctl or /proc/self/comm).
        rename = "printf 'kworker/0:1' > /proc/$$/comm; echo ready; read x"
        pids["renamed"] = kids.start(["sh", "-c", rename], stdin=subprocess.PIPE).pid
        if os.path.exists(SYSTEM_PYTHON):
            # Named python3, running python3.11 through the symlink: not a masquerade.
            pids["python3"] = kids.start([SYSTEM_PYTHON, "-c", READY + SLEEP]).pid
        facts["preload"] = str(tmp / "no-such-dir" / "libprocesshider.so")
        env = dict(os.environ, LD_PRELOAD=facts["preload"])
        pids["preload"] = kids.start([PY, "-c", READY + SLEEP], env=env).pid
        facts["weird_args"] = [b"\x1b[31mred\x07", b"caf\xe9", b"two words", b"tab\there"]
        facts["weird_code"] = READY + SLEEP
        pids["weird"] = kids.start([PY, "-c", facts["weird_code"], *facts["weird_args"]],
                                   cwd=tmp).pid
        facts["weird_cwd"] = str(tmp)
        net_code = (
            "import socket, sys, json, time\n"
            "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
            "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))\n"
            "ports = {'local': c.getsockname()[1], 'listen': l.getsockname()[1],\n"
            "         'udp': u.getsockname()[1]}\n"
            "try:\n"
            "    l6 = socket.socket(socket.AF_INET6); l6.bind(('::1', 0)); l6.listen(1)\n"
            "    ports['listen6'] = l6.getsockname()[1]\n"
            "except OSError:\n"
            "    pass\n"
            "print('ready', json.dumps(ports), flush=True)\n"
            "time.sleep(300)\n")
        net = subprocess.Popen([PY, "-c", net_code, str(port)], stdout=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
        kids.procs.append(net)
        accepted.append(listener.accept()[0])
        assert net.stdout is not None
        facts["net_ports"] = json.loads(net.stdout.readline().split(b" ", 1)[1])
        pids["net"] = net.pid
        # 1 MiB: enough for the planted binaries, and no copies of this machine's big ones.
        ctx = Context(cpu_window=0.7, budget=60, max_file_bytes=1 << 20)
        before = cpu_ticks(pids["busy"])
        tables, files = collect_into_rows(ctx, tmp / "bundle.tar.gz", processes.collect,
                                          sockets.collect)
        after = cpu_ticks(pids["busy"])
        # What the busy child really got around the collection, to judge a loaded machine.
        facts["busy_share"] = (after[1] - before[1]) * 100.0 / CLK_TCK / (after[0] - before[0])
    finally:
        # Killed as soon as they are collected: the busy one must not burn a CPU for the rest
        # of the session.
        kids.kill_all()
        for s in accepted:
            s.close()
        listener.close()
    return LiveHost(pids=pids, procs={r["pid"]: r for r in tables.get("processes", [])},
                    connections=tables.get("connections", []),
                    errors=tables.get("errors", []), files=files, facts=facts)


CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def fake_proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "host")
