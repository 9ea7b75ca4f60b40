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

from deminer.case import Case
from deminer.sources import windows_tree
from deminer.sources.base import Source, SourceContext, SourceError

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
) -> IngestSummary:
    """Ingest every input (files or folders) into ``case``."""
    if sources is None:
        from deminer.sources import SOURCES
        sources = SOURCES
    source_list = tuple(sources)
    summary = IngestSummary()
    workdir = (case.dir or Path.cwd()) / "evidence"
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for f in _walk(path):
                # A copy of C:\ (KAPE, a mounted image) names its host in its SYSTEM hive.
                ingest_file(case, f, host or windows_tree.host_for(f, path), source_list, workdir,
                            summary, explicit=False)
                if progress:
                    progress(display_name(f))
        else:
            ingest_file(case, path, host, source_list, workdir, summary, explicit=True)
            if progress:
                progress(display_name(path))
    return summary


def ingest_file(
    case: Case, path: Path, host: str | None, sources: tuple[Source, ...], workdir: Path,
    summary: IngestSummary, explicit: bool = True, display: str | None = None,
) -> None:
    """Ingest one file, recording an ``inputs`` row and any error."""
    name = display or display_name(path)
    now = dt.datetime.now(dt.UTC)
    record = {"path": name, "ingested_at": now, "host": host}

    def fail(message: str) -> None:
        summary.errors.append(f"{name}: {message}")
        case.error(name, message, host=host)
        case.add("inputs", [{**record, "error": message}])

    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
        size = path.stat().st_size
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return
    source = pick_source(path, head, sources)
    if source is None:
        if explicit:
            fail("not a recognised evidence format")
        else:
            summary.skipped.append(name)
            case.add("inputs", [{**record, "kind": "unrecognised", "size": size}])
        return
    try:
        digest = _sha256(path)
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return
    # Evidence added to an existing case again (same bytes, same host, read without error
    # before) is not read twice: its rows are already there, and doubling them would double
    # counts. The host is part of the key: two hosts' identical logs are two pieces of evidence.
    if case.read_before(digest, source.name, host):
        summary.skipped.append(name)
        case.add("inputs", [{**record, "kind": "duplicate", "size": size, "sha256": digest}])
        return
    summary.files += 1
    ctx = SourceContext(path=path, display=name, host=host, workdir=workdir)
    rows = 0
    try:
        for table, batch in source.parse(ctx):
            n = case.add(table, batch)
            rows += n
            summary.rows[table] = summary.rows.get(table, 0) + n
    except SourceError as exc:
        fail(f"{source.name}: {exc}")
        return
    except (OSError, ValueError, UnicodeError, EOFError) as exc:
        fail(f"{source.name}: unreadable input ({type(exc).__name__}: {exc})")
        return
    case.add("inputs", [{**record, "kind": source.name, "size": size, "rows": rows,
                         "sha256": digest}])
