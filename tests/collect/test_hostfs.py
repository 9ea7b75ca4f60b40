"""The one passwd/homes reader and the safe readers every collector shares, on --root trees."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deminer.collect import hostfs, persistence
from deminer.collect.bundle import Context
from deminer.scenarios import linux_host as trees
from deminer.scenarios.treefs import link, write

PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "nobody:x:65534:65534:no\x0cbody:/:/bin/bash\n"          # a form feed is not a line break
          "svc:x:990:990::/srv/svc/:/bin/sh\n"
          "gone:x:991:991::/home/gone:/bin/sh\n"
          "+@nis::::::\n"
          "short:x:5\n")


class Capture(Context):
    def __init__(self, root: Path) -> None:
        super().__init__(root=str(root), host="web-01")
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def emit(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def errors(self) -> list[tuple[str, str]]:
        return [(e["source"], e["message"]) for e in self.rows.get("errors", [])]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, Capture]]:
    tree = tmp_path / "host"
    write(tree, "/etc/passwd", PASSWD)
    for home in ("/root", "/srv/svc", "/data/home/carol", "/home/orphan"):
        (tree / home.lstrip("/")).mkdir(parents=True, exist_ok=True)
    link(tree, "/home/carol", "../data/home/carol")      # a home moved to another disk
    ctx = Capture(tree)
    yield tree, ctx
    ctx.discard()


def test_users_lines_and_errors(root: tuple[Path, Capture]) -> None:
    tree, ctx = root
    users = hostfs.read_users(ctx, report=True)
    assert [(u.name, u.uid, u.home, u.line) for u in users] == [
        ("root", 0, "/root", 1), ("nobody", 65534, "/", 2), ("svc", 990, "/srv/svc/", 3),
        ("gone", 991, "/home/gone", 4)]
    assert ctx.errors() == [(str(tree / "etc/passwd"), "line 6: not a passwd entry (3 fields, not 7)")]
    assert hostfs.owner_names(users)[990] == "svc" and hostfs.owner({}, 7) == "7"


def test_passwd_behind_a_link_inside_the_root_is_read(root: tuple[Path, Capture]) -> None:
    tree, ctx = root
    os.rename(tree / "etc/passwd", tree / "etc/passwd.real")
    link(tree, "/etc/passwd", "/etc/passwd.real")        # absolute: the root's /etc, not ours
    assert [u.name for u in hostfs.read_users(ctx)] == ["root", "nobody", "svc", "gone"]
    link(tree, "/etc/passwd", "/etc/passwd")             # a loop: named, nothing read
    assert hostfs.read_users(ctx) == []
    assert ctx.errors() == [(str(tree / "etc/passwd"),
                             "cannot read: too many levels of symbolic links (a loop?)")]


def test_homes_for_walkers_and_for_fixed_reads(root: tuple[Path, Capture]) -> None:
    _, ctx = root
    users = hostfs.read_users(ctx)
    owner = hostfs.owner_names(users).get(os.getuid(), str(os.getuid()))
    # Walkers get real folders only, never "/" (it would walk the whole system).
    assert hostfs.homes(ctx, users) == [
        ("root", "/root"), ("svc", "/srv/svc"), (owner, "/home/carol"), (owner, "/home/orphan")]
    # Fixed reads (persistence) keep every passwd home: a key in /.ssh counts for nobody.
    assert hostfs.homes(ctx, users, walkable=False) == [
        ("root", "/root"), ("nobody", "/"), ("svc", "/srv/svc"), ("gone", "/home/gone"),
        (owner, "/home/carol"), (owner, "/home/orphan")]


def test_persistence_reads_keys_of_a_home_at_the_root(tmp_path: Path) -> None:
    trees.write_base(tmp_path)
    with open(tmp_path / "etc/passwd", "a", encoding="utf-8") as fh:
        fh.write("nobody:x:65534:65534:nobody:/:/bin/bash\n")
    write(tmp_path, "/.ssh/authorized_keys", trees.ATTACKER_KEY + "\n")
    ctx = Capture(tmp_path)
    try:
        persistence.collect(ctx)
    finally:
        ctx.discard()
    keys = [(r["location"], r["user"], r["enabled"]) for r in ctx.rows["persistence"]
            if r["kind"] == "authorized_key"]
    assert keys == [("/.ssh/authorized_keys", "nobody", True)]


def test_reads_refuse_fifos_links_and_bound_sizes(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"a" * 100 + b"TAIL")
    (tmp_path / "link").symlink_to(tmp_path / "big")
    for name in ("fifo", "link"):
        with pytest.raises(OSError):
            hostfs.read_head(str(tmp_path / name), 10)
    assert hostfs.read_head(str(tmp_path / "big"), 3) == b"aaa"
    assert hostfs.read_tail(str(tmp_path / "big"), 4) == (b"TAIL", 104)
    assert hostfs.file_flags(str(tmp_path / "fifo")) == (None, None)
