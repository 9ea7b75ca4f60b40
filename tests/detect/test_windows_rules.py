"""The Windows SQL rules on generated events, through the real XML source and the engine.

Each scenario is a wevtutil XML export built with ``deminer.scenarios.win_events``, ingested
with the real ``winevent_xml`` source and run through ``detect`` with every ``win_*`` / ``evidence_*``
rule. Attacks must give exactly one finding per rule and incident; the benign look-alikes
(typos, installers, local tasks, SCCM push, WMI management) must give none.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect
from deminer.detect.finding import Finding
from deminer.detect.rules import load_rules
from deminer.scenarios import win_events as gen
from deminer.sources import evtx, winevent_xml
from deminer.sources.ingest import ingest

RULES = [r for r in load_rules() if r.path.stem.startswith(("win_", "evidence_"))]
T0 = dt.datetime(2024, 3, 5, 2, 0, 0)
ATTACKER = "203.0.113.77"
ADMIN_SID = "S-1-5-21-1-2-3-500"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def who(user: str, logon_id: str, sid: str = ADMIN_SID) -> dict[str, str]:
    return gen.subject(user, logon_id, sid)


def logon(t: float, user: str = "administrator", ip: str = ATTACKER, logon_id: str = "0xabc1",
          logon_type: int = 3, sid: str = ADMIN_SID, **fields: str) -> gen.Event:
    ev = gen.logon(True, user=user, ip=ip, logon_type=logon_type, time=at(t))
    assert isinstance(ev.data, dict)
    ev.data |= {"TargetLogonId": logon_id, "TargetUserSid": sid, **fields}
    return ev


def failures(n: int, ip: str = ATTACKER, users: tuple[str, ...] = ("administrator",), start: float = 0,
             logon_type: int = 3, **fields: str) -> list[gen.Event]:
    out = []
    for i in range(n):
        ev = gen.logon(False, user=users[i % len(users)], ip=ip, logon_type=logon_type, time=at(start + i))
        assert isinstance(ev.data, dict)
        ev.data |= {"WorkstationName": f"W{i:015d}", **fields}
        out.append(ev)
    return out


def service(t: float, name: str, image: str, sid: str = ADMIN_SID) -> gen.Event:
    return gen.service_install(name=name, image_path=image, installer_sid=sid, time=at(t))


def share(t: float, share_name: str, target: str, logon_id: str, ip: str = ATTACKER,
          user: str = "administrator", sid: str = ADMIN_SID) -> gen.Event:
    return gen.share_access(share_name, target, ip, who(user, logon_id, sid), time=at(t))


def task_added(t: float, name: str, user: str, logon_id: str, command: str) -> gen.Event:
    return gen.task_created(name, command, "", who=who(user, logon_id), time=at(t))


def task_deleted(t: float, name: str, user: str, logon_id: str) -> gen.Event:
    return gen.task_deleted(name, who(user, logon_id), time=at(t))


def run(tmp_path: Path, events: list[gen.Event], extra: list[dict[str, Any]] | None = None) -> list[Finding]:
    counters: dict[str, int] = {}
    for ev in events:                      # consecutive record ids per channel, as Windows writes them
        counters[ev.channel] = counters.get(ev.channel, 100) + 1
        ev.record_id = counters[ev.channel]
    path = tmp_path / "export.xml"
    path.write_text(gen.export(events, root=True), encoding="utf-8")
    with Case(None) as case:
        summary = ingest(case, [path], sources=(winevent_xml.SOURCE,))
        assert summary.errors == []
        if extra:      # rows as the EVTX source writes them, naming this export as their file
            case.add("errors", [{**row, "source": str(path)} for row in extra])
        iocs.load_shipped(case)
        found = detect(case, RULES)
        assert case.query("SELECT source, message FROM errors WHERE stage = 'detect'") == []
    return found


def by_rule(found: list[Finding], completeness: bool = False) -> dict[str, list[Finding]]:
    """Findings per rule; the evidence-completeness notes only when asked for."""
    out: dict[str, list[Finding]] = {}
    for f in found:
        if completeness or ".evidence_" not in f.rule:
            out.setdefault(f.rule, []).append(f)
    return out


def kill_chain() -> list[gen.Event]:
    """SMB guessing, the cracked admin's psexec-style service, the miner and the clean-up."""
    miner = r"C:\Windows\Temp\svchost.exe"
    evs = failures(30, users=("administrator", "admin", "guest"))
    evs += [logon(40),
            share(41, "ADMIN$", "xKqzRtvB.exe", "0xabc1"),
            gen.service_install_security("RmWx", r"%systemroot%\xKqzRtvB.exe", who("administrator", "0xabc1"),
                                         time=at(42)),
            service(42.1, "RmWx", r"%systemroot%\xKqzRtvB.exe"),
            gen.process_creation(image=r"C:\Windows\xKqzRtvB.exe", command_line=r"C:\Windows\xKqzRtvB.exe",
                                 user="WS01$", time=at(42.5)),
            task_added(50, r"\Ddrivers", "administrator", "0xabc1", miner),
            gen.sysmon_dns("pool.supportxmr.com", "::ffff:198.51.100.23;", miner, time=at(59)),
            gen.sysmon_process(image=miner, parent=r"C:\Windows\System32\taskeng.exe", time=at(60),
                               command_line=f"{miner} -o pool.supportxmr.com:5555 -a rx/0 --donate-level 1"),
            gen.sysmon_network(image=miner, dst_port=5555, time=at(61)),
            gen.sysmon_network(image=miner, dst_ip="10.0.0.31", dst_port=445, time=at(62)),
            gen.sysmon_network(image=miner, dst_ip="10.0.0.32", dst_port=445, time=at(62)),
            gen.sysmon_driver(r"C:\Windows\Temp\WinRing0x64.sys", time=at(63)),
            gen.sysmon_access(r"C:\Windows\Temp\m.exe", time=at(64)),
            gen.script_block("Set-MpPreference -DisableRealtimeMonitoring $true", time=at(65)),
            gen.log_cleared(user="administrator", time=at(90))]
    assert isinstance(evs[-1].user_data, tuple)
    evs[-1].user_data[2]["SubjectLogonId"] = "0xabc1"
    return evs


