"""A generated cryptomining outbreak over N hosts: one evidence folder per host, and its truth.

    truth = write_fleet(Path("fleet"), hosts=1000, seed=1)
    python -m deminer.scenarios.fleet OUT --hosts 1000 [--seed 1]

For benchmarks at fleet scale (``bench/outbreak_bench.py``) and a test that deminer still finds
the outbreak among many hosts. The story is a Lemon Duck-style worm on a flat network:

- about 60 % Linux servers (``lnx-00042``: a collector bundle with its auth.log, as seed cases 7
  and 9 build them) and 40 % Windows (``WIN-00043``: hives, tasks and Security/System/
  PowerShell exports, as seed cases 2 and 4 build them), numbered in one sequence, each with
  one address ``10.1xx.1yy.1zz`` derived from its number;
- patient zero is a Linux server whose root password was guessed from the internet;
- from there the worm guesses passwords host to host: SSH on Linux targets, SMB on Windows
  targets (``ssh_brute_force`` / ``smb_brute_force`` edges). About 30 % of the hosts fall, in a
  random recursive tree (each new victim is reached from a uniformly chosen earlier one, 20
  minutes to 4 hours after that one fell);
- of the hosts left, about 40 % were tried without success (failed guesses from an infected
  host: ``clean``, but targeted), the rest show only their admins' logins, backups, cron jobs
  and services (``clean``);
- about 2 % came without logs or processes (a Linux disk image, a Windows hives-only
  collection): ``unknown``, never infected (nothing could show how they were reached).

Each kind of host is built once and stamped per host (``fleet_templates``), so 10,000 hosts
(32,000 files, 310 MB) take 25-35 s to write on two cores, a fifth of investigating them.
``truth.json`` beside the folders holds the ground truth; ``check_case`` compares a case with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deminer.scenarios.fleet_templates import (
    SERVICE,
    TASK,
    TEMPLATE_PEER,
    UNIT,
    Stamp,
    Template,
    linux_template,
    windows_template,
)
from deminer.scenarios.seed.common import Persist, Truth

MAX_HOSTS = 99_999                    # five-digit names; addresses stay one width
WINDOWS_SHARE, INFECTED_SHARE, UNKNOWN_SHARE, PROBED_SHARE = 0.4, 0.3, 0.02, 0.4
FLEET_START = dt.datetime(2024, 5, 6, 8, 0)      # patient zero falls (naive UTC)
TEMPLATE_AT = dt.datetime(2024, 5, 6, 12, 0)     # where the templates' stories are anchored
SPREAD = (20 * 60, 4 * 3600)                     # seconds from a host's fall to its victim's
LINUX_OS = ("Ubuntu 22.04.4 LTS", "Debian GNU/Linux 12 (bookworm)")
# Rules a clean host of the fleet may raise: the worm's failed guesses against it.
CLEAN_MAY = frozenset({"credential_access.ssh_brute_force", "credential_access.win_smb_brute_force",
                       "credential_access.password_guessing_against_windows_logons"})


@dataclass(frozen=True)
class FleetHost:
    name: str                          # host id: lnx-00042 / win-00043
    ip: str
    windows: bool
    kind: str                          # a fleet_templates.KINDS entry
    at: dt.datetime                    # when it fell / was tried / when its noise happens
    peer: str | None = None            # infected: the host that got in; probed: the one that tried
    variant: int = 0                   # Linux: Ubuntu / Debian; Windows: server / desktop

    @property
    def infected(self) -> bool:
        return self.kind in ("patient_zero", "infected")


def host_ip(number: int) -> str:
    """The address of host ``number`` (1 … 99,999): ``10.1xx.1yy.1zz``, always 14 characters."""
    return f"10.{100 + number // 10000}.{100 + number // 100 % 100}.{100 + number % 100}"


def plan(hosts: int, seed: int = 1) -> list[FleetHost]:
    """Who is what in a fleet of ``hosts`` (deterministic for a ``seed``), sorted by name."""
    if not 5 <= hosts <= MAX_HOSTS:
        raise ValueError(f"--hosts {hosts}: a fleet has 5 to {MAX_HOSTS} hosts")
    rng = random.Random(seed)
    numbers = list(range(1, hosts + 1))
    windows = set(rng.sample(numbers, round(hosts * WINDOWS_SHARE)))
    name = {n: f"{'win' if n in windows else 'lnx'}-{n:05d}" for n in numbers}
    pz = rng.choice([n for n in numbers if n not in windows])
    rest = [n for n in numbers if n != pz]
    rng.shuffle(rest)
    unknown_count = max(1, round(hosts * UNKNOWN_SHARE))
    infected_count = max(2, round(hosts * INFECTED_SHARE))
    unknown, victims = rest[:unknown_count], rest[unknown_count:unknown_count + infected_count - 1]
    others = rest[unknown_count + infected_count - 1:]

    out = {pz: FleetHost(name[pz], host_ip(pz), False, "patient_zero", FLEET_START)}
    order = [pz]
    for n in victims:
        parent = out[order[rng.randrange(len(order))]]
        at = parent.at + dt.timedelta(seconds=rng.randint(*SPREAD))
        out[n] = FleetHost(name[n], host_ip(n), n in windows, "infected", at, parent.name,
                           rng.randrange(2) if n in windows else 0)
        order.append(n)
    last = max(h.at for h in out.values())
    window = int((last - FLEET_START).total_seconds()) + 3600
    for n in others:
        variant = rng.randrange(2)
        if rng.random() < PROBED_SHARE:
            prober = out[order[rng.randrange(len(order))]]
            at = prober.at + dt.timedelta(seconds=rng.randint(*SPREAD))
            out[n] = FleetHost(name[n], host_ip(n), n in windows, "probed", at, prober.name, variant)
        else:
            at = FLEET_START + dt.timedelta(seconds=rng.randint(0, window))
            out[n] = FleetHost(name[n], host_ip(n), n in windows, "clean", at, None, variant)
    for n in unknown:
        at = FLEET_START + dt.timedelta(seconds=rng.randint(0, window))
        out[n] = FleetHost(name[n], host_ip(n), n in windows, "unknown", at, None, rng.randrange(2))
    return sorted(out.values(), key=lambda h: h.name)


def fleet_truth(fleet: list[FleetHost]) -> Truth:
    """The ground truth of a planned fleet (checked)."""
    truth = Truth(0, f"Generated fleet of {len(fleet)} hosts: a password-guessing worm over SSH and SMB",
                  "brute_force")
    by_name = {h.name: h for h in fleet}
    for h in fleet:
        truth.host(h.name, h.ip, "infected" if h.infected else "unknown" if h.kind == "unknown" else "clean")
        if h.kind == "patient_zero":
            truth.patient_zero.add(h.name)
        if not h.infected:
            continue
        items = ((Persist("service", SERVICE), Persist("task", "\\" + TASK)) if h.windows
                 else (Persist("cron", "@reboot"), Persist("systemd", UNIT)))
        truth.infect(h.name, h.at, *items)
        if h.peer:
            technique = "smb_brute_force" if h.windows else "ssh_brute_force"
            truth.edge(by_name[h.peer].name, h.name, technique, h.at)
    truth.clean_may = set(CLEAN_MAY)
    truth.notes.append("Hosts of one kind are copies of one built host with their own name, address, "
                       "attacker address and times (deminer.scenarios.fleet_templates).")
    truth.check(max_hosts=MAX_HOSTS)
    return truth


class Templates:
    """Each kind of host, built the first time a host of that kind is written."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.built: dict[tuple[bool, str, int], Template] = {}

    def get(self, windows: bool, kind: str, variant: int) -> Template:
        key = (windows, kind, variant)
        if key not in self.built:
            if windows:
                self.built[key] = windows_template(self.work, kind, TEMPLATE_AT, desktop=bool(variant))
            else:
                self.built[key] = linux_template(self.work, kind, TEMPLATE_AT, LINUX_OS[variant],
                                                 seed=len(self.built) + 1)
        return self.built[key]


