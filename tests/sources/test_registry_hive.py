"""Registry hives written by hivex: services, Run keys, tasks, hotfixes, LastBackup, damage."""

from __future__ import annotations

import datetime as dt
import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from deminer.case import Case
from deminer.scenarios import hives as g
from deminer.sources import registry_hive as rh
from deminer.sources import task_xml
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest
from tests.hivex import skip_without_hivex

Rows = dict[str, list[dict[str, Any]]]


@pytest.fixture(autouse=True)
def _hivex() -> None:
    skip_without_hivex()


def parse(path: Path, host: str | None = None) -> Rows:
    out: Rows = {}
    for table, rows in rh.SOURCE.parse(SourceContext(path, str(path), host, path.parent)):
        out.setdefault(table, []).extend(rows)
    return out


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_sniff_takes_primary_hives_only(tmp_path: Path) -> None:
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", g.system_keys())
    head = p.read_bytes()[:65536]
    assert rh.sniff(p, head)
    log = bytearray(head)
    log[0x1C:0x20] = struct.pack("<I", 1)          # SYSTEM.LOG1: same magic, file type 1
    assert not rh.sniff(p, bytes(log))
    assert not rh.sniff(p, b"regf")                # too short to be a header
    assert not rh.sniff(p, b"\x00" * 512)


def test_system_services_and_computer_name(tmp_path: Path) -> None:
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", g.system_keys())
    out = parse(p)
    assert out["hosts"] == [{"host": "pc-teacher", "source": str(p), "hostname": "PC-TEACHER"}]
    services = by_name(out["persistence"])
    # ControlSet002 (not current) and keys without ImagePath/Type (Tcpip here) give no rows.
    assert sorted(services) == ["Dnscache", "Fax", g.RANDOM_EXE]
    assert services[g.RANDOM_EXE] == {
        "host": "pc-teacher", "source": str(p), "ts": g.T_INFECT, "kind": "service",
        "location": f"{p}\\ControlSet001\\Services\\{g.RANDOM_EXE}", "name": g.RANDOM_EXE,
        "command": f"C:\\Windows\\{g.RANDOM_EXE}.exe", "user": "LocalSystem", "mtime": g.T_INFECT,
        "enabled": True}
    assert services["Dnscache"]["command"] == ("%SystemRoot%\\system32\\svchost.exe -k NetworkService "
                                               "[ServiceDll: %SystemRoot%\\System32\\dnsrslvr.dll]")
    assert services["Dnscache"]["mtime"] == g.T0
    assert services["Fax"]["enabled"] is False                     # Start 4
    assert "errors" not in out


def test_current_control_set_and_tcpip_hostname(tmp_path: Path) -> None:
    p = tmp_path / "SYSTEM"
    keys = [k for k in g.system_keys() if not k.path.startswith("Select")]
    keys += [g.Key("Select", [g.dword("Current", 2)]),
             g.Key("ControlSet002\\Services\\Tcpip\\Parameters", [g.sz("Hostname", "Lab-PC07")])]
    g.write_hive(p, "SYSTEM", keys)
    out = parse(p)
    assert [r["name"] for r in out["persistence"]] == ["oldonly"]
    assert out["persistence"][0]["host"] == "lab-pc07"
    assert out["hosts"][0]["hostname"] == "Lab-PC07"


