"""Detector: miner commands hidden in base64 (``echo … | base64 -d | sh`` and its relatives).

Droppers hide the pool, the wallet or the download from simple string rules by encoding
them. This detector reads the command texts SQL rules read — process command lines,
autostart commands, and the ``command`` of events (shell history, process starts, PowerShell
script blocks, services, tasks) — finds base64 runs, decodes them and applies the same
matchers as the SQL rules to the decoded text::

    command ──► base64 runs (longest first, bounded) ──► bytes ──► gunzip? UTF-16LE? ──► text
                                     ▲                                                     │
                                     └──────────── runs inside the payload, once ◄─────────┤
                                                                                           ▼
    stratum URL · Monero wallet · IOC domain (suffix) / IP · known miner name · XMRig options
    · download piped to a shell ──► one finding per command, naming the decoded text

Every size is bounded (text examined, runs per command, run length, decoded bytes, nesting),
so hostile input costs little. Decoded text goes into evidence escaped, never executed.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deminer.detect.finding import Finding
from deminer.textsafe import clean

if TYPE_CHECKING:
    from deminer.case import Case
    from deminer.detect.rules import Rule

MAX_TEXT_CHARS = 65536     # of one command
MAX_RUNS = 12              # base64 runs decoded per text, longest first
MIN_RUN = 16               # shorter runs decode to under 12 bytes: nothing to find there
MAX_RUN = 65536
MAX_DECODED = 65536        # bytes kept of one decoded (and decompressed) payload
MAX_DEPTH = 2              # the command's payload, and a payload inside it ("nested once")

_RUN = re.compile(rf"[A-Za-z0-9+/_-]{{{MIN_RUN},}}={{0,2}}")
_STRATUM = re.compile(r"(?i)stratum2?(?:\+(?:tcp|ssl|tls))*://[^\s'\"`;|&<>()]+")
_B58 = "1-9A-HJ-NP-Za-km-z"
_WALLET = re.compile(rf"(?<![{_B58}])[48][1-9AB][{_B58}]{{93}}(?:[{_B58}]{{11}})?(?![{_B58}])")
_DOMAIN = re.compile(r"(?:[a-z0-9_-]+\.)+[a-z][a-z0-9-]*")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_WORD = re.compile(r"[^\s/;|&'\"<>()`=,]+")
_DOWNLOAD = (
    re.compile(r"(curl|wget|fetch|tftp|/dev/tcp/)[^|;]*\|\s*(sudo\s+)?(/usr)?(/bin/)?(env\s+)?"
               r"(ba|da|z|k|a)?sh\b"),
    re.compile(r"\b(curl|wget)\b[^\n]*(chmod\s+\S*\+?x|\bnohup\b|&&\s*\./|;\s*\./)"),
    re.compile(r"(?i)\b(iex|invoke-expression)\b.*\b(downloadstring|invoke-webrequest|iwr|net\.webclient)"),
    re.compile(r"(?i)\.download(string|file)\s*\("),
)
_MINER_OPTIONS = re.compile(r"(?i)(^|\s)(--donate-level|--cpu-max-threads-hint|--randomx-[a-z0-9-]+"
                            r"|--coin[= ]+monero)\b")
_DECODER = re.compile(r"(?i)base64\s+(-d|--decode|-di)|b64decode|frombase64string|decode_base64"
                      r"|openssl\s+(enc\s+)?(-d\s+)?-?-?base64|\s-e(nc(odedcommand)?)?\s")


@dataclass
class Indicators:
    """What the case's ``iocs`` table says, in the shapes the matchers need."""

    domains: dict[str, str] = field(default_factory=dict)   # value -> family
    ips: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)     # process_name / filename

    @staticmethod
    def load(case: Case) -> Indicators:
        out = Indicators()
        for row in case.query("SELECT kind, value, min(coalesce(family, '')) AS family FROM iocs "
                              "WHERE kind IN ('domain', 'ip', 'process_name', 'filename') "
                              "GROUP BY kind, value ORDER BY kind, value"):
            target = {"domain": out.domains, "ip": out.ips}.get(row["kind"], out.names)
            target[row["value"]] = row["family"] or ""
        return out


@dataclass
class Layer:
    encoded: str
    decoded: str
    depth: int