def write_fleet(out: Path, hosts: int, seed: int = 1) -> Truth:
    """Write a fleet of ``hosts`` under ``out`` (one folder per host, ``truth.json``)."""
    fleet = plan(hosts, seed)
    truth = fleet_truth(fleet)
    ips = {h.name: h.ip for h in fleet}
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deminer-fleet-"))
    try:
        templates = Templates(work)
        for h in fleet:
            template = templates.get(h.windows, h.kind, h.variant)
            peer = ips[h.peer] if h.peer else TEMPLATE_PEER
            template.stamp(out, Stamp(h.name, h.ip, peer, h.at - template.at))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    truth.write(out)
    return truth


def check_case(truth: Truth, case_dir: Path) -> list[str]:
    """How deminer's picture in ``case_dir`` (after ``deminer investigate``) differs from the
    truth: host sets per verdict, patient zero, entry vector, edges (source, target, technique)
    and their times. Empty when it is exact."""
    import duckdb

    con = duckdb.connect(str(case_dir / "case.duckdb"), read_only=True)
    try:
        verdicts = con.execute("SELECT host, verdict, patient_zero, entry_vector "
                               "FROM host_verdicts").fetchall()
        edges = con.execute("SELECT src_host, dst_host, technique, ts FROM infection_edges").fetchall()
    finally:
        con.close()
    wrong: list[str] = []

    def compare(part: str, got: set[str], want: set[str]) -> None:
        if got != want:
            wrong.append(f"{part}: {len(want - got)} missing {sorted(want - got)[:5]}, "
                         f"{len(got - want)} unexpected {sorted(got - want)[:5]}")

    for verdict, want in (("infected", truth.infected), ("clean", truth.clean), ("unknown", truth.unknown)):
        compare(f"{verdict} hosts", {h for h, v, _, _ in verdicts if v == verdict}, want)
    compare("patient zero", {h for h, _, z, _ in verdicts if z}, truth.patient_zero)
    compare("entry vector", {str(e) for _, _, z, e in verdicts if z}, {truth.entry_vector})
    found = {(s, d, t): ts for s, d, t, ts in edges}
    compare("edges", {"→".join(k) for k in found}, {"→".join(e.key()) for e in truth.edges})
    late = [e.key() for e in truth.edges if e.key() in found
            and (found[e.key()] is None or abs(found[e.key()] - e.ts) > truth.edge_tolerance)]
    if late:
        wrong.append(f"{len(late)} edge time(s) off by more than {truth.edge_tolerance}: {late[:5]}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deminer.scenarios.fleet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write (one folder per host and truth.json)")
    ap.add_argument("--hosts", type=int, default=100, help="number of hosts (5 to 99999; default 100)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (same seed, same fleet)")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"fleet: {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        truth = write_fleet(args.out, args.hosts, args.seed)
    except ValueError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    files = [p for p in args.out.rglob("*") if p.is_file() and p.name != "truth.json"]
    size = sum(p.stat().st_size for p in files)
    print(f"{args.hosts} hosts ({len(truth.infected)} infected, {len(truth.clean)} clean, "
          f"{len(truth.unknown)} unknown; patient zero {', '.join(sorted(truth.patient_zero))}): "
          f"{len(files)} files, {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s; "
          f"truth in {args.out / 'truth.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
