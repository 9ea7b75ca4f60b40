"""Parse evidence files in worker processes while the main process stores what they read.

Ingest of many files (a fleet's logs, a folder of EVTX) is CPU-bound Python in the sources;
one process uses one core. Workers run a registered source's ``parse`` on one file and send
its batches back as Arrow tables (the dict → column step is done in the worker too); only the
main process touches the case store. Results are taken in submission order, so a parallel
ingest writes the same rows in the same order as a serial one.

A worker's batches travel in one message, so only files up to ``MAX_FILE_BYTES`` go to
workers; bigger ones stream in the main process as before (memory stays flat). Workers are
started with ``forkserver`` (``spawn`` where that does not exist): forking a process that has
DuckDB's threads running is not safe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from deminer.sources.base import Batch, Source, SourceContext, SourceError

MAX_FILE_BYTES = 256 << 20     # larger files stream in the main process
MIN_TOTAL_BYTES = 16 << 20     # below this much input, starting workers costs more than it saves
MAX_WORKERS = 8
MIN_CORES = 4                  # the main process keeps one core for sniffing, hashing and storing
MIN_AVERAGE_BYTES = 256 << 10  # smaller files cost more to send than to parse


@dataclass(frozen=True)
class Failure:
    """How a parse ended early: ``source`` (SourceError) or ``unreadable`` (I/O, decoding)."""

    kind: str
    message: str


def worker_count(paths: Sequence[Path]) -> int:
    """How many workers an ingest of these files deserves (1 means: parse in this process).
    The files' sizes are only looked at where the cores would allow workers."""
    env = os.environ.get("DEMINER_WORKERS")
    if env and env.isdigit():
        return max(1, min(int(env), MAX_WORKERS))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Measured on 2 cores (BENCHMARKS.md): the main process sniffs, hashes and stores while
    # pyevtx already parses on both cores, so one worker gained nothing on 230 EVTX files and
    # cost 35 % on 3,224 small fleet files (IPC per file). Workers need cores to spare and
    # files big enough to be worth a message.
    if len(paths) < 2 or cores < MIN_CORES:
        return 1
    total = sum(file_size(p) for p in paths)
    if total < MIN_TOTAL_BYTES or total / len(paths) < MIN_AVERAGE_BYTES:
        return 1
    return min(cores - 1, MAX_WORKERS, len(paths))


def _registered(source: Source) -> bool:
    from deminer.sources import SOURCES

    return any(s is source for s in SOURCES)


def can_run_in_worker(source: Source, size: int) -> bool:
    """Workers look a source up by name, so only the registered ones (not a source built
    for one run, such as the netflow source with the user's column mapping) go there."""
    return size <= MAX_FILE_BYTES and _registered(source)


def parse_file(source_name: str, ctx: SourceContext) -> tuple[list[tuple[str, pa.Table]], Failure | None]:
    """Worker side: every batch of one file as Arrow, and how the parse ended."""
    from deminer.case import rows_to_arrow
    from deminer.sources import SOURCES

    source = next(s for s in SOURCES if s.name == source_name)
    out: list[tuple[str, pa.Table]] = []
    try:
        for table, batch in source.parse(ctx):
            out.append((table, batch if isinstance(batch, pa.Table) else rows_to_arrow(table, batch)))
    except SourceError as exc:
        return out, Failure("source", str(exc))
    except (OSError, ValueError, UnicodeError, EOFError) as exc:
        return out, Failure("unreadable", f"{type(exc).__name__}: {exc}")
    return out, None


def replay(result: tuple[list[tuple[str, pa.Table]], Failure | None]) -> Iterator[Batch]:
    """A worker's result as the batches ``parse`` yielded, raising where the parse failed."""
    batches, failure = result
    yield from batches
    if failure is not None:
        if failure.kind == "source":
            raise SourceError(failure.message)
        raise WorkerReadError(failure.message)


class WorkerReadError(OSError):
    """An I/O or decoding error a worker met; its message already names the exception."""


class Pool:
    """A bounded window of files being parsed by workers, handed back in submission order."""

    def __init__(self, workers: int) -> None:
        methods = mp.get_all_start_methods()
        context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        self.window = 2 * workers
        self.pending: deque[tuple[Any, Future[tuple[list[tuple[str, pa.Table]], Failure | None]]]] = deque()

    def submit(self, tag: Any, source: Source, ctx: SourceContext) -> None:
        self.pending.append((tag, self.executor.submit(parse_file, source.name, ctx)))

    def full(self) -> bool:
        return len(self.pending) >= self.window

    def next_done(self) -> tuple[Any, tuple[list[tuple[str, pa.Table]], Failure | None] | BaseException]:
        """The oldest file's tag and result (waits for it); the exception if the worker died
        or its result could not come back, so the caller can read that file itself."""
        tag, future = self.pending.popleft()
        try:
            return tag, future.result()
        except Exception as exc:       # BrokenProcessPool, a batch that would not pickle
            return tag, exc

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
