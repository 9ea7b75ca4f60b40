"""A write-only stream without seek: how Go's archive/zip (Velociraptor) writes zips, so
``zipfile`` puts data descriptors after each member instead of sizes in its header."""

from __future__ import annotations

import io
from typing import Any


class Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        return len(b)
