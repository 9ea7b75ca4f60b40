"""``make demo``: build the demo host, scan it, and say where the results are.

Writes ``demo-host/`` (the generated host tree) and ``demo-case/`` (the case) in the current
folder, replacing earlier demo output, and opens nothing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deminer.cli import main as deminer
from deminer.scenarios.demo_host import write_demo_host


def main(base: Path | None = None) -> int:
    base = base or Path.cwd()
    host, case = base / "demo-host", base / "demo-case"
    for old in (host, case):
        if old.exists():
            shutil.rmtree(old)
    write_demo_host(host)
    print(f"Demo host written to {host} (an infected Linux web server as a file tree).\n")
    rc = deminer(["scan", "--root", str(host), "--case", str(case), "--cpu-window", "0"])
    if rc == 2:
        return 2
    print(f"\nResults: {case / 'findings.jsonl'} (one JSON object per finding), "
          f"the case store {case / 'case.duckdb'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
