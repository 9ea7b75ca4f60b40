"""The terminal summary: findings grouped by severity, each with its key evidence."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from deminer.detect.finding import Finding
from deminer.model import SEVERITIES
from deminer.textsafe import clean

_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
          "low": "cyan", "info": "dim"}
# Evidence keys worth a line in the terminal, in this order; the rest is in the JSONL.
_KEYS = ("pid", "exe", "cmdline", "path", "file", "line", "location", "command", "source",
         "source_line", "source.ip", "user.name", "raddr", "pool", "wallet", "count",
         "failures", "users", "decoded", "stratum", "matched", "flags", "targets", "library",
         "qname")


def render(findings: Sequence[Finding], console: Console, errors: Sequence[str] = ()) -> None:
    if not findings:
        console.print(Text("No findings.", style="green"))
    for severity in reversed(SEVERITIES):
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        console.print(Text(f"\n{severity.upper()} ({len(group)})", style=_STYLE[severity]))
        for f in group:
            line = Text("  ")
            line.append(f"[{f.rule}] ", style="bold")
            line.append(clean(f.summary, 400))
            if f.host:
                line.append(f"  host={clean(f.host, 80)}", style="dim")
            console.print(line)
            for key in _KEYS:
                if key in f.evidence and f.evidence[key] not in (None, "", []):
                    console.print(Text(f"      {key}: {clean(f.evidence[key], 300)}", style="dim"))
    if errors:
        console.print(Text(f"\nInputs with problems ({len(errors)}):", style="yellow"))
        for e in errors[:50]:
            console.print(Text("  " + clean(e, 400)))
        if len(errors) > 50:
            console.print(Text(f"  … and {len(errors) - 50} more (see the errors table)"))
