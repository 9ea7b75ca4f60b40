"""Skip a test that writes registry hives when hivex is not installed."""

from __future__ import annotations

import pytest

from deminer.scenarios import hives


def skip_without_hivex() -> None:
    try:
        hives.require_hivex()
    except hives.HivexMissing as exc:
        pytest.skip(str(exc))
