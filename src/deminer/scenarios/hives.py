"""Real Windows registry hives for tests, written by hivex (libhivex, the Red Hat library).

hivex edits existing hives but cannot create one, so ``empty_hive`` lays down the smallest
valid hive (a ``regf`` header with its checksum, one ``hbin``, a root ``nk`` key and the
``sk`` security record every key points to). hivex then adds every key and value through
its Python binding, which Debian ships for the system interpreter only (``python3-hivex``),
so that part runs as ``/usr/bin/python3`` in a subprocess. Last, the key last-write times
are set to the ones the test asked for: hivex gives a new key the time its parent has, and
the tests need a distinct, known time per key.

    write_hive(path, "SYSTEM", [Key("Select", [dword("Current", 1)], T0), ...])

Builders for the seed cases (random-named exe + matching service, ``LastBackup``, MS17-010
packages, ``Ddrivers``-style tasks) are ``system_keys``, ``software_keys`` and
``ntuser_keys``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HIVEX_PYTHON = "/usr/bin/python3"
REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11
HBIN = 0x1000
T0 = dt.datetime(2019, 3, 11, 8, 30, 15, 250000)        # naive UTC, like the case store
EPOCH_1601 = dt.datetime(1601, 1, 1)

Value = tuple[str, int, bytes]


@dataclass
class Key:
    path: str                                   # inside the hive, backslash-separated
    values: list[Value] = field(default_factory=list)
    mtime: dt.datetime = T0


def _utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def sz(name: str, text: str) -> Value:
    return name, REG_SZ, _utf16z(text)


def expand_sz(name: str, text: str) -> Value:
    return name, REG_EXPAND_SZ, _utf16z(text)


def multi_sz(name: str, items: list[str]) -> Value:
    return name, REG_MULTI_SZ, "".join(i + "\0" for i in items).encode("utf-16-le") + b"\0\0"


def dword(name: str, n: int) -> Value:
    return name, REG_DWORD, struct.pack("<I", n)


def qword(name: str, n: int) -> Value:
    return name, REG_QWORD, struct.pack("<Q", n)


def binary(name: str, data: bytes) -> Value:
    return name, REG_BINARY, data


def filetime(t: dt.datetime) -> int:
    delta = t - EPOCH_1601
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def hivex_available() -> bool:
    if not os.access(HIVEX_PYTHON, os.X_OK):
        return False
    probe = subprocess.run([HIVEX_PYTHON, "-c", "import hivex"], capture_output=True, timeout=30)
    return probe.returncode == 0


class HivexMissing(RuntimeError):
    """Writing hives needs Debian's python3-hivex; tests turn this into a skip."""


def require_hivex() -> None:
    if not hivex_available():
        raise HivexMissing("hivex is not installed for /usr/bin/python3 (apt-get install "
                           "python3-hivex, or `make sysdeps` as root)")


# --- the empty hive ---------------------------------------------------------------------------

def _sid(authority: int, *subs: int) -> bytes:
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + struct.pack(
        f"<{len(subs)}I", *subs)


def _security_descriptor() -> bytes:
    """Self-relative SD: owner Administrators, group SYSTEM, DACL granting Everyone all."""
    owner, group = _sid(5, 32, 544), _sid(5, 18)
    ace_sid = _sid(1, 0)
    ace = struct.pack("<BBHI", 0, 0x02, 8 + len(ace_sid), 0x000F003F) + ace_sid
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    head = 20
    return struct.pack("<BBHIIII", 1, 0, 0x8004, head, head + len(owner), 0,
                       head + len(owner) + len(group)) + owner + group + dacl


def _cell(body: bytes) -> bytes:
    size = (4 + len(body) + 7) // 8 * 8
    return struct.pack("<i", -size) + body.ljust(size - 4, b"\0")