def test_software_autostarts_tasks_and_host_from_sibling_system(tmp_path: Path) -> None:
    g.write_hive(tmp_path / "SYSTEM", "SYSTEM", g.system_keys())
    p = tmp_path / "SOFTWARE"
    g.write_hive(p, "\\SystemRoot\\System32\\Config\\SOFTWARE", g.software_keys())
    out = parse(p)
    rows = out["persistence"]
    assert {r["host"] for r in rows} == {"pc-teacher"}
    assert [(r["kind"], r["name"], r["command"]) for r in rows] == [
        ("run_key", g.RANDOM_EXE, f"C:\\Windows\\{g.RANDOM_EXE}.exe"),
        ("run_key", "VMware User Process", g.VMTOOLS),
        ("run_key", "upd", "C:\\Windows\\Temp\\svchost.exe"),
        ("winlogon", "Userinit", g.USERINIT),
        ("ifeo", "sethc.exe", "C:\\Windows\\System32\\cmd.exe"),
        ("task", "\\Ddrivers", f"{g.DDRIVERS_CMD} {g.DDRIVERS_ARGS}"),
        ("task", "\\DnsScan", None),
        ("task", "\\Microsoft\\Windows\\Defrag\\ScheduledDefrag", f"{g.CLSID} -c"),
    ]
    run = rows[0]
    assert (run["location"], run["mtime"], run["ts"], run["user"], run["enabled"]) == (
        f"{p}\\Microsoft\\Windows\\CurrentVersion\\Run", g.T_INFECT, g.T_INFECT, None, None)
    assert rows[2]["location"] == f"{p}\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\RunOnce"
    ddrivers = rows[5]
    # mtime: the Tree key (re-added on the 20th); ts: the creation time the cache keeps.
    assert (ddrivers["mtime"], ddrivers["ts"]) == (g.T_TASK, g.T_TASK_CREATED)
    assert ddrivers["location"] == f"{p}\\{g.NTCV}\\Schedule\\TaskCache\\Tree\\Ddrivers"
    assert out["hosts"] == [{"host": "pc-teacher", "source": str(p),
                             "os": "Windows 7 Professional build 7601 Service Pack 1"}]
    [error] = out["errors"]
    assert error["message"] == (
        f"1 problem(s) reading the hive: task {g.NTCV}\\Schedule\\TaskCache\\Tree\\DnsScan: Actions not "
        "decoded: ValueError: string of 12 bytes runs past the end of the blob")


def test_hotfix_events_list_every_kb(tmp_path: Path) -> None:
    p = tmp_path / "SOFTWARE"
    g.write_hive(p, "SOFTWARE", g.software_keys())
    events = [e for e in parse(p, host="PC-18")["events"] if e["event"] == "hotfix_installed"]
    assert sorted((e["data"]["kb"], e["ts"], e["data"]["state"]) for e in events) == [
        ("KB2534111", g.T0, 0x70),                 # no install time: the package key's time
        ("KB4012212", g.T_PATCH, 0x70),            # InstallTimeHigh/Low
    ]
    assert {e["host"] for e in events} == {"pc-18"}
    assert all(e["data"]["package"].startswith("Package_for_KB") for e in events)


def test_windows_xp_hotfix_keys_os_and_case_insensitive_lastbackup(tmp_path: Path) -> None:
    p = tmp_path / "software"
    g.write_hive(p, "SOFTWARE", g.xp_software_keys())
    out = parse(p, host="pc-18")
    assert out["hosts"][0]["os"] == "Microsoft Windows XP build 2600 Service Pack 3"
    fixes = [e for e in out["events"] if e["event"] == "hotfix_installed"]
    assert [(e["data"]["kb"], e["data"]["key"], e["ts"]) for e in fixes] == [
        ("KB4012598", "Microsoft\\Updates\\Windows XP\\SP3\\KB4012598", g.T_PATCH),
        ("KB4012598", f"{g.CV}\\Uninstall\\KB4012598", g.T_PATCH)]
    [value] = [e for e in out["events"] if e["event"] == "registry_value"]
    assert value["data"] == {"key": f"{g.NTCV}\\Svchost", "value": "lastbackup", "type": "REG_BINARY",
                             "data": "0102"}


def test_lastbackup_value_gives_the_infection_time(tmp_path: Path) -> None:
    p = tmp_path / "SOFTWARE"
    g.write_hive(p, "SOFTWARE", g.software_keys())
    [value] = [e for e in parse(p, host="pc-18")["events"] if e["event"] == "registry_value"]
    # LastBackupTime in the same key is another name and is not reported.
    assert value == {"host": "pc-18", "source": str(p), "ts": g.T_INFECT, "event": "registry_value",
                     "program": "registry", "data": {
                         "key": f"{g.NTCV}\\NetworkPlatform\\Location Awareness", "value": "LastBackup",
                         "type": "REG_SZ", "data": "1552529861"}}


