"""A Windows host's time zone from its SYSTEM hive, daylight saving worked out per line."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import pytest

from deminer.scenarios import hives as hg
from deminer.sources import host_timezone as tz
from deminer.sources.host_timezone import HostTimeZone, Transition
from tests.hivex import skip_without_hivex


def systemtime(month: int, weekday: int, week: int, hour: int, year: int = 0) -> bytes:
    return struct.pack("<8H", year, month, weekday, week, hour, 0, 0, 0)


def rule(month: int, weekday: int, week: int, hour: int, year: int = 0) -> Transition | None:
    return Transition.from_hex(systemtime(month, weekday, week, hour, year).hex())


def zone(base: int, daylight: int, on: Transition | None, off: Transition | None) -> HostTimeZone:
    return HostTimeZone(base + daylight, "test", None, None, base, 0, daylight, on, off)


US_EASTERN = zone(300, -60, rule(3, 0, 2, 2), rule(11, 0, 1, 2))  # 2nd Sun Mar - 1st Sun Nov
SYDNEY = zone(-600, -60, rule(10, 0, 1, 2), rule(4, 0, 1, 3))  # 1st Sun Oct - 1st Sun Apr
BERLIN = zone(-60, -60, rule(3, 0, 5, 2), rule(10, 0, 5, 3))  # last Sun Mar - last Sun Oct


@pytest.mark.parametrize(
    ("rule_", "year", "expected"),
    [
        (rule(3, 0, 2, 2), 2024, dt.datetime(2024, 3, 10, 2)),
        (rule(11, 0, 1, 2), 2024, dt.datetime(2024, 11, 3, 2)),
        (rule(3, 0, 5, 2), 2024, dt.datetime(2024, 3, 31, 2)),  # "last" is the 5th here
        (rule(10, 0, 5, 3), 2024, dt.datetime(2024, 10, 27, 3)),  # and the 4th here
        (rule(10, 0, 5, 3), 2021, dt.datetime(2021, 10, 31, 3)),
        (rule(2, 6, 5, 0), 2024, dt.datetime(2024, 2, 24)),  # last Saturday of February
        (rule(4, 0, 7, 1, year=2023), 2023, dt.datetime(2023, 4, 7, 1)),  # an absolute date
    ],
)
def test_transitions_land_on_the_right_day(
    rule_: Transition | None, year: int, expected: dt.datetime
) -> None:
    assert rule_ is not None and rule_.at(year) == expected


def test_no_rule_without_a_month_or_with_junk() -> None:
    assert rule(0, 0, 0, 0) is None  # a zone without daylight saving
    assert Transition.from_hex("00ff") is None and Transition.from_hex("zz") is None
    assert Transition.from_hex(None) is None


@pytest.mark.parametrize(
    ("z", "local", "utc"),
    [
        (US_EASTERN, dt.datetime(2024, 1, 15, 12), dt.datetime(2024, 1, 15, 17)),
        (US_EASTERN, dt.datetime(2024, 7, 1, 12), dt.datetime(2024, 7, 1, 16)),
        (US_EASTERN, dt.datetime(2024, 3, 10, 1, 59), dt.datetime(2024, 3, 10, 6, 59)),
        (US_EASTERN, dt.datetime(2024, 3, 10, 3, 0), dt.datetime(2024, 3, 10, 7, 0)),
        (SYDNEY, dt.datetime(2024, 1, 15, 12), dt.datetime(2024, 1, 15, 1)),  # southern summer
        (SYDNEY, dt.datetime(2024, 7, 1, 12), dt.datetime(2024, 7, 1, 2)),
        (BERLIN, dt.datetime(2024, 10, 28, 12), dt.datetime(2024, 10, 28, 11)),
        (BERLIN, dt.datetime(2024, 10, 26, 12), dt.datetime(2024, 10, 26, 10)),
    ],
)
def test_each_line_gets_the_bias_of_its_own_date(
    z: HostTimeZone, local: dt.datetime, utc: dt.datetime
) -> None:
    assert z.to_utc(local) == utc


def test_without_rules_the_collection_time_bias_serves_every_line() -> None:
    fixed = HostTimeZone(-480, "China Standard Time", None, None)
    assert fixed.to_utc(dt.datetime(2024, 7, 1, 8)) == dt.datetime(2024, 7, 1, 0)
    assert HostTimeZone(None, None, None, "no hive").to_utc(dt.datetime(2024, 1, 1)) == dt.datetime(
        2024, 1, 1
    )


def test_rules_are_read_from_a_real_hive(tmp_path: Path) -> None:
    skip_without_hivex()
    config = tmp_path / "C/Windows/System32/config"
    config.mkdir(parents=True)
    hg.write_hive(
        config / "SYSTEM",
        "SYSTEM",
        [
            hg.Key("Select", [hg.dword("Current", 1)]),
            hg.Key(
                "ControlSet001\\Control\\TimeZoneInformation",
                [
                    hg.dword("Bias", 300),
                    hg.dword("ActiveTimeBias", 240),
                    hg.dword("StandardBias", 0),
                    hg.dword("DaylightBias", (-60) & 0xFFFFFFFF),
                    hg.sz("TimeZoneKeyName", "Eastern Standard Time"),
                    hg.binary("DaylightStart", systemtime(3, 0, 2, 2)),
                    hg.binary("StandardStart", systemtime(11, 0, 1, 2)),
                ],
            ),
        ],
    )
    found = tz.read_time_zone(config / "SYSTEM")
    assert (found.bias, found.name, found.base_bias, found.daylight_bias) == (
        240,
        "Eastern Standard Time",
        300,
        -60,
    )
    assert found.to_utc(dt.datetime(2024, 1, 15, 12)) == dt.datetime(
        2024, 1, 15, 17
    )  # winter: not ActiveTimeBias
    assert found.to_utc(dt.datetime(2024, 7, 1, 12)) == dt.datetime(2024, 7, 1, 16)


def tzi(base: int, std: int, day: int, off: bytes, on: bytes) -> bytes:
    """A REG_TZI_FORMAT: Bias, StandardBias, DaylightBias, StandardDate, DaylightDate."""
    return struct.pack("<3l", base, std, day) + off + on


# US Eastern before and after the Energy Policy Act moved daylight time in 2007.
EASTERN_2006 = tzi(300, 0, -60, systemtime(10, 0, 5, 2), systemtime(4, 0, 1, 2))
EASTERN_2007 = tzi(300, 0, -60, systemtime(11, 0, 1, 2), systemtime(3, 0, 2, 2))


def test_a_year_rule_reads_a_tzi_value() -> None:
    r = tz.YearRule.from_hex(EASTERN_2006.hex())
    assert r is not None and (r.base_bias, r.standard_bias, r.daylight_bias) == (300, 0, -60)
    assert r.daylight_start == rule(4, 0, 1, 2) and r.standard_start == rule(10, 0, 5, 2)
    no_dst = tz.YearRule.from_hex(tzi(-480, 0, 0, bytes(16), bytes(16)).hex())
    assert no_dst is not None and no_dst.daylight_start is None
    assert no_dst.bias_at(dt.datetime(2024, 7, 1)) == -480
    assert tz.YearRule.from_hex(EASTERN_2006[:40].hex()) is None
    assert tz.YearRule.from_hex(tzi(99999, 0, 0, bytes(16), bytes(16)).hex()) is None


def test_each_line_takes_the_rule_of_its_year() -> None:
    r2006, r2007 = (tz.YearRule.from_hex(v.hex()) for v in (EASTERN_2006, EASTERN_2007))
    assert r2006 is not None and r2007 is not None
    z = HostTimeZone(240, "Eastern Standard Time", None, None, 300, 0, -60, rule(3, 0, 2, 2),
                     rule(11, 0, 1, 2), ((2006, r2006), (2007, r2007)))
    # 20 March: standard time in 2006, daylight time from 2007 on.
    assert z.to_utc(dt.datetime(2006, 3, 20, 12)) == dt.datetime(2006, 3, 20, 17)
    assert z.to_utc(dt.datetime(2007, 3, 20, 12)) == dt.datetime(2007, 3, 20, 16)
    assert z.to_utc(dt.datetime(2005, 3, 20, 12)) == dt.datetime(2005, 3, 20, 17)  # first rule
    assert z.to_utc(dt.datetime(2024, 3, 20, 12)) == dt.datetime(2024, 3, 20, 16)  # last rule
    assert z.to_utc(dt.datetime(2006, 11, 1, 12)) == dt.datetime(2006, 11, 1, 17)
    assert z.to_utc(dt.datetime(2007, 11, 1, 12)) == dt.datetime(2007, 11, 1, 16)


def _eastern_system(config: Path) -> None:
    hg.write_hive(config / "SYSTEM", "SYSTEM", [
        hg.Key("Select", [hg.dword("Current", 1)]),
        hg.Key("ControlSet001\\Control\\TimeZoneInformation", [
            hg.dword("Bias", 300), hg.dword("ActiveTimeBias", 300), hg.dword("StandardBias", 0),
            hg.dword("DaylightBias", (-60) & 0xFFFFFFFF),
            hg.sz("TimeZoneKeyName", "Eastern Standard Time"),
            hg.binary("DaylightStart", systemtime(3, 0, 2, 2)),
            hg.binary("StandardStart", systemtime(11, 0, 1, 2))]),
    ])


def test_yearly_rules_come_from_the_software_hive_beside_system(tmp_path: Path) -> None:
    skip_without_hivex()
    config = tmp_path / "C/Windows/System32/config"
    config.mkdir(parents=True)
    _eastern_system(config)
    zones = "Microsoft\\Windows NT\\CurrentVersion\\Time Zones"
    hg.write_hive(config / "SOFTWARE", "SOFTWARE", [
        hg.Key(f"{zones}\\Eastern Standard Time", [hg.binary("TZI", EASTERN_2007)]),
        hg.Key(f"{zones}\\Eastern Standard Time\\Dynamic DST", [
            hg.dword("FirstEntry", 2006), hg.dword("LastEntry", 2007),
            hg.binary("2006", EASTERN_2006), hg.binary("2007", EASTERN_2007),
            hg.binary("junk", b"\x01")]),
        hg.Key(f"{zones}\\W. Europe Standard Time\\Dynamic DST", [
            hg.binary("2006", tzi(-60, 0, -60, systemtime(10, 0, 5, 3), systemtime(3, 0, 5, 2)))]),
    ])
    found = tz.read_time_zone(config / "SYSTEM")
    assert [year for year, _ in found.years] == [2006, 2007]
    assert found.to_utc(dt.datetime(2006, 3, 20, 12)) == dt.datetime(2006, 3, 20, 17)
    assert found.to_utc(dt.datetime(2007, 3, 20, 12)) == dt.datetime(2007, 3, 20, 16)


def test_without_a_software_hive_the_system_rule_serves_every_year(tmp_path: Path) -> None:
    skip_without_hivex()
    config = tmp_path / "C/Windows/System32/config"
    config.mkdir(parents=True)
    _eastern_system(config)
    found = tz.read_time_zone(config / "SYSTEM")
    assert found.years == ()
    assert found.to_utc(dt.datetime(2006, 3, 20, 12)) == dt.datetime(2006, 3, 20, 16)
    (config / "SOFTWARE").write_bytes(b"regf" + bytes(100))      # a broken hive: same answer
    tz._read_cached.cache_clear()
    assert tz.read_time_zone(config / "SYSTEM").years == ()
