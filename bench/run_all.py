"""Run every benchmark in this folder, one after the other, printing each one's figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("scan_bench.py", "authlog_bench.py", "evtx_bench.py", "pcap_bench.py", "outbreak_bench.py")


def main() -> int:
    here = Path(__file__).parent
    worst = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        worst = max(worst, subprocess.call([sys.executable, str(here / name)]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
