"""Orchestration tools on a host: the configs that let one host reach many (seed cases 6, 7).

Part of the lateral collector. A miner that owns an Ansible controller, a Salt master or a
Chef workstation pushes itself to every host they manage, so each managed host becomes a
``remote_targets`` row with the user, port and key the tool would use:

- Ansible: ``/etc/ansible/ansible.cfg``, ``~/.ansible.cfg`` and any ``ansible.cfg``
  (kind ``ansible_cfg``); ``/etc/ansible/hosts``, the inventories those configs name and any
  ``hosts``/``inventory*``/``*.ini``/``*.yml`` that parses as an inventory under
  /etc/ansible, the homes, /opt and /srv, depth-bounded (kind ``ansible_inventory``).
- Salt: ``/etc/salt/roster`` (``salt_roster``), accepted minion keys under
  ``/etc/salt/pki/master/minions`` (``salt_minion``: the hosts this master commands;
  ``location`` is that folder, ``source`` the key file), ``/etc/salt/master`` as a file, and
  the ``master:`` of ``/etc/salt/minion`` (``salt_master``: who commands this host).
- Chef: ``~/.chef/knife.rb``/``config.rb``, ``/etc/chef/knife.rb`` (``chef_knife``) and
  ``/etc/chef/client.rb`` (``chef_client``: the server this node trusts).
- Puppet: signed agent certificates of a Puppet CA (``puppet_node``; ``location`` is the
  CA's ``signed`` folder, ``source`` the certificate).
- pdsh/dsh (``/etc/genders``, machines and group files) and ClusterShell groups
  (``pdsh_group``, ``clush_group``).

Each config or inventory found also gives a ``files`` row (reason ``orchestration``) and a
raw copy, unless it holds secrets (a private key or a password variable): those are hashed,
not copied. Key files the configs name are returned so the caller records them as keys.
"""

import hashlib
import os
import re
import stat
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from deminer.collect import ansible, hostfs
from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso
from deminer.collect.sshclient import port_number

CONFIG_MAX_BYTES = 2 * 1024 * 1024
COPY_MAX_BYTES = 1024 * 1024
WALK_DEPTH = 4
WALK_ENTRIES = 20000
NODE_CAP = 10000
SKIP_DIRS = (".git", "node_modules", ".cache", "site-packages", "dist-packages", ".npm",
             ".cargo", ".rustup", "__pycache__", ".venv", "venv", ".m2", ".gradle", "proc")
_SECRETS = re.compile(r"PRIVATE KEY|ansible_(?:ssh_|become_)?pass(?:word)?\s*[=:]|"
                      r"^\s*passwd\s*:|password\s*[=:]", re.I | re.M)
_INVENTORY_NAME = re.compile(r"^(hosts|inventory)([._-].*)?$|\.(ini|ya?ml)$", re.I)
_RUBY = re.compile(r"""^\s*(chef_server_url|node_name|client_key|validation_key|"""
                   r"""knife\[:(?:ssh_user|ssh_identity_file|ssh_port)\])\s*=?\s*(.+?)\s*$""")
_PUPPET_CA = ("/etc/puppetlabs/puppet/ssl/ca/signed", "/etc/puppetlabs/puppetserver/ca/signed",
              "/var/lib/puppet/ssl/ca/signed")