def _decode_run(run: str) -> bytes | None:
    """Bytes of one base64 run (standard or URL-safe alphabet), ``None`` if it is not base64."""
    body = run.rstrip("=")
    urlsafe = "-" in body or "_" in body
    if urlsafe and ("+" in body or "/" in body):
        return None                   # mixed alphabets: a path or option, not base64
    if len(body) % 4 == 1:
        body = body[:-1]              # a stray character glued to the end
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if urlsafe else None,
                                validate=True)
    except (binascii.Error, ValueError):
        return None


def _gunzip(data: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return inflater.decompress(data, MAX_DECODED)   # bounded: a gzip bomb stops here
    except zlib.error:
        return b""


def _as_text(data: bytes) -> str | None:
    """Decoded bytes as text if they look like text (a command or script), else ``None``."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    data = data[:MAX_DECODED]
    if len(data) < 8:
        return None
    odd = data[1::2]
    if len(odd) >= 4 and odd.count(0) >= 0.9 * len(odd):
        text = data.decode("utf-16-le", "replace")       # PowerShell -EncodedCommand
    else:
        text = data.decode("utf-8", "replace")
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\r\n")
    return text if printable >= 0.9 * len(text) else None


def _runs(text: str) -> list[str]:
    """Candidate base64 runs of ``text``, longest first, at most ``MAX_RUNS``."""
    found: list[str] = []
    for m in _RUN.finditer(text):
        run = m.group()
        if ("-" in run or "_" in run) and ("+" in run or "/" in run):
            # a path or option glued to the run: try its standard-alphabet pieces
            found.extend(p for p in re.split(r"[-_]", run) if len(p) >= MIN_RUN)
            continue
        found.append(run)
    found.sort(key=len, reverse=True)
    return [r[:MAX_RUN] for r in found[:MAX_RUNS]]


def decode_layers(text: str) -> list[Layer]:
    """Every base64 payload of ``text`` that decodes to text, and the payloads inside those."""
    layers: list[Layer] = []
    todo = [(text[:MAX_TEXT_CHARS], 1)]
    while todo:
        current, depth = todo.pop(0)
        for run in _runs(current):
            decoded = None
            for offset in range(4 if len(run) >= MIN_RUN + 4 else 1):
                data = _decode_run(run[offset:])
                decoded = _as_text(data) if data else None
                if decoded:
                    break
            if decoded is None:
                continue
            layers.append(Layer(run, decoded, depth))
            if depth < MAX_DEPTH:
                todo.append((decoded, depth + 1))
    return layers


def _domains(text: str, ind: Indicators) -> list[tuple[str, str]]:
    """(host, family) for every domain in ``text`` that is an indicator or under one."""
    hits = []
    for host in sorted(set(_DOMAIN.findall(text.lower()))):
        labels = host.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in ind.domains:
                hits.append((host, ind.domains[suffix]))
                break
    return hits


def match(text: str, ind: Indicators) -> dict[str, list[str]]:
    """The miner evidence in one decoded text, by kind; empty when there is none."""
    found: dict[str, list[str]] = {}
    found["stratum"] = sorted(set(_STRATUM.findall(text)))
    found["wallet"] = sorted(set(_WALLET.findall(text)))
    domains = _domains(text, ind)
    found["pool"] = [h for h, fam in domains if fam == "mining-pool"]
    found["indicator"] = [h for h, fam in domains if fam != "mining-pool"]
    found["indicator"] += sorted({ip for ip in _IPV4.findall(text) if ip in ind.ips})
    words = {w.lower() for w in _WORD.findall(text)}
    found["miner_name"] = sorted(w for w in words if w in ind.names)
    for rx in _DOWNLOAD:
        if m := rx.search(text):
            found["download"] = [clean(m.group(), 200)]
            break
    found["miner_options"] = sorted({m.group(2) for m in _MINER_OPTIONS.finditer(text)})
    return {k: v for k, v in found.items() if v}


_LABELS = {"stratum": "stratum URL", "wallet": "Monero wallet", "pool": "mining pool",
           "indicator": "known bad host", "miner_name": "miner name", "download": "download run by a shell",
           "miner_options": "XMRig options"}

_SOURCES = """
SELECT 'process' AS origin, host, coalesce(started, ts) AS ts, pid, name, exe, "user",
       cmdline AS text, NULL AS kind, NULL AS location, NULL AS line, source
FROM processes WHERE regexp_matches(coalesce(cmdline, ''), '[A-Za-z0-9+/_-]{16}')
UNION ALL
SELECT 'persistence', host, coalesce(mtime, ts), NULL, name, NULL, "user", command, kind, location,
       source_line, source
FROM persistence WHERE regexp_matches(coalesce(command, ''), '[A-Za-z0-9+/_-]{16}')
UNION ALL
SELECT CASE WHEN event = 'shell_command' THEN 'history' ELSE 'event' END, host, ts, pid, process,
       NULL, "user", command, event, NULL, source_line, source
FROM events WHERE regexp_matches(coalesce(command, ''), '[A-Za-z0-9+/_-]{16}')
ORDER BY 1, 2, 4, 9, 10, 11, 12
"""


def _where(row: dict[str, Any]) -> tuple[str, str]:
    """(entity, human description) of a source row, as the SQL rules name them."""
    line = "?" if row["line"] is None else str(row["line"])
    if row["origin"] == "process":
        return f"pid {row['pid']}", f"Process {row['name'] or '?'} (pid {row['pid']})"
    if row["origin"] == "persistence":
        entity = f"{row['location']}:{line}"
        return entity, f"Autostart {row['kind'] or '?'} entry {entity}"
    entity = f"{row['source'] or '?'}:{line}"
    if row["origin"] == "history":
        return entity, f"Shell history line {entity}" + (f" of {row['user']}" if row["user"] else "")
    return entity, f"Event {row['kind'] or '?'} at {entity}"


def _finding(row: dict[str, Any], rule: Rule, layers: list[tuple[Layer, dict[str, list[str]]]]) -> Finding:
    entity, where = _where(row)
    merged: dict[str, list[str]] = {}
    for _layer, found in layers:
        for kind, values in found.items():
            merged.setdefault(kind, [])
            merged[kind] += [v for v in values if v not in merged[kind]]
    what = " and ".join(f"{_LABELS[k]} {clean(' '.join(v), 80)}" for k, v in merged.items())
    first = layers[0][0]
    nested = " (nested twice)" if any(layer.depth > 1 for layer, _ in layers) else ""
    summary = (f"{where} hides base64{nested} that decodes to {what}: "
               f"{clean(' '.join(first.decoded.split()), 160)}")
    text = row["text"] or ""
    evidence: dict[str, Any] = {
        "origin": row["origin"], "pid": row["pid"], "name": row["name"], "exe": row["exe"],
        "cmdline" if row["origin"] == "process" else "command": clean(text, 2000),
        "kind": row["kind"], "location": row["location"], "line": row["line"],
        "source": row["source"], "user": row["user"],
        "encoded": clean(first.encoded, 200),
        "decoded": clean(first.decoded, 2000),
        "layers": max(layer.depth for layer, _ in layers),
        "decoder": (m.group().strip() if (m := _DECODER.search(text)) else None),
    }
    for kind in ("stratum", "wallet", "pool", "indicator", "miner_name", "download", "miner_options"):
        if kind in merged:
            evidence[kind] = " ".join(merged[kind])[:1000]
    return Finding(rule=rule.id, title=rule.title, severity=rule.severity, attack=rule.attack,
                   host=row["host"], ts=row["ts"], entity=entity,
                   summary=summary, evidence={k: v for k, v in evidence.items() if v is not None})


def detect(case: Case, rule: Rule) -> list[Finding]:
    """One finding per command whose base64 payload carries miner evidence."""
    ind = Indicators.load(case)
    out: list[Finding] = []
    # Logs repeat the same command line (services, tasks, a worm's launcher on every run):
    # each distinct text is decoded once.
    seen: dict[str, list[tuple[Layer, dict[str, list[str]]]]] = {}
    for row in case.query(_SOURCES):
        text = row["text"] or ""
        hits = seen.get(text)
        if hits is None:
            hits = seen[text] = [(layer, found) for layer in decode_layers(text)
                                 if (found := match(layer.decoded, ind))]
        if hits:
            out.append(_finding(row, rule, hits))
    return out
