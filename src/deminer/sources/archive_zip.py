"""ZIP archives of evidence → every member ingested by the source that recognises it.

Responders are handed zips: a KAPE or ``C:`` copy zipped up, a folder of logs, zips inside
zips. The archive is read with our own central-directory reader, not ``zipfile``: that one
gives up on a whole archive over one name flagged UTF-8 that is not, and cannot see members
that share their bytes. Every member is checked before a byte is written; the ones a source
will read are extracted into the case folder and handed to that source:

    file       workdir/zip/<sha256 of the archive, 16 hex>/<member path, made safe>
    display    ``archive.zip!path/in/zip`` (nested: ``a.zip!b.zip!c.evtx``), also ``source``

A member is refused — one ``errors`` row naming archive and member, the rest carries on —
when its name is absolute (``/x``, ``\\x``, ``C:x``) or has a ``..`` part; when it is a
symlink, device or FIFO; when it is encrypted (there is no password to try); when its method
is not stored, deflate or bzip2 (Deflate64, which Windows Explorer writes for big files, is
named in the message); when it shares its bytes with another member (overlapping entries:
the non-recursive zip bomb); when it declares a ratio above ``MAX_RATIO`` (a deflate bomb runs
near 1000:1); or when it would take the archive past ``MAX_TOTAL`` bytes or the case disk's
free space. All of that is decided from the central directory, before anything is inflated;
while inflating, the declared size and CRC-32 are enforced, so a lying header costs at most
its declared size. Names that are not UTF-8 keep ``\\xNN`` escapes (one errors row says so);
control characters become ``_`` on disk only.

Members are sniffed from their first 64 KiB before extraction: a triage zip's ``$MFT`` that
no source reads is listed (``inputs`` kind ``unrecognised``) but not copied. A zip inside is
read the same way, ``MAX_NESTING`` levels deep. When the members hold a copy of a Windows
drive (see ``windows_tree``), its files get that host: SYSTEM hive, else folder or archive name.

Zips that belong to another source are left to it: Velociraptor collections (``velociraptor``)
and zips of nothing but Windows JSON lines (``winevent_json`` streams those). Office files,
JARs and APKs are zips too, but not evidence containers, so they are not claimed.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deminer.sources import windows_tree
from deminer.sources import zipread as zr
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id, looks_binary
from deminer.sources.zipread import Directory, Entry, Extractor, ZipError

MAX_NESTING = 2               # zips inside zips read this deep (a.zip!b.zip!c.zip)
MAX_ERRORS = 1000             # errors rows per archive
_NOT_CONTAINERS = frozenset({"[Content_Types].xml", "mimetype", "META-INF/MANIFEST.MF",
                             "AndroidManifest.xml"})
_STATE = threading.local()    # .depth: how many containers enclose the one being read
Row = dict[str, Any]


def depth() -> int:
    """How many containers enclose the one being read now (0 for an input the user gave)."""
    return int(getattr(_STATE, "depth", 0))


def wanted(target: Path, head: bytes) -> bool:
    """Would a source read this member? (Zips are always taken: their sniffers need the file.)"""
    from deminer.sources import SOURCES  # here: SOURCES imports this module
    from deminer.sources.ingest import pick_source

    if head.startswith(zr.ZIP_MAGIC):
        return True
    try:
        return pick_source(target, head, SOURCES) is not None
    except OSError:            # a sniffer that opens the file it was given: extract, then ask
        return True


def dispatch(path: Path, display: str, host: str | None, workdir: Path,
             sha256: str | None) -> Iterator[Batch]:
    """Parse one extracted file with the source that recognises it: its batches, an ``inputs``
    row, and an ``errors`` row naming it when that source fails."""
    from deminer.sources import SOURCES
    from deminer.sources.ingest import pick_source

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    record: Row = {"path": display, "host": host, "ingested_at": now, "sha256": sha256}
    try:
        with path.open("rb") as fh:
            head = fh.read(zr.HEAD)
        record["size"] = path.stat().st_size
    except OSError as exc:
        yield "errors", [{"host": host, "ts": now, "source": display, "stage": "ingest",
                          "message": f"extracted copy cannot be read back ({exc.strerror or exc})"}]
        return
    source = pick_source(path, head, SOURCES)
    if source is None:
        yield "inputs", [{**record, "kind": "unrecognised"}]
        return
    rows, error = 0, None
    _STATE.depth = depth() + 1
    try:
        for table, batch in source.parse(SourceContext(path, display, host, workdir)):
            rows += len(batch)
            yield table, batch
    except SourceError as exc:
        error = f"{source.name}: {exc}"
    except (OSError, ValueError, UnicodeError, EOFError) as exc:
        error = f"{source.name}: unreadable input ({type(exc).__name__}: {exc})"
    finally:
        _STATE.depth = depth() - 1
    yield "inputs", [{**record, "kind": source.name, "rows": rows, "error": error}]
    if error:
        yield "errors", [{"host": host, "ts": now, "source": display, "stage": "ingest",
                          "message": error}]


def sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(zr.ZIP_MAGIC):
        # a broken .zip gets a clear error here instead of "not a recognised format"
        return path.suffix.lower() == ".zip" and (not head or looks_binary(head))
    try:
        d = zr.directory(path)
    except (ZipError, OSError):
        return True
    from deminer.sources import velociraptor  # here: it imports this module

    names = {e.name for e in d.entries}
    if velociraptor.is_collection(d) or names & _NOT_CONTAINERS:
        return False
    return not _windows_json_only(path, d)


def _windows_json_only(path: Path, d: Directory) -> bool:
    """Every file member (of the first 64) is Windows JSON lines: ``winevent_json``'s to read."""
    from deminer.sources import winevent_json

    files = [e for e in d.entries if not e.is_dir][:64]
    for e in files:
        try:
            head = zr.read_head(path, e, 4096) if zr.member_problem(e) is None else b""
        except (ZipError, OSError):
            return False
        if head[:2] == b"PK" or not winevent_json.SOURCE.sniff(Path(e.name), head):
            return False
    return bool(files)


