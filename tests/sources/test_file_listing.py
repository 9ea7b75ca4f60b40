"""File listings as MFTECmd, PowerShell, Get-FileHash, Velociraptor and find write them."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import hives as g
from deminer.sources import file_listing as fl
from deminer.sources.base import SourceContext
from deminer.sources.ingest import ingest

SHA_SVCHOST = hashlib.sha256(b"fake svchost").hexdigest()
SHA_RANDOM = hashlib.sha256(b"qmzgxwvb").hexdigest()
T = dt.datetime(2019, 3, 14, 2, 17, 41)
MFT_HEADER = ("EntryNumber,SequenceNumber,InUse,ParentEntryNumber,ParentSequenceNumber,ParentPath,FileName,"
              "Extension,FileSize,ReferenceCount,ReparseTarget,IsDirectory,HasAds,IsAds,SI<FN,uSecZeros,Copied,"
              "SiFlags,NameType,Created0x10,Created0x30,LastModified0x10,LastModified0x30,LastRecordChange0x10,"
              "LastRecordChange0x30,LastAccess0x10,LastAccess0x30,UpdateSequenceNumber,LogfileSequenceNumber,"
              "SecurityId,ObjectIdFileDroid,LoggedUtilStream,ZoneIdContents")


def mft_row(entry: int, parent: str, name: str, size: int, is_dir: bool, modified: str, changed: str) -> str:
    ext = name.rpartition(".")[2] if "." in name else ""
    return (f"{entry},3,True,5,5,{parent},{name},.{ext},{size},1,,{is_dir},False,False,False,False,False,"
            f"Archive,DosWindows,{modified},,{modified},,{changed},,{modified},,12345,678,256,,,")


def parse(path: Path, host: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    files: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for table, rows in fl.SOURCE.parse(SourceContext(path, str(path), host, path.parent)):
        (files if table == "files" else errors).extend(rows)
    return files, errors


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    assert fl.sniff(p, p.read_bytes()[:65536]), name
    return p


def test_mftecmd_csv_joins_parent_and_name_and_skips_directories(tmp_path: Path) -> None:
    text = "\r\n".join([
        MFT_HEADER,
        mft_row(100, ".\\Windows\\Temp", "svchost.exe", 1234, False, "2019-03-14 02:17:41.1234567",
                "2019-03-14 02:18:00.0000000"),
        mft_row(101, ".\\Windows", "Temp", 0, True, "2019-03-14 02:17:41.0000000", ""),
        mft_row(102, ".\\Windows", "qmzgxwvb.exe", 405504, False, "2019-03-14 02:17:42.0000000", ""),
    ]) + "\r\n"
    p = write(tmp_path, "20190320_MFTECmd_$MFT_Output.csv", text, "utf-8-sig")
    files, errors = parse(p, host="PC-18")
    assert errors == []
    modified = dt.datetime(2019, 3, 14, 2, 17, 41, 123456)
    assert files == [
        {"host": "pc-18", "ts": modified, "source": str(p), "source_line": 2,
         "path": ".\\Windows\\Temp\\svchost.exe", "size": 1234, "mtime": modified,
         "ctime": dt.datetime(2019, 3, 14, 2, 18), "mode": None, "owner": None, "sha256": None,
         "reason": "listing"},
        {"host": "pc-18", "ts": dt.datetime(2019, 3, 14, 2, 17, 42), "source": str(p), "source_line": 4,
         "path": ".\\Windows\\qmzgxwvb.exe", "size": 405504, "mtime": dt.datetime(2019, 3, 14, 2, 17, 42),
         "ctime": None, "mode": None, "owner": None, "sha256": None, "reason": "listing"},
    ]


def test_powershell_export_csv_in_utf16_with_type_line(tmp_path: Path) -> None:
    text = ('#TYPE Selected.System.IO.FileInfo\r\n'
            '"FullName","Length","LastWriteTime","LastWriteTimeUtc","Mode"\r\n'
            '"C:\\Windows\\Temp\\m.ps1","52113","3/14/2019 10:17:41 AM","3/14/2019 2:17:41 AM","-a----"\r\n'
            '"C:\\Windows\\Temp\\mkatz.ini","1,024","3/14/2019 10:20:00 AM","03/14/2019 02:20:00",'
            '"-a----"\r\n'
            '"C:\\Windows\\Temp","","3/14/2019 10:20:00 AM","3/14/2019 2:20:00 AM","d-----"\r\n')
    p = write(tmp_path, "listing.csv", text, "utf-16")
    files, errors = parse(p)
    assert errors == []
    # The Utc column wins over the local one; the directory row is left out.
    assert [(f["path"], f["size"], f["mtime"]) for f in files] == [
        ("C:\\Windows\\Temp\\m.ps1", 52113, T),
        ("C:\\Windows\\Temp\\mkatz.ini", 1024, dt.datetime(2019, 3, 14, 2, 20))]
    assert [f["source_line"] for f in files] == [3, 4]


def test_get_filehash_output_keeps_sha256_only(tmp_path: Path) -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    text = ('"Algorithm","Hash","Path"\n'
            f'"SHA256","{SHA_SVCHOST.upper()}","C:\\Windows\\Temp\\svchost.exe"\n'
            f'"MD5","{md5.upper()}","C:\\Windows\\Temp\\m.ps1"\n')
    files, _ = parse(write(tmp_path, "hashes.csv", text))
    assert [(f["path"], f["sha256"], f["size"]) for f in files] == [
        ("C:\\Windows\\Temp\\svchost.exe", SHA_SVCHOST, None), ("C:\\Windows\\Temp\\m.ps1", None, None)]


def test_velociraptor_jsonl_with_nested_hash_and_host(tmp_path: Path) -> None:
    records = [
        {"OSPath": "C:\\Windows\\Temp\\svchost.exe", "Size": 1234, "Mode": "-rw-rw-rw-",
         "MTime": "2019-03-14T02:17:41Z", "CTime": "2019-03-14T02:18:00Z", "BTime": "2019-03-14T02:17:40Z",
         "IsDir": False, "Fqdn": "PC-18.corp",
         "Hash": {"MD5": "0" * 32, "SHA1": "0" * 40, "SHA256": SHA_SVCHOST}},
        {"OSPath": "C:\\Windows\\Temp", "Size": 0, "IsDir": True, "Fqdn": "PC-18.corp", "Hash": None},
        {"OSPath": "C:\\Windows\\qmzgxwvb.exe", "Size": 405504, "MTime": "2019-03-14T10:17:42+08:00",
         "Fqdn": "PC-19.corp", "Hash": {"SHA256": SHA_RANDOM}},
    ]
    lines = [orjson.dumps(r).decode() for r in records]
    text = "\n".join([*lines[:2], "{broken", lines[2]])
    files, errors = parse(write(tmp_path, "Windows.Search.FileFinder.json", text))
    assert [(f["host"], f["path"], f["sha256"], f["mtime"], f["ctime"], f["source_line"]) for f in files] == [
        ("pc-18.corp", "C:\\Windows\\Temp\\svchost.exe", SHA_SVCHOST, T, dt.datetime(2019, 3, 14, 2, 18), 1),
        ("pc-19.corp", "C:\\Windows\\qmzgxwvb.exe", SHA_RANDOM, dt.datetime(2019, 3, 14, 2, 17, 42), None, 4)]
    [error] = errors
    assert error["message"].startswith("1 unreadable line(s), first: line 3: not JSON (")


def test_find_printf_tsv_with_epoch_times_and_octal_mode(tmp_path: Path) -> None:
    text = ("path\tsize\tmode\tmtime\tctime\towner\n"
            "/tmp/.x/xmrig\t5242880\t755\t1552529861.5\t1552529861\troot\n"
            "/var/tmp/kinsing\t1048576\t0700\t1552529861000\tyesterday\twww-data\n")
    files, errors = parse(write(tmp_path, "find.tsv", text))
    assert [(f["path"], f["size"], f["mode"], f["mtime"], f["ctime"], f["owner"]) for f in files] == [
        ("/tmp/.x/xmrig", 5242880, 0o755, dt.datetime(2019, 3, 14, 2, 17, 41, 500000), T, "root"),
        ("/var/tmp/kinsing", 1048576, 0o700, T, None, "www-data")]
    assert [e["message"] for e in errors] == [
        "1 value(s) of 'ctime' not understood as a time (first: 'yesterday')"]


def test_hostile_lines(tmp_path: Path) -> None:
    huge = "A" * (fl.MAX_LINE + 10)
    raw = ("path,size\n" + "C:\\a\x1b[2J\x07.exe,1\n" + f"C:\\{huge}.exe,2\n"
           + '"C:\\multi\nline.exe",3\n').encode()
    raw += b"C:\\caf\xe9\xff.exe,4\n" + b"C:\\nul\x00.exe,5\n"
    p = tmp_path / "hostile.csv"
    p.write_bytes(raw)
    files, errors = parse(p)
    assert [(f["path"], f["size"], f["source_line"]) for f in files] == [
        ("C:\\a\x1b[2J\x07.exe", 1, 2), ("C:\\multi\nline.exe", 3, 4), ("C:\\caf\\xe9\\xff.exe", 4, 6),
        ("C:\\nul\x00.exe", 5, 7)]
    assert [e["message"] for e in errors] == [
        f"1 line(s) over {fl.MAX_LINE} characters skipped (first: line 3)"]


def test_sniff_refuses_other_text(tmp_path: Path) -> None:
    for head in (b"Mar  5 02:14:07 web1 sshd[1]: Accepted password for root from 1.2.3.4 port 22 ssh2\n",
                 b'{"EventID": 4624, "Channel": "Security", "Hostname": "PC-18"}\n',
                 b"path,owner\n/etc/passwd,root\n", b"name,size\nfoo,1\n", b"\x00\x01\x02path,size", b"",
                 b'{"path": "x"}\n', b"[{\"path\": \"x\", \"size\": 1}]"):
        assert not fl.sniff(tmp_path / "x", head), head


def test_ingest_with_host_from_the_user(tmp_path: Path) -> None:
    p = write(tmp_path, "files.csv", f"Path,Size,SHA256\nC:\\Windows\\Temp\\svchost.exe,1234,{SHA_SVCHOST}\n")
    with Case(None) as case:
        summary = ingest(case, [p], host="PC-18", sources=(fl.SOURCE,))
        assert summary.errors == [] and summary.rows == {"files": 1}
        assert case.query("SELECT host, path, size, sha256, reason FROM files") == [
            {"host": "pc-18", "path": "C:\\Windows\\Temp\\svchost.exe", "size": 1234, "sha256": SHA_SVCHOST,
             "reason": "listing"}]


def test_parse_time_forms() -> None:
    assert fl.parse_time("2019-03-14T02:17:41Z") == T
    assert fl.parse_time("14.03.2019 02:17:41") == T
    assert fl.parse_time("3/14/2019 2:17:41 AM") == T
    assert fl.parse_time(g.filetime(T)) == T                      # FILETIME
    assert fl.parse_time(str(g.filetime(T))) == T
    assert fl.parse_time("") is None
    with pytest.raises(ValueError):
        fl.parse_time("last tuesday")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                        min_size=1, max_size=30).filter(str.strip), min_size=1, max_size=5))
def test_any_path_round_trips_through_csv(tmp_path_factory: pytest.TempPathFactory, paths: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["FullName", "Length"])
    writer.writerows([p, i] for i, p in enumerate(paths))
    p = tmp_path_factory.mktemp("rt") / "l.csv"
    p.write_text(buf.getvalue(), encoding="utf-8")
    files, errors = parse(p)
    assert errors == []
    assert [(f["path"], f["size"]) for f in files] == [(x.strip(), i) for i, x in enumerate(paths)]
