"""The collector stays runnable on old Pythons and ships as one file that really runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deminer.collect import zipapp

COLLECT_DIR = Path(zipapp.__file__).parent


@pytest.mark.parametrize("module", sorted(p.name for p in COLLECT_DIR.glob("*.py") if p.name != "zipapp.py"))
def test_collect_module_parses_as_python36(module: str) -> None:
    source = (COLLECT_DIR / module).read_text(encoding="utf-8")
    ast.parse(source, filename=module, feature_version=(3, 6))
    assert "from __future__ import annotations" not in source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deminer"):
            assert node.module.startswith("deminer.collect"), f"{module} imports {node.module}"
        if isinstance(node, ast.NamedExpr):
            pytest.fail(f"{module} uses the walrus operator (3.8+)")


def test_zipapp_collects_a_tree(tmp_path: Path) -> None:
    pyz = zipapp.build(tmp_path / "deminer-collect.pyz")
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("web-01\n")
    out = tmp_path / "b.tar.gz"
    # Run from an empty folder with -I so nothing of the source tree can be imported.
    proc = subprocess.run([sys.executable, "-I", str(pyz), "--root", str(root), "-o", str(out),
                           "--cpu-window", "0.1", "--no-nice"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("sha256 ") and len(last.split()[1]) == 64
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["format"] == "deminer-bundle"
    assert manifest["host"]["hostname"] == "web-01"
    assert set(manifest["members"]) == set(names) - {"manifest.json"}
