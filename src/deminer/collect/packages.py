"""Which files the host's package manager installed, and whether they changed since.

The persistence collector asks this for every row (the ``packaged`` column: ``owned`` when
a package owns the file and its bytes match, ``modified`` when they do not, ``unowned``,
None when there is no package database to ask), and skips stock systemd and init files.

dpkg keeps what it needs in plain text: ``/var/lib/dpkg/info/<package>.list`` (the paths a
package installed), ``<package>.md5sums`` (``md5  relative/path``) and, for conffiles (most
of /etc), `` /path md5`` lines in ``/var/lib/dpkg/status``. The RPM database is a binary
store the standard library cannot read safely: on RPM hosts every status is unknown (None).
Standard library only, Python 3.6 syntax.
"""

import hashlib
from typing import Callable, Dict, List, Optional, Set, Tuple

from deminer.collect.bundle import Context
from deminer.collect.fileattrs import HostFile, read_file
from deminer.collect.hostfs import list_dir


def _usr_aliases(path: str) -> List[str]:
    """A path and its twin across the /usr merge (/lib/x is /usr/lib/x on merged systems)."""
    for short, long_ in (("/lib/", "/usr/lib/"), ("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        if path.startswith(short):
            return [path, long_ + path[len(short):]]
        if path.startswith(long_):
            return [path, short + path[len(long_):]]
    return [path]


FileKey = Tuple[Tuple[str, ...], Optional[str]]  # paths that name a file, md5 of its content


def md5_hex(data: bytes) -> Optional[str]:
    """md5 as dpkg records it; None where FIPS mode refuses md5 (nothing to compare then)."""
    try:
        try:
            digest = hashlib.md5(data, usedforsecurity=False)
        except TypeError:  # Python < 3.9 has no usedforsecurity
            digest = hashlib.md5(data)
        return digest.hexdigest()
    except ValueError:
        return None


class PackageDb(object):
    """Files installed by dpkg, with their md5 when dpkg recorded one.

    Paths under ``prefixes`` are loaded at once (the collector asks about them while it
    walks); any other path is looked up in one more pass by ``statuses`` (link targets,
    homes), which reads only the ``.list`` files unless a package owns one of them.
    The RPM database is a binary store the standard library cannot read safely: on RPM
    hosts ``available`` stays False and the package status of every file is unknown (None).
    """

    INFO = "/var/lib/dpkg/info"
    STATUS = "/var/lib/dpkg/status"

    def __init__(self, ctx: Context, prefixes: List[str]) -> None:
        self.ctx = ctx
        self.prefixes = tuple(prefixes)
        self.md5: Dict[str, str] = {}  # path -> md5 ("" when owned, md5 unknown)
        self.names = list_dir(ctx, self.INFO)
        self.available = bool(self.names)
        self._asked: Set[str] = set()
        self._last: Optional[Tuple[HostFile, FileKey]] = None
        if self.available:
            self._read(self._wanted, ("list", "md5sums"))
            self._conffiles(self._wanted)

    def _wanted(self, path: str) -> bool:
        return path.startswith(self.prefixes)

    def _read(self, wanted: Callable[[str], bool], suffixes: Tuple[str, ...],
              only: Optional[Set[str]] = None) -> Set[str]:
        """Record the wanted paths of ``.list``/``.md5sums`` files; the packages that had one."""
        hits: Set[str] = set()
        for name in self.names:
            package, _, suffix = name.rpartition(".")
            if suffix not in suffixes or (only is not None and package not in only):
                continue
            hf = read_file(self.ctx, self.INFO + "/" + name, limit=64 * 1024 * 1024)
            for line in hf.lines() if hf else []:
                if suffix == "list":
                    if wanted(line):
                        self.md5.setdefault(line, "")
                        hits.add(package)
                    continue
                md5, _, rel = line.partition("  ")
                path = "/" + rel.lstrip("/")
                if rel and wanted(path):
                    self.md5[path] = md5.strip().lower()
                    hits.add(package)
        return hits

    def _conffiles(self, wanted: Callable[[str], bool]) -> None:
        status = read_file(self.ctx, self.STATUS, limit=256 * 1024 * 1024)
        # Conffiles (init scripts, /etc files) have their md5 only in status: " path md5".
        for line in status.lines() if status else []:
            if line.startswith(" /"):
                parts = line.split()
                if len(parts) >= 2 and wanted(parts[0]):
                    self.md5[parts[0]] = parts[1].lower()

    def _recorded(self, paths: Tuple[str, ...]) -> Optional[str]:
        """dpkg's md5 for the first of ``paths`` a package owns ("" if none recorded), or None."""
        for path in paths:
            if path in self.md5:
                return self.md5[path]
        return None

    @staticmethod
    def _verdict(recorded: Optional[str], digest: Optional[str]) -> Optional[str]:
        if recorded is None:
            return "unowned"
        if recorded == "":  # owned without a recorded md5 (a link, a package without md5sums)
            return "owned"
        if digest is None:  # md5 refused (FIPS): cannot tell
            return None
        return "owned" if digest == recorded else "modified"

    def key(self, hf: HostFile) -> FileKey:
        """What ``statuses`` needs to judge a file later: its paths and the md5 of its bytes."""
        if self._last is None or self._last[0] is not hf:  # rows of one file come together
            paths = tuple(_usr_aliases(hf.real_path) + _usr_aliases(hf.path))
            self._last = (hf, (paths, md5_hex(hf.data)))
        return self._last[1]

    def statuses(self, keys: List[FileKey]) -> Dict[FileKey, Optional[str]]:
        """``owned``/``modified``/``unowned`` per key (None without a package database)."""
        if not self.available:
            return {}
        outside = set(p for paths, _ in keys for p in paths if not self._wanted(p)) - self._asked
        if outside:
            self._asked |= outside
            owners = self._read(outside.__contains__, ("list",))
            if owners:
                self._read(outside.__contains__, ("md5sums",), owners)
                self._conffiles(outside.__contains__)
        return {k: self._verdict(self._recorded(k[0]), k[1]) for k in set(keys)}

    def pristine(self, hf: HostFile) -> bool:
        """True for a file a package installed and nobody changed since (md5 matches)."""
        if not self.available:
            return False
        recorded = self._recorded(tuple(_usr_aliases(hf.real_path) + _usr_aliases(hf.path)))
        return self._verdict(recorded, md5_hex(hf.data) if recorded else None) == "owned"
