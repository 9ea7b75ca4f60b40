"""``deminer collect``: gather a host's evidence into one bundle, reading and never changing it.

Runs standalone (``python3 deminer-collect.pyz``) on Python 3.6+ with the standard library
only. Each collector module has ``collect(ctx)``; they run in the order below, within a
time budget, at low CPU and I/O priority. A failure of one module is an ``errors`` row.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import time
from typing import List, Optional

from deminer.collect import files, lateral, logs, persistence, processes, sockets
from deminer.collect.bundle import COLLECTOR_VERSION, Context, fs_text

# Processes first: the CPU window and /proc/PID/fd inodes must be read before anything exits.
COLLECTORS = (
    ("processes", processes.collect),
    ("sockets", sockets.collect),
    ("persistence", persistence.collect),
    ("lateral", lateral.collect),
    ("files", files.collect),
    ("logs", logs.collect),
)


def lower_priority() -> None:
    """Be a polite guest on a host that is already at 100% CPU."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
    with contextlib.suppress(OSError):
        subprocess.call(["ionice", "-c", "3", "-p", str(os.getpid())],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(ctx: Context, only: Optional[List[str]] = None) -> None:
    """Run every collector (or ``only`` those named) into ``ctx``."""
    for name, func in COLLECTORS:
        if only and name not in only:
            continue
        if ctx.time_left() <= 0:
            ctx.error(name, "skipped: the time budget ran out")
            continue
        try:
            func(ctx)
        except Exception as exc:  # one broken collector must not lose the others
            ctx.error(name, "collector failed: %s: %s" % (type(exc).__name__, exc))


def default_output(ctx: Context) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ctx.started))
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in ctx.host)
    return "deminer-%s-%s.tar.gz" % (safe or "host", stamp)


def collect(root: str = "/", output: Optional[str] = None, budget: float = 120.0,
            cpu_window: float = 2.0, max_file_bytes: int = 32 * 1024 * 1024,
            only: Optional[List[str]] = None, nice: bool = True,
            proc_root: Optional[str] = None) -> "tuple[str, str]":
    """Collect ``root`` into a bundle; returns ``(bundle path, sha256)``."""
    if nice:
        lower_priority()
    ctx = Context(root=root, budget=budget, cpu_window=cpu_window, max_file_bytes=max_file_bytes,
                  proc_root=proc_root)
    if ctx.live and hasattr(os, "geteuid") and os.geteuid() != 0:
        ctx.error("collector", "not running as root: other users' processes, sockets, "
                  "crontabs, keys and logs may be missing")
    try:
        run(ctx, only)
        out = output or default_output(ctx)
        digest = ctx.write_bundle(out)
    except BaseException:
        ctx.discard()
        raise
    return out, digest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deminer-collect",
                                description="Collect a host's evidence into a deminer bundle.")
    p.add_argument("--root", default="/", help="read a mounted image or tree instead of /")
    p.add_argument("--proc", help="read processes and sockets from this /proc "
                   "(default: ROOT/proc)")
    p.add_argument("-o", "--output", help="bundle path (default deminer-HOST-TIME.tar.gz)")
    p.add_argument("--budget", type=float, default=120.0, help="time budget in seconds")
    p.add_argument("--cpu-window", type=float, default=2.0,
                   help="seconds over which process CPU is sampled")
    p.add_argument("--max-file-mb", type=float, default=32.0, help="cap for each saved file")
    p.add_argument("--only", action="append", choices=[n for n, _ in COLLECTORS],
                   help="run only this collector (repeatable)")
    p.add_argument("--no-nice", action="store_true", help="keep normal CPU/I-O priority")
    p.add_argument("--version", action="version", version=COLLECTOR_VERSION)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.root):
        sys.stderr.write("deminer-collect: --root %s is not a folder\n" % fs_text(args.root))
        return 2
    try:
        out, digest = collect(args.root, args.output, args.budget, args.cpu_window,
                              int(args.max_file_mb * 1024 * 1024), args.only, not args.no_nice,
                              args.proc)
    except OSError as exc:
        sys.stderr.write("deminer-collect: cannot write the bundle: %s\n" % exc)
        return 2
    sys.stdout.write("bundle %s\n" % fs_text(out))
    sys.stdout.write("sha256 %s\n" % digest)
    return 0
