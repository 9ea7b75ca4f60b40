"""Evidence bundles written by ``deminer collect`` → the tables they hold, their files and logs.

A bundle (format in ``deminer/collect/bundle.py``) is a ``.tar.gz`` whose first member is
``manifest.json``; then ``files/<sha256>``, ``raw/<host path>`` and ``tables/<table>.jsonl``.
It is read as a stream, one member at a time, and trusted no further than it can be checked:

- every member's sha256 is compared with the manifest (a mismatch or an unlisted member is an
  ``errors`` row naming bundle and member);
- absolute names, ``..``, links, devices and FIFOs are never extracted (an ``errors`` row);
- ``files/<sha256>`` lands in ``workdir/files/<sha256>`` only when its content has that hash
  (the folder is shared by every bundle of the case, and the YARA detector scans it);
- ``raw/…`` lands in ``workdir/raw/<host>/…`` and is then ingested by the source that
  recognises it (auth logs, rotated ``.gz`` ones too);
- ``tables/<table>.jsonl`` rows become batches of that table, with the manifest's host.

A truncated or corrupt bundle keeps what was read before the damage, plus an ``errors`` row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson

from deminer.model import TABLES
from deminer.sources.base import Batch, Batcher, Source, SourceContext, SourceError, host_id

FORMAT = "deminer-bundle"
MAX_MANIFEST = 64 << 20          # bytes; a manifest lists members, it is never this big
MAX_ROW = 16 << 20               # one JSONL row
MAX_MEMBER = 8 << 30             # one member; the collector caps files at 32 MiB by default
MAX_ERRORS = 10_000              # errors rows per bundle; a hostile one could have millions
# Tables a bundle may fill: host evidence only, never conclusions or the case's own records.
BUNDLE_TABLES = frozenset(TABLES) - {"findings", "inputs", "iocs"}
_COPY = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FORMAT_RX = re.compile(rb'"format"\s*:\s*"deminer-bundle"')
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
Row = dict[str, Any]


def _octal(field: bytes) -> int:
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return -1


def sniff(path: Path, head: bytes) -> bool:
    """gzip whose tar starts with ``manifest.json`` saying ``"format": "deminer-bundle"``."""
    if head[:2] != b"\x1f\x8b":
        return False
    try:       # decompress only the head, and at most 1 MiB of it (no gzip bombs here)
        data = zlib.decompressobj(31).decompress(head, 1 << 20)
    except zlib.error:
        return False
    offset = 0
    for _ in range(4):       # pax / GNU long-name headers may come first
        header = data[offset:offset + 512]
        if len(header) < 512 or header[257:262] != b"ustar":
            return False
        size = _octal(header[124:136])
        if size < 0:
            return False
        if header[156:157] in (b"x", b"g", b"L"):
            offset += 512 + (size + 511) // 512 * 512
            continue
        if header[:100].split(b"\0", 1)[0] != b"manifest.json":
            return False
        return _FORMAT_RX.search(data[offset + 512:offset + 512 + min(size, 4096)]) is not None
    return False


class _Hashing(io.RawIOBase):
    """A member's bytes, hashed as they are read."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.fh.read(len(buffer))
        self.sha.update(data)
        buffer[:len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Hash what was not read yet too, and return the hex digest."""
        for chunk in iter(lambda: self.fh.read(_COPY), b""):
            self.sha.update(chunk)
        return self.sha.hexdigest()


def _safe_dir_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:128]
    return name if name.strip(".") else "_"


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be extracted, or None."""
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO"
    if member.isdir():
        return None
    if not member.isfile():
        return "is not a regular file"
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if any(part in ("..", "") for part in name.split("/")) or "\\" in name or "\0" in name:
        return "has '..', an empty part or a backslash in its path"
    return None


class _Reader:
    """One pass over one bundle."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.batcher = Batcher()
        self.errors: list[Row] = []
        self.host: str | None = host_id(ctx.host)
        self.members: dict[str, str] = {}
        self.seen: set[str] = set()
        self.raw: list[tuple[Path, str, str]] = []       # (extracted path, host path, member)
        self.dropped_errors = 0

    def error(self, message: str, stage: str = "ingest", source: str | None = None) -> None:
        if len(self.errors) >= MAX_ERRORS:
            self.dropped_errors += 1
            return
        self.errors.append({"host": self.host, "ts": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                            "source": source or self.ctx.display, "stage": stage,
                            "message": message})

    def _open(self) -> tarfile.TarFile:
        try:
            return tarfile.open(self.ctx.path, mode="r|gz")
        except _READ_ERRORS as exc:
            raise SourceError(f"not a readable tar.gz ({type(exc).__name__}: {exc})") from None

    def run(self) -> Iterator[Batch]:
        with self._open() as tar:
            try:
                first = tar.next()
            except _READ_ERRORS as exc:
                raise SourceError(f"not a readable tar.gz ({type(exc).__name__}: {exc})") from None
            if first is None or first.name != "manifest.json" or not first.isfile():
                raise SourceError("the first member is not manifest.json")
            yield self._manifest(tar, first)
            last = first.name
            try:
                while (member := tar.next()) is not None:
                    # stream mode keeps every header it has read: forget them, memory stays flat
                    cast(Any, tar).members.clear()
                    yield from self._member(tar, member)
                    last = member.name
            except _READ_ERRORS as exc:
                self.error(f"bundle is truncated or corrupt after member {last!r} "
                           f"({type(exc).__name__}: {exc}); the members before it were read")
        missing = sorted(set(self.members) - self.seen)
        if missing:
            self.error(f"{len(missing)} member(s) listed in the manifest are missing from the "
                       f"bundle (first: {missing[0]!r})")
        yield from self.batcher.flush()
        yield from self._ingest_raw()
        if self.dropped_errors:
            self.errors.append({**self.errors[-1], "message": f"{self.dropped_errors} more problems "
                                "like the ones above were not recorded"})
        if self.errors:
            yield "errors", self.errors

    # -- manifest --------------------------------------------------------------------------
    def _manifest(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> Batch:
        fh = tar.extractfile(member)
        if fh is None or member.size > MAX_MANIFEST:
            raise SourceError("manifest.json is missing or too large")
        try:
            manifest = orjson.loads(fh.read())
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"manifest.json is not valid JSON ({exc})") from None
        except _READ_ERRORS as exc:
            raise SourceError(f"bundle is truncated or corrupt in manifest.json ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise SourceError(f"manifest.json does not say \"format\": \"{FORMAT}\"")
        ident: dict[str, Any] = manifest["host"] if isinstance(manifest.get("host"), dict) else {}
        members = manifest.get("members")
        if isinstance(members, dict):
            self.members = {str(k): str(v) for k, v in members.items()}
        hostname = ident.get("hostname")
        self.host = host_id(self.ctx.host) or host_id(str(hostname) if hostname else None)
        ips = ident.get("ips")
        return "hosts", [{
            "host": self.host, "hostname": hostname, "os": ident.get("os"),
            "ips": [str(i) for i in ips] if isinstance(ips, list) else None,
            "machine_id": ident.get("machine_id"), "collected_at": manifest.get("collected_at"),
            "collector_version": manifest.get("collector_version"),
            "is_root": ident.get("is_root"), "source": self.ctx.display,
        }]

    # -- members ---------------------------------------------------------------------------
    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[Batch]:
        name = member.name
        problem = _unsafe(member)
        if problem:
            self.seen.add(name)
            self.error(f"member {name!r} {problem}; not extracted")
            return
        if member.isdir():
            return
        if name in self.seen:
            self.error(f"member {name!r} appears twice; the second copy was ignored")
            return
        self.seen.add(name)
        expected = self.members.get(name)
        if expected is None:
            self.error(f"member {name!r} is not listed in the manifest; its content is unverified")
        fh = tar.extractfile(member)
        if fh is None:
            return
        if member.size > MAX_MEMBER:
            self.error(f"member {name!r} is larger than {MAX_MEMBER >> 30} GiB; skipped")
            return
        reader = _Hashing(fh)
        if name.startswith("tables/") and name.endswith(".jsonl"):
            yield from self._table(name, reader)
        elif name.startswith("files/"):
            self._file(name, reader, expected)
            return
        elif name.startswith("raw/"):
            self._raw(name, reader, member.mtime)
        else:
            self.error(f"member {name!r} is not part of the bundle format; skipped")
        digest = reader.finish()
        if expected is not None and digest != expected:
            self.error(f"member {name!r} does not match its sha256 in the manifest "
                       f"(manifest {expected[:16]}…, content {digest[:16]}…); it was read anyway")

    def _table(self, name: str, reader: _Hashing) -> Iterator[Batch]:
        table = name[len("tables/"):-len(".jsonl")]
        if table not in BUNDLE_TABLES:
            self.error(f"member {name!r}: {table!r} is not a table a bundle may carry; skipped")
            return
        columns = set(TABLES[table].names)
        stream = io.BufferedReader(reader, _COPY)
        bad, first_bad, lineno = 0, 0, 0
        while line := stream.readline(MAX_ROW):
            lineno += 1
            if not line.endswith(b"\n") and len(line) >= MAX_ROW:
                while (more := stream.readline(MAX_ROW)) and not more.endswith(b"\n"):
                    pass        # the rest of an over-long row
                row: Any = None
            else:
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    row = None
            if not isinstance(row, dict):
                bad, first_bad = bad + 1, first_bad or lineno
                continue
            row = {k: v for k, v in row.items() if k in columns}
            if table == "errors":
                # keep the collector's own stage visible; the row itself is a collect error
                stage = row.get("stage")
                if stage and stage != "collect":
                    row["message"] = f"[{stage}] {row.get('message')}"
                row["stage"] = "collect"
            if "host" in columns:
                row["host"] = self.host
            if full := self.batcher.add(table, row):
                yield full
        if bad:
            self.error(f"member {name!r}: {bad} line(s) are not JSON objects (first at line "
                       f"{first_bad}); the other rows were kept")

    def _extract(self, reader: _Hashing, target: Path, mtime: float | None = None) -> None:
        """Copy a member to ``target`` via a temporary name: never a half-written file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with temp.open("wb") as out:
                for chunk in iter(lambda: reader.read(_COPY), b""):
                    out.write(chunk)
            if mtime is not None:
                # the log's year is inferred from its mtime: keep the collector's one
                os.utime(temp, (mtime, mtime))
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _file(self, name: str, reader: _Hashing, expected: str | None) -> None:
        digest_name = name[len("files/"):]
        if not _SHA256.match(digest_name):
            self.error(f"member {name!r} is not named by a sha256; skipped")
            reader.finish()
            return
        folder = self.ctx.workdir / "files"
        target = folder / digest_name
        if target.exists():
            digest = reader.finish()          # content-addressed: already there
        else:
            temp = folder / f".{digest_name}.unverified"
            try:
                self._extract(reader, temp)
            except OSError as exc:
                self.error(f"member {name!r} could not be extracted ({exc.strerror or exc})")
                return
            digest = reader.finish()
            if digest == digest_name:
                os.replace(temp, target)
            else:
                temp.unlink()
        if digest != digest_name:
            self.error(f"member {name!r} has content with sha256 {digest[:16]}…, not its name; "
                       "not stored")
        elif expected is not None and expected != digest:
            self.error(f"member {name!r} does not match its sha256 in the manifest")

    def _raw(self, name: str, reader: _Hashing, mtime: float) -> None:
        base = (self.ctx.workdir / "raw" / _safe_dir_name(self.host or "unknown-host")).resolve()
        target = base.joinpath(*name.split("/")[1:])
        if os.path.commonpath([base, target.resolve()]) != str(base):
            self.error(f"member {name!r} would land outside the extraction folder; not extracted")
            return
        try:
            self._extract(reader, target, mtime)
        except OSError as exc:
            self.error(f"member {name!r} could not be extracted ({exc.strerror or exc})")
            return
        self.raw.append((target, name[len("raw"):], name))

    # -- the logs the collector copied -----------------------------------------------------
    def _ingest_raw(self) -> Iterator[Batch]:
        from deminer.sources import SOURCES  # here: SOURCES imports this module
        from deminer.sources.ingest import HEAD_BYTES, pick_source

        sources = [s for s in SOURCES if s.name != SOURCE.name]    # no bundles in bundles
        for path, host_path, member in self.raw:
            record: Row = {"path": f"{self.ctx.display}:{member}", "host": self.host,
                           "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                           "sha256": self.members.get(member)}
            try:
                with path.open("rb") as fh:
                    head = fh.read(HEAD_BYTES)
                record["size"] = path.stat().st_size
            except OSError as exc:
                self.error(f"member {member!r} cannot be read back ({exc.strerror or exc})")
                continue
            source = pick_source(path, head, sources)
            if source is None:
                yield "inputs", [{**record, "kind": "unrecognised"}]
                continue
            sub = SourceContext(path=path, display=host_path, host=self.host, workdir=self.ctx.workdir)
            rows = 0
            try:
                for table, batch in source.parse(sub):
                    rows += len(batch)
                    yield table, batch
            except SourceError as exc:
                record["error"] = f"{source.name}: {exc}"
            except (OSError, ValueError, UnicodeError, EOFError) as exc:
                record["error"] = f"{source.name}: unreadable input ({type(exc).__name__}: {exc})"
            if "error" in record:
                self.error(f"member {member!r}: {record['error']}", source=record["path"])
            yield "inputs", [{**record, "kind": source.name, "rows": rows}]


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from _Reader(ctx).run()


SOURCE = Source("bundle", sniff, parse)
