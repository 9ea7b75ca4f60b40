"""Write every report output of a case into one folder: ``write_report(case, out_dir)``.

    report.html       the page (html.py), self-contained
    findings.jsonl    every finding (jsonl.py)
    hosts.jsonl       every host with its verdict (exports.py)
    graph.json        every host and infection edge (exports.py)
    iocs.stix.json    the indicators as a STIX 2.1 bundle (stix.py)

The case is read once (hosts, edges, IOCs) and shared by the writers. Each file is written to
a temporary name and renamed, so a reader never sees half a file. A writer that fails is
recorded in the case's ``errors`` (stage ``report``, naming the file) and the others still
run; the page, written last, lists that problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.report import exports, html, stix
from deminer.report.jsonl import write_findings

FILES = ("report.html", "findings.jsonl", "hosts.jsonl", "graph.json", "iocs.stix.json")


def _findings(case: Case) -> Iterator[Finding]:
    # Streamed in batches: a fleet case has hundreds of thousands of findings.
    cur = case.db.execute("SELECT * FROM findings ORDER BY host NULLS LAST, ts NULLS LAST, rule, id")
    names = [d[0] for d in cur.description or []]
    while batch := cur.fetchmany(10_000):
        for row in batch:
            yield Finding.from_row(dict(zip(names, row, strict=True)))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(case: Case, out_dir: Path) -> dict[str, Path]:
    """Write the report files into ``out_dir``; returns name -> path of those written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    case.db.execute("DELETE FROM errors WHERE stage = 'report'")
    hosts = exports.load_hosts(case)
    edges = exports.load_edges(case)
    iocs = stix.collect_iocs(case)
    writers: dict[str, Callable[[Path], object]] = {
        "findings.jsonl": lambda p: write_findings(_findings(case), p),
        "hosts.jsonl": lambda p: exports.write_hosts_jsonl(hosts, p),
        "graph.json": lambda p: exports.write_graph_json(hosts, edges, p),
        "iocs.stix.json": lambda p: p.write_text(
            json.dumps(stix.bundle(iocs), indent=1, sort_keys=True, ensure_ascii=True) + "\n",
            encoding="utf-8"),
    }
    written: dict[str, Path] = {}
    for name, write in writers.items():
        try:
            _atomic(out_dir / name, write)
            written[name] = out_dir / name
        except (OSError, ValueError, TypeError, duckdb.Error) as exc:
            case.error(str(out_dir / name), f"could not write {name}: {exc}", stage="report")
    page = html.render(case, hosts, edges, iocs, files=[*written, "report.html"])
    # backslashreplace: a lone surrogate from evidence must not stop the page being written.
    _atomic(out_dir / "report.html",
            lambda p: p.write_bytes(page.encode("utf-8", "backslashreplace")))
    written["report.html"] = out_dir / "report.html"
    return {name: written[name] for name in FILES if name in written}
