"""Blast-radius reasons stay short when a worm guessed the same account on many hosts."""

from __future__ import annotations

from deminer.case import Case
from deminer.correlate import correlate
from deminer.correlate.risk import MAX_NAMED
from tests.correlate.builders import OUTSIDE, add, at, brute_success, host


def test_a_shared_account_reason_names_a_few_infected_hosts_and_counts_the_rest() -> None:
    infected = [f"web{n:02d}" for n in range(1, MAX_NAMED + 4)]
    with Case(None) as case:
        for n, name in enumerate(infected):
            host(case, name, f"10.0.0.{n + 10}", collected=at(600))
            add(case, brute_success(name, OUTSIDE, at(n)))
        host(case, "db1", "10.0.0.99", collected=at(600))
        case.add("accounts", [{"host": "db1", "user": "root"}])
        risk = {v.host: v.at_risk for v in correlate(case).verdicts}
    shown = ", ".join(infected[:MAX_NAMED])
    assert risk["db1"] == [f"has account root, guessed on infected {shown} and 3 more (shared password?)"]


def test_a_few_guessed_hosts_are_all_named() -> None:
    with Case(None) as case:
        for n, name in enumerate(("web1", "web2")):
            host(case, name, f"10.0.0.{n + 10}", collected=at(600))
            add(case, brute_success(name, OUTSIDE, at(n)))
        host(case, "db1", "10.0.0.99", collected=at(600))
        case.add("accounts", [{"host": "db1", "user": "root"}])
        risk = {v.host: v.at_risk for v in correlate(case).verdicts}
    assert risk["db1"] == ["has account root, guessed on infected web1, web2 (shared password?)"]
