"""Logs that start with a UTF-8 byte-order mark (as Windows tools write them) lose no line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.sources.ingest import ingest

BOM = "\ufeff"
SSH = "Mar 30 15:00:0{i} web1 sshd[100]: Failed password for root from 203.0.113.7 port 4242 ssh2\n"
IIS = ("#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
       "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
       "cs(User-Agent) sc-status sc-substatus sc-win32-status time-taken\n"
       "2024-03-30 15:00:01 10.0.0.5 POST /upload.aspx - 80 - 203.0.113.7 curl 200 0 0 12\n")
AUDIT = ("type=USER_AUTH msg=audit(1711810801.123:{i}): pid=1 uid=0 auid=4294967295 "
         "ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" "
         "hostname=203.0.113.7 addr=203.0.113.7 terminal=ssh res=failed'\n")


def _read(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    with Case(None) as case:
        ingest(case, [path])
        rows = case.query("SELECT source_line, event, src_ip FROM events ORDER BY source_line")
        errors = [str(r["message"]) for r in case.query("SELECT message FROM errors")]
    return rows, errors


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("name", "text"), [
    ("auth.log", "".join(SSH.format(i=i) for i in range(3))),
    ("audit.log", "".join(AUDIT.format(i=100 + i) for i in range(3))),
    ("u_ex240330.log", IIS),
])
def test_a_leading_bom_changes_nothing(tmp_path: Path, name: str, text: str, packed: bool) -> None:
    def write(folder: str, data: str) -> Path:
        path = tmp_path / folder / (name + (".gz" if packed else ""))
        path.parent.mkdir()
        raw = data.encode("utf-8")
        path.write_bytes(gzip.compress(raw) if packed else raw)
        return path

    plain_rows, plain_errors = _read(write("plain", text))
    bom_rows, bom_errors = _read(write("bom", BOM + text))
    assert plain_rows and bom_rows == plain_rows          # line 1 read, numbered as before
    assert bom_errors == plain_errors == []
