"""Collector: what makes a program start again on this host (autostart / persistence).

One ``persistence`` row per entry (kinds as in CONTRIBUTING.md) with ``location`` (the host
path the system reads), ``source`` (the same path with symlinks resolved inside the root),
``source_line``, ``name``, ``command`` (what runs), ``user``, ``mtime``, ``enabled`` and
``packaged`` (does a dpkg package own the file: ``owned``, ``modified``, ``unowned``; None
without a dpkg database, e.g. on RPM hosts):

* ``cron``: /etc/crontab and /etc/cron.d/* (with their user field), user crontabs (Debian
  /var/spool/cron/crontabs, RHEL /var/spool/cron, SUSE tabs), and the command lines of the
  /etc/cron.{hourly,daily,weekly,monthly} scripts (a binary there: one row, command = its
  path). ``name`` is the schedule (or the script).
  Environment lines (``PATH=``, ``MAILTO=``) are not entries.
* ``anacron`` (/etc/anacrontab), ``at`` (queued jobs: the commands after at's preamble).
* ``systemd`` / ``systemd_timer``: see ``persistence_systemd``.
* ``rc``: rc.local, /etc/init.d scripts and /etc/rc*.d links a package did not install.
* ``profile``: shell start-up files, only the lines that run something (``shell_lines``;
  the same filter picks the command lines of cron, at and rc scripts).
* ``ld_preload`` (/etc/ld.so.preload, one row per library) and ``authorized_key`` (one row
  per key, plus an ``ssh_keys`` row with the OpenSSH SHA256 fingerprint) from the files sshd
  reads for each home's account (see ``sshd``), and, with ``enabled`` false, from the
  default files and any other file an sshd_config line names that sshd does not read for
  that account (a key planted there is still evidence).

Every file a row came from, and a fixed list of files attackers lock, gets a ``files`` row
with its immutable / append-only flags (see ``fileattrs``). Whether a package owns a file
comes from ``packages``.
"""

import re
import stat
from typing import Callable, Dict, List, Optional, Set, Tuple

from deminer.collect import fileattrs, hostfs, sshd, sshkeys
from deminer.collect.bundle import Context, fs_text
from deminer.collect.fileattrs import HostFile, RowWriter, clip, read_file
from deminer.collect.hostfs import entry_mode, list_dir
from deminer.collect.packages import PackageDb
from deminer.collect.persistence_systemd import PACKAGE_PREFIXES, collect_systemd
from deminer.collect.shell_lines import shell_commands

CRON_SCRIPT_DIRS = ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly")
USER_CRONTAB_DIRS = ("/var/spool/cron/crontabs", "/var/spool/cron", "/var/spool/cron/tabs")
AT_DIRS = ("/var/spool/cron/atjobs", "/var/spool/at")
RC_LOCAL = ("/etc/rc.local", "/etc/rc.d/rc.local")
RC_LINK_DIRS = tuple("/etc/rc%s.d" % r for r in "0123456S") + tuple(
    "/etc/rc.d/rc%s.d" % r for r in "0123456")
SYSTEM_PROFILES = ("/etc/profile", "/etc/bash.bashrc", "/etc/bashrc", "/etc/environment")
HOME_PROFILES = (".bashrc", ".bash_profile", ".profile", ".bash_login", ".bash_logout", ".zshrc",
                 ".zshenv", ".zprofile", ".zlogin")
# Checked for immutable/append-only flags even when nothing in them is a row (attackers lock
# these so their user, keys and jobs survive cleanup). Hashed, never copied: shadow holds hashes.
LOCKED = ("/etc/crontab", "/etc/cron.d", "/var/spool/cron/crontabs", "/etc/ld.so.preload",
          "/etc/hosts", "/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/ssh/sshd_config")

def _script_rows(ctx: Context, rows: RowWriter, kind: str, hf: HostFile, name: str,
                 user: Optional[str], enabled: bool) -> None:
    if hf.is_binary():  # a compiled program dropped where a script belongs: it is what runs
        rows.row(kind, hf, None, name, hf.real_path, user, enabled)
        return
    for no, text in shell_commands(hf.lines()):
        rows.row(kind, hf, no, name, text, user, enabled)