class Orchestration(object):
    """One pass over the host's orchestration configs; remembers what it already read."""

    def __init__(self, ctx: Context, homes: List[Tuple[str, str]], names: Dict[int, str]) -> None:
        self.ctx = ctx
        self.homes = homes
        self.names = names
        self.seen: Set[str] = set()
        self.keys: List[str] = []
        self.nodes_per_file: Dict[str, int] = {}

    # -- shared ------------------------------------------------------------------------------
    def read(self, host_path: str) -> Optional[str]:
        """A config's text, once per file, with its ``files`` row and raw copy."""
        real = hostfs.contained(self.ctx, host_path)
        if real is None or real in self.seen or not os.path.isfile(real):
            return None
        self.seen.add(real)
        try:
            st = os.lstat(real)
            data = hostfs.read_head(real, CONFIG_MAX_BYTES + 1)
        except (OSError, IOError) as exc:
            self.ctx.error(real, "cannot read: %s" % (exc.strerror or exc))
            return None
        if len(data) > CONFIG_MAX_BYTES:
            self.ctx.error(real, "not read: larger than %d bytes" % CONFIG_MAX_BYTES)
            return None
        text = safe_text(data)
        self.record(host_path, real, st, data)
        if len(data) <= COPY_MAX_BYTES and not _SECRETS.search(text):
            self.ctx.copy_raw(real, COPY_MAX_BYTES)
        return text

    def record(self, host_path: str, real: str, st: os.stat_result, data: bytes) -> None:
        immutable, append_only = hostfs.file_flags(real)
        self.ctx.emit("files", {
            "path": fs_text(host_path), "source": fs_text(host_path), "size": st.st_size,
            "mtime": utc_iso(st.st_mtime), "ctime": utc_iso(st.st_ctime), "mode": stat.S_IMODE(st.st_mode),
            "owner": hostfs.owner(self.names, st.st_uid), "reason": "orchestration",
            "sha256": hashlib.sha256(data).hexdigest(), "magic": data[:4].hex(),
            "content_saved": False, "immutable": immutable, "append_only": append_only,
        })

    def target(self, kind: str, target: Optional[str], user: Optional[str], port: Optional[int],
               key: Optional[str], location: str, line: Optional[int],
               source: Optional[str] = None) -> None:
        if key:
            key = self.expand_home(key, location)
            if key.startswith("/") and key not in self.keys:
                self.keys.append(key)
        self.ctx.emit("remote_targets", {
            "kind": kind, "target": target, "user": user, "port": port, "key_path": key,
            "location": fs_text(location), "source": fs_text(source or location),
            "source_line": line,
        })

    def expand_home(self, path: str, location: str) -> str:
        """``~/x`` as the home of whoever owns the config (the user who runs the tool)."""
        if not path.startswith("~/"):
            return path
        for _, home in self.homes:
            if location.startswith(home.rstrip("/") + "/"):
                return home.rstrip("/") + path[1:]
        return path

    # -- Ansible -------------------------------------------------------------------------------
    def ansible(self) -> None:
        for path in ["/etc/ansible/ansible.cfg"] + [h + "/.ansible.cfg" for _, h in self.homes]:
            self.ansible_cfg(path)
        self.inventory("/etc/ansible/hosts")
        for top in ["/etc/ansible"] + [h for _, h in self.homes] + ["/opt", "/srv"]:
            for entry in hostfs.walk(self.ctx, top, WALK_DEPTH, WALK_ENTRIES, SKIP_DIRS):
                if not os.path.isfile(entry.real_path) or os.path.islink(entry.real_path):
                    continue
                if entry.name in ("ansible.cfg", ".ansible.cfg"):
                    self.ansible_cfg(entry.host_path)
                elif _INVENTORY_NAME.search(entry.name):
                    self.inventory(entry.host_path)

    def ansible_cfg(self, host_path: str) -> None:
        text = self.read(host_path)
        if text is None:
            return
        cfg = ansible.parse_cfg(text)
        lines = [cfg[k][1] for k in ("remote_user", "remote_port", "private_key_file") if k in cfg]
        user = cfg.get("remote_user", ("", 0))[0] or None
        port = cfg.get("remote_port", ("", 0))[0]
        key = cfg.get("private_key_file", ("", 0))[0] or None
        if user or port or key:
            self.target("ansible_cfg", None, user, port_number(port), key,
                        host_path, min(lines) if lines else None)
        for item in cfg.get("inventory", ("", 0))[0].split(","):
            path = self.expand_home(item.strip(), host_path)
            if path and not path.startswith("/"):
                path = os.path.dirname(host_path) + "/" + path
            path = os.path.normpath(path) if path else path
            if path.startswith("/") and hostfs.is_dir(self.ctx, path):
                for entry in hostfs.walk(self.ctx, path, 2, 2000, SKIP_DIRS):
                    if os.path.isfile(entry.real_path) and not os.path.islink(entry.real_path):
                        self.inventory(entry.host_path)
            elif path.startswith("/"):
                self.inventory(path)

    def inventory(self, host_path: str) -> None:
        real = hostfs.contained(self.ctx, host_path)
        if real is None:
            return
        if hostfs.is_dir(self.ctx, host_path):  # /etc/ansible/hosts may be a folder
            for entry in hostfs.walk(self.ctx, host_path, 2, 2000, SKIP_DIRS):
                if os.path.isfile(entry.real_path) and not os.path.islink(entry.real_path):
                    self.inventory(entry.host_path)
            return
        if real in self.seen or not os.path.isfile(real):
            return
        try:
            head = hostfs.read_head(real, CONFIG_MAX_BYTES + 1)
        except (OSError, IOError):
            return
        if len(head) > CONFIG_MAX_BYTES or b"\0" in head[:8192]:
            return
        text = safe_text(head)
        yaml_name = host_path.lower().endswith((".yml", ".yaml"))
        parsed = (ansible.parse_yaml_inventory(text) if yaml_name else
                  ansible.parse_ini_inventory(text) or ansible.parse_yaml_inventory(text))
        if parsed is None or self.read(host_path) is None:
            return  # not an inventory: no row, no copy
        hosts, truncated = parsed
        if truncated:
            self.ctx.error(real, "a host range was cut at %d hosts" % ansible.RANGE_CAP)
        for host in hosts:
            self.target("ansible_inventory", host.target, host.user, host.port, host.key_path,
                        host_path, host.line)

    # -- Salt, Chef, Puppet, pdsh, ClusterShell -------------------------------------------------
    def salt(self) -> None:
        for path in ["/etc/salt/master", *_listing(self.ctx, "/etc/salt/master.d")]:
            self.read(path)
        text = self.read("/etc/salt/roster")
        for name, fields, line in parse_roster(text or ""):
            port = fields.get("port", "")
            self.target("salt_roster", fields.get("host") or name, fields.get("user"),
                        port_number(port), fields.get("priv"),
                        "/etc/salt/roster", line)
        # A master's accepted minion keys: one per host it can run commands on.
        minions = "/etc/salt/pki/master/minions"
        for path in _listing(self.ctx, minions):
            self.target("salt_minion", path.rsplit("/", 1)[1], None, None, None, minions, None,
                        path)
        # The other way round: the master this minion obeys (it can run anything here).
        for path in ["/etc/salt/minion", *_listing(self.ctx, "/etc/salt/minion.d")]:
            for master, line in parse_minion_masters(self.read(path) or ""):
                self.target("salt_master", master, None, None, None, path, line)

    def chef(self) -> None:
        knife = ["/etc/chef/knife.rb"] + [h + "/.chef/" + n for _, h in self.homes
                                          for n in ("knife.rb", "config.rb")]
        for path in [*knife, "/etc/chef/client.rb"]:
            text = self.read(path)
            if text is None:
                continue
            values = {}  # type: Dict[str, Tuple[str, int]]
            for number, text_line in enumerate(text.splitlines(), 1):
                match = _RUBY.match(text_line)
                if match and match.group(1) not in values:
                    values[match.group(1)] = (_ruby_string(match.group(2), path), number)
            url = urlsplit(values.get("chef_server_url", ("", 0))[0])
            try:
                port = url.port
            except ValueError:
                port = None
            for name in ("validation_key", "knife[:ssh_identity_file]"):
                if values.get(name):
                    self.target_key(values[name][0], path)
            if values:
                line = min(number for _, number in values.values())
                self.target("chef_client" if path.endswith("client.rb") else "chef_knife",
                            url.hostname, values.get("node_name", (None, 0))[0], port,
                            values.get("client_key", (None, 0))[0], path, line)

    def target_key(self, key: str, location: str) -> None:
        key = self.expand_home(key, location)
        if key.startswith("/") and key not in self.keys:
            self.keys.append(key)

    def puppet(self) -> None:
        for folder in _PUPPET_CA:
            for path in _listing(self.ctx, folder):
                if path.endswith(".pem"):
                    self.target("puppet_node", path.rsplit("/", 1)[1][:-4], None, None, None,
                                folder, None, path)

    def node_groups(self) -> None:
        single = ["/etc/pdsh/machines", "/etc/dsh/machines.list"]
        single += _listing(self.ctx, "/etc/dsh/group")
        for _, home in self.homes:
            single += [home + "/.dsh/machines.list", *_listing(self.ctx, home + "/.dsh/group")]
        for path in single:
            for number, line in enumerate((self.read(path) or "").splitlines(), 1):
                self.nodes("pdsh_group", line.split("#")[0].strip(), path, number)
        for number, line in enumerate((self.read("/etc/genders") or "").splitlines(), 1):
            words = line.split("#")[0].split()
            if words:
                self.nodes("pdsh_group", words[0], "/etc/genders", number)
        clush = ["/etc/clustershell/groups", *_listing(self.ctx, "/etc/clustershell/groups.d")]
        for _, home in self.homes:
            clush += _listing(self.ctx, home + "/.local/etc/clustershell/groups.d")
        for path in clush:
            for number, line in enumerate((self.read(path) or "").splitlines(), 1):
                match = re.match(r"^\s*[\w.-]+\s*:\s*(.+)$", line.split("#")[0])
                if match:
                    self.nodes("clush_group", match.group(1).strip().strip("'\""), path, number)

    def nodes(self, kind: str, nodeset: str, path: str, number: int) -> None:
        done = self.nodes_per_file.get(path, 0)
        found = expand_nodeset(nodeset, NODE_CAP - done) if done < NODE_CAP else []
        self.nodes_per_file[path] = done + len(found)
        if found and done + len(found) >= NODE_CAP:
            self.ctx.error(self.ctx.path(path), "node list cut at %d hosts" % NODE_CAP)
        for node in found:
            if node.startswith("@"):
                continue  # a reference to another group
            user, _, host = node.rpartition("@")
            if re.match(r"^[\w.:-]+$", host):
                self.target(kind, host, user or None, None, None, path, number)