def test_ntuser_run_load_and_shell_with_user(tmp_path: Path) -> None:
    folder = tmp_path / "Users" / "bob"
    folder.mkdir(parents=True)
    p = folder / "NTUSER.DAT"
    g.write_hive(p, "\\??\\C:\\Users\\alice\\ntuser.dat", g.ntuser_keys("alice"))
    rows = parse(p, host="WS-1")["persistence"]
    assert [(r["kind"], r["name"], r["command"], r["user"], r["host"]) for r in rows] == [
        ("run_key", "Updater", "C:\\Users\\alice\\AppData\\Roaming\\upd.exe", "alice", "ws-1"),
        ("run_key", "Load", "C:\\Windows\\Temp\\x.exe", "alice", "ws-1"),
        ("winlogon", "Shell", "explorer.exe, C:\\Users\\alice\\evil.exe", "alice", "ws-1"),
    ]
    assert rows[0]["location"] == f"{p}\\Software\\{g.CV}\\Run"
    # Without Shell Folders the folder holding NTUSER.DAT names the user.
    g.write_hive(p, "ntuser.dat", [k for k in g.ntuser_keys() if "Shell Folders" not in k.path])
    assert {r["user"] for r in parse(p)["persistence"]} == {"bob"}


def test_hostile_value_bytes_are_kept_readable(tmp_path: Path) -> None:
    p = tmp_path / "SOFTWARE"
    g.write_hive(p, "SOFTWARE", [g.Key(f"{g.CV}\\Run", [
        ("Ünïcode ✓", g.REG_SZ, "C:\\ü\\x.exe\0".encode("utf-16-le")),
        ("lone-surrogate", g.REG_SZ, b"C\x00:\x00\x00\xd8x\x00\x00\x00"),
        ("odd-length", g.REG_SZ, "C:\\a".encode("utf-16-le") + b"\x00"),
        ("slack", g.REG_SZ, "C:\\a.exe\0left over".encode("utf-16-le")),
        ("escape", g.REG_SZ, "a\x1b[31mred\x07\0".encode("utf-16-le")),
        ("multi", g.REG_MULTI_SZ, "a\0b\0\0".encode("utf-16-le")),
        g.dword("dword", 1),
    ])])
    commands = {r["name"]: r["command"] for r in parse(p, host="h")["persistence"]}
    assert commands == {"Ünïcode ✓": "C:\\ü\\x.exe", "lone-surrogate": "C:\\x00\\xd8x",
                        "odd-length": "C:\\a", "slack": "C:\\a.exe", "escape": "a\x1b[31mred\x07",
                        "multi": "a b", "dword": "1"}


def _system_with_services(tmp_path: Path, n: int = 60) -> tuple[Path, dict[str, int]]:
    p = tmp_path / "SYSTEM"
    keys = g.system_keys() + [g.Key(f"ControlSet001\\Services\\svc{i:03d}", [
        g.expand_sz("ImagePath", f"C:\\svc{i}.exe"), g.dword("Start", 3), g.dword("Type", 0x10)])
        for i in range(n)]
    return p, g.write_hive(p, "SYSTEM", keys)


def test_truncated_hive_is_a_clear_error(tmp_path: Path) -> None:
    p, _ = _system_with_services(tmp_path)
    data = p.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as err:
        parse(cut)
    assert str(err.value).startswith(
        f"registry hive unreadable: the file has {len(data) // 2} bytes, its header says {len(data)} "
        "(truncated?) | computer name: RegistryParsingException: Bad subkey at offset")
    cut.write_bytes(data[:100])
    with pytest.raises(SourceError, match=r"^not a readable registry hive \(StreamError"):
        parse(cut)


