"""The files collector: executables and hidden entries in temp folders, recently changed
system binaries, miner configs, hashes, saved content and attribute flags, on temp ``--root``
trees that hold the tricks miners use (hidden dirs in /tmp/.X11-unix, trailing-space names,
non-UTF-8 names, FIFOs, symlink loops, a symlinked /var/run)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deminer.collect import files
from deminer.collect.bundle import Context, utc_iso
from tests.collect.conftest import BundleReader

ELF_SOURCE = "/bin/true"
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
FS_IOC_SETFLAGS = (1 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 2
MINER_CONFIG = json.dumps({"autosave": True, "pools": [
    {"url": "stratum+tcp://pool.supportxmr.com:3333", "user": "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33"
     "DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A", "pass": "x"}]})


class Bundle(BundleReader):
    def rows(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = [{k: v for k, v in r.items() if k not in ("host", "ts")}
               for r in self.tables.get("files", []) if reason in (None, r["reason"])]
        return sorted(out, key=lambda r: r["path"])


def run(root: Path, now: float | None = None, max_file_bytes: int = 64 * 1024) -> Bundle:
    ctx = Context(root=str(root), host="web01", max_file_bytes=max_file_bytes)
    files.collect(ctx, now=now)
    out = root.parent / "bundle.tar.gz"
    ctx.write_bundle(str(out))
    return Bundle(out)


def put(root: Path, host_path: str | bytes, data: str | bytes = b"", mode: int = 0o644,
        mtime: float | None = None) -> Path:
    rel = host_path.lstrip(b"/") if isinstance(host_path, bytes) else host_path.lstrip("/").encode()
    real = Path(os.fsdecode(os.path.join(os.fsencode(root), rel)))
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes(data.encode() if isinstance(data, str) else data)
    real.chmod(mode)
    if mtime is not None:
        os.utime(real, (mtime, mtime))
    return real


def flags(real: Path) -> tuple[bool | None, bool | None]:
    """What FS_IOC_GETFLAGS says, read here independently of the collector."""
    mode = os.lstat(real).st_mode
    if not (os.path.isfile(real) or os.path.isdir(real)) or os.path.islink(real):
        return None, None
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        value = struct.unpack("=i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0]
    except OSError:
        return None, None
    finally:
        os.close(fd)
    del mode
    return bool(value & 0x10), bool(value & 0x20)


def expect(root: Path, host_path: str, reason: str, saved: bool, hashed: bool,
           owner: str = "root") -> dict[str, Any]:
    real = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(host_path.lstrip("/")))))
    st = os.lstat(real)
    is_file = os.path.isfile(real) and not os.path.islink(real)
    data = real.read_bytes() if is_file else b""
    immutable, append_only = flags(real)
    return {"path": os.fsencode(host_path).decode("utf-8", "backslashreplace"),
            "source": os.fsencode(host_path).decode("utf-8", "backslashreplace"),
            "size": st.st_size, "mtime": utc_iso(st.st_mtime), "ctime": utc_iso(st.st_ctime),
            "mode": stat.S_IMODE(st.st_mode), "owner": owner, "reason": reason,
            "sha256": hashlib.sha256(data).hexdigest() if hashed else None,
            "magic": data[:4].hex() if is_file else None, "content_saved": saved,
            "immutable": immutable, "append_only": append_only}


# -- temp folders ---------------------------------------------------------------------------
def test_tmp_executables_hidden_entries_and_configs(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    elf = Path(ELF_SOURCE).read_bytes()
    put(root, "/tmp/.X11-unix/.rsync/a/kswapd0", elf, 0o755)
    put(root, "/tmp/.X11-unix/.rsync/a/run", "#!/bin/sh\n./kswapd0 -c config.json\n", 0o644)
    put(root, "/tmp/.X11-unix/.rsync/a/notes.txt", "not executable, not hidden\n")
    put(root, "/tmp/.../x", "inside a dir named three dots\n")
    (root / "tmp/. ").mkdir()
    put(root, "/tmp/.  ", "trailing-space name\n")
    put(root, "/tmp/config.json", MINER_CONFIG)
    put(root, "/tmp/other.json", '{"a": 1}')
    put(root, b"/tmp/\xff\xfe\x1b[31mevil", elf, 0o700)
    put(root, "/tmp/big.bin", b"\x7fELF" + b"\0" * 100000, 0o755)
    (root / "tmp/loop").symlink_to("loop")
    (root / "tmp/.shadow").symlink_to("/etc/shadow")
    os.mkfifo(root / "tmp/.fifo")
    put(root, "/dev/shm/.x/miner", elf, 0o755)
    (root / "run").mkdir()
    (root / "run/.hidden").mkdir()
    (root / "var").mkdir()
    (root / "var/run").symlink_to("../run")  # followed once, inside the root
    (root / "run/shm").symlink_to("/dev/shm")  # the same folder twice: one set of rows
    (root / "var/tmp").mkdir()
    b = run(root)
    sha_elf = hashlib.sha256(elf).hexdigest()
    assert b.rows() == sorted([
        expect(root, "/dev/shm/.x", "hidden_dir", False, False),
        expect(root, "/dev/shm/.x/miner", "tmp_exec", True, True),
        expect(root, "/run/.hidden", "hidden_dir", False, False),
        expect(root, "/tmp/.  ", "hidden_file", False, True),
        expect(root, "/tmp/. ", "hidden_dir", False, False),
        expect(root, "/tmp/...", "hidden_dir", False, False),
        expect(root, "/tmp/.X11-unix", "hidden_dir", False, False),
        expect(root, "/tmp/.X11-unix/.rsync", "hidden_dir", False, False),
        expect(root, "/tmp/.X11-unix/.rsync/a/kswapd0", "tmp_exec", True, True),
        expect(root, "/tmp/.X11-unix/.rsync/a/run", "tmp_exec", True, True),
        expect(root, "/tmp/.fifo", "hidden_file", False, False),
        expect(root, "/tmp/.shadow", "hidden_file", False, False),
        expect(root, "/tmp/big.bin", "tmp_exec", False, True),
        expect(root, "/tmp/config.json", "miner_config", True, True),
        expect(root, "/tmp/\udcff\udcfe\x1b[31mevil", "tmp_exec", True, True),
    ], key=lambda r: r["path"])
    assert b.members["files/" + sha_elf] == elf
    assert b.members["files/" + hashlib.sha256(MINER_CONFIG.encode()).hexdigest()] == \
        MINER_CONFIG.encode()
    assert [r["magic"] for r in b.rows("tmp_exec")][:2] == ["7f454c46", "7f454c46"]
    assert b.errors() == []


def test_walk_bounds_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "TMP_ENTRIES", 10)
    monkeypatch.setattr(files, "TMP_DEPTH", 3)
    root = tmp_path / "host"
    for i in range(20):
        put(root, f"/tmp/.f{i:02d}", "x")
    put(root, "/var/tmp/a/b/c/.deep/x", "too deep to reach")
    b = run(root)
    assert len(b.rows("hidden_file")) == 10
    assert (str(root / "tmp"), "stopped after 10 entries (bound or time budget)") in b.errors()
    assert not any(".deep" in r["path"] for r in b.rows())


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """chattr +i on a test file (skips where the file system or privileges do not allow)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        old = struct.unpack("=i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=i", old | 0x10) + b"\0" * 4)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EPERM, errno.ENOTTY, errno.EOPNOTSUPP, errno.EACCES):
            pytest.skip(f"cannot set the immutable flag here: {exc}")
        raise
    try:
        yield
    finally:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=i", old) + b"\0" * 4)
        os.close(fd)


