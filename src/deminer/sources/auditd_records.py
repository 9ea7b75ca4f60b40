"""The line grammar of the Linux audit log: one record per line, taken apart into fields.

auditd writes (and ``ausearch --raw`` prints) one record per line::

    [node=NAME ]type=TYPE msg=audit(SECONDS.MILLIS:SERIAL): name=value name="text" name=HEX ...

Records with the same ``(node, SECONDS.MILLIS, SERIAL)`` belong to one event (``auditd.py``
groups them). Values come in four shapes, and which one a field uses says how to read it:

- numbers and words, unquoted (``pid=4242``, ``success=yes``, ``arch=c000003e``);
- text the kernel or a program cannot vouch for (``comm``, ``exe``, ``cwd``, ``name``,
  ``proctitle``, ``acct``, ``cmd``, ``key``, ``grp`` and EXECVE's ``aN``) in double quotes when
  it is plain, or as upper-case hex when it holds a space, a quote, a control character or a
  byte over 0x7e (``proctitle`` is hex whenever argv has more than one word: NUL-separated);
- ``?``, ``(null)`` or ``(none)`` for "no value";
- a user-space message's own fields inside ``msg='…'`` (``op=login acct="root" … res=failed``),
  read here as fields of the same record.

The *enriched* format (``log_format = ENRICHED``, the default since audit 3) appends to each
line a GS byte (0x1d) and the interpreted values: ``AUID="alice" UID="root" SYSCALL=execve``;
they are kept apart (``Record.interpreted``) since the raw fields stay the facts.
"""

from __future__ import annotations

import ipaddress
import re

HEADER = re.compile(r"(?:node=(\S*) )?type=(\S+) msg=audit\((\d{1,12})\.(\d{1,9}):(\d{1,20})\): ?")
# name=value; a quoted value runs to its closing quote or, on a line cut short, to the end.
_FIELD = re.compile(r"""([^\s=]+)=("[^"]*"?|'[^']*'?|\S*)""")
# shadow-utils before 4.6 wrote ``op=adding user id=1002``: an unquoted op of several words.
_OP = re.compile(r"(?:^|\s)op=([^\s'\"=]+(?: [^\s'\"=]+)*)(?= [^\s=]+=|'|$)")
_HEX = re.compile(r"[0-9A-Fa-f]*")
_SPLIT_ARG = re.compile(r"a(\d{1,6})\[(\d{1,6})\]")
_WHOLE_ARG = re.compile(r"a(\d{1,6})")
NO_VALUE = frozenset({"?", "(null)", "(none)", ""})
UNSET = 4294967295               # auid/ses of a process no login ever tagged ((uint32)-1)
GS = "\x1d"

# Audit arch values → (name, execve, execveat, connect) syscall numbers.
ARCHES: dict[str, tuple[str, int, int, int]] = {
    "c000003e": ("x86_64", 59, 322, 42),
    "c00000b7": ("aarch64", 221, 281, 203),
    "40000003": ("i386", 11, 358, 362),
    "c00000f3": ("riscv64", 221, 281, 203),
    "80000016": ("s390x", 11, 354, 362),
    "c0000015": ("ppc64le", 11, 362, 328),
}


class Record:
    """One line: its type, where it is, and its fields (values as written, quotes kept).

    Fields are taken apart on first use: most records of a busy log (an exec's PATH and
    PROCTITLE records, PAM's bookkeeping) are never looked at."""

    __slots__ = ("_body", "_enriched", "_fields", "_interpreted", "line", "text", "type")

    def __init__(self, kind: str, line: int, text: str, body: str, enriched: str) -> None:
        self.type, self.line, self.text = kind, line, text
        self._body, self._enriched = body, enriched
        self._fields: dict[str, str] | None = None
        self._interpreted: dict[str, str] | None = None

    @property
    def fields(self) -> dict[str, str]:
        if self._fields is None:
            self._fields = parse_fields(self._body)
        return self._fields

    @property
    def interpreted(self) -> dict[str, str]:
        """The enriched part (after the GS byte), names in upper case, values unquoted."""
        if self._interpreted is None:
            self._interpreted = ({k.upper(): unquote(v) for k, v in parse_fields(self._enriched).items()}
                                 if self._enriched else {})
        return self._interpreted

    @property
    def cut(self) -> bool:
        """A quoted value has no closing quote: the line was cut short. (auditd writes text
        holding a quote in hex, so quotes come in pairs, and a message ends with its ``'``.)"""
        body = self._body.rstrip()
        return body.count('"') % 2 == 1 or ("msg='" in body and not body.endswith("'"))


def parse_fields(body: str) -> dict[str, str]:
    """The ``name=value`` pairs of a record body, a user-space ``msg='…'``'s fields merged in."""
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(body):
        if name == "msg" and value[:1] == "'":
            inner = value[1:-1] if len(value) > 1 and value[-1] == "'" else value[1:]
            for key, val in parse_fields(inner).items():
                fields.setdefault(key, val)
            continue
        fields.setdefault(name, value)      # the first wins: a later copy cannot override it
    if "op" in fields and fields["op"][:1] not in ('"', "'") and (op := _OP.search(body)):
        fields["op"] = op.group(1)
    return fields


