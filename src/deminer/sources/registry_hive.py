"""Offline Windows registry hives (SYSTEM, SOFTWARE, NTUSER.DAT) → autostarts, patches, host facts.

Recognised by the ``regf`` magic and read with regipy. Which hive it is comes from its top
keys (``Select`` + ``ControlSet00N`` = SYSTEM, ``Microsoft`` = SOFTWARE, ``Software`` = a
user's NTUSER.DAT), not from the file name. Every row names the hive file in ``source``;
``location`` is the hive file read as a folder: ``<hive path>\\<key path>``. ``mtime`` (and
``ts``) is the key's last-write time, the only time a hive keeps.

    SYSTEM    persistence service (current control set from Select\\Current: ImagePath,
              Start 0-2 = enabled, ObjectName, a ServiceDll appended as ``[ServiceDll: …]``);
              hosts (hostname = ComputerName, ips = the interfaces' static IPAddress or DHCP
              lease under Tcpip\\Parameters\\Interfaces); events usb_device per USB storage device
              (``Enum\\USBSTOR\\<device>\\<serial>``: ts = that key's time, data = device,
              vendor, product, revision, serial, friendly_name and, where Windows keeps them
              under Properties, first_install / last_arrival / last_removal)
    SOFTWARE  persistence run_key (Run, RunOnce, RunServices(Once), Policies\\Explorer\\Run and
              Wow6432Node), winlogon (Shell/Userinit other than the defaults), ifeo (Debugger),
              task (TaskCache\\Tree, commands from the cached Actions, ts = cached creation);
              events hotfix_installed (data.kb, data.package, data.state) from Component Based
              Servicing packages and XP's ``Updates`` / ``Uninstall\\KB…`` keys; hosts (os)
    NTUSER    persistence run_key (same keys under Software\\, plus Windows\\Load/Run), winlogon
    any hive  events registry_value for a value named ``LastBackup`` (WannaMine 4.0 wrote one;
              its key time is taken as the infection time): ts = key time, data = key/value/data

The host is the one given, else SYSTEM's ComputerName — for SOFTWARE/NTUSER that of a
``SYSTEM`` hive in the same folder. WMI subscriptions live in the WMI repository, not a hive.

regipy reads the whole file into memory (hence ``MAX_HIVE``) and trusts its offsets: walks are
bounded, damage costs the part it hits (one ``errors`` row), an unopenable hive is a SourceError.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from construct import ConstructError  # type: ignore[import-untyped]
from regipy.exceptions import RegipyException, RegistryKeyNotFoundException
from regipy.registry import NKRecord, RegistryHive, Value

from deminer.sources import task_xml
from deminer.sources.base import Batch, Source, SourceContext, SourceError, host_id
from deminer.sources.hive_state import dirty_message

MAX_HIVE = 1 << 30                 # SOFTWARE hives reach a few hundred MiB
MAX_KEYS = 1_000_000               # keys one bounded walk may visit
MAX_DEPTH = 512                    # the registry's own nesting limit
VALUE_CAP = 32768                  # characters kept of one value
_ERRORS_SHOWN = 3
_EPOCH = dt.datetime(1601, 1, 1)
_HIVE_ERRORS = (RegipyException, ConstructError, ValueError, KeyError, IndexError, OverflowError,
                UnicodeError, struct.error, EOFError, AssertionError, RecursionError)

# MS17-010 updates (the March 2017 ones and the April/May 2017 rollups that contain them),
# for the patch audit; the rows below list every KB found and interpret none.
MS17_010_KBS = frozenset(f"KB{n}" for n in (
    4012212, 4012213, 4012214, 4012215, 4012216, 4012217, 4012598, 4012606, 4013198, 4013429, 4013389,
    4015549, 4019264, 4015550, 4019215, 4015551, 4019216, 4015217, 4019472, 4015219, 4019473, 4015221,
    4019474))

_CV = "Microsoft\\Windows\\CurrentVersion"
_NTCV = "Microsoft\\Windows NT\\CurrentVersion"
RUN_KEYS = tuple(f"{w}{_CV}\\{k}" for w in ("", "Wow6432Node\\") for k in (
    "Run", "RunOnce", "RunServices", "RunServicesOnce", "Policies\\Explorer\\Run"))
_DEFAULTS = {"shell": {"explorer.exe", "c:\\windows\\explorer.exe", "%systemroot%\\explorer.exe"},
             "userinit": {"userinit.exe", "c:\\windows\\system32\\userinit.exe",
                          "%systemroot%\\system32\\userinit.exe"}}
_KB = re.compile(r"KB\d{5,8}", re.IGNORECASE)
T = TypeVar("T")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_DEVPKEY_TIMES = "{83da6326-97a6-4088-9453-a1923f573b29}"   # DEVPKEY_Device_*Date properties
_LASTBACKUP = re.compile(rb"(?i)lastbackup|l\x00a\x00s\x00t\x00b\x00a\x00c\x00k\x00u\x00p\x00")

# regipy logs what it skips; the errors rows say it here, so keep it off the terminal.
logging.getLogger("regipy").addHandler(logging.NullHandler())


class _Clamped(io.BytesIO):
    """regipy reads ``data_size`` bytes for every value, even inline ones whose size has the
    0x80000000 bit set, i.e. the rest of the file per DWORD; the bytes are unused then."""

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0x80000000:
            size &= 0x7FFFFFFF
        return super().read(size)


def sniff(path: Path, head: bytes) -> bool:
    """A primary hive: ``regf`` with file type 0 (transaction logs, ``.LOG1/2``, say 1 or 2)."""
    return head[:4] == b"regf" and len(head) >= 0x200 and head[0x1C:0x20] == b"\0\0\0\0"


def _why(exc: BaseException) -> str:
    """One line for an exception: construct's messages span several."""
    name = "struct.error" if isinstance(exc, struct.error) else type(exc).__name__
    return f"{name}: {' '.join(str(exc).split())}"


