"""Build the standalone collector: one ``.pyz`` file holding only ``deminer.collect``.

The zipapp needs nothing but a Python 3.6+ interpreter on the suspect host.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

_MAIN = (
    "import sys\n"
    "from deminer.collect.main import main\n"
    "sys.exit(main())\n"
)


def build(output: Path) -> Path:
    """Write the collector zipapp to ``output`` and make it executable."""
    package = Path(__file__).parent
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    with tmp.open("wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("__main__.py", _MAIN)
            zf.writestr("deminer/__init__.py", "")
            for src in sorted(package.glob("*.py")):
                if src.name == "zipapp.py":
                    continue
                zf.write(src, f"deminer/collect/{src.name}")
    tmp.replace(output)
    output.chmod(output.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return output
