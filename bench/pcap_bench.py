"""Benchmark packet captures: `deminer investigate FILE.pcap` against tshark on the same file.

Generates mixed outbreak captures (``tests/sources/pcap_gen.big_capture``: DNS, Stratum
sessions, TLS, HTTP downloads, SYN scans, SSH storms, Redis cron writes, DoublePulsar
pings) at two sizes, by default 250k and 500k packets, and times on each, every step in a
fresh process so start-up counts and peak RSS is the step's own:
  * tshark: ``tshark -n -r FILE -T fields -e ip.src -e ip.dst -e tcp.dstport`` (three
    fields per packet, no name resolution: the cheapest pass Wireshark's dissectors allow);
  * deminer parse only: the pcap source's rows (flows + dns), nothing stored;
  * deminer ingest: parse + the DuckDB case store, no rules;
  * `deminer investigate FILE` end to end (parse, store, every rule).
Prints packets/s, the ratios to tshark, and peak RSS at both sizes (memory should stay
flat as the capture grows: the flow table is bounded, rows leave in batches).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))           # the generator lives with the tests

PARSE = """
import sys, time
from pathlib import Path
from deminer.sources import pcap
from deminer.sources.base import SourceContext
p = Path(sys.argv[1])
start = time.perf_counter()
rows = sum(len(b) for _, b in pcap.SOURCE.parse(SourceContext(p, str(p), None, p.parent)))
print(time.perf_counter() - start, rows)
"""
INGEST = """
import sys, time
from pathlib import Path
from deminer.case import Case
from deminer.sources import pcap
from deminer.sources.ingest import ingest
start = time.perf_counter()
with Case(Path(sys.argv[2])) as case:
    summary = ingest(case, [Path(sys.argv[1])], sources=(pcap.SOURCE,))
print(time.perf_counter() - start, sum(summary.rows.values()))
"""


def run_once(cmd: list[str], check: bool = True) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stdout of ``cmd`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status and check:
        raise SystemExit(f"{cmd[0]} failed (status {status})")
    return wall, int(usage.ru_maxrss), out.decode(errors="replace")


def best(runs: list[tuple[float, int, str]]) -> tuple[float, int, str]:
    """The fastest wall time of repeated runs (the machine is shared) with the largest peak RSS."""
    fastest = min(runs, key=lambda r: r[0])
    return fastest[0], max(r[1] for r in runs), fastest[2]


def measure(path: Path, packets: int, work: Path, repeat: int) -> dict[str, tuple[float, int]]:
    res: dict[str, tuple[float, int]] = {}

    def run(cmd: list[str]) -> tuple[float, int, str]:
        return best([run_once(cmd) for _ in range(repeat)])

    tshark = shutil.which("tshark")
    if tshark:
        wall, rss, out = run([tshark, "-n", "-r", str(path), "-T", "fields", "-e", "ip.src",
                              "-e", "ip.dst", "-e", "tcp.dstport"])
        res["tshark fields"] = (wall, rss)
        if out.count("\n") != packets:
            print(f"  (tshark printed {out.count(chr(10)):,} lines for {packets:,} packets)")
    wall, rss, out = run([sys.executable, "-c", PARSE, str(path)])
    res["deminer parse only"] = (wall, rss)
    rows = int(out.split()[1])
    runs = [run_once([sys.executable, "-c", INGEST, str(path), str(work / f"ingest{i}")])
            for i in range(repeat)]
    wall, rss, _ = best(runs)
    res["deminer parse + store"] = (wall, rss)
    deminer = shutil.which("deminer") or str(Path(sys.executable).parent / "deminer")
    runs = []
    for i in range(repeat):
        # exit 1 is expected (the capture is an outbreak); a fresh case folder every time
        runs.append(run_once([deminer, "investigate", str(path), "--case", str(work / f"case{i}"),
                              "--quiet"], check=False))
    wall, rss, _ = best(runs)
    res["deminer investigate"] = (wall, rss)
    print(f"  {rows:,} rows (flows + dns)")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000],
                    help="packets per generated capture (default 250000 500000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step; the fastest is shown")
    args = ap.parse_args()
    from deminer.scenarios.captures import big_capture

    work = Path(tempfile.mkdtemp(prefix="deminer-pcapbench-"))
    table: list[tuple[int, float, dict[str, tuple[float, int]]]] = []
    try:
        for size in args.sizes:
            path = work / f"big-{size}.pcap"
            start = time.perf_counter()
            packets = big_capture(path, size)
            mb = path.stat().st_size / 1e6
            print(f"generated {packets:,} packets, {mb:.0f} MB in {time.perf_counter() - start:.1f} s",
                  flush=True)
            case_dir = work / f"run-{size}"
            case_dir.mkdir()
            table.append((packets, mb, measure(path, packets, case_dir, max(1, args.repeat))))
            path.unlink()
            shutil.rmtree(case_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for packets, mb, res in table:
        print(f"\n{packets:,} packets ({mb:.0f} MB):")
        base = res.get("tshark fields", (0.0, 0))[0]
        for name, (wall, rss) in res.items():
            ratio = f"  {wall / base:5.2f}x tshark" if base else ""
            print(f"  {name:24}: {wall:7.2f} s {packets / wall:>11,.0f} packets/s  "
                  f"peak RSS {rss / 1024:6.0f} MB{ratio}")
    if len(table) > 1:
        (p0, _, r0), (p1, _, r1) = table[0], table[-1]
        print(f"\npeak RSS from {p0:,} to {p1:,} packets:")
        for name in r1:
            print(f"  {name:24}: {r0[name][1] / 1024:6.0f} MB -> {r1[name][1] / 1024:6.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
