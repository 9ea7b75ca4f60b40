"""`make demo` builds the demo host, scans it and points at real results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deminer import demo


def test_demo_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(tmp_path) == 0
    out = capsys.readouterr().out
    findings = tmp_path / "demo-case" / "findings.jsonl"
    assert str(findings) in out
    rules = {json.loads(line)["rule"] for line in findings.read_text().splitlines()}
    assert {"impact.miner_process", "initial_access.ssh_brute_force_success",
            "persistence.attacker_authorized_key"} <= rules
    assert demo.main(tmp_path) == 0  # a second run replaces the first
