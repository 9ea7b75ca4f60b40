"""The yara_scan detector: collected blobs in a case folder become findings (or errors rows).

Examples for the rule ``execution.yara_match``: each test builds a case folder with
``Case(tmpdir)``, puts file contents at ``evidence/files/<sha256>``, adds the ``files`` and
``processes`` rows that name them and runs the engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yara_x
from hypothesis import given
from hypothesis import strategies as st

from deminer.case import Case
from deminer.detect.engine import detect
from deminer.detect.finding import Finding
from deminer.detect.python import DETECTORS, yara_scan
from deminer.detect.rules import RULES_DIR, load_rule

RULE = load_rule(RULES_DIR / "execution" / "yara_match.yml")
T0 = dt.datetime(2024, 3, 5, 1, 2, 3)

MINER = (struct.pack("<4sBBBBB7xHHI", b"\x7fELF", 2, 1, 1, 0, 0, 2, 0x3E, 1) + b"\0" * 40
         + b"\0".join([b"XMRig/6.21.0", b"donate.v2.xmrig.com", b"--donate-level", b"randomx",
                       b"rx/0", b"stratum+tcp://"]) + b"\0")
CONFIG = json.dumps({
    "donate-level": 1, "cpu": {"enabled": True},
    "pools": [{"url": "pool.example.net:3333", "user": "4" + "A" * 94, "pass": "x"}],
}, indent=2).encode()
LEMONDUCK = b"schtasks /create /tn Ddrivers /tr x\r\nschtasks /create /tn DnsScan /tr y\r\n"
BENIGN = b'{"name": "web", "listen": "0.0.0.0:8080"}\n'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(case: Case, data: bytes, name: str | None = None) -> str:
    assert case.dir is not None
    folder = case.dir / "evidence" / "files"
    folder.mkdir(parents=True, exist_ok=True)
    sha = name or _sha(data)
    (folder / sha).write_bytes(data)
    return sha


def _file(host: str, path: str, sha: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "ts": T0, "path": path, "sha256": sha, "content_saved": True,
            "source": "tables/files.jsonl", **extra}


def _errors(case: Case) -> list[dict[str, Any]]:
    return case.query("SELECT host, source, message FROM errors WHERE stage = 'detect' "
                      "ORDER BY source, message")


def _by_key(found: list[Finding]) -> dict[tuple[str | None, str, str], Finding]:
    return {(f.host, f.entity, f.evidence["yara_rule"]): f for f in found}


def test_registered_and_rule_names_it() -> None:
    assert DETECTORS["yara_scan"] is yara_scan.detect
    assert RULE.detector == "yara_scan" and RULE.examples_in == "tests/detect/test_yara_scan.py"


def test_detect_reports_each_file_and_rule(tmp_path: Path) -> None:
    with Case(tmp_path / "case") as case:
        miner, config = _put(case, MINER), _put(case, CONFIG)
        lemon, benign = _put(case, LEMONDUCK), _put(case, BENIGN)
        deleted = "/tmp/.ICE-unix/kdevtmpfsi (deleted)"
        case.add("processes", [
            {"host": "web1", "ts": T0, "pid": pid, "exe": deleted, "exe_sha256": miner.upper(),
             "exe_deleted": True, "started": T0 - dt.timedelta(hours=pid - 4240)}
            for pid in (4242, 4243)] + [
            {"host": "web1", "ts": T0, "pid": 1, "exe": "/usr/sbin/init", "exe_sha256": "ab" * 32}])
        case.add("files", [
            _file("web1", "/var/tmp/.x/kdevtmpfsi", miner, mtime=T0 - dt.timedelta(days=1)),
            _file("web1", "/tmp/.ICE-unix/config.json", config, reason="miner_config"),
            _file("web1", "/etc/web/app.json", benign),
            _file("win1", "C:\\Windows\\Temp\\x.ps1", lemon),
        ])
        found = detect(case, [RULE])
        stored = [Finding.from_row(r) for r in case.query("SELECT * FROM findings")]
        errors = _errors(case)

    keys = _by_key(found)
    assert set(keys) == {
        ("web1", deleted, "XMRig_Family_Binary"),
        ("web1", "/var/tmp/.x/kdevtmpfsi", "XMRig_Family_Binary"),
        ("web1", "/tmp/.ICE-unix/config.json", "Miner_JSON_Config"),
        ("win1", "C:\\Windows\\Temp\\x.ps1", "LemonDuck_Miner_Markers"),
    }
    assert errors == []
    assert sorted(f.to_json()["entity"] for f in stored) == sorted(f.entity for f in found)

    proc = keys[("web1", deleted, "XMRig_Family_Binary")]
    assert proc.rule == "execution.yara_match" and proc.severity == "high"
    assert proc.attack == ("T1496",)
    assert proc.ts == T0 - dt.timedelta(hours=3)  # the earlier of the two process starts
    ev = proc.evidence
    assert ev["pids"] == [4242, 4243] and ev["sha256"] == miner and ev["tables"] == ["processes"]
    assert ev["paths"] == sorted([deleted, "/var/tmp/.x/kdevtmpfsi"])
    assert ev["family"] == "XMRig" and ev["size"] == len(MINER)
    donate = next(m for m in ev["matches"] if m["identifier"] == "$own_donate_v2")
    assert donate["offset"] == MINER.index(b"donate.v2.xmrig.com")
    assert donate["excerpt"] == "donate.v2.xmrig.com"
    assert ev["match_count"] >= len(ev["matches"]) >= 4
    assert "pid 4242, 4243" in proc.summary and miner in proc.summary

    on_disk = keys[("web1", "/var/tmp/.x/kdevtmpfsi", "XMRig_Family_Binary")]
    assert on_disk.ts == T0 - dt.timedelta(days=1) and "pids" not in on_disk.evidence

    cfg = keys[("web1", "/tmp/.ICE-unix/config.json", "Miner_JSON_Config")]
    assert cfg.evidence["reasons"] == ["miner_config"] and cfg.evidence["tables"] == ["files"]

    lemon_finding = keys[("win1", "C:\\Windows\\Temp\\x.ps1", "LemonDuck_Miner_Markers")]
    assert lemon_finding.severity == "critical"
    assert lemon_finding.attack == ("T1053.005", "T1003.001", "T1496")
    assert lemon_finding.evidence["family"] == "LemonDuck"


def test_in_memory_case_and_missing_blobs_give_nothing(tmp_path: Path) -> None:
    rows = [_file("web1", "/tmp/x", _sha(MINER), content_saved=False)]
    with Case(None) as case:
        case.add("files", rows)
        assert detect(case, [RULE]) == [] and _errors(case) == []
    with Case(tmp_path / "empty") as case:
        assert detect(case, [RULE]) == []
        case.add("files", rows)  # hashed only, content never saved: nothing to say
        assert detect(case, [RULE]) == [] and _errors(case) == []


def test_saved_blob_missing_from_case_is_an_error(tmp_path: Path) -> None:
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", "/tmp/.x/xm", _sha(MINER))])
        assert detect(case, [RULE]) == []
        (err,) = _errors(case)
    assert err["host"] == "web1" and err["source"] == f"evidence/files/{_sha(MINER)}"
    assert "/tmp/.x/xm" in err["message"] and "missing" in err["message"]


def test_bad_blobs_are_errors_and_the_rest_is_scanned(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(MINER)
    with Case(tmp_path / "case") as case:
        good = _put(case, CONFIG)
        as_dir, as_link, wrong = _sha(b"dir"), _sha(b"link"), _sha(b"claimed")
        as_fifo = _sha(b"fifo")
        store = tmp_path / "case" / "evidence" / "files"
        (store / as_dir).mkdir()
        os.symlink(outside, store / as_link)
        os.mkfifo(store / as_fifo)  # opening it for reading must not hang the scan
        _put(case, MINER, name=wrong)
        case.add("files", [
            _file("web1", "/tmp/a", as_dir), _file("web1", "/tmp/b", as_link),
            _file("web1", "/tmp/c", wrong), _file("web1", "/tmp/good.json", good),
            _file("web1", "/tmp/d", "../../../../etc/passwd"), _file("web1", "/tmp/e", as_fifo),
        ])
        found = detect(case, [RULE])
        errors = {e["source"]: e["message"] for e in _errors(case)}
    assert [(f.entity, f.evidence["yara_rule"]) for f in found] == [("/tmp/good.json", "Miner_JSON_Config")]
    assert "/tmp/a" in errors[f"evidence/files/{as_dir}"]
    assert "not a regular file" in errors[f"evidence/files/{as_dir}"]
    assert "/tmp/b" in errors[f"evidence/files/{as_link}"]  # symlinks are never followed
    assert "does not match its name" in errors[f"evidence/files/{wrong}"]
    assert "/tmp/e" in errors[f"evidence/files/{as_fifo}"]
    assert "64 hex digits" in errors["sha256 '../../../../etc/passwd'"]


def test_hostile_path_is_escaped_in_the_summary(tmp_path: Path) -> None:
    path = "/tmp/\x1b[31mred\nline\\xff\u202e"
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", path, _put(case, CONFIG))])
        (finding,) = detect(case, [RULE])
    assert finding.entity == path and finding.evidence["path"] == path  # stored as found
    assert not re.search(r"[\x00-\x1f\x7f\u202e]", finding.summary)
    assert "\\x1b[31mred\\x0aline" in finding.summary


class _TimingOutScanner:
    """Stands in for yara-x on one blob to show a timeout does not stop the others."""

    def __init__(self, rules: yara_x.Rules) -> None:
        self.real = yara_x.Scanner(rules)

    def scan(self, data: bytes) -> Any:
        if data == MINER:
            raise yara_x.TimeoutError("timeout")
        return self.real.scan(data)


def test_scan_timeout_is_an_error_and_the_rest_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yara_scan, "_scanner", _TimingOutScanner)
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", "/tmp/xm", _put(case, MINER)),
                           _file("web1", "/tmp/c.json", _put(case, CONFIG))])
        found = detect(case, [RULE])
        (err,) = _errors(case)
    assert [f.entity for f in found] == ["/tmp/c.json"]
    assert "/tmp/xm" in err["message"] and "timed out" in err["message"]


def test_time_budget_stops_scanning_with_an_error(tmp_path: Path) -> None:
    ticks = iter(range(0, 10**6, 1000))
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", "/tmp/xm", _put(case, MINER))])
        found = yara_scan.scan_case(case, RULE, clock=lambda: float(next(ticks)))
        (err,) = _errors(case)
    assert found == [] and "time budget" in err["message"] and "1 blob(s)" in err["message"]


def test_oversized_blob_is_scanned_up_to_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yara_scan, "MAX_BLOB_BYTES", 4096)
    data = CONFIG + b" " * 10_000
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", "/tmp/big.json", _put(case, data))])
        (finding,) = detect(case, [RULE])
        (err,) = _errors(case)
    assert finding.evidence["scanned_bytes"] == 4096 and finding.evidence["size"] == len(data)
    assert "first 4096 of" in err["message"] and "/tmp/big.json" in err["message"]


def test_rules_that_do_not_compile_are_a_rule_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "yara"
    folder.mkdir()
    (folder / "broken.yar").write_text("rule Broken { condition: no_such_thing }\n")
    with pytest.raises(yara_scan.YaraRulesError, match=r"broken\.yar"):
        yara_scan.compiled_rules(folder)
    monkeypatch.setattr(yara_scan, "YARA_DIR", folder)
    with Case(tmp_path / "case") as case:
        case.add("files", [_file("web1", "/tmp/xm", _put(case, MINER))])
        assert detect(case, [RULE]) == []
        (err,) = _errors(case)
    assert "execution.yara_match" in err["source"] and "broken.yar" in err["message"]


def test_rules_compile_once_per_process() -> None:
    assert yara_scan.compiled_rules() is yara_scan.compiled_rules()


def test_parse_attack_keeps_only_technique_ids() -> None:
    assert yara_scan.parse_attack("T1496, T1059.004;T12 x T1053.003") == (
        "T1496", "T1059.004", "T1053.003")
    assert yara_scan.parse_attack(5) == ()


def _unescape(text: str) -> bytes:
    return re.sub(r"\\\\|\\x([0-9a-f]{2})",
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else "\\", text).encode("latin-1")


@given(st.binary(max_size=200), st.integers(0, 250), st.integers(-5, 250))
def test_excerpt_is_printable_bounded_and_exact(data: bytes, offset: int, length: int) -> None:
    text = yara_scan.excerpt(data, offset, length)
    assert all(0x20 <= ord(c) < 0x7F for c in text)
    assert _unescape(text) == data[offset:offset + min(max(length, 0), yara_scan.EXCERPT_BYTES)]
