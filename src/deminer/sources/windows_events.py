"""One Windows event, from whichever export it came, as one ``events`` row.

The EVTX, ``wevtutil`` XML and JSON-lines sources each reduce a record to the same parts —
channel, provider, event id, record id, computer, time, the System ``UserID`` and a flat
``fields`` dict of its EventData/UserData — and hand them to ``event_row``. Which event a
(channel, event id) pair is, and which fields fill which columns, lives in ``MAPPINGS``: one
table, so a new event id is one entry and all three formats learn it at once.

    MAPPINGS[(family, event_id)] = Spec(event, columns={column: "Field|Fallback"},
                                        extras={data_key: "Field"}, hook=...)

``family`` is resolved from the provider name first (it survives forwarding into
``ForwardedEvents``) and then from the channel, so exports that lack one still map.
Anything not in the table becomes ``windows_event`` with all its fields kept in ``data``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from deminer.sources.base import host_id
from deminer.sources.syslog_time import iso8601

RAW_CAP = 4096          # characters of the original record kept in ``raw``
VALUE_CAP = 65536       # longest single field value kept (a 4104 script block is ≤ 32 K)

Fields = dict[str, Any]
Hook = Callable[[dict[str, Any], Fields, Fields], None]   # (row, fields, extras)

INT_COLUMNS = frozenset({"src_port", "dst_port", "logon_type", "pid"})


@dataclass(frozen=True)
class Spec:
    """How one kind of event fills the columns: ``"A|B"`` means field A, else field B."""

    event: str
    columns: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, str] = field(default_factory=dict)
    const: Mapping[str, Any] = field(default_factory=dict)
    hook: Hook | None = None
    # Compiled forms, so the per-record loop does no string splitting.
    col_plan: tuple[tuple[str, tuple[str, ...], bool], ...] = field(init=False, default=())
    extra_plan: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        cols = tuple((c, tuple(src.split("|")), c in INT_COLUMNS) for c, src in self.columns.items())
        extras = tuple((k, tuple(src.split("|"))) for k, src in self.extras.items())
        object.__setattr__(self, "col_plan", cols)
        object.__setattr__(self, "extra_plan", extras)


# --- hooks: the few mappings a field lookup cannot express ------------------------------------

def _failure_status(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    # SubStatus says why (0xc000006a bad password, 0xc0000064 no such user); Status is the
    # generic 0xc000006d when SubStatus is set, so prefer SubStatus.
    for name in ("SubStatus", "Status"):
        value = text(fields.get(name))
        if value and value not in ("0x0", "0x00000000"):
            row["status"] = value.lower()
            return


def _strip_status(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    # Logon process names are padded ("NtLmSsp ", "Advapi  ").
    if row.get("status"):
        row["status"] = row["status"].strip() or None


def _task_content(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    content = text(fields.get("TaskContentNew")) or text(fields.get("TaskContent"))
    if not content:
        return
    # Imported here: winevent_xml imports this module for ``event_row``.
    from deminer.sources.winevent_xml import XmlRefused, parse_task_xml
    try:
        actions, run_as = parse_task_xml(content)
    except XmlRefused as exc:
        extras["task_content_error"] = str(exc)
        return
    if actions:
        row["command"] = actions[0]
        extras["task_actions"] = actions
    if run_as:
        extras["task_run_as"] = run_as


def _service_user(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    # 7045 names the service account in AccountName; who installed it is the System UserID.
    if not row.get("user"):
        row["user"] = extras.get("user_sid")


_MOF_PROP = re.compile(r'\b(CommandLineTemplate|ScriptText|ExecutablePath|Query)\s*=\s*"((?:[^"\\]|\\.)*)"')
_MOF_ESCAPE = re.compile(r"\\(.)")


def _wmi_binding(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    # 5861 carries the filter and consumer as MOF text in PossibleCause; the consumer's
    # command line or script is what the persistence runs.
    cause = text(fields.get("PossibleCause")) or ""
    for name, value in _MOF_PROP.findall(cause):
        key = {"CommandLineTemplate": "consumer_command", "ScriptText": "consumer_script",
               "ExecutablePath": "consumer_executable", "Query": "filter_query"}[name]
        extras.setdefault(key, _MOF_ESCAPE.sub(r"\1", value))
    command = extras.get("consumer_command") or extras.get("consumer_script")
    if command:
        row["command"] = command


_MSSQL_CLIENT = re.compile(r"\[CLIENT: *([0-9A-Fa-f:.]+|<local machine>)\]")


def _mssql_login(row: dict[str, Any], fields: Fields, extras: Fields) -> None:
    # MSSQL writes its logins to the Application log as unnamed strings: the login name, the
    # reason (failures) and " [CLIENT: 10.5.1.10]" — the only record of a SQL login's source
    # (no 4624 is written), and what miner worms brute-force as 'sa'.
    texts = [text(v) or "" for k, v in fields.items() if k.startswith("param")]
    for value in texts:
        found = _MSSQL_CLIENT.search(value)
        if found:
            if found.group(1) != "<local machine>":
                row["src_ip"] = found.group(1)
            break
    if row.get("user"):
        row["user"] = row["user"].strip().strip("'") or None
    reason = next((t.strip() for t in texts if t.strip().startswith("Reason:")), None)
    if reason:
        extras["reason"] = reason
    if row["event"] == "logon_failure":
        low = (reason or "").lower()
        row["status"] = ("bad_password" if "password did not match" in low else
                         "invalid_user" if "could not find a login" in low else "failed")
    extras["service"] = "mssql"


# --- the table --------------------------------------------------------------------------------

_SUBJECT = {"subject_user": "SubjectUserName", "subject_domain": "SubjectDomainName",
            "subject_logon_id": "SubjectLogonId"}
_LOGON = {"user": "TargetUserName", "src_ip": "IpAddress", "src_port": "IpPort",
          "logon_type": "LogonType", "process": "ProcessName", "pid": "ProcessId"}
_TASK = {"user": "SubjectUserName"}
_TASK_X = {"task_name": "TaskName", **_SUBJECT}
_SYSMON = {"process": "Image", "pid": "ProcessId", "user": "User"}
_TS_LOGON = {"user": "User|Param1", "src_ip": "Address|Param3"}
_WMI = {"user": "User", "pid": "ClientProcessId|ProcessID|Processid"}
_WMI_X = {"namespace": "NamespaceName|Namespace", "operation": "Operation", "query": "Query",
          "result_code": "ResultCode", "client_machine": "ClientMachine", "provider_name": "ProviderName"}

MAPPINGS: dict[tuple[str, int], Spec] = {
    # Security (Microsoft-Windows-Security-Auditing)
    ("security", 4624): Spec("logon_success", {**_LOGON, "status": "LogonProcessName"},
                             {"target_logon_id": "TargetLogonId", "workstation": "WorkstationName",
                              "auth_package": "AuthenticationPackageName", **_SUBJECT},
                             hook=_strip_status),
    ("security", 4625): Spec("logon_failure", _LOGON,
                             {"workstation": "WorkstationName", "failure_reason": "FailureReason",
                              "auth_package": "AuthenticationPackageName", **_SUBJECT},
                             hook=_failure_status),
    ("security", 4634): Spec("logoff", {"user": "TargetUserName", "logon_type": "LogonType"},
                             {"target_logon_id": "TargetLogonId"}),
    ("security", 4647): Spec("logoff", {"user": "TargetUserName"}, {"target_logon_id": "TargetLogonId"}),
    # In 4648 IpAddress is the *target* server's address (the credentials are used there).
    ("security", 4648): Spec("logon_explicit", {"user": "TargetUserName", "dst_ip": "IpAddress",
                                                "dst_port": "IpPort", "process": "ProcessName",
                                                "pid": "ProcessId", "dst_host": "TargetServerName"},
                             {"target_info": "TargetInfo", **_SUBJECT}),
    ("security", 4672): Spec("special_privileges", {"user": "SubjectUserName"},
                             {"privileges": "PrivilegeList", **_SUBJECT}),
    ("security", 4688): Spec("process_start",
                             {"process": "NewProcessName", "pid": "NewProcessId", "command": "CommandLine",
                              "user": "TargetUserName|SubjectUserName"},
                             {"parent_process": "ParentProcessName", "parent_pid": "ProcessId",
                              "target_logon_id": "TargetLogonId", **_SUBJECT}),
    ("security", 4697): Spec("service_installed",
                             {"process": "ServiceFileName", "command": "ServiceFileName",
                              "user": "SubjectUserName"},
                             {"service_name": "ServiceName", "service_account": "ServiceAccount",
                              **_SUBJECT}),
    ("security", 4698): Spec("task_created", _TASK, _TASK_X, hook=_task_content),
    ("security", 4702): Spec("task_updated", _TASK, _TASK_X, hook=_task_content),
    ("security", 4699): Spec("task_deleted", _TASK, _TASK_X),
    ("security", 4720): Spec("account_created", {"user": "TargetUserName|SamAccountName"}, _SUBJECT),
    # Member added to a global (4728), local (4732) or universal (4756) security group.
    **{("security", i): Spec("group_member_added", {"user": "MemberName|MemberSid"},
                             {"group": "TargetUserName", **_SUBJECT}) for i in (4728, 4732, 4756)},
    ("security", 5140): Spec("share_access",
                             {"user": "SubjectUserName", "src_ip": "IpAddress", "src_port": "IpPort"},
                             {"share": "ShareName", "share_path": "ShareLocalPath", **_SUBJECT}),
    ("security", 5145): Spec("share_access",
                             {"user": "SubjectUserName", "src_ip": "IpAddress", "src_port": "IpPort"},
                             {"share": "ShareName", "relative_target": "RelativeTargetName",
                              "share_path": "ShareLocalPath", **_SUBJECT}),
    ("security", 1102): Spec("log_cleared", {"user": "SubjectUserName"}, _SUBJECT),
    ("eventlog", 1102): Spec("log_cleared", {"user": "SubjectUserName"}, _SUBJECT),
    # System
    ("system", 7045): Spec("service_installed", {"process": "ImagePath", "command": "ImagePath"},
                           {"service_name": "ServiceName", "service_account": "AccountName",
                            "service_type": "ServiceType", "start_type": "StartType"},
                           hook=_service_user),
    ("system", 7036): Spec("service_state", {}, {"service_name": "param1", "state": "param2"}),
    ("system", 104): Spec("log_cleared", {"user": "SubjectUserName"},
                          {"cleared_channel": "Channel", **_SUBJECT}),
    ("eventlog", 104): Spec("log_cleared", {"user": "SubjectUserName"},
                            {"cleared_channel": "Channel", **_SUBJECT}),
    # Sysmon
    ("sysmon", 1): Spec("process_start", {**_SYSMON, "command": "CommandLine"},
                        {"parent_process": "ParentImage", "parent_command": "ParentCommandLine",
                         "parent_pid": "ParentProcessId", "hashes": "Hashes",
                         "current_directory": "CurrentDirectory"}),
    ("sysmon", 3): Spec("network_connection",
                        {**_SYSMON, "src_ip": "SourceIp", "src_port": "SourcePort",
                         "dst_ip": "DestinationIp", "dst_port": "DestinationPort",
                         "dst_host": "DestinationHostname"},
                        {"dst_ip": "DestinationIp", "dst_port": "DestinationPort",
                         "protocol": "Protocol", "initiated": "Initiated"}),
    ("sysmon", 7): Spec("image_loaded", _SYSMON,
                        {"image_loaded": "ImageLoaded", "signed": "Signed", "signature": "Signature",
                         "hashes": "Hashes"}),
    ("sysmon", 10): Spec("process_access",
                         {"process": "SourceImage", "pid": "SourceProcessId", "user": "SourceUser"},
                         {"target_image": "TargetImage", "target_pid": "TargetProcessId",
                          "granted_access": "GrantedAccess", "call_trace": "CallTrace"}),
    ("sysmon", 11): Spec("file_created", _SYSMON, {"target_filename": "TargetFilename"}),
    ("sysmon", 13): Spec("registry_set", _SYSMON,
                         {"target_object": "TargetObject", "details": "Details",
                          "event_type": "EventType"}),
    ("sysmon", 22): Spec("dns_query", _SYSMON,
                         {"query_name": "QueryName", "answers": "QueryResults",
                          "query_status": "QueryStatus"}),
    # PowerShell
    ("powershell", 4104): Spec("powershell_script", {"command": "ScriptBlockText"},
                               {"script_block_id": "ScriptBlockId", "script_path": "Path",
                                "message_number": "MessageNumber", "message_total": "MessageTotal"}),
    ("powershell", 4103): Spec("powershell_script", {"command": "Payload"},
                               {"context_info": "ContextInfo"}),
    # Task Scheduler operational log
    ("taskscheduler", 106): Spec("task_created", {"user": "UserContext|UserName"},
                                 {"task_name": "TaskName"}),
    ("taskscheduler", 140): Spec("task_updated", {"user": "UserName|UserContext"},
                                 {"task_name": "TaskName"}),
    ("taskscheduler", 141): Spec("task_deleted", {"user": "UserName|UserContext"},
                                 {"task_name": "TaskName"}),
    ("taskscheduler", 200): Spec("task_started", {"process": "ActionName"},
                                 {"task_name": "TaskName", "task_instance": "TaskInstanceId"}),
    ("taskscheduler", 201): Spec("task_completed", {"process": "ActionName"},
                                 {"task_name": "TaskName", "task_instance": "TaskInstanceId",
                                  "result_code": "ResultCode"}),
    # Remote Desktop: both logs say who came in from where, as an interactive (10) logon.
    ("rdp_lsm", 21): Spec("logon_success", _TS_LOGON, {"session_id": "SessionID"},
                          const={"logon_type": 10}),
    ("rdp_lsm", 25): Spec("logon_success", _TS_LOGON, {"session_id": "SessionID"},
                          const={"logon_type": 10}),
    ("rdp_lsm", 24): Spec("disconnect", _TS_LOGON, {"session_id": "SessionID"},
                          const={"logon_type": 10}),
    ("rdp_rcm", 1149): Spec("logon_success", _TS_LOGON, {"domain": "Param2"},
                            const={"logon_type": 10}),
    # Microsoft SQL Server (Application log): failed, SQL-authenticated and Windows logins.
    ("mssql", 18456): Spec("logon_failure", {"user": "param1"}, hook=_mssql_login),
    ("mssql", 18454): Spec("logon_success", {"user": "param1"}, hook=_mssql_login,
                           const={"status": "sql_login"}),
    ("mssql", 18453): Spec("logon_success", {"user": "param1"}, hook=_mssql_login,
                           const={"status": "windows_login"}),
    # WMI activity: 5861 is a permanent event subscription (filter-to-consumer binding).
    **{("wmi", i): Spec("wmi_activity", _WMI, _WMI_X) for i in (5857, 5858, 5859, 5860)},
    ("wmi", 5861): Spec("wmi_subscription", _WMI,
                        {**_WMI_X, "consumer": "CONSUMER", "filter": "ESS"}, hook=_wmi_binding),
}

# Providers first, then channels (lower case); a provider's ".../Operational" log maps with
# it. The bare "security"/"system" channels let exports without a provider still map.
_FAMILIES: dict[str, str] = {"security": "security", "system": "system", "mssqlserver": "mssql",
                             "service control manager": "system", "eventlog": "eventlog"}
for _name, _family in (("security-auditing", "security"), ("eventlog", "eventlog"), ("sysmon", "sysmon"),
                       ("powershell", "powershell"), ("taskscheduler", "taskscheduler"),
                       ("terminalservices-localsessionmanager", "rdp_lsm"),
                       ("terminalservices-remoteconnectionmanager", "rdp_rcm"), ("wmi-activity", "wmi")):
    _FAMILIES[f"microsoft-windows-{_name}"] = _FAMILIES[f"microsoft-windows-{_name}/operational"] = _family

# Events the table does not name still fill the obvious columns (WFP 5156 addresses,
# Kerberos 4768 clients, …) so rules need not parse ``data`` for them.
_GENERIC = Spec("windows_event", {
    "user": "TargetUserName|SubjectUserName", "src_ip": "IpAddress|SourceAddress|ClientAddress",
    "src_port": "IpPort|SourcePort|ClientPort", "dst_ip": "DestAddress|DestinationIp",
    "dst_port": "DestPort|DestinationPort", "process": "NewProcessName|Image|ProcessName|Application",
    "pid": "NewProcessId|ProcessId|ProcessID"})
_lookup_cache: dict[tuple[str | None, str | None, int | None], Spec] = {}


def lookup(provider: str | None, channel: str | None, event_id: int | None) -> Spec:
    """The ``Spec`` for an event; ``windows_event`` when the table does not know it."""
    key = (provider, channel, event_id)
    found = _lookup_cache.get(key)
    if found is not None:
        return found
    found = _GENERIC
    if event_id is not None:
        for name in (provider, channel):
            low = name.strip().lower() if name else ""
            # Named SQL Server instances log as MSSQL$<INSTANCE>.
            family = _FAMILIES.get(low) or ("mssql" if low.startswith("mssql$") else None)
            if family and (family, event_id) in MAPPINGS:
                found = MAPPINGS[(family, event_id)]
                break
    if len(_lookup_cache) > 8192:   # hostile input with endless distinct providers
        _lookup_cache.clear()
    _lookup_cache[key] = found
    return found


# --- value helpers ----------------------------------------------------------------------------

def text(value: Any) -> str | None:
    """A field as text; ``-`` and empty (Windows' "no value") become None."""
    if value is None:
        return None
    if isinstance(value, str):
        return None if value == "-" or value == "" else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def to_int(value: Any) -> int | None:
    """Decimal or ``0x`` hex (as pids are written in Security events) to int."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    s = str(value).strip()
    try:
        if s[:2] in ("0x", "0X"):
            return int(s, 16)
        return int(s)
    except ValueError:
        return None


def to_event_id(value: Any) -> int | None:
    """An event id (16 bits in practice; anything outside 32 bits is junk)."""
    n = to_int(value)
    return n if n is not None and 0 <= n < 1 << 32 else None


def parse_time(value: Any) -> dt.datetime | None:
    """Naive UTC from an ISO 8601 SystemTime (any fraction digits, ``Z`` or offset)."""
    if not value or not isinstance(value, str):
        return None
    return iso8601(value)


def cap(value: str, limit: int = VALUE_CAP) -> str:
    return value if len(value) <= limit else value[:limit]


# --- the row ----------------------------------------------------------------------------------

def event_row(
    *, channel: str | None, provider: str | None, event_id: int | None, record_id: int | None,
    computer: str | None, ts: dt.datetime | None, user_sid: str | None, fields: Fields,
    source: str, host: str | None, raw: str | None,
) -> dict[str, Any]:
    """The ``events`` row for one Windows record; ``host`` (the user's) beats ``computer``.

    ``fields`` is taken over: the normalized aliases (``subject_user``, ``task_name``, …) are
    added to it and it becomes ``data``, so callers pass a dict they no longer need.
    """
    spec = _lookup_cache.get((provider, channel, event_id)) or lookup(provider, channel, event_id)
    row: dict[str, Any] = {
        "host": host or host_id(computer),
        "ts": ts,
        "source": source,
        "source_line": record_id,
        "event": spec.event,
        "program": provider,
        "event_id": event_id,
        "channel": channel,
        "record_id": record_id,
        "raw": raw if raw is None or len(raw) <= RAW_CAP else raw[:RAW_CAP],
    }
    # The loops below run for every record: plain type checks inline, helpers only for the
    # odd value (hex pids, numbers where text is expected).
    get = fields.get
    for column, names, is_int in spec.col_plan:
        for name in names:
            value = get(name)
            if value is None or value == "-" or value == "":
                continue
            if is_int:
                if value.__class__ is not int:
                    value = to_int(value)
                    if value is None:
                        continue
            elif value.__class__ is not str:
                value = text(value)
            row[column] = value
            break
    extras: Fields = {"user_sid": user_sid} if user_sid else {}
    for key, names in spec.extra_plan:
        for name in names:
            value = get(name)
            if value is None or value == "-" or value == "":
                continue
            extras[key] = value if value.__class__ is str else text(value)
            break
    if spec.const:
        row.update(spec.const)
    if spec.hook is not None:
        spec.hook(row, fields, extras)
    if extras:
        fields.update(extras)
    row["data"] = _json(fields) if fields else None
    return row


def _json(fields: Fields) -> str:
    try:
        return orjson.dumps(fields, default=str).decode()
    except TypeError:                        # an integer beyond 64 bits from a hostile export
        return json.dumps(fields, default=str, ensure_ascii=False)
