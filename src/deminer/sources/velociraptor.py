"""Velociraptor offline collections → hosts, processes, connections, persistence, events, uploads.

A collection container is a zip — the offline collector's ``Collection-<host>-<time>.zip``,
or a flow exported from a server — laid out as Velociraptor's ``reporting/container.go``
writes it (and ``import_collection`` reads it back):

    collection_context.json    the flow: session_id, create_time, artifacts_with_results, state
    client_info.json           the host: Hostname, Fqdn, OS, Platform, HostID
    log.json                   JSON lines (level, message): what the collector could not do
    results/<Artifact>.json    JSON lines, one result row each; an artifact with named sources
                               writes ``results/<Artifact>%2F<Source>.json`` (+ .index, .csv)
    uploads/<accessor>/<path>  files copied off the host, one percent-encoded component per
                               folder: ``uploads/auto/C%3A/Windows/…``, ``uploads/ntfs/%5C%5C.%5CC%3A/…``
    metadata.json + data.zip   a secured container: the collection is data.zip, encrypted

Result rows of the common artifacts (Pslist, Netstat, Services, TaskScheduler, StartupItems,
PermanentWMIEvents, Crontab, Windows.EventLogs.*) become processes, connections, persistence
and events rows — the mapping is ``velociraptor_artifacts`` — with ``source`` =
``<container>!results/<file>`` and ``source_line`` = the line; processes and sockets get
``ts`` = the collection's start.

Any other artifact's results are offered to the sources (a file listing is ``file_listing``'s);
what none takes stays an ``inputs`` note with its row count (kind ``velociraptor_unmapped``),
not an error. Every upload is sniffed and, when a source reads it, extracted to
``workdir/velociraptor/<sha256 16>/uploads/<accessor>/<path>`` (drive ``C:`` as folder ``C``)
and parsed with the collection's host; it is displayed as ``<container>!C:\\Windows\\…``.

The host is the user's, else ``client_info.json``'s Hostname (older collections: the first
``Generic.Client.Info/BasicInformation`` row). The collector's logged errors become one
``errors`` row (stage ``collect``). A secured container is a ``SourceError`` saying how to
decrypt it. Members are checked as ``archive_zip`` checks them (``zipread``): refused names,
bombs and bad CRCs are ``errors`` rows naming container and member; junk lines are counted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

from deminer.case import to_utc
from deminer.sources import archive_zip
from deminer.sources import zipread as zr
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id
from deminer.sources.velociraptor_artifacts import Meta, as_dict, mapper_for, text
from deminer.sources.zipread import Directory, Entry, Extractor, ZipError

MAX_LINE = 16 << 20           # one result row
MAX_JSON = 64 << 20           # collection_context.json, client_info.json
_SHOWN = 3
_BASIC = "results/Generic.Client.Info%2FBasicInformation.json"
_DRIVE = re.compile(r"^(?:\\\\[.?]\\)?([A-Za-z]):\\?$")
_SURROGATE = re.compile("[\udc80-\udcff]")
Row = dict[str, Any]


def _escape(match: re.Match[str]) -> str:
    return f"\\\\x{ord(match.group()) - 0xDC00:02x}"


def is_collection(d: Directory) -> bool:
    """The members are laid out as a Velociraptor collection container (secured ones too)."""
    names = {e.name for e in d.entries}
    if "collection_context.json" in names:
        return True
    data = next((e for e in d.entries if e.name == "data.zip"), None)
    if data is not None and (data.flags & 1 or data.method == 99) and names <= {"data.zip", "metadata.json"}:
        return True
    return bool(names & {"log.json", "uploads.json", "client_info.json", "requests.json"}) and any(
        n.startswith("results/") and n.endswith(".json") for n in names)


def sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(zr.ZIP_MAGIC):
        return False
    try:
        return is_collection(zr.directory(path))
    except (ZipError, OSError):
        return False


def _epoch(value: Any) -> dt.datetime | None:
    """create_time is nanoseconds in some versions, microseconds in others."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for above, divisor in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
            if value > above:
                value /= divisor
                break
    return to_utc(value)


def _host_path(parts: list[str]) -> str:
    """An upload's path as the host named it: ``C:\\Windows\\…`` or ``/var/log/…``."""
    if re.match(r"^(?:[A-Za-z]:|\\\\)", parts[0]):
        return "\\".join([parts[0].rstrip("\\"), *parts[1:]])
    return "/" + "/".join(parts)


