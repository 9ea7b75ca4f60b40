"""Ingest with worker processes stores exactly what a serial ingest stores, in the same order."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from deminer.case import TABLES, Case
from deminer.scenarios.seed.build import build
from deminer.sources import parallel
from deminer.sources.ingest import IngestSummary, ingest

# Columns that say when a run happened, not what the evidence holds.
_RUN_COLUMNS = {("inputs", "ingested_at"), ("errors", "ts")}


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed cases 4 (Windows XML events, hives, task XML) and 9 (Linux bundles, auth logs),
    a file read twice, a binary named auth.log and an unrecognised file."""
    out = tmp_path_factory.mktemp("evidence")
    build(4, out / "c4")
    build(9, out / "c9")
    junk = out / "junk"
    junk.mkdir()
    (junk / "auth.log").write_bytes(bytes(range(256)) * 64)
    (junk / "notes.txt").write_text("nothing to see\n", encoding="utf-8")
    first = next(p for p in sorted((out / "c9").rglob("*")) if p.is_file() and p.suffix == ".gz")
    shutil.copy(first, junk / ("copy-" + first.name))
    return out


def _contents(case_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    with Case(case_dir) as case:
        out = {}
        for name, table in TABLES.items():
            cols = [c for c in table.names if (name, c) not in _RUN_COLUMNS]
            sql = f"SELECT {', '.join(repr(c).replace(chr(39), chr(34)) for c in cols)} FROM {name}"
            rows = case.db.execute(sql).fetchall()
            out[name] = rows if name not in ("inputs", "errors") else sorted(rows, key=repr)
        return out


def _run(case_dir: Path, evidence: Path, workers: int) -> IngestSummary:
    with Case(case_dir) as case:
        return ingest(case, [evidence], workers=workers)


def test_workers_store_the_same_rows_in_the_same_order(evidence: Path, tmp_path: Path) -> None:
    serial = _run(tmp_path / "serial", evidence, 1)
    parallel_run = _run(tmp_path / "parallel", evidence, 2)
    assert serial.files == parallel_run.files > 20
    assert serial.rows == parallel_run.rows and serial.rows["events"] > 100
    assert sorted(serial.errors) == sorted(parallel_run.errors)
    assert any("auth.log" in e for e in serial.errors)           # the binary one, named
    assert sorted(serial.skipped) == sorted(parallel_run.skipped)
    assert any("copy-" in s for s in serial.skipped)              # read once, the copy skipped
    a, b = _contents(tmp_path / "serial"), _contents(tmp_path / "parallel")
    for table in TABLES:
        assert a[table] == b[table], table


def test_a_worker_that_dies_leaves_its_file_to_the_main_process(
        evidence: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: parallel.Pool) -> tuple[Any, Any]:
        tag, future = self.pending.popleft()
        future.cancel()
        return tag, RuntimeError("worker killed")

    monkeypatch.setattr(parallel.Pool, "next_done", broken)
    serial = _run(tmp_path / "serial", evidence / "c9", 1)
    rescued = _run(tmp_path / "rescued", evidence / "c9", 2)
    assert rescued.rows == serial.rows and rescued.files == serial.files


def test_worker_count_follows_cores_size_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    sized: list[Path] = []

    def size(path: Path) -> int:
        sized.append(path)
        return int(path.name)

    def worker_count(files: int, total: int) -> int:
        """The count for ``files`` files of ``total`` bytes in all."""
        return parallel.worker_count([Path(str(total // files))] * files if files else [])

    monkeypatch.setattr(parallel, "file_size", size)
    monkeypatch.delenv("DEMINER_WORKERS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert worker_count(1, 10 << 30) == 1                 # one file: nothing to share
    assert worker_count(500, 1 << 20) == 1                # too little input to pay off
    assert worker_count(100, 100 << 20) == parallel.MAX_WORKERS   # 1 MiB files, 16 cores
    assert worker_count(10_000, 100 << 20) == 1           # 10 KiB files: IPC costs more
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    sized.clear()
    assert worker_count(100, 100 << 20) == 1              # two cores: nothing to spare
    assert sized == []                                    # ... and no file was looked at
    monkeypatch.setenv("DEMINER_WORKERS", "3")
    assert worker_count(1, 0) == 3
    monkeypatch.setenv("DEMINER_WORKERS", "64")
    assert worker_count(1, 0) == parallel.MAX_WORKERS
