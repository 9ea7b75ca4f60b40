"""Folder trees that are a copy of a Windows system drive (KAPE targets, a copied ``C:\\``).

KAPE's target output, an extracted Velociraptor collection and a plain copy of ``C:\\`` all lay
the drive out below one folder — ``C``, ``C%3A``, ``%5C%5C.%5CC%3A`` or any other name —
holding ``Windows/System32/winevt/Logs``, ``Windows/System32/config/SYSTEM`` or
``Windows/System32/Tasks``. Such a folder is recognised by that content, never by its name,
comparing names case-insensitively (Windows does, and copies keep whatever case the tool
wrote). Every file below it belongs to one host, named by, in this order:

1. the SYSTEM hive's ``ComputerName`` (``Select\\Current`` picks ``ControlSet00N``, then
   ``Control\\ComputerName\\ComputerName``, else ``Services\\Tcpip\\Parameters\\Hostname``);
2. the folder's own name or, when that names a drive (``C``, ``C%3A``, ``C:``) or is generic
   (``triage``, ``uploads``, …), its parent's: KAPE's ``--tdest D:\\out\\%m`` puts the
   machine name there, and ``<timestamp>_<HOST>`` container names count as ``HOST``.

Rule 2 is a guess from names, so it only ever looks one folder up; when it finds nothing the
files keep the host they name themselves (an EVTX record's ``Computer``).

The ingest walk calls ``host_for(file, top)`` for each file when the user gave no host;
archives call ``roots_in_names`` on their member names and ``hive_computer_name`` on the
extracted hive.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deminer.sources.base import host_id

MAX_HIVE = 512 << 20          # a SYSTEM hive is 10-100 MiB; regipy reads it whole
_DRIVE = re.compile(r"^(?:[a-z](?::|%3a)?|(?:\\\\|%5c%5c)[.?](?:\\|%5c)[a-z](?::|%3a))$", re.IGNORECASE)
_STAMPED = re.compile(r"^\d{4}-?\d{2}-?\d{2}T?\d{4,6}_(.+)$")      # KAPE: 2024-03-05T021407_WEB01
_HOSTNAME = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Folder names responders and tools use for the layers around a drive copy: never a host.
_GENERIC = frozenset({
    "auto", "backup", "c", "case", "cases", "collection", "collections", "copy", "data", "disk",
    "drive", "evidence", "export", "exports", "extract", "extracted", "file", "files", "home",
    "image", "images", "kape", "media", "mnt", "mount", "ntfs", "out", "output", "mout", "root",
    "tmp", "temp", "tout", "triage", "uploads", "users", "vol", "volume", "windows",
})
_HIVE_LOG = logging.getLogger("regipy")
_HIVE_LOG.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class WindowsRoot:
    path: Path              # the folder that is a copy of the system drive
    host: str | None        # host id, or None when neither the hive nor the names give one
    host_from: str          # "SYSTEM hive", "folder name" or "" (no host)


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` whatever its case; symlinks are not followed (they may point anywhere)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower() == name and not entry.is_symlink():
                    return Path(entry.path)
    except OSError:
        return None
    return None


def find_nocase(folder: Path | None, *names: str) -> Path | None:
    """``folder/a/b/…`` matching each name case-insensitively (symlinks not followed)."""
    for name in names:
        if folder is None:
            return None
        folder = _child(folder, name)
    return folder


@functools.lru_cache(maxsize=65536)
def detect_windows_root(path: Path) -> WindowsRoot | None:
    """The Windows tree rooted at ``path``, or None if ``path`` is not a drive copy."""
    system32 = find_nocase(path, "windows", "system32")
    if system32 is None:
        return None
    hive = find_nocase(system32, "config", "system")
    if hive is not None and not hive.is_file():
        hive = None
    logs, tasks = find_nocase(system32, "winevt", "logs"), find_nocase(system32, "tasks")
    if hive is None and not (logs and logs.is_dir()) and not (tasks and tasks.is_dir()):
        return None
    name = hive_computer_name(hive) if hive is not None else None
    if name:
        return WindowsRoot(path, host_id(name), "SYSTEM hive")
    host = folder_host(path.absolute().parts)
    return WindowsRoot(path, host, "folder name" if host else "")


def host_for(file: Path, top: Path) -> str | None:
    """The host of the nearest Windows tree holding ``file``, looking no higher than ``top``."""
    if not file.is_relative_to(top):
        return None
    for folder in file.parents:
        root = detect_windows_root(folder)
        if root is not None:
            return root.host
        if folder == top:
            break
    return None


def folder_host(parts: Sequence[str]) -> str | None:
    """A host named by the folders holding a drive copy: its own name, else its parent's."""
    for name in list(parts)[::-1][:2]:
        stamped = _STAMPED.match(name)
        name = stamped.group(1) if stamped else name
        if _DRIVE.match(name) or name.lower() in _GENERIC:
            continue
        return host_id(name) if _HOSTNAME.match(name) else None
    return None


def stamped_host(name: str) -> str | None:
    """``HOST`` from a KAPE-style ``<timestamp>_<HOST>`` name (an archive's, say), else None."""
    stamped = _STAMPED.match(name)
    host = stamped.group(1) if stamped else ""
    return host_id(host) if _HOSTNAME.match(host) and host.lower() not in _GENERIC else None


def roots_in_names(names: Iterable[str]) -> dict[str, str | None]:
    """Drive copies among archive member names (``/``-separated): root prefix → SYSTEM hive.

    The prefix is ``""`` when the archive's top is the drive; the value is the member name of
    that root's ``Windows/System32/config/SYSTEM``, or None when the archive has none.
    """
    roots: dict[str, str | None] = {}
    for name in names:
        parts = name.split("/")
        low = [p.lower() for p in parts]
        for i in range(len(low) - 3):
            if low[i] != "windows" or low[i + 1] != "system32":
                continue
            hive = low[i + 2:] == ["config", "system"]
            if hive or low[i + 2] == "tasks" or low[i + 2:i + 4] == ["winevt", "logs"]:
                root = "/".join(parts[:i])
                if hive:
                    roots[root] = name
                else:
                    roots.setdefault(root, None)
                break
    return roots


def _value(hive: Any, key: str, name: str) -> object:
    nk = hive.get_key(key)
    for value in nk.iter_values():
        if str(value.name).lower() == name:
            return value.value
    return None


def hive_computer_name(path: Path) -> str | None:
    """``ComputerName`` from a SYSTEM hive file, or None (not a SYSTEM hive, damaged, too big)."""
    from regipy.registry import RegistryHive  # here: only drive copies with a hive pay for it

    try:
        if path.stat().st_size > MAX_HIVE:
            return None
        hive = RegistryHive(str(path))  # type: ignore[no-untyped-call]
        current = _value(hive, "\\Select", "current")
        number = current if isinstance(current, int) and 0 < current < 1000 else 1
        control = f"\\ControlSet{number:03d}"
        for key, name in ((f"{control}\\Control\\ComputerName\\ComputerName", "computername"),
                          (f"{control}\\Services\\Tcpip\\Parameters", "hostname")):
            try:
                value = _value(hive, key, name)
            except Exception:  # regipy raises its own types for a missing key
                continue
            text = value.split("\0", 1)[0].strip() if isinstance(value, str) else ""
            if text:
                return text
    # A hostile or damaged hive can make regipy raise nearly anything; here it only means
    # "no name from the hive", and the folder name is tried next.
    except Exception:
        return None
    return None
