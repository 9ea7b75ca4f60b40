"""A ZIP reader for archives nobody vouches for: list, check, inflate and extract members.

``zipfile`` trusts an archive more than evidence deserves: it refuses a whole archive over one
name flagged UTF-8 that is not, cannot see members that share their bytes (the non-recursive
zip bomb) and hides the raw name bytes. This reader takes the central directory apart itself
(APPNOTE 6.3: end record, zip64 end record, entries with their zip64, extended-timestamp and
Info-ZIP Unicode-path extras; bytes prepended by a self-extractor are allowed for) and then:

- ``member_problem`` says why a member must not be read: symlink, device or FIFO (Unix mode
  in the external attributes), Windows reparse point, encryption (ZipCrypto or AES), a method
  other than stored, deflate or bzip2 (Deflate64, LZMA, … are named);
- ``size_problems`` finds zip bombs from the directory alone, before anything is inflated: a
  declared ratio above ``MAX_RATIO``, members overlapping another's bytes, data that runs into
  the directory;
- ``safe_parts`` turns a name into folder names to create, refusing absolute names and ``..``;
- ``open_member`` inflates one member, never past its declared size, CRC-32 checked at the end;
- ``Extractor`` copies members into one fresh folder (``O_EXCL``, no links followed), within
  ``MAX_TOTAL`` bytes per archive and the disk's free space.

Names are shown as UTF-8 with ``\\xNN`` for bytes that are not (``Entry.utf8`` says which);
the old DOS code page is not guessed at.
"""

from __future__ import annotations

import bz2
import datetime as dt
import functools
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deminer.sources.base import SourceError

MAX_TOTAL = 32 << 30          # uncompressed bytes one archive may extract
MAX_RATIO = 200               # declared size : compressed size, above RATIO_FLOOR
RATIO_FLOOR = 64 << 20        # smaller members may compress as they like (logs reach 100:1)
MAX_ENTRIES = 500_000         # a KAPE triage zip holds a few 10 000
MAX_DIRECTORY = 256 << 20     # central directory bytes
FREE_MARGIN = 256 << 20       # disk space left to the case store after an extraction
HEAD = 65536                  # what sniffers see (ingest.HEAD_BYTES)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
STORED, DEFLATE, BZIP2 = 0, 8, 12
_METHODS = {STORED: "stored", DEFLATE: "deflate", BZIP2: "bzip2", 9: "Deflate64", 14: "LZMA",
            93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES-encrypted"}
_CHUNK = 1 << 20
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ZipError(SourceError):
    """An archive, or one member of it, that cannot be read; the message says why."""


@dataclass(slots=True)
class Entry:
    index: int
    stored: bytes               # the name as written in the archive
    raw: bytes                  # the name's bytes to show and extract (Info-ZIP Unicode path wins)
    name: str                   # ``raw`` as text, undecodable bytes as \\xNN
    utf8: bool
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int
    mode: int | None            # Unix st_mode, when a Unix tool wrote the archive
    attrs: int                  # DOS attributes
    mtime: float | None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") or bool(self.mode and stat.S_ISDIR(self.mode)) or (
            self.mode is None and bool(self.attrs & 0x10))


@dataclass
class Directory:
    entries: list[Entry]
    end: int                    # where member data must stop (the central directory's start)
    problem: str | None = None  # damage after the entries that were read


