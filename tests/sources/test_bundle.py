"""The bundle source, on bundles written by the real collector context (and then tampered with)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strat

from deminer.case import Case
from deminer.collect.bundle import Context
from deminer.scenarios.auth_log import AuthLog
from deminer.sources import SOURCES, bundle
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest, pick_source

Row = dict[str, Any]
MINER = b"\x7fELF fake xmrig build for tests " * 64


def host_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("Web1\n")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    (root / "etc/os-release").write_text('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (root / "var/log").mkdir(parents=True)
    log = AuthLog(host="web1", start=dt.datetime(2024, 3, 30, 15, 0))
    log.brute_force("203.0.113.7", ["root"], attempts=30, success_user="root")
    log.write(root / "var/log/auth.log")
    old = AuthLog(host="web1", start=dt.datetime(2024, 3, 20, 9, 0))
    old.benign_login("alice", "192.0.2.10")
    old.write(root / "var/log/auth.log.1.gz", gz=True)
    (root / "tmp/.x").mkdir(parents=True)
    (root / "tmp/.x/kswapd0").write_bytes(MINER)


def make_bundle(tmp_path: Path, name: str = "web1.tar.gz") -> Path:
    root = tmp_path / "root"
    if not root.exists():
        host_tree(root)
    ctx = Context(root=str(root), budget=30)
    digest = ctx.save_file(ctx.path("/tmp/.x/kswapd0"))
    ctx.emit("processes", {"pid": 4242, "ppid": 1, "name": "kswapd0", "exe": "/tmp/.x/kswapd0",
                           "cmdline": "/tmp/.x/kswapd0 -o pool.example:3333", "cpu_percent": 98.5,
                           "exe_sha256": digest, "exe_deleted": False, "not_a_column": "dropped",
                           "host": "forged-host"})
    ctx.emit("persistence", {"kind": "cron", "location": "/var/spool/cron/crontabs/root",
                             "source_line": 1, "command": "* * * * * /tmp/.x/kswapd0"})
    for log in ("/var/log/auth.log", "/var/log/auth.log.1.gz"):
        ctx.copy_raw(ctx.path(log))
        # Context.copy_raw does not keep the log's mtime yet (asked for); the year of
        # "Mar 30 15:00:00" lines depends on it, so do what it should do.
        mtime = os.stat(ctx.path(log)).st_mtime
        os.utime(os.path.join(ctx.stage, "raw", log.lstrip("/")), (mtime, mtime))
    ctx.error("/proc/1/environ", "cannot read: Permission denied")
    out = tmp_path / name
    ctx.write_bundle(str(out))
    return out


def parse(path: Path, workdir: Path, host: str | None = None) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    ctx = SourceContext(path=path, display=path.name, host=host, workdir=workdir)
    for table, batch in bundle.SOURCE.parse(ctx):
        # columnar sources (the auth log) hand over Arrow tables
        out.setdefault(table, []).extend(batch if isinstance(batch, list) else batch.to_pylist())
    return out


def members_of(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()]


def rewrite(src: Path, dst: Path, edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> Path:
    """Copy a bundle member by member, letting ``edit`` change the list first."""
    members = members_of(src)
    edit(members)
    with tarfile.open(dst, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return dst


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mtime = kind, link, 1_700_000_000
    return t


def errors_of(rows: dict[str, list[Row]]) -> list[str]:
    return [e["message"] for e in rows.get("errors", []) if e["stage"] == "ingest"]


def test_a_collected_bundle_becomes_tables_files_and_log_events(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    head = path.read_bytes()[:65536]
    assert bundle.sniff(path, head) and pick_source(path, head, SOURCES) is bundle.SOURCE
    work = tmp_path / "case"
    rows = parse(path, work)
    (host,) = rows["hosts"]
    assert host["host"] == "web1" and host["hostname"] == "web1"
    assert host["os"] == "Debian GNU/Linux 12 (bookworm)" and host["machine_id"] == "0123456789abcdef"
    assert host["collected_at"].endswith("Z") and host["collector_version"] and host["source"] == path.name
    (proc,) = rows["processes"]
    assert proc["host"] == "web1" and proc["pid"] == 4242 and "not_a_column" not in proc
    assert rows["persistence"][0]["command"] == "* * * * * /tmp/.x/kswapd0"
    digest = hashlib.sha256(MINER).hexdigest()
    assert proc["exe_sha256"] == digest and (work / "files" / digest).read_bytes() == MINER
    extracted = work / "raw" / "web1" / "var/log/auth.log"
    original = tmp_path / "root/var/log/auth.log"
    assert extracted.read_bytes() == original.read_bytes()
    assert int(extracted.stat().st_mtime) == int(original.stat().st_mtime)   # the tar's mtime
    events = rows["events"]
    assert {e["host"] for e in events} == {"web1"}
    assert {e["source"] for e in events} == {"/var/log/auth.log", "/var/log/auth.log.1.gz"}
    ok = sorted((e["user"], e["src_ip"], e["ts"]) for e in events if e["event"] == "logon_success")
    assert [(u, ip) for u, ip, _ in ok] == [("alice", "192.0.2.10"), ("root", "203.0.113.7")]
    assert all(ts.year == 2024 for _, _, ts in ok)       # year from the log's mtime in the bundle
    assert sum(e["count"] for e in events if e["event"] == "logon_failure") == 30
    collect_errors = [e for e in rows["errors"] if e["stage"] == "collect"]
    assert [(e["source"], e["message"], e["host"]) for e in collect_errors] == [
        ("/proc/1/environ", "cannot read: Permission denied", "web1")]
    assert not errors_of(rows)
    inputs = {r["path"]: r for r in rows["inputs"]}
    assert inputs[f"{path.name}:raw/var/log/auth.log.1.gz"]["kind"] == "auth_log"
    assert all(r["rows"] > 0 and len(r["sha256"]) == 64 for r in inputs.values())


def test_ingest_stores_a_bundle_and_shares_files_between_bundles(tmp_path: Path) -> None:
    first = make_bundle(tmp_path, "a.tar.gz")
    second = make_bundle(tmp_path, "b.tar.gz")
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [first, second], host="Override")
        assert summary.files == 2 and not summary.errors
        assert case.query("SELECT DISTINCT host FROM events") == [{"host": "override"}]
        assert case.count("hosts") == 2 and case.count("processes") == 2
        assert case.query("SELECT count(*) AS n FROM events WHERE event = 'logon_success'")[0]["n"] == 4
        kinds = case.query("SELECT kind, count(*) AS n FROM inputs GROUP BY kind ORDER BY kind")
        assert kinds == [{"kind": "auth_log", "n": 4}, {"kind": "bundle", "n": 2}]
    files = list((tmp_path / "case/evidence/files").iterdir())
    assert [f.name for f in files] == [hashlib.sha256(MINER).hexdigest()]


def test_hostile_members_are_never_extracted(tmp_path: Path) -> None:
    good = make_bundle(tmp_path)

    def add_evil(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        members += [
            (info("raw/var/log/evil", tarfile.SYMTYPE, "/etc/shadow"), b""),
            (info("raw/var/log/hard", tarfile.LNKTYPE, "manifest.json"), b""),
            (info("/tmp/deminer-test-absolute"), b"pwned"),
            (info("raw/../../../deminer-test-escape"), b"pwned"),
            (info("files/../../deminer-test-escape2"), b"pwned"),
            (info("raw/dev/sda", tarfile.BLKTYPE), b""),
            (info("raw/run/fifo", tarfile.FIFOTYPE), b""),
            (info("raw/var/log/extra\x1b[2J.log"), b"not in the manifest\n"),
            (info("raw/var/log/inner.tar.gz"), good.read_bytes()),     # no bundles in bundles
        ]

    path = rewrite(good, tmp_path / "evil.tar.gz", add_evil)
    work = tmp_path / "case"
    rows = parse(path, work)
    errors = errors_of(rows)
    for name, why in [("raw/var/log/evil", "is a link"), ("raw/var/log/hard", "is a link"),
                      ("/tmp/deminer-test-absolute", "absolute path"),
                      ("raw/../../../deminer-test-escape", "'..'"),
                      ("files/../../deminer-test-escape2", "'..'"),
                      ("raw/dev/sda", "device or FIFO"), ("raw/run/fifo", "device or FIFO"),
                      ("raw/var/log/extra\x1b[2J.log", "not listed in the manifest")]:
        assert any(repr(name) in e and why in e for e in errors), (name, errors)
    assert not any(p.name.startswith("deminer-test-") for p in tmp_path.rglob("*"))
    assert not Path("/tmp/deminer-test-absolute").exists()
    assert not any(p.is_symlink() for p in work.rglob("*"))
    assert (work / "raw/web1/var/log/extra\x1b[2J.log").exists()        # unverified but harmless
    assert rows["events"] and rows["processes"]                             # the rest still works
    inner = next(r for r in rows["inputs"] if r["path"].endswith("inner.tar.gz"))
    assert inner["kind"] == "unrecognised"


def test_tampered_and_broken_members_are_reported(tmp_path: Path) -> None:
    def tamper(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        for i, (m, data) in enumerate(members):
            if m.name == "tables/processes.jsonl":
                row = json.loads(data)
                row["cmdline"] = "/usr/sbin/nginx"                     # hide the miner
                members[i] = (m, json.dumps(row).encode() + b"\n{broken\n[1]\n" + data)
            if m.name.startswith("files/"):
                members[i] = (m, data + b"appended")
        members.append((info("tables/bogus.jsonl"), b'{"a": 1}\n'))
        members.append((info("tables/findings.jsonl"), b'{"rule": "x"}\n'))
        members.append((info("files/" + "0" * 64), b"content that is not named by its hash"))
        members.append((info("files/not-a-hash"), b"x"))
        members.append(members[-4])                                     # a duplicate member

    path = rewrite(make_bundle(tmp_path), tmp_path / "t.tar.gz", tamper)
    work = tmp_path / "case"
    rows = parse(path, work)
    errors = errors_of(rows)

    def has(*parts: str) -> bool:
        return any(all(p in e for p in parts) for e in errors)

    assert has("'tables/processes.jsonl'", "does not match its sha256 in the manifest")
    assert has("'tables/processes.jsonl'", "2 line(s) are not JSON objects (first at line 2)")
    assert [p["cmdline"] for p in rows["processes"]] == [
        "/usr/sbin/nginx", "/tmp/.x/kswapd0 -o pool.example:3333"]
    assert has("'tables/bogus.jsonl'", "not a table a bundle may carry")
    assert has("'tables/findings.jsonl'", "not a table a bundle may carry") and "findings" not in rows
    digest = hashlib.sha256(MINER).hexdigest()
    assert has(f"'files/{digest}'", "not its name; not stored")
    assert not (work / "files" / digest).exists() and not list((work / "files").glob(".*"))
    assert has("'files/" + "0" * 64 + "'", "not its name")
    assert has("'files/not-a-hash'", "not named by a sha256")
    assert has("appears twice")


def test_truncated_bundle_keeps_what_was_read_and_the_job_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "root"
    host_tree(root)
    big = AuthLog(host="web1", start=dt.datetime(2024, 3, 1))
    big.brute_force("198.51.100.1", ["root", "admin"], attempts=20_000)
    big.write(root / "var/log/auth.log")            # big enough to be cut in the middle of
    data = make_bundle(tmp_path).read_bytes()
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "cut.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    loose = AuthLog(host="db1")
    loose.brute_force("203.0.113.9", ["root"], attempts=12)
    loose.write(evidence / "auth.log")
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [evidence])
        assert summary.files == 2 and not summary.errors
        msgs = [r["message"] for r in case.query("SELECT message FROM errors WHERE source = ?",
                                                 [str(evidence / "cut.tar.gz")])]
        assert any("bundle is truncated or corrupt after member 'files/" in m for m in msgs), msgs
        assert any("missing from the bundle" in m for m in msgs)
        assert case.query("SELECT host FROM hosts") == [{"host": "web1"}]
        assert case.query("SELECT DISTINCT host FROM events") == [{"host": "db1"}]
    assert not list((tmp_path / "case/evidence/raw").rglob("*.part"))


def test_sniff_wants_a_gzip_tar_starting_with_a_deminer_manifest(tmp_path: Path) -> None:
    p = tmp_path / "x.tar.gz"

    def tgz(*members: tuple[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members:
                t = info(name)
                t.size = len(data)
                tar.addfile(t, io.BytesIO(data))
        return buf.getvalue()

    manifest = json.dumps({"format": "deminer-bundle", "members": {}}).encode()
    assert bundle.sniff(p, tgz(("manifest.json", manifest)))
    assert not bundle.sniff(p, tgz(("other.txt", b"x"), ("manifest.json", manifest)))
    assert not bundle.sniff(p, tgz(("manifest.json", b'{"format": "something-else"}')))
    assert not bundle.sniff(p, gzip.compress(b"Mar  1 00:00:00 h sshd[1]: Accepted password\n"))
    assert not bundle.sniff(p, b"\x1f\x8b" + os.urandom(200))
    assert not bundle.sniff(p, b"plain text")
    # sniffed as a bundle but unusable: a clear error, not a crash
    p.write_bytes(tgz(("manifest.json", b'{"format": "deminer-bundle", "host": [1]}  trailing')))
    with pytest.raises(SourceError, match=r"manifest\.json is not valid JSON"):
        parse(p, tmp_path / "w")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=strat.lists(strat.tuples(strat.floats(0.0, 1.0), strat.integers(0, 255)), min_size=1, max_size=4),
       keep=strat.floats(0.05, 1.0))
def test_damaged_bundles_give_rows_or_a_clear_error(tmp_path: Path, cuts: list[tuple[float, int]],
                                                    keep: float) -> None:
    good = tmp_path / "good.tar.gz"
    if not good.exists():
        make_bundle(tmp_path, good.name)
    data = bytearray(good.read_bytes())
    for where, value in cuts:
        data[int(where * (len(data) - 1))] = value
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data[: max(1, int(len(data) * keep))]))
    try:
        rows = parse(bad, tmp_path / "work")
    except SourceError:
        return
    assert rows["hosts"]
    if bytes(data) != good.read_bytes() or keep < 1.0:
        assert rows.get("errors") or rows.get("events")
    assert not list((tmp_path / "work").rglob("*.part"))
