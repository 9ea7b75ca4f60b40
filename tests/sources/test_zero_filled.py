"""Text logs with zero-filled regions (a crash, or a truncation under a running writer) lose
no line around the hole, and the hole is reported where it is."""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.detect.engine import detect
from deminer.detect.rules import load_rules
from deminer.sources.base import looks_binary
from deminer.sources.ingest import ingest

SSH = "Mar 30 15:00:0{i} web1 sshd[100]: Failed password for root from 203.0.113.7 port 4242 ssh2\n"
AUDIT = ("type=USER_AUTH msg=audit(1711810801.123:{i}): pid=1 uid=0 auid=4294967295 "
         "ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" "
         "hostname=203.0.113.7 addr=203.0.113.7 terminal=ssh res=failed'\n")


def _lines(template: str, numbers: range) -> bytes:
    return "".join(template.format(i=i) for i in numbers).encode()


def _read(path: Path) -> tuple[list[int], list[dict[str, object]]]:
    with Case(None) as case:
        ingest(case, [path])
        lines = [int(r["source_line"]) for r in case.query(
            "SELECT source_line FROM events ORDER BY source_line")]
        errors = case.query("SELECT stage, message FROM errors ORDER BY stage")
    return lines, errors


@pytest.mark.parametrize(("template", "name"), [(SSH, "auth.log"), (SSH, "messages-x"),
                                                (AUDIT, "audit.log")])
@pytest.mark.parametrize(("where", "zeros"), [
    ("between lines", 4096),                    # the next line starts right after the zeros
    ("bigger than a line may be", 3 << 20),     # over both readers' line caps
    ("at the start", 8192),
])
def test_every_line_around_the_hole_is_read_and_the_hole_reported(
        tmp_path: Path, template: str, name: str, where: str, zeros: int) -> None:
    before, after = _lines(template, range(3)), _lines(template, range(3, 5))
    hole = b"\x00" * zeros
    data = hole + before + after if where == "at the start" else before + hole + after
    path = tmp_path / name
    path.write_bytes(data)
    lines, errors = _read(path)
    assert len(lines) == 5
    (hole,) = [str(e["message"]) for e in errors if e["stage"] == "completeness"]
    first = 1 if where == "at the start" else 4
    assert hole.startswith(f"{zeros} zero bytes in ")
    assert f"the first before line {first}:" in hole
    assert [e for e in errors if e["stage"] != "completeness"] == []


def test_a_gzip_rotated_log_with_a_hole(tmp_path: Path) -> None:
    path = tmp_path / "auth.log.2.gz"
    path.write_bytes(gzip.compress(_lines(SSH, range(3)) + b"\x00" * 10_000 + _lines(SSH, range(3, 6))))
    lines, errors = _read(path)
    assert lines == [1, 2, 3, 4, 5, 6] and [e["stage"] for e in errors] == ["completeness"]


def test_a_log_without_holes_reports_none(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes(_lines(SSH, range(3)))
    assert _read(path) == ([1, 2, 3], [])


def test_only_runs_of_zeros_are_holes() -> None:
    text = _lines(SSH, range(3))
    assert not looks_binary(text[:100] + b"\x00" * 4096 + text[100:])
    assert not looks_binary(b"\x00" * 65536)                     # nothing but a hole
    assert looks_binary(codecs.BOM_UTF16_LE + text.decode().encode("utf-16-le"))
    assert looks_binary(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00" + bytes(4096))
    assert looks_binary(text + b"\x00\x01\x02" + text)          # a few NULs inside: damage


def test_the_hole_becomes_a_finding_at_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes(_lines(SSH, range(3)) + b"\x00" * 4096 + _lines(SSH, range(5, 7)))
    rule = [r for r in load_rules() if r.id == "defense_evasion.evidence_gap_zero_filled_log"]
    with Case(None) as case:
        ingest(case, [path], host="web1")
        (finding,) = detect(case, rule)
    assert finding.host == "web1" and finding.entity == f"{path} line 4"
    assert finding.ts is not None and (finding.ts.hour, finding.ts.minute, finding.ts.second) == (15, 0, 5)
    assert finding.evidence["zero_bytes"] == 4096 and "truncation" in finding.summary


def test_a_hole_in_a_network_log_is_placed_at_the_next_flow(tmp_path: Path) -> None:
    header = ("#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n"
              "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags "
              "tcpsyn tcpack tcpwin icmptype icmpcode info path\n")
    flow = "2024-03-18 08:00:0{i} ALLOW TCP 10.0.0.5 198.51.100.7 5000{i} 3333 0 - 0 0 0 - - - SEND\n"
    path = tmp_path / "pfirewall.log"
    path.write_bytes(header.encode() + _lines(flow, range(2)) + b"\x00" * 8192 + _lines(flow, range(7, 9)))
    rule = [r for r in load_rules() if r.id == "defense_evasion.evidence_gap_zero_filled_log"]
    with Case(None) as case:
        ingest(case, [path], host="pc1")
        assert case.count("flows") == 4
        (finding,) = detect(case, rule)
    assert finding.entity == f"{path} line 7"
    assert finding.ts is not None and finding.ts.second == 7     # the first flow after the hole


@pytest.mark.parametrize("hole", [16, 40, 200])
def test_a_hole_across_two_reads_is_one_hole_wherever_the_reads_cut_it(hole: int) -> None:
    import io

    from deminer.sources.syslog_time import Blocks

    text = _lines(SSH, range(6))
    for at in (0, 91, len(text)):                      # the hole's place: start, mid-line, end
        data = text[:at] + b"\x00" * hole + text[at:]
        for block in (7, 16, 50, 64, 97):               # reads of every size cut it everywhere
            blocks = Blocks(io.BytesIO(data), block=block)
            got = b"\n".join(blocks)
            assert got.rstrip(b"\n") == text.rstrip(b"\n"), (at, block)
            assert (blocks.zero_bytes, blocks.zero_regions) == (hole, 1), (at, block)
            assert blocks.zero_first_line == text[:at].count(b"\n") + 1


def test_a_few_nuls_are_damage_not_a_hole_even_across_reads() -> None:
    import io

    from deminer.sources.syslog_time import Blocks

    data = b"abc\x00\x00\x00def\nxyz\n"
    for block in (2, 4, 5, 64):
        blocks = Blocks(io.BytesIO(data), block=block)
        assert b"\n".join(blocks) == b"abc\x00\x00\x00def\nxyz" and blocks.zero_bytes == 0, block
