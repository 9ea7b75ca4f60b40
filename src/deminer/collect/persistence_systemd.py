"""Persistence in systemd: services, sockets and timers, with their drop-ins and enablement.

Miner droppers install a ``.service`` with ``Restart=always`` (a watchdog that restarts the
miner when it is killed) and often a ``.timer`` that re-downloads it. For every unit file a
``persistence`` row is written per ``Exec*=`` line (kind ``systemd``, name = unit name,
command = the line's value) and one row per timer (kind ``systemd_timer``, command = its
triggers and the unit it starts). The unit's effective ``Restart=``/``RestartSec=`` (unit
file, then drop-ins) is appended to its ``ExecStart`` rows as ``[Restart=always
RestartSec=10]`` so rules can see the watchdog.

``enabled`` says whether systemd would run the line: the unit (or a template instance) is
linked from a ``*.wants``/``*.requires``/``*.upholds`` folder or started by an enabled timer
or socket, the file is the one systemd loads for that name (not shadowed by a file earlier
in the search path) and no later drop-in reset the line with an empty ``ExecStart=``.

Files a dpkg package installed and nobody modified (md5 as recorded by dpkg, see
``packages``) are read for the effective settings but not reported: a stock Debian host has
hundreds of them.
"""

import stat
from typing import Dict, List, Optional, Set, Tuple

from deminer.collect.bundle import Context
from deminer.collect.fileattrs import HostFile, RowWriter, read_file
from deminer.collect.hostfs import HostPathError, entry_mode, list_dir, resolve
from deminer.collect.packages import PackageDb

# Search order as systemd uses it: a unit name found earlier shadows the same name later.
SYSTEM_DIRS = ("/etc/systemd/system.control", "/run/systemd/transient", "/etc/systemd/system",
               "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system",
               "/usr/lib/systemd/system")
GLOBAL_USER_DIRS = ("/etc/systemd/user", "/usr/local/lib/systemd/user", "/lib/systemd/user",
                    "/usr/lib/systemd/user")
HOME_USER_DIRS = (".config/systemd/user", ".local/share/systemd/user")
PACKAGE_PREFIXES = ["/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/",
                    "/usr/local/lib/systemd/"]

UNIT_SUFFIXES = (".service", ".socket", ".timer")
LINK_DIRS = (".wants", ".requires", ".upholds")
EXEC_KEYS = frozenset(["ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost",
                       "ExecReload", "ExecCondition"])
TIMER_KEYS = ("OnCalendar", "OnBootSec", "OnStartupSec", "OnActiveSec", "OnUnitActiveSec",
              "OnUnitInactiveSec")
SETTING_KEYS = frozenset(["Restart", "RestartSec", "User", "Unit"])

Entry = Tuple[int, str, str, str]  # line, section, key, value


def parse_unit(lines: List[str]) -> List[Entry]:
    """``key=value`` entries of a unit file with their 1-based line and section.

    Follows systemd's syntax: ``#``/``;`` comments, ``[Section]`` headers, and a trailing
    backslash joining the next line with a space (comment lines inside are skipped).
    """
    out: List[Entry] = []
    section = ""
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        while line.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            if nxt[:1] in ("#", ";"):
                continue
            line = line[:-1] + " " + nxt
        key, sep, value = line.partition("=")
        if sep:
            out.append((start + 1, section, key.strip(), value.strip()))
    return out


class UnitFile(object):
    """One unit file or drop-in as found in one search folder."""

    def __init__(self, name: str, hf: HostFile, dropin: bool, rank: int, pristine: bool) -> None:
        self.name = name
        self.hf = hf
        self.dropin = dropin
        self.rank = rank  # position of its folder in the search path
        self.pristine = pristine
        self.entries = parse_unit(hf.lines())


class Scope(object):
    """The units of one systemd manager: the system, all users, or one user's home."""

    def __init__(self, ctx: Context, dirs: List[str], user: Optional[str],
                 packages: PackageDb) -> None:
        self.ctx = ctx
        self.user = user
        self.packages = packages
        self.files: List[UnitFile] = []
        self.links: Dict[str, str] = {}  # unit name -> a *.wants link to it
        seen: Set[str] = set()
        for rank, folder in enumerate(dirs):
            try:
                real: Optional[str] = resolve(ctx, folder)
            except HostPathError:  # list_dir below records the loop
                real = folder
            if real is None or real in seen:  # /lib is /usr/lib on merged-/usr systems
                continue
            seen.add(real)
            self._scan(folder, rank)
        names = {f.name for f in self.files if not f.dropin}
        for name, link in sorted(self.links.items()):
            # A wants-link to a file outside the search path still defines the unit.
            if name.endswith(UNIT_SUFFIXES) and name not in names:
                self._add(name, link, False, len(dirs))

    def _scan(self, folder: str, rank: int) -> None:
        for name in list_dir(self.ctx, folder):
            path = folder + "/" + name
            if name.endswith(LINK_DIRS):
                for link in list_dir(self.ctx, path):
                    self.links.setdefault(link, path + "/" + link)
            elif name.endswith(".d") and name[:-2].endswith(UNIT_SUFFIXES):
                mode = entry_mode(self.ctx, path)
                if mode is not None and stat.S_ISREG(mode):
                    continue  # a file named like a drop-in folder: systemd ignores it
                for conf in list_dir(self.ctx, path):
                    if conf.endswith(".conf"):
                        self._add(name[:-2], path + "/" + conf, True, rank)
            elif name.endswith(UNIT_SUFFIXES):
                self._add(name, path, False, rank)

    def _add(self, name: str, path: str, dropin: bool, rank: int) -> None:
        hf = read_file(self.ctx, path)
        if hf is None:
            return
        if hf.is_binary():
            self.ctx.error(path, "binary content, not a unit file; skipped")
            return
        self.files.append(UnitFile(name, hf, dropin, rank, self.packages.pristine(hf)))

    def enabled_names(self) -> Set[str]:
        """Units linked from a wants/requires folder, plus the templates of linked instances."""
        out = set(self.links)
        for name in self.links:
            if "@" in name:
                stem, _, rest = name.partition("@")
                out.add(stem + "@" + rest[rest.rfind("."):])
        return out