def _open(path: Path) -> tuple[RegistryHive, bytes]:
    size = path.stat().st_size
    if size > MAX_HIVE:
        raise SourceError(f"hive of {size} bytes is over the {MAX_HIVE}-byte cap")
    try:
        hive = RegistryHive(str(path))  # type: ignore[no-untyped-call]
    except _HIVE_ERRORS as exc:
        raise SourceError(f"not a readable registry hive ({_why(exc)})") from exc
    loaded = getattr(hive, "_stream", None)
    if not isinstance(loaded, io.BytesIO):         # another regipy layout: slower, still right
        return hive, path.read_bytes()
    data = loaded.getvalue()
    hive._stream = hive.root._stream = _Clamped(data)
    return hive, data


def _filetime(value: int | None) -> dt.datetime | None:
    try:
        return _EPOCH + dt.timedelta(microseconds=value // 10) if value and value > 0 else None
    except OverflowError:
        return None


def _time(nk: NKRecord) -> dt.datetime | None:
    return _filetime(int(nk.header.last_modified))


def _key(hive: RegistryHive, path: str) -> NKRecord | None:
    with suppress(RegistryKeyNotFoundException):
        return cast(NKRecord, hive.get_key("\\" + path))  # type: ignore[no-untyped-call]
    return None


def _subkeys(nk: NKRecord | None) -> list[NKRecord]:
    if nk is None or not nk.subkey_count:
        return []
    return list(nk.iter_subkeys())  # type: ignore[no-untyped-call]


def _values(nk: NKRecord | None) -> dict[str, Value]:
    """A key's values by lower-case name (registry names are case-insensitive)."""
    if nk is None or not nk.values_count:
        return {}
    return {v.name.lower(): v for v in nk.iter_values(trim_values=False)}  # type: ignore[no-untyped-call]


def _text(v: Value | None) -> str | None:
    """A value as text: strings end at their first NUL (as Windows reads them)."""
    if v is None or v.value is None:
        return None
    value, string = v.value, v.value_type in ("REG_SZ", "REG_EXPAND_SZ")
    if string and isinstance(value, str) and len(value) >= 4 and set(value[1:8:2]) == {"\0"}:
        value = value.encode("utf-8") + b"\0"    # odd-length UTF-16 that regipy read as UTF-8
    if isinstance(value, bytes):
        even = value[: len(value) // 2 * 2]
        value = even.decode("utf-16-le", "backslashreplace") if string else value.hex()
    elif isinstance(value, list):
        value = " ".join(str(item) for item in value)
    text = str(value)
    return (text.split("\0", 1)[0] if string else text)[:VALUE_CAP]


def _int(v: Value | None) -> int | None:
    return v.value if v is not None and isinstance(v.value, int) else None


def _walk(top: NKRecord | None, path: str) -> Iterator[tuple[str, NKRecord]]:
    """(path, key) for every key below ``top``, at most ``MAX_KEYS`` keys and ``MAX_DEPTH``
    levels; a subkey list seen before is not entered again (a crafted loop)."""
    seen: set[int] = set()
    stack = [(path, top, 0)] if top is not None else []
    budget = MAX_KEYS
    while stack:
        here, nk, depth = stack.pop()
        if depth >= MAX_DEPTH or not nk.subkey_count or int(nk.header.subkeys_list_offset) in seen:
            continue
        seen.add(int(nk.header.subkeys_list_offset))
        subs = [(f"{here}\\{sub.name}", sub, depth + 1) for sub in _subkeys(nk)]
        budget -= len(subs)
        if budget < 0:
            raise ValueError(f"walk stopped after {MAX_KEYS} keys under {path or 'the root'}")
        stack.extend(reversed(subs))
        yield from ((sub_path, sub) for sub_path, sub, _ in subs)


class _Hive:
    """One hive being read: its rows, its errors and the helpers that make rows."""

    def __init__(self, ctx: SourceContext, hive: RegistryHive, data: bytes) -> None:
        self.ctx, self.reg, self.data, self.host = ctx, hive, data, host_id(ctx.host)
        self.out: dict[str, list[dict[str, Any]]] = {}      # a hive yields thousands of rows
        self.errors: list[str] = []

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.out.setdefault(table, []).append({"host": self.host, "source": self.ctx.display, **row})

    def persist(self, kind: str, key_path: str, nk: NKRecord, name: str, command: str | None,
                user: str | None = None, enabled: bool | None = None,
                ts: dt.datetime | None = None) -> None:
        mtime = _time(nk)
        self.add("persistence", {
            "ts": ts or mtime, "kind": kind, "location": f"{self.ctx.display}\\{key_path}",
            "name": name, "command": command, "user": user, "mtime": mtime, "enabled": enabled})

    def section(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run one part; its failure is an error message, the other parts still run."""
        try:
            return fn()
        except _HIVE_ERRORS as exc:
            self.errors.append(f"{what}: {_why(exc)}")
            return None

    # --- SYSTEM -----------------------------------------------------------------------------

    def control_set(self) -> str:
        select = _values(_key(self.reg, "Select"))
        number = _int(select.get("current")) or _int(select.get("default")) or 1
        return f"ControlSet{number:03d}"

    def computer_name(self) -> str | None:
        cs = self.control_set()
        name = _values(_key(self.reg, f"{cs}\\Control\\ComputerName\\ComputerName")).get("computername")
        tcpip = _values(_key(self.reg, f"{cs}\\Services\\Tcpip\\Parameters"))
        return _text(name) or _text(tcpip.get("hostname"))

    def services(self) -> None:
        path = f"{self.control_set()}\\Services"
        for svc in _subkeys(_key(self.reg, path)):
            self.section(f"service {svc.name}", partial(self.service, f"{path}\\{svc.name}", svc))

    def service(self, path: str, svc: NKRecord) -> None:
        vals = _values(svc)
        image = _text(vals.get("imagepath"))
        if image is None and "type" not in vals:
            return                                # a settings key, not a service
        dll = _text(vals.get("servicedll"))
        if dll is None and svc.subkey_count:
            params = svc.get_subkey("Parameters", raise_on_missing=False)  # type: ignore[no-untyped-call]
            dll = _text(_values(params).get("servicedll"))
        start = _int(vals.get("start"))
        command = ((image or "") + (f" [ServiceDll: {dll}]" if dll else "")).strip()
        self.persist("service", path, svc, svc.name, command or None, _text(vals.get("objectname")),
                     None if start is None else start in (0, 1, 2))

    def addresses(self) -> list[str]:
        """IPv4 addresses of the network interfaces: static ones, or the last DHCP lease."""
        path = f"{self.control_set()}\\Services\\Tcpip\\Parameters\\Interfaces"
        found: set[str] = set()
        for nic in _subkeys(_key(self.reg, path)):
            vals = _values(nic)
            for name in ("ipaddress", "dhcpipaddress"):
                found.update(a for a in (_text(vals.get(name)) or "").split()
                             if _IPV4.fullmatch(a) and a != "0.0.0.0")
        return sorted(found)

    def usb_devices(self) -> None:
        path = f"{self.control_set()}\\Enum\\USBSTOR"
        for dev in _subkeys(_key(self.reg, path)):
            parts = dict(zip(("type", "vendor", "product", "revision"),
                             (p.split("_", 1)[-1] for p in dev.name.split("&")), strict=False))
            for inst in _subkeys(dev):
                key = f"{path}\\{dev.name}\\{inst.name}"
                data: dict[str, Any] = {"key": key, "device": dev.name, "serial": inst.name, **parts,
                                        "friendly_name": _text(_values(inst).get("friendlyname"))}
                for code, label in (("64", "first_install"), ("66", "last_arrival"), ("67", "last_removal")):
                    when = self.device_time(f"{key}\\Properties\\{_DEVPKEY_TIMES}", code)
                    if when:
                        data[label] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                self.add("events", {"ts": _time(inst), "event": "usb_device", "program": "registry",
                                    "data": data})

    def device_time(self, base: str, code: str) -> dt.datetime | None:
        """A device property FILETIME: ``<base>\\00<code>`` (Windows 8+, default value) or
        ``<base>\\000000<code>\\00000000`` value Data (Windows 7)."""
        for sub, name in ((f"00{code}", "(default)"), (f"000000{code}\\00000000", "data")):
            try:                                  # a damaged property costs only itself
                value = _values(_key(self.reg, f"{base}\\{sub}")).get(name)
            except _HIVE_ERRORS as exc:
                self.errors.append(f"{base}\\{sub}: {_why(exc)}")
                continue
            raw = value.value if value is not None else None
            if isinstance(raw, dt.datetime):
                return raw.astimezone(dt.UTC).replace(tzinfo=None) if raw.tzinfo else raw
            if isinstance(raw, bytes) and len(raw) == 8:
                return _filetime(struct.unpack("<Q", raw)[0])
        return None

    # --- SOFTWARE and NTUSER ----------------------------------------------------------------

    def run_keys(self, prefix: str, user: str | None) -> None:
        # HKCU also runs the Load / Run values of ...\Windows NT\CurrentVersion\Windows.
        extra = ((f"{_NTCV}\\Windows", ("load", "run")),) if prefix else ()
        for path, only in (*((k, None) for k in RUN_KEYS), *extra):
            nk = _key(self.reg, prefix + path)
            for v in _values(nk).values():
                command = _text(v)
                if nk is not None and command and (only is None or v.name.lower() in only):
                    self.persist("run_key", prefix + path, nk, v.name, command, user)

    def winlogon(self, prefix: str, user: str | None) -> None:
        for wow in ("", "Wow6432Node\\") if not prefix else ("",):
            path = f"{prefix}{wow}{_NTCV}\\Winlogon"
            nk = _key(self.reg, path)
            vals = _values(nk)
            for name in ("shell", "userinit"):
                command = _text(vals.get(name))
                norm = (command or "").strip().rstrip(",").strip().lower()
                if nk is not None and command and norm not in _DEFAULTS[name]:
                    self.persist("winlogon", path, nk, vals[name].name, command, user)

    def ifeo(self) -> None:
        for wow in ("", "Wow6432Node\\"):
            path = f"{wow}{_NTCV}\\Image File Execution Options"
            for exe in _subkeys(_key(self.reg, path)):
                command = _text(_values(exe).get("debugger"))
                if command:
                    self.persist("ifeo", f"{path}\\{exe.name}", exe, exe.name, command)

    def tasks(self) -> None:
        base = f"{_NTCV}\\Schedule\\TaskCache"
        for path, nk in _walk(_key(self.reg, base + "\\Tree"), base + "\\Tree"):
            self.section(f"task {path}", partial(self.task, base, path, nk))

    def task(self, base: str, path: str, nk: NKRecord) -> None:
        task_id = _text(_values(nk).get("id"))
        if not task_id:
            return                                # a folder of tasks
        cached = _values(_key(self.reg, f"{base}\\Tasks\\{task_id}"))
        actions, info = cached.get("actions"), cached.get("dynamicinfo")
        commands: list[str | None] = []
        if actions is not None and isinstance(actions.value, bytes):
            try:
                commands = list(task_xml.decode_actions(actions.value))
            except ValueError as exc:
                self.errors.append(f"task {path}: Actions not decoded: {_why(exc)}")
        created = None
        if info is not None and isinstance(info.value, bytes):
            created = _filetime(task_xml.dynamic_info_created(info.value))
        for command in commands or [None]:
            self.persist("task", path, nk, path[len(base) + 5:], command, ts=created)

    def hotfixes(self) -> None:
        def event(nk: NKRecord, path: str, kb: str, state: int | None, installed: Any) -> None:
            self.add("events", {
                "ts": installed or _time(nk), "event": "hotfix_installed", "program": "registry",
                "data": {"kb": kb.upper(), "package": nk.name, "key": path, "state": state}})

        path = f"{_CV}\\Component Based Servicing\\Packages"
        for pkg in _subkeys(_key(self.reg, path)):
            if m := _KB.search(pkg.name):
                vals = _values(pkg)
                high, low = _int(vals.get("installtimehigh")), _int(vals.get("installtimelow"))
                installed = _filetime((high << 32) | low) if high is not None and low is not None else None
                event(pkg, f"{path}\\{pkg.name}", m.group(0), _int(vals.get("currentstate")), installed)
        # Windows XP / 2003 keep one key per hotfix, named after its KB.
        xp = list(_walk(_key(self.reg, "Microsoft\\Updates"), "Microsoft\\Updates"))
        xp += [(f"{_CV}\\Uninstall\\{k.name}", k) for k in _subkeys(_key(self.reg, f"{_CV}\\Uninstall"))]
        for sub_path, nk in xp:
            if _KB.fullmatch(nk.name.split("-")[0]):
                event(nk, sub_path, nk.name.split("-")[0], None, None)

    def os_row(self) -> None:
        """``ProductName build CurrentBuild.UBR CSDVersion`` (``… build 7601 Service Pack 1``)."""
        vals = _values(_key(self.reg, _NTCV))
        v = {n: _text(vals.get(n)) or "" for n in (
            "productname", "currentbuild", "currentbuildnumber", "ubr", "csdversion")}
        build = ".".join(p for p in (v["currentbuild"] or v["currentbuildnumber"], v["ubr"]) if p)
        text = " ".join(p for p in (v["productname"], build and f"build {build}", v["csdversion"]) if p)
        if text and self.host:
            self.add("hosts", {"os": text})

    # --- any hive ---------------------------------------------------------------------------

    def last_backup(self) -> None:
        """Values named LastBackup: found in the raw bytes first, so a hive without one costs
        a regex scan, and only then located by a walk matching the value-list offsets."""
        targets: set[int] = set()
        data = self.data
        for m in _LASTBACKUP.finditer(data):
            vk = m.start() - 24                   # cell size, "vk", name length, ..., name
            if vk < 0x1000 or data[vk + 4:vk + 6] != b"vk":
                continue
            (size, name_len) = struct.unpack_from("<i2xH", data, vk)
            if size < 0 and name_len == m.end() - m.start():
                targets.add(vk - 0x1000)
        if not targets:
            return
        for path, nk in _walk(self.reg.root, ""):
            count = int(nk.values_count)
            at = 0x1000 + 4 + int(nk.header.values_list_offset)
            if not count or at + 4 * count > len(data):
                continue
            if targets.isdisjoint(struct.unpack_from(f"<{count}I", data, at)):
                continue
            v = _values(nk).get("lastbackup")
            if v is not None:
                value = v.value.hex() if isinstance(v.value, bytes) else v.value
                self.add("events", {"ts": _time(nk), "event": "registry_value", "program": "registry",
                                    "data": {"key": path.lstrip("\\"), "value": v.name,
                                             "type": v.value_type, "data": value}})


def _kind(hive: RegistryHive) -> str:
    names = {k.name.lower() for k in _subkeys(hive.root)}
    if "select" in names and any(n.startswith("controlset") for n in names):
        return "system"
    return "ntuser" if "software" in names else "software" if "microsoft" in names else "other"


def _sibling_host(path: Path) -> str | None:
    """ComputerName from a SYSTEM hive next to this one (a collected config folder)."""
    try:
        for p in sorted(path.parent.iterdir()):
            if p.name.lower() != "system" or p == path or p.is_symlink() or not p.is_file():
                continue
            with p.open("rb") as fh:
                if fh.read(4) != b"regf":
                    continue
            hive, data = _open(p)
            return host_id(_Hive(SourceContext(p, str(p), None, p.parent), hive, data).computer_name())
    except (OSError, SourceError, *_HIVE_ERRORS):
        return None
    return None


def _ntuser_name(h: _Hive) -> str | None:
    """The account a user hive belongs to: from its Desktop folder, else the file's folder."""
    desktop = _text(_values(_key(h.reg, f"Software\\{_CV}\\Explorer\\Shell Folders")).get("desktop"))
    parts = [p for p in re.split(r"[\\/]", desktop or "") if p]
    if len(parts) >= 3:                   # C:\Users\<name>\Desktop, …\Documents and Settings\<name>\…
        return parts[-2]
    return h.ctx.path.parent.name if h.ctx.path.name.lower() == "ntuser.dat" else None


def parse(ctx: SourceContext) -> Iterator[Batch]:
    hive, data = _open(ctx.path)
    h = _Hive(ctx, hive, data)
    dirty = dirty_message(ctx.path, data)
    try:
        kind = _kind(hive)
    except _HIVE_ERRORS as exc:
        raise SourceError(f"registry hive unreadable below its root ({_why(exc)})") from exc
    if kind == "system":
        name = h.section("computer name", h.computer_name)
        h.host = h.host or host_id(name)
        ips = h.section("interface addresses", h.addresses) or []
        if h.host and (name or ips):
            h.add("hosts", {"hostname": name, **({"ips": ips} if ips else {})})
        h.section("services", h.services)
        h.section("USB storage", h.usb_devices)
    elif kind == "software":
        h.host = h.host or _sibling_host(ctx.path)
        h.section("CurrentVersion", h.os_row)
        h.section("Run keys", lambda: h.run_keys("", None))
        h.section("Winlogon", lambda: h.winlogon("", None))
        h.section("Image File Execution Options", h.ifeo)
        h.section("TaskCache", h.tasks)
        h.section("hotfixes", h.hotfixes)
    elif kind == "ntuser":
        h.host = h.host or _sibling_host(ctx.path)
        user = h.section("user name", lambda: _ntuser_name(h))
        h.section("Run keys", lambda: h.run_keys("Software\\", user))
        h.section("Winlogon", lambda: h.winlogon("Software\\", user))
    h.section("LastBackup", h.last_backup)
    if h.errors:
        expected = 0x1000 + int(hive.header.hive_bins_data_size)
        if len(data) < expected:
            h.errors.insert(0, f"the file has {len(data)} bytes, its header says {expected} (truncated?)")
        if not h.out:
            raise SourceError("registry hive unreadable: " + " | ".join(h.errors[:_ERRORS_SHOWN]))
    yield from h.out.items()
    errors = []
    if h.errors:
        errors.append({"host": h.host, "ts": dt.datetime.now(dt.UTC), "source": ctx.display,
                       "stage": "ingest", "message": f"{len(h.errors)} problem(s) reading the hive: "
                       + " | ".join(h.errors[:_ERRORS_SHOWN])})
    if dirty:
        errors.append({"host": h.host, "ts": dt.datetime.now(dt.UTC), "source": ctx.display,
                       "stage": "completeness", "message": dirty})
    if errors:
        yield "errors", errors


SOURCE = Source("registry_hive", sniff, parse)