def test_kill_chain_gives_one_finding_per_rule(tmp_path: Path) -> None:
    found = by_rule(run(tmp_path, kill_chain()))
    assert {rule: len(fs) for rule, fs in found.items()} == {
        "credential_access.win_smb_brute_force": 1, "initial_access.win_brute_force_success": 1,
        "lateral_movement.win_admin_share_then_exec": 1, "lateral_movement.win_remote_service_install": 1,
        "lateral_movement.win_remote_task": 1, "execution.win_random_service_binary": 1,
        "defense_evasion.win_svchost_outside_system32": 1, "impact.win_miner_execution": 1,
        "defense_evasion.win_winring0_driver": 1, "credential_access.win_lsass_access": 1,
        "defense_evasion.win_firewall_or_defender_tamper": 1, "defense_evasion.win_log_cleared": 1}
    (smb,) = found["credential_access.win_smb_brute_force"]
    assert (smb.entity, smb.host, smb.evidence["failures"], smb.evidence["users"]) == (
        ATTACKER, "ws01.corp.example", 30, 3)
    assert smb.evidence["first_record"] == 101 and smb.ts == T0
    (ok,) = found["initial_access.win_brute_force_success"]
    assert (ok.severity, ok.evidence["user.name"], ok.evidence["cracked"]) == (
        "critical", "administrator", True)
    (svc,) = found["lateral_movement.win_remote_service_install"]
    assert (svc.entity, svc.evidence["services"], svc.evidence["how"]) == (
        ATTACKER, "RmWx", "account and time; logon id")
    assert svc.evidence["started"].startswith(r"C:\Windows\xKqzRtvB.exe")
    (copy,) = found["lateral_movement.win_admin_share_then_exec"]
    assert "ADMIN$\\xKqzRtvB.exe" in copy.evidence["copied"] and "service RmWx" in copy.evidence["ran"]
    (task,) = found["lateral_movement.win_remote_task"]
    assert task.evidence["tasks"] == r"\Ddrivers" and task.evidence["how"] == "logon id"
    (miner,) = found["impact.win_miner_execution"]
    assert (miner.severity, miner.entity) == ("critical", r"C:\Windows\Temp\svchost.exe")
    assert miner.evidence["launched_by"] == r"task \Ddrivers" and "5555" in miner.evidence["peers"]
    (fake,) = found["defense_evasion.win_svchost_outside_system32"]
    assert fake.evidence["remote_addresses_445"] == 2
    (cleared,) = found["defense_evasion.win_log_cleared"]
    assert cleared.evidence["sessions"] == f"logon type 3 from {ATTACKER}"


