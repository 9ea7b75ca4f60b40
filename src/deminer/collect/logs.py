"""Collector: authentication, web access and audit logs, the sshd journal and shell histories.

- Copies ``/var/log/auth.log*``, ``secure*``, ``messages*`` (only when there is no auth.log),
  ``syslog*`` (a smaller cap), web servers' access logs (nginx, apache2, httpd, lighttpd,
  tomcat) and ``audit/audit.log*`` into ``raw/<host path>``, rotated ``.1`` and ``.gz`` files
  included. Plain logs keep their newest bytes when over the cap (an ``errors`` row says so);
  compressed ones are copied whole or not at all, since a cut gzip cannot be read.
- On a live host with ``journalctl``, runs ``journalctl -o json --no-pager _COMM=sshd -S -30d``
  (no shell, with a timeout) into ``raw/journal/sshd.json``, keeping the newest bytes.
- Reads every home's shell histories (bash, zsh, ash, sh, fish and .mysql_history) into
  ``events`` rows ``shell_command`` and copies them raw. zsh extended history
  (``: 1700000000:0;cmd``) and bash ``#1700000000`` lines give ``ts``; otherwise ``ts`` is
  NULL, never the collection time.
"""

import collections
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from typing import Iterator, List, Optional, Tuple

from deminer.collect import hostfs
from deminer.collect.bundle import Context, fs_text, safe_text, utc_iso

LOG_DIR = "/var/log"
SYSLOG_CAP = 16 * 1024 * 1024
LOGS_TOTAL_CAP = 512 * 1024 * 1024
JOURNAL_TIMEOUT = 60.0
JOURNAL_ARGV = ("-o", "json", "--no-pager", "_COMM=sshd", "-S", "-30d")
# Folders under /var/log and the log names in them (with their rotations) a responder wants
# beyond the auth logs: web access logs and the audit log.
SERVICE_LOGS = (
    ("nginx", ("access.log",)),
    ("apache2", ("access.log", "other_vhosts_access.log")),
    ("httpd", ("access_log", "ssl_access_log")),
    ("lighttpd", ("access.log",)),
    ("tomcat", ("localhost_access_log",)),
    ("audit", ("audit.log",)),
)
HISTORY_CAP = 16 * 1024 * 1024
COMMAND_CAP = 16384
RAW_CAP = 4096
# History files of shells (plus mysql's, which holds typed credentials and SQL).
HISTORIES = (
    (".bash_history", "bash"), (".zsh_history", "zsh"), (".ash_history", "ash"),
    (".sh_history", "sh"), (".history", "sh"), (".local/share/fish/fish_history", "fish"),
    (".mysql_history", "mysql"),
)
_ZSH_EXTENDED = re.compile(r"^: *([0-9]{1,12}):([0-9]+);(.*)$", re.S)
_BASH_STAMP = re.compile(r"^#([0-9]{9,11})\s*$")
_FISH_ESCAPE = re.compile(r"\\(.)")
_OCTAL = re.compile(r"\\([0-3][0-7][0-7])")

Command = Tuple[int, Optional[str], str, str]  # (line, ts, command, raw)


def collect(ctx: Context) -> None:
    for step in (copy_logs, copy_journal, histories):
        if ctx.time_left() <= 0:
            ctx.error("logs", "skipped %s: the time budget ran out" % step.__name__)
            continue
        try:
            step(ctx)
        except Exception as exc:  # one broken step must not lose the others
            ctx.error("logs", "%s failed: %s: %s" % (step.__name__, type(exc).__name__, exc))


# -- log files ------------------------------------------------------------------------------
def _family(names: List[str], base: str) -> List[str]:
    """``base`` and its rotations: ``base.1``, ``base.2.gz``, ``base-20240101``."""
    return sorted(n for n in names if n == base or n.startswith((base + ".", base + "-")))


