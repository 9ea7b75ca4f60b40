"""`make demo` triages the demo host, investigates the demo outbreak and points at the reports."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from deminer import demo


def test_demo_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(tmp_path) == 0
    out = capsys.readouterr().out
    scan, case = tmp_path / "demo-scan", tmp_path / "demo-case"
    assert str(case / "report.html") in out and (case / "report.html").stat().st_size > 0
    rules = {json.loads(line)["rule"] for line in (scan / "findings.jsonl").read_text().splitlines()}
    assert {"impact.miner_process", "initial_access.ssh_brute_force_success",
            "persistence.attacker_authorized_key"} <= rules
    with duckdb.connect(str(case / "case.duckdb"), read_only=True) as db:
        verdicts = dict(db.execute("SELECT host, verdict FROM host_verdicts").fetchall())
        edges = db.execute("SELECT count(*) FROM infection_edges").fetchall()[0][0]
    assert len(verdicts) >= 10 and list(verdicts.values()).count("infected") >= 6
    assert edges >= 5
    # Two outbreaks in one case (seed 9's SSH brute force, seed 7's web upload): the summary
    # names the first as patient zero and the other's root as a separate entry point.
    assert "Patient zero: web-gov01 (entry: brute_force)" in out
    assert "Separate entry points: www-01 (entry: web_exploit)" in out
    html = (case / "report.html").read_text(encoding="utf-8")
    assert 'class="pz-box entry-point"><b>Separate entry point: <a href="#' in html
    assert html.count('class="pz-box entry-point"') == 1
    assert demo.main(tmp_path) == 0  # a second run replaces the first