def _executable(hf: HostFile) -> bool:
    return bool(hf.st.st_mode & 0o111)


# --- cron, anacron, at ------------------------------------------------------------------
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
_FIELD = re.compile(r"^[0-9A-Za-z*/,~-]+$")
_SPECIAL = frozenset(["@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily",
                      "@midnight", "@hourly"])
_ANACRON = re.compile(r"^(@\w+|\d+)\s+(\d+)\s+(\S+)\s+(.+)$")


def crontab_rows(ctx: Context, rows: RowWriter, hf: HostFile, owner: Optional[str],
                 known: Set[str]) -> None:
    """Rows of one crontab; ``owner`` None means the system format with a user field."""
    # Padding a crontab with NUL bytes must not hide its entries: parse it anyway, quietly.
    binary = hf.is_binary()
    if binary:
        ctx.error(hf.path, "binary content (NUL bytes); only lines that parse as cron entries "
                  "are listed")
    for no, raw in enumerate(hf.lines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or _ENV.match(line):
            continue
        if line.startswith("@"):
            parts = line.split(None, 1)
            ok = parts[0].lower() in _SPECIAL and len(parts) == 2
        else:
            parts = line.split(None, 5)
            ok = len(parts) == 6 and all(_FIELD.match(p) for p in parts[:5])
            parts = [" ".join(parts[:5]), *parts[5:]]
        if not ok:
            if not binary:
                ctx.error(hf.path, "line %d is not a cron entry: %s" % (no, clip(line)[:200]))
            continue
        schedule, rest = parts[0], parts[1]
        user, command, enabled = owner, rest, True
        if owner is None:
            who = rest.split(None, 1)
            if len(who) == 2 and (not known or who[0] in known):
                user, command = who
            else:  # no such user: cron refuses the line, but the responder must see it
                user, enabled = None, False
        rows.row("cron", hf, no, schedule, command, user, enabled)


def collect_cron(ctx: Context, rows: RowWriter, known: Set[str]) -> None:
    for path in ["/etc/crontab"] + ["/etc/cron.d/" + n for n in list_dir(ctx, "/etc/cron.d")]:
        hf = read_file(ctx, path)
        if hf is not None:
            crontab_rows(ctx, rows, hf, None, known)
    for folder in USER_CRONTAB_DIRS:
        for name in list_dir(ctx, folder):
            mode = entry_mode(ctx, folder + "/" + name)
            if mode is None or stat.S_ISDIR(mode):  # crontabs/, atjobs/ live here too
                continue
            hf = read_file(ctx, folder + "/" + name)
            if hf is not None:
                crontab_rows(ctx, rows, hf, name, known)
    for folder in CRON_SCRIPT_DIRS:
        for name in list_dir(ctx, folder):
            hf = None if name == ".placeholder" else read_file(ctx, folder + "/" + name)
            if hf is not None:  # run-parts runs only executable files
                _script_rows(ctx, rows, "cron", hf, name, "root", _executable(hf))
    hf = read_file(ctx, "/etc/anacrontab")
    for no, raw in enumerate(hf.lines() if hf else [], 1):
        line = raw.strip()
        if hf is None or not line or line.startswith("#") or _ENV.match(line):
            continue
        m = _ANACRON.match(line)
        if m:
            rows.row("anacron", hf, no, m.group(3), m.group(4), "root", True)
        else:
            ctx.error(hf.path, "line %d is not an anacron job: %s" % (no, clip(line)[:200]))


_AT_UID = re.compile(r"^# atrun uid=(\d+)")
_AT_CD = re.compile(r"^cd .* \|\| \{\s*$")
_AT_HEREDOC = re.compile(r"^\$\{SHELL:-/bin/sh\} << '([A-Za-z0-9_]+)'\s*$")


def at_commands(lines: List[str]) -> Tuple[Optional[int], List[Tuple[int, str]]]:
    """The uid and the user's command lines of an at job (after at's environment preamble)."""
    uid, start, end = None, 0, len(lines)
    for i, line in enumerate(lines):
        m = _AT_UID.match(line)
        if m and uid is None:
            uid = int(m.group(1))
        if _AT_CD.match(line):
            start = next((j + 1 for j in range(i + 1, len(lines)) if lines[j].strip() == "}"),
                         i + 1)
            break
    if start < len(lines):
        m = _AT_HEREDOC.match(lines[start])
        if m:
            start += 1
            end = next((j for j in range(start, len(lines)) if lines[j] == m.group(1)), end)
    return uid, shell_commands(lines[start:end], start + 1)


def collect_at(ctx: Context, rows: RowWriter, owners: Dict[int, str]) -> None:
    for folder in AT_DIRS:
        for name in list_dir(ctx, folder):
            mode = entry_mode(ctx, folder + "/" + name)
            if name == ".SEQ" or mode is None or stat.S_ISDIR(mode):
                continue
            hf = read_file(ctx, folder + "/" + name)
            if hf is None:
                continue
            uid, commands = at_commands(hf.lines())
            uid = hf.st.st_uid if uid is None else uid
            for no, text in commands:
                rows.row("at", hf, no, name, text, owners.get(uid, str(uid)), True)


# --- rc, profiles, ld.so.preload ----------------------------------------------------------
def collect_rc(ctx: Context, rows: RowWriter, packages: PackageDb) -> None:
    done: Set[str] = set()
    for path in RC_LOCAL:  # on RHEL /etc/rc.local links to /etc/rc.d/rc.local
        hf = read_file(ctx, path)
        if hf is not None and hf.real_path not in done:
            done.add(hf.real_path)
            _script_rows(ctx, rows, "rc", hf, "rc.local", "root", _executable(hf))
    started: Set[str] = set()
    for folder in RC_LINK_DIRS:
        for name in list_dir(ctx, folder):
            if not name.startswith(("S", "K")):  # sysv-rc runs only S* (start) and K* (kill)
                continue
            hf = read_file(ctx, folder + "/" + name)
            if hf is None:
                continue
            if name.startswith("S"):
                started.add(hf.real_path)
            if not packages.pristine(hf):
                rows.row("rc", hf, None, name, hf.real_path, "root", name.startswith("S"))
    for name in list_dir(ctx, "/etc/init.d"):
        hf = read_file(ctx, "/etc/init.d/" + name)
        if hf is not None and not packages.pristine(hf):
            _script_rows(ctx, rows, "rc", hf, name, "root", hf.real_path in started)


def collect_profiles(ctx: Context, rows: RowWriter, homes: List[Tuple[str, str]]) -> None:
    files: List[Tuple[str, Optional[str], bool]] = [(p, None, True) for p in SYSTEM_PROFILES]
    # /etc/profile sources only /etc/profile.d/*.sh: other names there never run.
    files += [("/etc/profile.d/" + n, None, n.endswith(".sh"))
              for n in list_dir(ctx, "/etc/profile.d")]
    files += [(home.rstrip("/") + "/" + n, user, True) for user, home in homes
              for n in HOME_PROFILES]
    for path, user, enabled in files:
        hf = read_file(ctx, path)
        if hf is None:
            continue
        if hf.is_binary():
            ctx.error(path, "binary content, not a shell profile; skipped")
            continue
        for no, text in shell_commands(hf.lines()):
            rows.row("profile", hf, no, path.rsplit("/", 1)[-1], text, user, enabled)


def collect_ld_preload(ctx: Context, rows: RowWriter) -> None:
    hf = read_file(ctx, "/etc/ld.so.preload")
    if hf is None or hf.is_binary():
        return
    for no, line in enumerate(hf.lines(), 1):
        # ld.so splits on white space and colons; it has no comments, we skip them anyway.
        for lib in re.split(r"[\s:]+", line.strip()) if not line.lstrip().startswith("#") else []:
            if lib:
                rows.row("ld_preload", hf, no, lib.rsplit("/", 1)[-1], lib, None, True)


# --- authorized keys ----------------------------------------------------------------------
def collect_keys(ctx: Context, rows: RowWriter, users: List[hostfs.User],
                 homes: List[Tuple[str, str]]) -> None:
    files = sshd.authorized_keys_files(ctx)
    uids = {u.name: u.uid for u in users}
    for user, home in homes:
        used = files.used(user)
        # Also the files sshd does not read for this user: a key planted there is evidence.
        seen: Set[str] = set()
        for pattern in used + [p for p in sshd.DEFAULT_FILES + files.named if p not in used]:
            path = sshd.key_file_path(pattern, user, home, uids.get(user))
            if path in seen:
                continue
            seen.add(path)
            real = hostfs.quiet_resolve(ctx, path)
            if real is not None:  # flags are worth knowing even for an empty key file
                rows.facts.note(real)
            hf = read_file(ctx, path)
            if hf is not None:
                _key_rows(ctx, rows, hf, user, pattern in used)


def _key_rows(ctx: Context, rows: RowWriter, hf: HostFile, user: str, enabled: bool) -> None:
    for no, line in enumerate(hf.lines(), 1):
        try:
            parsed = sshkeys.parse_public_key_line(line)
        except ValueError as exc:
            ctx.error(hf.path, "line %d: %s" % (no, exc))
            continue
        if parsed is None:  # blank or comment
            continue
        options, key_type, blob, comment = parsed
        rows.row("authorized_key", hf, no, comment, line.strip(), user, enabled)
        ctx.emit("ssh_keys", {
            "ts": hf.mtime or ctx.collected_at, "source": fs_text(hf.real_path),
            "source_line": no, "kind": "authorized", "path": fs_text(hf.path),
            "user": fs_text(user), "key_type": key_type, "fingerprint": sshkeys.fingerprint(blob),
            "comment": clip(comment), "options": clip(options) or None, "mtime": hf.mtime or None})


# --- the whole collector ----------------------------------------------------------------
def collect(ctx: Context) -> None:
    """Write every persistence entry of the host, then the files they live in."""
    users = hostfs.read_users(ctx)
    owners = hostfs.owner_names(users)
    known = {u.name for u in users}
    homes = hostfs.homes(ctx, users, walkable=False)
    # Where entries usually live is loaded at once; other paths are asked about in one pass.
    packages = PackageDb(ctx, [*PACKAGE_PREFIXES, "/etc/", "/var/spool/", "/root/", "/home/"])
    rows = RowWriter(ctx, fileattrs.FileFacts(ctx, owners), packages.key)
    steps: List[Tuple[str, Callable[[], None]]] = [
        ("cron", lambda: collect_cron(ctx, rows, known)),
        ("at", lambda: collect_at(ctx, rows, owners)),
        ("systemd", lambda: collect_systemd(ctx, rows, packages, homes)),
        ("rc", lambda: collect_rc(ctx, rows, packages)),
        ("profile", lambda: collect_profiles(ctx, rows, homes)),
        ("ld_preload", lambda: collect_ld_preload(ctx, rows)),
        ("authorized_key", lambda: collect_keys(ctx, rows, users, homes)),
    ]
    for name, step in steps:
        if ctx.time_left() <= 0:
            ctx.error("persistence", "time budget ran out before %s" % name)
            break
        try:
            step()
        except Exception as exc:  # one broken part must not lose the others
            ctx.error("persistence/" + name, "failed: %s: %s" % (type(exc).__name__, exc))
    try:
        rows.flush(packages.statuses)
    except Exception as exc:  # rows without their package status beat no rows
        ctx.error("persistence/packages", "failed: %s: %s" % (type(exc).__name__, exc))
        rows.flush(lambda keys: {})
    crontabs = ["/var/spool/cron/crontabs/" + n for n in list_dir(ctx, "/var/spool/cron/crontabs")]
    for path in list(LOCKED) + crontabs:
        real = hostfs.quiet_resolve(ctx, path)
        if real is not None:
            rows.facts.note(real, save=False)
    rows.facts.emit()
