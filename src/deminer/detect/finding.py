"""A finding: one conclusion of a rule or detector, as written to ``findings`` and JSONL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    severity: str
    attack: tuple[str, ...]
    host: str | None
    ts: dt.datetime | None
    entity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A stable id from rule, host, entity and time, so graphs and reports can cite it
        and golden tests compare runs (no counters, no wall clock)."""
        key = "\x1f".join((self.rule, self.host or "", self.entity,
                            self.ts.isoformat() if self.ts else ""))
        return hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()[:16]

    def row(self) -> dict[str, Any]:
        """The ``findings`` table row."""
        return {
            "id": self.id, "rule": self.rule, "title": self.title, "severity": self.severity,
            "attack": list(self.attack), "host": self.host, "ts": self.ts,
            "entity": self.entity, "summary": self.summary,
            "evidence": json.dumps(self.evidence, sort_keys=True, default=str),
        }

    def to_json(self) -> dict[str, Any]:
        """The object written as one line of ``findings.jsonl``."""
        return {
            "id": self.id, "rule": self.rule, "title": self.title, "severity": self.severity,
            "attack": list(self.attack), "host": self.host,
            "ts": self.ts.isoformat() + "Z" if self.ts else None,
            "entity": self.entity, "summary": self.summary, "evidence": self.evidence,
        }

    @staticmethod
    def from_row(row: dict[str, Any]) -> Finding:
        evidence = row.get("evidence")
        try:
            parsed = json.loads(evidence) if isinstance(evidence, str) else (evidence or {})
        except json.JSONDecodeError:
            parsed = {"raw": evidence}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        return Finding(
            rule=row["rule"], title=row["title"], severity=row["severity"],
            attack=tuple(row.get("attack") or ()), host=row.get("host"), ts=row.get("ts"),
            entity=str(row.get("entity") or ""), summary=str(row.get("summary") or ""),
            evidence=parsed,
        )