def empty_hive(name: str, root_time: dt.datetime = T0) -> bytes:
    """A hive with only its root key; ``name`` is the header's embedded file name."""
    root_off = 0x20
    root_name = b"ROOT"
    nk_len = (4 + 0x4C + len(root_name) + 7) // 8 * 8
    sk_off = root_off + nk_len
    sd = _security_descriptor()
    none = 0xFFFFFFFF
    nk = b"nk" + struct.pack(
        "<HQIIIIIIIIIIIIIIIHH", 0x2C, filetime(root_time), 0, none, 0, 0, none, none, 0, none,
        sk_off, none, 0, 0, 0, 0, 0, len(root_name), 0) + root_name
    sk = b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd
    cells = _cell(nk) + _cell(sk)
    used = 0x20 + len(cells)
    free = struct.pack("<i", HBIN - used).ljust(HBIN - used, b"\0")
    hbin = b"hbin" + struct.pack("<III", 0, HBIN, 0) + struct.pack("<IQI", 0, 0, 0) + cells + free
    fname = name.encode("utf-16-le")[:64].ljust(64, b"\0")
    header = bytearray(b"regf" + struct.pack("<IIQIIIIIII", 1, 1, filetime(root_time), 1, 3, 0, 1,
                                               root_off, HBIN, 1) + fname)
    header = header.ljust(0x1FC, b"\0")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(header)):
        checksum ^= word
    header += struct.pack("<I", checksum)
    return bytes(header.ljust(0x1000, b"\0")) + hbin


# --- hivex, in the system Python --------------------------------------------------------------

_RUNNER = r"""
import json, sys
import hivex
spec = json.load(sys.stdin)
h = hivex.Hivex(spec["path"], write=True)
handles = {"": h.root()}
for key in spec["keys"]:
    parent = ""
    for part in key["path"].split("\\"):
        here = parent + "\\" + part if parent else part
        if here not in handles:
            child = h.node_get_child(handles[parent], part)
            handles[here] = child if child else h.node_add_child(handles[parent], part)
        parent = here
    if key["values"]:
        h.node_set_values(handles[parent], [{"key": n, "t": t, "value": bytes.fromhex(v)}
                                            for n, t, v in key["values"]])
h.commit(spec["path"])
json.dump(handles, sys.stdout)
"""


def write_hive(path: Path, name: str, keys: list[Key], root_time: dt.datetime = T0) -> dict[str, int]:
    """Write a hive holding ``keys`` (parents are created, with ``root_time``) to ``path``;
    returns each key's nk cell offset in the file, by key path ("" is the root)."""
    require_hivex()
    path.write_bytes(empty_hive(name, root_time))
    spec = {"path": str(path), "keys": [
        {"path": k.path, "values": [(n, t, v.hex()) for n, t, v in k.values]} for k in keys]}
    run = subprocess.run([HIVEX_PYTHON, "-c", _RUNNER], input=json.dumps(spec), text=True,
                         capture_output=True, timeout=60)
    if run.returncode != 0:
        raise RuntimeError(f"hivex failed: {run.stderr.strip()}")
    handles: dict[str, int] = json.loads(run.stdout)
    # hivex handles are file offsets of the nk cell; its last-write FILETIME sits 8 bytes in.
    times = dict.fromkeys(handles, root_time)
    for k in keys:
        times[k.path] = k.mtime
    data = bytearray(path.read_bytes())
    for key_path, node in handles.items():
        if data[node + 4:node + 6] != b"nk":
            raise RuntimeError(f"hivex handle {node:#x} for {key_path!r} is not an nk cell")
        data[node + 8:node + 16] = struct.pack("<Q", filetime(times[key_path]))
    path.write_bytes(bytes(data))
    return handles


# --- Task Scheduler cache blobs (TaskCache\Tasks\{GUID}) ---------------------------------------

