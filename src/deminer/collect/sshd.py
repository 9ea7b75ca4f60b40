"""Where sshd looks for a user's authorized keys, from the examined host's sshd_config.

Used by the lateral collector (how many keys open each account) and the persistence
collector (one row per key). Standard library only, Python 3.6 syntax.

sshd's rules, kept here (sshd_config(5)): for each keyword the first value obtained is used,
and an ``Include`` is read where it stands, so Debian's ``Include sshd_config.d/*.conf`` at
the top lets a drop-in override the main file. That one ``AuthorizedKeysFile`` value may
list several files, separated by spaces, and sshd reads all of them; ``none`` means none;
without the keyword sshd reads ``.ssh/authorized_keys .ssh/authorized_keys2``. After the
``%h``/``%u``/``%U``/``%%`` tokens are expanded, a relative file is under the user's home.

A ``Match`` block overrides the global value for the connections it matches (the first
value among the matching blocks wins). Blocks that match on users only (``Match User
a,b,!c``) or everything (``Match all``) are decided here; the others depend on the live
connection (address, host, group...), so their files, later values sshd ignores and drop-ins
nothing includes are kept apart as ``named``: a key there may not open the account, but
someone put it there.
"""

import fnmatch
import re
from typing import List, NamedTuple, Optional

from deminer.collect import hostfs, sshclient
from deminer.collect.bundle import Context

CONFIG = "/etc/ssh/sshd_config"
DROPINS = "/etc/ssh/sshd_config.d"
DEFAULT_FILES = [".ssh/authorized_keys", ".ssh/authorized_keys2"]

# A Match block decided offline: the user pattern lists it requires (all of them), its value.
UserBlock = NamedTuple("UserBlock", [("users", List[str]), ("files", List[str])])


class KeyFiles(object):
    """The AuthorizedKeysFile settings of one host."""

    def __init__(self, default: List[str], blocks: List[UserBlock], named: List[str]) -> None:
        self.default = default   # the global value (or sshd's default)
        self.blocks = blocks     # Match User / Match all blocks that set a value, in order
        self.named = named       # every pattern any config line names

    def used(self, user: str) -> List[str]:
        """The patterns sshd reads for ``user`` (connections no undecided Match changes)."""
        for block in self.blocks:
            if all(_user_matches(user, patterns) for patterns in block.users):
                return block.files
        return self.default


def _user_matches(user: str, patterns: str) -> bool:
    """sshd's pattern-list match: any pattern matches and no ``!`` pattern does."""
    hit = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(user, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(user, pattern):
            hit = True
    return hit


def _match_users(args: List[str]) -> Optional[List[str]]:
    """The user pattern lists of a Match line that needs nothing but the user name ([] for
    ``Match all``); None when it depends on the connection."""
    if [a.lower() for a in args] == ["all"]:
        return []
    if not args or len(args) % 2:
        return None
    pairs = [(args[i].lower(), args[i + 1]) for i in range(0, len(args), 2)]
    return [value for key, value in pairs] if all(key == "user" for key, _ in pairs) else None


def _read(ctx: Context, host_path: str) -> List[sshclient.Directive]:
    # A config that is a link (NixOS: into the store) is read where it leads, inside the root.
    real = hostfs.quiet_resolve(ctx, host_path) or host_path
    return sshclient.read_config(ctx, real, "/etc/ssh", None)


def _value(args: List[str]) -> List[str]:
    return [] if [a.lower() for a in args] == ["none"] else list(args)


def authorized_keys_files(ctx: Context) -> KeyFiles:
    """What sshd_config (and its drop-ins) say about authorized keys files."""
    main = _read(ctx, CONFIG)
    read = set(d.file for d in main)
    rest = []  # type: List[sshclient.Directive]
    for name in hostfs.list_dir(ctx, DROPINS):
        directives = _read(ctx, DROPINS + "/" + name)
        if not read.intersection(d.file for d in directives):
            rest.extend(directives)
    default = None  # type: Optional[List[str]]
    blocks = []  # type: List[UserBlock]
    in_match, users, done = False, None, False  # type: bool, Optional[List[str]], bool
    for item in main:
        if item.key == "match":
            in_match, users, done = True, _match_users(item.args), False
        elif item.key == "authorizedkeysfile":
            if not in_match:
                default = _value(item.args) if default is None else default
            elif users is not None and not done:  # the block's first value is its value
                blocks.append(UserBlock(users, _value(item.args)))
                done = True
    named = []  # type: List[str]
    for item in main + rest:
        if item.key == "authorizedkeysfile":
            named += [a for a in item.args if a.lower() != "none" and a not in named]
    return KeyFiles(list(DEFAULT_FILES) if default is None else default, blocks, named)


def key_file_path(pattern: str, user: str, home: str, uid: Optional[int]) -> str:
    """The file an AuthorizedKeysFile pattern names for one account (tokens expanded)."""
    tokens = {"h": home, "u": user, "U": "" if uid is None else str(uid), "%": "%"}
    path = re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), pattern)
    return path if path.startswith("/") else home.rstrip("/") + "/" + path
