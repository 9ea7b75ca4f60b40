"""Where the ssh client of a host can go: ssh_config files and ssh/scp/rsync command lines.

Used by the lateral collector for ``~/.ssh/config``, ``/etc/ssh/ssh_config`` (+ ``Include``d
files), their ``ProxyJump``/``ProxyCommand`` values and the commands of shell histories.

ssh_config semantics kept: keywords are case-insensitive, ``Key value`` and ``Key=value``
forms, quoted arguments, ``Include`` with globs (relative to ``~/.ssh`` or ``/etc/ssh``),
``Host`` patterns with ``*``, ``?`` and ``!`` negation, the first value obtained for a keyword
wins (``IdentityFile`` accumulates) and the user's file is read before the system one.
Limits: ``Match`` blocks other than ``Match all`` are never applied (their conditions need
the live client); only ``%h``, ``%d``, ``%u``, ``%r`` and ``%%`` tokens are expanded.
"""

import fnmatch
import glob
import os
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from deminer.collect import hostfs
from deminer.collect.bundle import Context

Target = NamedTuple("Target", [
    ("target", str), ("user", Optional[str]), ("port", Optional[int]), ("key_path", Optional[str]),
])
Directive = NamedTuple("Directive", [("file", str), ("line", int), ("key", str), ("args", List[str])])
Block = NamedTuple("Block", [
    ("patterns", Optional[List[str]]), ("file", str), ("line", int), ("directives", List[Directive]),
])

MAX_INCLUDE_DEPTH = 8
_KEYWORD = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+|$)(.*)$")
_OPERATORS = ";&|()<>"


# -- words ----------------------------------------------------------------------------------
def split_words(text: str, operators: bool = False) -> List[str]:
    """Split like a POSIX shell (quotes, backslashes); ``operators`` makes ``; & | ( ) < >``
    separate words. Never fails: an unterminated quote runs to the end of the text."""
    words = []  # type: List[str]
    word = []  # type: List[str]
    started = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i < len(text) and text[i] in '"\\$`':
                word.append(text[i])
                i += 1
            else:
                word.append(ch)
        elif ch in "'\"":
            quote, started = ch, True
        elif ch == "\\" and i < len(text):
            word.append(text[i])
            started = True
            i += 1
        elif ch.isspace() or (operators and ch in _OPERATORS):
            if started or word:
                words.append("".join(word))
                word, started = [], False
            if not ch.isspace():
                words.append(ch)
        else:
            word.append(ch)
    if started or word:
        words.append("".join(word))
    return words


# -- ssh_config -----------------------------------------------------------------------------
def read_config(ctx: Context, host_path: str, base_dir: str, home: Optional[str],
                depth: int = 0) -> List[Directive]:
    """The directives of a config file with its ``Include``s inlined where they appear."""
    text = hostfs.read_text(ctx, host_path, 1024 * 1024)
    out = []  # type: List[Directive]
    for number, line in enumerate((text or "").splitlines(), 1):
        match = _KEYWORD.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        args = split_words(match.group(2))
        for i, arg in enumerate(args):
            if arg.startswith("#"):
                args = args[:i]  # a comment after the arguments
                break
        key = match.group(1).lower()
        if key == "include" and depth < MAX_INCLUDE_DEPTH:
            for pattern in args:
                for path in _include_paths(ctx, pattern, base_dir, home):
                    out.extend(read_config(ctx, path, base_dir, home, depth + 1))
            continue
        out.append(Directive(host_path, number, key, args))
    return out


def _include_paths(ctx: Context, pattern: str, base_dir: str, home: Optional[str]) -> List[str]:
    if "\0" in pattern:
        return []
    if pattern.startswith("~/") and home:
        pattern = home.rstrip("/") + pattern[1:]
    elif not pattern.startswith("/"):
        pattern = base_dir.rstrip("/") + "/" + pattern
    paths = []
    for real in sorted(glob.glob(ctx.path(pattern))):
        if os.path.isfile(real) and hostfs.inside_root(ctx, real):
            paths.append(ctx.host_path(real))
    return paths


def blocks(directives: List[Directive]) -> List[Block]:
    """Group directives into Host/Match blocks (the part before any is global)."""
    out = [Block(None, "", 0, [])]
    for item in directives:
        if item.key == "host":
            out.append(Block(item.args, item.file, item.line, []))
        elif item.key == "match":
            # Only "Match all" can be decided offline; other Match blocks never apply here.
            everything = [a.lower() for a in item.args] == ["all"]
            out.append(Block(None if everything else [], item.file, item.line, []))
        else:
            out[-1].directives.append(item)
    return out


def host_matches(alias: str, patterns: Optional[List[str]]) -> bool:
    if patterns is None:
        return True
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(alias.lower(), pattern.lstrip("!").lower()):
            if negated:
                return False
            hit = True
    return hit


