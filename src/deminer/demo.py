"""``make demo``: triage one infected host, then investigate a small outbreak; print where
the results are.

Writes, in the current folder (replacing earlier demo output) and opening nothing:
``demo-host/`` an infected Linux web server as a file tree, scanned into ``demo-scan/``;
``demo-evidence/`` two seed-case outbreaks (7: web exploit, SystemdMiner and FRP across
servers; 9: SSH brute force with one shared password) as collected evidence — bundles, auth
logs, Zeek and Suricata logs — investigated together into ``demo-case/`` with its report.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deminer.cli import main as deminer
from deminer.scenarios.demo_host import write_demo_host
from deminer.scenarios.seed.build import build

OUTBREAK_CASES = (7, 9)


def main(base: Path | None = None) -> int:
    base = base or Path.cwd()
    host, scan = base / "demo-host", base / "demo-scan"
    evidence, case = base / "demo-evidence", base / "demo-case"
    for old in (host, scan, evidence, case):
        if old.exists():
            shutil.rmtree(old)
    write_demo_host(host)
    print(f"1. One host: {host} is an infected Linux web server as a file tree.\n")
    if deminer(["scan", "--root", str(host), "--case", str(scan), "--cpu-window", "0", "--quiet"]) == 2:
        return 2
    for number in OUTBREAK_CASES:
        build(number, evidence / f"case{number:02d}")
    print(f"\n2. An outbreak: {evidence} holds seed cases {', '.join(map(str, OUTBREAK_CASES))} "
          "as collected evidence.\n")
    if deminer(["investigate", str(evidence), "--case", str(case), "--quiet"]) == 2:
        return 2
    print(f"\nHost triage: {scan / 'report.html'}")
    print(f"Outbreak report: {case / 'report.html'} (graph.json, timeline.jsonl, "
          f"iocs.stix.json beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
