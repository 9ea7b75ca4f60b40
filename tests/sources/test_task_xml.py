"""Task Scheduler XML files as Windows writes them (UTF-16 LE + BOM), XML bombs, cached actions."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.scenarios import hives as g
from deminer.sources import task_xml as tx
from deminer.sources.base import SourceContext, SourceError
from deminer.sources.ingest import ingest

ENCODED = g.ENCODED


def task_doc(*, uri: str | None = "\\Ddrivers", date: str | None = "2019-03-14T02:18:05",
             user: str = "S-1-5-18", actions: str = "", triggers: str = "", settings: str = "",
             declaration: bool = True) -> str:
    """A task definition laid out as schtasks / the Task Scheduler UI write them."""
    reg = "".join(f"    <{k}>{escape(v)}</{k}>\r\n" for k, v in (("Date", date), ("Author", "SYSTEM"),
                                                                 ("URI", uri)) if v)
    return (('<?xml version="1.0" encoding="UTF-16"?>\r\n' if declaration else "")
            + '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\r\n'
            + f"  <RegistrationInfo>\r\n{reg}  </RegistrationInfo>\r\n"
            + f"  <Triggers>\r\n{triggers}  </Triggers>\r\n"
            + f'  <Principals>\r\n    <Principal id="Author">\r\n      <UserId>{user}</UserId>\r\n'
            + "      <RunLevel>HighestAvailable</RunLevel>\r\n    </Principal>\r\n  </Principals>\r\n"
            + "  <Settings>\r\n    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\r\n"
            + f"{settings}  </Settings>\r\n"
            + f'  <Actions Context="Author">\r\n{actions}  </Actions>\r\n</Task>\r\n')


def exec_xml(command: str, arguments: str | None = None) -> str:
    args = f"      <Arguments>{escape(arguments)}</Arguments>\r\n" if arguments is not None else ""
    return f"    <Exec>\r\n      <Command>{escape(command)}</Command>\r\n{args}    </Exec>\r\n"


HOURLY = ("    <TimeTrigger>\r\n      <Repetition>\r\n        <Interval>PT1H</Interval>\r\n"
          "        <StopAtDurationEnd>false</StopAtDurationEnd>\r\n      </Repetition>\r\n"
          "      <StartBoundary>2019-03-14T02:18:00</StartBoundary>\r\n      <Enabled>true</Enabled>\r\n"
          "    </TimeTrigger>\r\n")
BOOT = "    <BootTrigger>\r\n      <Enabled>true</Enabled>\r\n    </BootTrigger>\r\n"
WEEKLY = ("    <CalendarTrigger>\r\n      <StartBoundary>2005-01-01T01:00:00</StartBoundary>\r\n"
          "      <ScheduleByWeek>\r\n        <DaysOfWeek><Wednesday /></DaysOfWeek>\r\n"
          "        <WeeksInterval>2</WeeksInterval>\r\n      </ScheduleByWeek>\r\n    </CalendarTrigger>\r\n")
LOGON_OFF = "    <LogonTrigger>\r\n      <Enabled>false</Enabled>\r\n    </LogonTrigger>\r\n"


def write(path: Path, text: str, encoding: str = "utf-16") -> Path:
    """``utf-16`` writes a BOM and little-endian text on x86, as Windows does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def line_of(doc: str, marker: str) -> int:
    return doc[: doc.index(marker)].count("\n") + 1