def test_immutable_flag_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "host"
    miner = put(root, "/tmp/.x/xmrig", Path(ELF_SOURCE).read_bytes(), 0o755)
    with immutable(miner):
        [row] = run(root).rows("tmp_exec")
    assert (row["path"], row["immutable"], row["append_only"]) == ("/tmp/.x/xmrig", True, False)


# -- system folders -------------------------------------------------------------------------
def test_recent_system_binaries_by_window_and_package_db(tmp_path: Path) -> None:
    real_now = time.time()
    now = real_now + 60 * 86400  # pinned: every ctime (made "now") falls outside the window
    day = 86400
    root = tmp_path / "host"
    put(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nbin:x:2:2::/bin:/usr/sbin/nologin\n")
    put(root, "/var/lib/dpkg/info/coreutils.list", "/usr/bin/ls\n", mtime=1_600_000_000)
    put(root, "/var/lib/dpkg/status", "Package: coreutils\n", mtime=real_now + day)
    put(root, "/usr/bin/ls", b"\x7fELF old", 0o755, mtime=1_600_000_000)
    put(root, "/usr/bin/newtool", b"\x7fELF new", 0o755, mtime=real_now + 50 * day)
    sshd = put(root, "/usr/sbin/sshd", b"\x7fELF patched", 0o755, mtime=real_now + 2 * day)
    os.chown(sshd, 2, 2)
    put(root, "/usr/local/bin/old-script", "#!/bin/sh\n", 0o755, mtime=1_600_000_000)
    put(root, "/lib/systemd/system/sysupdate.service", "[Service]\nExecStart=/tmp/x\n",
        mtime=real_now + 40 * day)
    put(root, "/lib/systemd/system/multi-user.target.wants/sysupdate.service", "[Unit]\n",
        mtime=real_now + 40 * day)
    (root / "bin").symlink_to("usr/bin")  # merged /usr: the same folder once
    b = run(root, now=now)
    assert b.rows() == [
        expect(root, "/lib/systemd/system/multi-user.target.wants/sysupdate.service",
               "recent_system_bin", True, True),
        expect(root, "/lib/systemd/system/sysupdate.service", "recent_system_bin", True, True),
        expect(root, "/usr/bin/newtool", "recent_system_bin", True, True),
        expect(root, "/usr/sbin/sshd", "recent_system_bin", True, True, owner="bin"),
    ]


def test_without_package_db_only_the_window_counts(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/usr/bin/ls", b"\x7fELF", 0o755, mtime=1_600_000_000)
    put(root, "/usr/bin/fresh", b"\x7fELF", 0o755)
    # Pinned "now" five days ahead: fresh (changed today) is recent, ls (ctime today) too.
    b = run(root, now=time.time() + 5 * 86400)
    assert [r["path"] for r in b.rows()] == ["/usr/bin/fresh", "/usr/bin/ls"]
    b = run(root, now=time.time() + 40 * 86400)
    assert b.rows() == []


# -- miner configs in homes -----------------------------------------------------------------
def test_miner_configs_in_homes(tmp_path: Path) -> None:
    root = tmp_path / "host"
    put(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
        "alice:x:1000:1000::/home/alice:/bin/bash\n")
    put(root, "/home/alice/.config/xmrig/config.json", MINER_CONFIG)
    put(root, "/root/moneroocean/c.json", '{"url": "stratum+ssl://gulf.moneroocean.stream:20128"}')
    put(root, "/home/alice/project/package.json", '{"name": "x"}')
    put(root, "/home/alice/a/b/c/d/config.json", MINER_CONFIG)  # deeper than the bound
    put(root, "/home/alice/big.json", b'{"pools": [' + b" " * (2 * 1024 * 1024) + b"]}")
    put(root, "/home/alice/node_modules/x/config.json", MINER_CONFIG)  # skipped folder
    shutil.copy(root / "home/alice/.config/xmrig/config.json", root / "home/alice/copy.json")
    os.chown(root / "home/alice/.config/xmrig/config.json", 1000, 1000)
    b = run(root)
    assert b.rows() == [
        expect(root, "/home/alice/.config/xmrig/config.json", "miner_config", True, True,
               owner="alice"),
        expect(root, "/home/alice/copy.json", "miner_config", True, True),
        expect(root, "/root/moneroocean/c.json", "miner_config", True, True),
    ]
