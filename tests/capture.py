"""Capture loopback traffic with Debian's dumpcap for tests (skips where it cannot)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def dumpcap(capture_filter: str, out: Path) -> Iterator[Path]:
    """Capture loopback traffic matching ``capture_filter`` into ``out`` while the block runs."""
    exe = shutil.which("dumpcap")
    if exe is None:
        pytest.skip("dumpcap is not installed (make sysdeps)")
    log = out.with_suffix(".log")
    with log.open("wb") as err:
        proc = subprocess.Popen([exe, "-q", "-i", "lo", "-f", capture_filter, "-w", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while b"Capturing on" not in log.read_bytes() and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if proc.poll() is not None or b"Capturing on" not in log.read_bytes():
            pytest.skip(f"dumpcap cannot capture here: {log.read_bytes()[-300:]!r}")
        # "Capturing on" can come a moment before the filter is live on a loaded machine
        # (a CI run once captured nothing): give it time before the traffic starts.
        time.sleep(0.5)
        empty = _size(out)
        yield out
        _settle(out, empty)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _settle(out: Path, empty: int, limit: float = 5.0) -> None:
    """Wait until dumpcap has written packets and the file stopped growing for 0.5 s."""
    deadline = time.monotonic() + limit
    last, since = _size(out), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        size = _size(out)
        if size != last:
            last, since = size, time.monotonic()
        elif size > empty and time.monotonic() - since >= 0.5:
            return