def parse_record(line: str, number: int, match: re.Match[str]) -> Record:
    body, _, enriched = line[match.end():].partition(GS)
    return Record(match.group(2), number, line, body, enriched)


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value.lstrip("\"'")


class Decoder:
    """Reads untrusted-text fields, remembering the first value that was neither quoted nor
    hex that decodes (the reader counts those as problems; the text is kept as written)."""

    def __init__(self) -> None:
        self.bad: str | None = None

    def raw_bytes(self, value: str | None, name: str) -> bytes | None:
        if value is None or value in NO_VALUE:
            return None
        if value[0] == '"':
            return unquote(value).encode("utf-8", "surrogateescape")
        if len(value) % 2 == 0 and _HEX.fullmatch(value):
            return bytes.fromhex(value)
        if _HEX.fullmatch(value) and self.bad is None:
            # Hex digits of odd length: a hex value cut short (plain words are left alone).
            self.bad = f"field {name} holds hex that does not decode: {value[:40]!r}"
        return value.encode("utf-8", "surrogateescape")

    def text(self, value: str | None, name: str) -> str | None:
        data = self.raw_bytes(value, name)
        return None if data is None else data.decode("utf-8", "backslashreplace")

    def argv(self, value: str | None, name: str) -> list[str]:
        """``proctitle``: hex of the NUL-separated argv, or one quoted word."""
        data = self.raw_bytes(value, name)
        if not data:
            return []
        parts = data.split(b"\x00")
        while parts and not parts[-1]:
            parts.pop()
        return [p.decode("utf-8", "backslashreplace") for p in parts]

    def execve(self, records: list[Record]) -> tuple[list[str], int | None]:
        """The argv of EXECVE records (``a0 a1 …``; a long argument is split into
        ``aN[0] aN[1] …`` hex pieces, possibly over several records) and ``argc``."""
        whole: dict[int, str] = {}
        pieces: dict[int, dict[int, str]] = {}
        argc: int | None = None
        for rec in records:
            for key, value in rec.fields.items():
                if key == "argc":
                    argc = number(value)
                elif (m := _WHOLE_ARG.fullmatch(key)) is not None:
                    whole[int(m.group(1))] = value
                elif (m := _SPLIT_ARG.fullmatch(key)) is not None:
                    pieces.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
        args: list[str] = []
        for index in sorted(set(whole) | set(pieces)):
            if index in pieces:
                joined = "".join(pieces[index][i] for i in sorted(pieces[index]))
                args.append(self.text(joined, f"a{index}[]") or "")
            else:
                args.append(self.text(whole[index], f"a{index}") or "")
        return args, argc


def number(value: str | None) -> int | None:
    """Decimal digits as an int (None for ``?``, words, or more digits than a column holds)."""
    if value is None or not value.isdigit() or len(value) > 19:
        return None
    return int(value)


def ident(value: str | None) -> int | None:
    """An auid/ses/uid: None when unset (4294967295 or -1)."""
    n = number(value)
    return None if n is None or n == UNSET else n


def syscall_name(rec: Record) -> str | None:
    """``execve``/``execveat``/``connect`` from the enriched name or the arch's numbers;
    other calls as their enriched name or number."""
    named = rec.interpreted.get("SYSCALL")
    if named:
        return named
    call = number(rec.fields.get("syscall"))
    if call is None:
        return rec.fields.get("syscall")
    arch = ARCHES.get(rec.fields.get("arch", "").lower())
    if arch is not None:
        for name, known in zip(("execve", "execveat", "connect"), arch[1:], strict=True):
            if call == known:
                return name
    return str(call)


def arch_name(rec: Record) -> str | None:
    named = rec.interpreted.get("ARCH")
    if named:
        return named
    raw = rec.fields.get("arch")
    arch = ARCHES.get(raw.lower()) if raw else None
    return arch[0] if arch else raw


def sockaddr(value: str | None) -> tuple[str, str | None, int | None] | None:
    """(family, address, port) of a SOCKADDR ``saddr`` (hex of a struct sockaddr)."""
    if not value or len(value) % 2 or not _HEX.fullmatch(value) or len(value) < 4:
        return None
    data = bytes.fromhex(value)
    family = int.from_bytes(data[:2], "little")
    if family == 2 and len(data) >= 8:
        return "inet", ".".join(str(b) for b in data[4:8]), int.from_bytes(data[2:4], "big")
    if family == 10 and len(data) >= 24:
        addr = ipaddress.IPv6Address(data[8:24])
        port = int.from_bytes(data[2:4], "big")
        if addr.ipv4_mapped is not None:       # an IPv4 peer on a dual-stack socket
            return "inet", str(addr.ipv4_mapped), port
        return "inet6", str(addr), port
    if family == 1:
        path = data[2:].split(b"\x00", 1)[0] or (b"@" + data[3:].split(b"\x00", 1)[0])
        return "unix", path.decode("utf-8", "backslashreplace"), None
    return str(family), None, None

