"""The background writer keeps the order of batches, bounds what waits, and hands errors back."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from deminer.case import FLUSH_ROWS, Case
from deminer.case_writer import BackgroundWriter


def _batch(start: int, n: int) -> pa.Table:
    return pa.table({"record_id": list(range(start, start + n))})


def test_batches_are_written_in_order_on_another_thread() -> None:
    written: list[tuple[str, int, str]] = []
    writer = BackgroundWriter(lambda t, a: written.append((t, a.num_rows, threading.current_thread().name)))
    for i in range(5):
        writer.submit("events" if i % 2 else "flows", _batch(0, i + 1))
    writer.drain()
    assert [(t, n) for t, n, _ in written] == [("flows", 1), ("events", 2), ("flows", 3), ("events", 4),
                                               ("flows", 5)]
    assert {name for _, _, name in written} == {"deminer-case-writer"}
    writer.close()


def test_at_most_one_batch_waits_behind_the_one_being_written() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(table: str, arrow: pa.Table) -> None:
        started.set()
        release.wait(10)

    writer = BackgroundWriter(slow)
    writer.submit("events", _batch(0, 1))
    assert started.wait(10)
    writer.submit("events", _batch(1, 1))              # waits in the queue
    third = threading.Thread(target=writer.submit, args=("events", _batch(2, 1)))
    third.start()
    third.join(0.3)
    assert third.is_alive()                             # blocked: memory stays bounded
    release.set()
    third.join(10)
    writer.close()


def test_a_failed_insert_is_raised_to_the_caller_and_later_batches_are_dropped() -> None:
    written: list[int] = []
    gate = threading.Event()

    def insert(table: str, arrow: pa.Table) -> None:
        if arrow.num_rows == 2:
            gate.wait(10)                               # the third batch is queued meanwhile
            raise OSError("No space left on device")
        written.append(arrow.num_rows)

    writer = BackgroundWriter(insert)
    for n in (1, 2, 3):
        writer.submit("events", _batch(0, n))
    gate.set()
    with pytest.raises(OSError, match="No space"):
        writer.drain()
    writer.drain()                                      # raised once, then clear
    writer.close()
    assert written == [1]                               # the batch after the failure is dropped


def test_the_case_writes_full_batches_in_the_background_and_reads_see_them_all(tmp_path: Path) -> None:
    n = FLUSH_ROWS * 3 + 7
    with Case(tmp_path) as case:
        for start in range(0, n, 10_000):
            case.add("events", _batch(start, min(10_000, n - start)))
            case.add("errors", [{"source": f"s{start}", "message": "m"}])
        assert case._writer is not None                 # full batches went to the writer
        ids = [r["record_id"] for r in case.query("SELECT record_id FROM events ORDER BY rowid")]
        assert ids == list(range(n))                    # every row, in the order added
        assert case.count("errors") == len(range(0, n, 10_000))
    with Case(tmp_path) as case:                        # closed cleanly: all on disk
        assert case.count("events") == n


def test_a_background_failure_surfaces_and_the_case_still_closes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(tmp_path)

    def broken(db: object, table: str, arrow: pa.Table) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(case, "_insert", broken)        # the writer's inserts, once it starts
    case.add("events", _batch(0, FLUSH_ROWS))          # handed to the writer, which fails
    with pytest.raises(OSError, match="No space"):
        case.flush()
    case.close()
    with pytest.raises(Exception, match="closed"):
        case._db.execute("SELECT 1")
