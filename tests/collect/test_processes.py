"""The processes collector on real children of this test and on a fake /proc under --root."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deminer.collect import processes, procfs, sockets
from deminer.collect.bundle import Context, utc_iso
from deminer.scenarios.proc_tree import BTIME, PF_KTHREAD, FakeProc, stat_line
from tests.collect.conftest import (
    CLK_TCK,
    PAGE,
    PY,
    READY,
    SLEEP,
    SYSTEM_PYTHON,
    Children,
    LiveHost,
    bundle_rows,
    collect_into_rows,
    sha256_file,
)

SRC = str(Path(processes.__file__).parents[2])


# -- live children -----------------------------------------------------------------------------

def test_busy_child_uses_a_whole_cpu_and_idle_one_none(live_host: LiveHost) -> None:
    busy = live_host.procs[live_host.pids["busy"]]["cpu_percent"]
    share = live_host.facts["busy_share"]  # measured here around the whole collection
    if share >= 70:
        assert busy >= 50
    else:  # a machine too loaded to give it a CPU: the sample must still match what it got
        assert share * 0.5 - 5 <= busy <= share * 2 + 10, (busy, share)
    assert 0 < busy <= 110
    assert live_host.procs[live_host.pids["cat"]]["cpu_percent"] <= 10


def test_row_of_a_child_has_its_identity(live_host: LiveHost) -> None:
    row = live_host.procs[live_host.pids["weird"]]
    assert row["source"] == f"/proc/{row['pid']}"
    assert row["ppid"] == os.getpid()
    assert row["name"] == os.path.basename(PY)[:15]
    assert row["exe"] == os.path.realpath(PY)
    assert row["exe_deleted"] is False
    assert row["exe_sha256"] == sha256_file(os.path.realpath(PY))
    assert row["uid"] == os.getuid()
    assert row["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert row["cwd"] == live_host.facts["weird_cwd"]
    assert row["threads"] == 1
    assert 1 << 20 < row["rss"] < 1 << 30
    started = time.mktime(time.strptime(row["started"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(started - time.time()) < 120
    assert row["hidden"] is False and row["ld_preload"] is None


def test_cmdline_keeps_control_characters_and_escapes_bad_bytes(live_host: LiveHost) -> None:
    row = live_host.procs[live_host.pids["weird"]]
    args = [a.decode("utf-8", "backslashreplace") for a in live_host.facts["weird_args"]]
    assert row["cmdline"] == " ".join([PY, "-c", live_host.facts["weird_code"], *args])
    assert "\x1b[31mred\x07" in row["cmdline"] and "caf\\xe9" in row["cmdline"]


def test_deleted_renamed_binary_is_hashed_and_saved(live_host: LiveHost) -> None:
    row = live_host.procs[live_host.pids["deleted"]]
    assert row["name"] == "kswapd0"
    assert row["exe"] == live_host.facts["planted_path"]
    assert row["exe_deleted"] is True
    assert row["exe_sha256"] == live_host.facts["planted_sha256"]
    saved = live_host.files[row["exe_sha256"]]
    assert hashlib.sha256(saved).hexdigest() == row["exe_sha256"]


def test_binary_running_under_another_name_is_saved(live_host: LiveHost) -> None:
    row = live_host.procs[live_host.pids["renamed"]]
    assert row["name"] == "kworker/0:1"
    assert row["exe"] == os.path.realpath(shutil.which("sh") or "")
    assert row["exe_sha256"] == sha256_file(row["exe"])
    assert row["exe_sha256"] in live_host.files


def test_ordinary_binaries_are_hashed_not_saved(live_host: LiveHost) -> None:
    cat = live_host.procs[live_host.pids["cat"]]
    assert cat["exe"] == os.path.realpath("/usr/bin/cat")
    assert cat["exe_sha256"] == sha256_file("/usr/bin/cat")
    assert cat["exe_sha256"] not in live_host.files
    if "python3" not in live_host.pids:
        pytest.skip("needs /usr/bin/python3")
    # Started as python3, a symlink to python3.11: the name is the link's, not a masquerade.
    py = live_host.procs[live_host.pids["python3"]]
    assert py["name"] == "python3" and py["exe"] == os.path.realpath(SYSTEM_PYTHON)
    assert py["exe"] != SYSTEM_PYTHON
    assert py["exe_sha256"] == sha256_file(SYSTEM_PYTHON)
    assert py["exe_sha256"] not in live_host.files


def test_ld_preload_comes_from_the_environment(live_host: LiveHost) -> None:
    assert live_host.procs[live_host.pids["preload"]]["ld_preload"] == live_host.facts["preload"]
    assert live_host.procs[live_host.pids["busy"]]["ld_preload"] is None


def test_kernel_threads_are_kept_without_exe(live_host: LiveHost) -> None:
    try:
        st = processes.parse_stat(Path("/proc/2/stat").read_bytes())
    except OSError:
        st = None
    if st is None or not st.flags & PF_KTHREAD:
        pytest.skip("no kernel thread visible as pid 2 (pid namespace)")
    row = live_host.procs[2]
    assert row["exe"] == "" and row["exe_sha256"] is None and row["cmdline"] == ""


def test_clean_host_has_no_hidden_processes_and_few_errors(live_host: LiveHost) -> None:
    assert not [r["pid"] for r in live_host.procs.values() if r["hidden"]]
    assert os.getpid() in live_host.procs
    kinds = Counter(e["message"].split(" of ")[0] for e in live_host.errors)
    assert all(n == 1 for n in kinds.values()), kinds  # one row per kind of refusal


# -- hidden processes, live ------------------------------------------------------------------------

def _hiding(pid: int) -> Any:
    def lister(path: str) -> list[str]:
        names = os.listdir(path)
        return [n for n in names if n != str(pid)] if path == "/proc" else names
    return lister


THREADED = ("import threading, time\n"
            "t = threading.Thread(target=time.sleep, args=(300,), daemon=True); t.start()\n"
            "print('ready', t.native_id, flush=True)\n"
            "time.sleep(300)\n")


@pytest.mark.parametrize("how", ["libc_hook", "kernel_hook"])
def test_process_hidden_from_the_listing_is_found(tmp_path: Path, how: str) -> None:
    kids = Children()
    try:
        child = subprocess.Popen([PY, "-c", THREADED], stdout=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL)
        kids.procs.append(child)
        assert child.stdout is not None
        tid = int(child.stdout.readline().split()[1])
        hide = _hiding(child.pid)
        # libc_hook: readdir hides it, getdents64 still lists it (an ld.so.preload hider).
        # kernel_hook: both listings hide it; only stat('/proc/PID') answers (an LKM rootkit).
        raw = hide if how == "kernel_hook" else None
        ctx = Context(cpu_window=0, budget=60, max_file_bytes=0)  # hash only: quicker
        tables, _ = collect_into_rows(ctx, tmp_path / "b.tar.gz",
                                      lambda c: processes.collect(c, hide, raw))
    finally:
        kids.kill_all()
    rows = {r["pid"]: r for r in tables["processes"]}
    assert rows[child.pid]["hidden"] is True
    assert rows[child.pid]["threads"] == 2
    assert tid not in rows  # its thread answers stat too, but is not a process
    assert [p for p, r in rows.items() if r["hidden"]] == [child.pid]


def test_hidden_pid_far_above_every_listed_pid_is_found(fake_proc: FakeProc) -> None:
    """A miner started after many short-lived processes sits far above every listed pid;
    the newest pid the kernel handed out (loadavg's last field) still bounds the probe."""
    far = 1 + 3 * procfs.PROBE_MARGIN
    fake_proc.add(1, b"systemd", exe="/usr/lib/systemd/systemd", ppid=0)
    fake_proc.add(far, b"kdevtmpfsi", exe="/tmp/.x/kdevtmpfsi (deleted)")
    (fake_proc.proc / "loadavg").write_text(f"3.10 2.90 2.50 3/180 {far + 7}\n")

    def hide(path: str) -> list[str]:
        return [n for n in os.listdir(path) if n != str(far)]

    ctx = Context(root=str(fake_proc.root))
    tables, _ = collect_into_rows(ctx, fake_proc.root.parent / "b.tar.gz",
                                  lambda c: processes.collect(c, hide, hide))
    assert {r["pid"] for r in tables["processes"] if r["hidden"]} == {far}


def test_getdents_lists_a_folder_like_listdir(tmp_path: Path) -> None:
    if procfs.getdents_listdir(str(tmp_path)) is None:
        pytest.skip("no getdents64 via ctypes on this machine")
    folder = os.fsencode(tmp_path)
    # ~220 bytes per record: 600 of them take three 64 KiB getdents64 calls.
    names = [b"f%05d-%s" % (i, b"x" * 200) for i in range(600)]
    names += [b"caf\xe9", b"new\nline", b"\x1b[2J", b".hidden"]
    for name in names:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_WRONLY))
    got = procfs.getdents_listdir(str(tmp_path))
    assert got is not None and sorted(got) == sorted(os.listdir(tmp_path))
    assert len(got) == len(names)
    proc = procfs.getdents_listdir("/proc")
    assert proc is not None and str(os.getpid()) in proc


