"""Audit events → ``events`` rows: what each kind of event means (``auditd.py`` has the table).

``EventRows`` turns one event (the records sharing a serial, see ``auditd_records``) into zero
or more rows. It remembers, per node and pid, the last program each process exec'd (to name
the parent of later execs) and the account PAM named for it (sshd's USER_LOGIN names the user
by uid only); both memories are bounded.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deminer.sources import auditd_records as ar
from deminer.sources.auditd_records import Decoder, Record, ident, number
from deminer.sources.base import host_id
from deminer.sources.netlog import json_text

PROGRAM = "auditd"
RAW_CAP = 4096            # characters of an event's records kept in ``raw``
COMMAND_CAP = 1 << 16     # an argv can be megabytes (base64 payloads); rules need the start
MAX_REMEMBERED = 1 << 16  # processes whose last exec (or account) is kept to name parents
EPOCH = dt.datetime(1970, 1, 1)
EINPROGRESS = -115

Row = dict[str, Any]
Key = tuple[str | None, str, str, str]          # node, seconds, fraction, serial
_PLACEHOLDERS = frozenset({"?", "(unknown)", "(unknown user)", "(invalid user)", "(invalid)"})
_CRON = frozenset({"cron", "crond", "anacron", "atd"})
_QUIET_SESSIONS = frozenset({"sudo", "systemd", "systemd-executor", "pkexec", "runuser"})


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    """``table[key] = value``, as the newest entry, dropping the oldest past the bound."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_REMEMBERED:
        del table[next(iter(table))]


def _ip(text: str | None) -> str | None:
    if not text or text in ar.NO_VALUE:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _base_name(path: str | None) -> str:
    return posixpath.basename(path or "")


@dataclass(slots=True)
class Event:
    """The records of one audit event, in the order they were read."""

    key: Key
    first_line: int
    records: list[Record] = field(default_factory=list)

    def find(self, kind: str) -> Record | None:
        return next((r for r in self.records if r.type == kind), None)

    def all(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.type == kind]


