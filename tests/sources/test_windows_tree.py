"""Recognising copies of a Windows drive (KAPE output, a copied C:\\) and naming their host.

Trees are built here: real SYSTEM hives from ``hive_gen`` (hivex; those parts skip without it),
wevtutil XML exports from ``winevent_gen`` standing in for logs (their records name
``WS01.corp.example``, so the tree's host visibly wins), task XML, and — when
``../shared/data`` is present — a real EVTX.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import deminer.sources
from deminer.case import Case
from deminer.scenarios import hives as hive_gen
from deminer.scenarios import win_events as wg
from deminer.sources import windows_tree
from deminer.sources.ingest import IngestSummary, _walk, ingest, ingest_file
from tests.hivex import skip_without_hivex
from tests.sources.test_archive_zip import M, build_zip, proposed_sources
from tests.sources.test_velociraptor import _task_source

SHARED_EVTX = Path(__file__).resolve().parents[2] / "../shared/data/windows-evtx"
PSEXEC_EVTX = SHARED_EVTX / "metasploit-psexec-native-target-system.evtx"


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(deminer.sources, "SOURCES", proposed_sources(*_task_source()))
    monkeypatch.chdir(tmp_path)
    windows_tree.detect_windows_root.cache_clear()


def drive(root: Path, *, logs: bool = True, tasks: bool = False, case: str = "Windows/System32") -> Path:
    """A copy of C:\\ at ``root``: an XML log export in winevt/Logs and/or a task file."""
    system32 = root / case
    if logs:
        (system32 / "winevt/Logs").mkdir(parents=True)
        (system32 / "winevt/Logs/Security-export.xml").write_text(wg.export(wg.intrusion()))
    if tasks:
        (system32 / "Tasks/Microsoft").mkdir(parents=True)
        (system32 / "Tasks/Microsoft/SysUpd").write_bytes(
            wg.task_xml(r"C:\Users\Public\svchosts.exe").encode("utf-16"))
    return root


def system_hive(root: Path, computer: str, case: str = "Windows/System32/config") -> Path:
    (root / case).mkdir(parents=True, exist_ok=True)
    hive_gen.write_hive(root / case / "SYSTEM", "SYSTEM", hive_gen.system_keys(computer))
    return root / case / "SYSTEM"


def test_the_system_hive_names_the_host(tmp_path: Path) -> None:
    skip_without_hivex()
    root = drive(tmp_path / "kape-out" / "C", case="WINDOWS/system32")  # any case will do
    system_hive(root, "WEB01-SYS", case="WINDOWS/system32/CONFIG")
    found = windows_tree.detect_windows_root(root)
    assert found == windows_tree.WindowsRoot(root, "web01-sys", "SYSTEM hive")
    log = root / "WINDOWS/system32/winevt/Logs/Security-export.xml"
    assert windows_tree.host_for(log, tmp_path) == "web01-sys"
    assert windows_tree.hive_computer_name(root / "WINDOWS/system32/CONFIG/SYSTEM") == "WEB01-SYS"


def test_without_a_hive_the_folders_name_the_host(tmp_path: Path) -> None:
    kape = drive(tmp_path / "WEB01" / "C")                           # KAPE --tdest …\%m
    stamped = drive(tmp_path / "out" / "2024-03-05T021407_FS02" / "C%3A", logs=False, tasks=True)
    named = drive(tmp_path / "db01", case="windows/SYSTEM32")          # a copy named for its host
    generic = drive(tmp_path / "uploads" / "auto" / "C%3A")            # nothing to go on
    assert windows_tree.detect_windows_root(kape) == windows_tree.WindowsRoot(kape, "web01", "folder name")
    assert windows_tree.detect_windows_root(stamped).host == "fs02"    # type: ignore[union-attr]
    assert windows_tree.detect_windows_root(named).host == "db01"      # type: ignore[union-attr]
    assert windows_tree.detect_windows_root(generic) == windows_tree.WindowsRoot(generic, None, "")
    assert windows_tree.stamped_host("2023-09-11T093015_WEB01") == "web01"
    assert windows_tree.stamped_host("WEB01") is None


def test_what_is_not_a_drive_copy(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    (bare / "Windows/System32/drivers").mkdir(parents=True)          # no logs, hive or tasks
    assert windows_tree.detect_windows_root(bare) is None
    assert windows_tree.detect_windows_root(tmp_path / "missing") is None
    elsewhere = drive(tmp_path / "elsewhere" / "C")
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(elsewhere / "Windows", linked / "Windows")              # links are not followed
    assert windows_tree.detect_windows_root(linked) is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/SYSTEM").write_bytes(b"regf" + os.urandom(5000))
    assert windows_tree.hive_computer_name(tmp_path / "junk/SYSTEM") is None
    log = elsewhere / "Windows/System32/winevt/Logs/Security-export.xml"
    assert windows_tree.host_for(log, tmp_path / "elsewhere" / "C" / "Windows") is None   # above top
    assert windows_tree.host_for(log, tmp_path / "unrelated") is None


def test_roots_in_archive_names() -> None:
    names = ["WEB01/C/Windows/System32/winevt/Logs/System.evtx",
             "WEB01/C/Windows/System32/config/SYSTEM",
             "WEB01/C/Windows/System32/config/SOFTWARE",
             "FS02/C%3A/windows/system32/tasks/Updater",
             "Windows/System32/Tasks/x",
             "notes/windows/system32.txt"]
    assert windows_tree.roots_in_names(names) == {
        "WEB01/C": "WEB01/C/Windows/System32/config/SYSTEM", "FS02/C%3A": None, "": None}


def ingest_with_hook(case: Case, top: Path, host: str | None = None) -> IngestSummary:
    """The walk ``ingest`` does, with the proposed one-line hook (host from the tree if none given)."""
    assert case.dir is not None
    summary = IngestSummary()
    for f in _walk(top):
        ingest_file(case, f, host or windows_tree.host_for(f, top), deminer.sources.SOURCES,
                    case.dir / "evidence", summary, explicit=False)
    return summary


def test_the_hook_gives_every_file_of_a_tree_its_host(tmp_path: Path) -> None:
    top = tmp_path / "triage"
    web = drive(top / "WEB01" / "C", tasks=True)
    drive(top / "DB02" / "C")
    if PSEXEC_EVTX.exists():
        (web / "Windows/System32/winevt/Logs/System.evtx").write_bytes(PSEXEC_EVTX.read_bytes())
    (top / "notes.txt").write_text("handover notes\n")
    case = Case(tmp_path / "case")
    ingest_with_hook(case, top)
    hosts = case.query("SELECT host, count(*) AS n FROM events GROUP BY host ORDER BY host")
    assert [h["host"] for h in hosts] == ["db02", "web01"]
    if PSEXEC_EVTX.exists():
        evtx = case.query("SELECT DISTINCT host FROM events WHERE source LIKE '%.evtx'")
        assert evtx == [{"host": "web01"}]
    tasks = case.query("SELECT host FROM persistence WHERE kind = 'task'")
    assert [t["host"] for t in tasks] == (["web01"] if _task_source() else [])
    # without it the same logs keep the host their records name
    plain = Case(tmp_path / "plain")
    summary = IngestSummary()
    for f in _walk(top):
        ingest_file(plain, f, None, deminer.sources.SOURCES, tmp_path / "plain/evidence", summary)
    assert {r["host"] for r in plain.query("SELECT DISTINCT host FROM events WHERE source LIKE '%.xml'")} == {
        "ws01.corp.example"}


def test_a_kape_zip_gets_the_host_of_its_hive(tmp_path: Path) -> None:
    skip_without_hivex()
    hive = system_hive(tmp_path / "src", "FS02-HIVE")
    export = wg.export(wg.intrusion()).encode()
    (tmp_path / "kape.zip").write_bytes(build_zip([
        M(b"2024-03-05T021407_FS02/C/Windows/System32/winevt/Logs/Security-export.xml", export, method=8),
        M(b"2024-03-05T021407_FS02/C/Windows/System32/config/SYSTEM", hive.read_bytes(), method=8),
        M(b"DB02/C/Windows/System32/winevt/Logs/Security-export.xml", export, method=8)]))
    case = Case(tmp_path / "case")
    ingest(case, [Path("kape.zip")], sources=deminer.sources.SOURCES)
    hosts = {r["source"]: r["host"] for r in case.query("SELECT DISTINCT source, host FROM events")}
    assert hosts == {
        "kape.zip!2024-03-05T021407_FS02/C/Windows/System32/winevt/Logs/Security-export.xml": "fs02-hive",
        "kape.zip!DB02/C/Windows/System32/winevt/Logs/Security-export.xml": "db02"}
