"""Writing host trees for scenarios: files with fixed times, links, a dpkg database, keys.

Every function writes under ``root`` (a folder standing for ``/``), never the real host.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from pathlib import Path

CLEAN_MTIME = 1_672_531_200               # 2023-01-01T00:00:00Z
INFECTED_MTIME = 1_709_348_645            # 2024-03-02T03:04:05Z


# --- low-level writers ---------------------------------------------------------------------
def write(root: Path, host_path: str, content: str | bytes, mode: int = 0o644,
          mtime: int | None = CLEAN_MTIME) -> Path:
    """Write a file at ``host_path`` under ``root`` with a mode and a fixed mtime."""
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def append(root: Path, host_path: str, text: str, mtime: int = INFECTED_MTIME) -> Path:
    path = root / host_path.lstrip("/")
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return write(root, host_path, old + text, path.stat().st_mode & 0o7777
                 if path.exists() else 0o644, mtime)


def link(root: Path, host_path: str, target: str) -> Path:
    """A symlink at ``host_path`` whose target is written as on the host (absolute or relative)."""
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.symlink_to(target)
    return path


def register_package(root: Path, package: str, files: list[str],
                     conffiles: tuple[str, ...] = ()) -> None:
    """Record files of the tree as installed by a dpkg package (.list, .md5sums, status)."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    owned = [*files, *conffiles]
    (info / f"{package}.list").write_text("".join(f"{p}\n" for p in owned))

    def md5(p: str) -> str:
        return hashlib.md5((root / p.lstrip("/")).read_bytes()).hexdigest()

    (info / f"{package}.md5sums").write_text("".join(f"{md5(p)}  {p.lstrip('/')}\n" for p in files))
    stanza = f"Package: {package}\nStatus: install ok installed\nVersion: 1.0-1\n"
    if conffiles:
        stanza += "Conffiles:\n" + "".join(f" {p} {md5(p)}\n" for p in conffiles)
    status = root / "var/lib/dpkg/status"
    old = status.read_text() if status.exists() else ""
    status.write_text(old + stanza + "\n")


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _stream(seed: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def public_key(key_type: str, seed: str) -> str:
    """The base64 blob of a deterministic, well-formed public key (ssh-ed25519 or ssh-rsa)."""
    if key_type == "ssh-ed25519":
        blob = ssh_string(b"ssh-ed25519") + ssh_string(_stream(seed, 32))
    elif key_type == "ssh-rsa":
        modulus = bytearray(_stream(seed, 256))
        modulus[0] |= 0x80  # a full 2048-bit modulus ...
        modulus[-1] |= 1    # ... that is odd
        blob = (ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01")
                + ssh_string(b"\x00" + bytes(modulus)))  # mpint: leading 0 keeps it positive
    else:
        raise ValueError(key_type)
    return base64.b64encode(blob).decode("ascii")
