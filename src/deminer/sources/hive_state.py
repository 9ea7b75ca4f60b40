"""Whether a registry hive holds its last writes: a copy taken from a running Windows often
does not, and what is missing from it is in the transaction logs beside it."""

from __future__ import annotations

import struct
from pathlib import Path


def dirty_message(path: Path, data: bytes) -> str | None:
    """What to say of a hive whose last writes did not reach it, or None when it is clean.

    Windows bumps the primary sequence number before it writes a hive and the secondary one
    after; when they differ, recent changes (a new service, a Run value, WannaMine's
    LastBackup) may be only in the transaction logs beside it (``SYSTEM.LOG1``, ``.LOG2``),
    as in many copies taken from a running system. deminer reads the hive as it is.
    """
    if len(data) < 12:
        return None
    primary, secondary = struct.unpack_from("<II", data, 4)
    if primary == secondary:
        return None
    wanted = {f"{path.name.lower()}.{ext}" for ext in ("log", "log1", "log2")}
    try:
        logs = sorted(p.name for p in path.parent.iterdir() if p.name.lower() in wanted)
    except OSError:
        logs = []
    where = (f"{', '.join(logs)} beside it hold them and were not applied: replay them with a "
             "registry tool and ingest the result" if logs else
             "no .LOG1/.LOG2 beside it: collect them too, or those changes are lost")
    return (f"dirty hive (sequence numbers {primary} and {secondary} differ): the latest changes "
            f"may be missing from it; {where}")
