"""Linux audit log (``/var/log/audit/audit.log*``, ``ausearch --raw``) → ``events``.

The audit log is where the miner's launch is: every audited ``execve`` with its full argv,
parent pid, uid/auid, session and working directory; plus logins, account changes and the
hits of file watches (``-w /etc/crontab -p wa -k cron``). Raw and enriched (GS-separated
interpreted fields) formats, ``node=`` prefixes from remote logging, plain or gzip'd, and
``ausearch`` output (whole events between ``----`` lines, no EOE) are read; ``auditd_records``
takes the lines apart, ``auditd_events`` makes the rows.

Records → events. The records of one event share ``(node, time, serial)``. They are adjacent
but may interleave with another event's, so a few events stay open at once: an event is read
when its ``EOE`` arrives, at once when it is a user-space message (one record), or when it
has stayed open for ``MAX_SPAN`` lines or ``MAX_OPEN`` others are waiting (memory stays flat).

Rows (CONTRIBUTING.md vocabulary); every row has ``program`` ``auditd``, ``record_id`` = the
serial, ``source_line`` = the event's first record, ``ts`` naive UTC, ``host`` = the user's
``--host`` else ``node=``; ``data`` has ``type`` (the record the row is made of) and
``audit_id`` (``SECONDS.MILLIS:SERIAL``, what ``ausearch -a`` takes):

    SYSCALL execve/execveat       process_start: process = exe, command = EXECVE argv (else
                                  PROCTITLE), pid, user = UID name (enriched) or uid; data
                                  parent_pid, parent_process/parent_command (the parent's
                                  last execve in this log), auid, ses, tty, cwd, key, comm
    SYSCALL connect + SOCKADDR    network_connection: dst_ip, dst_port, status success /
                                  in_progress (non-blocking) / failed
    other SYSCALL with a key      file_watch when PATH records name files (data.path, data.paths
                                  with nametype), else audit_syscall; status success/failed
    USER_LOGIN                    logon_success / logon_failure (user = acct, src_ip = addr;
                                  status invalid_user for "(invalid user)")
    USER_AUTH, USER_ACCT failed   pam_auth_failure (PAM's verdict on one step)
    USER_START / USER_END         session_opened / session_closed; from cron: one cron_run per
                                  job (its other PAM records give no row: crond would flood);
                                  su's: su; sudo's and systemd's: none (USER_CMD has sudo's)
    USER_CMD                      sudo (command = cmd, status allowed/failed)
    ADD_USER, DEL_USER            user_added, user_deleted
    USER_MGMT add-user-to-group   group_member_added (data.group)
    USER_CHAUTHTOK                password_changed
Other records (CRED_*, LOGIN, AVC, SYSCALLs without a key but connect, ...) give no row.

Logons are not sshd's rows. sshd writes one USER_LOGIN per failed step (OpenSSH's
audit-linux.c), including the "none" probe and a notice for an unknown user, and PAM adds
USER_AUTH: their counts are not auth.log's ``Failed password`` lines. With ``program``
``auditd`` (also what Sigma's ``service: auditd`` selects) the SSH brute-force rules, which
count ``program LIKE 'sshd%'``, keep counting each attempt once from auth.log/secure when a
host's audit log is ingested too; ``data.exe`` still says ``/usr/sbin/sshd``. Those rules read
the case's ``ssh_logons`` view, which takes a host's audit-log logons by sshd only when none
of its sshd lines are in the case (a wiped auth.log), so each attempt is counted once.

Bad input: a file that does not start as text raises ``SourceError``; lines that are not
audit records, NUL-bearing or over-long lines, records cut short, hex that does not decode and
records of an event already read are counted in one ``errors`` row naming the first few, and
the rest of the file is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from deminer.sources import auditd_records as ar
from deminer.sources import textlog
from deminer.sources.auditd_events import Event, EventRows, Key, Row
from deminer.sources.auditd_records import Decoder
from deminer.sources.base import (
    Batch,
    Batcher,
    Source,
    SourceContext,
    SourceError,
    host_id,
    looks_binary,
)
from deminer.sources.netlog import Problems, read_lines

MAX_OPEN = 256            # events waiting for more records
MAX_SPAN = 2000           # lines an event may wait for its records before it is read as is
MAX_RECORDS = 512         # records one event may have (a hostile log could repeat one header)
MAX_CLOSED = 4096         # events read, remembered to spot their stragglers
BATCH_ROWS = 10_000       # rows carry up to 4 KiB of raw records and long argvs: smaller batches

_START = re.compile(r"(?:node=\S* )?type=[A-Z0-9_]+ msg=audit\(")
_INTERPRETED = re.compile(r"(?:node=\S* )?type=\S+ msg=audit\(\d\d/\d\d/\d{2,4} ")
_LOG_NAME = re.compile(r"^audit\.log(\.\d+)?(\.gz)?$")


def _separator(line: str) -> bool:
    return line.startswith(("----", "time->"))


def sniff(path: Path, head: bytes) -> bool:
    """Most of the first lines are audit records (``ausearch`` separators aside); or a binary
    file named like an audit log, so that it gets a clear error."""
    text = textlog.head_text(head)
    if text is None:
        return bool(_LOG_NAME.match(path.name))
    sample = [ln for ln in text.split("\n") if ln.strip() and not _separator(ln)][:20]
    hits = sum(1 for ln in sample if _START.match(ln))
    # Half, not all: a copied log may start mid-line, and damage or junk may follow.
    return hits > 0 and hits * 2 >= len(sample)


class _Reader:
    """One file's records → event rows; what it could not read goes to ``problems``."""

    def __init__(self, display: str, host: str | None) -> None:
        self.problems = Problems()
        self.pending: dict[Key, Event] = {}
        self.closed: dict[Key, None] = {}
        self.mapper = EventRows(display, host)

    # -- grouping ----------------------------------------------------------------------------
    def line(self, lineno: int, text: str) -> list[Row]:
        m = ar.HEADER.match(text)
        if m is None:
            if text.startswith("----"):       # ausearch prints whole events between these
                return self.finish()
            if text.strip() and not text.startswith("time->"):
                self.problems.add(lineno, self._why(text))
            return []
        node, kind, seconds, fraction, serial = m.groups()
        key: Key = (node, seconds, fraction, serial)
        if kind == "EOE":
            done = self.pending.pop(key, None)
            return self._read(done) if done is not None else []
        event = self.pending.get(key)
        if event is None:
            if key in self.closed:
                self.problems.add(lineno, f"record of event {seconds}.{fraction}:{serial} after that "
                                          "event was read (too far from its other records)")
                return []
            event = Event(key, lineno)
            if "msg='" in text[m.end():]:              # a user-space message: one record, complete
                event.records.append(ar.parse_record(text, lineno, m))
                return self._read(event)
            self.pending[key] = event
        elif len(event.records) >= MAX_RECORDS:
            self.problems.add(lineno, f"event {seconds}.{fraction}:{serial} has over {MAX_RECORDS} records")
            return []
        event.records.append(ar.parse_record(text, lineno, m))
        rows: list[Row] = []
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if len(self.pending) <= MAX_OPEN and lineno - oldest.first_line <= MAX_SPAN:
                break
            rows += self._read(self.pending.pop(oldest.key))
        return rows

    def finish(self) -> list[Row]:
        rows: list[Row] = []
        for event in list(self.pending.values()):
            rows += self._read(event)
        self.pending.clear()
        return rows

    @staticmethod
    def _why(text: str) -> str:
        if _INTERPRETED.match(text):
            return "an interpreted record (ausearch -i, local time) is not read: export with ausearch --raw"
        return f"not an audit record: {text[:60]!r}"

    def _read(self, event: Event) -> list[Row]:
        self.closed[event.key] = None
        if len(self.closed) > MAX_CLOSED:
            del self.closed[next(iter(self.closed))]
        decoder = Decoder()
        try:
            rows = self.mapper.rows(event, decoder)
        except (ValueError, OverflowError, IndexError) as exc:
            self.problems.add(event.first_line, f"unreadable event ({type(exc).__name__}: {exc})")
            return []
        if decoder.bad:
            self.problems.add(event.first_line, decoder.bad)
        cut = next((r.line for r in event.records if r.cut), None)
        if cut is not None:
            self.problems.add(cut, "record cut short (a quoted value never ends)")
        return rows


def _check_text(path: Path) -> None:
    """``SourceError`` unless the file starts as text (junk further on is counted by line)."""
    head = textlog.read_head(path)
    start = head.split(b"\n", 1)[0]
    if head.strip() and looks_binary(start[:4096] or head[:4096]):
        raise SourceError("binary content, not an audit log")


def parse_file(path: Path, display: str, host: str | None = None,
               batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """``events`` batches of one audit log, then an ``errors`` row for what was skipped."""
    _check_text(path)
    reader = _Reader(display, host_id(host))
    batcher = Batcher(batch_rows)
    for lineno, text in read_lines(path, reader.problems):
        for row in reader.line(lineno, text):
            if (full := batcher.add("events", row)) is not None:
                yield full
    for row in reader.finish():
        if (full := batcher.add("events", row)) is not None:
            yield full
    yield from batcher.flush()
    ctx = SourceContext(path=path, display=display, host=host, workdir=path.parent)
    yield from reader.problems.batch(ctx, "audit log")


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from parse_file(ctx.path, ctx.display, ctx.host, batch_rows=BATCH_ROWS)


SOURCE = Source("auditd", sniff, parse)