def test_rdp_guessing_with_nla_then_success(tmp_path: Path) -> None:
    # Seed case 8: NLA failures carry no address, only the client's workstation name.
    evs = failures(15, ip="-", WorkstationName="kali", LogonProcessName="NtLmSsp ")
    evs += [gen.rdp_auth("administrator", "CORP", "45.9.20.101", time=at(19)),
            logon(20, ip="45.9.20.101", logon_type=10, WorkstationName="KALI", LogonProcessName="User32 ")]
    found = by_rule(run(tmp_path, evs))
    assert set(found) == {"credential_access.win_rdp_brute_force", "initial_access.win_brute_force_success"}
    assert [f.entity for f in found["credential_access.win_rdp_brute_force"]] == ["workstation kali"]
    (ok,) = found["initial_access.win_brute_force_success"]
    assert (ok.entity, ok.severity, ok.evidence["logon_type"]) == ("45.9.20.101", "critical", 10)


def test_sprays_are_one_finding_and_not_brute_force(tmp_path: Path) -> None:
    users = tuple(f"user{i:02d}" for i in range(12))
    evs = failures(12, ip="198.51.100.5", users=users)
    for i, user in enumerate(users):
        ev = gen.explicit_logon(user=user, server="FS01", time=at(100 + i))
        assert isinstance(ev.data, dict)
        ev.data |= {**who("jwrig", "0x3069d"), "ProcessName": r"C:\Tools\spray.exe"}
        evs.append(ev)
    found = by_rule(run(tmp_path, evs))
    assert set(found) == {"credential_access.win_password_spray"}
    assert sorted(f.entity for f in found["credential_access.win_password_spray"]) == [
        "198.51.100.5", "jwrig (logon 0x3069d)"]


def test_wmi_exec_task_readded_and_hash_fanout(tmp_path: Path) -> None:
    wmiexec = r"cmd.exe /Q /c whoami 1> \\127.0.0.1\ADMIN$\__1684434503.69 2>&1"
    evs = [logon(0, logon_id="0x3e2f5f3"),
           gen.process_creation(command_line=wmiexec, parent=r"C:\Windows\System32\wbem\WmiPrvSE.exe",
                                user="administrator", time=at(2)),
           task_deleted(100, r"\DnsScan", "responder", "0x51"),
           task_added(700, r"\DnsScan", "WS01$", "0x3e7", "powershell -nop -w hidden -f m.ps1")]
    assert isinstance(evs[1].data, dict)
    evs[1].data |= {"TargetLogonId": "0x3e2f5f3", "SubjectLogonId": "0x3e4"}
    for n, host in enumerate(["SRV1", "SRV2", "SRV3"]):
        ev = logon(200 + n * 60, logon_id=f"0x{n}", ip="10.1.1.18", KeyLength="0")
        ev.computer = f"{host}.corp.example"
        evs.append(ev)
    found = by_rule(run(tmp_path, evs))
    assert [f.entity for f in found["lateral_movement.win_wmi_exec"]] == [ATTACKER]
    assert found["lateral_movement.win_wmi_exec"][0].evidence["impacket_wmiexec"] is True
    assert [f.entity for f in found["persistence.win_task_readded"]] == [r"\DnsScan"]
    (pth,) = found["lateral_movement.win_pass_the_hash"]
    assert (pth.host, pth.entity, pth.evidence["hosts"]) == (
        "srv1.corp.example", "10.1.1.18 as administrator", 3)


