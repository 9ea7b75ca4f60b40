"""Where Sigma looks in the case store: field names to SQL, log sources to ``events`` filters.

Sigma rules name fields as the log writes them (Sysmon's ``Image``, Security's
``TargetUserName``, IIS's ``cs-uri-query``) and say which log they read in ``logsource``. Both
are translated here, as data, so the converter in ``backend.py`` knows no field by name.

Fields. The Windows sources keep every EventData field in ``events.data`` under its own
name, so any field without an entry below is read from there
(``json_extract_string(data, '$."Field"')``). Entries exist where a column holds the value
for every source that has it, so one rule covers Sysmon 1, Security 4688 and Linux process
records alike (``Image`` is ``process``, ``CommandLine`` is ``command``), and where a field
is spelled differently per source (``ParentImage`` is Sysmon's, ``parent_process`` the
normalized alias 4688 also gets). Fields whose column is filled from *another* field for
some events (``TargetUserName`` is the group for 4732, the user for 4625) read the raw field
first and the column only when the event has no such field (Linux rows).

Log sources. ``route`` turns (product, category, service) into a WHERE clause over
``events.event``/``event_id``/``channel``/``program`` per the vocabulary in CONTRIBUTING.md;
``None`` means deminer has no such log and the rule is reported as unconvertible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The events relation the converted SQL reads: ``data`` cast to JSON once so one malformed
# value cannot fail a whole query (TRY_CAST gives NULL, json_extract_string would raise).
EVENTS_RELATION = "(SELECT * REPLACE (TRY_CAST(data AS JSON) AS data) FROM events) AS events"


@dataclass(frozen=True)
class FieldSql:
    """A field as SQL: ``kind`` is ``text``, ``int`` or ``time`` (how values compare)."""

    sql: str
    kind: str = "text"


def data_field(name: str) -> str:
    """SQL reading ``name`` from ``events.data`` (the raw EventData field or an alias)."""
    return f"json_extract_string(data, '$.\"{name}\"')"


def _raw_first(name: str, column: str) -> FieldSql:
    return FieldSql(f'coalesce({data_field(name)}, "{column}")')


def _col(column: str, kind: str = "text") -> FieldSql:
    return FieldSql(f'"{column}"', kind)


def _data_any(*names: str) -> FieldSql:
    return FieldSql("coalesce(" + ", ".join(data_field(n) for n in names) + ")")


FIELDS: dict[str, FieldSql] = {
    # the record itself
    "EventID": _col("event_id", "int"),
    "EventId": _col("event_id", "int"),
    "Channel": _col("channel"),
    "Provider_Name": _col("program"),
    "Computer": _col("host"),
    "ComputerName": _col("host"),
    "Hostname": _col("host"),
    "@timestamp": _col("ts", "time"),
    "timestamp": _col("ts", "time"),
    # processes: Sysmon names, Security 4688 names, auditd's exe
    "Image": _col("process"),
    "NewProcessName": _col("process"),
    "exe": _raw_first("exe", "process"),
    "CommandLine": _col("command"),
    "ProcessCommandLine": _col("command"),
    "ParentImage": _data_any("ParentImage", "parent_process", "parent"),
    "ParentProcessName": _data_any("ParentProcessName", "parent_process", "parent"),
    "ParentCommandLine": _data_any("ParentCommandLine", "parent_command"),
    "User": _col("user"),
    "ScriptBlockText": _raw_first("ScriptBlockText", "command"),
    # accounts and logons: raw field first (see the module docstring)
    "TargetUserName": _raw_first("TargetUserName", "user"),
    "SubjectUserName": _raw_first("SubjectUserName", "user"),
    "LogonType": FieldSql(f'coalesce(TRY_CAST({data_field("LogonType")} AS BIGINT), "logon_type")', "int"),
    "IpAddress": _raw_first("IpAddress", "src_ip"),
    "IpPort": _raw_first("IpPort", "src_port"),
    "WorkstationName": _data_any("WorkstationName", "workstation"),
    # network (Sysmon 3, WFP 5156 through the generic mapping)
    "SourceIp": _col("src_ip"),
    "SourcePort": _col("src_port", "int"),
    "DestinationIp": _col("dst_ip"),
    "DestinationPort": _col("dst_port", "int"),
    "DestinationHostname": _col("dst_host"),
    # web servers (CONTRIBUTING: web_request rows; ``data.path`` is the decoded path)
    "cs-uri-query": FieldSql(data_field("query")),
    "c-uri-query": FieldSql(data_field("query")),
    "cs-uri-stem": FieldSql(data_field("path")),
    "c-uri-stem": FieldSql(data_field("path")),
    "cs-uri": FieldSql(data_field("path_raw")),
    "c-uri": FieldSql(data_field("path_raw")),
    "cs-method": FieldSql(data_field("method")),
    "c-method": FieldSql(data_field("method")),
    "sc-status": _col("status"),
    "c-ip": _col("src_ip"),
    "s-ip": _col("dst_ip"),
    "cs-host": FieldSql(data_field("vhost")),
    "cs-user-agent": FieldSql(data_field("user_agent")),
    "c-useragent": FieldSql(data_field("user_agent")),
    "cs(User-Agent)": FieldSql(data_field("user_agent")),
    "cs-referrer": FieldSql(data_field("referer")),
    "cs-referer": FieldSql(data_field("referer")),
    "cs(Referer)": FieldSql(data_field("referer")),
    "sc-bytes": FieldSql(data_field("bytes")),
    "cs-version": FieldSql(data_field("protocol")),
}

# A field name that is safe inside ``'$."…"'``: no quotes, backslashes or control characters.
_SAFE_FIELD = re.compile(r'^[^"\'\\\x00-\x1f\x7f]{1,200}$')


class UnmappableField(ValueError):
    """A field name that cannot be read safely (quotes, control characters, too long)."""


def field_sql(name: str) -> FieldSql:
    """The SQL reading Sigma field ``name`` from an ``events`` row."""
    known = FIELDS.get(name)
    if known is not None:
        return known
    if not _SAFE_FIELD.match(name):
        raise UnmappableField(f"field name {name!r} cannot be mapped (quotes, control "
                              "characters or over 200 characters)")
    return FieldSql(data_field(name))


# --- log sources ---------------------------------------------------------------------------

# Windows rows always carry a channel or an event id; Linux rows (syslog, shell history,
# web logs) carry neither.
WINDOWS = "(channel IS NOT NULL OR event_id IS NOT NULL)"
LINUX = "(channel IS NULL AND event_id IS NULL)"
_SYSMON = ("(program ILIKE 'Microsoft-Windows-Sysmon' "
           "OR channel ILIKE 'Microsoft-Windows-Sysmon/Operational')")


def _sysmon(*ids: int) -> str:
    return f"({_SYSMON} AND event_id IN ({', '.join(str(i) for i in ids)}))"


def _channel(*names: str) -> str:
    return "(" + " OR ".join(f"channel ILIKE '{n}'" for n in names) + ")"


def _channel_or_provider(channel: str, provider: str) -> str:
    # Forwarded events keep their provider but live in the ForwardedEvents channel.
    return f"(channel ILIKE '{channel}' OR program ILIKE '{provider}')"


_POWERSHELL = _channel_or_provider("Microsoft-Windows-PowerShell/Operational", "Microsoft-Windows-PowerShell")

# Categories seen in Windows (Sysmon, Security) logs and in generic ones.
CATEGORIES: dict[str, str] = {
    "process_creation": "event = 'process_start'",
    "network_connection": "event = 'network_connection'",
    "dns_query": "event = 'dns_query'",
    "dns": "event = 'dns_query'",
    "file_event": "event = 'file_created'",
    "file_creation": "event = 'file_created'",
    "registry_set": "event = 'registry_set'",
    "registry_event": f"(event = 'registry_set' OR {_sysmon(12, 14)})",
    "registry_add": f"({_sysmon(12)} AND {data_field('EventType')} ILIKE 'CreateKey')",
    "registry_delete": f"({_sysmon(12)} AND {data_field('EventType')} ILIKE 'Delete%')",
    "registry_rename": _sysmon(14),
    "image_load": "event = 'image_loaded'",
    "driver_load": _sysmon(6),
    "process_access": "event = 'process_access'",
    "process_termination": _sysmon(5),
    "file_change": _sysmon(2),
    "create_remote_thread": _sysmon(8),
    "raw_access_thread": _sysmon(9),
    "create_stream_hash": _sysmon(15),
    "pipe_created": _sysmon(17, 18),
    "wmi_event": _sysmon(19, 20, 21),
    "file_delete": _sysmon(23, 26),
    "clipboard_capture": _sysmon(24),
    "process_tampering": _sysmon(25),
    "sysmon_status": _sysmon(4, 16),
    "sysmon_error": _sysmon(255),
    "ps_script": "(event = 'powershell_script' AND event_id = 4104)",
    "ps_module": "(event = 'powershell_script' AND event_id = 4103)",
    "ps_classic_start": f"({_channel('Windows PowerShell')} AND event_id = 400)",
    "ps_classic_provider_start": f"({_channel('Windows PowerShell')} AND event_id = 600)",
    "ps_classic_script": f"({_channel('Windows PowerShell')} AND event_id = 800)",
    "webserver": "event = 'web_request'",
}

# On Linux most hosts have no process accounting, so the commands that ran come from shell
# history, sudo and cron logs; they are process creations as far as a rule can tell.
LINUX_PROCESS = "event IN ('process_start', 'shell_command', 'sudo', 'cron_run')"
_SYSLOG = f"({LINUX} AND program IS NOT NULL AND event NOT IN ('web_request', 'shell_command'))"

WINDOWS_SERVICES: dict[str, str] = {
    "security": _channel_or_provider("Security", "Microsoft-Windows-Security-Auditing"),
    "system": _channel("System"),
    "application": _channel("Application"),
    "sysmon": _SYSMON,
    "powershell": _POWERSHELL,
    "powershell-classic": _channel("Windows PowerShell"),
    "taskscheduler": _channel_or_provider("Microsoft-Windows-TaskScheduler/Operational",
                                          "Microsoft-Windows-TaskScheduler"),
    "windefend": _channel("Microsoft-Windows-Windows Defender/Operational"),
    "wmi": _channel("Microsoft-Windows-WMI-Activity/Operational"),
    "firewall-as": _channel("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"),
    "bits-client": _channel("Microsoft-Windows-Bits-Client/Operational"),
    "codeintegrity-operational": _channel("Microsoft-Windows-CodeIntegrity/Operational"),
    "dns-server": _channel("DNS Server"),
    "dns-client": _channel("Microsoft-Windows-DNS Client Events/Operational"),
    "terminalservices-localsessionmanager": _channel(
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"),
    "smbclient-security": _channel("Microsoft-Windows-SmbClient/Security"),
    "ntlm": _channel("Microsoft-Windows-NTLM/Operational"),
    "openssh": _channel("OpenSSH/Operational"),
    "applocker": _channel("Microsoft-Windows-AppLocker/EXE and DLL",
                          "Microsoft-Windows-AppLocker/MSI and Script",
                          "Microsoft-Windows-AppLocker/Packaged app-Deployment",
                          "Microsoft-Windows-AppLocker/Packaged app-Execution"),
    "driver-framework": _channel("Microsoft-Windows-DriverFrameworks-UserMode/Operational"),
    "security-mitigations": _channel("Microsoft-Windows-Security-Mitigations/Kernel Mode",
                                     "Microsoft-Windows-Security-Mitigations/User Mode"),
    "shell-core": _channel("Microsoft-Windows-Shell-Core/Operational"),
    "lsa-server": _channel("Microsoft-Windows-LSA/Operational"),
    "capi2": _channel("Microsoft-Windows-CAPI2/Operational"),
    "appxdeployment-server": _channel("Microsoft-Windows-AppXDeploymentServer/Operational"),
    "diagnosis-scripted": _channel("Microsoft-Windows-Diagnosis-Scripted/Operational"),
    "printservice-admin": _channel("Microsoft-Windows-PrintService/Admin"),
    "printservice-operational": _channel("Microsoft-Windows-PrintService/Operational"),
    "msexchange-management": _channel("MSExchange Management"),
}

LINUX_SERVICES: dict[str, str] = {
    "auth": _SYSLOG,
    "syslog": _SYSLOG,
    "sshd": f"({LINUX} AND program ILIKE 'sshd%')",
    "sudo": f"({LINUX} AND program = 'sudo')",
    "su": f"({LINUX} AND program = 'su')",
    "cron": f"({LINUX} AND program ILIKE 'cron%')",
    # The auditd source writes program "auditd" (sources/auditd.py).
    "auditd": f"({LINUX} AND program ILIKE 'audit%')",
}

# Web server products whose access logs the web source reads.
_WEB_PRODUCTS = {"apache", "nginx", "iis"}


def route(product: str | None, category: str | None, service: str | None) -> str | None:
    """WHERE clause selecting the ``events`` rows of a Sigma logsource; None: no such log."""
    product = product.lower() if product else None
    category = category.lower() if category else None
    service = service.lower() if service else None
    parts: list[str] = []
    if category == "webserver" and product in (None, *_WEB_PRODUCTS):
        return CATEGORIES["webserver"] if service is None else None
    if product not in (None, "windows", "linux"):
        return None
    if product == "windows":
        parts.append(WINDOWS)
    elif product == "linux":
        parts.append(LINUX)
    if category is not None:
        if product == "linux" and category == "process_creation":
            parts.append(LINUX_PROCESS)
        elif product is None and category == "process_creation":
            parts.append(f"(event = 'process_start' OR ({LINUX} AND {LINUX_PROCESS}))")
        elif category in CATEGORIES:
            parts.append(CATEGORIES[category])
        else:
            return None
    if service is not None:
        services = LINUX_SERVICES if product == "linux" else WINDOWS_SERVICES
        if service not in services:
            return None
        parts.append(services[service])
    if not parts:
        return None
    return " AND ".join(parts)


def describe(product: str | None, category: str | None, service: str | None) -> str:
    """``product=windows category=x`` for messages about a logsource."""
    items = (("product", product), ("category", category), ("service", service))
    return " ".join(f"{k}={v}" for k, v in items if v) or "(empty logsource)"
