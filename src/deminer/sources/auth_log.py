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

Fast on big files: whole-line blocks of 4 MiB are decoded at once, the program tag picks a
handler with one dict lookup, and handlers test a prefix before they run a regex.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deminer.sources import syslog_time as st
from deminer.sources import textlog
from deminer.sources.base import BATCH_ROWS, Batch, Source, SourceContext, host_id

RAW_CAP = 2048            # ``raw`` keeps this many characters of a line
Row = dict[str, Any]

# -- the message grammar --------------------------------------------------------------------
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
_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]?$")
_LAST_REPEATED = re.compile(r"last message repeated (\d+) times?")
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


def _sshd(msg: str) -> Row | None:
    c = msg[:3]
    if c == "Fai":
        m = _FAILED.match(msg)
        if m is None or m.group(1) == "none":   # "none" is a probe, not a credential
            return None
        method, invalid, user, ip, port = m.groups()
        status = "invalid_user" if invalid else _FAIL_STATUS.get(method, "failed_" + method)
        return {"event": "logon_failure", "user": user, "src_ip": ip, "src_port": int(port),
                "status": status, "data": _method(method)}
    if c == "Acc":
        m = _ACCEPTED.match(msg)
        if m is None:
            return None
        method, user, ip, port, key_type, fingerprint = m.groups()
        data: dict[str, str] = {"method": method}
        if fingerprint:
            data.update(key_type=key_type, fingerprint=fingerprint)
        return {"event": "logon_success", "user": user, "src_ip": ip, "src_port": int(port),
                "status": method.split("/")[0], "data": json.dumps(data)}
    if c == "Inv":
        m = _INVALID.match(msg)
        if m is None:
            return None
        return {"event": "invalid_user", "user": m.group(1), "src_ip": m.group(2),
                "src_port": int(m.group(3)) if m.group(3) else None, "status": "invalid_user"}
    if c == "Con":
        m = _CLOSED.match(msg)
        if m is None:
            return None
        return {"event": "disconnect", "user": m.group(1), "src_ip": m.group(2),
                "src_port": int(m.group(3)) if m.group(3) else None,
                "status": "preauth" if msg.endswith("[preauth]") else None}
    if c == "Dis":
        m = _DISCONNECTED.match(msg)
        if m is None:
            return None
        return {"event": "disconnect", "user": m.group(1), "src_ip": m.group(2), "src_port": int(m.group(3)),
                "status": "preauth" if msg.endswith("[preauth]") else None}
    if c == "Rec":
        m = _RECEIVED.match(msg)
        if m is None:
            return None
        return {"event": "disconnect", "src_ip": m.group(1),
                "src_port": int(m.group(2)) if m.group(2) else None,
                "status": "preauth" if msg.endswith("[preauth]") else None,
                "data": json.dumps({"reason": m.group(3)})}
    if c == "pam":
        if msg.startswith("pam_unix(sshd:auth): authentication failure;"):
            return _pam_failure(msg, 1)
        m = _SESSION.match(msg)
        if m is None:
            return None
        return {"event": "session_" + m.group(1), "user": m.group(2)}
    if c == "PAM":
        m = _PAM_MORE.match(msg)
        return _pam_failure(msg, int(m.group(1))) if m else None
    if "maximum authentication attempts" in msg:
        m = _MAXAUTH.search(msg)
        if m is None:
            return None
        return {"event": "auth_max_attempts", "user": m.group(2), "src_ip": m.group(3),
                "src_port": int(m.group(4)), "status": "invalid_user" if m.group(1) else None}
    return None


def _pam_failure(msg: str, count: int) -> Row:
    rhost = _RHOST.search(msg)
    user = _PAM_USER.search(msg)
    host = rhost.group(1) if rhost else None
    ip = _ip(host)
    row: Row = {"event": "pam_auth_failure", "user": user.group(1) if user else None, "src_ip": ip,
                "status": "pam_failure", "count": count}
    if host and not ip:
        row["data"] = json.dumps({"rhost": host})
    return row


def _sudo(msg: str) -> Row | None:
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
    return {"event": "sudo", "user": user.strip(), "command": rest[cmd_at + 8:] if cmd_at >= 0 else None,
            "status": status, "data": json.dumps(data, sort_keys=True)}


def _su(msg: str) -> Row | None:
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
    return {"event": "su", "user": target, "status": "success" if ok == "Successful" else "failure",
            "data": json.dumps({"by": by, "tty": tty} if tty else {"by": by})}


def _account(msg: str) -> Row | None:
    if msg.startswith("new user: "):
        m = _NEW_USER.match(msg)
        if m is None:
            return None
        name, uid, gid, home, shell = m.groups()
        return {"event": "user_added", "user": name,
                "data": json.dumps({"uid": int(uid), "gid": int(gid), "home": home, "shell": shell})}
    m2 = _ADD_GROUP.match(msg)      # "add 'u' to shadow group 'g'" repeats it: not matched
    if m2 is None:
        return None
    return {"event": "group_member_added", "user": m2.group(1), "data": json.dumps({"group": m2.group(2)})}


def _cron(msg: str) -> Row | None:
    m = _CRON_CMD.match(msg)
    if m is None:
        return None
    return {"event": "cron_run", "user": m.group(1), "command": m.group(2)}