def effective(alias: str, config: List[Block]) -> Dict[str, List[Directive]]:
    """The directives that apply to ``alias``: first value wins, IdentityFile accumulates."""
    found = {}  # type: Dict[str, List[Directive]]
    for block in config:
        if not host_matches(alias, block.patterns):
            continue
        for item in block.directives:
            if item.key == "identityfile":
                found.setdefault(item.key, []).append(item)
            elif item.key not in found and item.args:
                found[item.key] = [item]
    return found


def _expand(value: str, alias: str, home: Optional[str], local_user: Optional[str],
            remote_user: Optional[str]) -> str:
    if value.startswith("~/") and home:
        value = home.rstrip("/") + value[1:]
    tokens = {"h": alias, "d": home, "u": local_user, "r": remote_user, "%": "%"}
    return re.sub(r"%(.)", lambda m: tokens.get(m.group(1)) or m.group(0), value)


def config_targets(own: List[Block], rest: List[Block], home: Optional[str],
                   local_user: Optional[str]) -> List[Tuple[Target, str, int]]:
    """``(target, file, line)`` for each concrete Host alias of ``own`` (resolved with
    ``own + rest``), each ProxyJump hop and each ssh in a ProxyCommand."""
    out = []  # type: List[Tuple[Target, str, int]]
    seen = set()

    def add(target: Target, file: str, line: int) -> None:
        if target.target and (target, file, line) not in seen:
            seen.add((target, file, line))
            out.append((target, file, line))

    for block in own:
        for alias in block.patterns or []:
            if alias.startswith("!") or "*" in alias or "?" in alias:
                continue
            conf = effective(alias, own + rest)

            def first(key: str, conf: Dict[str, List[Directive]] = conf) -> Optional[str]:
                items = conf.get(key)
                return items[0].args[0] if items else None

            user = first("user")
            name = _expand(first("hostname") or alias, alias, home, local_user, user)
            port = port_number(first("port"))
            keys = [_expand(i.args[0], name, home, local_user, user)
                    for i in conf.get("identityfile", []) if i.args]  # type: List[Optional[str]]
            for key in keys or [None]:
                add(Target(name, user, port, key), block.file, block.line)
            for item in conf.get("proxyjump", []):
                for hop in item.args[0].split(","):
                    dest = parse_destination(hop, with_port=True)
                    if dest and hop.lower() != "none":
                        add(Target(dest[0], dest[1], dest[2], None), item.file, item.line)
            for item in conf.get("proxycommand", []):
                for target in command_targets(" ".join(item.args)):
                    if "%h" not in target.target:
                        add(target, item.file, item.line)
    return out


# -- command lines --------------------------------------------------------------------------
def port_number(value: Optional[str]) -> Optional[int]:
    """A TCP port from evidence text, or None (ASCII digits only: ``int`` takes more)."""
    if value and re.match(r"^[0-9]{1,5}$", value) and 0 < int(value) < 65536:
        return int(value)
    return None




def parse_destination(text: str, with_port: bool = False
                      ) -> Optional[Tuple[str, Optional[str], Optional[int]]]:
    """``(host, user, port)`` of ``[user@]host``, ``[user@]host:port`` (``with_port``) or an
    ``ssh://``/``scp://``/``sftp://`` URI."""
    text = text.strip()
    uri = re.match(r"^(?:ssh|scp|sftp)://(.*?)(?:/.*)?$", text)
    if uri:
        text, with_port = uri.group(1), True
    user, _, host = text.rpartition("@")
    port = None
    if with_port:
        match = re.match(r"^\[([^\]]+)\](?::(\d+))?$|^([^:]+)(?::(\d+))?$", host)
        if not match:
            return None
        host = match.group(1) or match.group(3)
        port = port_number(match.group(2) or match.group(4))
    if not host or host.startswith("-") or not re.match(r"^[\w.:%\[\]-]+$", host):
        return None
    return host, user or None, port


def _remote_operand(arg: str) -> Optional[Tuple[str, Optional[str], Optional[int]]]:
    """The host of an scp/rsync operand ``[user@]host:path`` (None for local paths)."""
    if arg.startswith(("scp://", "sftp://", "ssh://")):
        return parse_destination(arg)
    match = re.match(r"^(?:(.+)@)?(\[[^\]/]+\]|[^:/\[\]@]+):", arg)
    if not match:
        return None
    return match.group(2).strip("[]"), match.group(1), None


# Options that take an argument, per program (the rest are flags).
_ARG_OPTIONS = {"ssh": "BbcDEeFIiJLlmOoPpQRSWw", "autossh": "BbcDEeFIiJLlmOoPpQRSWwM",
                "scp": "cDFiJloPSX", "sftp": "BbcDFiJlPRoSsX", "ssh-copy-id": "iopFtJ"}
