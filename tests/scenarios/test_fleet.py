"""The generated fleet: its plan is a consistent outbreak, its stamped copies are real evidence,
and ``deminer investigate`` on 30 hosts recovers the truth exactly (verdict sets, patient zero,
entry vector, every edge)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from deminer.cli import main as deminer
from deminer.scenarios import hives
from deminer.scenarios.fleet import check_case, fleet_truth, host_ip, main, plan, write_fleet
from deminer.scenarios.fleet_templates import TEMPLATE_IP, TEMPLATE_PEER, Retimer, Stamp, windows_template
from deminer.scenarios.seed.common import Truth

HOSTS = 30


def test_plan_is_one_outbreak_from_one_linux_patient_zero() -> None:
    fleet = plan(HOSTS, seed=3)
    by_name = {h.name: h for h in fleet}
    assert len(fleet) == HOSTS and len(by_name) == HOSTS
    assert len({h.ip for h in fleet}) == HOSTS and {len(h.ip) for h in fleet} == {14}
    (pz,) = [h for h in fleet if h.kind == "patient_zero"]
    assert not pz.windows and pz.peer is None
    infected = [h for h in fleet if h.infected]
    assert len(infected) == round(HOSTS * 0.3)
    assert 8 <= sum(h.windows for h in fleet) <= 16          # ~40 % Windows
    for h in fleet:
        if h.kind in ("infected", "probed"):
            # Reached (or only tried) by a host that had already fallen.
            assert h.peer and by_name[h.peer].infected and by_name[h.peer].at < h.at
        else:
            assert h.peer is None
    assert [h for h in fleet if h.kind == "unknown"]
    assert plan(HOSTS, seed=3) == fleet and plan(HOSTS, seed=4) != fleet


def test_truth_follows_the_plan() -> None:
    fleet = plan(200, seed=5)
    truth = fleet_truth(fleet)
    assert truth.infected == {h.name for h in fleet if h.infected}
    assert truth.unknown == {h.name for h in fleet if h.kind == "unknown"}
    assert len(truth.edges) == len(truth.infected) - 1          # a tree from one patient zero
    windows = {h.name for h in fleet if h.windows}
    assert {e.technique for e in truth.edges if e.dst in windows} == {"smb_brute_force"}
    assert {e.technique for e in truth.edges if e.dst not in windows} == {"ssh_brute_force"}
    assert host_ip(1) == "10.100.100.101" and host_ip(99_999) == "10.109.199.199" != TEMPLATE_IP
    with pytest.raises(ValueError, match="5 to 99999"):
        plan(4)


def test_retimer_moves_the_story_and_keeps_the_stock_system() -> None:
    retime = Retimer(dt.datetime(2024, 5, 1), dt.timedelta(hours=30, seconds=7))
    text = (b'{"ts": "2024-05-06T12:00:00.250000Z", "mtime": "2023-01-01T00:00:00Z"}\n'
            b"May  6 23:59:58 lnx-00001 sshd[1]: Accepted password for root\n"
            b"Apr 30 10:00:00 lnx-00001 CRON[2]: stock\n#1715000000\nls\n")
    out = retime.text(text, syslog=True, history=True)
    assert b'"ts": "2024-05-07T18:00:07.250000Z"' in out             # fraction and zone kept
    assert b'"mtime": "2023-01-01T00:00:00Z"' in out                  # before ``since``: as is
    assert b"May  8 06:00:05 lnx-00001 sshd[1]" in out                # day padded as syslog pads
    assert b"Apr 30 10:00:00 lnx-00001 CRON[2]" in out
    assert b"#1715108007\n" in out                                  # 30 h 7 s later
    assert Retimer(dt.datetime(2024, 5, 1), dt.timedelta(0)).text(text, True, True) == text


def test_windows_names_must_keep_their_width(tmp_path: Path) -> None:
    try:
        template = windows_template(tmp_path / "work", "clean", dt.datetime(2024, 5, 6, 12))
    except hives.HivexMissing as exc:
        pytest.skip(str(exc))
    with pytest.raises(ValueError, match="must be as long as"):
        template.stamp(tmp_path / "out", Stamp("win-1", "10.100.100.101", TEMPLATE_PEER, dt.timedelta(0)))
    written = template.stamp(tmp_path / "out", Stamp("win-00007", "10.100.100.107", TEMPLATE_PEER,
                                                     dt.timedelta(hours=2)))
    assert written and all(p.relative_to(tmp_path / "out").parts[0] == "WIN-00007" for p in written)
    for path in written:
        data = path.read_bytes()
        assert b"WIN-00000" not in data and "WIN-00000".encode("utf-16-le") not in data
    (system,) = [p for p in written if p.name == "SYSTEM"]
    # The hive names the host and its address in the same cells, same length (UTF-16).
    assert "WIN-00007".encode("utf-16-le") in system.read_bytes()
    assert "10.100.100.107".encode("utf-16-le") in system.read_bytes()


@pytest.fixture(scope="module")
def investigated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Truth, Path, int]:
    """A 30-host fleet written and investigated once for the module."""
    base = tmp_path_factory.mktemp("fleet")
    try:
        truth = write_fleet(base / "evidence", HOSTS, seed=1)
    except hives.HivexMissing as exc:
        pytest.skip(str(exc))
    code = deminer(["investigate", str(base / "evidence"), "--case", str(base / "case"), "--quiet"])
    return truth, base / "case", code


def _rows(case: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(case / "case.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_investigate_recovers_patient_zero_and_the_infected_set(
        investigated: tuple[Truth, Path, int]) -> None:
    truth, case, code = investigated
    assert code == 1, "an outbreak with critical findings makes investigate exit 1"
    assert len(truth.infected) >= 8 and truth.unknown and truth.clean
    assert check_case(truth, case) == []
    hosts = {h for (h,) in _rows(case, "SELECT DISTINCT host FROM hosts")}
    assert truth.infected | truth.clean | truth.unknown <= hosts
    errors = _rows(case, "SELECT source, message FROM errors WHERE stage = 'ingest'")
    assert not errors, f"the stamped evidence did not ingest cleanly (bad hashes, bad hives?): {errors[:5]}"
    present = set(_rows(case, "SELECT DISTINCT host, kind, name FROM persistence"))
    lost = [(h, p.kind, p.name) for h, items in truth.persistence.items() for p in items
            if (h, p.kind, p.name) not in present]
    assert not lost, f"the worm's persistence is missing on infected hosts: {lost}"
    # Two hosts of one kind are two machines: own machine id and host key, never merged.
    assert not _rows(case, "SELECT alias, host FROM host_aliases WHERE alias LIKE 'lnx-%' AND alias <> host")


def test_the_check_sees_a_wrong_picture(investigated: tuple[Truth, Path, int]) -> None:
    truth, case, _ = investigated
    pz = next(iter(truth.patient_zero))
    wrong = dataclasses.replace(truth, patient_zero={"lnx-99999"}, infected=truth.infected - {pz},
                                edges=truth.edges[1:])
    problems = check_case(wrong, case)
    assert any(p.startswith("patient zero") for p in problems)
    assert any(p.startswith("infected hosts") for p in problems)
    assert any(p.startswith("edges") for p in problems)


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out"), "--hosts", "3"]) == 2
    assert "5 to 99999" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("user data")
    assert main([str(tmp_path / "full"), "--hosts", "10"]) == 2
    assert (tmp_path / "full" / "x").read_text() == "user data"
