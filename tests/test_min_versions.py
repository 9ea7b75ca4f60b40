"""The lowest dependency versions pyproject allows are the ones CI tests (`make test-min`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = {}
    for spec in project["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", spec.split(";")[0].strip())
        assert m, f"dependency without a plain lower bound: {spec!r}"
        out[m.group(1).lower()] = m.group(2)
    return out


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "min-versions.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_lower_bound_is_pinned_for_the_minimum_run() -> None:
    pins = _pins()
    for name, version in _lower_bounds().items():
        assert pins.get(name) == version, f"{name}>={version} in pyproject, {pins.get(name)} in min-versions"
