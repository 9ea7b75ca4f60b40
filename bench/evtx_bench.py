"""Benchmark Windows event logs: `deminer investigate` against raw EVTX parsing and a
Sigma-on-SQLite pipeline (the Zircolite approach) running the same Sigma rules.

Input: the public EVTX files in ../shared/data/windows-evtx, copied N times (default 20)
so the run is about records, not start-up. In one run it times:
  * raw parse: pyevtx-rs `records_json()` over every file (what any EVTX tool must pay);
  * deminer: `deminer investigate DIR` end to end (parse, store, all SQL rules, YARA, the
    Sigma pack), in a fresh process;
  * Sigma-on-SQLite: parse with pyevtx-rs + orjson, flatten each record's System and
    EventData fields into one SQLite row (columns created as fields appear, as Zircolite
    does), then run deminer's Sigma pack converted by pySigma's SQLite backend.
Prints records/s and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "windows-evtx"
PACK = Path(__file__).resolve().parents[1] / "src" / "deminer" / "detect" / "sigma" / "rules"


def _records(path: Path) -> Any:
    from evtx import PyEvtxParser

    try:
        yield from PyEvtxParser(str(path)).records_json()
    except (OSError, RuntimeError):
        return


def _distinct_copy(src: Path, dst: Path, n: int) -> None:
    """A copy whose bytes differ in the file header's unused padding (the header CRC covers
    the first 120 bytes only): deminer skips evidence it has already read (same sha256), so
    plain copies would be read once."""
    data = bytearray(src.read_bytes())
    if len(data) >= 4096:
        data[4000:4004] = n.to_bytes(4, "little")
    dst.write_bytes(bytes(data))


def raw_parse(files: list[Path]) -> int:
    n = 0
    for f in files:
        for _ in _records(f):
            n += 1
    return n


def _flatten(rec: dict[str, Any]) -> dict[str, Any]:
    event = rec.get("Event", {})
    row: dict[str, Any] = {}
    system = event.get("System", {})
    for key in ("EventID", "Channel", "Computer", "Provider"):
        value = system.get(key)
        if isinstance(value, dict):
            value = value.get("#text", value.get("#attributes", {}).get("Name"))
        row[key] = value
    for section in ("EventData", "UserData"):
        data = event.get(section)
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(v, dict):
                    for k2, v2 in v.items():
                        row[str(k2)] = v2 if isinstance(v2, (str, int, float)) else str(v2)
                else:
                    row[str(k)] = v if isinstance(v, (str, int, float)) or v is None else str(v)
    return row


def sigma_sqlite(files: list[Path], extra: Path | None = None) -> tuple[int, int, float, float]:
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection

    start = time.perf_counter()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE logs (row_id INTEGER PRIMARY KEY)")
    columns: dict[str, str] = {}  # SQLite column names are case-insensitive
    n = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        for row in batch:
            merged: dict[str, Any] = {}
            for key, value in row.items():
                name = columns.get(key.lower())
                if name is None:
                    name = columns[key.lower()] = key
                    db.execute(f'ALTER TABLE logs ADD COLUMN "{key}" TEXT COLLATE NOCASE')
                merged[name] = value
            keys = list(merged)
            db.execute(f'INSERT INTO logs ({", ".join(chr(34) + k + chr(34) for k in keys)}) '
                       f'VALUES ({", ".join("?" * len(keys))})', [merged[k] for k in keys])
        batch.clear()

    for f in files:
        for rec in _records(f):
            batch.append(_flatten(orjson.loads(rec["data"])))
            n += 1
            if len(batch) >= 10_000:
                flush()
    flush()
    db.commit()
    load = time.perf_counter() - start
    backend = sqliteBackend()
    queries = []
    for rule in SigmaCollection.load_ruleset([str(PACK)] + ([str(extra)] if extra else [])):
        try:
            queries.extend(backend.convert_rule(rule))
        except Exception:  # a rule this backend cannot convert is skipped, as Zircolite does
            continue
    start = time.perf_counter()
    hits = 0
    for q in queries:
        try:
            hits += len(db.execute(q).fetchall())
        except sqlite3.Error:  # a field no event had: Zircolite skips such rules too
            continue
    return n, hits, load, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--sigma-rules", type=int, default=0, metavar="N",
                    help="also run N generated SigmaHQ-like rules (bench/sigma_synth.py) on both "
                         "sides, as a SigmaHQ checkout would be (Zircolite's reference: 2,395)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"needs {SHARED} (the public EVTX set)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="deminer-evtxbench-"))
    try:
        inputs = work / "in"
        inputs.mkdir()
        for i in range(args.copies):
            for f in sorted(SHARED.glob("*.evtx")):
                _distinct_copy(f, inputs / f"{i:03d}-{f.name}", i)
        files = sorted(inputs.glob("*.evtx"))
        extra: Path | None = None
        if args.sigma_rules:
            from sigma_synth import write_rules

            extra = work / "sigma"
            write_rules(extra, args.sigma_rules)
        t = time.perf_counter()
        n = raw_parse(files)
        raw_s = time.perf_counter() - t
        deminer = shutil.which("deminer") or str(Path(sys.executable).parent / "deminer")
        t = time.perf_counter()
        cmd = [deminer, "investigate", str(inputs), "--case", str(work / "case"), "--quiet"]
        if extra:
            cmd += ["--sigma", str(extra)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        dem_s = time.perf_counter() - t
        t = time.perf_counter()
        n2, hits, load_s, query_s = sigma_sqlite(files, extra)
        sql_s = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"input                      : {len(files)} files, {n:,} records ({args.copies} copies), "
          f"Sigma pack + {args.sigma_rules} generated rules")
    print(f"raw evtx parse             : {raw_s:6.2f} s  {n / raw_s:>10,.0f} records/s")
    print(f"deminer investigate        : {dem_s:6.2f} s  {n / dem_s:>10,.0f} records/s, "
          f"peak RSS {usage.ru_maxrss / 1024:.0f} MB")
    print(f"Sigma on SQLite            : {sql_s:6.2f} s  {n2 / sql_s:>10,.0f} records/s "
          f"(load {load_s:.2f} s, rules {query_s:.2f} s, {hits} hits)")
    print(f"deminer / raw parse        : {dem_s / raw_s:6.2f}x  (goal ≤ 3x)")
    print(f"Sigma-on-SQLite / deminer  : {sql_s / dem_s:6.2f}x  (goal ≥ 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
