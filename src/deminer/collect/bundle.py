"""The evidence bundle and the collection context every collector module writes through.

Runs on the suspect host: standard library only, syntax for Python 3.6+, no imports from the
rest of deminer. A bundle is one ``.tar.gz``::

    manifest.json          format, collector version, host identity, errors, sha256 per member
    tables/<table>.jsonl   rows of the normalized tables (see deminer/model.py), one per line
    files/<sha256>         saved file contents (process executables, scripts, droppers)
    raw/<path on host>     copied logs and histories, at their path on the host

The collector never changes the host: it only reads, and writes the bundle where it is told.
"""

import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from typing import Any, Dict, List, Optional

COLLECTOR_VERSION = "0.1.0"
BUNDLE_FORMAT = "deminer-bundle"
BUNDLE_VERSION = 1
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024


def utc_iso(epoch: Optional[float] = None) -> str:
    """ISO 8601 UTC text for an epoch time (now when None)."""
    if epoch is None:
        epoch = time.time()
    try:
        stamp = datetime.datetime.utcfromtimestamp(epoch)
    except (OverflowError, OSError, ValueError):
        return ""
    return stamp.isoformat() + "Z"


def safe_text(raw: bytes) -> str:
    """Decode bytes from the host without ever failing (bad bytes become escapes)."""
    return raw.decode("utf-8", "backslashreplace")


def fs_text(path: str) -> str:
    """A path as text even when its bytes are not UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class Context(object):
    """What a collector module gets: the root to read, and ways to write rows and files."""

    def __init__(self, root: str = "/", budget: float = 120.0,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, cpu_window: float = 2.0,
                 host: Optional[str] = None, proc_root: Optional[str] = None) -> None:
        self.root = os.path.abspath(root)
        self.live = self.root == "/"
        # Processes and sockets come from here: the root's own /proc by default, or the live
        # /proc while files are read from a mounted tree (``--root TREE --proc /proc``).
        self.proc_root = os.path.abspath(proc_root or os.path.join(self.root, "proc"))
        self.started = time.time()
        self.deadline = self.started + budget
        self.max_file_bytes = max_file_bytes
        self.cpu_window = cpu_window
        self.collected_at = utc_iso(self.started)
        self.host = host or read_hostname(self.root)
        self.stage = tempfile.mkdtemp(prefix="deminer-collect-")
        self.counts = {}  # type: Dict[str, int]
        self.error_count = 0
        self._handles = {}  # type: Dict[str, Any]
        self._saved = {}  # type: Dict[str, str]

    # -- paths ---------------------------------------------------------------------------
    def path(self, host_path: str) -> str:
        """The real path of ``host_path`` (an absolute path on the examined host)."""
        if self.live:
            return host_path
        return os.path.join(self.root, host_path.lstrip("/"))

    def proc(self, sub: str = "") -> str:
        """The real path of ``/proc/<sub>`` for the processes being examined."""
        return os.path.join(self.proc_root, sub) if sub else self.proc_root

    def host_path(self, real_path: str) -> str:
        """The inverse of ``path``: where a file under the root sits on the host."""
        if self.live:
            return real_path
        rel = os.path.relpath(real_path, self.root)
        return "/" if rel == "." else "/" + rel

    def time_left(self) -> float:
        return self.deadline - time.time()

    # -- rows ------------------------------------------------------------------------------
    def emit(self, table: str, row: Dict[str, Any]) -> None:
        """Write one row of ``table``; ``host`` and ``ts`` default to this host and now."""
        row.setdefault("host", self.host)
        row.setdefault("ts", self.collected_at)
        fh = self._handles.get(table)
        if fh is None:
            os.makedirs(os.path.join(self.stage, "tables"), exist_ok=True)
            fh = open(  # noqa: SIM115 - kept open across emits, closed in write_bundle
                os.path.join(self.stage, "tables", table + ".jsonl"), "a", encoding="utf-8")
            self._handles[table] = fh
        fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        self.counts[table] = self.counts.get(table, 0) + 1

    def error(self, source: str, message: str, stage: str = "collect") -> None:
        """Record something that could not be read; never raise for the host's state."""
        self.error_count += 1
        self.emit("errors", {"source": fs_text(source), "stage": stage, "message": message})

    # -- files -----------------------------------------------------------------------------
    def save_file(self, real_path: str, limit: Optional[int] = None) -> Optional[str]:
        """Copy a file's content into ``files/<sha256>`` (capped) and return its sha256.

        Returns None when it cannot be read or is larger than the cap (then it is hashed
        only, by ``hash_file``). Reading ``/proc/PID/exe`` works for deleted binaries too.
        """
        cap = self.max_file_bytes if limit is None else limit
        if real_path in self._saved:
            return self._saved[real_path]
        try:
            with open(real_path, "rb") as src:
                data = src.read(cap + 1)
        except (OSError, IOError) as exc:
            self.error(real_path, "cannot read file: %s" % (exc.strerror or exc))
            return None
        if len(data) > cap:
            return None
        digest = hashlib.sha256(data).hexdigest()
        folder = os.path.join(self.stage, "files")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, digest)
        if not os.path.exists(target):
            with open(target, "wb") as dst:
                dst.write(data)
        self._saved[real_path] = digest
        return digest

    def copy_raw(self, real_path: str, limit: Optional[int] = None) -> Optional[str]:
        """Copy a log or history to ``raw/<host path>`` (the newest ``limit`` bytes)."""
        cap = self.max_file_bytes if limit is None else limit
        rel = self.host_path(real_path).lstrip("/")
        target = os.path.join(self.stage, "raw", rel)
        try:
            st = os.stat(real_path)
            size = st.st_size
            with open(real_path, "rb") as src:
                if size > cap:
                    src.seek(size - cap)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            # Yearless syslog lines get their year from the file's mtime: keep it.
            os.utime(target, (st.st_atime, st.st_mtime))
        except (OSError, IOError) as exc:
            self.error(real_path, "cannot copy: %s" % (exc.strerror or exc))
            return None
        if size > cap:
            self.error(real_path, "truncated to the last %d bytes (of %d)" % (cap, size))
        return "raw/" + rel

    # -- bundle ----------------------------------------------------------------------------
    def write_bundle(self, out_path: str, extra: Optional[Dict[str, Any]] = None) -> str:
        """Close the tables, write the tar.gz with its manifest; return the bundle's sha256."""
        for fh in self._handles.values():
            fh.close()
        self._handles = {}
        members = {}  # type: Dict[str, str]
        names = []  # type: List[str]
        for dirpath, dirnames, filenames in os.walk(self.stage):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.stage).replace(os.sep, "/")
                members[rel] = _file_sha256(full)
                names.append(rel)
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "collector_version": COLLECTOR_VERSION,
            "host": host_identity(self.root, self.host, self.proc_root),
            "root": fs_text(self.root),
            "collected_at": self.collected_at,
            "finished_at": utc_iso(),
            "counts": self.counts,
            "errors": self.error_count,
            "members": members,
        }
        if extra:
            manifest.update(extra)
        data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        tmp_out = out_path + ".part"
        # Level 1: saved binaries barely compress and level 9 cost seconds of a busy host CPU.
        with tarfile.open(tmp_out, "w:gz", compresslevel=1) as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
            for rel in names:
                tar.add(os.path.join(self.stage, rel), arcname=rel, recursive=False)
        os.rename(tmp_out, out_path)
        shutil.rmtree(self.stage, ignore_errors=True)
        return _file_sha256(out_path)

    def discard(self) -> None:
        for fh in self._handles.values():
            fh.close()
        shutil.rmtree(self.stage, ignore_errors=True)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def read_hostname(root: str) -> str:
    """The examined host's name: /etc/hostname under the root, else this machine's."""
    try:
        with open(os.path.join(root, "etc/hostname"), "rb") as fh:
            name = safe_text(fh.read(256)).strip().split()[0]
            if name:
                return name.lower()
    except (OSError, IOError, IndexError):
        pass
    if os.path.abspath(root) == "/":
        return socket.gethostname().lower()
    return os.path.basename(os.path.abspath(root)).lower() or "unknown"


