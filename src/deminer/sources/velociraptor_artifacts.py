"""How Velociraptor artifact result rows become rows of the normalized tables.

One mapper per artifact (or artifact source), looked up by the result file's name —
``results/<Artifact>.json`` or ``results/<Artifact>%2F<Source>.json`` — in ``MAPPERS``; every
``Windows.EventLogs.*`` artifact goes through ``windows_events`` as EVTX records do. Column
names follow the artifact definitions in Velocidex/velociraptor ``artifacts/definitions``,
old and new: ``FullPath`` became ``OSPath``, StartupItems' ``Command`` became ``Details``,
Netstat gives ``LaddrIP``/``LaddrPort`` on Windows and ``LocalAddr``/``LocalPort`` (with
``ProcessInfo``) on Linux. A VQL subquery column holds a one-row list or a one-key dict, so
values are unwrapped before use (``text``). Values are stored as found; a mapper yields
nothing for a row without the fact its table is about.

    Windows.System.Pslist, Linux.Sys.Pslist       processes (Linux ``Exe … (deleted)`` → exe_deleted)
    Windows.Network.Netstat, Linux.Network.Netstat/TCP4|TCP6
                                                  connections (states as /proc names them)
    Windows.System.Services                       persistence service (``[ServiceDll: …]`` appended)
    Windows.System.TaskScheduler[/Analysis]       persistence task, one row per Exec action
    Windows.Sys.StartupItems                      persistence run_key (Startup-folder files too)
    Windows.Persistence.PermanentWMIEvents        persistence wmi (``[filter: <query>]`` appended)
    Linux.Sys.Crontab[/CronTabs]                  persistence cron (a user crontab's user is its
                                                  file name: the artifact's regex took the
                                                  command's first word for a user field)
    Windows.EventLogs.*                           events
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from deminer.case import to_utc
from deminer.sources import windows_events as we

_STATES = {"ESTAB": "ESTABLISHED", "LISTENING": "LISTEN", "SYN_RCVD": "SYN_RECV", "CLOSED": "CLOSE"}
_ENVELOPE = frozenset({"System", "EventData", "UserData", "EventTime", "TimeCreated", "Computer",
                       "Channel", "Provider", "EventID", "EventRecordID", "UserSID", "OSPath"})
Row = dict[str, Any]
Out = Iterator[tuple[str, Row]]


@dataclass(frozen=True)
class Meta:
    display: str        # the container, as the user named it
    host: str | None
    sub: str            # the artifact source a result file holds ("TCP4"), "" for none
    line: bytes         # the row as written (events keep it in ``raw``)


def text(value: Any) -> str | None:
    """A result value as text; a VQL subquery's one-row, one-column answer is unwrapped."""
    while isinstance(value, (list, dict)) and len(value) == 1:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    if value is None or isinstance(value, (list, dict)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def as_dict(value: Any) -> Row:
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, dict) else {}


def _processes(r: Row, m: Meta) -> Out:
    exe, deleted = text(r.get("Exe")), r.get("Deleted")
    if exe and exe.endswith(" (deleted)"):
        exe, deleted = exe[:-len(" (deleted)")], True
    yield "processes", {
        "pid": r.get("Pid"), "ppid": r.get("Ppid"), "name": text(r.get("Name")), "exe": exe,
        "cmdline": text(r.get("CommandLine")), "user": text(r.get("Username")),
        "started": to_utc(r.get("CreateTime")), "rss": r.get("WorkingSetSize", r.get("RSS")),
        "exe_deleted": deleted if isinstance(deleted, bool) else None,
        "exe_sha256": text(as_dict(r.get("Hash")).get("SHA256"))}


def _state(value: Any) -> str | None:
    name = (text(value) or "").strip().upper().replace(" ", "_")
    return _STATES.get(name, name) or None