def parse(path: Path, host: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for table, rows in tx.SOURCE.parse(SourceContext(path, str(path), host, path.parent)):
        assert table == "persistence"
        out.extend(rows)
    return out


def test_ddrivers_task_in_utf16_with_bom(tmp_path: Path) -> None:
    args = f"/c powershell -nop -w hidden -ep bypass -enc {ENCODED}"
    doc = task_doc(actions=exec_xml("cmd.exe", args), triggers=HOURLY + BOOT,
                   settings="    <Enabled>true</Enabled>\r\n    <Hidden>true</Hidden>\r\n")
    p = write(tmp_path / "Windows/System32/Tasks/Ddrivers", doc)
    assert p.read_bytes()[:2] == b"\xff\xfe"
    assert tx.sniff(p, p.read_bytes()[:65536])
    [row] = parse(p, host="PC-18")
    assert row == {
        "host": "pc-18", "ts": dt.datetime(2019, 3, 14, 2, 18, 5), "source": str(p),
        "source_line": line_of(doc, "<Exec>"), "kind": "task", "location": str(p), "name": "\\Ddrivers",
        "command": f"cmd.exe {args} [triggers: TimeTrigger every PT1H; BootTrigger] [hidden]",
        "user": "S-1-5-18", "mtime": dt.datetime(2019, 3, 14, 2, 18, 5), "enabled": True}


def test_benign_task_named_by_its_path_disabled_and_utc_date(tmp_path: Path) -> None:
    p = write(tmp_path / "C/Windows/System32/Tasks/Microsoft/Windows/Defrag/ScheduledDefrag", task_doc(
        uri=None, date="2019-03-14T10:18:05.1234567+08:00", user="S-1-5-18", triggers=WEEKLY + LOGON_OFF,
        actions=exec_xml("%windir%\\system32\\defrag.exe", "-c -h -k -g -$"),
        settings="    <Enabled>false</Enabled>\r\n"))
    [row] = parse(p)
    assert row["name"] == "\\Microsoft\\Windows\\Defrag\\ScheduledDefrag"
    assert row["command"] == ("%windir%\\system32\\defrag.exe -c -h -k -g -$ "
                              "[triggers: CalendarTrigger every 2 weeks; LogonTrigger (disabled)]")
    assert row["enabled"] is False
    assert row["mtime"] == dt.datetime(2019, 3, 14, 2, 18, 5, 123456)     # +08:00 turned to UTC
    assert row["host"] is None


def test_com_handler_and_several_actions(tmp_path: Path) -> None:
    com = (f"    <ComHandler>\r\n      <ClassId>{g.CLSID}</ClassId>\r\n"
           "      <Data><![CDATA[-scan]]></Data>\r\n    </ComHandler>\r\n")
    doc = task_doc(uri="\\WebServers", triggers=BOOT,
                   actions=exec_xml("C:\\Windows\\Temp\\svchost.exe") + com)
    p = write(tmp_path / "t.xml", doc, encoding="utf-8-sig")
    rows = parse(p)
    assert [(r["command"], r["source_line"]) for r in rows] == [
        ("C:\\Windows\\Temp\\svchost.exe [triggers: BootTrigger]", line_of(doc, "<Exec>")),
        (f"{g.CLSID} -scan [triggers: BootTrigger]", line_of(doc, "<ComHandler>"))]
    assert {r["name"] for r in rows} == {"\\WebServers"}


def test_no_declaration_no_bom_and_no_actions(tmp_path: Path) -> None:
    p = write(tmp_path / "bare", task_doc(declaration=False, date=None), encoding="utf-8")
    assert tx.sniff(p, p.read_bytes())
    [row] = parse(p)
    assert (row["command"], row["mtime"], row["source_line"]) == (None, None, None)


def test_sniff_refuses_other_xml_and_binary(tmp_path: Path) -> None:
    event = ('<Events><Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System/>'
             "<EventData><Data Name=\"TaskContent\">&lt;Task xmlns=\"http://schemas.microsoft.com/windows/"
             "2004/02/mit/task\"&gt;</Data></EventData></Event></Events>")
    for head in (event.encode(), b"<Task>no namespace</Task>", b"\x00\x01<Task" + b"\xff" * 50, b""):
        assert not tx.sniff(tmp_path / "x", head)


def test_xml_bomb_is_refused_fast(tmp_path: Path) -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE Task [<!ENTITY l0 "lol">' + lol + "]>\n"
            + task_doc(declaration=False, actions=exec_xml("&l9;")).replace("&amp;l9;", "&l9;"))
    p = write(tmp_path / "Tasks/bomb", bomb)
    assert tx.sniff(p, p.read_bytes())
    start = time.monotonic()
    with pytest.raises(SourceError, match="task XML refused: DTD/ENTITY declarations are refused"):
        parse(p)
    assert time.monotonic() - start < 1


def test_broken_and_oversized_files(tmp_path: Path) -> None:
    good = task_doc(actions=exec_xml("cmd.exe", "/c x"))
    p = write(tmp_path / "cut", good[: len(good) // 2])
    with pytest.raises(SourceError, match=r"^task XML refused: not well-formed XML: .*line \d+, column \d+$"):
        parse(p)
    big = write(tmp_path / "big", good.replace("/c x", "A" * (tx.MAX_TASK_BYTES // 2)))
    with pytest.raises(SourceError, match="over the 4194304-byte cap"):
        parse(big)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff\xfe" + "<Task xmlns='http://schemas.microsoft.com/windows/2004/02/mit/task'>"
                     .encode("utf-16-le") + b"\x00\xd8\x00\xdc<\x00/\x00")
    with pytest.raises(SourceError, match="not well-formed"):
        parse(junk)


def test_undecodable_bytes_become_escapes(tmp_path: Path) -> None:
    doc = task_doc(actions=exec_xml("C:\\Temp\\PLACEHOLDER.exe")).encode("utf-8")
    p = tmp_path / "latin"
    p.write_bytes(doc.replace(b"PLACEHOLDER", b"caf\xe9\xff"))
    [row] = parse(p)
    assert row["command"] == "C:\\Temp\\caf\\xe9\\xff.exe"


def test_ingest_a_tasks_folder(tmp_path: Path) -> None:
    tasks = tmp_path / "Tasks"
    for name in ("Ddrivers", "DnsScan", "WebServers"):
        write(tasks / name, task_doc(uri=None, actions=exec_xml("cmd.exe", f"/c {name}")))
    write(tasks / "notes.txt", "not a task", encoding="utf-8")
    with Case(None) as case:
        summary = ingest(case, [tasks], host="pc-18", sources=(tx.SOURCE,))
        assert summary.files == 3 and summary.errors == []
        assert case.query("SELECT name, command, host FROM persistence ORDER BY name") == [
            {"name": "\\Ddrivers", "command": "cmd.exe /c Ddrivers", "host": "pc-18"},
            {"name": "\\DnsScan", "command": "cmd.exe /c DnsScan", "host": "pc-18"},
            {"name": "\\WebServers", "command": "cmd.exe /c WebServers", "host": "pc-18"}]


@settings(max_examples=60, deadline=None)
@given(command=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40),
       arguments=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80))
def test_any_command_text_round_trips(command: str, arguments: str) -> None:
    task = tx.parse_task(task_doc(actions=exec_xml(command, arguments)))
    assert [a.command for a in task.actions] == [tx.exec_command(command, arguments)]


# --- the cached form in the registry ----------------------------------------------------------

def test_decode_actions_versions_and_kinds() -> None:
    assert tx.decode_actions(g.actions_blob(g.exec_action("cmd.exe", "/c a", "C:\\"),
                                            g.com_action(g.CLSID, "x"))) == ["cmd.exe /c a", f"{g.CLSID} x"]
    v1 = g.actions_blob(g.exec_action("a.exe", "-b", version=1), version=1)
    assert tx.decode_actions(v1) == ["a.exe -b"]
    cut = g.actions_blob(g.exec_action("a.exe"), g.exec_action("b.exe", "-x"))[:-6]
    assert tx.decode_actions(cut) == ["a.exe"]               # what was read before the damage
    with pytest.raises(ValueError, match="blob ends inside a field at byte 38"):
        tx.decode_actions(g.actions_blob(g.exec_action("a.exe"))[:-10])
    with pytest.raises(ValueError, match="string of 1000 bytes runs past the end"):
        tx.decode_actions(b"\x01\x00\x66\x66" + (1000).to_bytes(4, "little") + b"ab")
    assert tx.dynamic_info_created(g.dynamic_info(g.T_TASK_CREATED)) == g.filetime(g.T_TASK_CREATED)
    assert tx.dynamic_info_created(b"\x03\x00") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_actions_never_fails_otherwise(blob: bytes) -> None:
    try:
        out = tx.decode_actions(blob)
    except ValueError:
        return                                  # the one way it may fail
    assert all(isinstance(c, str) for c in out)
