"""Web server access logs → ``events`` rows with ``event = 'web_request'``.

Two families, plain or gzip'd (rotated ``access.log.2.gz``):

    203.0.113.9 - bob [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326
        Common Log Format (Apache ``common``, Nginx without referer/agent)
    ... 200 2326 "http://ref/" "Mozilla/5.0 ..." ["x-forwarded-for" ...]
        Combined Log Format (Apache ``combined``, Nginx ``main``/``combined``); extra fields
        after the agent are kept, a quoted address list there is the X-Forwarded-For
    www.example.com:443 203.0.113.9 - - [10/Oct/...] "GET / HTTP/1.1" 200 ...
        either of the above behind a virtual-host prefix (Apache ``vhost_combined``, or
        Nginx formats that start with ``$host``)
    #Fields: date time s-computername c-ip cs-method cs-uri-stem cs-uri-query sc-status ...
        IIS / W3C extended: the latest ``#Fields:`` header names the columns of the lines
        after it (it changes when an admin adds a field), times are UTC

Rows: ``host`` is the web server: the ``--host`` the user gave, else IIS
``s-computername``, else ``unknown`` (folder names and virtual hosts do not name the
machine reliably, so pass ``--host``). ``ts`` is naive UTC (Apache/Nginx offsets applied).
``src_ip`` is the client as the server saw it; ``user`` the authenticated user (NULL for
``-``); ``status`` the HTTP status as text; ``dst_port``/``dst_ip`` the server side when
logged. ``data`` holds ``method``, ``path`` (the path decoded once, for matching),
``path_raw`` (the request target exactly as logged, query included), ``query`` (decoded
once, ``+`` as space), ``protocol``, ``bytes``, ``referer``, ``user_agent``, ``vhost``,
``time_taken`` (IIS, ms), ``x_forwarded_for``, ``extra`` (unnamed trailing fields) and
``request`` (a request line that is not ``METHOD target [HTTP/x]``, e.g. TLS bytes sent to
a plain-HTTP port). Values are stored as found: never interpreted or executed.

Lines that fit no format are counted: one ``errors`` row per file gives the count and the
first such line. A file with binary content raises ``SourceError``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from deminer.sources import textlog
from deminer.sources.base import BATCH_ROWS, Batch, Batcher, Source, SourceContext, host_id
from deminer.sources.syslog_time import MAX_LINE, MONTHS, Blocks, open_log

RAW_CAP = 2048          # ``raw`` keeps this many characters of a line
UNKNOWN_HOST = "unknown"
Row = dict[str, Any]

# -- Common/Combined Log Format -------------------------------------------------------------
# Apache escapes '"' inside quoted fields as \" and Nginx as \x22, so the request ends at the
# first quote not preceded by a backslash and followed by the status and size. Lines are cut
# with str.find, not a regex (lazy ".*?" groups cost 3x more here); the prefix before " ["
# (vhost, client, ident, user) is split by hand: users may hold spaces.
_QUOTED2 = re.compile(r' "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"(.*)$', re.DOTALL)
# Loggers that do not escape quotes (custom formats, some appliances) leave raw quotes in the
# agent: take the referer to the first '" "' and the agent to the last quote.
_QUOTED2_LOOSE = re.compile(r' "(.*?)" "(.*)"(.*)$', re.DOTALL)
_WELL_FORMED = re.compile(r'(?:\s+(?:"(?:[^"\\]|\\.)*"|[^\s"]+))*\s*$', re.DOTALL)
_XFF_TAIL = re.compile(r'(.*)" "([0-9A-Fa-f.:, ]+|-)$', re.DOTALL)
_XFF_VALUE = re.compile(r'[0-9A-Fa-f.:, ]+$')
_EXTRA_QUOTED = re.compile(r' "((?:[^"\\]|\\.)*)"')
_PORT_SUFFIX = re.compile(r'(.+):(\d{1,5})$')
# Sniffing is stricter than parsing: at most a vhost, client, ident and user before the time,
# so a syslog line that wraps an access-log line (``Mar 30 … nginx: 1.2.3.4 - - [``) is not ours.
_SNIFF_CLF = re.compile(r'(?:\S+ )?\S+ \S+ \S+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "')
_LOG_NAME = re.compile(r'^((.*[._-])?access([._-]log)?|u_ex\d+|ex\d{6})'
                       r'(\.log)?([.-]\d+)?(\.gz)?$', re.IGNORECASE)


_SECONDS = [dt.timedelta(seconds=n) for n in range(62)]    # 60 and 61: leap-second stamps


@lru_cache(maxsize=1024)   # keyed by the minute: busy logs repeat it for hundreds of lines
def _clf_minute(text: str) -> dt.datetime | None:
    """``10/Oct/2000:13:55 -0700`` (a time without its seconds) → naive UTC."""
    if not (len(text) == 23 and text.isascii() and text[2] + text[6] + text[11] + text[14] == "//::"
            and text[17] == " " and text[18] in "+-"
            and (text[0:2] + text[7:11] + text[12:14] + text[15:17] + text[19:23]).isdigit()):
        return None
    try:
        stamp = dt.datetime(int(text[7:11]), MONTHS[text[3:6]], int(text[0:2]), int(text[12:14]),
                            int(text[15:17]))
    except (KeyError, ValueError):
        return None
    offset = dt.timedelta(hours=int(text[19:21]), minutes=int(text[21:23]))
    return stamp - offset if text[18] == "+" else stamp + offset


def _clf_time(text: str) -> dt.datetime | None:
    """``10/Oct/2000:13:55:36 -0700`` → naive UTC."""
    minute = _clf_minute(text[:17] + text[20:])
    if minute is None or not text[18:20].isdigit() or text[17] != ":":
        return None
    second = int(text[18:20])
    return minute + _SECONDS[second] if second < 62 else None


def _split_prefix(prefix: str) -> tuple[str | None, str, str | None] | None:
    """(vhost, client, user) from what precedes the time; None when it fits no format."""
    tokens = prefix.split(" ")
    if len(tokens) >= 3 and tokens[1] == "-":                      # client ident user...
        vhost, client, user = None, tokens[0], " ".join(tokens[2:])
    elif len(tokens) >= 4 and tokens[2] == "-":                    # vhost client ident user...
        vhost, client, user = tokens[0], tokens[1], " ".join(tokens[3:])
    elif len(tokens) == 3:                                         # identd answered
        vhost, client, user = None, tokens[0], tokens[2]
    elif len(tokens) == 4:
        vhost, client, user = tokens[0], tokens[1], tokens[3]
    else:
        return None
    if not client:
        return None
    return vhost, client, None if user in ("-", "") else user


def _target(data: Row, target: str) -> None:
    """Fill path_raw, path and query of ``data`` from a request target."""
    data["path_raw"] = target
    path, sep, query = target.partition("?")
    data["path"] = unquote(path, errors="backslashreplace") if "%" in path else path
    if sep:
        data["query"] = (unquote_plus(query, errors="backslashreplace")
                         if ("%" in query or "+" in query) else query)


def _request(data: Row, request: str) -> None:
    parts = request.split(" ")
    if len(parts) >= 3 and parts[-1].startswith("HTTP/"):
        data["method"], data["protocol"] = parts[0], parts[-1]
        _target(data, " ".join(parts[1:-1]))
    elif len(parts) == 2 and parts[0].isalpha():                  # HTTP/0.9: no version
        data["method"] = parts[0]
        _target(data, parts[1])
    else:
        data["request"] = request


def _tail(data: Row, tail: str) -> None:
    """Referer, agent and trailing fields after the size; empty for Common Log Format."""
    if not tail:
        return
    rest = ""
    parts = tail.split('"') if "\\" not in tail else []
    # the usual case, no escapes: ' "ref" "agent"', optionally ' "xff"' or ' 0.123' after it
    if (len(parts) in (5, 7) and parts[0] == " " and parts[2] == " "
            and (len(parts) == 5 or (parts[4] == " " and parts[6] == ""))):
        referer, agent = parts[1], parts[3]
        rest = parts[4] if len(parts) == 5 else f' "{parts[5]}"'
    elif (m := _QUOTED2.match(tail)) and _WELL_FORMED.match(m.group(3)):
        referer, agent, rest = m.groups()
    else:
        loose = _QUOTED2_LOOSE.match(tail)
        if loose is None:
            data["extra"] = tail.strip()
            return
        referer, agent, _ = loose.groups()
        xff = _XFF_TAIL.match(agent)
        if xff:
            agent, rest = xff.group(1), f' "{xff.group(2)}"'
    if referer != "-":
        data["referer"] = referer
    if agent != "-":
        data["user_agent"] = agent
    rest = rest.strip()
    if rest:
        first = _EXTRA_QUOTED.match(" " + rest)
        if first and _XFF_VALUE.match(first.group(1)):
            if first.group(1) != "-":
                data["x_forwarded_for"] = first.group(1)
            rest = rest[first.end() - 1:].strip()
        if rest:
            data["extra"] = rest


def _split_clf(line: str) -> tuple[str, str, str, str, str, str] | None:
    """(prefix, time, request, status, size, tail) of a Common/Combined line, or None."""
    at = line.find(" [")
    while at >= 0 and line[at + 28:at + 31] != '] "':
        at = line.find(" [", at + 1)
    if at < 0:
        return None
    start = at + 31                      # after ' [', the 26-character time and '] "'
    fallback = None
    end = line.find('" ', start)
    while end >= 0:
        # the status: three digits (or "-") then a space, then the size up to a space or the end
        if line[end + 2:end + 5].isdigit() or line[end + 2] == "-":
            sp = end + 5 if line[end + 2] != "-" else end + 3
            if line[sp:sp + 1] == " ":
                size_end = line.find(" ", sp + 1)
                size = line[sp + 1:] if size_end < 0 else line[sp + 1:size_end]
                if size.isdigit() or size == "-":
                    found = (end, sp, size)
                    if line[end - 1] != "\\":        # at ``start`` that is the opening quote
                        break
                    fallback = fallback or found     # "GET /a\\" ends in an escaped backslash
        end = line.find('" ', end + 1)
    else:
        if fallback is None:
            return None
        found = fallback
    end, sp, size = found
    return (line[:at], line[at + 2:at + 28], line[start:end], line[end + 2:sp], size,
            line[sp + 1 + len(size):])


def clf_row(line: str) -> Row | None:
    """The ``events`` columns of one Common/Combined line (no host/source), or None."""
    split = _split_clf(line)
    if split is None:
        return None
    prefix, stamp, request, status, size, tail = split
    parts = _split_prefix(prefix)
    if parts is None:
        return None
    vhost, client, user = parts
    ts = _clf_time(stamp)
    if ts is None:
        return None
    data: Row = {}
    row: Row = {"ts": ts, "src_ip": client, "user": user, "status": None if status == "-" else status}
    if vhost is not None:
        port = _PORT_SUFFIX.match(vhost)
        if port:
            vhost = port.group(1)
            row["dst_port"] = int(port.group(2))
        data["vhost"] = vhost
    _request(data, request)
    if size != "-":
        data["bytes"] = int(size)
    _tail(data, tail)
    row["data"] = data
    return row


# -- W3C extended (IIS) ----------------------------------------------------------------------
def _w3c_time(date: str, time: str) -> dt.datetime | None:
    try:
        return dt.datetime(int(date[0:4]), int(date[5:7]), int(date[8:10]), int(time[0:2]),
                           int(time[3:5]), int(time[6:8]))
    except ValueError:
        return None


def w3c_row(fields: list[str], values: list[str], header_date: str) -> Row | None:
    """The ``events`` columns of one W3C line under ``#Fields: fields``, or None."""
    rec = {f: v for f, v in zip(fields, values, strict=True) if v != "-"}
    ts = _w3c_time(rec.get("date", header_date), rec.get("time", ""))
    if ts is None:
        return None
    data: Row = {}
    row: Row = {"ts": ts, "src_ip": rec.get("c-ip"), "user": rec.get("cs-username"),
                "status": rec.get("sc-status"), "dst_ip": rec.get("s-ip"), "data": data}
    if "s-port" in rec and rec["s-port"].isdigit():
        row["dst_port"] = int(rec["s-port"])
    if "cs-method" in rec:
        data["method"] = rec["cs-method"]
    stem, query = rec.get("cs-uri-stem"), rec.get("cs-uri-query")
    if stem is None and "cs-uri" in rec:
        _target(data, rec["cs-uri"])
    elif stem is not None:
        _target(data, stem + ("?" + query if query else ""))
    if "cs-version" in rec:
        data["protocol"] = rec["cs-version"]
    if rec.get("sc-bytes", "").isdigit():
        data["bytes"] = int(rec["sc-bytes"])
    if rec.get("time-taken", "").isdigit():
        data["time_taken"] = int(rec["time-taken"])
    if "cs(User-Agent)" in rec:
        data["user_agent"] = rec["cs(User-Agent)"].replace("+", " ")   # IIS writes spaces as '+'
    if "cs(Referer)" in rec:
        data["referer"] = rec["cs(Referer)"]
    vhost = rec.get("cs-host") or rec.get("s-sitename")
    if vhost:
        data["vhost"] = vhost
    for name in ("X-Forwarded-For", "x-forwarded-for", "cs(X-Forwarded-For)", "OriginalIP"):
        if name in rec:
            data["x_forwarded_for"] = rec[name].replace("+", " ")      # an address list
            break
    row["computer"] = rec.get("s-computername")
    return row


