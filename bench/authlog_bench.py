"""Benchmark auth.log ingest: `deminer investigate` against `grep -c "Failed password"`.

Generates a ≥500k-line internet-facing auth.log (``deminer.scenarios.auth_log.big_log``),
then times, in one run: grep's count, deminer's parse alone, and `deminer investigate`
end to end (parse + case store + every rule). Prints lines/s and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deminer.scenarios.auth_log import big_log
from deminer.sources import auth_log
from deminer.sources.base import SourceContext


def _time(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, int(usage.ru_maxrss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=500_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deminer-authbench-"))
    try:
        log = work / "auth.log"
        big_log(args.lines).write(log)
        n = sum(1 for _ in log.open("rb"))
        grep_s, _ = _time(["grep", "-c", "Failed password", str(log)])
        ctx = SourceContext(path=log, display=str(log), host=None, workdir=work)
        start = time.perf_counter()
        rows = sum(len(batch) for _, batch in auth_log.SOURCE.parse(ctx))
        parse_s = time.perf_counter() - start
        deminer = shutil.which("deminer") or str(Path(sys.executable).parent / "deminer")
        inv_s, inv_rss = _time([deminer, "investigate", str(log), "--case", str(work / "case"),
                                "--quiet"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = log.stat().st_size / 1e6 if log.exists() else 0
    print(f"input                    : {n:,} lines {mb:.0f} MB" if mb else f"input: {n:,} lines")
    print(f"grep -c 'Failed password': {grep_s:7.2f} s  {n / grep_s:>12,.0f} lines/s")
    print(f"deminer parse only       : {parse_s:7.2f} s  {n / parse_s:>12,.0f} lines/s ({rows:,} rows)")
    print(f"deminer investigate      : {inv_s:7.2f} s  {n / inv_s:>12,.0f} lines/s, "
          f"peak RSS {inv_rss / 1024:.0f} MB")
    print(f"ratio investigate / grep : {inv_s / grep_s:7.1f}x  (goal ≤ 3x)")
    print(f"ratio parse / grep       : {parse_s / grep_s:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
