"""Which lines of a shell script start a program: the filter for start-up files and jobs.

The persistence collector keeps, of shell profiles, cron scripts, at jobs and rc scripts,
only the lines that run something, by this heuristic: comments, blank lines, shell syntax
(``if``/``fi``/``case``...) and segments made only of builtins that run nothing
(``export``, ``alias``, ``umask``, ``shopt``, ``[``/``test``, assignments) are dropped; a
segment starting with any other word (a program, ``.``/``source``, ``eval``) or using
``$(...)``/backticks is kept, and so is every line with a URL, a tmp path,
``nohup``/``setsid``, a trailing ``&``, ``curl``, ``wget``, ``base64``, ``python -c``,
``perl -e``, ``/dev/tcp``, ``LD_PRELOAD``, ``PROMPT_COMMAND`` or ``BASH_ENV``.
Standard library only, Python 3.6 syntax.
"""

import re
from typing import List, Tuple

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