class _Archive:
    """One pass over one archive."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx, self.host = ctx, host_id(ctx.host)
        self.errors: list[Row] = []
        self.dropped = 0

    def error(self, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS:
            self.dropped += 1
            return
        self.errors.append({"host": self.host, "ts": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                            "source": self.ctx.display, "stage": "ingest", "message": message})

    def run(self) -> Iterator[Batch]:
        if depth() > MAX_NESTING:
            raise ZipError(f"a zip nested more than {MAX_NESTING} archives deep; not opened")
        try:
            d = zr.read_directory(self.ctx.path)
        except ZipError as exc:
            raise ZipError(f"not a readable ZIP archive: {exc}") from None
        if d.problem:
            self.error(d.problem)
        sha = zr.sha256_file(self.ctx.path)
        ex = Extractor(self.ctx.path, Extractor.fresh(self.ctx.workdir / "zip", sha[:16]))
        bad = [e.name for e in d.entries if not e.utf8]
        if bad:
            self.error(f"{len(bad)} member name(s) are not UTF-8 and are shown with \\x escapes "
                       f"(first: {bad[0]!r}); they were read all the same")
        # Windows-made zips may separate with backslashes: compare paths in one spelling
        paths = {e.index: "/".join(p for p in re.split(r"[/\\]", e.name) if p not in ("", "."))
                 for e in d.entries}
        roots = windows_tree.roots_in_names(paths[e.index] for e in d.entries if not e.is_dir)
        hives = {v for v in roots.values() if v}
        problems = zr.size_problems(d)
        listed = Batcher()
        taken: list[tuple[Entry, Path, str]] = []
        for e in d.entries:
            if e.is_dir:
                continue
            try:
                problem = problems.get(e.index) or zr.member_problem(e)
                if problem:
                    raise ZipError(problem)
                parts = zr.safe_parts(e.raw)
                if paths[e.index] in hives or wanted(ex.base.joinpath(*parts),
                                                     zr.read_head(self.ctx.path, e)):
                    taken.append((e, *ex.extract(e, parts)))
                elif full := listed.add("inputs", self._record(e, "unrecognised")):
                    yield full
            except ZipError as exc:
                self.error(f"member {e.name!r} {exc}")
            except OSError as exc:
                self.error(f"member {e.name!r} could not be extracted ({exc.strerror or exc})")
        yield from listed.flush()
        hosts = self._hosts(roots, {paths[e.index]: path for e, path, _ in taken})
        for e, path, digest in taken:
            yield from dispatch(path, f"{self.ctx.display}!{e.name}",
                                self._host(paths[e.index], hosts), self.ctx.workdir, digest)
        if self.dropped:
            self.errors.append({**self.errors[-1], "message": f"{self.dropped} more problems "
                                "like the ones above were not recorded"})
        if self.errors:
            yield "errors", self.errors

    def _record(self, e: Entry, kind: str) -> Row:
        return {"path": f"{self.ctx.display}!{e.name}", "kind": kind, "size": e.size,
                "host": self.host, "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}

    def _hosts(self, roots: dict[str, str | None], paths: dict[str, Path]) -> dict[str, str | None]:
        """Host per drive copy in the archive: its SYSTEM hive, else its folders' names, else
        the archive's own name when KAPE stamped it (``<time>_<HOST>.zip``)."""
        if self.host:
            return {}
        stem = Path(self.ctx.display.rsplit("!", 1)[-1]).stem
        out: dict[str, str | None] = {}
        for root, hive in roots.items():
            parts = [p for p in root.split("/") if p]
            name = windows_tree.hive_computer_name(paths[hive]) if hive in paths else None
            out[root] = (host_id(name) or (windows_tree.folder_host(parts) if parts else None)
                         or windows_tree.stamped_host(stem))
        return out

    def _host(self, name: str, hosts: dict[str, str | None]) -> str | None:
        best = None
        for root in hosts:
            if (not root or name.startswith(root + "/")) and (best is None or len(root) > len(best)):
                best = root
        return self.host or (hosts[best] if best is not None else None)


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from _Archive(ctx).run()


SOURCE = Source("archive_zip", sniff, parse)