def parse_roster(text: str) -> List[Tuple[str, Dict[str, str], int]]:
    """salt-ssh roster entries: ``(id, {host, user, port, priv, ...}, line)``."""
    out = []  # type: List[Tuple[str, Dict[str, str], int]]
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"\s+#.*$", "", raw.rstrip())
        match = re.match(r"^(\s*)([^\s:#][^:]*):\s*(.*)$", line)
        if not match:
            continue
        if not match.group(1):  # a new roster id at column 0
            out.append((match.group(2).strip(), {}, number))
        elif out:
            out[-1][1].setdefault(match.group(2).strip(), match.group(3).strip().strip("'\""))
    return out


def parse_minion_masters(text: str) -> List[Tuple[str, int]]:
    """``master:`` of a Salt minion config, a single host or a YAML list of them."""
    out = []  # type: List[Tuple[str, int]]
    listing = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"\s+#.*$", "", raw.rstrip())
        match = re.match(r"^master\s*:\s*(.*)$", line)
        if match:
            value = match.group(1).strip().strip("'\"")
            listing = value == ""
            if value.startswith("[") and value.endswith("]"):
                out += [(v.strip().strip("'\""), number) for v in value[1:-1].split(",") if v.strip()]
            elif value:
                out.append((value, number))
        elif listing and re.match(r"^\s+-\s*\S", line):
            out.append((line.split("-", 1)[1].strip().strip("'\""), number))
        elif line.strip() and not line.startswith((" ", "\t")):
            listing = False
    return out