class _Collection:
    """One pass over one collection container."""

    def __init__(self, ctx: SourceContext, d: Directory) -> None:
        self.ctx, self.d = ctx, d
        self.members = {e.name: e for e in d.entries}
        self.host = host_id(ctx.host)
        self.collected: dt.datetime | None = None
        self.errors: list[Row] = []
        self.batcher = Batcher()

    def error(self, message: str, stage: str = "ingest") -> None:
        if len(self.errors) < archive_zip.MAX_ERRORS:
            self.errors.append({"host": self.host, "ts": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                                "source": self.ctx.display, "stage": stage, "message": message})

    def _lines(self, e: Entry) -> Generator[tuple[int, bytes, Any], None, None]:
        """(line number, line, parsed JSON or None) for a JSON-lines member, streaming."""
        with zr.open_member(self.ctx.path, e) as fh:
            number = 0
            while line := fh.readline(MAX_LINE + 1):
                number += 1
                if len(line) > MAX_LINE:
                    while line and not line.endswith(b"\n"):
                        line = fh.readline(MAX_LINE)       # drain the over-long row
                    yield number, b"", None
                    continue
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    try:                # non-UTF-8 text: keep it, bad bytes as \xNN (JSON-escaped)
                        obj = orjson.loads(_SURROGATE.sub(_escape, line.decode("utf-8", "surrogateescape")))
                    except orjson.JSONDecodeError:
                        obj = None
                yield number, line, obj

    def _json(self, name: str) -> Row:
        """A whole-file JSON member as an object (a list's first object: metadata.json is rows)."""
        e = self.members.get(name)
        if e is None:
            return {}
        try:
            if e.size > MAX_JSON:
                raise ZipError(f"is {e.size} bytes, over the {MAX_JSON}-byte limit")
            with zr.open_member(self.ctx.path, e) as fh:
                obj = orjson.loads(fh.read())
        except (ZipError, OSError, orjson.JSONDecodeError) as exc:
            self.error(f"member {name!r} cannot be read ({exc})")
            return {}
        return as_dict(obj)

    def _refuse_secured(self) -> None:
        data = self.members.get("data.zip")
        if data is None or not (data.flags & 1 or data.method == 99):
            return
        if "collection_context.json" not in self.members:
            scheme = text(self._json("metadata.json").get("Scheme")) or "password"
            raise SourceError(
                f"a secured Velociraptor collection ({scheme}): the collection is the encrypted "
                "data.zip inside; decrypt it first (velociraptor --config server.config.yaml unzip "
                "<container> --dump_dir DIR, or the collector's password) and ingest that")

    def _hosts(self) -> Iterator[Batch]:
        context, info = self._json("collection_context.json"), self._json("client_info.json")
        if not info and _BASIC in self.members:           # collections older than client_info.json
            try:
                with closing(self._lines(self.members[_BASIC])) as rows:
                    info = next((o for _, _, o in rows if isinstance(o, dict)), {})
            except ZipError as exc:
                self.error(f"member {_BASIC!r} {exc}")
        hostname = text(info.get("Hostname")) or text(info.get("Fqdn"))
        self.host = self.host or host_id(hostname)
        self.collected = _epoch(context.get("create_time") or context.get("start_time"))
        if self.host:
            system = (text(info.get(k)) for k in ("OS", "Platform", "PlatformVersion"))
            version = text(info.get("Version") or info.get("BuildVersion"))
            yield "hosts", [{"host": self.host, "hostname": hostname, "os": " ".join(t for t in system if t)
                             or None, "machine_id": text(info.get("HostID")),
                             "collected_at": self.collected, "source": self.ctx.display,
                             "collector_version": f"velociraptor {version}" if version else "velociraptor"}]
        status = text(context.get("status"))
        if status or context.get("state") == 3:
            self.error(f"the collection ended in error: {status or 'state ERROR'}", "collect")

    def run(self) -> Iterator[Batch]:
        self._refuse_secured()
        yield from self._hosts()
        sha = zr.sha256_file(self.ctx.path)
        ex = Extractor(self.ctx.path, Extractor.fresh(self.ctx.workdir / "velociraptor", sha[:16]))
        problems, uploads = zr.size_problems(self.d), []
        for e in self.d.entries:
            problem = problems.get(e.index) or zr.member_problem(e)
            if e.is_dir:
                continue
            if problem:
                self.error(f"member {e.name!r} {problem}")
            elif e.name.startswith("results/") and e.name.endswith(".json"):
                yield from self._results(e, ex)
            elif e.name.startswith("uploads/"):
                uploads.append(e)
            elif e.name == "log.json":
                self._log(e)
        yield from self.batcher.flush()
        for e in uploads:
            yield from self._upload(e, ex)
        yield from self.batcher.flush()
        if self.errors:
            yield "errors", self.errors

    def _log(self, e: Entry) -> None:
        count, first = 0, list[str]()
        try:
            for _, _, obj in self._lines(e):
                row = obj if isinstance(obj, dict) else {}
                message = text(row.get("message")) or ""
                if row.get("level") == "ERROR" or message.startswith("ERROR:"):
                    count += 1
                    first += [message.strip()[:300]] if len(first) < _SHOWN else []
        except (ZipError, OSError) as exc:
            self.error(f"member {e.name!r} {exc}")
        if count:
            self.error(f"the collector logged {count} error(s); first: " + " | ".join(first), "collect")

    def _record(self, e: Entry, display: str, kind: str, rows: int | None = None) -> Row:
        return {"path": display, "kind": kind, "size": e.size, "host": self.host, "rows": rows,
                "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}

    def _results(self, e: Entry, ex: Extractor) -> Iterator[Batch]:
        result = unquote(e.name[len("results/"):-len(".json")], errors="backslashreplace")
        mapper, source = mapper_for(result), f"{self.ctx.display}!{e.name}"
        if mapper is None:
            yield from self._unmapped(e, result, ex)
            return
        meta = Meta(self.ctx.display, self.host, result.partition("/")[2], b"")
        produced, bad, first_bad = 0, 0, 0
        try:
            for number, line, obj in self._lines(e):
                if not isinstance(obj, dict):
                    bad, first_bad = bad + 1, first_bad or number
                    continue
                try:
                    mapped = list(mapper(obj, Meta(meta.display, meta.host, meta.sub, line)))
                except (TypeError, ValueError, AttributeError, OverflowError):
                    # a row shaped unlike the artifact's (a hostile one, say) costs that row only
                    bad, first_bad = bad + 1, first_bad or number
                    continue
                for table, row in mapped:
                    row.setdefault("host", self.host)
                    row["source"] = row.get("source") or source
                    row.setdefault("source_line", number)
                    if table in ("processes", "connections"):
                        row.setdefault("ts", self.collected)
                    produced += 1
                    if full := self.batcher.add(table, row):
                        yield full
        except (ZipError, OSError) as exc:
            self.error(f"member {e.name!r} {exc}; the rows before it were kept")
        if bad:
            self.error(f"member {e.name!r}: {bad} line(s) are not JSON objects of the artifact or "
                       f"are over {MAX_LINE} bytes (first at line {first_bad}); the other rows were kept")
        yield "inputs", [self._record(e, source, "velociraptor_result", produced)]

    def _unmapped(self, e: Entry, result: str, ex: Extractor) -> Iterator[Batch]:
        display = f"{self.ctx.display}!{e.name}"
        parts = ["results", zr.safe_component(result.replace("/", "%2F") + ".json")]
        try:
            if archive_zip.wanted(ex.base.joinpath(*parts), zr.read_head(self.ctx.path, e)):
                path, digest = ex.extract(e, parts)
                yield from archive_zip.dispatch(path, display, self.host, self.ctx.workdir, digest)
                return
            index = self.members.get(e.name + ".index")
            rows = index.size // 8 if index else sum(1 for _ in self._lines(e))
        except (ZipError, OSError) as exc:
            self.error(f"member {e.name!r} {exc}")
            return
        yield "inputs", [self._record(e, display, "velociraptor_unmapped", rows)]

    def _upload(self, e: Entry, ex: Extractor) -> Iterator[Batch]:
        parts = e.name.split("/")
        if len(parts) < 3 or (e.name.endswith(".idx") and e.name[:-4] in self.members):
            return                                     # a sparse file's range index
        host_parts = [unquote(p, errors="backslashreplace") for p in parts[2:]]
        if any(p in ("", ".") or ".." in re.split(r"[/\\]", p) for p in host_parts):
            self.error(f"member {e.name!r} has an empty or '..' path component; not extracted")
            return
        display = f"{self.ctx.display}!{_host_path(host_parts)}"
        local = [(m.group(1) if (m := _DRIVE.match(p)) else p).replace("/", "_") for p in host_parts]
        local = [zr.safe_component(p) for p in ("uploads", parts[1], *local)]
        try:
            if not archive_zip.wanted(ex.base.joinpath(*local), zr.read_head(self.ctx.path, e)):
                if full := self.batcher.add("inputs", self._record(e, display, "unrecognised")):
                    yield full
                return
            path, digest = ex.extract(e, local)
        except ZipError as exc:
            self.error(f"member {e.name!r} {exc}")
            return
        except OSError as exc:
            self.error(f"member {e.name!r} could not be extracted ({exc.strerror or exc})")
            return
        if e.name + ".idx" in self.members:
            self.error(f"upload {display!r} was collected sparse: its ranges are stored packed "
                       "(see its .idx), so offsets inside it may be wrong")
        yield from archive_zip.dispatch(path, display, self.host, self.ctx.workdir, digest)


def parse(ctx: SourceContext) -> Iterator[Batch]:
    if archive_zip.depth() > archive_zip.MAX_NESTING:
        raise ZipError(f"a collection nested more than {archive_zip.MAX_NESTING} archives deep")
    try:
        d = zr.read_directory(ctx.path)
    except ZipError as exc:
        raise ZipError(f"not a readable collection container: {exc}") from None
    if d.problem:
        raise ZipError(f"collection container damaged: {d.problem}")
    yield from _Collection(ctx, d).run()


SOURCE = Source("velociraptor", sniff, parse)