class EventRows:
    """Rows of one file's events; ``rows(event, decoder)`` for each event, in file order."""

    def __init__(self, display: str, host: str | None) -> None:
        self.display, self.host = display, host
        self.execs: dict[tuple[str | None, int], tuple[str | None, str]] = {}   # (node, pid) → exe, argv
        self.accounts: dict[tuple[str | None, int], str] = {}                 # (node, pid) → acct

    def rows(self, event: Event, dec: Decoder) -> list[Row]:
        syscall = event.find("SYSCALL")
        if syscall is not None:
            return self._syscall(event, syscall, dec)
        first = event.records[0]
        handler = _USER_MESSAGES.get(first.type)
        return handler(self, event, first, dec) if handler is not None else []

    # -- rows -------------------------------------------------------------------------------
    def _row(self, event: Event, record: Record, name: str, data: Row) -> Row:
        node, seconds, fraction, serial = event.key
        ts = EPOCH + dt.timedelta(seconds=int(seconds), microseconds=int((fraction + "00000")[:6]))
        raw = "\n".join(r.text for r in event.records)
        data = {"type": record.type, "audit_id": f"{seconds}.{fraction}:{serial}", "node": node, **data}
        return {"host": self.host or host_id(node), "ts": ts, "source": self.display,
                "source_line": event.first_line, "program": PROGRAM, "event": name,
                "record_id": number(serial), "raw": raw[:RAW_CAP], "data": json_text(data)}

    def _who(self, record: Record, data: Row) -> str | None:
        """The uid's name (enriched ``UID``) or number; auid and ses into ``data``."""
        f, names = record.fields, record.interpreted
        uid, auid = ident(f.get("uid")), ident(f.get("auid"))
        data.update(uid=uid, auid=auid, ses=ident(f.get("ses")))
        if auid is not None and names.get("AUID") not in (None, "unset"):
            data["auid_user"] = names["AUID"]
        return names.get("UID") or (str(uid) if uid is not None else None)

    def _syscall(self, event: Event, sc: Record, dec: Decoder) -> list[Row]:
        f, node = sc.fields, event.key[0]
        call = ar.syscall_name(sc)
        pid, ppid = number(f.get("pid")), number(f.get("ppid"))
        exe = dec.text(f.get("exe"), "exe")
        cwd_record = event.find("CWD")
        cwd = dec.text(cwd_record.fields.get("cwd"), "cwd") if cwd_record else None
        keys = dec.text(f.get("key"), "key")
        proctitle = event.find("PROCTITLE")
        title = dec.argv(proctitle.fields.get("proctitle"), "proctitle") if proctitle else []
        tty = f.get("tty")
        data: Row = {"syscall": call, "arch": ar.arch_name(sc), "success": f.get("success"),
                     "exit": _signed(f.get("exit")), "parent_pid": ppid, "cwd": cwd,
                     "key": keys.replace("\x01", ",") if keys else None,
                     "tty": None if tty in ar.NO_VALUE else tty, "comm": dec.text(f.get("comm"), "comm")}
        parent = self.execs.get((node, ppid)) if ppid is not None else None
        if parent is not None:
            data["parent_process"], data["parent_command"] = parent
        user = self._who(sc, data)
        euid = ident(f.get("euid"))
        if euid is not None and euid != data["uid"]:
            data["euid"] = euid
        success = f.get("success") != "no"
        if call in ("execve", "execveat") and success:
            argv, argc = dec.execve(event.all("EXECVE"))
            if argc is not None and argc > len(argv):
                data["args_missing"] = argc - len(argv)
            command = " ".join(argv or title)[:COMMAND_CAP]
            if pid is not None:
                _remember(self.execs, (node, pid), (exe, command[:2000]))
            row = self._row(event, sc, "process_start", data)
            row.update(process=exe, pid=pid, user=user, command=command or None)
            return [row]
        status = "success" if success else "in_progress" if data["exit"] == EINPROGRESS else "failed"
        base = {"process": exe, "pid": pid, "user": user, "status": status,
                "command": " ".join(title)[:COMMAND_CAP] or None}
        if call == "connect":
            peer = ar.sockaddr(_field(event.find("SOCKADDR"), "saddr"))
            if peer is not None and peer[0] in ("inet", "inet6"):
                row = self._row(event, sc, "network_connection", data)
                row.update(base, dst_ip=peer[1], dst_port=peer[2])
                return [row]
        if not data["key"]:
            return []                 # a record without a rule's key: LOGIN, AVC, … context
        paths = self._paths(event, dec, cwd)
        if paths:
            main = next((p for p in paths if p["nametype"] != "PARENT"), paths[0])
            data.update(path=main["name"], paths=paths)
        row = self._row(event, sc, "file_watch" if paths else "audit_syscall", data)
        row.update(base)
        return [row]

    @staticmethod
    def _paths(event: Event, dec: Decoder, cwd: str | None) -> list[Row]:
        out = []
        for rec in sorted(event.all("PATH"), key=lambda r: number(r.fields.get("item")) or 0):
            name = dec.text(rec.fields.get("name"), "name")
            if name is None:
                continue
            if not name.startswith("/") and cwd:
                name = posixpath.join(cwd, name)       # relative to the caller's cwd, as opened
            out.append({"name": name, "nametype": rec.fields.get("nametype")})
        return out

    # -- user-space messages ----------------------------------------------------------------
    def _message(self, event: Event, rec: Record, dec: Decoder, name: str, data: Row,
                 **columns: Any) -> list[Row]:
        """The row of a user-space message: who wrote it (``process``, ``pid``), from where
        (``src_ip`` = ``addr``, else a ``hostname`` that is an address), and ``data``."""
        f = rec.fields
        # hostname, addr and terminal are written as they are, never in hex
        terminal, hostname = f.get("terminal"), ar.unquote(f.get("hostname") or "")
        base: Row = {"op": ar.unquote(f["op"]) if "op" in f else None, "res": f.get("res"),
                     "exe": dec.text(f.get("exe"), "exe"),
                     "terminal": None if terminal in ar.NO_VALUE else terminal,
                     "hostname": None if hostname in ar.NO_VALUE else hostname}
        self._who(rec, base)
        row = self._row(event, rec, name, {**base, **data})
        row.update(process=base["exe"], pid=number(f.get("pid")),
                   src_ip=_ip(f.get("addr")) or _ip(hostname), **columns)
        return [row]

    def _account(self, event: Event, rec: Record, dec: Decoder) -> tuple[str | None, bool]:
        """The account a message is about and whether it is a placeholder (unknown user):
        ``acct``, else ``id`` by its enriched name, the writer's earlier acct, or number."""
        acct = dec.text(rec.fields.get("acct"), "acct")
        if acct is not None:
            return (None, True) if acct in _PLACEHOLDERS else (acct, False)
        uid = ident(rec.fields.get("id"))
        pid = number(rec.fields.get("pid"))
        named = rec.interpreted.get("ID") or (self.accounts.get((event.key[0], pid)) if pid else None)
        return named or (str(uid) if uid is not None else None), False

    def _note_account(self, event: Event, rec: Record, dec: Decoder) -> str | None:
        """The account of a PAM message, remembered for its writer's later USER_LOGIN (sshd
        writes ``id=UID`` there, not the name)."""
        user, _ = self._account(event, rec, dec)
        pid = number(rec.fields.get("pid"))
        if user and pid is not None:
            _remember(self.accounts, (event.key[0], pid), user)
        return user

    def _login(self, event: Event, rec: Record, dec: Decoder) -> list[Row]:
        ok = _result(rec)
        if ok is None:
            return []
        user, placeholder = self._account(event, rec, dec)
        return self._message(event, rec, dec, "logon_success" if ok else "logon_failure", {},
                             user=user, status="invalid_user" if placeholder and not ok else None)

    def _pam(self, event: Event, rec: Record, dec: Decoder) -> list[Row]:
        user = self._note_account(event, rec, dec)
        if rec.type not in ("USER_AUTH", "USER_ACCT") or _result(rec) is not False:
            return []
        return self._message(event, rec, dec, "pam_auth_failure", {}, user=user,
                             status="pam_failure" if rec.type == "USER_AUTH" else "account_denied")

    def _session(self, event: Event, rec: Record, dec: Decoder) -> list[Row]:
        user = self._note_account(event, rec, dec)
        if not _result(rec):
            return []
        start = rec.type == "USER_START"
        program = _base_name(dec.text(rec.fields.get("exe"), "exe"))
        if program in _CRON or rec.fields.get("terminal") == "cron":
            return self._message(event, rec, dec, "cron_run", {}, user=user) if start else []
        if program == "su":
            if not start:
                return []
            return self._message(event, rec, dec, "su", {"by": _uid_name(rec)}, user=user, status="success")
        if program in _QUIET_SESSIONS:
            return []
        return self._message(event, rec, dec, "session_opened" if start else "session_closed", {}, user=user)

    def _sudo(self, event: Event, rec: Record, dec: Decoder) -> list[Row]:
        command = (dec.text(rec.fields.get("cmd"), "cmd") or "")[:COMMAND_CAP] or None
        ok = _result(rec)
        if ok is None:
            return []
        return self._message(event, rec, dec, "sudo", {"cwd": dec.text(rec.fields.get("cwd"), "cwd")},
                             user=_uid_name(rec), command=command,
                             status="allowed" if ok else "failed")

    def _account_change(self, event: Event, rec: Record, dec: Decoder) -> list[Row]:
        op = ar.unquote(rec.fields.get("op", "")).lower()
        if rec.type == "ADD_USER":
            name = "user_added" if op in ("add-user", "adding user") else None
        elif rec.type == "DEL_USER":
            name = "user_deleted" if op in ("delete-user", "deleting user") else None
        elif rec.type == "USER_CHAUTHTOK":
            name = "password_changed"
        else:                            # USER_MGMT / GRP_MGMT: only additions to a group count
            grouped = op.startswith("add") and "group" in op and "shadow" not in op
            name = "group_member_added" if grouped and "grp" in rec.fields else None
        ok = _result(rec)
        if name is None or ok is None:
            return []
        user, _ = self._account(event, rec, dec)
        data = {"group": dec.text(rec.fields.get("grp"), "grp"), "id": ident(rec.fields.get("id"))}
        return self._message(event, rec, dec, name, data, user=user,
                             status="success" if ok else "failed")