def _bstr(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return struct.pack("<I", len(raw)) + raw


def exec_action(command: str, arguments: str = "", workdir: str = "", version: int = 3) -> bytes:
    out = struct.pack("<H", 0x6666) + _bstr("") + _bstr(command) + _bstr(arguments) + _bstr(workdir)
    return out + (struct.pack("<H", 0) if version == 3 else b"")


def com_action(clsid: str, data: str = "") -> bytes:
    return struct.pack("<H", 0x7777) + _bstr("") + uuid.UUID(clsid).bytes_le + _bstr(data)


def actions_blob(*actions: bytes, version: int = 3, context: str = "Author") -> bytes:
    return struct.pack("<H", version) + (_bstr(context) if version == 3 else b"") + b"".join(actions)


def dynamic_info(created: dt.datetime) -> bytes:
    return struct.pack("<IQQIIQ", 3, filetime(created), 0, 0, 0, 0)


# --- the seed cases ---------------------------------------------------------------------------

T_INFECT = dt.datetime(2019, 3, 14, 2, 17, 41)        # when the WannaMine keys were written
T_TASK_CREATED = dt.datetime(2019, 3, 14, 2, 18, 5)   # DynamicInfo: the task was first registered
T_TASK = dt.datetime(2019, 3, 20, 10, 0, 0)           # its Tree key: re-added after a deletion
T_PATCH = dt.datetime(2017, 4, 2, 9, 0, 0)
RANDOM_EXE = "qmzgxwvb"                                # case 5: random name in C:\Windows
ENCODED = "JABzAD0ATgBlAHcALQBPAGIAagBlAGMAdAAgAEkATwAuAE0AZQBtAG8AcgB5AFMAdAByAGUAYQBtAA=="
DDRIVERS_CMD = "cmd.exe"
DDRIVERS_ARGS = f"/c powershell -nop -w hidden -ep bypass -enc {ENCODED}"
GUID_DDRIVERS = "{5C0F1A52-7D36-4B8E-9A11-2E4B33D1C001}"
GUID_DNSSCAN = "{5C0F1A52-7D36-4B8E-9A11-2E4B33D1C002}"
GUID_DEFRAG = "{5C0F1A52-7D36-4B8E-9A11-2E4B33D1C003}"
CLSID = "{A6BA00FE-40E8-477C-B713-C64A14F18ADB}"
CV, NTCV = "Microsoft\\Windows\\CurrentVersion", "Microsoft\\Windows NT\\CurrentVersion"


def system_keys(computer: str = "PC-TEACHER") -> list[Key]:
    svc = "ControlSet001\\Services"
    network = sz("ObjectName", "NT AUTHORITY\\NetworkService")
    return [
        Key("Select", [dword("Current", 1), dword("Default", 1), dword("LastKnownGood", 2)]),
        Key("ControlSet001\\Control\\ComputerName\\ComputerName", [sz("ComputerName", computer)]),
        Key(f"{svc}\\{RANDOM_EXE}", [expand_sz("ImagePath", f"C:\\Windows\\{RANDOM_EXE}.exe"),
                                     dword("Start", 2), dword("Type", 0x10), sz("ObjectName", "LocalSystem"),
                                     sz("DisplayName", RANDOM_EXE)], T_INFECT),
        Key(f"{svc}\\Dnscache", [
            expand_sz("ImagePath", "%SystemRoot%\\system32\\svchost.exe -k NetworkService"),
            dword("Start", 2), dword("Type", 0x20), network]),
        Key(f"{svc}\\Dnscache\\Parameters", [
            expand_sz("ServiceDll", "%SystemRoot%\\System32\\dnsrslvr.dll")]),
        Key(f"{svc}\\Fax", [expand_sz("ImagePath", "%SystemRoot%\\system32\\fxssvc.exe"), dword("Start", 4),
                            dword("Type", 0x10), network]),
        Key(f"{svc}\\Tcpip\\Parameters", [sz("Hostname", "pc-teacher-tcpip")]),
        Key("ControlSet002\\Services\\oldonly", [expand_sz("ImagePath", "C:\\old.exe"), dword("Start", 2),
                                                 dword("Type", 0x10)]),
    ]


VMTOOLS = '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe" -n vmusr'
USERINIT = "C:\\Windows\\system32\\userinit.exe,C:\\Windows\\mssecsvc.exe,"
CBS = f"{CV}\\Component Based Servicing\\Packages"


def software_keys() -> list[Key]:
    cache = f"{NTCV}\\Schedule\\TaskCache"
    ifeo = f"{NTCV}\\Image File Execution Options"
    installed = [dword("InstallTimeHigh", filetime(T_PATCH) >> 32),
                 dword("InstallTimeLow", filetime(T_PATCH) & 0xFFFFFFFF)]
    ddrivers = actions_blob(exec_action(DDRIVERS_CMD, DDRIVERS_ARGS))
    return [
        Key(NTCV, [sz("ProductName", "Windows 7 Professional"), sz("CurrentBuild", "7601"),
                   sz("CSDVersion", "Service Pack 1"), sz("CurrentVersion", "6.1")]),
        Key(f"{CV}\\Run", [sz(RANDOM_EXE, f"C:\\Windows\\{RANDOM_EXE}.exe"),
                           sz("VMware User Process", VMTOOLS), sz("Empty", "")], T_INFECT),
        Key(f"Wow6432Node\\{CV}\\RunOnce", [sz("upd", "C:\\Windows\\Temp\\svchost.exe")]),
        Key(f"{NTCV}\\Winlogon", [sz("Shell", "explorer.exe"), sz("Userinit", USERINIT)]),
        Key(f"{ifeo}\\sethc.exe", [sz("Debugger", "C:\\Windows\\System32\\cmd.exe")]),
        Key(f"{ifeo}\\notepad.exe", [dword("GlobalFlag", 0x200)]),
        Key(f"{cache}\\Tree\\Ddrivers", [sz("Id", GUID_DDRIVERS), dword("Index", 3)], T_TASK),
        Key(f"{cache}\\Tree\\DnsScan", [sz("Id", GUID_DNSSCAN), dword("Index", 3)], T_TASK),
        Key(f"{cache}\\Tree\\Microsoft\\Windows\\Defrag\\ScheduledDefrag", [sz("Id", GUID_DEFRAG)]),
        Key(f"{cache}\\Tasks\\{GUID_DDRIVERS}", [
            sz("Path", "\\Ddrivers"), binary("Actions", ddrivers),
            binary("DynamicInfo", dynamic_info(T_TASK_CREATED))]),
        Key(f"{cache}\\Tasks\\{GUID_DNSSCAN}", [      # cut inside its command: not decodable
            binary("Actions", actions_blob(exec_action("C:\\Windows\\Temp\\svchost.exe", "-p 445"))[:-9])]),
        Key(f"{cache}\\Tasks\\{GUID_DEFRAG}", [binary("Actions", actions_blob(com_action(CLSID, "-c")))]),
        Key(f"{CBS}\\Package_for_KB4012212~31bf3856ad364e35~amd64~~6.1.1.0",
            [dword("CurrentState", 0x70), *installed]),
        Key(f"{CBS}\\Package_for_KB2534111~31bf3856ad364e35~amd64~~6.1.1.1", [dword("CurrentState", 0x70)]),
        Key(f"{CBS}\\Microsoft-Windows-Foundation-Package~31bf3856ad364e35~amd64~~6.1.7601.17514",
            [dword("CurrentState", 0x70)]),
        Key(f"{NTCV}\\NetworkPlatform\\Location Awareness", [sz("LastBackup", "1552529861"),
                                                              sz("LastBackupTime", "x")], T_INFECT),
    ]


def xp_software_keys() -> list[Key]:
    return [
        Key(NTCV, [sz("ProductName", "Microsoft Windows XP"), sz("CurrentBuildNumber", "2600"),
                   sz("CSDVersion", "Service Pack 3")]),
        Key("Microsoft\\Updates\\Windows XP\\SP3\\KB4012598", [sz("Description", "Security Update")],
            T_PATCH),
        Key(f"{CV}\\Uninstall\\KB4012598", [sz("DisplayName", "Security Update for Windows XP (KB4012598)")],
            T_PATCH),
        Key(f"{NTCV}\\Svchost", [binary("lastbackup", b"\x01\x02")], T_INFECT),
    ]


def ntuser_keys(user: str = "alice") -> list[Key]:
    return [
        Key(f"Software\\{CV}\\Explorer\\Shell Folders", [sz("Desktop", f"C:\\Users\\{user}\\Desktop")]),
        Key(f"Software\\{CV}\\Run", [sz("Updater", f"C:\\Users\\{user}\\AppData\\Roaming\\upd.exe")],
            T_INFECT),
        Key(f"Software\\{NTCV}\\Windows", [sz("Load", "C:\\Windows\\Temp\\x.exe"), sz("Run", "")]),
        Key(f"Software\\{NTCV}\\Winlogon", [sz("Shell", f"explorer.exe, C:\\Users\\{user}\\evil.exe")]),
        Key("Environment", [expand_sz("TEMP", "%USERPROFILE%\\AppData\\Local\\Temp")]),
    ]