# -- recognising and reading files -----------------------------------------------------------
def sniff(path: Path, head: bytes) -> bool:
    """Common/Combined lines or a W3C ``#Fields:`` header; or a binary file named like one."""
    named = bool(_LOG_NAME.match(path.name))
    text = textlog.head_text(head)
    if text is None:
        return named               # so a binary access.log gets a clear error, not silence
    sample = [ln for ln in text.split("\n") if ln.strip()][:20]
    if any(ln.startswith("#Fields:") and ("cs-uri-stem" in ln or "cs-method" in ln) for ln in sample):
        return True
    hits = sum(1 for ln in sample if _SNIFF_CLF.match(ln))
    # Half, not all: a copied log may start in the middle of a line.
    return bool(sample) and hits * 2 >= len(sample)


def parse_file(path: Path, display: str, host: str | None = None,
               batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """``web_request`` events of one access log, then at most one ``errors`` batch."""
    textlog.text_head(path, "text access log")
    ctx_host = host_id(host)
    with open_log(path) as fh:
        blocks = Blocks(fh)
        yield from _parse_blocks(blocks, display, ctx_host, batch_rows)


def _parse_blocks(blocks: Blocks, display: str, ctx_host: str | None, batch_rows: int) -> Iterator[Batch]:
    batcher = Batcher(batch_rows)
    dumps = orjson.dumps
    fields: list[str] | None = None
    header_date, program = "", None
    cuts = textlog.CutLines(blocks)
    lineno, bad, first_bad = 0, 0, 0
    for block in blocks:
        for line in block.decode("utf-8", "backslashreplace").split("\n"):
            lineno += 1
            if line and line[-1] == "\r":
                line = line[:-1]
            if not line:
                continue
            if len(line) > MAX_LINE:
                line = cuts.clip(line, lineno)
            row: Row | None
            if line[0] == "#":
                if line.startswith("#Fields:"):
                    fields = line[8:].split()
                elif line.startswith("#Date:"):
                    header_date = line[6:].strip()[:10]
                elif line.startswith("#Software:"):
                    program = "iis" if "Internet Information Services" in line else "w3c"
                continue
            if fields is not None:
                values = line.split(" ")
                row = w3c_row(fields, values, header_date) if len(values) == len(fields) else None
                if row is not None:
                    computer = row.pop("computer")
                    row["host"] = ctx_host or host_id(computer) or UNKNOWN_HOST
                    row["program"] = program or "w3c"
            else:
                row = clf_row(line)
                if row is not None:
                    row["host"] = ctx_host or UNKNOWN_HOST
            if row is None:
                bad += 1
                first_bad = first_bad or lineno
                continue
            row["event"], row["source"], row["source_line"] = "web_request", display, lineno
            row["data"] = dumps(row["data"]).decode()
            row["raw"] = line if len(line) <= RAW_CAP else line[:RAW_CAP]
            if full := batcher.add("events", row):
                yield full
    yield from batcher.flush()
    problems: list[str | None] = []
    if bad:
        problems.append(f"{bad} line(s) are not access-log lines and were skipped "
                        f"(first at line {first_bad})")
    problems += [cuts.problem("64 KiB"), textlog.truncation_problem(blocks, lineno)]
    errors = textlog.error_rows(display, ctx_host, problems, blocks)
    if errors:
        yield "errors", errors


def parse(ctx: SourceContext) -> Iterator[Batch]:
    yield from parse_file(ctx.path, ctx.display, ctx.host)


SOURCE = Source("web_access", sniff, parse)
