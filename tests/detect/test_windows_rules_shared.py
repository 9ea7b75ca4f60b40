"""The Windows SQL rules on real attack recordings (``../shared/data``), skipped when absent.

Each named file is ingested alone and must give exactly the incidents it records; then the
whole folder is ingested once and every Windows rule runs over it, so cross-file
look-alikes (lab logs cleared before recording, WMI noise, Application logs with their own
"4625") are checked too. Counts the README states are recomputed here straight from
pyevtx-rs, so a disagreement says which side is wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect
from deminer.detect.finding import Finding
from deminer.detect.rules import load_rules
from deminer.detect.sigma.run import sigma_findings
from deminer.sources import evtx, winevent_json
from deminer.sources.ingest import ingest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EVTX = DATA / "windows-evtx"
JSONL = DATA / "windows-jsonl"
RULES = [r for r in load_rules() if r.path.stem.startswith(("win_", "evidence_"))]

pytestmark = pytest.mark.skipif(not EVTX.is_dir() or not JSONL.is_dir(), reason="no ../shared/data")


def findings(*paths: Path) -> list[Finding]:
    with Case(None) as case:
        summary = ingest(case, list(paths), sources=(evtx.SOURCE, winevent_json.SOURCE))
        assert summary.errors == []
        iocs.load_shipped(case)
        found = detect(case, RULES)
        assert case.query("SELECT source, message FROM errors WHERE stage = 'detect'") == []
    return found


@functools.cache
def everything() -> tuple[Finding, ...]:
    return tuple(findings(EVTX, JSONL))


def of(found: tuple[Finding, ...] | list[Finding], rule: str) -> list[Finding]:
    return [f for f in found if f.rule == rule]


def records(name: str) -> Iterator[dict[str, object]]:
    """Independent view: each record's EventData straight from pyevtx-rs."""
    import evtx as pyevtx

    for r in pyevtx.PyEvtxParser(str(EVTX / name)).records_json():
        if not r:
            continue
        event = orjson.loads(r["data"])["Event"]
        yield {"id": event["System"]["EventID"], **(event.get("EventData") or {})}


def test_smb_password_guessing_is_exactly_one_incident() -> None:
    name = "smb-password-guessing-security.evtx"
    failed = [r for r in records(name) if r["id"] == 4625]
    found = findings(EVTX / name)
    alerts = [f for f in found if f.severity != "info"]
    assert [(f.rule, f.host, f.entity) for f in alerts] == [
        ("credential_access.win_smb_brute_force", "desktop-m5sn04r", "192.168.198.149")]
    (smb,) = alerts
    assert smb.evidence["failures"] == len(failed) == 3561
    assert smb.evidence["users"] == len({str(r["TargetUserName"]).lower() for r in failed}) == 2
    assert smb.evidence["workstations"] == len({r["WorkstationName"] for r in failed})
    assert smb.evidence["first_record"] == 2455 and smb.evidence["last_record"] == 6016
    # The one record the export lacks becomes an evidence-gap note with its time window.
    (gap,) = of(found, "defense_evasion.evidence_gap_record_ids")
    assert gap.entity == "Security records 3993" and gap.evidence["gap_from"] == gap.evidence["gap_to"]


def test_smb_password_guessing_gives_one_brute_force_finding_overall() -> None:
    # What ``deminer investigate`` runs: every shipped SQL rule, then the Sigma pack. The pack
    # used to add its own failed-logon burst for the same attack; one attack, one finding.
    with Case(None) as case:
        ingest(case, [EVTX / "smb-password-guessing-security.evtx"], sources=(evtx.SOURCE,))
        iocs.load_shipped(case)
        sql = detect(case)
        sigma, problems = sigma_findings(case)
    assert problems == []
    brute = [f for f in [*sql, *sigma] if any(a.startswith("T1110") for a in f.attack)]
    assert [(f.rule, f.entity, f.evidence["failures"]) for f in brute] == [
        ("credential_access.win_smb_brute_force", "192.168.198.149", 3561)]


def test_password_spray_is_exactly_one_incident() -> None:
    name = "password-spray.evtx"
    explicit = [r for r in records(name) if r["id"] == 4648]
    found = [f for f in findings(EVTX / name) if f.severity != "info"]
    sprays = of(found, "credential_access.win_password_spray")
    assert [(f.host, f.entity) for f in sprays] == [("desktop-jr78rlp", "jwrig (logon 0x3069d)")]
    (spray,) = sprays
    assert spray.evidence["attempts"] == len(explicit) == 294
    assert spray.evidence["users"] == len({str(r["TargetUserName"]).lower() for r in explicit}) == 41
    assert {r["SubjectUserName"] for r in explicit} == {"jwrig"}
    assert (spray.evidence["target.server"], spray.evidence["target.ip"]) == (
        "DESKTOP-JR78RLP", "172.16.144.128")
    assert "source.ip" not in spray.evidence                  # 4648's address is the target's
    # The file starts with its own Security clear; nothing else fires.
    assert {f.rule for f in found} == {"credential_access.win_password_spray",
                                       "defense_evasion.win_log_cleared"}


