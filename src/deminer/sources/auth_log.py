"""Linux authentication logs → ``events``: auth.log, secure, syslog, and journald JSON.

Reads BSD syslog (``Mar 27 13:06:56 host sshd[12]: …``), ISO-timestamped syslog (rsyslog's
high-precision format, ``journalctl -o short-iso``), RFC 5424 and ``journalctl -o json``
lines, plain or gzip'd, and keeps what an intrusion leaves behind: sshd logons, failures,
invalid users, disconnects and PAM failures, plus sudo, su, useradd/usermod and cron runs.
Every other line is skipped without a row.

Events (see CONTRIBUTING.md): ``logon_success`` (status = method), ``logon_failure`` (status
``bad_password``, ``invalid_user``, ``failed_publickey``; ``count`` = N for rsyslog's
"message repeated N times"), ``invalid_user`` (sshd's notice before the attempt),
``auth_max_attempts``, ``disconnect``, ``pam_auth_failure`` (PAM's echo of a failure, so not
counted twice as ``logon_failure``), ``session_opened``/``session_closed``, ``sudo``, ``su``,
``user_added``, ``group_member_added``, ``cron_run``.

This module is the message grammar (what each program's messages mean) and the source;
``auth_log_lines`` takes lines apart and builds the columns. Ingest is columnar: blocks of
4 MiB are matched with one regex for the common syslog lines and handed to the case store as
Arrow tables, without a dict per line; every other line goes through the per-line reader,
which ``parse_file_per_line`` runs alone as the reference the fast path is tested against.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deminer.sources import auth_log_lines, textlog
from deminer.sources import syslog_time as st
from deminer.sources.auth_log_lines import RAW_CAP as RAW_CAP
from deminer.sources.auth_log_lines import Message, number
from deminer.sources.base import BATCH_ROWS, Batch, Source, SourceContext, host_id

# -- the message grammar --------------------------------------------------------------------
# A handler turns one message into a ``Message``: (event, user, src_ip, src_port, status,
# data, count, command), or None for a message that says nothing of interest.
# Usernames are attacker-chosen and may hold spaces: ``(.*)`` is greedy so the *last*
# " from IP port N", the one sshd wrote, is the address.
_FAILED = re.compile(r"Failed (\S+) for (invalid user )?(.*) from (\S+) port (\d+)")
_ACCEPTED = re.compile(r"Accepted (\S+) for (.*) from (\S+) port (\d+)(?: ssh2)?(?:: (\S+) (\S+))?")
_INVALID = re.compile(r"Invalid user (.*) from (\S+?)(?: port (\d+))?\s*$")
_MAXAUTH = re.compile(r"maximum authentication attempts exceeded for (invalid user )?(.*) "
                      r"from (\S+) port (\d+)")
_CLOSED = re.compile(r"Connection closed by (?:(?:authenticating|invalid) user (.*) )?(\S+?)"
                     r"(?: port (\d+))?(?: \[preauth\])?$")
_DISCONNECTED = re.compile(r"Disconnected from (?:(?:authenticating |invalid )?user (.*) )?(\S+) port (\d+)")
_RECEIVED = re.compile(r"Received disconnect from (\S+?)(?: port (\d+))?: ?\d+: (.*?)(?: \[preauth\])?$")
_PAM_MORE = re.compile(r"PAM (\d+) more authentication failures?;")
_RHOST = re.compile(r" rhost=(\S*)")
_PAM_USER = re.compile(r"\suser=(\S+)")
_SESSION = re.compile(r"pam_unix\([^:]+:session\): session (opened|closed) for user (.*?)"
                      r"(?:\(uid=\d+\))?(?: by .*)?$")
_SU = re.compile(r"(Successful|FAILED) su for (\S+) by (\S+)")
_SU_TO = re.compile(r"(FAILED SU )?\(to (\S+)\) (\S+) on (\S+)")
_NEW_USER = re.compile(r"new user: name=([^,]*), UID=(\d+), GID=(\d+), home=([^,]*), shell=([^,]*)")
_ADD_GROUP = re.compile(r"add '([^']*)' to group '([^']*)'")
_CRON_CMD = re.compile(r"\((.*?)\) CMD \((.*)\)$")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(%\w+)?$")
_FAIL_STATUS = {"password": "bad_password", "keyboard-interactive/pam": "bad_password",
                "keyboard-interactive": "bad_password", "publickey": "failed_publickey"}
_METHOD_DATA: dict[str, str] = {}


def _method(method: str) -> str:
    """``data`` JSON naming the auth method (cached: a handful of methods, millions of lines)."""
    data = _METHOD_DATA.get(method)
    if data is None:
        data = json.dumps({"method": method})
        if len(_METHOD_DATA) < 64:
            _METHOD_DATA[method] = data
    return data


def _ip(text: str | None) -> str | None:
    """``text`` if it is an IP address (PAM's rhost may be a host name)."""
    # A shape test, not ipaddress (10x slower): host names have no ':' and are not 4 numbers.
    if text and (_IPV4.match(text) or (":" in text and _IPV6.match(text))):
        return text
    return None


def _preauth(msg: str) -> str | None:
    return "preauth" if msg.endswith("[preauth]") else None


def _sshd(msg: str) -> Message | None:
    c = msg[:3]
    if c == "Fai":
        m = _FAILED.match(msg)
        if m is None or m.group(1) == "none":   # "none" is a probe, not a credential
            return None
        method, invalid, user, ip, port = m.groups()
        status = "invalid_user" if invalid else _FAIL_STATUS.get(method, "failed_" + method)
        return "logon_failure", user, ip, number(port), status, _method(method), None, None
    if c == "Acc":
        m = _ACCEPTED.match(msg)
        if m is None:
            return None
        method, user, ip, port, key_type, fingerprint = m.groups()
        data = (json.dumps({"method": method, "key_type": key_type, "fingerprint": fingerprint})
                if fingerprint else _method(method))
        return "logon_success", user, ip, number(port), method.split("/")[0], data, None, None
    if c == "Inv":
        m = _INVALID.match(msg)
        if m is None:
            return None
        return "invalid_user", m.group(1), m.group(2), number(m.group(3)), "invalid_user", None, None, None
    if c == "Con":
        m = _CLOSED.match(msg)
        if m is None:
            return None
        return "disconnect", m.group(1), m.group(2), number(m.group(3)), _preauth(msg), None, None, None
    if c == "Dis":
        m = _DISCONNECTED.match(msg)
        if m is None:
            return None
        return "disconnect", m.group(1), m.group(2), number(m.group(3)), _preauth(msg), None, None, None
    if c == "Rec":
        m = _RECEIVED.match(msg)
        if m is None:
            return None
        return ("disconnect", None, m.group(1), number(m.group(2)), _preauth(msg),
                json.dumps({"reason": m.group(3)}), None, None)
    if c == "pam":
        if msg.startswith("pam_unix(sshd:auth): authentication failure;"):
            return _pam_failure(msg, 1)
        m = _SESSION.match(msg)
        if m is None:
            return None
        return "session_" + m.group(1), m.group(2), None, None, None, None, None, None
    if c == "PAM":
        m = _PAM_MORE.match(msg)
        return _pam_failure(msg, number(m.group(1))) if m else None
    if "maximum authentication attempts" in msg:
        m = _MAXAUTH.search(msg)
        if m is None:
            return None
        return ("auth_max_attempts", m.group(2), m.group(3), number(m.group(4)),
                "invalid_user" if m.group(1) else None, None, None, None)
    return None


def _pam_failure(msg: str, count: int | None) -> Message:
    rhost = _RHOST.search(msg)
    user = _PAM_USER.search(msg)
    host = rhost.group(1) if rhost else None
    ip = _ip(host)
    data = json.dumps({"rhost": host}) if host and not ip else None
    return ("pam_auth_failure", user.group(1) if user else None, ip, None, "pam_failure", data,
            count, None)


def _sudo(msg: str) -> Message | None:
    user, sep, rest = msg.partition(" : ")
    if not sep or msg.startswith("pam_"):
        return None
    cmd_at = rest.find("COMMAND=")
    head = rest if cmd_at < 0 else rest[:cmd_at]
    data: dict[str, str] = {}
    status = "allowed"
    for part in head.split(" ; "):
        key, eq, value = part.strip().partition("=")
        if eq and key in ("TTY", "PWD", "USER"):
            data["run_as" if key == "USER" else key.lower()] = value
        elif part.strip():
            status = part.strip()            # "3 incorrect password attempts", "user NOT in sudoers"
    return ("sudo", user.strip(), None, None, status, json.dumps(data, sort_keys=True), None,
            rest[cmd_at + 8:] if cmd_at >= 0 else None)


def _su(msg: str) -> Message | None:
    m = _SU.match(msg)
    if m:
        ok, target, by = m.groups()
        tty = None
    else:
        m2 = _SU_TO.match(msg)
        if m2 is None:
            return None
        failed, target, by, tty = m2.groups()
        ok = "FAILED" if failed else "Successful"
    return ("su", target, None, None, "success" if ok == "Successful" else "failure",
            json.dumps({"by": by, "tty": tty} if tty else {"by": by}), None, None)


def _account(msg: str) -> Message | None:
    if msg.startswith("new user: "):
        m = _NEW_USER.match(msg)
        if m is None:
            return None
        name, uid, gid, home, shell = m.groups()
        data = {"uid": number(uid), "gid": number(gid), "home": home, "shell": shell}
        return "user_added", name, None, None, None, json.dumps(data), None, None
    m2 = _ADD_GROUP.match(msg)      # "add 'u' to shadow group 'g'" repeats it: not matched
    if m2 is None:
        return None
    return ("group_member_added", m2.group(1), None, None, None, json.dumps({"group": m2.group(2)}),
            None, None)


def _cron(msg: str) -> Message | None:
    m = _CRON_CMD.match(msg)
    if m is None:
        return None
    return "cron_run", m.group(1), None, None, None, None, None, m.group(2)


HANDLERS: dict[str, Callable[[str], Message | None]] = {
    "sshd": _sshd, "sshd-session": _sshd, "sshd-auth": _sshd, "sudo": _sudo, "su": _su,
    "useradd": _account, "usermod": _account, "CRON": _cron, "cron": _cron, "crond": _cron,
    "CROND": _cron, "/usr/sbin/cron": _cron,
}


# -- recognising and reading files ------------------------------------------------------------
_LOG_NAME = re.compile(r"^(auth\.log|secure|syslog|messages)([.-]\d+)?(\.gz)?$")
_SNIFF = (
    re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [^\s:]+:"),
    re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* \S+ [^\s:]+:"),
    re.compile(r"<\d{1,3}>1 \d{4}-\d\d-\d\dT\S+ \S+ \S+ \S+ \S+ "),
)


def sniff(path: Path, head: bytes) -> bool:
    """Syslog-style or journald JSON text, plain or gzip'd; or a file named like an auth log."""
    named = bool(_LOG_NAME.match(path.name))
    text = textlog.head_text(head)
    if text is None:
        return named               # so a binary auth.log gets a clear error, not silence
    sample = [ln for ln in text.split("\n") if ln.strip()][:20]
    hits = 0
    for line in sample:
        if line.startswith("{"):
            hits += '"MESSAGE"' in line and ("_COMM" in line or "SYSLOG_IDENTIFIER" in line)
        else:
            hits += any(rx.match(line) for rx in _SNIFF)
    # Half, not all: a log cut by the collector starts in the middle of a line.
    return hits * 2 >= len(sample)


def _start_year(path: Path, reference_year: int | None) -> int:
    """Year of the log's first BSD syslog line; ``reference_year`` is that of its last line
    (default: from the file's mtime). Raises ``SourceError`` for a file that is not text."""
    head = textlog.text_head(path, "text log")
    if reference_year is not None:
        reference, slack = st.reference_from_year(reference_year), dt.timedelta(0)
    else:
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
        reference, slack = mtime, st.ZONE_SLACK
    if not st.RFC3164_START.search(head):
        return reference.year
    scan = st.MonthScan()
    with st.open_log(path) as fh:
        for block in st.Blocks(fh):
            scan.feed(block)
    return scan.start_year(reference, slack)


def _read(path: Path, display: str, host: str | None, reference_year: int | None, batch_rows: int,
          per_line: bool) -> Iterator[tuple[str, list[Any]]]:
    """``events`` batches of row tuples, then ``errors`` rows (dicts) for what was skipped."""
    start_year = _start_year(path, reference_year)
    with st.open_log(path) as fh:
        blocks = st.Blocks(fh)
        reader = auth_log_lines.LineReader(HANDLERS, host, start_year, blocks)
        read = reader.read_per_line if per_line else reader.read_block
        yield from auth_log_lines.in_batches(map(read, blocks), batch_rows)
    errors = textlog.error_rows(display, host, reader.problems(), blocks)
    if errors:
        yield "errors", errors


def parse_arrow(path: Path, display: str, host: str | None = None, reference_year: int | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Events of one log as Arrow tables (the ingest path); ``errors`` rows for what it skipped.
    ``reference_year`` is the year of the log's last line (default: from the file's mtime)."""
    for table, rows in _read(path, display, host, reference_year, batch_rows, per_line=False):
        yield (table, auth_log_lines.to_arrow(rows, display)) if table == "events" else (table, rows)


def parse_file(path: Path, display: str, host: str | None = None, reference_year: int | None = None,
               batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """``parse_arrow`` with events as dict rows, for callers that want Python values."""
    for table, rows in parse_arrow(path, display, host, reference_year, batch_rows):
        yield table, rows.to_pylist() if not isinstance(rows, list) else rows


def parse_file_per_line(path: Path, display: str, host: str | None = None,
                        reference_year: int | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """The same rows as ``parse_file``, read one line at a time: the reference the block path
    is tested against, and the path every line it does not recognise takes."""
    for table, rows in _read(path, display, host, reference_year, batch_rows, per_line=True):
        yield table, auth_log_lines.to_dicts(rows, display) if table == "events" else rows


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from parse_arrow(ctx.path, ctx.display, host_id(ctx.host))


SOURCE = Source("auth_log", sniff, parse)