def test_task_put_back_through_the_scheduler_log(tmp_path: Path) -> None:
    # Only the TaskScheduler operational log saw the task come back (no 4698 audit): the
    # responder's 4699 and the scheduler's 106 for the same name still make the pair.
    evs = [task_deleted(100, r"\DnsScan", "responder", "0x51"),
           gen.task_registered(r"\DnsScan", "NT AUTHORITY\\SYSTEM", time=at(700))]
    found = by_rule(run(tmp_path, evs))
    assert set(found) == {"persistence.win_task_readded"}
    (readded,) = found["persistence.win_task_readded"]
    assert readded.entity == r"\DnsScan"


def benign() -> list[gen.Event]:
    """Admin typos, an installer, a local task, SCCM client push, WMI management, real svchost."""
    wbem = r"C:\Windows\System32\wbem"
    wmi_child = gen.process_creation(image=wbem + r"\WmiApSrv.exe", command_line="WmiApSrv.exe",
                                     parent=wbem + r"\WmiPrvSE.exe", user="WS01$", time=at(41))
    assert isinstance(wmi_child.data, dict)
    wmi_child.data |= {"TargetLogonId": "0x0", "SubjectLogonId": "0x3e7"}
    return [*failures(5, ip="10.0.0.20", users=("alice",)),
            logon(6, user="alice", ip="10.0.0.20", logon_id="0x51", sid="S-1-5-21-1-2-3-1104"),
            service(10, "AcmeAgent", r'"C:\Program Files\Acme\agent.exe"', sid="S-1-5-18"),
            task_added(20, r"\Acme\Update", "alice", "0x52", r"C:\Program Files\Acme\update.exe"),
            logon(30, user="sccm_push", ip="10.0.0.5", logon_id="0x77", sid="S-1-5-21-1-2-3-3001"),
            share(31, "ADMIN$", r"ccmsetup\ccmsetup.exe", "0x77", ip="10.0.0.5", user="sccm_push",
                  sid="S-1-5-21-1-2-3-3001"),
            service(32, "ccmsetup", r"C:\Windows\ccmsetup\ccmsetup.exe /runservice",
                    sid="S-1-5-21-1-2-3-3001"),
            logon(40, user="svc_monitor", ip="10.0.0.6", logon_id="0x88", sid="S-1-5-21-1-2-3-3002"),
            wmi_child,
            gen.sysmon_process(image=r"C:\Windows\System32\svchost.exe", command_line="svchost.exe -k net",
                               parent=r"C:\Windows\System32\services.exe", time=at(50)),
            gen.process_creation(image=r"C:\Windows\System32\wevtutil.exe",
                                 command_line="wevtutil qe Security /c:5", time=at(51)),
            gen.sysmon_access(r"C:\Windows\system32\wbem\wmiprvse.exe", granted_access="0x1410", time=at(52)),
            task_deleted(60, r"\GoogleUpdateTaskMachineUA", "WS01$", "0x3e7"),
            task_added(61, r"\GoogleUpdateTaskMachineUA", "WS01$", "0x3e7",
                       r"C:\Program Files (x86)\Google\Update\GoogleUpdate.exe")]


def test_benign_look_alikes_stay_quiet(tmp_path: Path) -> None:
    assert [(f.rule, f.summary) for f in run(tmp_path, benign())] == []