def _ruby_string(text: str, path: str) -> str:
    """The string a knife.rb value evaluates to, for the forms knife's own template writes."""
    folder = os.path.dirname(path)
    join = re.match(r"""^File\.join\(\s*current_dir\s*,\s*['"]([^'"]+)['"]\s*\)""", text)
    if join:
        return folder + "/" + join.group(1)
    match = re.match(r"""^(?:'([^']*)'|"([^"]*)")""", text)
    value = (match.group(1) if match and match.group(1) is not None else
             match.group(2) if match else text)
    return value.replace("#{current_dir}", folder)


def _listing(ctx: Context, host_dir: str) -> List[str]:
    """Host paths of the regular files directly in a folder, sorted."""
    if not hostfs.is_dir(ctx, host_dir):
        return []
    return [e.host_path for e in hostfs.walk(ctx, host_dir, 1, 100000)
            if os.path.isfile(e.real_path) and not os.path.islink(e.real_path)]


def expand_nodeset(text: str, cap: int = NODE_CAP) -> List[str]:
    """pdsh/ClusterShell node sets: ``node[01-03,7],web1 db2`` -> node01 node02 node03 ..."""
    parts = re.findall(r"(?:[^,\s\[]|\[[^\]]*\])+", text)
    out = []  # type: List[str]
    if cap <= 0:
        return out
    for part in parts:
        match = re.search(r"\[([^\]]*)\]", part)
        if not match:
            out.append(part)
            if len(out) >= cap:
                return out
            continue
        head, tail = part[:match.start()], part[match.end():]
        rests = expand_nodeset(tail, cap) if tail else [""]  # the same for every number
        for item in match.group(1).split(","):
            numbers = re.match(r"^\s*([0-9]{1,18})(?:-([0-9]{1,18}))?\s*$", item)
            if not numbers or not rests:
                continue
            beg, end = numbers.group(1), numbers.group(2) or numbers.group(1)
            width = len(beg) if beg.startswith("0") else 0
            for n in range(int(beg), min(int(end), int(beg) + cap) + 1):
                for rest in rests:
                    out.append(head + "%0*d" % (width, n) + rest)
                    if len(out) >= cap:
                        return out
    return out


def collect(ctx: Context, homes: List[Tuple[str, str]], names: Dict[int, str]) -> List[str]:
    """Emit the rows above; return the host paths of key files the configs name."""
    run = Orchestration(ctx, homes, names)
    for step in (run.ansible, run.salt, run.chef, run.puppet, run.node_groups):
        if ctx.time_left() <= 0:
            ctx.error("lateral", "skipped %s: the time budget ran out" % step.__name__)
            continue
        try:
            step()
        except Exception as exc:  # one broken tool config must not lose the others
            ctx.error("lateral", "%s failed: %s: %s" % (step.__name__, type(exc).__name__, exc))
    return run.keys
