"""The lateral collector: accounts, private keys, known_hosts, ssh config, histories and the
orchestration tools a miner rides from host to host (seed case 6), on temp ``--root`` trees.

Keys are made by Debian's ssh-keygen (tests skip without it) and every fingerprint is checked
against what ``ssh-keygen -l`` itself prints.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.collect import lateral
from deminer.collect.bundle import Context
from tests.collect.conftest import BundleReader

KEYGEN = shutil.which("ssh-keygen")
needs_keygen = pytest.mark.skipif(KEYGEN is None, reason="needs ssh-keygen (openssh-client)")
PASSPHRASE = "correct horse"


# -- helpers --------------------------------------------------------------------------------
class Bundle(BundleReader):
    def rows(self, table: str, keep_ts: bool = False, **match: Any) -> list[dict[str, Any]]:
        out = []
        for row in self.tables.get(table, []):
            if all(row.get(k) == v for k, v in match.items()):
                row = {k: v for k, v in row.items() if k != "host" and (keep_ts or k != "ts")}
                out.append(row)
        return out


def run(root: Path) -> Bundle:
    ctx = Context(root=str(root), host="web01")
    lateral.collect(ctx)
    out = root.parent / (root.name + ".tar.gz")
    ctx.write_bundle(str(out))
    return Bundle(out)


def put(root: Path, host_path: str, data: str | bytes, mode: int | None = None) -> Path:
    real = root / host_path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    real.write_bytes(data)
    if mode is not None:
        real.chmod(mode)
    return real


PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
deploy:$1$saltsalt$0123456789abcdefghijkl:1001:1001::/home/deploy:/bin/sh
ghost:x:1002:1002::/home/ghost:/bin/bash
nopass::1003:1003::/nonexistent:/bin/sh
this is not a passwd line
"""
SHADOW = """root:$6$rounds=5000$salt$hashhashhash:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
alice:!$y$j9T$salt$hash:19000:0:99999:7:::
deploy:x:19000::::::
nopass::19000::::::
"""


