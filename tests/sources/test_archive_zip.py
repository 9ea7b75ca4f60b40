"""The ZIP source and its reader, on zips written by ``zipfile`` and by hand (hostile ones).

``build_zip`` lays a zip down byte by byte so a test can say exactly what a hostile archive
holds: names with ``..``, absolute names, symlink modes, encryption flags, methods we do not
read, names flagged UTF-8 that are not, sizes and CRCs that lie, members that share bytes,
and a 10 GiB deflate bomb (repeated full-flush blocks: ~10 MiB on disk, made in well under a
second, and never inflated).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strat

import deminer.sources
from deminer.case import Case
from deminer.scenarios import win_events as wg
from deminer.scenarios.auth_log import AuthLog
from deminer.sources import SOURCES, archive_zip, velociraptor, zipread
from deminer.sources.base import Source, SourceError
from deminer.sources.ingest import ingest, pick_source
from tests.sources.unseekable import Unseekable

Row = dict[str, Any]


def proposed_sources(*extra: Source) -> tuple[Source, ...]:
    """SOURCES as registered, with velociraptor and archive_zip just before winevent_json."""
    base = [s for s in (*SOURCES, *extra) if s.name not in ("velociraptor", "archive_zip")]
    at = [s.name for s in base].index("winevent_json")
    return (*base[:at], velociraptor.SOURCE, archive_zip.SOURCE, *base[at:])


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Source, ...]:
    # members are dispatched through deminer.sources.SOURCES: make it the proposed list
    sources = proposed_sources()
    monkeypatch.setattr(deminer.sources, "SOURCES", sources)
    monkeypatch.chdir(tmp_path)           # inputs given relative: displays read "ev.zip!…"
    return sources


# --- a zip written byte by byte ------------------------------------------------------------

@dataclass
class M:
    name: bytes
    data: bytes = b""
    method: int = 0                 # 0 stored, 8 deflate
    flags: int = 0
    mode: int | None = None         # Unix st_mode (made by Unix)
    size: int | None = None         # declared size, if not len(data)
    crc: int | None = None
    payload: bytes | None = None    # the stored bytes, if not data (compressed)
    offset: int | None = None       # point at an earlier member's local header


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def build_zip(members: list[M]) -> bytes:
    out, central = bytearray(), bytearray()
    for m in members:
        payload = m.payload if m.payload is not None else deflate(m.data) if m.method == 8 else m.data
        size = len(m.data) if m.size is None else m.size
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        z64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(payload)) if z64 else b""
        s32, c32 = (0xFFFFFFFF, 0xFFFFFFFF) if z64 else (size, len(payload))
        offset = len(out) if m.offset is None else m.offset
        if m.offset is None:
            out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, m.flags, m.method, 0, 0x5865, crc, c32,
                               s32, len(m.name), len(extra)) + m.name + extra + payload
        made_by, attrs = ((3 << 8) | 45, m.mode << 16) if m.mode is not None else (45, 0)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", made_by, 45, m.flags, m.method, 0,
                               0x5865, crc, c32, s32, len(m.name), len(extra), 0, 0, 0, attrs, offset)
        central += m.name + extra
    start = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                 len(central), start, 0)
    return bytes(out)


def auth_log_bytes(start: dt.datetime = dt.datetime(2024, 3, 30, 15, 0)) -> bytes:
    log = AuthLog(host="web1", start=start)
    log.brute_force("203.0.113.7", ["root"], attempts=12, success_user="root")
    return "".join(line + "\n" for line in log.lines()).encode()


def zip_of(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, (2024, 3, 31, 12, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def run(tmp_path: Path, *inputs: Path) -> tuple[Case, Any]:
    case = Case(tmp_path / "case")
    relative = [p.relative_to(tmp_path) if p.is_relative_to(tmp_path) else p for p in inputs]
    return case, ingest(case, relative, sources=deminer.sources.SOURCES)


# --- behaviour -----------------------------------------------------------------------------

def test_members_go_to_their_sources_named_archive_bang_member(tmp_path: Path) -> None:
    inner = zip_of({"inner/auth.log": auth_log_bytes()})
    export = wg.export(wg.intrusion()).encode()
    archive = tmp_path / "ev.zip"
    archive.write_bytes(zip_of({"var/log/auth.log": auth_log_bytes(), "exports/security.xml": export,
                                "README.txt": b"notes from the admin\n", "nested.zip": inner}))
    case, summary = run(tmp_path, archive)
    assert summary.errors == []
    kinds = {r["path"]: r["kind"] for r in case.query("SELECT path, kind FROM inputs")}
    assert kinds == {"ev.zip": "archive_zip", "ev.zip!var/log/auth.log": "auth_log",
                     "ev.zip!exports/security.xml": "winevent_xml", "ev.zip!README.txt": "unrecognised",
                     "ev.zip!nested.zip": "archive_zip", "ev.zip!nested.zip!inner/auth.log": "auth_log"}
    sources = {r["source"]: r["n"] for r in case.query(
        "SELECT source, count(*) AS n FROM events GROUP BY source")}
    assert set(sources) == {"ev.zip!var/log/auth.log", "ev.zip!exports/security.xml",
                            "ev.zip!nested.zip!inner/auth.log"}
    ok = case.query("SELECT user, src_ip FROM events WHERE event = 'logon_success' AND source = "
                    "'ev.zip!var/log/auth.log'")
    assert ok == [{"user": "root", "src_ip": "203.0.113.7"}]
    # extracted below the case folder, by archive hash; what no source reads is not copied
    extracted = files_under(tmp_path / "case" / "evidence" / "zip")
    names = sorted(p.name for p in extracted)
    assert names == ["auth.log", "auth.log", "nested.zip", "security.xml"]
    sha = zipread.sha256_file(archive)[:16]
    assert (tmp_path / "case/evidence/zip" / sha / "var/log/auth.log").read_bytes() == auth_log_bytes()
    member = case.query("SELECT sha256, size FROM inputs WHERE path = 'ev.zip!var/log/auth.log'")[0]
    assert member["size"] == len(auth_log_bytes())
    # the zip's timestamp is kept: auth logs take their year from the file's mtime
    mtime = dt.datetime.fromtimestamp((tmp_path / "case/evidence/zip" / sha / "var/log/auth.log")
                                      .stat().st_mtime, dt.UTC)
    assert mtime.year == 2024


def test_hostile_members_are_refused_by_name_and_the_rest_is_read(tmp_path: Path) -> None:
    good = auth_log_bytes()
    evil = b"pwned\n"
    archive = tmp_path / "hostile.zip"
    archive.write_bytes(build_zip([
        M(b"../../evil-dotdot.txt", evil),
        M(b"/tmp/evil-absolute.txt", evil),
        M(b"C:\\evil-drive.txt", evil),
        M(b"logs\\..\\..\\evil-backslash.txt", evil),
        M(b"evil-link", b"/etc/shadow", mode=0o120777),
        M(b"evil-fifo", b"", mode=0o010644),
        M(b"secret.log", good, flags=0x1),
        M(b"big.log", good, method=9, payload=b"\x00" * 40),
        M(b"logs/caf\xe9-\x1b[31m.log", good, method=8, flags=0x800),   # flagged UTF-8, is not
        M(b"logs/auth.log", good, method=8),
    ]))
    before = files_under(tmp_path)
    case, summary = run(tmp_path, archive)
    messages = [r["message"] for r in case.query("SELECT message FROM errors WHERE source = 'hostile.zip'")]
    expect = {"'../../evil-dotdot.txt' has a '..' part", "'/tmp/evil-absolute.txt' has an absolute path",
              "'C:\\\\evil-drive.txt' has an absolute path",
              "'logs\\\\..\\\\..\\\\evil-backslash.txt' has a '..'",
              "'evil-link' is a symbolic link", "'evil-fifo' is a device, FIFO or socket",
              "'secret.log' is encrypted (ZipCrypto)", "'big.log' uses compression method 9 (Deflate64)",
              "not UTF-8"}
    for text in expect:
        assert any(text in m for m in messages), (text, messages)
    assert all(m.startswith("member '") or "not UTF-8" in m for m in messages)
    # both readable logs were ingested, the mis-flagged name shown with an escape
    sources = {r["source"] for r in case.query("SELECT DISTINCT source FROM events")}
    assert sources == {"hostile.zip!logs/auth.log", "hostile.zip!logs/caf\\xe9-\x1b[31m.log"}
    # nothing landed outside the case folder, and on disk the control character is gone
    new = files_under(tmp_path) - before
    assert all(p.is_relative_to(tmp_path / "case") for p in new)
    assert not any("evil" in p.name for p in files_under(tmp_path))
    assert any(p.name == "caf\\xe9-_[31m.log" for p in new)
    assert summary.errors == []            # the archive itself was read: problems are rows


def bomb_payload(gib: int) -> bytes:
    """``gib`` GiB of zeros as raw deflate: one full-flush block of 1 MiB, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (gib << 10) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def test_bomb_payload_really_inflates_to_zeros() -> None:
    payload = bomb_payload(1)[:len(bomb_payload(1)) // 1024 * 3]      # 3 blocks of the same
    d = zlib.decompressobj(-15)
    assert d.decompress(payload) == bytes(3 << 20)


def test_ten_gib_zip_bomb_is_refused_fast_without_writing_it(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # were the ratio check broken, the cap (another message) stops the copy: never 10 GiB on disk
    monkeypatch.setattr(zipread, "MAX_TOTAL", 64 << 20)
    started = time.monotonic()
    payload = bomb_payload(10)
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(build_zip([M(b"logs/zeros.log", b"", method=8, size=10 << 30, crc=0,
                                     payload=payload), M(b"auth.log", auth_log_bytes(), method=8)]))
    assert archive.stat().st_size < 12 << 20
    case, _ = run(tmp_path, archive)
    elapsed = time.monotonic() - started
    message = case.query("SELECT message FROM errors")[0]["message"]
    assert "'logs/zeros.log'" in message and f"declares {10 << 30} bytes" in message
    assert "zip bomb" in message
    assert case.count("events") > 0                        # the other member was read
    written = sum(p.stat().st_size for p in files_under(tmp_path / "case/evidence"))
    assert written < 1 << 20
    assert elapsed < 10, elapsed


def test_overlapping_members_and_lying_sizes_are_refused(tmp_path: Path) -> None:
    data = b"A" * 5000
    archive = tmp_path / "overlap.zip"
    members = [M(b"a.log", data, method=8)]
    members += [M(b"a.log", data, method=8, offset=0) for _ in range(3)]      # share a.log's bytes
    members.append(M(b"liar.log", bytes(1 << 20), method=8, size=1000, crc=zlib.crc32(bytes(1000))))
    members.append(M(b"short.log", b"x" * 100, size=200))                     # stored, sizes differ
    archive.write_bytes(build_zip(members))
    case, _ = run(tmp_path, archive)
    messages = [r["message"] for r in case.query("SELECT message FROM errors")]
    assert sum("overlapping entries" in m for m in messages) == 3
    assert any("'liar.log' inflates past its declared 1000 bytes" in m for m in messages)
    assert any("'short.log' is stored uncompressed, yet its two sizes differ" in m for m in messages)
    leftovers = [p.name for p in files_under(tmp_path / "case/evidence")]
    assert "liar.log" not in leftovers                    # the half-written copy was removed


def test_damaged_member_fails_its_crc_and_the_others_are_read(tmp_path: Path) -> None:
    data = auth_log_bytes()
    blob = bytearray(zip_of({"a/auth.log": data, "b/auth.log": data}, zipfile.ZIP_STORED))
    at = blob.find(b"sshd")                                  # inside a/auth.log's stored bytes
    blob[at:at + 4] = b"SSHD"
    (tmp_path / "crc.zip").write_bytes(bytes(blob))
    case, _ = run(tmp_path, tmp_path / "crc.zip")
    assert any("'a/auth.log' fails its CRC-32 check" in r["message"]
               for r in case.query("SELECT message FROM errors"))
    assert {r["source"] for r in case.query("SELECT DISTINCT source FROM events")} == {"crc.zip!b/auth.log"}


def test_total_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipread, "MAX_TOTAL", len(auth_log_bytes()) + 10)
    log = auth_log_bytes()
    (tmp_path / "two.zip").write_bytes(zip_of({"1/auth.log": log, "2/auth.log": log}))
    case, _ = run(tmp_path, tmp_path / "two.zip")
    assert any("'2/auth.log' would take the archive past" in r["message"]
               for r in case.query("SELECT message FROM errors"))
    assert case.query("SELECT DISTINCT source FROM events") == [{"source": "two.zip!1/auth.log"}]


def test_truncated_and_fake_zips_get_clear_errors_and_the_rest_still_works(tmp_path: Path) -> None:
    whole = zip_of({"auth.log": auth_log_bytes()})
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "junk.zip").write_bytes(os.urandom(3000))
    (tmp_path / "text.zip").write_bytes(auth_log_bytes())     # a log someone named .zip
    (tmp_path / "ok.zip").write_bytes(whole)
    case, summary = run(tmp_path, *(tmp_path / n for n in ("cut.zip", "junk.zip", "text.zip", "ok.zip")))
    errors = {r["source"]: r["message"] for r in case.query("SELECT source, message FROM errors")}
    assert "not a readable ZIP archive: no end-of-central-directory record" in errors["cut.zip"]
    assert "not a readable ZIP archive" in errors["junk.zip"]
    kinds = {r["path"]: r["kind"] for r in case.query("SELECT path, kind FROM inputs")}
    assert kinds["text.zip"] == "auth_log" and kinds["ok.zip!auth.log"] == "auth_log"
    assert len(summary.errors) == 2


