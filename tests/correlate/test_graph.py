"""Infection edges: each rule of inference, its ordering check, and the noise that gives none."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from deminer.case import Case
from deminer.correlate import correlate, graph, run
from deminer.detect.engine import detect
from deminer.detect.rules import load_rules
from deminer.scenarios.auth_log import AuthLog
from deminer.sources.ingest import ingest
from deminer.sources.windows_events import event_row
from tests.correlate.builders import OUTSIDE, T0, add, at, brute_success, finding, host, iso, miner

WEB1, DB1, APP1 = "10.0.0.5", "10.0.0.9", "10.0.0.7"


def _hosts(case: Case) -> None:
    host(case, "web1", WEB1, collected=at(6000))
    host(case, "db1", DB1, collected=at(6000))
    host(case, "app1", APP1, collected=at(6000))


def _edges(case: Case) -> list[tuple[str, str, str, dt.datetime | None, str]]:
    return [(e.src, e.dst, e.technique, e.ts, e.confidence) for e in correlate(case).edges]


def test_brute_force_from_an_infected_host_through_the_real_pipeline(tmp_path: Path) -> None:
    web1 = AuthLog(host="web1", start=T0)
    web1.benign_login("alice", "192.0.2.10")
    web1.brute_force(OUTSIDE, ["root"], attempts=40, success_user="root")
    db1 = AuthLog(host="db1", start=at(60))
    db1.benign_login("alice", WEB1)                         # an admin hop before the attack: no edge
    db1.brute_force(WEB1, ["root", "admin"], attempts=30, success_user="root")
    app1 = AuthLog(host="app1", start=at(90))
    app1.benign_login("alice", WEB1)                        # admin login from the infected host
    app1.brute_force(WEB1, ["root"], attempts=30)           # scanned, never got in
    for log in (web1, db1, app1):
        log.write(tmp_path / f"{log.host}.log")
    with Case(tmp_path / "case") as case:
        for log in (web1, db1, app1):
            ingest(case, [tmp_path / f"{log.host}.log"], host=log.host)
        case.add("hosts", [{"host": "web1", "ips": [WEB1]}, {"host": "db1", "ips": [DB1]},
                           {"host": "app1", "ips": [APP1]}])
        detect(case, [r for r in load_rules() if r.id in (
            "initial_access.ssh_brute_force_success", "credential_access.ssh_brute_force")])
        cracked = {r["host"]: (r["id"], r["ts"]) for r in case.query(
            "SELECT id, host, ts FROM findings WHERE rule = 'initial_access.ssh_brute_force_success'")}
        out = correlate(case)
    assert sorted(cracked) == ["db1", "web1"]
    assert [(v.host, v.verdict, v.infected_at) for v in out.verdicts] == [
        ("app1", "clean", None), ("db1", "infected", cracked["db1"][1]),
        ("web1", "infected", cracked["web1"][1])]
    [edge] = out.edges
    assert (edge.src, edge.dst, edge.technique, edge.ts, edge.confidence) == (
        "web1", "db1", "ssh_brute_force", cracked["db1"][1], "high")
    assert edge.findings == (cracked["db1"][0],) and cracked["db1"][0] in edge.reason
    assert edge.reason.startswith(f"web1 guessed root's SSH password (from {WEB1})")
    assert edge.attack == ("T1078", "T1110")
    assert out.patient_zero == ["web1"] and out.entry_vector == "brute_force"
    app1_v = out.verdict("app1")
    assert app1_v and any(r.startswith("targeted: password guessing") for r in app1_v.at_risk)


def test_infection_order_is_enforced() -> None:
    with Case(None) as case:
        _hosts(case)
        # db1 fell at minute 5 from outside, web1 at 30: web1 cannot have infected db1.
        add(case, brute_success("db1", OUTSIDE, at(5)), brute_success("web1", OUTSIDE, at(30)),
            brute_success("db1", WEB1, at(40)))
        out = correlate(case)
        assert out.edges == [] and out.patient_zero == ["db1"]
        [why] = out.rejected
        assert why.startswith(f"ssh_brute_force web1 → db1 (guessed root's SSH password (from {WEB1}))")
        assert why.endswith("db1 was infected at 2024-03-30 08:05:00 UTC, before web1 "
                            "(2024-03-30 08:30:00 UTC)")
        # web1 first, but db1 was already infected (from outside) long before web1 reached it.
        case.db.execute("DELETE FROM findings")
        add(case, brute_success("web1", OUTSIDE, at(5)), brute_success("db1", OUTSIDE, at(10)),
            brute_success("db1", WEB1, at(40)))
        out = correlate(case)
        assert out.edges == [] and out.patient_zero == ["web1"]
        assert out.rejected[0].endswith("it happened at 2024-03-30 08:40:00 UTC, after db1 was already "
                                        "infected (2024-03-30 08:10:00 UTC)")
        assert out.entries["db1"].vector == "brute_force"       # a second entry point
        assert any(e.startswith("entry point db1: brute_force into db1") for e in out.explanations)


def test_eternalblue_worm_fanout_and_psexec() -> None:
    with Case(None) as case:
        _hosts(case)
        host(case, "ws9", "10.0.0.99", collected=at(6000))
        eb = finding("lateral_movement.net_eternalblue_traits", "db1", at(20), entity=WEB1, attack=("T1210",),
                     source__ip=WEB1, destination__ip=DB1, overflows=2, probes=1)
        fan = finding("lateral_movement.net_worm_fanout", "web1", at(21), entity=WEB1,
                      attack=("T1210", "T1046"), source__ip=WEB1,
                      victim_list=f"{APP1} 10.0.0.99 10.0.0.42", ports="445")
        svc = finding("lateral_movement.win_remote_service_install", "ws9", at(40), entity="10.0.0.7",
                      attack=("T1021.002", "T1569.002"), source__ip=APP1, services="PSEXESVC")
        ids = add(case, miner("web1", at(10)), eb, fan, miner("db1", at(22)), miner("app1", at(30)), svc)
        flows = [{"ts": at(25) + dt.timedelta(seconds=i), "src_ip": WEB1, "src_port": 50000 + i,
                  "dst_ip": dst, "dst_port": 445, "proto": "tcp", "state": state}
                 for i, (dst, state) in enumerate([(APP1, "S0"), (APP1, "SF"), ("10.0.0.99", "SF"),
                                                   ("10.0.0.42", "SF")])]
        case.add("flows", flows)
        out = correlate(case)
        got = [(e.src, e.dst, e.technique, e.ts, e.confidence, e.findings) for e in out.edges]
        assert got == [
            ("web1", "db1", "eternalblue", at(20), "high", (ids[1],)),
            ("web1", "app1", "worm_fanout", at(25), "medium", (ids[2],)),
            ("web1", "ws9", "worm_fanout", at(25) + dt.timedelta(seconds=2), "medium", (ids[2],)),
            ("app1", "ws9", "psexec_service", at(40), "high", (ids[5],))]
        assert "port 445, answered" in out.edges[1].reason
        # 10.0.0.42 answered on 445 and is no case host: at risk, unknown.
        stranger = out.verdict("10.0.0.42")
        assert stranger and stranger.verdict == "unknown"
        assert stranger.at_risk == ["reachable from infected web1 on port 445"]


def test_ssh_key_trust_with_and_without_a_logon() -> None:
    with Case(None) as case:
        _hosts(case)
        case.add("ssh_keys", [
            {"host": "web1", "kind": "private", "path": "/root/.ssh/id_rsa", "fingerprint": "SHA256:k1",
             "encrypted": False},
            {"host": "db1", "kind": "authorized", "path": "/root/.ssh/authorized_keys", "user": "root",
             "fingerprint": "SHA256:k1"},
            {"host": "app1", "kind": "authorized", "path": "/root/.ssh/authorized_keys", "user": "root",
             "fingerprint": "SHA256:k1"}])
        used = {"event": "logon_success", "program": "sshd", "user": "root", "status": "publickey",
                "data": '{"key_type": "RSA", "fingerprint": "SHA256:k1"}'}
        case.add("events", [{**used, "host": "db1", "ts": at(-3000), "src_ip": WEB1},   # the owner, days ago
                            {**used, "host": "db1", "ts": at(31), "src_ip": WEB1}])
        key = finding("lateral_movement.stored_private_key", "web1", at(1), entity="/root/.ssh/id_rsa",
                      severity="medium", fingerprint="SHA256:k1", path="/root/.ssh/id_rsa")
        ids = add(case, brute_success("web1", OUTSIDE, at(10)), key, miner("db1", at(32)),
                  miner("app1", at(50)))
        assert _edges(case) == [("web1", "db1", "ssh_key", at(31), "high"),
                                ("web1", "app1", "ssh_key", at(50), "medium")]
        out = correlate(case)
        edge = out.edges[0]
        assert out.verdict("db1").infected_at == at(31)  # type: ignore[union-attr]
        assert edge.findings == (ids[1],) and "SHA256:k1" in edge.reason and f"from {WEB1}" in edge.reason


def test_orchestration_push_and_pull() -> None:
    with Case(None) as case:
        _hosts(case)
        host(case, "salt", "10.0.0.3", collected=at(6000))
        case.add("remote_targets", [
            {"host": "web1", "kind": "ansible_inventory", "target": "db1.corp",
             "location": "/etc/ansible/hosts"},
            {"host": "app1", "kind": "salt_master", "target": "10.0.0.3", "location": "/etc/salt/minion"}])
        inv = finding("lateral_movement.orchestration_config", "web1", at(0), entity="/etc/ansible/hosts",
                      severity="medium", attack=("T1072",))
        ids = add(case, inv, miner("web1", at(10)), miner("db1", at(70)), miner("salt", at(15)),
                  miner("app1", at(80)))
        out = correlate(case)
        got = {(e.src, e.dst, e.technique, e.ts) for e in out.edges}
        assert got == {("web1", "db1", "orchestration_push", at(70)),
                       ("salt", "app1", "orchestration_push", at(80))}
        push = next(e for e in out.edges if e.dst == "db1")
        assert push.findings == (ids[0],) and "Ansible" in push.reason and push.confidence == "medium"


def test_redis_and_service_exploits_from_a_case_host() -> None:
    with Case(None) as case:
        _hosts(case)
        redis = finding("initial_access.net_redis_abuse", "db1", at(20), severity="critical", source__ip=WEB1,
                        attack=("T1190",), dir="/var/spool/cron")
        consul = finding("initial_access.web_exploit_request", "app1", at(40), source__ip=WEB1, ok=1,
                         target="consul_service_register", exploit="Consul service registration")
        add(case, miner("web1", at(10)), redis, consul, miner("db1", at(21)), miner("app1", at(41)))
        assert [(s, d, t) for s, d, t, _, _ in _edges(case)] == [
            ("web1", "db1", "redis_rce"), ("web1", "app1", "consul_rce")]


def test_shared_credentials_cracked_on_one_host_used_on_another() -> None:
    with Case(None) as case:
        _hosts(case)
        case.add("events", [{"host": "db1", "ts": at(50), "event": "logon_success", "program": "sshd",
                             "user": "root", "src_ip": OUTSIDE, "status": "password"}])
        ids = add(case, brute_success("web1", OUTSIDE, at(10)), miner("db1", at(55)))
        out = correlate(case)
        [edge] = out.edges
        assert (edge.src, edge.dst, edge.technique, edge.ts) == ("web1", "db1", "shared_credentials", at(50))
        assert edge.findings == (ids[0],) and "without guessing" in edge.reason
        db1 = out.verdict("db1")
        assert db1 and db1.entry_vector == "lateral" and db1.infected_at == at(50)
        assert db1.first_finding == ids[0]
        app1 = out.verdict("app1")
        assert app1 and app1.verdict == "clean" and app1.at_risk == []


def test_credential_reuse_fallback_and_benign_admin_logins() -> None:
    with Case(None) as case:
        _hosts(case)
        case.add("events", [
            # db1: a logon from infected web1 20 minutes before db1's first sign: reuse.
            {"host": "db1", "ts": at(40), "event": "logon_success", "program": "sshd", "user": "deploy",
             "src_ip": WEB1, "source": "auth.log", "source_line": 7},
            # app1: an admin logs in from web1 but app1 never shows a sign: no edge.
            {"host": "app1", "ts": at(40), "event": "logon_success", "program": "sshd", "user": "alice",
             "src_ip": WEB1}])
        add(case, miner("web1", at(10)), miner("db1", at(60)))
        assert _edges(case) == [("web1", "db1", "credential_reuse", at(40), "low")]
        out = correlate(case)
        db1 = out.verdict("db1")
        assert db1 and db1.infected_at == at(40)          # the replayed logon dates the infection
        assert db1.reason.startswith("infected since 2024-03-30 08:40:00 UTC: the earliest sign is the "
                                     "credential_reuse logon from web1 on the infection edge [no finding]")
        app1 = out.verdict("app1")
        assert app1 and app1.verdict == "clean"
        # A logon from web1 hours before db1's infection is no evidence of reuse.
        case.db.execute("UPDATE events SET ts = ? WHERE host = 'db1'", [at(-300)])
        assert _edges(case) == []


def test_same_edge_from_two_findings_is_merged() -> None:
    with Case(None) as case:
        _hosts(case)
        wire = finding("credential_access.net_ssh_brute_force", "db1", at(18), entity=WEB1,
                       severity="critical", source__ip=WEB1, success_at=iso(at(20)))
        ids = add(case, miner("web1", at(5)), brute_success("db1", WEB1, at(20)), wire)
        [edge] = correlate(case).edges
        assert edge.technique == "ssh_brute_force" and edge.ts == at(20)
        assert edge.findings == tuple(sorted(ids[1:])) and edge.confidence == "high"
        assert case.query("SELECT src_host, dst_host, technique, findings FROM infection_edges") == [
            {"src_host": "web1", "dst_host": "db1", "technique": "ssh_brute_force",
             "findings": sorted(ids[1:])}]


def test_a_failing_step_is_an_error_row_and_verdicts_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise duckdb.ConversionException("odd data")

    monkeypatch.setattr(run, "build_graph", broken)
    with Case(None) as case:
        _hosts(case)
        add(case, miner("web1", at(10)))
        out = correlate(case)
        assert out.edges == [] and out.verdict("web1").verdict == "infected"  # type: ignore[union-attr]
        assert case.query("SELECT source, stage FROM errors") == [
            {"source": "correlate step infection graph", "stage": "correlate"}]
        assert case.count("host_verdicts") == 3
    assert dt.timedelta(minutes=10) == graph.LATE


def test_odd_evidence_values_do_not_stop_correlation() -> None:
    with Case(None) as case:
        _hosts(case)
        case.add("findings", [
            {"id": "junk1", "rule": "initial_access.ssh_brute_force_success", "severity": "critical",
             "host": "db1", "ts": at(20), "entity": "x", "evidence": "not json {"},
            {"id": "junk2", "rule": "lateral_movement.net_worm_fanout", "severity": "high", "host": "web1",
             "ts": at(21), "entity": "x", "evidence": '{"source.ip": 12, "victim_list": ["a"], "ok": "yes"}'},
            {"id": "junk3", "rule": "lateral_movement.net_eternalblue_traits", "severity": "high",
             "host": "app1", "ts": at(22), "entity": "x",
             "evidence": '{"source.ip": "10.0.0.5:445", "overflows": "many", "success_ts": "yesterday"}'},
            {"id": "junk4", "rule": "persistence.cron_pipe_to_shell", "severity": "high", "host": "web1",
             "ts": None, "entity": "x", "evidence": "[1, 2]"}])
        add(case, miner("web1", at(5)))
        out = correlate(case)
        assert {v.host: v.verdict for v in out.verdicts} == {"app1": "clean", "db1": "infected",
                                                             "web1": "infected"}
        # "10.0.0.5:445" is web1's address with a port; "many" overflows reads as 0: a probe.
        assert out.verdict("app1").at_risk == [  # type: ignore[union-attr]
            "targeted: EternalBlue/DoublePulsar probe [junk3]"]
        assert out.edges == [] and not case.query("SELECT * FROM errors")


def _win(case: Case, name: str, ip: str, *kbs: str) -> None:
    host(case, name, ip, os="Windows Server 2008 R2")
    case.add("events", [{"host": name, "ts": at(0), "event": "logon_success", "channel": "Security"}]
             + [{"host": name, "ts": at(-900), "event": "hotfix_installed", "program": "registry",
                 "data": f'{{"kb": "{kb}"}}'} for kb in kbs])


def _smb(case: Case, src: str, dst: str, ts: dt.datetime, logged_by: str | None = None) -> None:
    case.add("flows", [{"host": logged_by, "ts": ts, "src_ip": src, "src_port": 1031, "dst_ip": dst,
                        "dst_port": 445, "proto": "tcp", "source_line": 7,
                        "source": "pfirewall.log" if logged_by else "conn.log"}])


def test_smb_right_before_a_windows_host_fell() -> None:
    with Case(None) as case:
        _win(case, "pc-a", "192.168.10.18")
        _win(case, "pc-b", "192.168.10.21", "KB2536276")              # no MS17-010 update
        _win(case, "pc-c", "192.168.10.22", "KB4012598")              # patched: SMB alone says nothing
        _win(case, "pc-d", "192.168.10.23", "KB4012598")              # patched, but the payload ran
        for name, minute in (("pc-a", 0), ("pc-b", 9), ("pc-c", 15), ("pc-d", 20)):
            add(case, finding("execution.win_random_service_binary", name, at(minute)))
        _smb(case, "192.168.10.18", "192.168.10.21", at(9) - dt.timedelta(seconds=4), logged_by="pc-b")
        _smb(case, "192.168.10.18", "192.168.10.22", at(15) - dt.timedelta(seconds=4))
        _smb(case, "192.168.10.18", "192.168.10.23", at(20) - dt.timedelta(seconds=30))
        case.add("events", [{"host": "pc-d", "ts": at(20), "event": "process_start", "channel": "Security",
                             "process": r"C:\Windows\System32\cmd.exe",
                             "data": json.dumps({"parent_process": r"C:\Windows\System32\spoolsv.exe"})}])
        out = correlate(case)
        got = {(e.src, e.dst, e.technique, e.confidence) for e in out.edges}
        assert got == {("pc-a", "pc-b", "eternalblue", "medium"), ("pc-a", "pc-d", "eternalblue", "high")}
        b = next(e for e in out.edges if e.dst == "pc-b")
        assert "it has no MS17-010 update" in b.reason and "pfirewall.log" in b.reason
        d = next(e for e in out.edges if e.dst == "pc-d")
        assert "spoolsv.exe started C:\\Windows\\System32\\cmd.exe" in d.reason


def test_http_service_exploits_a_sensor_logged() -> None:
    with Case(None) as case:
        _hosts(case)
        http = {"src_ip": WEB1, "dst_port": 8080, "proto": "tcp", "app": "http", "source": "http.log"}
        case.add("flows", [
            {**http, "ts": at(19), "dst_ip": DB1, "source_line": 1,
             "data": json.dumps({"method": "POST", "uri": "/scriptText", "status": 200})},
            {**http, "ts": at(20), "dst_ip": APP1, "dst_port": 8088, "source_line": 2,
             "data": json.dumps({"method": "POST", "uri": "/ws/v1/cluster/apps/new-application",
                                 "status": 200})},
            {**http, "ts": at(21), "dst_ip": APP1, "source_line": 3,
             "data": json.dumps({"method": "GET", "uri": "/index.html", "status": 200})}])
        add(case, miner("web1", at(5)), miner("db1", at(21)), miner("app1", at(22)))
        assert [(s, d, t, c) for s, d, t, _, c in _edges(case)] == [
            ("web1", "db1", "jenkins_rce", "high"), ("web1", "app1", "hadoop_rce", "high")]


def test_one_edge_per_pair_named_by_the_best_explanation() -> None:
    with Case(None) as case:
        _hosts(case)
        guess = finding("initial_access.win_brute_force_success", "db1", at(20), severity="critical",
                        source__ip=WEB1, logon_type=3, user__name="Administrator",
                        success_ts=iso(at(20)), attack=("T1110", "T1078"))
        svc = finding("lateral_movement.win_remote_service_install", "db1", at(21), source__ip=WEB1,
                      attack=("T1021.002", "T1569.002"))
        fan = finding("lateral_movement.net_worm_fanout", "web1", at(18), source__ip=WEB1)
        ids = add(case, miner("web1", at(5)), guess, svc, fan)
        case.add("flows", [{"ts": at(18), "src_ip": WEB1, "src_port": 5000, "dst_ip": DB1, "dst_port": 445,
                            "proto": "tcp", "state": "S0"}])            # unanswered: low, dropped
        [edge] = correlate(case).edges
        assert (edge.technique, edge.ts, edge.confidence) == ("smb_brute_force", at(20), "high")
        assert edge.findings == tuple(sorted(ids[1:3]))
        assert edge.reason.endswith("; also psexec_service at 2024-03-30 08:21:00 UTC; web1 was infected at "
                                    "2024-03-30 08:05:00 UTC, db1 showed its first sign at 2024-03-30 "
                                    "08:20:00 UTC")
        assert "worm_fanout" not in edge.reason
        assert edge.attack == ("T1021.002", "T1078", "T1110", "T1569.002")


def test_mssql_login_from_an_infected_host_is_credential_reuse() -> None:
    with Case(None) as case:
        _hosts(case)
        # MSSQL's own record of a SQL login (Application 18454), as the Windows mapping stores it
        case.add("events", [event_row(
            channel="Application", provider="MSSQLSERVER", event_id=18454, record_id=77, computer="DB1",
            ts=at(40), user_sid=None, fields={"param1": "sa", "param2": f" [CLIENT: {WEB1}]"},
            source="Application.evtx", host="db1", raw=None)])
        add(case, miner("web1", at(5)), miner("db1", at(41)))
        [edge] = correlate(case).edges
        assert (edge.technique, edge.ts, edge.confidence) == ("credential_reuse", at(40), "medium")
        assert f"logged on to it as sa from {WEB1} (Application.evtx:77)" in edge.reason
