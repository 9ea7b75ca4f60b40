"""``looks_binary``: what sources use to refuse a binary blob with a clear error."""

from __future__ import annotations

from deminer.sources.base import looks_binary


def test_text_with_tabs_and_crlf_is_text() -> None:
    assert not looks_binary(b"")
    assert not looks_binary(b"Mar 27 13:06:56 web1 sshd[12]: Failed password\r\n\tcontinued\x0b\x0c\n" * 50)


def test_a_nul_byte_or_over_5_percent_control_bytes_is_binary() -> None:
    assert looks_binary(b"text\x00more")
    line = b"x" * 94 + b"\x1b\x01\x02\x03\x04\x05"          # 6 % control bytes
    assert looks_binary(line * 40)
    assert not looks_binary(b"x" * 96 + b"\x1b\x01\x02\x03" * 1)      # 4 %: ANSI colours in a log


def test_only_the_first_4_kib_is_judged() -> None:
    assert not looks_binary(b"a" * 4096 + b"\x01" * 4096)
