"""Seed case 10: a classroom of Windows XP PCs, an infected USB stick, WannaMine 4.0 over MS17-010.

The segment is isolated: no sensor, no event logs worth the name (XP keeps ``.evt`` files that
``wevtutil`` cannot export). What the responders had per PC is the registry: WannaMine 4.0
writes the value ``LastBackup`` under ``…\\NetworkPlatform\\Location Awareness`` when it
installs, so that key's last-write time is the PC's infection time, and its service
(``svchost -k netsvcs`` with ``ApplicationNetBIOSClient.dll``) sits in SYSTEM. The teacher's PC
``PC-TEACHER`` (x.x.x.18) saw a Kingston stick (``USBSTOR``) two minutes before its own
``LastBackup``; every student PC followed within the hour, the XP firewall log showing the
teacher's address on 445 first. ``STU-PC08`` was switched off that day (clean);
``STU-PC09``'s SOFTWARE hive was not collected, so its infection cannot be decided (unknown).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios import hives as hg
from deminer.scenarios.seed.common import Persist, Truth, utc
from deminer.scenarios.seed.hosts_windows import WinBox

START = utc("2024-03-18 07:50:00")
USB_IN = utc("2024-03-18 08:02:10")
SERVICE = "ApplicationNetBIOSClient"
LOCATION = f"{hg.NTCV}\\NetworkPlatform\\Location Awareness"
TEACHER_IP = "192.168.10.18"
UTC_OFFSET = dt.timedelta(hours=8)          # the school's PCs keep China Standard Time


def _time_zone(offset: dt.timedelta, name: str) -> hg.Key:
    """SYSTEM's TimeZoneInformation as XP writes it. Biases are signed LONGs in minutes
    (UTC = local + bias) stored as REG_DWORD, so UTC+8's -480 is the unsigned 0xFFFFFE20."""
    bias = (-int(offset.total_seconds()) // 60) & 0xFFFFFFFF
    no_rule = bytes(16)                     # SYSTEMTIME zeros: the zone has no daylight saving
    return hg.Key("ControlSet001\\Control\\TimeZoneInformation", [
        hg.dword("Bias", bias), hg.dword("ActiveTimeBias", bias), hg.sz("StandardName", name),
        hg.dword("StandardBias", 0), hg.binary("StandardStart", no_rule),
        hg.sz("DaylightName", name.replace("Standard", "Daylight")),
        hg.dword("DaylightBias", -60 & 0xFFFFFFFF), hg.binary("DaylightStart", no_rule)])


def _xp(name: str, ip: str) -> WinBox:
    box = WinBox(name, ip, START, noise=False)
    box.system_keys.append(_time_zone(UTC_OFFSET, "China Standard Time"))
    box.software_keys = [
        hg.Key(hg.NTCV, [hg.sz("ProductName", "Microsoft Windows XP"), hg.sz("CurrentBuildNumber", "2600"),
                         hg.sz("CSDVersion", "Service Pack 3")]),
        hg.Key("Microsoft\\Updates\\Windows XP\\SP3\\KB2536276", [hg.sz("Description", "Security Update")],
               utc("2011-07-12 10:00:00")),
        hg.Key(f"{hg.CV}\\Run", [hg.sz("ctfmon.exe", "C:\\WINDOWS\\system32\\ctfmon.exe")],
               utc("2019-09-01 08:00:00")),
    ]
    return box


def _wannamine(box: WinBox, at: dt.datetime, truth: Truth) -> None:
    """LastBackup (the infection time), the service, the dropped files."""
    box.software_keys.append(hg.Key(LOCATION, [hg.sz("LastBackup", str(int(at.timestamp())))], at))
    box.system_keys.append(hg.Key(f"ControlSet001\\Services\\{SERVICE}", [
        hg.expand_sz("ImagePath", "%SystemRoot%\\System32\\svchost.exe -k netsvcs"), hg.dword("Start", 2),
        hg.dword("Type", 0x20), hg.sz("ObjectName", "LocalSystem"), hg.sz("DisplayName", SERVICE)], at))
    box.system_keys.append(hg.Key(f"ControlSet001\\Services\\{SERVICE}\\Parameters", [
        hg.expand_sz("ServiceDll", f"C:\\WINDOWS\\system32\\{SERVICE}.dll")], at))
    for path, size in ((f"C:\\WINDOWS\\system32\\{SERVICE}.dll", 245_760),
                       ("C:\\WINDOWS\\NetworkDistribution\\svchost.exe", 126_976),
                       ("C:\\WINDOWS\\NetworkDistribution\\spoolsv.exe", 3_723_264),
                       ("C:\\WINDOWS\\NetworkDistribution\\x86.dll", 5_120)):
        box.file(path, size, at + dt.timedelta(seconds=5),
                 content_seed="wannamine4/" + path.rsplit("\\", 1)[1])
    truth.infect(box.name.lower(), at, Persist("service", SERVICE))


def _firewall_log(box: WinBox, entries: list[tuple[dt.datetime, str]]) -> None:
    """C:\\WINDOWS\\pfirewall.log: XP SP2+'s firewall log (W3C-style, in the PC's local time).

    Besides the teacher's SMB connections (OPEN-INBOUND, then CLOSE) it holds what such a log
    always has: the PC's own DNS lookups and NetBIOS broadcasts of its neighbours it dropped."""
    fields = ("date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack "
              "tcpwin icmptype icmpcode info path")
    gateway, neighbour = "192.168.10.1", "192.168.10.40"
    records: list[tuple[dt.datetime, str]] = [
        (START + dt.timedelta(minutes=1), f"OPEN UDP {box.ip} {gateway} 1025 53 - - - - - - - - -"),
        (START + dt.timedelta(minutes=2), f"CLOSE UDP {box.ip} {gateway} 1025 53 - - - - - - - - -"),
        (START + dt.timedelta(minutes=3),
         f"DROP UDP {neighbour} 192.168.10.255 137 137 78 - - - - - - - RECEIVE"),
    ]
    for i, (when, src) in enumerate(entries):
        conn = f"TCP {src} {box.ip} {1030 + i} 445"
        records += [(when, f"OPEN-INBOUND {conn} - - - - - - - - -"),
                    (when + dt.timedelta(seconds=40), f"CLOSE {conn} - - - - - - - - -")]
    lines = ["#Version: 1.5", "#Software: Microsoft Windows Firewall", "#Time Format: Local",
             f"#Fields: {fields}", ""]
    lines += [f"{when + UTC_OFFSET:%Y-%m-%d %H:%M:%S} {text}" for when, text in sorted(records)]
    box.extra_files["C/WINDOWS/pfirewall.log"] = ("\r\n".join(lines).encode("ascii") + b"\r\n",
                                                  max(when for when, _ in records))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(10, "USB stick on the teacher's PC, WannaMine 4.0 over MS17-010 in a classroom", "usb")
    teacher = _xp("PC-TEACHER", TEACHER_IP)
    students = [_xp(f"STU-PC{i:02d}", f"192.168.10.{20 + i}") for i in range(1, 10)]
    truth.host("pc-teacher", teacher.ip, "infected")
    for box in students:
        verdict = {"STU-PC08": "clean", "STU-PC09": "unknown"}.get(box.name, "infected")
        truth.host(box.name.lower(), box.ip, verdict)
    truth.patient_zero = {"pc-teacher"}

    # The stick: USBSTOR device key and its volume's drive letter, just before the infection.
    device = "Disk&Ven_Kingston&Prod_DataTraveler_3.0&Rev_PMAP"
    teacher.system_keys += [
        hg.Key(f"ControlSet001\\Enum\\USBSTOR\\{device}\\60A44C3FACD8B0215906044E&0", [
            hg.sz("FriendlyName", "Kingston DataTraveler 3.0 USB Device"), hg.sz("Service", "disk")], USB_IN),
        hg.Key("MountedDevices",
               [hg.binary("\\DosDevices\\F:", "_??_USBSTOR#Disk&Ven_Kingston".encode("utf-16-le"))], USB_IN),
    ]
    t_teacher = USB_IN + dt.timedelta(minutes=2, seconds=3)
    _wannamine(teacher, t_teacher, truth)

    # Every student PC that was on falls to the teacher's PC within the hour.
    for i, box in enumerate(students):
        at = t_teacher + dt.timedelta(minutes=9 + 6 * i, seconds=17 * i)
        if box.name == "STU-PC08":
            continue
        _firewall_log(box, [(at - dt.timedelta(seconds=4), TEACHER_IP),
                            (at - dt.timedelta(seconds=3), TEACHER_IP)])
        if box.name == "STU-PC09":
            box.software_keys = []          # the collection missed its SOFTWARE hive
            continue
        _wannamine(box, at, truth)
        truth.edge("pc-teacher", box.name.lower(), "eternalblue", at)

    for box in (teacher, *students):
        box.write(out, logs=False)
    hive = out / "STU-PC09" / "C/Windows/System32/config/SOFTWARE"
    hive.unlink()

    for name in sorted(truth.infected):
        truth.events.append((name, "registry_value"))      # LastBackup, read from the hive
        truth.want(name, "persistence.wannamine_last_backup")
    truth.notes.append("No sensor: the edges are the teacher's PC (the only one infected before the others, "
                       "and the USB stick's) to each student PC at its LastBackup time; the XP firewall "
                       "logs (local time, UTC+8 per each SYSTEM hive) name the teacher's address on 445 "
                       "seconds before each.")
    return truth
