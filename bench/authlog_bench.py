"""Benchmark auth.log ingest: `deminer investigate` against `grep -c "Failed password"`.

Generates an internet-facing auth.log (``deminer.scenarios.auth_log.big_log``, in a child
process so this one stays small), reads it once so the page cache is warm for every
contestant, then times on the same file, best of ``--repeat``:

* ``grep -c "Failed password"`` and ``wc -l``, their output read through a pipe (GNU grep
  stops at the first match when its output is /dev/null, so timing it that way measures
  nothing) and checked;
* `deminer investigate` end to end in a fresh process (start-up, parse, store, every rule,
  correlate, report), with its peak RSS;
* the same pipeline in this process with a timer around each stage;
* deminer's parse alone (``auth_log.parse_arrow``: the Arrow batches the store receives).

Prints lines/s, µs per line and the ratios to grep. Give two sizes (``--lines 500000
5000000``) to split fixed start-up cost from per-line cost (a straight line through the two;
each size runs in its own child process).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHUNK = 500_000           # lines generated per child process (bounded memory for big sizes)
_GENERATE = """
import datetime as dt, os, sys
from deminer.scenarios.auth_log import big_log
out, lines, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(out, "ab") as fh:
    fh.write("".join(line + "\\n" for line in big_log(lines, seed=seed).lines()).encode())
stamp = dt.datetime(2024, 12, 31, tzinfo=dt.timezone.utc).timestamp()   # BSD syslog years: 2024
os.utime(out, (stamp, stamp))
"""


def generate(path: Path, lines: int) -> None:
    """``lines`` (about) of log; sizes past CHUNK are chunks with different seeds (each starts
    on 1 January again, which the year inference reads as the same year)."""
    seed = 1
    while lines > 0:
        subprocess.run([sys.executable, "-c", _GENERATE, str(path), str(min(lines, CHUNK)), str(seed)],
                       check=True)
        lines -= CHUNK
        seed += 1


def run(cmd: list[str]) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in KiB, stdout) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed ({status}): {' '.join(cmd)}")
    # ru_maxrss of a child starts from this process's RSS when it was spawned (Linux carries
    # the high-water mark across fork and exec): main() checks that this process stays smaller.
    return seconds, int(usage.ru_maxrss), out


def best(repeat: int, fn: Callable[[], tuple[float, int, bytes]]) -> tuple[float, int, bytes]:
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def self_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def stages(log: Path, case: Path) -> dict[str, float]:
    """`deminer investigate` in this process, with a timer around each stage the CLI runs."""
    from deminer import cli

    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    originals = {n: getattr(cli, n) for n in ("_load_iocs", "ingest", "_detect_all", "_correlate", "_finish")}
    labels = {"_load_iocs": "load IOC lists", "ingest": "ingest (sniff, sha256, parse, store)",
              "_detect_all": "detect (SQL rules, Python detectors, Sigma)",
              "_correlate": "correlate (verdicts, graph, timeline)", "_finish": "report (HTML, JSONL, STIX)"}
    for name, fn in originals.items():
        setattr(cli, name, timed(labels[name], fn))
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):     # its summary lines
            cli.main(["investigate", str(log), "--case", str(case), "--quiet"])
        spent["total in process"] = time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(cli, name, fn)
    return spent


def parse_only(log: Path, repeat: int) -> tuple[float, int]:
    from deminer.sources import auth_log

    times, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = sum(len(batch) for table, batch in auth_log.parse_arrow(log, str(log)) if table == "events")
        times.append(time.perf_counter() - start)
    return min(times), rows


def bench(lines: int, repeat: int, work: Path) -> dict[str, float]:
    log = work / f"auth-{lines}.log"
    generate(log, lines)
    with log.open("rb") as fh:                 # warm the page cache for everyone
        while fh.read(1 << 24):
            pass
    deminer = shutil.which("deminer") or str(Path(sys.executable).parent / "deminer")
    grep_s, _, grep_out = best(repeat, lambda: run(["grep", "-c", "Failed password", str(log)]))
    wc_s, _, wc_out = best(repeat, lambda: run(["wc", "-l", str(log)]))
    n, failed = int(wc_out.split()[0]), int(grep_out)
    start_s, _, _ = best(repeat, lambda: run([sys.executable, "-c", "import deminer.cli"]))
    spawn_rss = self_rss_kib()

    def investigate() -> tuple[float, int, bytes]:
        shutil.rmtree(work / "case", ignore_errors=True)
        return run([deminer, "investigate", str(log), "--case", str(work / "case"), "--quiet"])

    inv_s, inv_rss, _ = best(max(1, repeat - 1), investigate)
    shutil.rmtree(work / "case", ignore_errors=True)
    spent = stages(log, work / "case-stages")
    parse_s, rows = parse_only(log, max(1, repeat - 1))
    mb = log.stat().st_size / 1e6

    def line(name: str, seconds: float, extra: str = "") -> None:
        print(f"{name:34} {seconds:8.3f} s {n / seconds:>12,.0f} lines/s {seconds / n * 1e6:8.2f} µs/line"
              f"{seconds / grep_s:9.1f}× grep{extra}")

    print(f"\ninput: {n:,} lines, {mb:.0f} MB, {failed:,} 'Failed password' lines; best of {repeat}")
    line('grep -c "Failed password"', grep_s)
    line("wc -l", wc_s)
    line("deminer parse only (Arrow batches)", parse_s, f"  ({rows:,} event rows)")
    line("deminer investigate, end to end", inv_s, f"  peak RSS {inv_rss / 1024:.0f} MB")
    rss_note = "" if spawn_rss < inv_rss else "  (an upper bound: this process was as big)"
    print(f"{'':34} (this process: {spawn_rss / 1024:.0f} MB when it spawned investigate){rss_note}")
    print("stages of investigate (in this process, after the runs above):")
    print(f"  {'python start-up + imports':44} {start_s:7.3f} s   (python -c 'import deminer.cli')")
    for name, seconds in spent.items():
        print(f"  {name:44} {seconds:7.3f} s")
    print(f"ratio investigate / grep: {inv_s / grep_s:.0f}×   parse / grep: {parse_s / grep_s:.0f}×  "
          "(goal: investigate ≤ 3× grep)")
    return {"lines": n, "grep": grep_s, "wc": wc_s, "parse": parse_s, "investigate": inv_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="+", default=[500_000],
                    help="log sizes to run (two or more: fixed and per-line cost are fitted)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contestant; the best counts")
    ap.add_argument("--result-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if len(args.lines) > 1:
        # one child per size: each starts small, so its investigate RSS is its own
        results = []
        for lines in args.lines:
            cmd = [sys.executable, __file__, "--lines", str(lines), "--repeat", str(args.repeat),
                   "--result-json"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            *shown, last = out.rstrip("\n").split("\n")
            print("\n".join(shown), flush=True)
            results.append(json.loads(last))
        small, big = results[0], results[-1]
        print("\nfixed + per-line cost (straight line through the smallest and largest run):")
        for key in ("grep", "wc", "parse", "investigate"):
            per_line = (big[key] - small[key]) / (big["lines"] - small["lines"])
            fixed = small[key] - per_line * small["lines"]
            bent = "  (not a straight line: part of it grows faster than the input)" if fixed < 0 else ""
            print(f"  {key:12} {fixed:7.3f} s + {per_line * 1e6:6.3f} µs/line  "
                  f"({1 / per_line if per_line > 0 else float('inf'):,.0f} lines/s past start-up){bent}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="deminer-authbench-"))
    try:
        result = bench(args.lines[0], args.repeat, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.result_json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