def base_tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    put(root, "/etc/hostname", "web01\n")
    put(root, "/etc/passwd", PASSWD)
    put(root, "/etc/shadow", SHADOW, 0o640)
    for home in ("/root", "/home/alice", "/home/deploy"):
        (root / home.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


def keygen_fp(path: Path) -> str:
    """The fingerprint ``ssh-keygen -lf`` prints for a key file."""
    assert KEYGEN is not None
    out = subprocess.run([KEYGEN, "-lf", str(path)], capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL).stdout
    return out.split()[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Private keys of each format, their public halves and ssh-keygen's fingerprints."""
    if KEYGEN is None:
        pytest.skip("needs ssh-keygen (openssh-client)")
    folder = tmp_path_factory.mktemp("keys")
    made = {
        "ed_plain": ["-t", "ed25519", "-N", "", "-C", "root@web01"],
        "ed_enc": ["-t", "ed25519", "-N", PASSPHRASE, "-C", "deploy@web01"],
        "rsa_pem": ["-t", "rsa", "-b", "1024", "-m", "PEM", "-N", "", "-C", "alice@web01"],
        "rsa_pem_enc": ["-t", "rsa", "-b", "1024", "-m", "PEM", "-N", PASSPHRASE, "-C", "legacy"],
        "ec_pem": ["-t", "ecdsa", "-m", "PEM", "-N", "", "-C", "hostkey"],
        "ec_pkcs8": ["-t", "ecdsa", "-m", "PKCS8", "-N", "", "-C", "loose"],
        "rsa_pkcs8_enc": ["-t", "rsa", "-b", "1024", "-m", "PKCS8", "-N", PASSPHRASE],
        "dsa_pem": ["-t", "dsa", "-m", "PEM", "-N", "", "-C", "old-dsa"],
    }
    out: dict[str, Any] = {}
    for name, args in made.items():
        path = folder / name
        proc = subprocess.run([KEYGEN, "-q", *args, "-f", str(path)], capture_output=True,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:  # DSA is gone from newer OpenSSH builds
            continue
        out[name] = path.read_bytes()
        out[name + ".pub"] = (folder / (name + ".pub")).read_text()
        out[name + ".fp"] = keygen_fp(folder / (name + ".pub"))
    # ssh-keygen reads the public half out of an unencrypted openssh key itself.
    (folder / "ed_plain.pub").unlink()
    assert keygen_fp(folder / "ed_plain") == out["ed_plain.fp"]
    return out


def pub_blob(pub_line: str) -> bytes:
    return base64.b64decode(pub_line.split()[1])


# -- accounts -------------------------------------------------------------------------------
def test_accounts_states_uids_and_key_counts(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    put(root, "/etc/ssh/sshd_config",
        "# where keys are\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/keys/%u.pub\n")
    put(root, "/home/alice/.ssh/authorized_keys",
        keys["ed_plain.pub"] + 'command="/bin/true",from="10.0.0.1" ' + keys["rsa_pem.pub"]
        + "ssh-rsa not-base64!!\n# comment\n")
    put(root, "/etc/ssh/keys/alice.pub", keys["ec_pem.pub"])
    put(root, "/root/.ssh/authorized_keys2", keys["ed_plain.pub"])  # not named by sshd_config
    b = run(root)
    assert b.rows("accounts") == [
        {"user": "root", "uid": 0, "gid": 0, "home": "/root", "shell": "/bin/bash",
         "password_state": "set:sha512crypt", "keys": 0, "source": "/etc/passwd",
         "source_line": 1},
        {"user": "daemon", "uid": 1, "gid": 1, "home": "/usr/sbin", "shell": "/usr/sbin/nologin",
         "password_state": "locked", "keys": 0, "source": "/etc/passwd", "source_line": 2},
        {"user": "alice", "uid": 1000, "gid": 1000, "home": "/home/alice", "shell": "/bin/bash",
         "password_state": "locked", "keys": 3, "source": "/etc/passwd", "source_line": 3},
        {"user": "deploy", "uid": 1001, "gid": 1001, "home": "/home/deploy", "shell": "/bin/sh",
         "password_state": "set:md5crypt", "keys": 0, "source": "/etc/passwd",
         "source_line": 4},
        {"user": "ghost", "uid": 1002, "gid": 1002, "home": "/home/ghost", "shell": "/bin/bash",
         "password_state": "missing", "keys": 0, "source": "/etc/passwd", "source_line": 5},
        {"user": "nopass", "uid": 1003, "gid": 1003, "home": "/nonexistent", "shell": "/bin/sh",
         "password_state": "none", "keys": 0, "source": "/etc/passwd", "source_line": 6},
    ]
    passwd = str(root / "etc/passwd")
    assert (passwd, "line 7: not a passwd entry (1 fields, not 7)") in b.errors()
    everything = b"".join(b.members.values())
    assert b"hashhashhash" not in everything and b"0123456789abcdef" not in everything


def test_accounts_without_shadow_are_unreadable(tmp_path: Path) -> None:
    root = base_tree(tmp_path)
    (root / "etc/shadow").unlink()
    states = {r["user"]: r["password_state"] for r in run(root).rows("accounts")}
    assert states == {"root": "unreadable", "daemon": "unreadable", "alice": "unreadable",
                      "deploy": "set:md5crypt", "ghost": "unreadable", "nopass": "none"}


def test_password_state_schemes() -> None:
    ps = lateral.password_state
    assert [ps("$2b$12$x"), ps("$5$x$y"), ps("$gy$x"), ps("abcdefghijklm"), ps("*LK*"),
            ps("!!"), ps("$9$x"), ps(None)] == [
        "set:bcrypt", "set:sha256crypt", "set:gost-yescrypt", "set:descrypt", "locked",
        "locked", "set:unknown", "unreadable"]


# -- private keys ---------------------------------------------------------------------------
def test_private_keys_metadata_matches_ssh_keygen(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    put(root, "/root/.ssh/id_ed25519", keys["ed_plain"], 0o600)
    put(root, "/root/.ssh/deploy_key", keys["ed_enc"], 0o600)  # encrypted, no .pub
    put(root, "/home/alice/.ssh/id_rsa", keys["rsa_pem"], 0o600)  # PEM, no .pub: n, e from DER
    put(root, "/home/alice/.ssh/old/legacy", keys["rsa_pem_enc"], 0o600)
    put(root, "/home/alice/.ssh/old/legacy.pub", keys["rsa_pem_enc.pub"])
    put(root, "/home/alice/.ssh/work_pkcs8", keys["rsa_pkcs8_enc"], 0o600)
    put(root, "/home/alice/mykey.pem", keys["ec_pkcs8"], 0o600)  # loose in the home
    put(root, "/etc/ssh/ssh_host_ecdsa_key", keys["ec_pem"], 0o600)
    put(root, "/etc/ssh/ssh_host_ecdsa_key.pub", keys["ec_pem.pub"])
    putty_blob = base64.b64encode(pub_blob(keys["ed_plain.pub"])).decode()
    put(root, "/home/alice/.ssh/win.ppk",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nComment: alice-putty\n"
        f"Public-Lines: 2\n{putty_blob[:40]}\n{putty_blob[40:]}\nKey-Derivation: Argon2id\n"
        "Private-Lines: 1\nAAAA\nPrivate-MAC: 00\n")
    put(root, "/home/alice/.ssh/known_hosts", "")
    put(root, "/home/alice/.ssh/broken", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n")
    if "dsa_pem" in keys:
        put(root, "/home/deploy/.ssh/id_dsa", keys["dsa_pem"], 0o600)
    for home, uid in (("/home/alice", 1000), ("/home/deploy", 1001)):
        for dirpath, _, files in os.walk(root / home.lstrip("/")):
            for name in files:
                os.chown(os.path.join(dirpath, name), uid, uid)
    b = run(root)
    got = {r["path"]: r for r in b.rows("ssh_keys")}
    mtime = got["/root/.ssh/id_ed25519"]["mtime"]
    assert mtime.endswith("Z") and len(mtime) >= 20

    def row(path: str, kind: str, user: str, key_type: str | None, enc: bool, fp: str | None,
            comment: str | None) -> dict[str, Any]:
        return {"kind": kind, "path": path, "source": path, "user": user, "key_type": key_type,
                "encrypted": enc, "fingerprint": fp, "comment": comment,
                "mtime": got[path]["mtime"]}

    expected = [
        row("/etc/ssh/ssh_host_ecdsa_key", "host_private", "root", "ecdsa-sha2-nistp256", False,
            keys["ec_pem.fp"], "hostkey"),
        row("/root/.ssh/deploy_key", "private", "root", "ssh-ed25519", True, keys["ed_enc.fp"],
            None),
        row("/root/.ssh/id_ed25519", "private", "root", "ssh-ed25519", False, keys["ed_plain.fp"],
            "root@web01"),
        row("/home/alice/.ssh/broken", "private", "alice", None, False, None, None),
        row("/home/alice/.ssh/id_rsa", "private", "alice", "ssh-rsa", False, keys["rsa_pem.fp"],
            None),
        row("/home/alice/.ssh/old/legacy", "private", "alice", "ssh-rsa", True,
            keys["rsa_pem_enc.fp"], "legacy"),
        row("/home/alice/.ssh/win.ppk", "private", "alice", "ssh-ed25519", True,
            keys["ed_plain.fp"], "alice-putty"),
        row("/home/alice/.ssh/work_pkcs8", "private", "alice", None, True, None, None),
        row("/home/alice/mykey.pem", "private", "alice", "ecdsa-sha2-nistp256", False,
            keys["ec_pkcs8.fp"], None),
    ]
    if "dsa_pem" in keys:
        expected.append(row("/home/deploy/.ssh/id_dsa", "private", "deploy", "ssh-dss", False,
                            keys["dsa_pem.fp"], None))
    assert sorted(got.values(), key=lambda r: r["path"]) == sorted(expected,
                                                                  key=lambda r: r["path"])
    assert (str(root / "home/alice/.ssh/broken"),
            "private key (openssh): no END line (truncated?)") in b.errors()
    # Metadata only: no private key material anywhere in the bundle.
    everything = b"".join(b.members.values())
    assert b"PRIVATE KEY" not in everything
    for name in ("ed_plain", "rsa_pem", "ec_pem", "ec_pkcs8"):
        body = keys[name].split(b"\n")[2]
        assert body not in everything


# -- known_hosts ----------------------------------------------------------------------------
def hashed(host: str, salt: bytes) -> str:
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_known_hosts_plain_hashed_ports_and_markers(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    ed = " ".join(keys["ed_plain.pub"].split()[:2])
    ec = " ".join(keys["ec_pem.pub"].split()[:2])
    entry = hashed("10.0.0.99", b"0123456789abcdefghij")
    put(root, "/home/alice/.ssh/known_hosts",
        f"10.0.0.7 {ed}\n"
        f"[git.example.com]:2222,192.168.5.5 {ec}\n"
        f"10.0.0.7 {ec}\n"
        f"{entry} {ed}\n"
        f"@cert-authority *.example.com {ed}\n"
        "garbage-without-key\n"
        f"!bad.example.com,*.lan,good.lan {ed} trailing comment\n")
    os.chown(root / "home/alice/.ssh/known_hosts", 1000, 1000)
    put(root, "/etc/ssh/ssh_known_hosts", f"gw.example.com {ec}\n")
    b = run(root)
    kh = "/home/alice/.ssh/known_hosts"
    ed_fp, ec_fp = keys["ed_plain.fp"], keys["ec_pem.fp"]

    def key(path: str, line: int, user: str, key_type: str, fp: str, hosts: str,
            marker: str | None = None) -> dict[str, Any]:
        return {"kind": "known_host", "path": path, "source": path, "source_line": line,
                "user": user, "key_type": key_type, "fingerprint": fp, "comment": hosts,
                "options": marker}

    assert b.rows("ssh_keys") == [
        key("/etc/ssh/ssh_known_hosts", 1, "root", "ecdsa-sha2-nistp256", ec_fp, "gw.example.com"),
        key(kh, 1, "alice", "ssh-ed25519", ed_fp, "10.0.0.7"),
        key(kh, 2, "alice", "ecdsa-sha2-nistp256", ec_fp, "[git.example.com]:2222,192.168.5.5"),
        key(kh, 3, "alice", "ecdsa-sha2-nistp256", ec_fp, "10.0.0.7"),
        key(kh, 4, "alice", "ssh-ed25519", ed_fp, entry),
        key(kh, 5, "alice", "ssh-ed25519", ed_fp, "*.example.com", "@cert-authority"),
        key(kh, 7, "alice", "ssh-ed25519", ed_fp, "!bad.example.com,*.lan,good.lan"),
    ]

    def target(host: str, port: int | None, line: int, path: str = kh) -> dict[str, Any]:
        return {"kind": "known_host", "target": host, "user": None, "port": port,
                "key_path": None, "location": path, "source": path, "source_line": line}

    assert b.rows("remote_targets") == [
        target("gw.example.com", None, 1, "/etc/ssh/ssh_known_hosts"),
        target("10.0.0.7", None, 1),
        target("git.example.com", 2222, 2),
        target("192.168.5.5", None, 2),
        target(entry, None, 4),
        target("good.lan", None, 7),
    ]
    assert [e for e in b.errors() if e[0].endswith("known_hosts")] == [
        (str(root / "home/alice/.ssh/known_hosts"),
         "line 6: expected host patterns, key type and key data")]


# -- ssh client config ----------------------------------------------------------------------
SSH_CONFIG = """\
Host *
    ServerAliveInterval 60
Host bastion
    HostName 203.0.113.10
    User jump
    Port 2200
    IdentityFile ~/.ssh/id_rsa
    IdentityFile /home/alice/.ssh/second
Host db-* !db-test
    User dbadmin
Host db-prod db-test
    HostName %h.internal
    ProxyJump bastion,ops@10.9.9.9:2222
Host "legacy"
    ProxyCommand ssh -W %h:%p -i /root/.ssh/gw_key admin@gw.example.com
Match exec "true"
    User never
Include conf.d/*.conf
"""


def test_ssh_config_hosts_jumps_includes_and_system_defaults(tmp_path: Path) -> None:
    root = base_tree(tmp_path)
    put(root, "/home/alice/.ssh/config", SSH_CONFIG)
    put(root, "/home/alice/.ssh/conf.d/extra.conf", "Host extra\n  HostName=10.1.1.1\n  User = root\n")
    put(root, "/etc/ssh/ssh_config", "Host backup\n    HostName 10.2.2.2\nHost *\n    Port 2022\n")
    b = run(root)
    cfg, extra, system = ("/home/alice/.ssh/config", "/home/alice/.ssh/conf.d/extra.conf",
                          "/etc/ssh/ssh_config")

    def target(host: str, user: str | None, port: int | None, key: str | None, path: str,
               line: int) -> dict[str, Any]:
        return {"kind": "ssh_config", "target": host, "user": user, "port": port,
                "key_path": key, "location": path, "source": path, "source_line": line}

    assert b.rows("remote_targets") == [
        target("10.2.2.2", None, 2022, None, system, 1),
        target("203.0.113.10", "jump", 2200, "/home/alice/.ssh/id_rsa", cfg, 3),
        target("203.0.113.10", "jump", 2200, "/home/alice/.ssh/second", cfg, 3),
        target("db-prod.internal", "dbadmin", 2022, None, cfg, 11),
        target("bastion", None, None, None, cfg, 13),
        target("10.9.9.9", "ops", 2222, None, cfg, 13),
        target("db-test.internal", None, 2022, None, cfg, 11),
        target("legacy", None, 2022, None, cfg, 14),
        target("gw.example.com", "admin", None, "/root/.ssh/gw_key", cfg, 15),
        target("10.1.1.1", "root", 2022, None, extra, 1),
    ]


# -- histories ------------------------------------------------------------------------------
def test_history_targets_with_times(tmp_path: Path) -> None:
    root = base_tree(tmp_path)
    put(root, "/root/.bash_history",
        "#1700000000\nssh -i /root/.ssh/deploy_key admin@10.0.0.8\nls -la\n"
        "scp -P 2222 /tmp/x root@10.0.0.9:/tmp/ && ssh -J j@jump web02\n"
        "sshpass -p s3cret ssh -o User=ops -o Port=23 10.0.0.10 'curl x|sh'\n")
    put(root, "/home/alice/.zsh_history",
        ": 1700000100:0;ssh -p 2222 -i ~/.ssh/id_rsa git@git.example.com\n: 1700000200:0;echo ssh\n"
        ": 1700000300:0;rsync -az -e 'ssh -p 2201' /data/ backup@nas:/vol/\n")
    put(root, "/home/alice/.mysql_history", "_HiStOrY_V2_\nssh\\040root@db\n")
    b = run(root)

    def target(host: str, user: str | None, port: int | None, key: str | None, path: str,
               line: int, ts: str | None) -> dict[str, Any]:
        return {"kind": "history", "target": host, "user": user, "port": port, "key_path": key,
                "location": path, "source": path, "source_line": line, "ts": ts}

    bash, zsh = "/root/.bash_history", "/home/alice/.zsh_history"
    assert b.rows("remote_targets", keep_ts=True) == [
        target("10.0.0.8", "admin", None, "/root/.ssh/deploy_key", bash, 2,
               "2023-11-14T22:13:20Z"),
        target("10.0.0.9", "root", 2222, None, bash, 4, None),
        target("jump", "j", None, None, bash, 4, None),
        target("web02", None, None, None, bash, 4, None),
        target("10.0.0.10", "ops", 23, None, bash, 5, None),
        target("git.example.com", "git", 2222, "/home/alice/.ssh/id_rsa", zsh, 1,
               "2023-11-14T22:15:00Z"),
        target("nas", "backup", 2201, None, zsh, 3, "2023-11-14T22:18:20Z"),
    ]


# -- orchestration --------------------------------------------------------------------------
INI_INVENTORY = """\
# controller inventory
mail.example.com
[web]
web[01:03].example.com ansible_user=deploy
bastion:2222 ansible_host=10.0.0.1
[db]
db-[a:b] ansible_ssh_private_key_file=/opt/keys/db.pem
[prod:children]
web
db
[prod:vars]
ansible_user=produser
[all:vars]
ansible_user=everyone
"""
YAML_INVENTORY = """\
---
all:
  hosts:
    jump.example.com:
  children:
    k8s:
      hosts:
        node[1:2].k8s: {ansible_host: 10.8.0.1, ansible_port: 2201}
        "master.k8s":
          ansible_host: 10.8.0.9   # the control plane
      vars:
        ansible_user: kube
"""


def test_ansible_cfg_and_inventories(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    put(root, "/etc/ansible/ansible.cfg",
        "[defaults]\ninventory = /etc/ansible/k8s.yml, ./hosts\nremote_user = ansible\n"
        "private_key_file = /opt/keys/ansible.pem ; the controller key\n")
    put(root, "/etc/ansible/hosts", INI_INVENTORY)
    put(root, "/etc/ansible/k8s.yml", YAML_INVENTORY)
    put(root, "/opt/keys/ansible.pem", keys["rsa_pem"], 0o600)
    put(root, "/home/alice/work/site/hosts.ini",
        "[app]\napp1.lan ansible_password=hunter2\n")  # a secret: hashed, not copied
    put(root, "/opt/app/docker-compose.yml", "services:\n  web:\n    image: nginx\n")
    put(root, "/opt/app/php.ini", "[PHP]\nengine = On\n")
    b = run(root)

    def target(kind: str, host: str | None, user: str | None, port: int | None,
               key: str | None, path: str, line: int) -> dict[str, Any]:
        return {"kind": kind, "target": host, "user": user, "port": port, "key_path": key,
                "location": path, "source": path, "source_line": line}

    hosts, k8s, site = "/etc/ansible/hosts", "/etc/ansible/k8s.yml", "/home/alice/work/site/hosts.ini"
    inv = "ansible_inventory"
    assert b.rows("remote_targets") == [
        target("ansible_cfg", None, "ansible", None, "/opt/keys/ansible.pem",
               "/etc/ansible/ansible.cfg", 3),
        target(inv, "jump.example.com", None, None, None, k8s, 4),
        target(inv, "10.8.0.1", "kube", 2201, None, k8s, 8),
        target(inv, "10.8.0.1", "kube", 2201, None, k8s, 8),
        target(inv, "10.8.0.9", "kube", None, None, k8s, 9),
        target(inv, "mail.example.com", "everyone", None, None, hosts, 2),
        target(inv, "web01.example.com", "deploy", None, None, hosts, 4),
        target(inv, "web02.example.com", "deploy", None, None, hosts, 4),
        target(inv, "web03.example.com", "deploy", None, None, hosts, 4),
        target(inv, "10.0.0.1", "produser", 2222, None, hosts, 5),
        target(inv, "db-a", "produser", None, "/opt/keys/db.pem", hosts, 7),
        target(inv, "db-b", "produser", None, "/opt/keys/db.pem", hosts, 7),
        target(inv, "app1.lan", None, None, None, site, 2),
    ]
    files = {r["path"]: r for r in b.rows("files")}
    assert sorted(files) == ["/etc/ansible/ansible.cfg", hosts, k8s, site]
    data = (root / "etc/ansible/hosts").read_bytes()
    assert files[hosts] == {
        "path": hosts, "source": hosts, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "reason": "orchestration", "owner": "root", "mode": 0o644, "magic": data[:4].hex(),
        "content_saved": False, "mtime": files[hosts]["mtime"], "ctime": files[hosts]["ctime"],
        "immutable": files[hosts]["immutable"], "append_only": files[hosts]["append_only"],
    }
    assert b.members["raw/etc/ansible/hosts"] == data
    assert "raw/etc/ansible/k8s.yml" in b.members
    assert not any("hosts.ini" in name for name in b.members)  # it holds a password
    assert b"hunter2" not in b"".join(b.members.values())
    # The controller key the config names is recorded (metadata only).
    assert b.rows("ssh_keys", path="/opt/keys/ansible.pem") == [{
        "kind": "private", "path": "/opt/keys/ansible.pem", "source": "/opt/keys/ansible.pem",
        "user": "root", "key_type": "ssh-rsa", "encrypted": False,
        "fingerprint": keys["rsa_pem.fp"], "comment": None,
        "mtime": b.rows("ssh_keys", path="/opt/keys/ansible.pem")[0]["mtime"]}]


def test_ansible_range_cap_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deminer.collect import ansible
    monkeypatch.setattr(ansible, "RANGE_CAP", 5)
    root = base_tree(tmp_path)
    put(root, "/etc/ansible/hosts", "[vms]\nvm[0001:9999].cloud\n")
    b = run(root)
    assert [r["target"] for r in b.rows("remote_targets")] == [
        "vm0001.cloud", "vm0002.cloud", "vm0003.cloud", "vm0004.cloud", "vm0005.cloud"]
    assert (str(root / "etc/ansible/hosts"), "a host range was cut at 5 hosts") in b.errors()


def test_salt_chef_puppet_pdsh_and_clush(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    put(root, "/etc/salt/master", "interface: 0.0.0.0\n")
    put(root, "/etc/salt/roster",
        "web1:\n  host: 192.168.42.1\n  user: fred\n  port: 2222\n  priv: /etc/salt/pki/ssh/salt-ssh.rsa\n"
        "# a comment\ndb1:\n  host: 192.168.42.2\n  passwd: secret\n")
    for minion in ("minion-a", "minion-b"):
        put(root, f"/etc/salt/pki/master/minions/{minion}", "-----BEGIN PUBLIC KEY-----\n")
    put(root, "/etc/salt/minion", "id: web01\nmaster:\n  - salt1.corp   # primary\n  - salt2.corp\n"
        "log_level: info\n")
    put(root, "/etc/salt/minion.d/extra.conf", "master: [10.9.0.1, '10.9.0.2']\n")
    put(root, "/root/.chef/knife.rb",
        "current_dir = File.dirname(__FILE__)\nnode_name                \"admin\"\n"
        "client_key               \"#{current_dir}/admin.pem\"\n"
        "chef_server_url          'https://chef.example.com:8443/organizations/acme'\n"
        "knife[:ssh_user] = \"root\"\n")
    put(root, "/root/.chef/admin.pem", keys["rsa_pem"], 0o600)
    put(root, "/etc/chef/client.rb",
        "chef_server_url \"https://chef.example.com/organizations/acme\"\n"
        "client_key \"/etc/chef/client.pem\"\nnode_name \"web01\"\n")
    put(root, "/etc/puppetlabs/puppet/ssl/ca/signed/node1.example.com.pem", "cert\n")
    put(root, "/etc/genders", "# nodes\nnode[01-03] compute,rack=1\n")
    put(root, "/etc/dsh/group/all", "root@10.3.3.3\n10.3.3.4 # spare\n")
    put(root, "/etc/clustershell/groups.d/local.yaml", "roles:\n    web: 'web[1-2],@db'\n")
    b = run(root)

    def target(kind: str, host: str | None, user: str | None, port: int | None,
               key: str | None, path: str, line: int | None, source: str = "") -> dict[str, Any]:
        return {"kind": kind, "target": host, "user": user, "port": port, "key_path": key,
                "location": path, "source": source or path, "source_line": line}

    minions = "/etc/salt/pki/master/minions"
    signed = "/etc/puppetlabs/puppet/ssl/ca/signed"
    assert b.rows("remote_targets") == [
        target("salt_roster", "192.168.42.1", "fred", 2222, "/etc/salt/pki/ssh/salt-ssh.rsa",
               "/etc/salt/roster", 1),
        target("salt_roster", "192.168.42.2", None, None, None, "/etc/salt/roster", 7),
        target("salt_minion", "minion-a", None, None, None, minions, None, minions + "/minion-a"),
        target("salt_minion", "minion-b", None, None, None, minions, None, minions + "/minion-b"),
        target("salt_master", "salt1.corp", None, None, None, "/etc/salt/minion", 3),
        target("salt_master", "salt2.corp", None, None, None, "/etc/salt/minion", 4),
        target("salt_master", "10.9.0.1", None, None, None, "/etc/salt/minion.d/extra.conf", 1),
        target("salt_master", "10.9.0.2", None, None, None, "/etc/salt/minion.d/extra.conf", 1),
        target("chef_knife", "chef.example.com", "admin", 8443, "/root/.chef/admin.pem",
               "/root/.chef/knife.rb", 2),
        target("chef_client", "chef.example.com", "web01", None, "/etc/chef/client.pem",
               "/etc/chef/client.rb", 1),
        target("puppet_node", "node1.example.com", None, None, None, signed, None,
               signed + "/node1.example.com.pem"),
        target("pdsh_group", "10.3.3.3", "root", None, None, "/etc/dsh/group/all", 1),
        target("pdsh_group", "10.3.3.4", None, None, None, "/etc/dsh/group/all", 2),
        target("pdsh_group", "node01", None, None, None, "/etc/genders", 2),
        target("pdsh_group", "node02", None, None, None, "/etc/genders", 2),
        target("pdsh_group", "node03", None, None, None, "/etc/genders", 2),
        target("clush_group", "web1", None, None, None, "/etc/clustershell/groups.d/local.yaml", 2),
        target("clush_group", "web2", None, None, None, "/etc/clustershell/groups.d/local.yaml", 2),
    ]
    assert sorted(r["path"] for r in b.rows("files")) == [
        "/etc/chef/client.rb", "/etc/clustershell/groups.d/local.yaml", "/etc/dsh/group/all",
        "/etc/genders", "/etc/salt/master", "/etc/salt/minion", "/etc/salt/minion.d/extra.conf",
        "/etc/salt/roster", "/root/.chef/knife.rb"]
    assert "raw/etc/salt/master" in b.members and "raw/etc/salt/roster" not in b.members
    assert [r["fingerprint"] for r in b.rows("ssh_keys", path="/root/.chef/admin.pem")] == [
        keys["rsa_pem.fp"]]


# -- hostile trees --------------------------------------------------------------------------
def test_hostile_tree_completes_with_named_errors(tmp_path: Path, keys: dict[str, Any]) -> None:
    root = base_tree(tmp_path)
    ssh = root / "home/alice/.ssh"
    ssh.mkdir(parents=True)
    os.mkfifo(ssh / "id_rsa")  # a FIFO named like a key must not block the collector
    (ssh / "loop").symlink_to("loop")
    (ssh / "escape").symlink_to("/etc/shadow")
    (ssh / b"caf\xe9\x1b[31m".decode("utf-8", "surrogateescape")).write_bytes(keys["ed_plain"])
    (ssh / "config").write_bytes(b"\x00\xff\xfe binary junk\nHost \x1b]0;x\x07evil\n")
    (ssh / "known_hosts").write_bytes(b"A" * 300000 + b"\n\xff\xfe\x00junk\n")
    put(root, "/root/.bash_history", b"ssh root@\xff\xfe\nssh " + b"x" * 200000 + b"@h\n"
        b"ssh -i /root/k\x00ey admin@10.0.0.1\nscp -i ../../../../../etc/passwd x h:\n")
    put(root, "/root/.ssh/config", b"Include /etc/\x00x\nHost a\n  IdentityFile ~/\x00k\n")
    put(root, "/etc/ansible/ansible.cfg", b"[defaults]\ninventory = /etc/\x00hosts,../../..\n"
        b"private_key_file = /\x00\n")
    b = run(root)
    assert not [e for e in b.errors() if "failed" in e[1]]  # no step broke
    paths = [r["path"] for r in b.rows("ssh_keys")]
    assert paths == ["/home/alice/.ssh/caf\\xe9\x1b[31m"]
    assert b.rows("ssh_keys")[0]["fingerprint"] == keys["ed_plain.fp"]
    kh = str(ssh / "known_hosts")
    assert (kh, "line 1: expected host patterns, key type and key data") in b.errors()
    targets = [r["target"] for r in b.rows("remote_targets")]
    assert "\x1b]0;x\x07evil" in targets  # stored as found; escaping is the display's job
    assert all(len(t or "") < 300000 for t in targets)
    assert len(b.rows("accounts")) == 6


# -- parsers on their own -------------------------------------------------------------------
def test_public_key_line_options_and_errors(keys: dict[str, Any]) -> None:
    from deminer.collect import sshkeys
    line = 'from="10.0.0.1",command="echo \\"hi there\\"",no-pty ' + keys["ed_plain.pub"]
    options, key_type, blob, comment = sshkeys.parse_public_key_line(line)  # type: ignore[misc]
    assert options == 'from="10.0.0.1",command="echo \\"hi there\\"",no-pty'
    assert (key_type, comment) == ("ssh-ed25519", "root@web01")
    assert sshkeys.fingerprint(blob) == keys["ed_plain.fp"]
    assert sshkeys.parse_public_key_line("  # comment") is None
    ed_b64 = keys["ed_plain.pub"].split()[1]
    for bad, message in [
        ("ssh-ed25519", "no key data after ssh-ed25519"),
        ("ssh-ed25519 %%%", "key data is not valid base64"),
        (f"ssh-rsa {ed_b64}", "key data is 'ssh-ed25519', not ssh-rsa"),
        ('command="unterminated ssh-rsa AAAA', "unterminated quote in key options"),
        ("just words here", "unknown key type 'words'"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            sshkeys.parse_public_key_line(bad)


def test_hostile_ranges_stay_bounded_and_fast() -> None:
    from deminer.collect import ansible, orchestration
    assert len(ansible.expand_ranges("h[0:999999999999999999]x[a:z]", 100)) == 100
    assert ansible.expand_ranges("h[" + "9" * 5000 + ":1]") == ["h[" + "9" * 5000 + ":1]"]
    assert ansible.expand_ranges("w[01:10:4].x") == ["w01.x", "w05.x", "w09.x"]
    assert orchestration.expand_nodeset("n[1-999999999]x[a-b]") == []
    assert len(orchestration.expand_nodeset("n[1-999999999999]", 50)) == 50
    assert orchestration.expand_nodeset("a,b c[08-10,3]") == ["a", "b", "c08", "c09", "c10", "c3"]
    many = "[g]\n" + "".join(f"h{i}-[0:9999]\n" for i in range(20))
    parsed = ansible.parse_ini_inventory(many)
    assert parsed is not None and len(parsed[0]) == ansible.HOSTS_CAP and parsed[1] is True
    nested = "".join(f"[g{i}:children]\ng{i + 1}\n" for i in range(3000)) + "[g3000]\nh1\n"
    assert [h.name for h in ansible.parse_ini_inventory(nested)[0]] == ["h1"]  # type: ignore[index]


# -- property tests: the parsers never fail on arbitrary input ------------------------------
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_text_parsers_never_fail(text: str) -> None:
    from deminer.collect import ansible, orchestration, sshclient, sshkeys
    for parse in (sshkeys.parse_public_key_line, sshkeys.parse_known_hosts_line):
        with contextlib.suppress(ValueError):
            parse(text)
    for target in sshclient.command_targets(text):
        assert target.target and (target.port is None or 0 < target.port < 65536)
    for parsed in (ansible.parse_ini_inventory(text), ansible.parse_yaml_inventory(text)):
        assert parsed is None or all(h.target for h in parsed[0])
    ansible.parse_cfg(text)
    orchestration.parse_roster(text)
    assert len(orchestration.expand_nodeset(text, 100)) <= 100
    sshclient.effective("host", sshclient.blocks(
        [sshclient.Directive("f", 1, w.lower(), [w]) for w in sshclient.split_words(text)]))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["ed_plain", "ed_enc", "rsa_pem", "ec_pem", "ec_pkcs8"]),
       st.integers(min_value=0, max_value=4000), st.binary(min_size=1, max_size=8))
def test_private_key_parser_survives_damage(keys: dict[str, Any], name: str, cut: int,
                                            junk: bytes) -> None:
    """Cut or overwrite the decoded body of real keys: metadata or a problem, never a crash."""
    from deminer.collect import sshkeys
    lines = keys[name].decode().splitlines()
    body = base64.b64decode("".join(lines[1:-1]))
    for damaged in (body[:cut], body[:cut] + junk + body[cut + len(junk):]):
        text = f"{lines[0]}\n{base64.b64encode(damaged).decode()}\n{lines[-1]}\n".encode()
        key = sshkeys.parse_private_key(text)
        assert key is not None and isinstance(key.problem, str)


def test_ansible_child_groups_override_parents() -> None:
    from deminer.collect import ansible
    text = ("[web]\nw1\n[prod:children]\nweb\n[prod:vars]\nansible_user=produser\nansible_port=22\n"
            "[web:vars]\nansible_user=webuser\n[all:vars]\nansible_user=x\nansible_port=2\n")
    assert ansible.parse_ini_inventory(text) == (
        [ansible.Host("w1", "w1", "webuser", 22, None, 2)], False)
