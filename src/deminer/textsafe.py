"""Make evidence text safe to print: attacker-controlled bytes never reach a terminal raw."""

from __future__ import annotations

import re

# C0 and C1 controls except tab, plus DEL, bidi overrides and zero-width characters that can
# hide or reorder text on screen (incl. the Arabic letter mark, line/paragraph separators
# and the BOM).
_UNSAFE = re.compile(
    r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def clean(text: object, limit: int | None = 2000) -> str:
    """``text`` with control characters shown as escapes, cut to ``limit`` characters."""
    s = _UNSAFE.sub(_escape, str(text))
    if limit is not None and len(s) > limit:
        s = s[:limit] + "…"
    return s