Effective = Tuple[Dict[str, str], List[Tuple[str, str]], Set[Tuple[int, int]]]


def _effective(files: List[UnitFile]) -> Effective:
    """Settings, timer triggers and live Exec lines after applying drop-ins in order."""
    settings: Dict[str, str] = {}
    triggers: List[Tuple[str, str]] = []
    execs: Dict[str, List[Tuple[int, int]]] = {}
    for uf in files:
        for line, section, key, value in uf.entries:
            if key in EXEC_KEYS and section in ("Service", "Socket"):
                if value:
                    execs.setdefault(key, []).append((id(uf), line))
                else:
                    execs[key] = []  # an empty assignment resets the list
            elif key in TIMER_KEYS and section == "Timer":
                if value:
                    triggers.append((key, value))
                else:
                    triggers = [t for t in triggers if t[0] != key]
            elif key in SETTING_KEYS:
                settings[key] = value
    live: Set[Tuple[int, int]] = set()
    for pairs in execs.values():
        live.update(pairs)
    return settings, triggers, live


def _write_scope(scope: Scope, rows: RowWriter) -> None:
    by_name: Dict[str, List[UnitFile]] = {}
    for uf in scope.files:
        by_name.setdefault(uf.name, []).append(uf)
    linked = scope.enabled_names()
    # Timers and sockets first: an enabled one makes the service it starts enabled too.
    order = sorted(by_name, key=lambda n: (not n.endswith((".timer", ".socket")), n))
    for name in order:
        group = sorted(by_name[name], key=lambda f: f.rank)
        mains = [f for f in group if not f.dropin]
        dropins: Dict[str, UnitFile] = {}
        for f in group:
            if f.dropin:  # same drop-in name in an earlier folder wins
                dropins.setdefault(f.hf.path.rsplit("/", 1)[-1], f)
        used = mains[:1] + [dropins[k] for k in sorted(dropins)]
        settings, triggers, live = _effective(used)
        enabled = name in linked
        if enabled and name.endswith(".timer"):
            linked.add(settings.get("Unit") or name[:-len(".timer")] + ".service")
        elif enabled and name.endswith(".socket"):
            linked.add(name[:-len(".socket")] + ".service")
        user = settings.get("User") or scope.user
        if name.endswith(".timer"):
            _timer_row(rows, name, used, settings, triggers, enabled, scope.user)
            continue
        restart = settings.get("Restart", "no")
        watchdog = ""
        if restart and restart != "no":
            watchdog = " [Restart=%s%s]" % (restart, " RestartSec=" + settings["RestartSec"]
                                            if settings.get("RestartSec") else "")
        for uf in group:
            if uf.pristine:
                continue
            for line, section, key, value in uf.entries:
                if key in EXEC_KEYS and section in ("Service", "Socket") and value:
                    command = value + (watchdog if key == "ExecStart" else "")
                    rows.row("systemd", uf.hf, line, name, command, user,
                             enabled and (id(uf), line) in live)


def _timer_row(rows: RowWriter, name: str, used: List[UnitFile], settings: Dict[str, str],
               triggers: List[Tuple[str, str]], enabled: bool, user: Optional[str]) -> None:
    if not used or all(f.pristine for f in used):
        return
    unit = settings.get("Unit") or name[:-len(".timer")] + ".service"
    command = " ".join("%s=%s" % t for t in triggers) + " Unit=" + unit
    first = used[0]
    line: Optional[int] = None
    for uf in used:
        for entry in uf.entries:
            if entry[2] in TIMER_KEYS and entry[3]:
                first, line = uf, entry[0]
                break
        if line is not None:
            break
    rows.row("systemd_timer", first.hf, line, name, command.strip(), user, enabled)


def collect_systemd(ctx: Context, rows: RowWriter, packages: PackageDb,
                    homes: List[Tuple[str, str]]) -> None:
    """Rows for the system manager, the global user units and every home's user units."""
    _write_scope(Scope(ctx, list(SYSTEM_DIRS), "root", packages), rows)
    _write_scope(Scope(ctx, list(GLOBAL_USER_DIRS), None, packages), rows)
    for user, home in homes:
        dirs = [home.rstrip("/") + "/" + d for d in HOME_USER_DIRS]
        _write_scope(Scope(ctx, dirs, user, packages), rows)