def test_one_damaged_key_costs_only_itself(tmp_path: Path) -> None:
    p, handles = _system_with_services(tmp_path)
    data = bytearray(p.read_bytes())
    node = handles[f"ControlSet001\\Services\\{g.RANDOM_EXE}"]
    struct.pack_into("<I", data, node + 4 + 0x28, 0x7FFFFFF0)   # its value list points past the end
    p.write_bytes(bytes(data))
    out = parse(p)
    names = [r["name"] for r in out["persistence"]]
    assert len(names) == 62 and g.RANDOM_EXE not in names and "svc059" in names
    assert out["hosts"][0]["host"] == "pc-teacher"
    [error] = out["errors"]
    assert error["message"].startswith(f"1 problem(s) reading the hive: service {g.RANDOM_EXE}: "
                                       "RegistryParsingException: Bad registry VK")


def test_subkey_loop_does_not_hang_the_walk(tmp_path: Path) -> None:
    p = tmp_path / "SYSTEM"
    keys = [*g.system_keys(), g.Key("ControlSet001\\Control\\Lsa", [g.sz("LastBackup", "x")], g.T_INFECT)]
    handles = g.write_hive(p, "SYSTEM", keys)
    data = bytearray(p.read_bytes())
    # Tcpip's subkey list becomes the root's: walking Tcpip leads back to the top, forever.
    root_list = struct.unpack_from("<I", data, handles[""] + 4 + 0x1C)[0]
    tcpip = handles["ControlSet001\\Services\\Tcpip"]
    struct.pack_into("<II", data, tcpip + 4 + 0x14, 3, 0)
    struct.pack_into("<I", data, tcpip + 4 + 0x1C, root_list)
    p.write_bytes(bytes(data))
    start = time.monotonic()
    out = parse(p)
    assert time.monotonic() - start < 5
    [value] = [e for e in out["events"] if e["event"] == "registry_value"]
    assert value["data"]["key"] == "ControlSet001\\Control\\Lsa"
    assert value["ts"] == g.T_INFECT


def test_ingest_a_config_folder(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    g.write_hive(config / "SYSTEM", "SYSTEM", g.system_keys())
    g.write_hive(config / "SOFTWARE", "SOFTWARE", g.software_keys())
    log = bytearray((config / "SYSTEM").read_bytes())
    log[0x1C:0x20] = struct.pack("<I", 2)
    (config / "SYSTEM.LOG2").write_bytes(bytes(log))
    (config / "junk").write_bytes(b"regf" + bytes(508) + b"\xff" * 5000)
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [config], sources=(rh.SOURCE, task_xml.SOURCE))
        assert summary.files == 3
        assert summary.skipped == [str(config / "SYSTEM.LOG2")]
        assert len(summary.errors) == 1 and summary.errors[0].startswith(
            f"{config / 'junk'}: registry_hive: not a readable registry hive")
        rows = case.query("SELECT kind, count(*) AS n, min(host) AS host FROM persistence "
                          "GROUP BY kind ORDER BY kind")
        assert rows == [{"kind": "ifeo", "n": 1, "host": "pc-teacher"},
                        {"kind": "run_key", "n": 3, "host": "pc-teacher"},
                        {"kind": "service", "n": 3, "host": "pc-teacher"},
                        {"kind": "task", "n": 3, "host": "pc-teacher"},
                        {"kind": "winlogon", "n": 1, "host": "pc-teacher"}]
        first = case.query("SELECT host, ts FROM events WHERE event = 'registry_value'")
        assert first == [{"host": "pc-teacher", "ts": g.T_INFECT}]


def test_filetime_helper_round_trips() -> None:
    when = dt.datetime(2019, 3, 14, 2, 17, 41, 123456)
    assert rh._filetime(g.filetime(when)) == when
    assert rh._filetime(0) is None
    assert rh._filetime(2**63 - 1) is None          # far past year 9999: corrupt, not a crash


def test_inline_values_do_not_copy_the_rest_of_the_hive(tmp_path: Path) -> None:
    # regipy asks for data_size bytes even for inline DWORDs (size | 0x80000000): the stream
    # it is handed caps that, or each DWORD would copy the rest of a 100 MB hive.
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", g.system_keys())
    hive, data = rh._open(p)
    stream = hive.root._stream
    assert isinstance(stream, rh._Clamped) and stream is hive._stream
    stream.seek(0x1000)
    assert stream.read(0x80000004) == data[0x1000:0x1004]
    assert parse(p)["persistence"][0]["enabled"] is True         # Start, an inline DWORD, still read


