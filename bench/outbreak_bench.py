"""Benchmark `deminer investigate` on generated outbreaks of 100, 1,000 (and 10,000) hosts.

For each size a fleet is generated (``deminer.scenarios.fleet``: ~60 % Linux bundles with
auth logs, ~40 % Windows hives/tasks/event exports, a password-guessing worm from one patient
zero through ~30 % of the hosts), then investigated end to end in a fresh process
(ingest, every rule, Sigma pack, correlate, report) with the fleet's folder as the one input,
so 10,000 hosts never meet ARG_MAX. Prints, per size: input files and MB, rows stored, wall
time, peak RSS (``wait4``: the largest process) and the process tree's summed RSS (sampled from
/proc every 0.25 s, so parallel parsers count together), seconds and MB per host, the time of each phase, and
whether deminer's outbreak picture equals the ground truth (infected/clean/unknown sets,
patient zero, edges); then how time and memory grow from one size to the next (linear
growth keeps s/host flat).

The phase times come from the same run: the child is the CLI's own ``main`` with its four
stage functions (ingest, detect, correlate, and the report/summary step) wrapped in timers.

    python bench/outbreak_bench.py [--sizes 100 1000] [--big] [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The CLI with its stage functions timed; prints the phases as one JSON line on stderr.
PHASED = r"""
import json, resource, sys, time
from deminer import cli
phases = {}
def timed(name, fn):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            # the process's peak RSS so far (KiB): which phase raised it
            phases[name + " peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return run
cli.ingest = timed("ingest", cli.ingest)
cli._detect_all = timed("detect", cli._detect_all)
cli._correlate = timed("correlate", cli._correlate)
cli._finish = timed("report", cli._finish)
start = time.perf_counter()
code = cli.main(sys.argv[1:])
phases["in main"] = time.perf_counter() - start
print("PHASES " + json.dumps(phases), file=sys.stderr)
sys.exit(code)
"""
PHASES = ("ingest", "detect", "correlate", "report")
COUNTED = ("hosts", "processes", "connections", "files", "persistence", "accounts", "ssh_keys",
           "remote_targets", "events", "findings")


@dataclass
class Run:
    hosts: int
    files: int
    mb: float
    generate: float
    wall: float = 0.0
    rss_kib: int = 0                 # the largest single process (wait4)
    tree_kib: int = 0                # the process tree's summed RSS, sampled (parallel ingest)
    rows: int = 0
    findings: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    summary: str = ""


class TreeRss(threading.Thread):
    """Samples the summed RSS of a process and all its descendants (worker processes that
    parse in parallel are counted together, which ``wait4``'s largest-process peak is not)."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kib = pid, every, 0
        self.done = threading.Event()

    def run(self) -> None:
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        while not self.done.wait(self.every):
            children: dict[int, list[int]] = {}
            rss: dict[int, int] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/stat", "rb") as fh:
                        ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
                    with open(f"/proc/{entry}/statm", "rb") as fh:
                        rss[int(entry)] = int(fh.read().split()[1]) * page_kib
                except (OSError, ValueError, IndexError):
                    continue            # the process ended while we looked
                children.setdefault(ppid, []).append(int(entry))
            total, stack = 0, [self.pid]
            while stack:
                pid = stack.pop()
                total += rss.get(pid, 0)
                stack.extend(children.get(pid, ()))
            self.peak_kib = max(self.peak_kib, total)


def investigate(fleet: Path, case: Path) -> tuple[float, int, int, dict[str, float], str]:
    """Wall seconds, peak RSS of the largest process and of the process tree (KiB), phase
    times and stdout of one investigate run."""
    cmd = [sys.executable, "-c", PHASED, "investigate", str(fleet), "--case", str(case), "--quiet"]
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        sampler = TreeRss(proc.pid)
        sampler.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)     # peak RSS of the child or a reaped descendant
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        err.seek(0)
        errors = err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):           # 1: findings at or above --fail-on (it is an outbreak)
        raise SystemExit(f"investigate failed ({code}): {errors[-2000:]}")
    phases: dict[str, float] = {}
    for line in errors.splitlines():
        if line.startswith("PHASES "):
            phases = json.loads(line[7:])
    return wall, int(usage.ru_maxrss), sampler.peak_kib, phases, out.decode(errors="replace")


def stored_rows(case: Path) -> tuple[int, int]:
    import duckdb
    con = duckdb.connect(str(case / "case.duckdb"), read_only=True)
    try:
        counts = {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                  for t in COUNTED}
    finally:
        con.close()
    return sum(counts.values()), counts["findings"]