@pytest.mark.parametrize(("kind", "service", "image", "started"), [
    ("native", "KgXItsbKgTJzdzwl", r"%SYSTEMROOT%\duKhLYUX.exe", r"C:\Windows\duKhLYUX.exe (pid 3744)"),
    ("powershell", "UWdKhYTIQWWJxHfx", "%COMSPEC% /b /c start /b /min powershell.exe -nop -w hidden",
     r"C:\Windows\System32\cmd.exe (pid 2860)"),
])
def test_metasploit_psexec_targets(kind: str, service: str, image: str, started: str) -> None:
    found = findings(EVTX / f"metasploit-psexec-{kind}-target-system.evtx",
                     EVTX / f"metasploit-psexec-{kind}-target-security.evtx")
    (lateral,) = of(found, "lateral_movement.win_remote_service_install")
    assert (lateral.host, lateral.entity, lateral.evidence["services"]) == ("ie10win7", service, service)
    assert lateral.evidence["commands"].startswith(f"{service} = {image}")
    assert lateral.evidence["started"] == started
    assert "source.ip" not in lateral.evidence                # neither file records the attacker's address
    assert lateral.evidence["how"].startswith("service signature")
    # The getsystem pipe service that follows (cmd.exe /c echo x > \\.\pipe\x) is not lateral movement.
    assert "pipe" not in lateral.evidence["commands"]
    random = of(found, "execution.win_random_service_binary")
    assert [f.entity for f in random] == ([image] if kind == "native" else [])


def test_lateral_movement_stitched_by_logon_session() -> None:
    found = everything()
    services = of(found, "lateral_movement.win_remote_service_install")
    (svc,) = [f for f in services if f.evidence.get("source.ip")]
    assert (svc.host, svc.entity, svc.evidence["services"], svc.evidence["user.name"]) == (
        "workstation6.theshire.local", "172.18.39.5", "Updater", "pgustavo")
    assert svc.evidence["logon_ids"] == "0x2990d17" and svc.evidence["event_ids"] == "4697, 7045"
    (task,) = of(found, "lateral_movement.win_remote_task")
    assert (task.host, task.entity, task.evidence["how"]) == (
        "workstation6.theshire.local", "172.18.39.5", "logon id")
    assert task.evidence["tasks"] == r"\Microsoft\Windows\SoftwareProtectionPlatform\EventCacheManager"
    (wmi,) = of(found, "lateral_movement.win_wmi_exec")
    assert (wmi.host, wmi.entity, wmi.evidence["user.name"]) == (
        "valkyrie.galactica.cc", "192.168.37.129", "fgaeta")
    assert wmi.evidence["impacket_wmiexec"] is True and "JOINT_BALL.exe" in wmi.evidence["commands"]


def test_credential_dumping_and_log_wiping() -> None:
    found = everything()
    assert sorted((f.host, f.entity) for f in of(found, "credential_access.win_lsass_access")) == [
        ("valkyrie.galactica.cc", r"C:\hello.exe"),
        ("workstation5.theshire.local", r"C:\windows\System32\WindowsPowerShell\v1.0\powershell.exe")]
    cleared = of(found, "defense_evasion.win_log_cleared")
    disabled = [f for f in cleared if f.host == "desktop-jr78rlp" and "disabled" in f.entity]
    assert len(disabled) == 1 and "cleared System (104)" in disabled[0].entity
    wiped = [f for f in cleared if f.host == "valkyrie.galactica.cc" and f.entity == "clearing commands"]
    assert len(wiped) == 1 and "cl security" in wiped[0].evidence["commands"]


def test_no_alerts_without_the_attack_in_the_data() -> None:
    # None of these recordings holds RDP guessing, pass-the-hash, admin-share copies, miners,
    # WinRing0, fake svchost or firewall/Defender tampering: those rules must stay quiet, and
    # the brute force/spray rules must fire only for the two files that hold them.
    found = everything()
    quiet = {"credential_access.win_rdp_brute_force", "initial_access.win_brute_force_success",
             "lateral_movement.win_pass_the_hash", "lateral_movement.win_admin_share_then_exec",
             "impact.win_miner_execution", "defense_evasion.win_winring0_driver",
             "defense_evasion.win_svchost_outside_system32", "persistence.win_task_readded",
             "defense_evasion.win_firewall_or_defender_tamper"}
    assert [(f.rule, f.host) for f in found if f.rule in quiet] == []
    assert [f.entity for f in of(found, "credential_access.win_smb_brute_force")] == ["192.168.198.149"]
    assert [f.entity for f in of(found, "credential_access.win_password_spray")] == ["jwrig (logon 0x3069d)"]
