"""Event rows and rule folders for the Sigma tests, built the way the real sources build them.

Windows rows go through ``windows_events.event_row`` (the mapping the EVTX, XML and JSON
sources share), so the tests see the same columns and ``data`` a real case holds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deminer.case import Case
from deminer.detect.sigma.loader import load
from deminer.detect.sigma.run import SigmaRun, execute
from deminer.sources.windows_events import event_row

Row = dict[str, Any]
T0 = dt.datetime(2024, 5, 1, 10, 0, 0)
_records = itertools.count(1000)

SYSMON = ("Microsoft-Windows-Sysmon", "Microsoft-Windows-Sysmon/Operational")
SECURITY = ("Microsoft-Windows-Security-Auditing", "Security")
SYSTEM = ("Service Control Manager", "System")
POWERSHELL = ("Microsoft-Windows-PowerShell", "Microsoft-Windows-PowerShell/Operational")
TASKSCHEDULER = ("Microsoft-Windows-TaskScheduler", "Microsoft-Windows-TaskScheduler/Operational")


def win(log: tuple[str, str], event_id: int, fields: Mapping[str, Any], *, seconds: float = 0,
        host: str = "win1") -> Row:
    provider, channel = log
    record = next(_records)
    return event_row(channel=channel, provider=provider, event_id=event_id, record_id=record,
                     computer=f"{host.upper()}.corp.example", ts=T0 + dt.timedelta(seconds=seconds),
                     user_sid="S-1-5-18", fields=dict(fields), source=f"{channel}.evtx", host=host,
                     raw=f"<Event>{event_id}</Event>")


def proc(image: str, command: str, *, parent: str = r"C:\Windows\explorer.exe", host: str = "win1",
         seconds: float = 0, **extra: Any) -> Row:
    """A Sysmon 1 process creation."""
    return win(SYSMON, 1, {"Image": image, "CommandLine": command, "ParentImage": parent,
                           "ProcessId": "4242", "User": r"CORP\alice", **extra},
               host=host, seconds=seconds)


def proc_4688(image: str, command: str, *, parent: str = r"C:\Windows\explorer.exe") -> Row:
    """A Security 4688 process creation (other field names, same columns)."""
    return win(SECURITY, 4688, {"NewProcessName": image, "CommandLine": command,
                                "ParentProcessName": parent, "NewProcessId": "0x1a2c",
                                "SubjectUserName": "alice", "TargetUserName": "-"})


def script(text: str) -> Row:
    return win(POWERSHELL, 4104, {"ScriptBlockText": text, "ScriptBlockId": "b1", "Path": ""})


def failed_logon(ip: str, user: str = "administrator", *, seconds: float = 0, host: str = "win1",
                 logon_type: int = 3) -> Row:
    return win(SECURITY, 4625, {"TargetUserName": user, "IpAddress": ip, "IpPort": "50211",
                                "LogonType": str(logon_type), "SubStatus": "0xc000006a",
                                "Status": "0xc000006d", "WorkstationName": "-"},
               seconds=seconds, host=host)


def linux(event: str, command: str | None = None, *, host: str = "web1", **cols: Any) -> Row:
    """A Linux row as the syslog / shell-history sources write it (no channel, no event id)."""
    return {"host": host, "ts": T0, "source": "/root/.bash_history", "source_line": next(_records),
            "event": event, "command": command, "raw": command, **cols}


def write_rules(folder: Path, rules: Mapping[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rules.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def run(folder: Path, rows: Sequence[Row], case: Case | None = None) -> SigmaRun:
    """Load ``folder``, put ``rows`` in a fresh in-memory case and run the rules over it."""
    own = case is None
    case = case or Case(None)
    try:
        case.add("events", list(rows))
        return execute(case, load([folder]))
    finally:
        if own:
            case.close()


def rule(detection: str, logsource: str = "{product: windows, category: process_creation}",
         title: str = "Test rule", extra: str = "") -> str:
    """A minimal Sigma rule around a detection block (``condition: sel`` unless it has one)."""
    detection = textwrap.dedent(detection).strip("\n")
    if "condition:" not in detection:
        detection += "\ncondition: sel"
    return (f"title: {title}\nstatus: test\nlogsource: {logsource}\nlevel: high\n"
            f"tags: [attack.execution, attack.t1059]\n{extra}detection:\n"
            + textwrap.indent(detection, "  ") + "\n")


def correlation(kind: str, body: str, rules: str = "[failed_logon]") -> str:
    """A correlation rule of ``kind`` over ``rules``; ``body`` adds group-by, timespan, condition."""
    return (f"title: Correlated {kind}\nstatus: test\nlevel: high\ncorrelation:\n  type: {kind}\n"
            f"  rules: {rules}\n" + body)
