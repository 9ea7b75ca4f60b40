"""``findings.jsonl``: one JSON object per finding, for machines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from deminer.detect.finding import Finding


def write_findings(findings: Iterable[Finding], path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for f in findings:
            fh.write(json.dumps(f.to_json(), sort_keys=True, default=str, ensure_ascii=False) + "\n")
            n += 1
    return n