def host_identity(root: str, hostname: str, proc_root: Optional[str] = None) -> Dict[str, Any]:
    """Hostname, machine id, OS name and addresses of the examined host.

    Addresses come from the examined /proc (``proc_root``, by default ROOT/proc), so a
    mounted image with a saved /proc, or a live host, names its own IPs; correlation needs
    them to tell which host a network finding is about."""
    ident = {"hostname": hostname, "machine_id": None, "os": None, "ips": [],
             "is_root": hasattr(os, "geteuid") and os.geteuid() == 0}  # type: Dict[str, Any]
    try:
        with open(os.path.join(root, "etc/machine-id"), "rb") as fh:
            ident["machine_id"] = safe_text(fh.read(64)).strip() or None
    except (OSError, IOError):
        pass
    try:
        with open(os.path.join(root, "etc/os-release"), "rb") as fh:
            for line in safe_text(fh.read(8192)).splitlines():
                if line.startswith("PRETTY_NAME="):
                    ident["os"] = line.split("=", 1)[1].strip().strip('"')
    except (OSError, IOError):
        pass
    ident["ips"] = _local_ips(proc_root or os.path.join(root, "proc"))
    return ident


def _local_ips(proc_root: str) -> List[str]:
    """The host's own addresses from /proc/net/fib_trie (no sockets opened, nothing sent)."""
    ips = set()
    try:
        with open(os.path.join(proc_root, "net/fib_trie"), "rb") as fh:
            lines = safe_text(fh.read(4 * 1024 * 1024)).splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                ip = lines[i - 1].split()[-1]
                if not ip.startswith("127."):
                    ips.add(ip)
    except (OSError, IOError):
        pass
    return sorted(ips)