def test_nesting_stops_after_two_levels(tmp_path: Path) -> None:
    blob = zip_of({"auth.log": auth_log_bytes()})
    for level in (3, 2, 1):
        blob = zip_of({f"level{level}.zip": blob})
    (tmp_path / "deep.zip").write_bytes(blob)
    case, _ = run(tmp_path, tmp_path / "deep.zip")
    rows = {r["path"]: r for r in case.query("SELECT path, kind, error FROM inputs")}
    assert rows["deep.zip!level1.zip!level2.zip"]["error"] is None
    refused = rows["deep.zip!level1.zip!level2.zip!level3.zip"]
    assert "nested more than 2 archives deep" in refused["error"]
    assert case.count("events") == 0
    assert archive_zip.depth() == 0                     # the counter is back where it started


def test_zipfile_variants_read_back(tmp_path: Path) -> None:
    data = auth_log_bytes() * 3
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        stream = Unseekable()
        with zipfile.ZipFile(stream, "w", method) as zf:
            with zf.open("a/b.log", "w", force_zip64=True) as fh:
                fh.write(data)
            zf.writestr("c.txt", b"small")
        path = tmp_path / f"m{method}.zip"
        path.write_bytes(b"MZ self-extractor stub" * 10 + bytes(stream.buf))   # prepended bytes too
        d = zipread.read_directory(path)
        assert [(e.name, e.size) for e in d.entries] == [("a/b.log", len(data)), ("c.txt", 5)]
        assert d.entries[0].flags & 0x8                  # data descriptors were used
        with zipread.open_member(path, d.entries[0]) as fh:
            assert fh.read() == data


