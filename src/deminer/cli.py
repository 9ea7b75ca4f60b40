"""Every ``deminer`` command, thin: parse arguments, call one stage, print.

Exit codes: 0 nothing at or above ``--fail-on``, 1 findings at or above it, 2 error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from deminer import __version__
from deminer.case import Case, check_memory_limit
from deminer.detect import iocs
from deminer.detect.engine import detect, sort_findings
from deminer.detect.finding import Finding
from deminer.detect.rules import RuleError, load_rules
from deminer.model import SEVERITIES, severity_rank
from deminer.report.jsonl import write_findings
from deminer.report.terminal import render
from deminer.sources.base import Source
from deminer.sources.ingest import ingest
from deminer.textsafe import clean


def _add_detect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jsonl", type=Path, help="also write findings as JSON Lines here")
    p.add_argument("--fail-on", choices=SEVERITIES, default="high",
                   help="exit 1 when a finding is at or above this severity (default high)")
    p.add_argument("--ioc", type=Path, action="append", default=[],
                   help="extra indicators: CSV (kind,value,family,description) or STIX 2.1 JSON")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    p.add_argument("--sigma", type=Path, action="append", default=[], metavar="DIR",
                   help="also run the Sigma rules in DIR (repeatable; deminer's own pack always runs)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="working memory of the case store, e.g. 512MB or 8GB; beyond it, it "
                        "spills to disk (default DEMINER_MEMORY_LIMIT, else 1GB)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deminer", description="Cryptomining incident response.")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scan", help="collect this host, ingest and detect, in one command")
    s.add_argument("--root", default="/", help="examine a mounted image or tree instead of /")
    s.add_argument("--proc", help="read processes and sockets from this /proc (default ROOT/proc)")
    s.add_argument("--case", type=Path, help="case folder (default ./deminer-scan-TIME)")
    s.add_argument("--cpu-window", type=float, default=2.0, help="CPU sampling seconds")
    s.add_argument("--budget", type=float, default=120.0, help="collection time budget, seconds")
    _add_detect_options(s)

    i = sub.add_parser("investigate", help="ingest collected evidence and detect")
    i.add_argument("inputs", nargs="+", type=Path, help="bundles, logs or folders of them")
    i.add_argument("--case", type=Path, default=Path("deminer-case"), help="case folder")
    i.add_argument("--host", help="host id for inputs that do not name their host")
    i.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes parsing files in parallel (default: from the cores and the "
                        "input size; 1 = none)")
    i.add_argument("--flow-columns", metavar="ROLE=COLUMN,…",
                   help="columns of a flow export (CSV/JSON lines) whose header deminer does not "
                        "recognise, e.g. src_ip=client,dst_ip=server,dst_port=svc_port,bytes=octets")
    _add_detect_options(i)

    sub.add_parser("collect", add_help=False,
                   help="collect evidence into a bundle (stdlib only; see deminer collect --help)")

    cb = sub.add_parser("collector", help="build the standalone collector")
    cbsub = cb.add_subparsers(dest="collector_command", required=True)
    b = cbsub.add_parser("build", help="write the single-file collector zipapp")
    b.add_argument("-o", "--output", type=Path, default=Path("deminer-collect.pyz"))

    e = sub.add_parser("export", help="write a case's tables as Parquet (CASE/parquet/<table>/)")
    e.add_argument("case", type=Path, help="case folder")
    e.add_argument("--out", type=Path, help="output folder (default CASE/parquet)")

    rp = sub.add_parser("report", help="write report.html, JSONL, graph.json and STIX for a case")
    rp.add_argument("case", type=Path, help="case folder")
    rp.add_argument("--out", type=Path, help="output folder (default: the case folder)")

    r = sub.add_parser("rules", help="list the shipped rules")
    r.add_argument("--json", action="store_true")
    return p


def _finish(case: Case, findings: Sequence[Finding], args: argparse.Namespace,
            console: Console) -> int:
    assert case.dir is not None
    from deminer.report.write import write_report

    written = write_report(case, case.dir)
    if args.jsonl:
        if "findings.jsonl" in written:
            shutil.copyfile(written["findings.jsonl"], args.jsonl)  # one order, one content
        else:
            write_findings(findings, args.jsonl)
    # Every problem is an errors row (ingest failures, lines a source skipped, collector
    # problems, broken rules), so the table alone lists each once.
    errors = [f"{r['source']}: {r['message']}" for r in case.query(
        "SELECT DISTINCT source, message FROM errors ORDER BY source, message")]
    if not args.quiet:
        render(findings, console, errors)
    if case.uncapped:
        console.print(f"Memory: {case.uncapped} quer{'y' if case.uncapped == 1 else 'ies'} did not fit "
                      "the case store's memory cap and ran above it (--memory-limit sets the cap)",
                      markup=False)
    worst = max((severity_rank(f.severity) for f in findings), default=-1)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    shown = ", ".join(f"{n} {s}" for s, n in reversed(counts.items()) if n)
    console.print(f"\n{len(findings)} findings ({shown or 'none'}); case: {clean(case.dir)}")
    console.print(f"findings: {clean(case.dir / 'findings.jsonl')}")
    if "report.html" in written:
        console.print(f"report: {clean(written['report.html'])}")
    return 1 if worst >= severity_rank(args.fail_on) else 0


def _load_iocs(case: Case, paths: Sequence[Path]) -> None:
    iocs.load_shipped(case)
    for path in paths:
        iocs.load_user(case, path)


def _detect_all(case: Case, args: argparse.Namespace, console: Console) -> list[Finding]:
    """The shipped rules, then deminer's Sigma pack and every ``--sigma`` folder."""
    from deminer.detect.sigma.run import sigma_findings

    findings = detect(case)  # first: it replaces the findings table
    sigma, problems = sigma_findings(case, args.sigma)
    skipped = [p for p in problems if p.kind == "unsupported"]
    if skipped and case.dir is not None:
        # Valid Sigma rules with no matching log here (a SigmaHQ checkout has thousands):
        # listed in a file with their reasons, not silently dropped, not flooding the terminal.
        report = case.dir / "sigma-not-run.txt"
        report.write_text("".join(f"{p}\n" for p in skipped), encoding="utf-8")
        console.print(f"Sigma: {len(skipped)} rule(s) not run here (no matching log or unsupported "
                      f"feature); reasons in {clean(report)}", markup=False)
    return sort_findings([*findings, *sigma])


