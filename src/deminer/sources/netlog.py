"""What the network-log sources (netflow, zeek, suricata) share: a bounded line reader, one
tally of unreadable lines per file, times, protocol names, TCP flags → Zeek connection
states, and JSON sniffing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from deminer.sources.base import Batch, SourceContext, host_id
from deminer.sources.syslog_time import Blocks, iso8601, open_log
from deminer.sources.textlog import error_rows

MAX_LINE = 1 << 20            # bytes; real lines are < 10 KiB, longer ones are damage or hostile
EPOCH = dt.datetime(1970, 1, 1)
Row = dict[str, Any]
_SHOWN = 3


_PROTOS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp", "47": "gre", "50": "esp",
           "132": "sctp", "ipv6-icmp": "icmp", "icmp6": "icmp", "icmpv6": "icmp"}


def proto_name(value: Any) -> str | None:
    """``tcp``/``udp``/``icmp``/… from a name or an IP protocol number (ICMPv6 is ``icmp``, as Zeek)."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    return _PROTOS.get(text, text)


def parse_time(value: Any) -> dt.datetime | None:
    """Naive UTC from epoch s/ms/µs/ns (told apart by magnitude; decimal text kept exact to the
    µs) or ISO-8601-like text (also SiLK's ``2024/03/30T08:00:00.000``; a zone is applied, none
    is taken as UTC). None when empty; ``ValueError`` for anything else."""
    if value is None or value in ("", "-"):
        return None
    if isinstance(value, str):
        text = value.strip()
        sec, _, frac = text.partition(".")
        if sec.isdigit() and (not frac or frac.isdigit()):
            if len(sec) <= 11:
                return EPOCH + dt.timedelta(0, int(sec), int((frac + "00000")[:6]))
            value = float(text)
        else:
            if len(text) > 10 and text[4] == "/" and text[7] == "/":
                text = f"{text[:4]}-{text[5:7]}-{text[8:]}"
            stamp = iso8601(text.replace("Z", "+00:00")) if text[:4].isdigit() else None
            if stamp is None:
                raise ValueError(text)
            return stamp
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1e9 if value > 1e17 else value / 1e6 if value > 1e14 else (
            value / 1000 if value > 1e11 else value)
        try:
            return EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError as exc:
            raise ValueError(str(value)) from exc
    raise ValueError(repr(value))


def to_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return None


def to_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
_FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": 0x08, "A": ACK, "U": 0x20}


def flag_bits(value: Any) -> int | None:
    """TCP flags as bits from a number, hex text or letters (nfdump ``.AP.SF``, SiLK ``FS PA``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        bits = [_FLAG_LETTERS.get(ch, 0) for ch in text.upper() if ch not in ".CE "]
        return sum(set(bits)) if bits and all(bits) else None


def state_from_flags(orig: int | None, resp: int | None, replied: bool, tcp: bool = True) -> str | None:
    """Zeek's ``conn_state`` from the TCP flags each side sent (None: unknown)."""
    if not tcp:
        return "SF" if replied else None       # one-way UDP may be sampling, not silence
    if orig is None or (replied and resp is None):
        return None
    if not replied or not resp:
        return ("SH" if orig & FIN else "S0") if orig & SYN and not orig & ACK else None
    if not orig & SYN:
        return "OTH"                            # picked up mid-stream: no handshake seen
    if not resp & SYN:
        return "REJ" if resp & RST else "OTH"
    if orig & RST or resp & RST:
        return "RSTO" if orig & RST else "RSTR"
    if orig & FIN and resp & FIN:
        return "SF"
    return "S2" if orig & FIN else "S3" if resp & FIN else "S1"


def json_text(data: Row) -> str:
    """``data`` as JSON text without its None values."""
    clean = {k: v for k, v in data.items() if v is not None}
    try:
        return orjson.dumps(clean).decode()
    except TypeError:                 # an integer beyond 64 bits from a hostile record
        return json.dumps(clean, default=str, ensure_ascii=False)


def json_head(text: str, accept: Callable[[dict[str, Any]], bool]) -> bool:
    """True when the head is JSON lines and most of the first 20 objects pass ``accept``."""
    lines = [ln for ln in text.split("\n") if ln.strip()][:20]
    if not lines or not lines[0].lstrip().startswith("{"):
        return False
    hits = 0
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        hits += isinstance(obj, dict) and accept(obj)
    return hits > 0 and hits * 2 >= len(lines)


class Problems:
    """What one file's reader skipped, summed into at most one ``errors`` row."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []
        self.notes: list[str] = []
        self.blocks: Blocks | None = None    # read_lines' reader: the zero-filled regions it dropped

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < _SHOWN:
            self.first.append(f"line {line}: {reason}")

    def batch(self, ctx: SourceContext, kind: str) -> Iterator[Batch]:
        parts = list(self.notes)
        if self.count:
            parts.insert(0, f"{kind}: {self.count} unreadable line(s) skipped, first: "
                            + "; ".join(self.first))
        rows = error_rows(ctx.display, host_id(ctx.host), [" | ".join(parts)] if parts else [],
                          self.blocks)
        if rows:
            yield "errors", rows


def read_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain or gzip'd log; over-long lines are skipped whole
    (bounded memory), zero-filled regions are dropped and reported, and a compressed stream
    that ends early ends the file."""
    number = 0
    with open_log(path) as fh:
        blocks = Blocks(fh, max_line=MAX_LINE)
        for block in blocks:
            for line in block.split(b"\n"):
                number += 1
                if len(line) > MAX_LINE or number in blocks.cut_at:
                    problems.add(number, f"longer than {MAX_LINE} bytes")
                    continue
                if b"\x00" in line:
                    problems.add(number, "binary data")
                    continue
                yield number, line.decode("utf-8", "backslashreplace").rstrip("\r")
    if blocks.truncated:
        problems.notes.append(f"compressed data ends early after line {number} ({blocks.truncated})")
    problems.blocks = blocks
