"""Evidence text never reaches a terminal with raw control characters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deminer.textsafe import clean


def test_escapes_terminal_controls() -> None:
    assert clean("a\x1b[31mred\x07\nb") == "a\\x1b[31mred\\x07\\x0ab"
    assert clean("right\u202eleft") == "right\\u202eleft"
    assert clean("x" * 10, limit=4) == "xxxx…"


@given(st.text())
def test_output_has_no_controls(text: str) -> None:
    out = clean(text, limit=None)
    assert not any(ord(c) < 32 and c != "\t" for c in out)
    assert not any(0x7F <= ord(c) <= 0x9F for c in out)
