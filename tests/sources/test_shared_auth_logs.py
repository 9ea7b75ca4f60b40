"""The auth-log source and the SSH rules on real public logs (../shared/data/linux-auth).

Skipped when the folder is absent (a fresh clone has none). The expected numbers were checked
with plain ``grep`` on the files; where they differ from the data README, the README is wrong:

- ubuntu: 713 ``Failed password`` lines, but 85 of them are rsyslog's "message repeated N
  times: [ Failed password …]" (77 × 5, 4 × 4, 1 × 3, 3 × 2), so the failed attempts are
  628 + 410 = 1038: 713 rows whose ``count`` sums to 1038. 105 sources including 127.0.0.1.
- ubuntu: 24.151.103.17 is *not* "never successful": it logged in 47 times, and at line 3180
  (Mar 30 16:01:36) ``Accepted password for elastic_user_0`` came 1 s after 147 failed
  passwords for that account from it in 7 minutes (lines 2731–3178). That is exactly a
  successful brute force, so the success rule fires there, once. 85.245.107.41 has 174
  accepted logins (139 password + 35 publickey), not 222 (all 226 minus 95.93.96.191's 4),
  and 15 failures (11 password + 4 publickey) spread over days: no finding.
- loghub: 520 ``Failed password`` lines, two of them "message repeated 5 times": 528 attempts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.detect.engine import detect
from deminer.detect.rules import load_rules
from deminer.sources import auth_log
from deminer.sources.ingest import ingest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "linux-auth"
UBUNTU = DATA / "ubuntu-internet-facing-auth.log"
LOGHUB = DATA / "openssh-labsz-2k.log"
SSH_RULES = [r for r in load_rules() if "ssh_" in r.id]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/linux-auth is absent")


@pytest.fixture(scope="module")
def ubuntu() -> Iterator[Case]:
    with Case(None) as case:
        for table, rows in auth_log.parse_file(UBUNTU, UBUNTU.name, reference_year=2017):
            case.add(table, rows)
        yield case


@pytest.fixture(scope="module")
def loghub() -> Iterator[Case]:
    with Case(None) as case:
        for table, rows in auth_log.parse_file(LOGHUB, LOGHUB.name, reference_year=2017):
            case.add(table, rows)
        yield case


def one(case: Case, sql: str) -> tuple[object, ...]:
    row = case.db.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def test_ubuntu_counts(ubuntu: Case) -> None:
    failed = "event = 'logon_failure' AND raw LIKE '%Failed password%'"
    assert one(ubuntu, f"SELECT count(*), sum(count), count(DISTINCT src_ip) FROM events WHERE {failed}") \
        == (713, 1038, 105)
    repeated = f"SELECT count(*) FROM events WHERE {failed} AND raw LIKE '%message repeated%'"
    assert one(ubuntu, repeated) == (85,)
    assert one(ubuntu, "SELECT src_ip, sum(count) FROM events WHERE event = 'logon_failure' "
                       "GROUP BY src_ip ORDER BY 2 DESC, 1 LIMIT 1") == ("24.151.103.17", 157)
    assert one(ubuntu, "SELECT count(*) FROM events WHERE event = 'invalid_user'") == (178,)
    assert one(ubuntu, "SELECT count(*) FROM events WHERE event = 'auth_max_attempts' "
                       "AND user = 'root'") == (114,)
    assert one(ubuntu, "SELECT count(*), count(DISTINCT user) FROM events WHERE event = 'logon_success' "
                       "AND src_ip = '85.245.107.41'") == (174, 11)
    assert one(ubuntu, "SELECT sum(count) FROM events WHERE event = 'logon_failure' "
                       "AND src_ip = '85.245.107.41'") == (15,)
    assert one(ubuntu, "SELECT count(*) FROM events WHERE event = 'logon_success' "
                       "AND src_ip = '24.151.103.17'") == (47,)
    assert one(ubuntu, "SELECT count(*) FROM events WHERE event = 'sudo' AND command IS NOT NULL") == (186,)
    assert one(ubuntu, "SELECT strftime(min(ts), '%Y-%m-%d %H:%M:%S'), host FROM events GROUP BY host") \
        == ("2017-03-27 13:08:09", "ip-10-77-20-248")


def test_loghub_counts(loghub: Case) -> None:
    failed = "event = 'logon_failure' AND raw LIKE '%Failed password%'"
    assert one(loghub, f"SELECT count(*), sum(count) FROM events WHERE {failed}") == (520, 528)
    assert one(loghub, "SELECT src_ip, sum(count) FROM events WHERE event = 'logon_failure' "
                       "GROUP BY src_ip ORDER BY 2 DESC, 1 LIMIT 1") == ("183.62.140.253", 286)
    assert loghub.query("SELECT user, src_ip, status FROM events WHERE event = 'logon_success'") == [
        {"user": "fztu", "src_ip": "119.137.62.142", "status": "password"}]
    assert one(loghub, "SELECT count(*) FROM events WHERE src_ip = '119.137.62.142' "
                       "AND event = 'logon_failure'") == (0,)
    # the user name with a leading space (written with a double space) survives
    assert one(loghub, "SELECT count(*) FROM events WHERE user = ' 0101'") == (2,)
    assert one(loghub, "SELECT count(*) FROM events WHERE raw LIKE '%' || chr(13) || '%'") == (0,)


def test_brute_force_findings_on_ubuntu(ubuntu: Case) -> None:
    found = detect(ubuntu, SSH_RULES)
    by_rule: dict[str, list[str]] = {}
    for f in found:
        by_rule.setdefault(f.rule, []).append(f.entity)
    guessing = by_rule["credential_access.ssh_brute_force"]
    assert {"24.151.103.17", "34.204.227.175", "49.4.143.105"} <= set(guessing)
    assert "85.245.107.41" not in guessing and len(guessing) == len(set(guessing))
    (cracked,) = [f for f in found if f.rule == "initial_access.ssh_brute_force_success"]
    assert cracked.entity == "24.151.103.17" and cracked.severity == "critical"
    ev = cracked.evidence
    assert (ev["user.name"], ev["failures"], ev["source_line"], ev["success_ts"]) == \
        ("elastic_user_0", 147, 3180, "2017-03-30T16:01:36Z")
    assert ev["logins_before_burst"] == 46         # a clue that this address was also used legitimately
    top = next(f for f in found if f.entity == "24.151.103.17" and f.rule.endswith("ssh_brute_force"))
    assert top.evidence["failures"] == 157 and "elastic_user_0" in top.evidence["top_users"]


def test_brute_force_findings_on_loghub(loghub: Case) -> None:
    found = detect(loghub, SSH_RULES)
    assert not [f for f in found if f.rule == "initial_access.ssh_brute_force_success"]
    top = next(f for f in found if f.entity == "183.62.140.253")
    assert top.rule == "credential_access.ssh_brute_force" and top.severity == "medium"
    assert top.evidence["failures"] == 286 and top.evidence["top_users"].startswith("root (276)")
    assert "119.137.62.142" not in {f.entity for f in found}


def test_ingest_both_files_through_the_dispatcher(tmp_path: Path) -> None:
    with Case(tmp_path / "case") as case:
        summary = ingest(case, [DATA])
        assert summary.files == 2 and not summary.errors
        kinds = case.query("SELECT kind, count(*) AS n FROM inputs GROUP BY kind")
        assert kinds == [{"kind": "auth_log", "n": 2}]
        assert one(case, "SELECT count(DISTINCT host) FROM events") == (2,)