def _result(rec: Record) -> bool | None:
    """A message's ``res``: True, False, or None when it has none (a record cut short)."""
    res = rec.fields.get("res")
    return None if res is None else res in ("success", "1", "yes")


def _uid_name(rec: Record) -> str | None:
    """The acting user of a message: the enriched ``UID`` name, else the uid number."""
    uid = ident(rec.fields.get("uid"))
    return rec.interpreted.get("UID") or (str(uid) if uid is not None else None)


def _field(record: Record | None, name: str) -> str | None:
    return record.fields.get(name) if record is not None else None


def _signed(value: str | None) -> int | None:
    if value is None or len(value) > 20:
        return None
    try:
        return int(value)
    except ValueError:
        return None


_USER_MESSAGES: dict[str, Callable[[EventRows, Event, Record, Decoder], list[Row]]] = {
    "USER_LOGIN": EventRows._login,
    "USER_AUTH": EventRows._pam, "USER_ACCT": EventRows._pam, "CRED_ACQ": EventRows._pam,
    "CRED_REFR": EventRows._pam, "CRED_DISP": EventRows._pam,
    "USER_START": EventRows._session, "USER_END": EventRows._session,
    "USER_CMD": EventRows._sudo,
    "ADD_USER": EventRows._account_change, "DEL_USER": EventRows._account_change,
    "USER_MGMT": EventRows._account_change, "GRP_MGMT": EventRows._account_change,
    "USER_CHAUTHTOK": EventRows._account_change,
}