def _correlate(case: Case, console: Console) -> None:
    """The outbreak picture (verdicts, infection edges, patient zero) and the timeline."""
    from deminer.correlate import correlate, write_timeline

    outbreak = correlate(case)
    assert case.dir is not None
    write_timeline(case, case.dir)
    counts: dict[str, int] = {}
    for v in outbreak.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    console.print(f"Hosts: {shown or 'none'}; infection edges: {len(outbreak.edges)}", markup=False)
    if outbreak.patient_zero:
        console.print(f"Patient zero: {clean(', '.join(outbreak.patient_zero))} "
                      f"(entry: {clean(outbreak.entry_vector)})", markup=False)
    # Infected hosts no edge leads to besides patient zero: separate intrusions (or spread the
    # evidence does not show), each with its own entry vector.
    others = [f"{h} (entry: {e.vector})" for h, e in sorted(outbreak.entries.items())
              if h not in outbreak.patient_zero]
    if others:
        console.print(f"Separate entry points: {clean(', '.join(others))}", markup=False)


def _sources(args: argparse.Namespace) -> tuple[Source, ...]:
    """The sources, with the netflow one told the user's column mapping (``--flow-columns``)."""
    from deminer.sources import SOURCES, netflow

    if not getattr(args, "flow_columns", None):
        return SOURCES
    mapped = netflow.mapped_source(netflow.parse_mapping(args.flow_columns))
    return tuple(mapped if s is netflow.SOURCE else s for s in SOURCES)