def copy_logs(ctx: Context) -> None:
    real_dir = ctx.path(LOG_DIR)
    if not hostfs.inside_root(ctx, real_dir):
        ctx.error(real_dir, "not read: a symlink out of the examined root")
        return
    try:
        names = os.listdir(real_dir)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            ctx.error(real_dir, "cannot list: %s" % (exc.strerror or exc))
        return
    auth = _family(names, "auth.log")
    picked = [(os.path.join(real_dir, n), ctx.max_file_bytes) for n in auth + _family(names, "secure")]
    if not auth:
        picked += [(os.path.join(real_dir, n), ctx.max_file_bytes) for n in _family(names, "messages")]
    picked += [(os.path.join(real_dir, n), min(SYSLOG_CAP, ctx.max_file_bytes))
               for n in _family(names, "syslog")]
    picked += [(real, ctx.max_file_bytes) for real in _service_logs(ctx, real_dir)]
    total = 0
    # Newest first, so that the total cap, if reached, drops the oldest rotations.
    picked.sort(key=lambda item: -_mtime(item[0]))
    for real, cap in picked:
        name = os.path.basename(real)
        if not _regular(ctx, real):
            continue
        size = os.lstat(real).st_size
        if total >= LOGS_TOTAL_CAP:
            ctx.error(real, "not copied: the logs already took %d bytes" % total)
            continue
        if name.endswith((".gz", ".xz", ".bz2", ".zst")):
            if size > cap:
                ctx.error(real, "not copied: compressed log of %d bytes is over the cap "
                                "of %d (a cut archive cannot be read)" % (size, cap))
                continue
            cap = size
        if ctx.copy_raw(real, cap) is not None:
            total += min(size, cap)


def _service_logs(ctx: Context, log_dir: str) -> List[str]:
    """Web servers' access logs (the web shell's upload and use, exploit requests) and the
    audit log (every execve with its argv, when auditd runs), rotations included."""
    out = []  # type: List[str]
    for sub, bases in SERVICE_LOGS:
        folder = os.path.join(log_dir, sub)
        if not hostfs.inside_root(ctx, folder):
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for base in bases:
            out += [os.path.join(folder, n) for n in _family(names, base)]
    return out


def _mtime(real: str) -> float:
    try:
        return os.lstat(real).st_mtime
    except OSError:
        return 0.0


def _regular(ctx: Context, real: str, report: bool = True) -> bool:
    """A regular file inside the root; a symlinked log or history is noted, not followed."""
    try:
        st = os.lstat(real)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) and report:
        try:
            target = fs_text(os.readlink(real))
        except OSError:
            target = "?"
        ctx.error(real, "not copied: a symlink to %s" % target)
        return False
    return stat.S_ISREG(st.st_mode) and hostfs.inside_root(ctx, real)


# -- journald -------------------------------------------------------------------------------
def copy_journal(ctx: Context, journalctl: Optional[str] = None,
                 timeout: float = JOURNAL_TIMEOUT, limit: Optional[int] = None) -> Optional[str]:
    """sshd's journal entries of the last 30 days as JSON lines (live hosts only).

    Keeps the newest ``limit`` bytes (whole lines); returns the bundle path or None.
    """
    if journalctl is None:
        if not ctx.live:
            return None
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            return None
    cap = ctx.max_file_bytes if limit is None else limit
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([journalctl, *JOURNAL_ARGV], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=err)
        except OSError as exc:
            ctx.error(journalctl, "cannot run: %s" % (exc.strerror or exc))
            return None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        kept, size = _newest(proc, cap)
        timer.cancel()
        code = proc.wait()
        err.seek(0)
        message = safe_text(err.read(2048)).strip()
    if code < 0:
        ctx.error(journalctl, "stopped after %g s (timeout); kept what it wrote" % timeout)
    elif code != 0:
        ctx.error(journalctl, "exit status %d: %s" % (code, message[:500]))
    data = b"".join(kept)
    if size > len(data):
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
        ctx.error(journalctl, "truncated to the newest %d bytes (of %d)" % (len(data), size))
    target = os.path.join(ctx.stage, "raw", "journal", "sshd.json")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as fh:
        fh.write(data)
    return "raw/journal/sshd.json"


def _newest(proc: "subprocess.Popen[bytes]", cap: int) -> Tuple[List[bytes], int]:
    """Read a child's output to the end, holding only its newest ``cap`` bytes."""
    kept = collections.deque()  # type: collections.deque[bytes]
    held = size = 0
    assert proc.stdout is not None
    while True:
        chunk = proc.stdout.read(1 << 16)
        if not chunk:
            break
        kept.append(chunk)
        held += len(chunk)
        size += len(chunk)
        while held - len(kept[0]) >= cap:
            held -= len(kept.popleft())
    proc.stdout.close()
    if held > cap:
        kept[0] = kept[0][held - cap:]
    return list(kept), size