# -- without root --------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
                    reason="needs root (to run the collector as nobody) and /usr/bin/python3")
def test_unprivileged_run_reports_each_refusal_once() -> None:
    kids = Children()
    out_dir = tempfile.mkdtemp(prefix="deminer-nobody-")
    os.chown(out_dir, 65534, 65534)
    code = (f"import sys; sys.path.insert(0, {SRC!r})\n"
            "from deminer.collect.bundle import Context\n"
            "from deminer.collect import processes, sockets\n"
            "ctx = Context(cpu_window=0.2, budget=60)\n"
            "processes.collect(ctx); sockets.collect(ctx)\n"
            f"ctx.write_bundle({out_dir + '/b.tar.gz'!r})\n")
    try:
        root_child = kids.start([PY, "-c", READY + SLEEP])
        # The system Python also shows the collector runs on an interpreter other than the venv's.
        run = subprocess.run([SYSTEM_PYTHON, "-B", "-c", code], user=65534, group=65534,
                             extra_groups=[], capture_output=True, timeout=60, check=False,
                             cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        tables, _ = bundle_rows(Path(out_dir) / "b.tar.gz")
    finally:
        kids.kill_all()
        shutil.rmtree(out_dir, ignore_errors=True)
    row = {r["pid"]: r for r in tables["processes"]}[root_child.pid]
    assert row["name"] == "python" and row["user"] == "root" and row["exe"] is None
    assert row["cmdline"].startswith(PY)  # cmdline and stat stay readable for other users
    messages = [e["message"] for e in tables["errors"]]
    environ = [m for m in messages if m.startswith("cannot read environ of")]
    assert len(environ) == 1, messages
    assert "not running as root" in environ[0] and "Permission denied" in environ[0]
    assert int(environ[0].split()[4]) >= 2
    assert all(n == 1 for n in Counter(m.split(" of ")[0] for m in messages).values()), messages


# -- a fake /proc under --root ---------------------------------------------------------------------

def test_fake_tree(fake_proc: FakeProc) -> None:
    fake_proc.file("/etc/passwd",
                   b"root:x:0:0:root:/root:/bin/bash\nm\xe9chant:x:1001:1001::/home/m:/bin/sh\n")
    systemd = fake_proc.file("/usr/lib/systemd/systemd", b"\x7fELF systemd")
    miner = fake_proc.file("/usr/bin/miner", b"\x7fELF xmrig " + bytes(range(256)))
    fake_proc.add(1, b"systemd", cmdline=[b"/sbin/init"], exe="/usr/lib/systemd/systemd", ppid=0)
    fake_proc.add(2, b"kthreadd", ppid=0, flags=PF_KTHREAD | 0x40, cwd="/")
    fake_proc.add(200, b"(sd-pam) x)", uid=1001, cmdline=[b"./kdevtmpfsi", b"-o", b"pool:3333"],
             environ=[b"HOME=/home/m", b"LD_PRELOAD=/usr/lib/libhide.so"],
             exe="/tmp/.x/kdevtmpfsi (deleted)", cwd="/home/m", sockets=(4242,), tasks=(200, 201),
             threads=2, starttime=12345, rss_pages=3000)
    fake_proc.add(201, b"(sd-pam) x)", tgid=200)  # its thread, answering stat like any pid
    fake_proc.add(202, b"(sd-pam) x)", tgid=200, tasks=())  # a thread born after the task listing
    fake_proc.add(300, b"kworker", cmdline=[b"[kworker/0:1]"], exe="/usr/bin/miner")
    fake_proc.add(400, b"sshd", exe="/usr/sbin/sshd")
    fake_proc.add(500, b"junk")
    (fake_proc.proc / "500" / "stat").write_bytes(b"\x00\xff\xfe garbage without fields")
    (fake_proc.root / "etc" / "shadow").symlink_to("/etc/passwd")  # would lead out of the root
    fake_proc.add(600, b"shadow", exe="/etc/shadow")

    def listdir(path: str) -> list[str]:
        names = os.listdir(path)
        return [n for n in names if n not in ("201", "202", "300", "400")] \
            if path == str(fake_proc.proc) else names

    def raw_listdir(path: str) -> list[str]:
        names = os.listdir(path)
        return [n for n in names if n not in ("201", "300")] if path == str(fake_proc.proc) else names

    ctx = Context(root=str(fake_proc.root))
    tables, files = collect_into_rows(ctx, fake_proc.root.parent / "b.tar.gz",
                                      lambda c: processes.collect(c, listdir, raw_listdir))
    rows = {r["pid"]: r for r in tables["processes"]}
    assert sorted(rows) == [1, 2, 200, 300, 400, 600]
    assert {p for p, r in rows.items() if r["hidden"]} == {300, 400}
    r = rows[200]
    assert r["name"] == "(sd-pam) x)" and r["ppid"] == 1
    assert r["exe"] == "/tmp/.x/kdevtmpfsi" and r["exe_deleted"] is True and r["exe_sha256"] is None
    assert r["user"] == "m\\xe9chant" and r["uid"] == 1001
    assert r["ld_preload"] == "/usr/lib/libhide.so"
    assert r["cmdline"] == "./kdevtmpfsi -o pool:3333" and r["cwd"] == "/home/m"
    assert r["started"] == utc_iso(BTIME + 12345 / CLK_TCK)
    assert r["rss"] == 3000 * PAGE and r["threads"] == 2
    assert r["cpu_percent"] is None  # no sampling of a tree that is not the live /proc
    assert rows[2]["exe"] == "" and rows[2]["name"] == "kthreadd"
    assert rows[1]["exe_sha256"] == sha256_file(systemd) and rows[1]["user"] == "root"
    assert rows[1]["exe_sha256"] not in files  # named after its binary, in a normal place
    assert rows[300]["exe_sha256"] == sha256_file(miner) in files  # "kworker" is not "miner"
    assert rows[600]["exe"] == "/etc/shadow" and rows[600]["exe_sha256"] is None
    assert getattr(ctx, sockets.OWNERS_ATTR) == {4242: 200}
    errors = tables["errors"]
    assert [(e["source"], "malformed" in e["message"]) for e in errors] == [("/proc/500/stat", True)]


def test_fake_tree_hashes_each_binary_once_and_caps_what_it_saves(
        fake_proc: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = fake_proc.file("/usr/bin/worker", b"\x7fELF worker")
    big = fake_proc.file("/dev/shm/big", b"\x7fELF" + b"\0" * 5000)
    odd = fake_proc.file(os.fsdecode(b"/opt/caf\xe9/run"), b"\x7fELF run")
    for pid in range(1000, 1040):
        fake_proc.add(pid, b"worker", cmdline=[b"/usr/bin/worker"], exe="/usr/bin/worker")
    fake_proc.add(1400, b"big", exe="/dev/shm/big")
    fake_proc.add(1401, b"run", exe=os.fsdecode(b"/opt/caf\xe9/run"), cwd=os.fsdecode(b"/home/\xff\x1b[2J"))
    hashed: list[str] = []
    real_sha256 = processes._sha256

    def spy(path: str) -> str:
        hashed.append(path)
        return real_sha256(path)

    monkeypatch.setattr(processes, "_sha256", spy)
    ctx = Context(root=str(fake_proc.root), max_file_bytes=4096)
    tables, files = collect_into_rows(ctx, fake_proc.root.parent / "b.tar.gz", processes.collect)
    rows = {r["pid"]: r for r in tables["processes"]}
    assert len(rows) == 42
    assert {rows[p]["exe_sha256"] for p in range(1000, 1040)} == {sha256_file(worker)}
    assert hashed.count(str(worker)) == 1  # 40 processes, one binary: read once
    assert rows[1400]["exe_sha256"] == sha256_file(big)  # in /dev/shm, but over the cap:
    assert rows[1400]["exe_sha256"] not in files  # hashed, not saved
    assert not files
    assert rows[1401]["exe"] == "/opt/caf\\xe9/run" and rows[1401]["cwd"] == "/home/\\xff\x1b[2J"
    assert rows[1401]["exe_sha256"] == sha256_file(odd)


def test_live_proc_with_files_from_a_tree(tmp_path: Path) -> None:
    """``--root TREE --proc /proc``: live processes, user names from the tree's passwd."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(f"treeuser:x:{os.getuid()}:0::/:/bin/sh\n")
    ctx = Context(root=str(tmp_path), proc_root="/proc", cpu_window=0.2, max_file_bytes=0)
    tables, _ = collect_into_rows(ctx, tmp_path / "b.tar.gz", processes.collect)
    me = {r["pid"]: r for r in tables["processes"]}[os.getpid()]
    assert me["user"] == "treeuser" and me["exe"] == os.path.realpath(sys.executable)
    assert me["exe_sha256"] == sha256_file(me["exe"]) and me["cpu_percent"] is not None


def test_root_without_proc_emits_nothing(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    ctx = Context(root=str(tmp_path))
    processes.collect(ctx)
    assert ctx.counts == {}
    ctx.discard()


def test_parse_stat_handles_hostile_names_and_junk() -> None:
    st = processes.parse_stat(stat_line(7, b") S 1 (x", ppid=3, ticks=(5, 6)))
    assert st is not None and st.comm == b") S 1 (x" and st.ppid == 3 and st.ticks == 11
    for junk in (b"", b"7 (x", b"7 (x) S 1", b"\xff" * 100, stat_line(7, b"x")[:60]):
        assert processes.parse_stat(junk) is None


@given(st.binary(max_size=15).filter(lambda b: b"\0" not in b), st.integers(0, 2**31))
def test_parse_stat_reads_back_any_name(comm: bytes, ppid: int) -> None:
    st_ = processes.parse_stat(stat_line(9, comm, ppid=ppid))
    assert st_ is not None and st_.comm == comm and st_.ppid == ppid


@given(st.binary(max_size=400))
def test_parse_stat_never_raises(data: bytes) -> None:
    processes.parse_stat(data)


def test_problems_fold_many_refusals_into_one_row(tmp_path: Path) -> None:
    ctx = Context(root=str(tmp_path))
    problems = processes.Problems()
    for pid in range(100, 400):
        problems.add("environ", pid, PermissionError(13, "Permission denied"))
        problems.add("exe", pid, FileNotFoundError(2, "No such file or directory"))  # races
    problems.flush(ctx)
    ctx.write_bundle(str(tmp_path / "b.tar.gz"))
    errors = bundle_rows(tmp_path / "b.tar.gz")[0]["errors"]
    assert len(errors) == 1 and errors[0]["source"] == "/proc/*/environ"
    assert errors[0]["message"].startswith("cannot read environ of 300 processes (pid 100, 101")