USBSTOR = "ControlSet001\\Enum\\USBSTOR"
PROPS = "Properties\\{83da6326-97a6-4088-9453-a1923f573b29}"
T_USB_KEY = dt.datetime(2019, 3, 14, 2, 10, 5)
T_USB_FIRST = dt.datetime(2019, 3, 14, 2, 9, 58)
T_USB_LAST = dt.datetime(2019, 3, 14, 2, 9, 59)


def test_usb_storage_devices_become_usb_device_events(tmp_path: Path) -> None:
    # Seed case 10: the teacher's USB stick. Windows 8+ keeps the install/arrival times as
    # DEVPROP FILETIME default values (type 0xFFFF0010) under Properties\{83da…}\00NN;
    # Windows 7 as Data under 000000NN\00000000; XP only the key's last-write time.
    sandisk = f"{USBSTOR}\\Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00\\4C530001230109115293&0"
    kingston = f"{USBSTOR}\\Disk&Ven_Kingston&Prod_DataTraveler_2.0&Rev_PMAP\\001CC0EC3450F931&0"
    xp_stick = f"{USBSTOR}\\Disk&Ven_Generic&Prod_Flash_Disk&Rev_8.07\\6&2c5c8a7f&0"
    filetime = struct.pack("<Q", g.filetime(T_USB_FIRST))
    keys = [*g.system_keys(),
            g.Key(sandisk, [g.sz("FriendlyName", "SanDisk Cruzer Blade USB Device")], T_USB_KEY),
            g.Key(f"{sandisk}\\{PROPS}\\0064", [("", 0xFFFF0010, filetime)]),
            g.Key(f"{sandisk}\\{PROPS}\\0066", [("", 0xFFFF0010, struct.pack("<Q", g.filetime(T_USB_LAST)))]),
            g.Key(kingston, [g.sz("FriendlyName", "Kingston DataTraveler 2.0 USB Device")], T_USB_KEY),
            g.Key(f"{kingston}\\{PROPS}\\00000064\\00000000", [g.binary("Data", filetime)]),
            g.Key(xp_stick, [], g.T0),
            g.Key("ControlSet002\\Enum\\USBSTOR\\Disk&Ven_Old&Prod_Gone\\1&0", [], g.T0)]
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", keys)
    events = {e["data"]["serial"]: e for e in parse(p)["events"] if e["event"] == "usb_device"}
    assert sorted(events) == ["001CC0EC3450F931&0", "4C530001230109115293&0", "6&2c5c8a7f&0"]
    stick = events["4C530001230109115293&0"]
    assert stick["host"] == "pc-teacher" and stick["program"] == "registry"
    assert stick["ts"] == T_USB_KEY
    assert stick["data"] == {
        "key": sandisk, "device": "Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00",
        "serial": "4C530001230109115293&0", "type": "Disk", "vendor": "SanDisk",
        "product": "Cruzer_Blade", "revision": "1.00", "friendly_name": "SanDisk Cruzer Blade USB Device",
        "first_install": "2019-03-14T02:09:58Z", "last_arrival": "2019-03-14T02:09:59Z"}
    assert events["001CC0EC3450F931&0"]["data"]["first_install"] == "2019-03-14T02:09:58Z"
    assert "last_arrival" not in events["001CC0EC3450F931&0"]["data"]
    xp = events["6&2c5c8a7f&0"]
    assert xp["ts"] == g.T0 and xp["data"]["friendly_name"] is None and xp["data"]["vendor"] == "Generic"


