"""Collector: what an attacker who owns this host can reach from it (seed case 6).

In seed case 6 SSH keys stored on hosts gave password-less login to the Ansible server, which
pushed the miner to tens of thousands of VMs. This module records the material for that
"key trust map":

- ``accounts`` from the root's /etc/passwd and /etc/shadow: uid, gid, home, shell, the
  number of authorized keys (the files sshd's ``AuthorizedKeysFile`` names) and
  ``password_state``: ``locked`` (``!``/``*``), ``none`` (empty: no password at all),
  ``set:<scheme>`` (``set:sha512crypt``, ``set:yescrypt``, ...), ``missing`` (no shadow
  entry) or ``unreadable``.
- ``ssh_keys`` kind ``private`` for private keys in every home's ``~/.ssh`` (and loose in the
  home), kind ``host_private`` for ``/etc/ssh/ssh_host_*_key`` and kind ``private`` for key
  files that ssh configs, histories and orchestration configs name; kind ``known_host`` for
  known_hosts entries (comment = the host patterns, hashed ``|1|`` ones as found).
- ``remote_targets``: known_hosts hosts (``known_host``), ssh client config Host blocks,
  ProxyJump and ProxyCommand hops (``ssh_config``), ssh/scp/rsync commands of shell
  histories (``history``, with the command's time when the history has one) and the hosts
  of orchestration tools (see ``orchestration``).

**Nothing secret enters the bundle.** Private key files are read for their metadata only
(type, whether a passphrase protects them, public fingerprint, comment, mtime): their content
is never saved or copied. Password hashes are reduced to their scheme; /etc/shadow is not
copied.
"""

import contextlib
import os
import re
import stat
from typing import Dict, List, Optional, Set, Tuple

from deminer.collect import hostfs, logs, orchestration, sshclient, sshd, sshkeys
from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso

KEY_MAX_BYTES = 1024 * 1024
LOOSE_KEY_MAX_BYTES = 64 * 1024
KNOWN_HOSTS_MAX_BYTES = 16 * 1024 * 1024
ERRORS_PER_FILE = 20
HISTORY_ROWS_PER_FILE = 5000
_SCHEMES = {"1": "md5crypt", "2a": "bcrypt", "2b": "bcrypt", "2x": "bcrypt", "2y": "bcrypt",
            "3": "nthash", "5": "sha256crypt", "6": "sha512crypt", "7": "scrypt",
            "y": "yescrypt", "gy": "gost-yescrypt", "sha1": "sha1crypt", "md5": "sunmd5"}


def password_state(field: Optional[str]) -> str:
    """What a passwd/shadow password field allows, without keeping the hash."""
    if field is None:
        return "unreadable"
    if field == "":
        return "none"
    if field[0] in "!*":
        return "locked"
    if field.startswith("$"):
        scheme = re.split(r"[$,]", field[1:], maxsplit=1)[0]
        return "set:" + _SCHEMES.get(scheme, "unknown")
    if field.startswith("_") and len(field) == 20:
        return "set:bsdicrypt"
    if re.match(r"^[./0-9A-Za-z]{13}$", field):
        return "set:descrypt"
    return "set:unknown"


