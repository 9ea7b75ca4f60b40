"""Ansible inventories and ansible.cfg, read for the hosts an Ansible controller can reach.

Pure parsers (text in, hosts out) used by the orchestration collector. In seed case 6 the
miner used the Ansible server's inventory and keys to reach tens of thousands of VMs, so
every inventory host becomes a ``remote_targets`` row.

- INI inventories: groups, ``[g:vars]``, ``[g:children]``, ``host:port``, inline
  ``key=value`` variables, ranges ``web[01:50].example.com`` / ``db-[a:f]`` (with a stride
  ``[1:9:2]``), expanded up to a cap. A file with lines no Ansible inventory could hold
  (``key = value`` outside ``:vars``) is not an inventory and gives None.
- YAML inventories: a tolerant line-based reader for ``all:``/``children:``/``hosts:``/
  ``vars:`` mappings (block style, flow maps like ``{ansible_host: 10.0.0.1}`` on one line).
  Limits: no anchors/aliases, multi-line scalars, lists or ``!vault`` values; a YAML file
  without a valid group/``hosts`` structure gives None.
- Variables: ``ansible_host``/``ansible_ssh_host``, ``ansible_user``/``ansible_ssh_user``,
  ``ansible_port``/``ansible_ssh_port``, ``ansible_ssh_private_key_file``/
  ``ansible_private_key_file``; host vars override group vars, child groups override their
  parents, ``all`` is lowest.
"""

import itertools
import re
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from deminer.collect.sshclient import port_number, split_words

Host = NamedTuple("Host", [
    ("name", str), ("target", str), ("user", Optional[str]), ("port", Optional[int]),
    ("key_path", Optional[str]), ("line", int),
])

RANGE_CAP = 10000     # hosts one range may expand to
HOSTS_CAP = 50000     # hosts one inventory may hold (many capped ranges add up)
# Bounded digit counts: int() refuses very long digit strings, and a range is capped anyway.
_RANGE = re.compile(r"\[([0-9]{1,18}|[A-Za-z]):([0-9]{1,18}|[A-Za-z])(?::([0-9]{1,6}))?\]")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]:%]+$")
_SECTION = re.compile(r"^\[([^\]:]+)(?::([a-z]+))?\]$")
_YAML_KEY = re.compile(r"""^( *)(?:'([^']*)'|"([^"]*)"|((?:\[[^\]]*\]|[^:\s#'"\[])+)):(?:\s+(.*))?$""")


class _Inventory(object):
    """Groups, their variables and children, and each host's own variables and first line."""

    def __init__(self) -> None:
        self.hosts = {}  # type: Dict[str, Tuple[int, Dict[str, str]]]
        self.member = {}  # type: Dict[str, Set[str]]
        self.group_vars = {}  # type: Dict[str, Dict[str, str]]
        self.children = {}  # type: Dict[str, Set[str]]
        self.parents = {}  # type: Dict[str, Set[str]]
        self.truncated = False

    def add_host(self, pattern: str, group: str, line: int, variables: Dict[str, str]) -> None:
        room = HOSTS_CAP - len(self.hosts)
        names = expand_ranges(pattern, min(RANGE_CAP, room)) if room > 0 else []
        self.truncated = self.truncated or len(names) >= min(RANGE_CAP, room)
        for name in names:
            old = self.hosts.get(name)
            merged = dict(old[1]) if old else {}
            merged.update(variables)
            self.hosts[name] = (old[0] if old else line, merged)
            self.member.setdefault(name, set()).add(group)

    def _ancestors(self, group: str) -> Set[str]:
        """Every group above ``group`` (iterative: hostile nesting must not recurse deeply)."""
        found: Set[str] = set()
        todo = [group]
        while todo:
            current = todo.pop()
            for parent in self.parents.get(current, ()):
                if parent not in found and parent != group:
                    found.add(parent)
                    todo.append(parent)
        return found

    def _levels(self) -> Dict[str, int]:
        """Depth of each group below the top of the tree (groups in a cycle count as 0)."""
        groups = set(self.children) | set(self.parents)
        waiting = {g: len(self.parents.get(g, ())) for g in groups}
        queue = [g for g in sorted(groups) if not waiting[g]]
        level = {g: 0 for g in queue}
        for group in queue:  # grows while it is walked: a topological order
            for kid in sorted(self.children.get(group, ())):
                level[kid] = max(level.get(kid, 0), level[group] + 1)
                waiting[kid] -= 1
                if waiting[kid] == 0:
                    queue.append(kid)
        return level

    def resolve(self) -> List[Host]:
        for parent, kids in self.children.items():
            for kid in kids:
                self.parents.setdefault(kid, set()).add(parent)
        levels = self._levels()
        above = {}  # type: Dict[str, Set[str]]
        out = []
        for name in sorted(self.hosts, key=lambda n: (self.hosts[n][0], n)):
            line, own = self.hosts[name]
            groups = set(self.member.get(name, ()))
            for group in list(groups):
                if group not in above:
                    above[group] = self._ancestors(group)
                groups |= above[group]
            merged = dict(self.group_vars.get("all", {}))
            # Parents first, so that child groups override them, as Ansible does.
            for group in sorted(groups - {"all"}, key=lambda g: (levels.get(g, 0), g)):
                merged.update(self.group_vars.get(group, {}))
            merged.update(own)
            out.append(_host(name, merged, line))
        return out


def _host(name: str, var: Dict[str, str], line: int) -> Host:
    port = var.get("ansible_port") or var.get("ansible_ssh_port")
    return Host(name, var.get("ansible_host") or var.get("ansible_ssh_host") or name,
                var.get("ansible_user") or var.get("ansible_ssh_user"),
                port_number(port),
                var.get("ansible_ssh_private_key_file") or var.get("ansible_private_key_file"),
                line)


