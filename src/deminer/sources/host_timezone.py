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
in force when the hive was written, i.e. at collection), else ``Bias`` (standard time).

Daylight saving: when the hive holds the zone's rules (``DaylightStart``/``StandardStart``
SYSTEMTIMEs with a month, ``StandardBias``/``DaylightBias``), ``to_utc`` works out per line
whether it was logged in daylight time, so a log spanning the change is right on both
sides. Without rules (XP-era zones without DST, or ``DynamicDaylightTimeDisabled``) the
collection-time bias is used for every line. The SYSTEM rule is the one of the current year;
zones whose rules changed (the US in 2007, Russia in 2011 and 2014, …) keep each year's rule
under ``Time Zones\\<zone>\\Dynamic DST`` in the SOFTWARE hive beside it. When that hive is
there, a line takes the rule of its own year (before ``FirstEntry`` the first one, after
``LastEntry`` the last one, as Windows does).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deminer.sources.windows_tree import find_nocase

MAX_LEVELS = 6                 # Windows/System32/LogFiles/Firewall/pfirewall.log: the root is 5 up
MAX_HIVE = 512 << 20           # regipy reads a hive whole; SYSTEM hives are 10-100 MiB
MAX_BIAS = 14 * 60             # real zones lie between UTC-12 and UTC+14
_HIVE_PATH = ("windows", "system32", "config", "system")
_KEY = "Control\\TimeZoneInformation"
_ZONES = "\\Microsoft\\Windows NT\\CurrentVersion\\Time Zones"
logging.getLogger("regipy").addHandler(logging.NullHandler())


def _binary(value: object, size: int) -> bytes | None:
    """regipy's hex text of a REG_BINARY as bytes; None unless it holds ``size`` bytes or more."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        return None
    return raw if len(raw) >= size else None


@dataclass(frozen=True)
class Transition:
    """A ``StandardStart``/``DaylightStart`` rule (a SYSTEMTIME): the ``week``-th (5 = last)
    ``weekday`` (0 = Sunday) of ``month`` at ``hour:minute`` local time, every year; with a
    ``year``, that one date (``week`` is then the day of the month)."""

    year: int
    month: int
    weekday: int
    week: int
    hour: int
    minute: int

    @classmethod
    def from_hex(cls, value: object) -> Transition | None:
        """From regipy's hex text of the 16-byte REG_BINARY; None when absent or no rule."""
        raw = _binary(value, 16)
        return cls.from_bytes(raw) if raw is not None else None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Transition | None:
        year, month, weekday, week, hour, minute = struct.unpack_from("<6H", raw)
        if not 1 <= month <= 12 or weekday > 6 or not 1 <= week <= 31 or hour > 23 or minute > 59:
            return None                     # month 0: the zone has no daylight saving
        return cls(year, month, weekday, week, hour, minute)

    def at(self, year: int) -> dt.datetime:
        """When the rule fires in ``year`` (local wall-clock time)."""
        if self.year:
            day = min(self.week, calendar.monthrange(year, self.month)[1])
        else:
            first = dt.date(year, self.month, 1)
            day = 1 + (self.weekday - (first.isoweekday() % 7)) % 7 + 7 * (min(self.week, 5) - 1)
            while day > calendar.monthrange(year, self.month)[1]:
                day -= 7                    # week 5 is "the last one", which may be the 4th
        return dt.datetime(year, self.month, day, self.hour, self.minute)


@dataclass(frozen=True)
class YearRule:
    """One year's rule (a ``REG_TZI_FORMAT``): Bias, StandardBias and DaylightBias in minutes,
    and when daylight time starts and ends; no transitions when the year had none."""

    base_bias: int
    standard_bias: int
    daylight_bias: int
    daylight_start: Transition | None
    standard_start: Transition | None

    @classmethod
    def from_hex(cls, value: object) -> YearRule | None:
        """From regipy's hex text of the 44-byte value; None when it is not one."""
        raw = _binary(value, 44)
        if raw is None:
            return None
        base, std, day = struct.unpack_from("<3l", raw)
        if abs(base) > MAX_BIAS or abs(std) > 120 or abs(day) > 120:
            return None
        off, on = Transition.from_bytes(raw[12:28]), Transition.from_bytes(raw[28:44])
        if on is None or off is None:
            on = off = None
        return cls(base, std, day, on, off)

    def bias_at(self, local: dt.datetime) -> int:
        if self.daylight_start is None or self.standard_start is None:
            return self.base_bias + self.standard_bias
        on, off = self.daylight_start.at(local.year), self.standard_start.at(local.year)
        # Northern zones save from spring to autumn; southern ones across the new year.
        daylight = on <= local < off if on < off else not off <= local < on
        return self.base_bias + (self.daylight_bias if daylight else self.standard_bias)