class Lateral(object):
    """One collection pass: the host's users, and the key files already looked at."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.users = hostfs.read_users(ctx, report=True)
        self.names = hostfs.owner_names(self.users)
        self.homes = hostfs.homes(ctx, self.users)
        self.scanned: Set[str] = set()
        self.referenced: List[str] = []

    def home_of(self, host_path: str) -> Optional[str]:
        for _, home in self.homes:
            if host_path.startswith(home.rstrip("/") + "/"):
                return home
        return None

    def refer(self, key: Optional[str], location: str) -> Optional[str]:
        """A key path as a host path (``~`` = the home holding ``location``); remembered."""
        if key and key.startswith("~/"):
            home = self.home_of(location)
            key = home.rstrip("/") + key[1:] if home else key
        if key and key.startswith("/") and key not in self.referenced:
            self.referenced.append(key)
        return key

    # -- accounts ---------------------------------------------------------------------------
    def accounts(self) -> None:
        shadow = self._shadow()
        key_files = sshd.authorized_keys_files(self.ctx)
        for user in self.users:
            if user.password != "x":  # a hash (or nothing) right in /etc/passwd
                state = password_state(user.password)
            elif shadow is None:
                state = "unreadable"
            else:
                state = password_state(shadow[user.name]) if user.name in shadow else "missing"
            self.ctx.emit("accounts", {
                "user": user.name, "uid": user.uid, "gid": user.gid, "home": user.home,
                "shell": user.shell, "password_state": state,
                "keys": self._count_keys(user, key_files.used(user.name)), "source": "/etc/passwd",
                "source_line": user.line,
            })

    def _shadow(self) -> Optional[Dict[str, str]]:
        """name -> password field; None when /etc/shadow cannot be read. Hashes stay here."""
        real = self.ctx.path("/etc/shadow")
        try:
            text = safe_text(hostfs.read_head(real, hostfs.PASSWD_MAX_BYTES))
        except (OSError, IOError) as exc:
            if not isinstance(exc, FileNotFoundError):
                self.ctx.error(real, "cannot read: %s" % (exc.strerror or exc))
            return None
        fields = (line.split(":") for line in text.splitlines())
        return {f[0]: f[1] for f in fields if len(f) >= 2}

    def _count_keys(self, user: hostfs.User, patterns: List[str]) -> int:
        count = 0
        for pattern in patterns:
            path = os.path.normpath(sshd.key_file_path(pattern, user.name, user.home, user.uid))
            real = hostfs.contained(self.ctx, path) if user.home.startswith("/") else None
            if real is None or not os.path.isfile(real):
                continue
            for line in (hostfs.read_text(self.ctx, path) or "").splitlines():
                # Broken lines are the persistence collector's to report, not counted here.
                with contextlib.suppress(ValueError):
                    count += sshkeys.parse_public_key_line(line) is not None
        return count

    # -- private keys -----------------------------------------------------------------------
    def private_keys(self) -> None:
        for name in sorted(_names(self.ctx, "/etc/ssh")):
            if name.startswith("ssh_host_") and name.endswith("_key"):
                self.key_file("/etc/ssh/" + name, "host_private")
        for _, home in self.homes:
            for entry in hostfs.walk(self.ctx, home + "/.ssh", 2, 2000):
                self.key_file(entry.host_path, "private", entry.st)
            for entry in hostfs.walk(self.ctx, home, 1, 5000):
                if entry.st.st_size <= LOOSE_KEY_MAX_BYTES:
                    self.key_file(entry.host_path, "private", entry.st)

    def key_file(self, host_path: str, kind: str, st: Optional[os.stat_result] = None) -> None:
        host_path = os.path.normpath(host_path)
        real = hostfs.contained(self.ctx, host_path)
        if real is None or real in self.scanned:
            return
        self.scanned.add(real)
        try:
            st = st or os.lstat(real)
            if not stat.S_ISREG(st.st_mode) or st.st_size > KEY_MAX_BYTES:
                return
            data = hostfs.read_head(real, KEY_MAX_BYTES)
        except (OSError, IOError):
            return
        if not sshkeys.looks_private(data[:256]):
            return
        key = sshkeys.parse_private_key(data)
        if key is None:
            return
        key_type, blob, comment = key.key_type, key.public_blob, key.comment
        public = self._public_sibling(host_path)
        if public is not None and (blob is None or blob == public[1]):
            key_type, blob, comment = public[0], public[1], comment or public[2]
        self.ctx.emit("ssh_keys", {
            "kind": kind, "path": fs_text(host_path), "source": fs_text(host_path),
            "user": hostfs.owner(self.names, st.st_uid), "key_type": key_type or None,
            "encrypted": key.encrypted, "fingerprint": sshkeys.fingerprint(blob) if blob else None,
            "comment": comment or None, "mtime": utc_iso(st.st_mtime),
        })
        if key.problem:
            self.ctx.error(real, "private key (%s): %s" % (key.format, key.problem))

    def _public_sibling(self, host_path: str) -> Optional[Tuple[str, bytes, str]]:
        """``(type, blob, comment)`` from ``<key>.pub`` when it holds a valid key line."""
        real = self.ctx.path(host_path + ".pub")
        try:
            line = safe_text(hostfs.read_head(real, 64 * 1024)).split("\n", 1)[0]
            parsed = sshkeys.parse_public_key_line(line)
        except (OSError, IOError, ValueError):
            return None
        return (parsed[1], parsed[2], parsed[3]) if parsed else None

    # -- known_hosts ------------------------------------------------------------------------
    def known_hosts(self) -> None:
        paths = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]
        for _, home in self.homes:
            paths += [home + "/.ssh/known_hosts", home + "/.ssh/known_hosts2"]
        for path in paths:
            real = self.ctx.path(path)
            if not os.path.isfile(real) or os.path.islink(real):
                continue
            owner = hostfs.owner(self.names, os.lstat(real).st_uid)
            text = hostfs.read_text(self.ctx, path, KNOWN_HOSTS_MAX_BYTES)
            errors = 0
            seen: Set[Tuple[str, Optional[int]]] = set()
            for number, line in enumerate((text or "").splitlines(), 1):
                try:
                    parsed = sshkeys.parse_known_hosts_line(line)
                except ValueError as exc:
                    errors += 1
                    if errors <= ERRORS_PER_FILE:
                        self.ctx.error(real, "line %d: %s" % (number, exc))
                    continue
                if parsed is None:
                    continue
                marker, hosts, key_type, blob, _ = parsed
                self.ctx.emit("ssh_keys", {
                    "kind": "known_host", "path": fs_text(path), "source": fs_text(path),
                    "source_line": number, "user": owner, "key_type": key_type,
                    "fingerprint": sshkeys.fingerprint(blob), "comment": hosts,
                    "options": marker or None,
                })
                if marker:
                    continue  # @revoked and @cert-authority lines name no host we reached
                for target, port in _known_targets(hosts):
                    if (target, port) not in seen:
                        seen.add((target, port))
                        self._target("known_host", target, None, port, None, path, number)
            if errors > ERRORS_PER_FILE:
                self.ctx.error(real, "%d broken lines in all" % errors)

    def _target(self, kind: str, target: str, user: Optional[str], port: Optional[int],
                key: Optional[str], location: str, line: Optional[int],
                ts: Optional[str] = None) -> None:
        row = {"kind": kind, "target": target, "user": user, "port": port,
               "key_path": self.refer(key, location), "location": fs_text(location),
               "source": fs_text(location), "source_line": line}
        if kind == "history":
            row["ts"] = ts  # when the history says; never the collection time
        self.ctx.emit("remote_targets", row)

    # -- ssh client config and histories ----------------------------------------------------
    def ssh_config(self) -> None:
        system = sshclient.blocks(sshclient.read_config(
            self.ctx, "/etc/ssh/ssh_config", "/etc/ssh", None))
        for t, path, line in sshclient.config_targets(system, [], None, None):
            self._target("ssh_config", t.target, t.user, t.port, t.key_path, path, line)
        for user, home in self.homes:
            own = sshclient.read_config(self.ctx, home + "/.ssh/config", home + "/.ssh", home)
            for t, path, line in sshclient.config_targets(sshclient.blocks(own), system, home,
                                                          user):
                self._target("ssh_config", t.target, t.user, t.port, t.key_path, path, line)

    def history_targets(self) -> None:
        for _, path, shell in logs.history_files(self.ctx):
            if shell == "mysql":
                continue
            rows = 0
            for number, ts, command, _ in logs.read_history(self.ctx, path, shell):
                if "ssh" not in command and "scp" not in command and "rsync" not in command:
                    continue  # cheap filter: most commands reach no host
                for t in sshclient.command_targets(command):
                    rows += 1
                    if rows > HISTORY_ROWS_PER_FILE:
                        self.ctx.error(self.ctx.path(path), "more than %d ssh targets; "
                                       "the rest skipped" % HISTORY_ROWS_PER_FILE)
                        break
                    self._target("history", t.target, t.user, t.port, t.key_path, path,
                                 number, ts)
                if rows > HISTORY_ROWS_PER_FILE:
                    break

    def orchestration(self) -> None:
        for key in orchestration.collect(self.ctx, self.homes, self.names):
            self.refer(key, key)

    def referenced_keys(self) -> None:
        """Keys named by configs and commands, wherever they are (``~/.chef/admin.pem``)."""
        for key in self.referenced:
            self.key_file(key, "private")


def _names(ctx: Context, host_dir: str) -> List[str]:
    try:
        return os.listdir(ctx.path(host_dir))
    except OSError:
        return []


def _known_targets(hosts: str) -> List[Tuple[str, Optional[int]]]:
    """Hosts of a known_hosts pattern list: ``[h]:p`` gives a port, hashed ones stay hashed,
    wildcards and negations are patterns, not hosts."""
    out = []  # type: List[Tuple[str, Optional[int]]]
    for pattern in hosts.split(","):
        match = re.match(r"^\[([^\]]+)\]:([0-9]{1,5})$", pattern)
        if match:
            out.append((match.group(1), int(match.group(2))))
        elif pattern and not pattern.startswith("!") and "*" not in pattern and "?" not in pattern:
            out.append((pattern, None))
    return out


def collect(ctx: Context) -> None:
    run = Lateral(ctx)
    for step in (run.accounts, run.private_keys, run.known_hosts, run.ssh_config,
                 run.history_targets, run.orchestration, run.referenced_keys):
        if ctx.time_left() <= 0:
            ctx.error("lateral", "skipped %s: the time budget ran out" % step.__name__)
            continue
        try:
            step()
        except Exception as exc:  # one broken step must not lose the others
            ctx.error("lateral", "%s failed: %s: %s" % (step.__name__, type(exc).__name__, exc))
