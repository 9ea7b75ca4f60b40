"""Ingest evidence into a case: walk the inputs, sniff each file, run its source, record it.

Nothing the user gave is modified: files are only read, containers are extracted into the
case folder. A file that cannot be read becomes an ``errors`` row naming it; the rest of the
job still completes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.sources import parallel, windows_tree
from deminer.sources.base import Batch, Source, SourceContext, SourceError

HEAD_BYTES = 65536


@dataclass
class IngestSummary:
    files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_source(path: Path, head: bytes, sources: Iterable[Source]) -> Source | None:
    for source in sources:
        if source.sniff(path, head):
            return source
    return None


def _walk(root: Path) -> Iterable[Path]:
    """Regular files under ``root``, never following symlinks (no loops, no escapes)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not p.is_symlink() and p.is_file():
                yield p


def display_name(path: Path) -> str:
    """A file name safe to store and print: undecodable bytes shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def ingest(
    case: Case,
    paths: Iterable[Path],
    host: str | None = None,
    sources: Iterable[Source] | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int | None = 1,
) -> IngestSummary:
    """Ingest every input (files or folders) into ``case``.

    ``workers``: processes that parse files (``parallel``); None picks a count from the cores
    and the input's size. Rows are stored in the same order either way. Worker processes are
    spawned, which re-imports the calling script: scripts that ask for workers need the usual
    ``if __name__ == "__main__":`` guard (the ``deminer`` command has it).
    """
    if sources is None:
        from deminer.sources import SOURCES
        sources = SOURCES
    source_list = tuple(sources)
    summary = IngestSummary()
    workdir = case.evidence_dir
    files: list[tuple[Path, str | None, bool]] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            # A copy of C:\ (KAPE, a mounted image) names its host in its SYSTEM hive.
            files.extend((f, host or windows_tree.host_for(f, path), False) for f in _walk(path))
        else:
            files.append((path, host, True))
    if workers is None:
        workers = parallel.worker_count([f for f, _, _ in files])
    pool = parallel.Pool(workers) if workers > 1 else None
    # Inputs being parsed by workers: their inputs rows come later, yet a copy of one met
    # meanwhile must count as read.
    claimed: set[tuple[str, str, str | None]] = set()

    def finish(job: _Job, batches: Iterable[Batch]) -> None:
        claimed.discard(job.key)
        _store(case, job, batches, summary)
        if progress:
            progress(job.name)

    def drain(until_free: bool) -> None:
        while pool is not None and pool.pending and (not until_free or pool.full()):
            job, result = pool.next_done()
            finish(job, _worker_batches(job, result))

    try:
        for path, owner, explicit in files:
            job = _prepare(case, path, owner, source_list, workdir, summary, explicit, claimed=claimed)
            if job is None:
                if progress:
                    progress(display_name(path))
                continue
            if pool is not None and parallel.can_run_in_worker(job.source, job.size):
                drain(until_free=True)
                try:
                    pool.submit(job, job.source, job.ctx)
                    claimed.add(job.key)
                    continue
                except RuntimeError:           # the pool broke (a worker was killed)
                    pass
            drain(until_free=False)            # earlier files first: same order as serial
            finish(job, job.source.parse(job.ctx))
        drain(until_free=False)
    finally:
        if pool is not None:
            pool.close()
    return summary


@dataclass
class _Job:
    """A file picked for parsing: its source, provenance and ``inputs`` record."""

    name: str
    host: str | None
    source: Source
    size: int
    digest: str
    record: dict[str, Any]
    ctx: SourceContext

    @property
    def key(self) -> tuple[str, str, str | None]:
        """What makes two inputs the same evidence: bytes, source and host."""
        return self.digest, self.source.name, self.host


def _worker_batches(job: _Job, result: Any) -> Iterable[Batch]:
    if isinstance(result, BaseException):    # the worker died: read the file here instead
        return job.source.parse(job.ctx)
    return parallel.replay(result)


def ingest_file(
    case: Case, path: Path, host: str | None, sources: tuple[Source, ...], workdir: Path,
    summary: IngestSummary, explicit: bool = True, display: str | None = None,
) -> None:
    """Ingest one file, recording an ``inputs`` row and any error."""
    job = _prepare(case, path, host, sources, workdir, summary, explicit, display)
    if job is not None:
        _store(case, job, job.source.parse(job.ctx), summary)


def _fail(case: Case, summary: IngestSummary, name: str, host: str | None, record: dict[str, Any],
          message: str) -> None:
    summary.errors.append(f"{name}: {message}")
    case.error(name, message, host=host)
    case.add("inputs", [{**record, "error": message}])


def _prepare(
    case: Case, path: Path, host: str | None, sources: tuple[Source, ...], workdir: Path,
    summary: IngestSummary, explicit: bool = True, display: str | None = None,
    claimed: set[tuple[str, str, str | None]] | None = None,
) -> _Job | None:
    """Sniff, hash and de-duplicate one file; the job to parse it, or None (recorded why)."""
    name = display or display_name(path)
    now = dt.datetime.now(dt.UTC)
    record: dict[str, Any] = {"path": name, "ingested_at": now, "host": host}
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
        size = path.stat().st_size
    except OSError as exc:
        _fail(case, summary, name, host, record, f"cannot read: {exc.strerror or exc}")
        return None
    source = pick_source(path, head, sources)
    if source is None:
        if explicit:
            _fail(case, summary, name, host, record, "not a recognised evidence format")
        else:
            summary.skipped.append(name)
            case.add("inputs", [{**record, "kind": "unrecognised", "size": size}])
        return None
    try:
        digest = _sha256(path)
    except OSError as exc:
        _fail(case, summary, name, host, record, f"cannot read: {exc.strerror or exc}")
        return None
    # Evidence added to an existing case again (same bytes, same host, read without error
    # before) is not read twice: its rows are already there, and doubling them would double
    # counts. The host is part of the key: two hosts' identical logs are two pieces of evidence.
    # ``claimed``: files of this run still being parsed by workers count as read.
    if case.read_before(digest, source.name, host) or (digest, source.name, host) in (claimed or ()):
        summary.skipped.append(name)
        case.add("inputs", [{**record, "kind": "duplicate", "size": size, "sha256": digest}])
        return None
    summary.files += 1
    ctx = SourceContext(path=path, display=name, host=host, workdir=workdir)
    return _Job(name, host, source, size, digest, record, ctx)


def _store(case: Case, job: _Job, batches: Iterable[Batch], summary: IngestSummary) -> None:
    """Write a file's batches as they come, then its ``inputs`` row or its error."""
    rows = 0
    try:
        for table, batch in batches:
            n = case.add(table, batch)
            rows += n
            summary.rows[table] = summary.rows.get(table, 0) + n
    except SourceError as exc:
        _fail(case, summary, job.name, job.host, job.record, f"{job.source.name}: {exc}")
        return
    except parallel.WorkerReadError as exc:
        _fail(case, summary, job.name, job.host, job.record, f"{job.source.name}: unreadable input ({exc})")
        return
    except (OSError, ValueError, UnicodeError, EOFError) as exc:
        _fail(case, summary, job.name, job.host, job.record,
              f"{job.source.name}: unreadable input ({type(exc).__name__}: {exc})")
        return
    case.add("inputs", [{**job.record, "kind": job.source.name, "size": job.size, "rows": rows,
                         "sha256": job.digest}])