# -- shell histories ------------------------------------------------------------------------
def history_files(ctx: Context) -> Iterator[Tuple[str, str, str]]:
    """``(user, host path, shell)`` of every history file in every home."""
    for user, home in hostfs.homes(ctx, hostfs.read_users(ctx)):
        for name, shell in HISTORIES:
            host_path = home.rstrip("/") + "/" + name
            if os.path.lexists(ctx.path(host_path)):
                yield user, host_path, shell


def read_history(ctx: Context, host_path: str, shell: str) -> List[Command]:
    """The commands of one history file (its newest ``HISTORY_CAP`` bytes)."""
    real = ctx.path(host_path)
    if not _regular(ctx, real, report=False):
        return []
    try:
        data, size = hostfs.read_tail(real, HISTORY_CAP)
        first_line = 1
        if size > len(data):
            first_line = _count_lines(real, size - len(data))
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else b""
            first_line += 1 if cut >= 0 else 0
    except (OSError, IOError) as exc:
        ctx.error(real, "cannot read: %s" % (exc.strerror or exc))
        return []
    return parse_history(data, shell, first_line)


def _count_lines(real: str, upto: int) -> int:
    """1 + newlines in the first ``upto`` bytes: the line number where byte ``upto`` sits."""
    lines = 1
    with open(real, "rb") as fh:
        while upto > 0:
            chunk = fh.read(min(upto, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            upto -= len(chunk)
    return lines


def unmetafy(data: bytes) -> bytes:
    """Undo zsh's history encoding: byte 0x83 marks the next byte XOR 0x20."""
    if b"\x83" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for byte in it:
        out.append((next(it, 0x20) ^ 0x20) if byte == 0x83 else byte)
    return bytes(out)


def parse_history(data: bytes, shell: str, first_line: int = 1) -> List[Command]:
    """``(line, ts, command, raw)`` for each command of a history file's content."""
    if shell == "zsh":
        data = unmetafy(data)
    lines = safe_text(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if shell == "fish":
        return _fish(lines, first_line)
    out = []  # type: List[Command]
    stamp = None  # type: Optional[str]
    i = 0
    while i < len(lines):
        number, raw = first_line + i, lines[i].rstrip("\r")
        i += 1
        if shell == "mysql":
            if raw != "_HiStOrY_V2_" and raw.strip():
                text = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), raw)
                out.append((number, None, text[:COMMAND_CAP], raw[:RAW_CAP]))
            continue
        match = _BASH_STAMP.match(raw)
        if match:
            stamp = utc_iso(int(match.group(1))) or None
            continue
        ext = _ZSH_EXTENDED.match(raw)
        # zsh writes a command's inner newlines as backslash-newline.
        while raw.endswith("\\") and i < len(lines) and (ext or shell == "zsh"):
            raw = raw[:-1] + "\n" + lines[i].rstrip("\r")
            i += 1
        ext = _ZSH_EXTENDED.match(raw)
        if ext:
            ts = utc_iso(int(ext.group(1))) or None
            command = ext.group(3)
        else:
            ts, command = stamp, raw
        stamp = None
        if command.strip():
            out.append((number, ts, command[:COMMAND_CAP], raw[:RAW_CAP]))
    return out


def _fish(lines: List[str], first_line: int) -> List[Command]:
    """fish_history: ``- cmd: ...`` entries followed by ``  when: <epoch>``."""
    out = []  # type: List[Command]
    for i, line in enumerate(lines):
        if not line.startswith("- cmd: "):
            continue
        # fish escapes a backslash as \\ and a newline as \n; undo both in one pass.
        command = _FISH_ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), line[7:])
        ts = None
        if i + 1 < len(lines) and lines[i + 1].strip().startswith("when:"):
            value = lines[i + 1].split(":", 1)[1].strip()
            ts = utc_iso(int(value)) if re.match(r"^[0-9]{1,12}$", value) else None
        out.append((first_line + i, ts or None, command[:COMMAND_CAP], line[:RAW_CAP]))
    return out


def histories(ctx: Context) -> None:
    """``shell_command`` events from every history, and a raw copy of each."""
    for user, host_path, shell in history_files(ctx):
        real = ctx.path(host_path)
        if not _regular(ctx, real):
            continue
        commands = read_history(ctx, host_path, shell)
        for number, ts, command, raw in commands:
            ctx.emit("events", {
                "ts": ts, "source": fs_text(host_path), "source_line": number,
                "event": "shell_command", "program": shell, "user": user,
                "command": command, "raw": raw,
            })
        ctx.copy_raw(real, min(ctx.max_file_bytes, HISTORY_CAP))