def test_hostile_usbstor_names_stay_text_and_junk_properties_are_ignored(tmp_path: Path) -> None:
    odd = f"{USBSTOR}\\Disk&Ven_\x1b[31mEVIL&Prod_\u202eexe.txt\\serial\x07&0"
    keys = [*g.system_keys(), g.Key(odd, [g.sz("FriendlyName", "\x1b]0;pwned\x07")], T_USB_KEY),
            g.Key(f"{odd}\\{PROPS}\\0064", [("", 0xFFFF0010, b"\x01\x02")])]       # 2 bytes, not a FILETIME
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", keys)
    with Case(None) as case:
        ingest(case, [p])
        rows = case.query("SELECT host, ts, data FROM events WHERE event = 'usb_device'")
        errors = case.query("SELECT source, message FROM errors")
    # The damaged property is named in one error; the device is still reported.
    assert len(errors) == 1 and errors[0]["source"] == str(p)
    assert "0064" in errors[0]["message"] and "USBSTOR" in errors[0]["message"]
    assert len(rows) == 1 and rows[0]["ts"] == T_USB_KEY and rows[0]["host"] == "pc-teacher"
    data = json.loads(rows[0]["data"])
    assert data["vendor"] == "\x1b[31mEVIL" and data["friendly_name"] == "\x1b]0;pwned\x07"
    assert "first_install" not in data


def test_interface_addresses_name_the_hosts_ips(tmp_path: Path) -> None:
    # Static addresses (REG_MULTI_SZ IPAddress) and a DHCP lease (DhcpIPAddress); an unused
    # interface says 0.0.0.0 and junk is not an address. Correlate ties traffic to hosts by these.
    nics = "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces"
    keys = [*g.system_keys(),
            g.Key(f"{nics}\\{{A1}}", [g.dword("EnableDHCP", 0), g.multi_sz("IPAddress", ["192.168.10.18"])]),
            g.Key(f"{nics}\\{{A2}}", [g.dword("EnableDHCP", 1), g.sz("DhcpIPAddress", "10.0.5.77")]),
            g.Key(f"{nics}\\{{A3}}", [g.multi_sz("IPAddress", ["0.0.0.0", "not-an-ip"])])]
    p = tmp_path / "SYSTEM"
    g.write_hive(p, "SYSTEM", keys)
    assert parse(p)["hosts"] == [{"host": "pc-teacher", "source": str(p), "hostname": "PC-TEACHER",
                                  "ips": ["10.0.5.77", "192.168.10.18"]}]


def _make_dirty(path: Path) -> None:
    """Bump the primary sequence number (Windows' "a write has started") and fix the header's
    XOR checksum, as a copy taken mid-write looks."""
    data = bytearray(path.read_bytes())
    primary = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, 4, primary + 1)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(data[:508])):
        checksum ^= word
    struct.pack_into("<I", data, 508, checksum)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("with_logs", [True, False])
def test_a_dirty_hive_is_read_and_its_unapplied_logs_named(tmp_path: Path, with_logs: bool) -> None:
    config = tmp_path / "config"
    config.mkdir()
    g.write_hive(config / "SYSTEM", "SYSTEM", g.system_keys())
    _make_dirty(config / "SYSTEM")
    if with_logs:
        for name in ("SYSTEM.LOG1", "SYSTEM.LOG2"):
            log = bytearray((config / "SYSTEM").read_bytes()[:4096])
            log[0x1C:0x20] = struct.pack("<I", 2)
            (config / name).write_bytes(bytes(log))
    with Case(None) as case:
        ingest(case, [config / "SYSTEM"], sources=(rh.SOURCE,))
        assert case.count("persistence") == 3                  # read as it is
        (row,) = case.query("SELECT host, stage, message FROM errors")
    assert row["stage"] == "completeness" and row["host"] == "pc-teacher"
    assert row["message"].startswith("dirty hive (sequence numbers ")
    if with_logs:
        assert "SYSTEM.LOG1, SYSTEM.LOG2 beside it hold them and were not applied" in row["message"]
    else:
        assert "no .LOG1/.LOG2 beside it" in row["message"]


def test_a_clean_hive_reports_nothing(tmp_path: Path) -> None:
    g.write_hive(tmp_path / "SYSTEM", "SYSTEM", g.system_keys())
    with Case(None) as case:
        ingest(case, [tmp_path / "SYSTEM"], sources=(rh.SOURCE,))
        assert case.count("errors") == 0