def test_sniffers_do_not_fight(tmp_path: Path, registered: tuple[Source, ...]) -> None:
    events = [wg.to_winlogbeat(e) for e in wg.intrusion()]
    lines = "".join(json.dumps(e) + "\n" for e in events).encode()
    json_zip = tmp_path / "dataset.zip"
    json_zip.write_bytes(zip_of({"a.json": lines, "b.json": lines}))
    mixed = tmp_path / "mixed.zip"
    mixed.write_bytes(zip_of({"a.json": lines, "auth.log": auth_log_bytes()}))
    office = tmp_path / "report.docx"
    office.write_bytes(zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"}))

    def pick(p: Path) -> str | None:
        source = pick_source(p, p.read_bytes()[:65536], registered)
        return source.name if source else None

    assert not archive_zip.sniff(json_zip, json_zip.read_bytes()[:65536])
    assert pick(json_zip) == "winevent_json"
    assert pick(mixed) == "archive_zip"
    assert pick(office) is None
    shared = Path(__file__).resolve().parents[2] / "../shared/data/windows-jsonl"
    for real in sorted(shared.glob("*.zip"))[:2]:
        assert pick(real) == "winevent_json", real


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(strat.lists(strat.tuples(strat.integers(0, 10_000), strat.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_archives_fail_only_with_clear_errors(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    blob = bytearray(zip_of({"a.log": auth_log_bytes(), "b/c.txt": b"x" * 300, "d.zip": zip_of({"e": b"e"})}))
    for at, value in flips:
        blob[at % len(blob)] = value
    path = tmp_path / "fuzz.zip"
    path.write_bytes(bytes(blob))
    try:
        d = zipread.read_directory(path)
    except SourceError:
        return
    for e in d.entries:
        try:
            if zipread.member_problem(e) is None:
                zipread.safe_parts(e.raw)
                with zipread.open_member(path, e) as fh:
                    fh.read()
        except SourceError:
            pass
    with Case(tmp_path / "case") as case:
        ingest(case, [path], sources=deminer.sources.SOURCES)    # never raises