@dataclass(frozen=True)
class HostTimeZone:
    bias: int | None          # minutes, UTC = local + bias, in force at collection; None when unknown
    name: str | None          # e.g. "China Standard Time"
    hive: Path | None         # the SYSTEM hive it came from (or that was tried)
    problem: str | None       # why the zone is unknown (None when ``bias`` is known)
    # Daylight-saving rules, when the hive has them: Bias + StandardBias outside, Bias +
    # DaylightBias inside [DaylightStart, StandardStart).
    base_bias: int | None = None
    standard_bias: int = 0
    daylight_bias: int = 0
    daylight_start: Transition | None = None
    standard_start: Transition | None = None
    # (year, rule) from SOFTWARE's ``Dynamic DST``, by year; empty when not read.
    years: tuple[tuple[int, YearRule], ...] = ()

    def bias_at(self, local: dt.datetime) -> int | None:
        """Minutes to add to ``local`` (a time on this host's clock) to get UTC."""
        if self.years:
            return self.rule_of(local.year).bias_at(local)
        if self.base_bias is None or self.daylight_start is None or self.standard_start is None:
            return self.bias
        return YearRule(self.base_bias, self.standard_bias, self.daylight_bias,
                        self.daylight_start, self.standard_start).bias_at(local)

    def rule_of(self, year: int) -> YearRule:
        """The ``Dynamic DST`` rule in force in ``year``: that year's, else the latest before
        it, else the first (``years`` must not be empty)."""
        found = self.years[0][1]
        for first, rule in self.years:
            if first > year:
                break
            found = rule
        return found

    def to_utc(self, local: dt.datetime) -> dt.datetime:
        """``local`` as naive UTC; unchanged when the zone is unknown (taken as UTC)."""
        bias = self.bias_at(local)
        return local + dt.timedelta(minutes=bias) if bias else local


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
    base, std, day = (_signed(values.get(k)) for k in ("bias", "standardbias", "daylightbias"))
    rules = tuple(Transition.from_hex(values.get(k)) for k in ("daylightstart", "standardstart"))
    if values.get("dynamicdaylighttimedisabled") == 1:
        return HostTimeZone(bias, name, hive_path, None)
    key_name = _text(values.get("timezonekeyname"))
    years = _dynamic_dst(hive_path, key_name) if key_name else ()
    if (base is None or abs(base) > MAX_BIAS or abs(std or 0) > 120 or abs(day or 0) > 120
            or None in rules):
        return HostTimeZone(bias, name, hive_path, None, years=years)
    return HostTimeZone(bias, name, hive_path, None, base, std or 0, day or 0, rules[0], rules[1],
                        years)


def _dynamic_dst(system_hive: Path, zone: str) -> tuple[tuple[int, YearRule], ...]:
    """Each year's rule of ``zone`` from the SOFTWARE hive beside ``system_hive``; () when
    there is no such hive, key or readable rule (the SYSTEM rule then serves every year)."""
    from regipy.registry import RegistryHive

    software = find_nocase(system_hive.parent, "software")
    if software is None or "\\" in zone:
        return ()
    try:
        if not software.is_file() or software.stat().st_size > MAX_HIVE:
            return ()
        hive = RegistryHive(str(software))  # type: ignore[no-untyped-call]
        values = _values(hive, f"{_ZONES}\\{zone}\\Dynamic DST")
    except Exception:  # no key, or a hive regipy cannot read: same answer, no yearly rules
        return ()
    years = []
    for name, value in values.items():
        rule = YearRule.from_hex(value) if name.isdigit() and len(name) == 4 else None
        if rule is not None:
            years.append((int(name), rule))
    return tuple(sorted(years, key=lambda yr: yr[0]))


def time_zone_for(file: Path) -> HostTimeZone:
    """The time zone of the host whose drive copy holds ``file``."""
    hive = find_system_hive(file)
    if hive is None:
        return HostTimeZone(None, None, None, "no SYSTEM hive (Windows/System32/config/SYSTEM) in the "
                                              "folder tree holding this file")
    return read_time_zone(hive)

