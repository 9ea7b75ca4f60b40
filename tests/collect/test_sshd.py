"""sshd's AuthorizedKeysFile rules, as the lateral and persistence collectors share them.

Trees are written under ``tmp_path`` and read through ``--root``; the expectations follow
sshd_config(5): the first value obtained wins (an Include is read where it stands), one
value lists several files and all of them count, ``none`` is none, Match blocks override.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deminer.collect import lateral, persistence, sshd
from deminer.collect.bundle import Context
from deminer.scenarios import linux_host as trees
from deminer.scenarios.treefs import link, write

DEBIAN_TOP = "Include /etc/ssh/sshd_config.d/*.conf\n"


class Capture(Context):
    def __init__(self, root: Path) -> None:
        super().__init__(root=str(root), host="web-01")
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def emit(self, table: str, row: dict[str, Any]) -> None:
        json.dumps(row)
        self.rows[table].append(row)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Capture]:
    trees.write_base(tmp_path)
    capture = Capture(tmp_path)
    yield capture
    capture.discard()


def test_defaults_without_a_config(ctx: Capture) -> None:
    files = sshd.authorized_keys_files(ctx)
    assert files.used("root") == [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    assert files.named == []


def test_first_value_wins_and_all_its_files_count(ctx: Capture, tmp_path: Path) -> None:
    write(tmp_path, "/etc/ssh/sshd_config", DEBIAN_TOP + "AuthorizedKeysFile .ssh/authorized_keys\n"
          "AuthorizedKeysFile /etc/ssh/ignored/%u\n")
    # The drop-in comes first through the Include at the top, so its value is the one sshd uses.
    write(tmp_path, "/etc/ssh/sshd_config.d/10-keys.conf",
          "AuthorizedKeysFile  .ssh/authorized_keys /etc/ssh/keys/%u.pub\n")
    files = sshd.authorized_keys_files(ctx)
    assert files.used("admin") == [".ssh/authorized_keys", "/etc/ssh/keys/%u.pub"]
    assert files.named == [".ssh/authorized_keys", "/etc/ssh/keys/%u.pub", "/etc/ssh/ignored/%u"]


def test_none_means_no_files_and_an_unincluded_dropin_is_only_named(ctx: Capture, tmp_path: Path) -> None:
    write(tmp_path, "/etc/ssh/sshd_config", "PasswordAuthentication no\nAuthorizedKeysFile none\n")
    write(tmp_path, "/etc/ssh/sshd_config.d/99-backdoor.conf", "AuthorizedKeysFile /var/tmp/.k\n")
    files = sshd.authorized_keys_files(ctx)
    assert files.used("root") == []
    assert files.named == ["/var/tmp/.k"]


def test_match_blocks(ctx: Capture, tmp_path: Path) -> None:
    write(tmp_path, "/etc/ssh/sshd_config", "AuthorizedKeysFile .ssh/authorized_keys\n"
          "Match User deploy,ci-*,!ci-prod\n  AuthorizedKeysFile /srv/keys/%u\n  AuthorizedKeysFile /x\n"
          "Match Address 10.0.0.0/8\n  AuthorizedKeysFile /var/tmp/.net\n"
          "Match User backup\n  PasswordAuthentication no\n"
          "Match all\n  AuthorizedKeysFile .ssh/authorized_keys .ssh/extra\n")
    files = sshd.authorized_keys_files(ctx)
    assert files.used("deploy") == files.used("ci-test") == ["/srv/keys/%u"]
    # ci-prod is excluded from the first block; Match all applies to everyone left.
    assert files.used("ci-prod") == files.used("backup") == [".ssh/authorized_keys", ".ssh/extra"]
    assert "/var/tmp/.net" in files.named  # an address match cannot be decided offline


def test_key_file_path_tokens() -> None:
    assert sshd.key_file_path("%h/.ssh/k_%u_%U%%", "bob", "/home/bob", 1001) == "/home/bob/.ssh/k_bob_1001%"
    assert sshd.key_file_path(".ssh/authorized_keys", "bob", "/home/bob/", None) == \
        "/home/bob/.ssh/authorized_keys"
    assert sshd.key_file_path("/etc/keys/%U-%x", "ghost", "/", None) == "/etc/keys/-%x"


def test_collectors_agree_on_what_sshd_reads(ctx: Capture, tmp_path: Path) -> None:
    # sshd reads only /etc/ssh/keys/%u for admin: the key in ~/.ssh/authorized_keys is
    # listed (someone put it there) but not enabled, and lateral counts only the first.
    write(tmp_path, "/etc/ssh/sshd_config", "AuthorizedKeysFile /etc/ssh/keys/%u\n")
    write(tmp_path, "/etc/ssh/keys/admin", trees.ADMIN_KEY + "\n")
    write(tmp_path, "/home/admin/.ssh/authorized_keys", trees.ATTACKER_KEY + "\n")
    # A link to the real config (NixOS keeps it in the store) is followed inside the root.
    write(tmp_path, "/etc/static/sshd_config", "AuthorizedKeysFile /etc/ssh/keys/%u\n")
    (tmp_path / "etc/ssh/sshd_config").unlink()
    link(tmp_path, "/etc/ssh/sshd_config", "/etc/static/sshd_config")
    persistence.collect(ctx)
    lateral.collect(ctx)
    keys = {(r["location"], r["enabled"]) for r in ctx.rows["persistence"] if r["kind"] == "authorized_key"}
    assert keys == {("/etc/ssh/keys/admin", True), ("/home/admin/.ssh/authorized_keys", False)}
    counts = {r["user"]: r["keys"] for r in ctx.rows["accounts"]}
    assert counts["admin"] == 1
    assert [e for e in ctx.rows["errors"] if "sshd_config" in e["source"]] == []