def test_evidence_completeness(tmp_path: Path) -> None:
    # ps01 has only PowerShell; ws02's 4688s lack command lines and its Security log starts an
    # hour after a random service install; its Security ids 5-9 are missing (as evtx reports it).
    ps = gen.script_block("Get-Date", time=at(0), computer="PS01")
    starts = [gen.process_creation(time=at(3600 + i), computer="WS02") for i in range(3)]
    for ev in starts:
        assert isinstance(ev.data, dict)
        del ev.data["CommandLine"]
    late = [service(0, "zRvCnsGF", r"C:\Windows\zRvCnsGF.exe"), *starts]
    late[0].computer = "WS02"
    tracker = evtx.Completeness()
    for rid in (1, 2, 3, 4, 10):
        tracker.add("ws02", "Security", rid)
    ((hosts, channel, first, last, count, missing),) = list(tracker.gaps())
    message = evtx.completeness_message(channel, hosts, first, last, count, missing)
    error = {"host": "ws02", "ts": T0, "stage": "completeness", "message": message}
    found = by_rule(run(tmp_path, [ps, *late], extra=[error]), completeness=True)
    assert [f.host for f in found["defense_evasion.evidence_missing_security_log"]] == ["ps01"]
    assert [f.host for f in found["defense_evasion.evidence_missing_sysmon"]] == ["ps01", "ws02"]
    (cmd,) = found["defense_evasion.evidence_missing_command_line"]
    assert (cmd.host, cmd.evidence["without_command_line"]) == ("ws02", 3)
    (gap,) = found["defense_evasion.evidence_gap_record_ids"]
    assert (gap.entity, gap.evidence["missing_records"], gap.severity) == ("Security records 5-9", 5, "info")
    assert gap.host == "ws02" and gap.ts == T0          # no neighbours in the file: its first record
    (late_log,) = found["defense_evasion.evidence_gap_log_starts_late"]
    assert (late_log.host, late_log.entity) == ("ws02", "Security")
    assert late_log.evidence["first_finding_rule"] == "execution.win_random_service_binary"
    assert all(f.severity == "info" for f in found["defense_evasion.evidence_missing_sysmon"])


def test_hostile_rows_do_not_break_the_rules() -> None:
    # Rows another source or a broken export might leave: bad JSON, control bytes, a huge
    # value, a number where text is expected. Every rule still runs and still finds the SMB storm.
    bad = ["{not json", "\x00\x01\x02", '{"target_logon_id": 5}', "[]", "x" * 200_000, None]
    kinds = [("logon_failure", 4625), ("logon_success", 4624), ("service_installed", 7045),
             ("process_start", 4688), ("task_created", 4698), ("process_access", 10), ("log_cleared", 1102)]
    rows = [{"host": f"ws{n}\x1b[31m", "ts": at(i), "event": event, "event_id": eid, "logon_type": 3,
             "user": "a\u202eb", "src_ip": "10.9.9.9", "process": "C:\\x\\svchost.exe",
             "command": "\x07" * 10, "data": data, "channel": "Security"}
            for n, data in enumerate(bad) for i, (event, eid) in enumerate(kinds * 2)]
    rows += [{"host": "fs1", "ts": at(i), "event": "logon_failure", "event_id": 4625, "logon_type": 3,
              "user": "administrator", "src_ip": ATTACKER} for i in range(12)]
    with Case(None) as case:
        case.add("events", rows)
        iocs.load_shipped(case)
        found = detect(case, RULES)
        assert case.query("SELECT source, message FROM errors WHERE stage = 'detect'") == []
    assert [f.entity for f in found if f.rule == "credential_access.win_smb_brute_force"] == [ATTACKER]


def test_full_rule_set_runs_clean_on_the_kill_chain(tmp_path: Path) -> None:
    path = tmp_path / "export.xml"
    path.write_text(gen.export(kill_chain(), root=True), encoding="utf-8")
    with Case(None) as case:
        ingest(case, [path], sources=(winevent_xml.SOURCE,))
        iocs.load_shipped(case)
        found = detect(case)
        # Other people's rules may be mid-work; ours must not fail next to them.
        failed = case.query("SELECT source FROM errors WHERE stage = 'detect'")
    assert [row for row in failed if any(r.path.name in row["source"] for r in RULES)] == []
    assert {f.rule for f in found} >= {r.id for r in RULES if r.id.startswith("lateral_movement.win_remote")}