def measure(hosts: int, seed: int, work: Path) -> Run:
    from deminer.scenarios.fleet import check_case, write_fleet

    fleet, case = work / f"fleet-{hosts}", work / f"case-{hosts}"
    start = time.perf_counter()
    truth = write_fleet(fleet, hosts, seed)
    generate = time.perf_counter() - start
    files = [p for p in fleet.rglob("*") if p.is_file() and p.name != "truth.json"]
    run = Run(hosts, len(files), sum(p.stat().st_size for p in files) / 1e6, generate)
    pz = ", ".join(sorted(truth.patient_zero))
    print(f"{hosts:,} hosts: generated {run.files:,} files, {run.mb:.1f} MB in {generate:.1f} s "
          f"({len(truth.infected)} infected, patient zero {pz})", flush=True)
    run.wall, run.rss_kib, run.tree_kib, run.phases, out = investigate(fleet, case)
    run.summary = next((line for line in out.splitlines() if line.startswith("Hosts:")), "")
    run.rows, run.findings = stored_rows(case)
    run.wrong = check_case(truth, case)
    print(f"  investigate: {run.wall:.1f} s, peak RSS {run.rss_kib / 1024:.0f} MB (process tree "
          f"{run.tree_kib / 1024:.0f} MB); {run.summary}", flush=True)
    return run


def report(runs: list[Run]) -> None:
    print("\n| hosts | input files | input MB | rows | findings | wall s | peak RSS MB | tree RSS MB "
          "| s/host | MB/host |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        rss, tree = r.rss_kib / 1024, r.tree_kib / 1024
        print(f"| {r.hosts:,} | {r.files:,} | {r.mb:.1f} | {r.rows:,} | {r.findings:,} | {r.wall:.1f} "
              f"| {rss:.0f} | {tree:.0f} | {r.wall / r.hosts:.4f} | {max(rss, tree) / r.hosts:.3f} |")
    print("\nwhere the time goes (s, and share of wall; the rest is start-up, imports, case set-up):")
    for r in runs:
        parts = ", ".join(f"{p} {r.phases.get(p, 0):.1f} ({r.phases.get(p, 0) / r.wall:.0%})" for p in PHASES)
        print(f"  {r.hosts:>6,} hosts: {parts}")
    print("\npeak RSS reached by the end of each phase (MB):")
    for r in runs:
        parts = ", ".join(f"{p} {r.phases.get(p + ' peak', 0) / 1024:.0f}" for p in PHASES)
        print(f"  {r.hosts:>6,} hosts: {parts}")
    print("\nresult against the ground truth:")
    for r in runs:
        verdict = "; ".join(r.wrong) or "exact (verdict sets, patient zero, entry vector, edges)"
        print(f"  {r.hosts:>6,} hosts: {verdict}")
    for a, b in itertools.pairwise(runs):
        grow = b.hosts / a.hosts
        peak_a, peak_b = max(a.rss_kib, a.tree_kib), max(b.rss_kib, b.tree_kib)
        extra_rss = (peak_b - peak_a) / 1024 / (b.hosts - a.hosts)
        print(f"\n{a.hosts:,} -> {b.hosts:,} hosts ({grow:.0f}x): wall {b.wall / a.wall:.1f}x, peak RSS "
              f"{peak_b / peak_a:.1f}x; s/host {a.wall / a.hosts:.4f} -> {b.wall / b.hosts:.4f}; "
              f"each extra host {extra_rss * 1024:.0f} KiB of peak RSS")
        for p in PHASES:
            pa, pb = a.phases.get(p, 0.0), b.phases.get(p, 0.0)
            if pa > 0:
                print(f"  {p:9}: {pa:7.1f} s -> {pb:7.1f} s ({pb / pa:5.1f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000],
                    help="hosts per fleet (default 100 1000)")
    ap.add_argument("--big", action="store_true", help="also 10,000 hosts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path,
                    help="keep fleets and cases in this folder (default: a temp folder, removed)")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([10_000] if args.big else [])))
    work = args.keep or Path(tempfile.mkdtemp(prefix="deminer-outbreak-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for hosts in sizes:
            runs.append(measure(hosts, args.seed, work))
            if not args.keep:       # the next size needs the disk more than this one's evidence
                shutil.rmtree(work / f"fleet-{hosts}", ignore_errors=True)
                shutil.rmtree(work / f"case-{hosts}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n`python bench/outbreak_bench.py{' --big' if args.big else ''}`, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs")
    report(runs)
    return 0 if all(not r.wrong for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
