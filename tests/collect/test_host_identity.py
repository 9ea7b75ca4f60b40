"""A bundle names its host: hostname, machine id, OS and its own addresses."""

from __future__ import annotations

from pathlib import Path

from deminer.collect.bundle import host_identity
from deminer.scenarios.proc_tree import FakeProc


def test_identity_of_a_mounted_tree_includes_its_addresses(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.addresses(["10.0.0.5", "192.0.2.7"])
    (tmp_path / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "etc" / "os-release").write_text('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    ident = host_identity(str(tmp_path), "web-01")
    assert ident["ips"] == ["10.0.0.5", "192.0.2.7"]  # loopback left out
    assert ident["machine_id"] == "0123456789abcdef0123456789abcdef"
    assert ident["os"] == "Debian GNU/Linux 12"


def test_identity_without_proc_has_no_addresses(tmp_path: Path) -> None:
    assert host_identity(str(tmp_path), "x")["ips"] == []
