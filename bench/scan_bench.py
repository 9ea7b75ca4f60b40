"""Benchmark `deminer scan` end to end against a responder's manual triage commands.

Starts N extra processes (default 300), then in one run times:
  * deminer's collector alone (with a 0 s CPU window, so only collection work is timed),
  * `deminer scan` end to end (collect + ingest + detect + report), minus its CPU window,
  * the baseline: the shell commands a responder types first (ps, ss, crontabs, units, tmp
    listings, hashing process executables), which see less than deminer does.
Prints wall times, peak RSS, bundle size and the ratio. Run as root for the full picture.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = r"""
ps -eo pid,ppid,user,pcpu,rss,lstart,comm,args >/dev/null
ss -tanpu >/dev/null 2>&1 || netstat -tanp >/dev/null 2>&1
cat /etc/crontab /etc/cron.d/* /var/spool/cron/crontabs/* >/dev/null 2>&1
find /etc/systemd /lib/systemd/system -name '*.service' -exec cat {} + >/dev/null 2>&1
ls -laR /tmp /var/tmp /dev/shm >/dev/null 2>&1
cat /etc/ld.so.preload /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys >/dev/null 2>&1
for p in /proc/[0-9]*; do sha256sum "$p/exe"; done >/dev/null 2>&1
"""


def _run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=300)
    ap.add_argument("--cpu-window", type=float, default=1.0)
    args = ap.parse_args()
    deminer = shutil.which("deminer") or str(Path(sys.executable).parent / "deminer")
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.processes)]
    try:
        nproc = sum(1 for n in os.listdir("/proc") if n.isdigit())
        work = Path(tempfile.mkdtemp(prefix="deminer-bench-"))
        # The collector as shipped: the stdlib-only zipapp, run by the plain interpreter.
        from deminer.collect.zipapp import build
        pyz = str(build(work / "deminer-collect.pyz"))
        # Each measurement runs in its own child so peak RSS is that child's alone.
        col_wall, _ = _run([sys.executable, "-I", pyz, "--cpu-window", "0", "--no-nice",
                            "-o", str(work / "c.tar.gz")])
        col_rss = _peak_of([sys.executable, "-I", pyz, "--cpu-window", "0", "--no-nice",
                            "-o", str(work / "c2.tar.gz")])
        bundle_size = (work / "c.tar.gz").stat().st_size
        scan_cmd = [deminer, "scan", "--cpu-window", str(args.cpu_window), "--case",
                    str(work / "case"), "--quiet"]
        scan_wall, _ = _run(scan_cmd)
        scan_rss = _peak_of([*scan_cmd[:-3], "--case", str(work / "case2"), "--quiet"])
        base_wall, _ = _run(["bash", "-c", BASELINE])
        shutil.rmtree(work, ignore_errors=True)
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()
    scan_net = scan_wall - args.cpu_window
    print(f"processes running        : {nproc} ({args.processes} of them extra sleepers)")
    print(f"collector alone          : {col_wall:6.2f} s wall, peak RSS {col_rss / 1024:6.1f} MB, "
          f"bundle {bundle_size / 1024:.0f} KiB")
    print(f"deminer scan (end to end): {scan_net:6.2f} s wall without the {args.cpu_window:g} s "
          f"CPU window, peak RSS {scan_rss / 1024:6.1f} MB")
    print(f"baseline manual triage   : {base_wall:6.2f} s wall")
    print(f"ratio scan/baseline      : {scan_net / base_wall:6.2f}x")
    return 0


def _peak_of(cmd: list[str]) -> int:
    """Peak RSS (KiB) of a command, measured by GNU time when present, else by wait4."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return int(usage.ru_maxrss)


if __name__ == "__main__":
    sys.exit(main())
