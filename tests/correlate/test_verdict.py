"""Per-host verdicts: infection time from trustworthy evidence, never clean without evidence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.correlate import correlate
from deminer.correlate.verdict import HostVerdict
from deminer.detect.engine import detect
from deminer.detect.rules import load_rules
from deminer.sources.ingest import ingest
from tests.correlate.builders import OUTSIDE, T0, add, at, auth_events, brute_success, finding, host, miner


def _verdict(case: Case, name: str) -> HostVerdict:
    v = correlate(case).verdict(name)
    assert v is not None
    return v


def test_brute_force_success_dates_the_infection() -> None:
    with Case(None) as case:
        host(case, "web1", "10.0.0.5", collected=at(600))
        ids = add(case, miner("web1", at(120)), brute_success("web1", OUTSIDE, at(17)))
        v = _verdict(case, "web1")
        assert v.verdict == "infected"
        assert v.infected_at == at(17) and v.first_finding == ids[1]
        assert v.reason.startswith("infected since 2024-03-30 08:17:00 UTC: the earliest trustworthy sign "
                                   f"is malicious logon (initial_access.ssh_brute_force_success [{ids[1]}])")
        assert ids[0] in v.reason and "2 compromise sign(s)" in v.reason
        row = case.query("SELECT * FROM host_verdicts")[0]
        assert (row["verdict"], row["infected_at"], row["first_finding"]) == ("infected", at(17), ids[1])
        assert row["missing"] == "no auth log"        # collected, but no auth.log rows in the case


def test_persistence_mtime_beats_a_process_seen_at_collection() -> None:
    collected = at(600)
    with Case(None) as case:
        host(case, "db1", collected=collected)
        cron = finding("persistence.cron_pipe_to_shell", "db1", at(42), entity="/var/spool/cron/root:1")
        ids = add(case, miner("db1", collected - dt.timedelta(seconds=30)), cron)
        v = _verdict(case, "db1")
        assert (v.infected_at, v.first_finding) == (at(42), ids[1])
        trust = {s.rule: s.trust for s in v.signs}
        assert trust == {"impact.miner_process": "collection", "persistence.cron_pipe_to_shell": "file"}


def test_only_collection_time_signs_say_so() -> None:
    collected = at(600)
    with Case(None) as case:
        host(case, "db1", collected=collected)
        [fid] = add(case, miner("db1", collected))
        v = _verdict(case, "db1")
        assert v.verdict == "infected" and v.infected_at == collected
        assert "seen only at collection time" in v.reason and fid in v.reason


def test_file_drop_time_uses_ctime_when_the_mtime_was_set_by_a_tool() -> None:
    with Case(None) as case:
        host(case, "db1", collected=at(6000))
        case.add("files", [{"host": "db1", "path": "/tmp/.x/kdevtmpfsi", "mtime": dt.datetime(2016, 1, 1),
                            "ctime": at(33), "sha256": "ab" * 32}])
        [fid] = add(case, finding("command_and_control.known_bad_file_hash", "db1", at(5000),
                                  entity="/tmp/.x/kdevtmpfsi", path="/tmp/.x/kdevtmpfsi"))
        v = _verdict(case, "db1")
        assert v.infected_at == at(33) and v.first_finding == fid
        assert "file drop /tmp/.x/kdevtmpfsi" in v.reason


def test_untrusted_times_are_not_the_infection_time() -> None:
    collected = at(600)
    with Case(None) as case:
        host(case, "db1", collected=collected)
        add(case, finding("persistence.cron_pipe_to_shell", "db1", dt.datetime(1970, 1, 1), entity="a"),
            finding("persistence.watchdog_restart", "db1", at(6000), entity="b"),     # after collection
            finding("persistence.autostart_from_tmp", "db1", at(50), entity="c"))
        v = _verdict(case, "db1")
        assert v.infected_at == at(50)
        assert sorted(s.trust for s in v.signs) == ["file", "untrusted", "untrusted"]
    with Case(None) as case:
        host(case, "db1", collected=collected)
        add(case, finding("persistence.cron_pipe_to_shell", "db1", dt.datetime(1970, 1, 1), entity="a"))
        v = _verdict(case, "db1")
        assert v.verdict == "infected" and v.infected_at is None
        assert v.reason.startswith("infected, time unknown")


def test_lastbackup_registry_value_dates_a_wannamine_host() -> None:
    with Case(None) as case:
        case.add("events", [{"host": "pc-18", "ts": at(-90), "event": "registry_value",
                             "program": "registry", "source": "C/Windows/System32/config/SOFTWARE",
                             "data": '{"value": "LastBackup"}'},
                            {"host": "pc-18", "ts": at(0), "event": "logon_success", "channel": "Security"}])
        v = _verdict(case, "pc-18")
        assert v.verdict == "infected" and v.infected_at == at(-90) and v.first_finding is None
        assert "WannaMine LastBackup value written (C/Windows/System32/config/SOFTWARE)" in v.reason
        # Another registry value of note is timeline material, not a compromise.
        case.db.execute("""UPDATE events SET data = '{"value": "Shell"}' WHERE event = 'registry_value'""")
        assert _verdict(case, "pc-18").verdict != "infected"


def test_indicators_only_is_suspicious() -> None:
    with Case(None) as case:
        host(case, "db1", collected=at(600))
        [fid] = add(case, finding("persistence.unpackaged_system_unit", "db1", at(5), severity="medium"))
        v = _verdict(case, "db1")
        assert v.verdict == "suspicious" and v.infected_at is None and v.first_finding == fid
        assert fid in v.reason


def test_scanned_host_with_failures_only_stays_clean() -> None:
    with Case(None) as case:
        auth_events(case, "app1", *[("logon_failure", at(i), "root", OUTSIDE) for i in range(30)])
        [fid] = add(case, finding("credential_access.ssh_brute_force", "app1", at(0), entity=OUTSIDE,
                                  severity="medium", source__ip=OUTSIDE))
        v = _verdict(case, "app1")
        assert v.verdict == "clean"
        assert v.reason == ("clean: no sign of compromise in 30 auth log records; targeted by password "
                            f"guessing against it without success [{fid}]")
        assert v.missing == ["no host collection"]
        assert v.at_risk == [f"targeted: password guessing against it [{fid}]"]


def test_missing_evidence_is_never_clean() -> None:
    with Case(None) as case:
        # A Windows host with Sysmon but no Security log.
        case.add("events", [{"host": "ws1", "ts": at(1), "event": "process_start",
                             "channel": "Microsoft-Windows-Sysmon/Operational"}])
        # A host known only from a network rule (its address is the host id).
        add(case, finding("lateral_movement.net_eternalblue_traits", "10.0.0.66", at(2), severity="high",
                          entity="10.0.0.1", probes=1, source__ip="10.0.0.1"))
        # A Linux host with a collection but a log-gap finding.
        host(case, "db1", collected=at(600))
        auth_events(case, "db1", ("logon_success", at(3), "alice", "10.0.0.2"))
        [gap] = add(case, finding("defense_evasion.evidence_gap_record_ids", "db1", at(4), severity="info"))
        out = correlate(case)
        ws1, probed, db1 = (out.verdict(h) for h in ("ws1", "10.0.0.66", "db1"))
        assert ws1 and ws1.verdict == "unknown" and "no Security log" in ws1.missing
        assert ws1.reason.startswith("unknown: too little evidence to call it clean (no host collection, "
                                     "no Security log, no patch list)")
        assert probed and probed.verdict == "unknown" and probed.missing == ["only network sightings"]
        assert "targeted by EternalBlue/DoublePulsar probe" in probed.reason
        assert db1 and db1.verdict == "unknown" and db1.missing[-1].startswith("evidence gap:")
        assert db1.reason.endswith(f"[{gap}]")


def test_clock_skew_from_the_same_flow_at_both_ends() -> None:
    with Case(None) as case:
        host(case, "web1", "10.0.0.5", collected=at(6000))
        host(case, "db1", "10.0.0.9", collected=at(6000))
        conn = {"src_ip": "10.0.0.5", "src_port": 40000, "dst_ip": "10.0.0.9", "dst_port": 22, "proto": "tcp"}
        flows = []
        for i in range(3):
            c = {**conn, "src_port": 40000 + i}
            flows += [{**c, "host": "web1", "ts": at(10 + i)},
                      {**c, "host": None, "ts": at(10 + i) - dt.timedelta(seconds=300)},   # sensor
                      {**c, "host": "db1", "ts": at(10 + i) - dt.timedelta(seconds=300)}]
        case.add("flows", flows)
        add(case, miner("web1", at(20)), miner("db1", at(18)))
        out = correlate(case)
        web1, db1 = out.verdict("web1"), out.verdict("db1")
        assert web1 and web1.clock_skew_seconds == 300.0 and web1.reference_time == at(15)
        assert db1 and db1.clock_skew_seconds is None
        assert any("web1: clock +300 s against the network sensor" in e for e in out.explanations)
        assert case.query("SELECT clock_skew_seconds FROM host_verdicts WHERE host = 'web1'") == [
            {"clock_skew_seconds": 300.0}]


def test_log_times_ahead_of_the_collection_are_a_clock_problem() -> None:
    with Case(None) as case:
        host(case, "web1", collected=T0)
        auth_events(case, "web1", ("logon_success", T0 + dt.timedelta(hours=2), "alice", "10.0.0.2"))
        v = _verdict(case, "web1")
        assert v.verdict == "clean" and v.clock_skew_seconds == 7200.0


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "linux-auth"


@pytest.mark.parametrize(("name", "verdict"), [("ubuntu-internet-facing-auth.log", "suspicious"),
                                                ("openssh-labsz-2k.log", "clean")])
def test_real_internet_facing_servers_under_guessing(name: str, verdict: str) -> None:
    # Real sshd logs of servers under internet brute force (see the data README). In the
    # Ubuntu log, 24.151.103.17 fails 147 times and then logs in as elastic_user_0 — but it
    # had logged in 46 times before the burst (its 47 "Accepted password" lines), so it is a
    # known user's broken client, not a cracked password: suspicious, not infected.
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    with Case(None) as case:
        ingest(case, [path], host="server")
        detect(case, [r for r in load_rules() if r.id in (
            "initial_access.ssh_brute_force_success", "credential_access.ssh_brute_force",
            "credential_access.ssh_password_spray")])
        guessing = case.query(
            "SELECT count(*) AS n FROM findings WHERE rule LIKE 'credential_access.%'")[0]["n"]
        out = correlate(case)
    [v] = out.verdicts
    assert guessing > 0 and v.verdict == verdict and v.missing == ["no host collection"]
    if verdict == "suspicious":
        assert "login after guessing from an address with 46 earlier logins" in v.reason
    else:
        assert len([r for r in v.at_risk if r.startswith("targeted:")]) == min(guessing, 8)
    assert out.edges == [] and out.patient_zero == []


def _hive_host(case: Case, name: str, *, software: bool = True, last_backup: dt.datetime | None = None,
               security: bool = False) -> None:
    config = f"{name}/C/Windows/System32/config"
    case.add("hosts", [{"host": name, "hostname": name.upper(), "source": f"{config}/SYSTEM",
                        "os": "Microsoft Windows XP build 2600 Service Pack 3"}])
    case.add("persistence", [{"host": name, "kind": "service", "name": "Dnscache",
                              "source": f"{config}/SYSTEM"}])
    if software:
        case.add("events", [{"host": name, "ts": at(-9000), "event": "hotfix_installed",
                             "program": "registry", "source": f"{config}/SOFTWARE",
                             "data": '{"kb": "KB2536276"}'}])
    if last_backup:
        case.add("events", [{"host": name, "ts": last_backup, "event": "registry_value",
                             "program": "registry", "source": f"{config}/SOFTWARE",
                             "data": '{"value": "LastBackup"}'}])
    if security:
        case.add("events", [{"host": name, "ts": at(1), "event": "logon_success", "channel": "Security"}])


def test_hives_alone_clear_a_host_only_when_hives_found_every_infected_host() -> None:
    # Seed case 10: nothing but hives; every infected PC has LastBackup in its SOFTWARE hive.
    with Case(None) as case:
        _hive_host(case, "pc-teacher", last_backup=at(0))
        _hive_host(case, "stu-pc01", last_backup=at(9))
        _hive_host(case, "stu-pc08")                       # off that day: no LastBackup
        _hive_host(case, "stu-pc09", software=False)       # its SOFTWARE hive was not collected
        out = correlate(case)
        verdicts = {v.host: v.verdict for v in out.verdicts}
        assert verdicts == {"pc-teacher": "infected", "stu-pc01": "infected", "stu-pc08": "clean",
                            "stu-pc09": "unknown"}
        pc08 = out.verdict("stu-pc08")
        assert pc08 and pc08.reason == (
            "clean: its SYSTEM and SOFTWARE hives show none of the registry signs that gave away all 2 "
            "infected Windows host(s) of this case (WannaMine LastBackup value written)")
        assert pc08.at_risk == ["no MS17-010 update among 1 installed updates"]
        pc09 = out.verdict("stu-pc09")
        assert pc09 and "no patch list" in pc09.missing and "no Security log" in pc09.missing
    # Cases 1-5: the infected hosts were found in their logs, so a host with hives only is unknown.
    with Case(None) as case:
        _hive_host(case, "web01", security=True)
        add(case, finding("impact.win_miner_execution", "web01", at(3), source="Security.xml"))
        _hive_host(case, "bak01")
        verdicts = {v.host: v.verdict for v in correlate(case).verdicts}
        assert verdicts == {"web01": "infected", "bak01": "unknown"}


def test_disk_without_processes_or_logs_is_unknown_and_missing_sysmon_is_only_noted() -> None:
    with Case(None) as case:
        host(case, "vm-08", collected=at(600), live=False)
        case.add("persistence", [{"host": "vm-08", "kind": "cron", "command": "backup.sh"}])
        _hive_host(case, "file01", security=True)
        add(case, finding("defense_evasion.evidence_missing_sysmon", "file01", at(0), severity="info"),
            finding("defense_evasion.evidence_missing_command_line", "file01", at(0), severity="info"))
        out = correlate(case)
        vm, file01 = out.verdict("vm-08"), out.verdict("file01")
        assert vm and vm.verdict == "unknown" and vm.missing == ["no process list", "no auth log"]
        assert file01 and file01.verdict == "clean"
        assert file01.missing == ["no host collection", "no Sysmon log",
                                  "process starts logged without command lines"]