_WRAPPERS = {"sudo": "ugpChDrtUT", "nohup": "", "time": "", "exec": "", "command": "",
             "env": "uSC", "timeout": "sk", "nice": "n", "sshpass": "pfde", "watch": "nd",
             "xargs": "aEeIiLlnPsd", "do": "", "then": "", "else": "", "{": "", "!": ""}


def command_targets(command: str) -> List[Target]:
    """Hosts reached by ssh, scp, sftp, ssh-copy-id, autossh and rsync in a command line."""
    out = []  # type: List[Target]
    words = split_words(command, operators=True)
    start = 0
    for end in range(len(words) + 1):
        if end == len(words) or (len(words[end]) == 1 and words[end] in _OPERATORS):
            out.extend(_simple_targets(words[start:end]))
            start = end + 1
    return out


def _simple_targets(words: List[str]) -> List[Target]:
    i = 0
    while i < len(words):  # skip variable assignments and wrappers like sudo or sshpass
        word = words[i]
        name = os.path.basename(word)
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            i += 1
        elif name in _WRAPPERS:
            i += 1
            while i < len(words) and words[i].startswith("-") and words[i] != "-":
                takes = len(words[i]) == 2 and words[i][1] in _WRAPPERS[name]
                i += 2 if takes else 1
            if name == "timeout" and i < len(words):
                i += 1  # the duration
        else:
            break
    if i >= len(words):
        return []
    program = os.path.basename(words[i])
    args = words[i + 1:]
    if program == "rsync":
        return _rsync(args)
    if program not in _ARG_OPTIONS:
        return []
    opts, operands = _options(args, _ARG_OPTIONS[program], program in ("ssh", "autossh",
                                                                          "ssh-copy-id"))
    user = opts.get("l") or _ssh_option(opts, "user")
    port = port_number(opts.get("p") or opts.get("P") or _ssh_option(opts, "port"))
    key = opts.get("i") or _ssh_option(opts, "identityfile")
    out = []
    for hop in (opts.get("J") or "").split(","):
        dest = parse_destination(hop, with_port=True) if hop else None
        if dest:
            out.append(Target(dest[0], dest[1], dest[2], None))
    if program == "scp":
        dests = [_remote_operand(a) for a in operands]
    elif program == "sftp" and operands and "://" not in operands[0]:
        dests = [parse_destination(operands[0].split(":", 1)[0])]
    else:
        dests = [parse_destination(operands[0])] if operands else []
    for dest in dests:
        if dest:
            out.append(Target(dest[0], dest[1] or user, dest[2] or port, key))
    return out


def _options(args: List[str], with_arg: str, stop_at_first: bool
             ) -> Tuple[Dict[str, str], List[str]]:
    """getopt-style parsing: first value of each option and the operands."""
    opts = {}  # type: Dict[str, str]
    operands = []  # type: List[str]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:] if not stop_at_first else args[i:i + 1])
            break
        if arg.startswith("-") and len(arg) > 1:
            for j in range(1, len(arg)):
                if arg[j] in with_arg:
                    value = arg[j + 1:] or (args[i] if i < len(args) else "")
                    if not arg[j + 1:]:
                        i += 1
                    if arg[j] == "o":  # -o Name=value: keyed by the option name
                        name = re.split(r"[\s=]", value.strip(), maxsplit=1)[0].lower()
                        opts.setdefault("o:" + name, value)
                    else:
                        opts.setdefault(arg[j], value)
                    break
            continue
        operands.append(arg)
        if stop_at_first:
            break  # the rest is the remote command
    return opts, operands


def _ssh_option(opts: Dict[str, str], name: str) -> Optional[str]:
    value = opts.get("o:" + name)
    if value is None:
        return None
    parts = re.split(r"\s*=\s*|\s+", value.strip(), maxsplit=1)
    return parts[1] if len(parts) > 1 else None


def _rsync(args: List[str]) -> List[Target]:
    """rsync ``[user@]host:path`` operands; ``-e``/``--rsh`` ssh options give port/user/key."""
    user = port = key = None
    hosts = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        rsh = None
        if arg in ("-e", "--rsh") and i < len(args):
            rsh, i = args[i], i + 1
        elif arg.startswith("--rsh="):
            rsh = arg[6:]
        elif not arg.startswith("-") and "::" not in arg:
            dest = _remote_operand(arg)
            if dest:
                hosts.append(dest)
        if rsh:
            words = split_words(rsh)
            opts, _ = _options(words[1:], _ARG_OPTIONS["ssh"], False)
            user, key = opts.get("l"), opts.get("i")
            port = port_number(opts.get("p"))
    return [Target(h, u or user, port, key) for h, u, _ in hosts]