def cmd_investigate(args: argparse.Namespace, console: Console) -> int:
    try:
        sources = _sources(args)
    except ValueError as exc:
        console.print(f"--flow-columns: {clean(str(exc))}", markup=False)
        return 2
    try:
        case = Case(args.case, memory_limit=args.memory_limit)
    except ValueError as exc:
        console.print(f"--memory-limit: {clean(str(exc))}", markup=False)
        return 2
    with case:
        _load_iocs(case, args.ioc)
        missing = [p for p in args.inputs if not p.exists()]
        for p in missing:
            case.error(clean(p), "no such file or folder")
        # Progress only on a terminal: logs and CI output stay clean.
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("ingesting", total=None)
            ingest(case, [p for p in args.inputs if p.exists()], host=args.host, sources=sources,
                   workers=args.workers if args.workers is None else max(1, args.workers),
                   progress=lambda name: bar.update(task, description=f"ingesting {clean(name, 80)}"))
            bar.update(task, description="detecting")
            findings = _detect_all(case, args, console)
            bar.update(task, description="correlating")
            _correlate(case, console)
        return _finish(case, findings, args, console)


def cmd_scan(args: argparse.Namespace, console: Console) -> int:
    from deminer.collect.main import collect

    if args.memory_limit:
        try:
            check_memory_limit(args.memory_limit)
        except ValueError as exc:
            console.print(f"--memory-limit: {clean(str(exc))}", markup=False)
            return 2
    case_dir = args.case or Path(f"deminer-scan-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    (case_dir / "bundles").mkdir(parents=True, exist_ok=True)
    if args.root == "/" and os.geteuid() != 0:
        console.print("[yellow]Not running as root: other users' processes, sockets, crontabs, "
                      "keys and logs cannot be seen; run as root for a complete scan.[/yellow]")
    console.print(f"Collecting {clean(args.root)} (CPU sampled over {args.cpu_window:g}s)…")
    bundle, digest = collect(root=args.root, output=str(case_dir / "bundles" / "scan.tar.gz"),
                             budget=args.budget, cpu_window=args.cpu_window, nice=False,
                             proc_root=args.proc)
    console.print(f"bundle {clean(bundle)} sha256 {digest}")
    with Case(case_dir, memory_limit=args.memory_limit) as case:
        _load_iocs(case, args.ioc)
        ingest(case, [Path(bundle)])
        findings = _detect_all(case, args, console)
        _correlate(case, console)
        return _finish(case, findings, args, console)


def cmd_rules(args: argparse.Namespace, console: Console) -> int:
    import json

    rules = load_rules()
    for r in rules:
        if args.json:
            print(json.dumps({"id": r.id, "title": r.title, "severity": r.severity,
                              "attack": list(r.attack)}))
        else:
            console.print(f"{r.id:50} {r.severity:9} {','.join(r.attack):24} {r.title}",
                          markup=False, highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["collect"]:
        # The collector has its own options (it also runs alone as a zipapp); argparse's
        # REMAINDER cannot pass options through, so hand them over before parsing.
        from deminer.collect.main import main as collect_main
        return collect_main(argv[1:])
    args = build_parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    try:
        if args.command == "collector":
            from deminer.collect.zipapp import build
            out = build(args.output)
            console.print(f"collector written to {clean(out)}")
            return 0
        if args.command == "scan":
            return cmd_scan(args, console)
        if args.command == "investigate":
            return cmd_investigate(args, console)
        if args.command == "export":
            if not (args.case / "case.duckdb").is_file():
                console.print(f"deminer: error: {clean(args.case)} is not a case folder", markup=False)
                return 2
            with Case(args.case) as case:
                out = case.export_parquet(args.out)
            console.print(f"Parquet tables written to {clean(out)}", markup=False)
            return 0
        if args.command == "report":
            if not (args.case / "case.duckdb").is_file():
                console.print(f"deminer: error: {clean(args.case)} is not a case folder", markup=False)
                return 2
            from deminer.report.write import write_report
            with Case(args.case) as case:
                files = write_report(case, args.out or args.case)
            for name, path in sorted(files.items()):
                console.print(f"{name}: {clean(path)}", markup=False)
            return 0
        if args.command == "rules":
            return cmd_rules(args, console)
    except (RuleError, iocs.IocError, OSError) as exc:
        console.print(f"deminer: error: {clean(exc)}", markup=False)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