HANDLERS: dict[str, Callable[[str], Row | None]] = {
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


def parse_file(path: Path, display: str, host: str | None = None,
               reference_year: int | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Events of one log; ``reference_year`` is the year of its last line (default: from mtime)."""
    head = textlog.text_head(path, "text log")
    if reference_year is not None:
        reference, slack = st.reference_from_year(reference_year), dt.timedelta(0)
    else:
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
        reference, slack = mtime, st.ZONE_SLACK
    start_year = reference.year
    if st.RFC3164_START.search(head):
        scan = st.MonthScan()
        with st.open_log(path) as fh:
            for block in st.Blocks(fh):
                scan.feed(block)
        start_year = scan.start_year(reference, slack)
    with st.open_log(path) as fh:
        yield from _parse_blocks(st.Blocks(fh), display, host, start_year, batch_rows)


def _parse_blocks(blocks: st.Blocks, display: str, ctx_host: str | None, start_year: int,
                  batch_rows: int) -> Iterator[Batch]:
    rows: list[Row] = []
    handlers, months, rx_start = HANDLERS, st.MONTHS, st.RFC3164_START_TEXT
    tracker = st.YearTracker(start_year)
    cuts = textlog.CutLines(blocks)
    lineno, bad_json, first_bad = 0, 0, 0
    last_prefix, last_ts, last_month = "\0", None, 0     # "\0": matches no line
    host_name, host = "", ctx_host
    prev_row: Row | None = None
    ts: dt.datetime | None
    for block in blocks:
        for line in block.decode("utf-8", "backslashreplace").split("\n"):
            lineno += 1
            if not line:
                continue
            if line[-1] == "\r":
                line = line[:-1]
                if not line:
                    continue
            if len(line) > st.MAX_LINE:
                line = cuts.clip(line, lineno)
            if line[0] == "{":
                parsed = st.journald_record(line)
                if parsed is None:
                    bad_json += 1
                    first_bad = first_bad or lineno
                    continue
                ts, hostname, program, pid, msg = parsed
                handler = handlers.get(program)
                if handler is None:
                    continue
            else:
                # Offsets into the line instead of slices: this loop runs once per line.
                if line.startswith(last_prefix):      # most lines share their second with the last
                    ts, text, start = last_ts, line, 16
                elif (m := rx_start.match(line)) is not None:
                    month = months[m.group(1)]
                    year = tracker.feed(month) if month != last_month else tracker.year
                    last_month, last_prefix = month, line[:16]
                    ts = last_ts = st.rfc3164(last_prefix, year)
                    text, start = line, 16
                else:
                    iso = st.iso_header(line)
                    if iso is None:
                        continue
                    (ts, text), start = iso, 0
                sp = text.find(" ", start)
                colon = text.find(": ", sp + 1)
                if sp < 0 or colon < 0 or text.find(" ", sp + 1, colon) >= 0:
                    # BSD syslogd's "last message repeated N times" names no program: it
                    # repeats the line just before it.
                    rep = _LAST_REPEATED.match(text, sp + 1)
                    if rep and prev_row is not None and prev_row["source_line"] == lineno - 1:
                        prev_row = {**prev_row, "count": int(rep.group(1)), "ts": ts,
                                    "source_line": lineno, "raw": line[:RAW_CAP]}
                        rows.append(prev_row)
                    continue
                # the tag is "prog[pid]" or "prog"; look the program up before anything else
                at = text.find("[", sp + 1, colon)
                bracket = at > 0 and text[colon - 1] == "]"
                program = text[sp + 1:at] if bracket else text[sp + 1:colon]
                handler = handlers.get(program)
                if handler is None:
                    continue
                pid_text = text[at + 1:colon - 1] if bracket else ""
                pid = int(pid_text) if pid_text.isdecimal() else None
                hostname = text[start:sp]
                msg = text[colon + 2:]
            count = 1
            if msg.startswith("message repeated "):
                rep = _REPEATED.match(msg)
                if rep:
                    count, msg = int(rep.group(1)), rep.group(2)
            row = handler(msg)
            if row is None:
                continue
            if ctx_host is None and hostname != host_name:
                host_name, host = hostname, host_id(hostname) if hostname != "-" else None
            row["host"], row["ts"], row["source"], row["source_line"] = host, ts, display, lineno
            row["program"], row["pid"] = program, pid
            row["raw"] = line if len(line) <= RAW_CAP else line[:RAW_CAP]
            if count != 1 or "count" not in row:
                row["count"] = count
            prev_row = row
            rows.append(row)
            if len(rows) >= batch_rows:
                yield "events", rows
                rows = []
    if rows:
        yield "events", rows
    problems = [cuts.problem(f"{st.MAX_LINE} bytes")]
    if bad_json:
        problems.append(f"{bad_json} journald JSON line(s) could not be read (first at line "
                        f"{first_bad}); the other lines were kept")
    problems.append(textlog.truncation_problem(blocks, lineno))
    if any(problems):
        yield "errors", [textlog.error_row(display, ctx_host, p) for p in problems if p]


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from parse_file(ctx.path, ctx.display, host_id(ctx.host))


SOURCE = Source("auth_log", sniff, parse)