def _connections(r: Row, m: Meta) -> Out:
    proc, local, remote = as_dict(r.get("ProcessInfo")), as_dict(r.get("Laddr")), as_dict(r.get("Raddr"))
    proto = (text(r.get("Type")) or m.sub or "tcp").lower()
    proto = {"tcp4": "tcp", "udp4": "udp"}.get(proto, proto)
    if (text(r.get("Family")) or "").upper() == "IPV6" and not proto.endswith("6"):
        proto += "6"
    yield "connections", {
        "pid": r.get("Pid", proc.get("Pid")), "proto": proto,
        "laddr": text(r.get("LaddrIP", r.get("LocalAddr", local.get("IP")))),
        "lport": r.get("LaddrPort", r.get("LocalPort", local.get("Port"))),
        "raddr": text(r.get("RaddrIP", r.get("RemoteAddr", remote.get("IP")))),
        "rport": r.get("RaddrPort", r.get("RemotePort", remote.get("Port"))),
        "state": _state(r.get("Status", r.get("State"))), "inode": r.get("inode")}


def _service(r: Row, m: Meta) -> Out:
    name, image, dll = text(r.get("Name")), text(r.get("PathName")), text(r.get("ServiceDll"))
    start = (text(r.get("StartMode")) or "").lower()
    created = to_utc(text(r.get("Created")))
    yield "persistence", {
        "kind": "service", "location": f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\{name}",
        "name": name, "command": ((image or "") + (f" [ServiceDll: {dll}]" if dll else "")).strip() or None,
        "user": text(r.get("UserAccount")), "mtime": created, "ts": created,
        "enabled": start in ("auto", "boot", "system") if start else None}


def _many(value: Any) -> list[str | None]:
    return [text(v) for v in value] if isinstance(value, list) else [text(value)]


def _task(r: Row, m: Meta) -> Out:
    path = text(r.get("OSPath", r.get("FullPath")))
    name = text(r.get("TaskName"))
    if not name and path:
        below = re.split(r"(?i)\\tasks\\", path, maxsplit=1)
        name = "\\" + below[1] if len(below) == 2 else path
    mtime = to_utc(text(r.get("Mtime")))
    common = {"kind": "task", "location": path, "name": name, "user": text(r.get("UserId")),
              "mtime": mtime, "ts": mtime or to_utc(text(r.get("RegistrationTime")))}
    commands, arguments = _many(r.get("Command")), _many(r.get("Arguments"))
    for i, command in enumerate(commands):
        args = arguments[i] if i < len(arguments) else None
        if command:
            yield "persistence", {**common, "command": f"{command} {args}" if args else command}
    for clsid in _many(r.get("ComHandler")):
        if clsid:
            yield "persistence", {**common, "command": clsid}


def _startup(r: Row, m: Meta) -> Out:
    path = text(r.get("OSPath", r.get("FullPath"))) or ""
    details = r.get("Details", r.get("Command"))
    command = details if isinstance(details, str) else (
        orjson.dumps(details).decode() if details else None)
    registry = path.upper().startswith("HKEY_")
    user = re.match(r"(?i)(?:HKEY_USERS\\([^\\]+)|[A-Z]:\\Users\\([^\\]+))\\", path)
    enabled = text(r.get("Enabled"))
    yield "persistence", {
        "kind": "run_key", "location": path.rsplit("\\", 1)[0] if registry else path,
        "name": text(r.get("Name")), "command": command or None,
        "user": (user.group(1) or user.group(2)) if user else None,
        "enabled": enabled.lower().startswith("enable") if enabled else None}


def _wmi(r: Row, m: Meta) -> Out:
    consumer, event_filter = as_dict(r.get("ConsumerDetails")), as_dict(r.get("FilterDetails"))
    command = next((text(consumer.get(k)) for k in ("CommandLineTemplate", "ScriptText",
                                                     "ExecutablePath") if consumer.get(k)), None)
    query = text(event_filter.get("Query"))
    kind = text(consumer.get("__CLASS")) or "EventConsumer"
    yield "persistence", {
        "kind": "wmi", "location": f"{text(r.get('Namespace')) or 'root/subscription'}:{kind}",
        "name": text(consumer.get("Name")) or text(event_filter.get("Name")),
        "command": ((command or "") + (f" [filter: {query}]" if query else "")).strip() or None}


