"""The time zone of a Windows host, read from the SYSTEM hive of the drive copy holding a file.

Windows writes some logs in local time (the firewall's ``pfirewall.log``, IIS with
``LogTimeFormat`` local, setupapi logs). A source reading one asks ``time_zone_for(file)``:

1. ``find_system_hive`` walks up from the file at most ``MAX_LEVELS`` folders, looking in each
   for ``Windows/System32/config/SYSTEM`` (names compared case-insensitively, as Windows does;
   symlinks not followed), so the hive is the one of the same drive copy (KAPE target, copy of
   ``C:\\``), never one from elsewhere;
2. ``read_time_zone`` opens that hive with regipy and reads
   ``ControlSet00N\\Control\\TimeZoneInformation`` of the current control set
   (``Select\\Current``; ControlSet001 when absent).

``HostTimeZone.bias`` is minutes with ``UTC = local + bias``, as Windows stores it: UTC+8 is
-480, written in the hive as the unsigned DWORD 0xFFFFFE20. It is ``ActiveTimeBias`` (the bias
in force, daylight saving included), else ``Bias`` (standard time).

Known limit: ``ActiveTimeBias`` is the bias at the moment the hive was written, i.e. at
collection. Lines logged in the other half of the year are off by the daylight-saving shift
(usually one hour); computing the shift per line from ``StandardStart``/``DaylightStart``
would fix that and is not done here.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deminer.sources.windows_tree import find_nocase

MAX_LEVELS = 6                 # Windows/System32/LogFiles/Firewall/pfirewall.log: the root is 5 up
MAX_HIVE = 512 << 20           # regipy reads a hive whole; SYSTEM hives are 10-100 MiB
MAX_BIAS = 14 * 60             # real zones lie between UTC-12 and UTC+14
_HIVE_PATH = ("windows", "system32", "config", "system")
_KEY = "Control\\TimeZoneInformation"
logging.getLogger("regipy").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class HostTimeZone:
    bias: int | None          # minutes, UTC = local + bias; None when unknown
    name: str | None          # e.g. "China Standard Time"
    hive: Path | None         # the SYSTEM hive it came from (or that was tried)
    problem: str | None       # why the zone is unknown (None when ``bias`` is known)

    def to_utc(self, local: dt.datetime) -> dt.datetime:
        """``local`` as naive UTC; unchanged when the zone is unknown (taken as UTC)."""
        return local + dt.timedelta(minutes=self.bias) if self.bias else local


def find_system_hive(file: Path, levels: int = MAX_LEVELS) -> Path | None:
    """The ``Windows/System32/config/SYSTEM`` of the drive copy holding ``file``, or None."""
    for folder in list(file.absolute().parents)[:levels]:
        found = find_nocase(folder, *_HIVE_PATH)
        if found is not None and found.is_file():
            return found
    return None


def _signed(value: object) -> int | None:
    """A REG_DWORD as the signed LONG Windows means (regipy reads it unsigned)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        return None
    return value - (1 << 32) if value >= 1 << 31 else value


def _values(hive: Any, key: str) -> dict[str, object]:
    return {str(v.name).lower(): v.value for v in hive.get_key(key).iter_values()}


def _text(value: object) -> str | None:
    text = value.split("\0", 1)[0].strip() if isinstance(value, str) else ""
    return text or None


def read_time_zone(hive_path: Path) -> HostTimeZone:
    """The zone a SYSTEM hive records; ``problem`` says why when it records none."""
    try:
        stat = hive_path.stat()
    except OSError as exc:
        return HostTimeZone(None, None, hive_path, f"cannot read {hive_path}: {exc.strerror or exc}")
    return _read_cached(hive_path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)    # one hive serves every local-time log of its host
def _read_cached(hive_path: Path, size: int, mtime_ns: int) -> HostTimeZone:
    from regipy.registry import RegistryHive  # here: only logs kept in local time pay for it

    def unknown(why: str) -> HostTimeZone:
        return HostTimeZone(None, None, hive_path, f"SYSTEM hive {hive_path} {why}")

    if size > MAX_HIVE:
        return unknown(f"is over the {MAX_HIVE}-byte cap")
    try:
        hive = RegistryHive(str(hive_path))  # type: ignore[no-untyped-call]
        try:
            current = _signed(_values(hive, "\\Select").get("current"))
        except Exception:  # regipy raises its own types for a missing key
            current = None
        number = current if current is not None and 0 < current < 1000 else 1
        values = _values(hive, f"\\ControlSet{number:03d}\\{_KEY}")
    # A damaged or hostile hive can make regipy raise nearly anything: here it only means
    # "no zone from this hive", which the caller reports.
    except Exception as exc:
        return unknown(f"has no readable ControlSet…\\{_KEY} ({type(exc).__name__})")
    bias = _signed(values.get("activetimebias"))
    if bias is None:
        bias = _signed(values.get("bias"))
    if bias is None:
        return unknown(f"has no Bias or ActiveTimeBias under {_KEY}")
    if abs(bias) > MAX_BIAS:
        return unknown(f"has an impossible bias of {bias} minutes under {_KEY}")
    name = _text(values.get("timezonekeyname")) or _text(values.get("standardname"))
    return HostTimeZone(bias, name, hive_path, None)


def time_zone_for(file: Path) -> HostTimeZone:
    """The time zone of the host whose drive copy holds ``file``."""
    hive = find_system_hive(file)
    if hive is None:
        return HostTimeZone(None, None, None, "no SYSTEM hive (Windows/System32/config/SYSTEM) in the "
                                              "folder tree holding this file")
    return read_time_zone(hive)

