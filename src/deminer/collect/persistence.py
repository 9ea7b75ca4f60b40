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
* ``profile``: shell start-up files. Only lines that run something are kept, by this
  heuristic: comments, blank lines, shell syntax (``if``/``fi``/``case``...) and segments
  made only of builtins that run nothing (``export``, ``alias``, ``umask``, ``shopt``,
  ``[``/``test``, assignments) are dropped; a segment starting with any other word (a
  program, ``.``/``source``, ``eval``) or using ``$(...)``/backticks is kept, and so is
  every line with a URL, a tmp path, ``nohup``/``setsid``, a trailing ``&``, ``curl``,
  ``wget``, ``base64``, ``python -c``, ``perl -e``, ``/dev/tcp``, ``LD_PRELOAD``,
  ``PROMPT_COMMAND`` or ``BASH_ENV``. The same filter picks the command lines of cron,
  at and rc scripts.
* ``ld_preload`` (/etc/ld.so.preload, one row per library) and ``authorized_key`` (every
  home's authorized_keys files, also those named by sshd's AuthorizedKeysFile; one row per
  key, plus an ``ssh_keys`` row with the OpenSSH SHA256 fingerprint).

Every file a row came from, and a fixed list of files attackers lock, gets a ``files`` row
with its immutable / append-only flags (see ``fileattrs``).
"""

import re
import stat
from typing import Callable, Dict, List, Optional, Set, Tuple

from deminer.collect import fileattrs
from deminer.collect.bundle import Context, fs_text
from deminer.collect.fileattrs import HostFile, RowWriter, clip, entry_mode, list_dir, read_file
from deminer.collect.persistence_systemd import PACKAGE_PREFIXES, PackageDb, collect_systemd

CRON_SCRIPT_DIRS = ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly")
USER_CRONTAB_DIRS = ("/var/spool/cron/crontabs", "/var/spool/cron", "/var/spool/cron/tabs")
AT_DIRS = ("/var/spool/cron/atjobs", "/var/spool/at")
RC_LOCAL = ("/etc/rc.local", "/etc/rc.d/rc.local")
RC_LINK_DIRS = tuple("/etc/rc%s.d" % r for r in "0123456S") + tuple(
    "/etc/rc.d/rc%s.d" % r for r in "0123456")
SYSTEM_PROFILES = ("/etc/profile", "/etc/bash.bashrc", "/etc/bashrc", "/etc/environment")
HOME_PROFILES = (".bashrc", ".bash_profile", ".profile", ".bash_login", ".bash_logout", ".zshrc",
                 ".zshenv", ".zprofile", ".zlogin")
KEY_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")
# Checked for immutable/append-only flags even when nothing in them is a row (attackers lock
# these so their user, keys and jobs survive cleanup). Hashed, never copied: shadow holds hashes.
LOCKED = ("/etc/crontab", "/etc/cron.d", "/var/spool/cron/crontabs", "/etc/ld.so.preload",
          "/etc/hosts", "/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/ssh/sshd_config")

# --- shell lines ------------------------------------------------------------------------
_MARKERS = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://|/tmp/|/var/tmp/|/dev/shm|/dev/(?:tcp|udp)/"
    r"|\b(?:nohup|setsid|disown|curl|wget|base64|LD_PRELOAD|PROMPT_COMMAND|BASH_ENV)\b"
    r"|\bpython[0-9.]*\s+-c\b|\bperl\s+-e\b|(?:^|[^&])&\s*$")
_INERT = frozenset([
    "export", "alias", "unalias", "readonly", "declare", "typeset", "local", "unset", "shopt",
    "set", "setopt", "unsetopt", "bind", "bindkey", "complete", "compdef", "zstyle", "autoload",
    "umask", "ulimit", "return", "exit", "true", "false", ":", "[", "[[", "test", "case", "esac",
    "fi", "done", "for", "select", "in", "function", "}", ")", ";;", "break", "continue", "shift",
    "cd", "pushd", "popd", "command", "type", "hash", "read", "let", "getopts", "wait"])
_PREFIX = frozenset(["if", "then", "else", "elif", "do", "while", "until", "!", "time", "{", "(",
                     "exec", "builtin"])
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\[[^]]*\])?\+?=")
_CASE_LABEL = re.compile(r"^\(?[^\s()=;'\"]+(?:\s*\|\s*[^\s()=;'\"]+)*\)")
_FUNC = re.compile(r"^(?:function\s+)?[A-Za-z_][\w:.-]*\s*\(\s*\)\s*\{?\s*$")
MAX_JOINED = 200  # continuation lines joined into one command at most


def _commands(line: str) -> List[List[str]]:
    """Words of each simple command of a line: quotes kept whole, split on unquoted
    ``; & | && ||`` (not the ``&`` of ``2>&1``), ending at a ``#`` that starts a word."""
    cmds: List[List[str]] = [[]]
    word, quote, i = "", "", 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                word += line[i:i + 2]
                i += 2
                continue
            if c == quote:
                quote = ""
            word += c
        elif c == "\\":
            word += line[i:i + 2]
            i += 2
            continue
        elif c in "'\"":
            quote = c
            word += c
        elif c == "#" and not word:
            break
        elif c in " \t" or c in ";|" or (c == "&" and line[i - 1:i] not in ("<", ">")
                                         and line[i + 1:i + 2] != ">"):
            if word:
                cmds[-1].append(word)
                word = ""
            if c not in " \t":
                cmds.append([])
        else:
            word += c
        i += 1
    if word:
        cmds[-1].append(word)
    return [c for c in cmds if c]


def runs_something(line: str) -> bool:
    """Whether a shell line starts a program (the heuristic in the module docstring)."""
    text = line.strip()
    if not text or text.startswith("#") or _FUNC.match(text):
        return False
    if _MARKERS.search(text) or "$(" in text or "`" in text:
        return True
    label = _CASE_LABEL.match(text)
    if label:
        text = text[label.end():]
    for words in _commands(text):
        while words and (words[0] in _PREFIX or _ASSIGN.match(words[0])):
            words.pop(0)
        first = words[0].lstrip("({") if words else ""
        if first and first not in _INERT:
            return True
    return False


def shell_commands(lines: List[str], first: int = 1) -> List[Tuple[int, str]]:
    """(line number, text) of the commands of a script that run something; a line ending in
    a backslash is joined with the next ones, numbered by its first line."""
    out: List[Tuple[int, str]] = []
    i = 0
    while i < len(lines):
        no, parts = first + i, [lines[i].strip()]
        i += 1
        while (parts[-1].endswith("\\") and not parts[0].startswith("#") and i < len(lines)
               and len(parts) < MAX_JOINED):
            parts[-1] = parts[-1][:-1].rstrip()
            parts.append(lines[i].strip())
            i += 1
        text = " ".join(p for p in parts if p)
        if runs_something(text):
            out.append((no, text))
    return out


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
def _sshd_key_patterns(ctx: Context) -> List[str]:
    """AuthorizedKeysFile patterns from sshd_config (a backdoor can add its own file)."""
    found: List[str] = []
    confs = ["/etc/ssh/sshd_config"] + ["/etc/ssh/sshd_config.d/" + n
                                        for n in list_dir(ctx, "/etc/ssh/sshd_config.d")]
    for path in confs:
        hf = read_file(ctx, path)
        for line in hf.lines() if hf else []:
            words = line.split()
            if len(words) > 1 and words[0].lower() == "authorizedkeysfile":
                found += [w for w in words[1:] if w.lower() != "none" and w not in found]
    return found


def collect_keys(ctx: Context, rows: RowWriter, accounts: List[fileattrs.Account],
                 homes: List[Tuple[str, str]]) -> None:
    patterns = list(KEY_FILES) + _sshd_key_patterns(ctx)
    uids = {name: uid for name, uid, _ in accounts}
    for user, home in homes:
        seen: Set[str] = set()
        for pattern in patterns:
            path = (pattern.replace("%%", "\0").replace("%h", home).replace("%u", user)
                    .replace("%U", str(uids.get(user, ""))).replace("\0", "%"))
            path = path if path.startswith("/") else home.rstrip("/") + "/" + path
            if path in seen:
                continue
            seen.add(path)
            real = fileattrs.quiet_resolve(ctx, path)
            if real is not None:  # flags are worth knowing even for an empty key file
                rows.facts.note(real)
            hf = read_file(ctx, path)
            if hf is not None:
                _key_rows(ctx, rows, hf, user)


def _key_rows(ctx: Context, rows: RowWriter, hf: HostFile, user: str) -> None:
    for no, line in enumerate(hf.lines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            options, key_type, blob, comment = fileattrs.split_key_line(line)
            fp = fileattrs.fingerprint(key_type, blob)
        except ValueError as exc:
            ctx.error(hf.path, "line %d: %s" % (no, exc))
            continue
        rows.row("authorized_key", hf, no, comment, line.strip(), user, True)
        ctx.emit("ssh_keys", {
            "ts": hf.mtime or ctx.collected_at, "source": fs_text(hf.real_path),
            "source_line": no, "kind": "authorized", "path": fs_text(hf.path),
            "user": fs_text(user), "key_type": key_type, "fingerprint": fp,
            "comment": clip(comment), "options": clip(options) or None, "mtime": hf.mtime or None})


# --- the whole collector ----------------------------------------------------------------
def collect(ctx: Context) -> None:
    """Write every persistence entry of the host, then the files they live in."""
    accounts = fileattrs.read_accounts(ctx)
    owners = fileattrs.uid_names(accounts)
    known = {a[0] for a in accounts}
    homes = fileattrs.home_dirs(ctx, accounts)
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
        ("authorized_key", lambda: collect_keys(ctx, rows, accounts, homes)),
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
        real = fileattrs.quiet_resolve(ctx, path)
        if real is not None:
            rows.facts.note(real, save=False)
    rows.facts.emit()