def _cron(r: Row, m: Meta) -> Out:
    command, user = text(r.get("Command")), text(r.get("User"))
    path, event = text(r.get("Path", r.get("OSPath", r.get("FullPath")))) or "", text(r.get("Event"))
    if not command:
        return
    user_tab = bool(re.search(r"/var/spool/cron/|/var/at/tabs/", path))
    if event and not user_tab:            # "@reboot root cmd": a system crontab names its user
        user, _, command = command.partition(" ")
    elif user_tab:
        command = f"{user} {command}" if user and not event else command
        user = path.rsplit("/", 1)[-1]
    fields = [text(r.get(k)) for k in ("Minute", "Hour", "DayOfMonth", "Month", "DayOfWeek")]
    yield "persistence", {"kind": "cron", "location": path or None, "command": command.strip(),
                          "name": event or " ".join(f for f in fields if f), "user": user}


def _event_fields(r: Row) -> Row:
    out: Row = {}
    data, user_data = r.get("EventData"), r.get("UserData")
    if isinstance(data, dict):
        out.update((k, v) for k, v in data.items() if k != "#attributes")
    elif data is not None:
        out["EventData"] = data
    if isinstance(user_data, dict):
        for element, inner in user_data.items():
            if isinstance(inner, dict):
                out["xml_name"] = element
                out.update(inner)
    # flat artifacts (RDPAuth, …) put their fields beside EventID: keep those as well
    out.update((k, v) for k, v in r.items() if k not in _ENVELOPE and k not in out)
    return {k: v[:we.VALUE_CAP] if isinstance(v, str) else v for k, v in out.items()}


def _event(r: Row, m: Meta) -> Out:
    system = as_dict(r.get("System"))
    event_id = we.to_event_id(text(system.get("EventID", r.get("EventID"))))
    if event_id is None:
        return
    when = as_dict(system.get("TimeCreated")).get("SystemTime") or r.get("EventTime", r.get("TimeCreated"))
    os_path = text(r.get("OSPath"))
    yield "events", we.event_row(
        channel=text(system.get("Channel", r.get("Channel"))),
        provider=text(as_dict(system.get("Provider")).get("Name") or r.get("Provider")),
        event_id=event_id, record_id=we.to_int(text(system.get("EventRecordID", r.get("EventRecordID")))),
        computer=text(system.get("Computer", r.get("Computer"))), ts=to_utc(when),
        user_sid=text(as_dict(system.get("Security")).get("UserID") or r.get("UserSID")),
        fields=_event_fields(r), source=f"{m.display}!{os_path}" if os_path else "", host=m.host,
        raw=m.line[:we.RAW_CAP * 4].decode("utf-8", "backslashreplace").rstrip("\r\n"))


Mapper = Callable[[Row, Meta], Out]
MAPPERS: dict[str, Mapper] = {
    "Windows.System.Pslist": _processes, "Linux.Sys.Pslist": _processes, "MacOS.Sys.Pslist": _processes,
    "Windows.Network.Netstat": _connections, "Linux.Network.Netstat/TCP4": _connections,
    "Linux.Network.Netstat/TCP6": _connections, "Windows.System.Services": _service,
    "Windows.System.TaskScheduler": _task, "Windows.System.TaskScheduler/Analysis": _task,
    "Windows.Sys.StartupItems": _startup, "Windows.Persistence.PermanentWMIEvents": _wmi,
    "Linux.Sys.Crontab": _cron, "Linux.Sys.Crontab/CronTabs": _cron,
}


def mapper_for(result: str) -> Mapper | None:
    """The mapper for a result name (``Artifact`` or ``Artifact/Source``), if there is one."""
    if result.startswith("Windows.EventLogs."):
        return _event
    return MAPPERS.get(result)