def _extras(extra: bytes, sizes: list[int]) -> tuple[float | None, str | None]:
    """Apply the zip64 extra to ``sizes`` (size, compressed, offset); (UTC mtime, Unicode path)."""
    mtime: float | None = None
    unicode_path: str | None = None
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if tag == 0x0001:
            values = iter(struct.unpack_from(f"<{len(body) // 8}Q", body))
            for i, value in enumerate(sizes):
                if value == 0xFFFFFFFF:
                    sizes[i] = next(values, value)
        elif tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            mtime = float(struct.unpack_from("<i", body, 1)[0])
        elif tag == 0x7075 and len(body) >= 5 and body[0] == 1:
            unicode_path = body[5:].decode("utf-8", "strict") if _valid_utf8(body[5:]) else None
    return mtime, unicode_path


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _dos_time(date: int, time: int) -> float | None:
    try:
        return dt.datetime((date >> 9) + 1980, (date >> 5) & 15, date & 31, time >> 11,
                           (time >> 5) & 63, min((time & 31) * 2, 59), tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def read_directory(path: Path) -> Directory:
    """Every entry of the archive's central directory (ZipError when there is none to read)."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - (_EOCD.size + 65535)))
        tail = fh.read()
        pos = tail.rfind(b"PK\x05\x06", 0, max(0, len(tail) - _EOCD.size + 4))
        if pos < 0:
            raise ZipError("no end-of-central-directory record: truncated, or not a ZIP archive")
        _, disk, cd_disk, _, total, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
        end = size - len(tail) + pos
        if 0xFFFF in (total, disk) or 0xFFFFFFFF in (cd_size, cd_offset):
            fh.seek(max(0, end - 20 - _EOCD64.size))
            record = fh.read(_EOCD64.size)
            if len(record) < _EOCD64.size or record[:4] != b"PK\x06\x06":
                raise ZipError("the zip64 end-of-central-directory record is missing or damaged")
            _, _, _, _, disk, cd_disk, _, total, cd_size, cd_offset = _EOCD64.unpack(record)
            end -= 20 + _EOCD64.size
        if disk or cd_disk:
            raise ZipError("a split (multi-part) archive: join its parts first")
        start = end - cd_size
        if start < 0 or start < cd_offset:
            raise ZipError("the central directory does not fit where the archive says it is")
        if cd_size > MAX_DIRECTORY or total > MAX_ENTRIES:
            raise ZipError(f"{total} entries in {cd_size} directory bytes: over the "
                           f"{MAX_ENTRIES}-entry limit")
        fh.seek(start)
        central = fh.read(cd_size)
    # bytes before the archive proper (a self-extractor stub) shift every offset
    return _parse_central(central, start - cd_offset, start)


def _parse_central(central: bytes, shift: int, end: int) -> Directory:
    entries: list[Entry] = []
    pos = 0
    while pos + _CENTRAL.size <= len(central):
        (sig, made_by, _, flags, method, time, date, crc, compressed, size, name_len, extra_len,
         comment_len, _, _, external, offset) = _CENTRAL.unpack_from(central, pos)
        start = pos + _CENTRAL.size
        pos = start + name_len + extra_len + comment_len
        if sig != b"PK\x01\x02" or pos > len(central):
            return Directory(entries, end, f"the central directory is damaged after entry "
                             f"{len(entries)}; later members cannot be listed")
        stored = central[start:start + name_len]
        sizes = [size, compressed, offset]
        mtime, unicode_path = _extras(central[start + name_len:start + name_len + extra_len], sizes)
        raw = unicode_path.encode("utf-8") if unicode_path is not None else stored
        utf8 = _valid_utf8(raw)
        unix = made_by >> 8 in (3, 19) and external >> 16
        entries.append(Entry(
            len(entries), stored, raw, raw.decode("utf-8", "backslashreplace"), utf8, flags, method,
            crc, sizes[1], sizes[0], sizes[2] + shift, external >> 16 if unix else None,
            external & 0xFF, mtime if mtime is not None else _dos_time(date, time)))
    return Directory(entries, end)


@functools.lru_cache(maxsize=2)
def _cached(path: str, size: int, mtime_ns: int) -> Directory:
    return read_directory(Path(path))


def directory(path: Path) -> Directory:
    """``read_directory``, remembered: several sniffers ask about the same archive in turn."""
    st = path.stat()
    return _cached(str(path), st.st_size, st.st_mtime_ns)


class _Inflater(io.RawIOBase):
    """A member's bytes as written: never more than its declared size, CRC-32 checked at the end."""

    def __init__(self, fh: IO[bytes], entry: Entry) -> None:
        super().__init__()
        self.fh, self.entry = fh, entry
        self.left, self.produced, self.crc = entry.compressed, 0, 0
        self.pending, self.done = b"", False
        self.failure: ZipError | None = None      # raised once the bytes before it are read
        self.zlib = zlib.decompressobj(-15) if entry.method == DEFLATE else None
        self.bz2 = bz2.BZ2Decompressor() if entry.method == BZIP2 else None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.fh.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.done:
            self.pending = self._next()
        if not self.pending and self.failure is not None:
            raise self.failure
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _read(self) -> bytes:
        data = self.fh.read(min(_CHUNK, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data

    def _next(self) -> bytes:
        try:
            if self.zlib is not None:
                data = self.zlib.unconsumed_tail or self._read()
                out = self.zlib.decompress(data, _CHUNK)
                finished = self.zlib.eof or (not data and not out)
            elif self.bz2 is not None:
                data = self._read() if self.bz2.needs_input else b""
                out = self.bz2.decompress(data, _CHUNK)
                finished = self.bz2.eof or (not data and not out)
            else:
                out = self._read()
                finished = not out
        except (zlib.error, EOFError, OSError) as exc:   # bz2 reports bad data as OSError
            raise ZipError(f"its compressed data is damaged ({exc})") from None
        self.produced += len(out)
        if self.produced > self.entry.size:
            raise ZipError(f"inflates past its declared {self.entry.size} bytes "
                           "(a lying header or a zip bomb)")
        self.crc = zlib.crc32(out, self.crc)
        if finished:
            self.done = True
            if self.produced != self.entry.size:
                self.failure = ZipError(f"holds {self.produced} bytes where its header says "
                                        f"{self.entry.size}: truncated or damaged")
            elif self.crc != self.entry.crc:
                self.failure = ZipError("fails its CRC-32 check: its content is damaged")
        return out


def open_member(path: Path, entry: Entry) -> io.BufferedReader:
    """A reader of one member's content (``member_problem`` must have passed it)."""
    fh = path.open("rb")
    try:
        fh.seek(entry.offset)
        header = fh.read(_LOCAL.size)
        if len(header) < _LOCAL.size or header[:4] != b"PK\x03\x04":
            raise ZipError(f"has no local header at offset {entry.offset}: damaged or truncated")
        name_len, extra_len = _LOCAL.unpack(header)[-2:]
        if fh.read(name_len) != entry.stored:
            raise ZipError("has a local header naming another file than the directory does")
        fh.seek(extra_len, 1)
    except BaseException:
        fh.close()
        raise
    return io.BufferedReader(_Inflater(fh, entry), _CHUNK)


def read_head(path: Path, entry: Entry, size: int = HEAD) -> bytes:
    with open_member(path, entry) as fh:
        return fh.read(size)


def member_problem(entry: Entry) -> str | None:
    """Why a member must not be read, or None."""
    mode = entry.mode
    if mode is not None and stat.S_ISLNK(mode):
        return "is a symbolic link"
    if mode is not None and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is a device, FIFO or socket"
    if mode is None and entry.attrs & 0x400:
        return "is a Windows reparse point (a link)"
    if entry.flags & 0x1 or entry.method == 99:
        kind = "AES" if entry.method == 99 else "ZipCrypto"
        return f"is encrypted ({kind}); there is no password to try"
    if entry.method not in (STORED, DEFLATE, BZIP2):
        return (f"uses compression method {entry.method} "
                f"({_METHODS.get(entry.method, 'unknown')}), which cannot be read here; "
                "re-pack the archive with deflate")
    if entry.method == STORED and entry.compressed != entry.size:
        return "is stored uncompressed, yet its two sizes differ: damaged"
    return None


def safe_component(part: str) -> str:
    """One path component safe to create: no control characters, at most ~200 bytes."""
    part = _CONTROL.sub("_", part)
    if len(part.encode("utf-8", "surrogateescape")) > 200:
        digest = hashlib.sha1(part.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        part = part[:80] + "~" + digest
    return part


def safe_parts(raw: bytes) -> list[str]:
    """A member's path as folder names to create; ZipError if it is absolute or climbs out."""
    if re.match(rb"(?:[/\\]|[A-Za-z]:)", raw):
        raise ZipError("has an absolute path")
    parts = [p for p in re.split(rb"[/\\]", raw) if p not in (b"", b".")]
    if b".." in parts:
        raise ZipError("has a '..' part (it would land outside the extraction folder)")
    if not parts:
        raise ZipError("has an empty name")
    return [safe_component(p.decode("utf-8", "backslashreplace")) for p in parts]


def size_problems(d: Directory) -> dict[int, str]:
    """Zip-bomb checks from the directory alone: ratio, overlapping members, data past the end."""
    problems: dict[int, str] = {}
    for e in d.entries:
        if e.size > RATIO_FLOOR and e.size > MAX_RATIO * max(e.compressed, 1):
            problems[e.index] = (f"declares {e.size} bytes from {e.compressed} "
                                 f"({e.size // max(e.compressed, 1)}:1, over the {MAX_RATIO}:1 "
                                 "limit); refused as a possible zip bomb")
    reach = 0
    for start, stop, index in sorted((e.offset, e.offset + _LOCAL.size + len(e.stored)
                                      + e.compressed, e.index) for e in d.entries):
        if start < reach:
            problems.setdefault(index, "shares its bytes with another member (overlapping "
                                "entries: a zip bomb or a damaged archive)")
        elif stop > d.end:
            problems.setdefault(index, "has data running into the central directory: damaged")
        reach = max(reach, stop)
    return problems


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class Extractor:
    """Copies members into one fresh folder, within the archive's byte budget."""

    def __init__(self, archive: Path, base: Path) -> None:
        self.archive, self.base, self.total = archive, base, 0

    @staticmethod
    def fresh(parent: Path, name: str) -> Path:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            folder = parent / (name if n == 0 else f"{name}.{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder.resolve()
        raise SourceError(f"no free extraction folder under {parent}")

    def extract(self, entry: Entry, parts: list[str]) -> tuple[Path, str]:
        """Extract one member to ``base/parts``; returns (path, sha256). ZipError/OSError."""
        if self.total + entry.size > MAX_TOTAL:
            raise ZipError(f"would take the archive past {MAX_TOTAL} extracted bytes; skipped")
        if shutil.disk_usage(self.base).free < entry.size + FREE_MARGIN:
            raise ZipError(f"needs {entry.size} bytes and the case folder's disk is nearly full")
        target = self.base.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.base):
            raise ZipError("would land outside the extraction folder")
        sha = hashlib.sha256()
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise ZipError("has the same name as another member (once made safe); this copy "
                           "was not extracted") from None
        try:
            with os.fdopen(fd, "wb") as out, open_member(self.archive, entry) as src:
                while chunk := src.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        if entry.mtime is not None:
            # auth logs take their year from the file's mtime: keep the archive's
            os.utime(target, (entry.mtime, entry.mtime))
        self.total += entry.size
        return target, sha.hexdigest()