def expand_ranges(pattern: str, cap: int = RANGE_CAP) -> List[str]:
    """``web[01:03].x`` -> web01.x, web02.x, web03.x (numeric, alphabetic, with a stride)."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    beg, end, step = match.group(1), match.group(2), int(match.group(3) or 1)
    if beg.isdigit() and end.isdigit():
        width = len(beg) if beg.startswith("0") and len(beg) > 1 else 0
        numbers = range(int(beg), int(end) + 1, max(step, 1))
        values = ["%0*d" % (width, n) for n in itertools.islice(numbers, cap)]
    elif not beg.isdigit() and not end.isdigit():
        values = [chr(c) for c in range(ord(beg), ord(end) + 1, max(step, 1))]
    else:
        return [pattern]
    out = []  # type: List[str]
    head, tail = pattern[:match.start()], pattern[match.end():]
    rests = expand_ranges(tail, cap)  # the same for every value: expand once
    for value in values:
        for rest in rests:
            out.append(head + value + rest)
            if len(out) >= cap:
                return out
    return out


def parse_ini_inventory(text: str) -> Optional[Tuple[List[Host], bool]]:
    """Hosts of an INI inventory and whether a range hit the cap; None if not an inventory."""
    inv = _Inventory()
    group, section = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if not match or (match.group(2) or "hosts") not in ("hosts", "vars", "children"):
                return None
            group, section = match.group(1).strip(), match.group(2) or "hosts"
            continue
        words = split_words(line.split(" #")[0])
        if section == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                return None
            values = split_words(value)
            inv.group_vars.setdefault(group, {})[key.strip()] = values[0] if values else ""
        elif section == "children":
            if len(words) != 1 or "=" in words[0]:
                return None
            inv.children.setdefault(group, set()).add(words[0])
        else:
            if not words or not _HOST_NAME.match(words[0]):
                return None
            variables = {}  # type: Dict[str, str]
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep or not key:
                    return None  # "key = value" or prose: not an inventory line
                variables[key] = value
            name = words[0]
            if name.count(":") == 1 and name.rsplit(":", 1)[1].isdigit():
                name, port = name.rsplit(":", 1)
                variables.setdefault("ansible_port", port)
            if not name:
                return None  # ":22" names no host: not an inventory line
            inv.add_host(name, group, number, variables)
    if not inv.hosts:
        return None
    return inv.resolve(), inv.truncated


def _scalar(text: str) -> Optional[str]:
    text = text.strip()
    if text in ("", "~", "null", "{}"):
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _flow_map(text: str) -> Dict[str, str]:
    """``{a: 1, b: "x"}`` on one line (no nesting)."""
    out = {}  # type: Dict[str, str]
    inner = text.strip()[1:-1]
    for part in inner.split(","):
        key, sep, value = part.partition(":")
        if sep and key.strip():
            out[_scalar(key) or ""] = _scalar(value) or ""
    return out


def _group_path(path: List[str]) -> bool:
    """True for ``g``, ``g children g2``, ... : the keys above a hosts/vars/children key."""
    return bool(path) and len(path) % 2 == 1 and all(p == "children" for p in path[1::2])


def parse_yaml_inventory(text: str) -> Optional[Tuple[List[Host], bool]]:
    """Hosts of a YAML inventory (see the module notes for the limits); None if not one."""
    inv = _Inventory()
    stack = []  # type: List[Tuple[int, str]]
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"\s+#.*$", "", raw.rstrip())
        if not line.strip() or line.lstrip().startswith(("#", "---", "...", "%")):
            continue
        if line.lstrip().startswith("-") or "\t" in line[:len(line) - len(line.lstrip())]:
            continue  # lists (playbooks) and tab-indented lines are not inventory mappings
        match = _YAML_KEY.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        key = next(g for g in match.group(2, 3, 4) if g is not None)
        value = match.group(5) or ""
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack]
        if path and path[-1] == "hosts" and _group_path(path[:-1]):
            variables = _flow_map(value) if value.strip().startswith("{") else {}
            inv.add_host(key, path[-2], number, variables)
        elif len(path) >= 2 and path[-2] == "hosts" and _group_path(path[:-2]):
            for name in expand_ranges(path[-1]):  # the host key may be a range
                if name in inv.hosts:
                    inv.hosts[name][1][key] = _scalar(value) or ""
        elif path and path[-1] == "vars" and _group_path(path[:-1]):
            inv.group_vars.setdefault(path[-2], {})[key] = _scalar(value) or ""
        elif path and path[-1] == "children" and _group_path(path[:-1]):
            inv.children.setdefault(path[-2], set()).add(key)
        stack.append((indent, key))
    if not inv.hosts:
        return None
    return inv.resolve(), inv.truncated


def parse_cfg(text: str) -> Dict[str, Tuple[str, int]]:
    """ansible.cfg ``[defaults]`` settings that point at hosts, keys and inventories:
    ``{name: (value, line)}`` for inventory, private_key_file, remote_user, remote_port."""
    wanted = ("inventory", "hostfile", "private_key_file", "remote_user", "remote_port")
    section = ""
    out = {}  # type: Dict[str, Tuple[str, int]]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
        elif section == "defaults" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            key = key.strip().lower()
            value = re.sub(r"\s+[#;].*$", "", value).strip()
            if key in wanted and value and key not in out:
                out["inventory" if key == "hostfile" else key] = (value, number)
    return out
