"""Sigma correlation rules over generated events: counts, distinct values, sequences, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.detect import sigma_gen as g

Row = g.Row
NET = "{product: windows, category: network_connection}"


BASE_4625 = """
    title: Failed logon
    id: 1a4c2b8e-5d55-4f0a-9a59-3f0f6a0d1c01
    name: failed_logon
    status: test
    logsource: {product: windows, service: security}
    detection:
      sel: {EventID: 4625}
      condition: sel
    tags: [attack.credential-access, attack.t1110.001]
    level: low
    """


def test_event_count_by_ip_within_five_minutes(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"base.yml": BASE_4625, "corr.yml": g.correlation(
        "event_count", "  group-by: [IpAddress]\n  timespan: 5m\n  condition: {gte: 10}\n")})
    rows = [g.failed_logon("203.0.113.7", seconds=15 * i) for i in range(12)]            # burst
    rows += [g.failed_logon("203.0.113.7", seconds=20 * i, host="win2") for i in range(10)]
    rows += [g.failed_logon("198.51.100.9", seconds=40 * i) for i in range(12)]         # slow: 8/5m
    rows += [g.failed_logon("192.0.2.5", seconds=5 * i) for i in range(9)]              # 9 only
    rows += [g.failed_logon(f"192.0.2.{60 + i % 3}", seconds=i) for i in range(15)]     # 3 x 5
    run = g.run(folder, rows)
    assert run.problems == []
    got = {(f.host, f.entity): f for f in run.findings}
    assert set(got) == {("win1", "IpAddress=203.0.113.7"), ("win2", "IpAddress=203.0.113.7")}
    first = got[("win1", "IpAddress=203.0.113.7")]
    assert first.rule == "credential_access.correlated_event_count"   # tactic from the base rule
    assert first.attack == ("T1110.001",) and first.severity == "high"
    assert first.ts == g.T0 and first.evidence["count"] == 12 and first.evidence["sigma.correlation"]
    assert first.evidence["record_id"] == rows[9]["record_id"]          # the 10th failure tipped it
    assert (first.evidence["first"], first.evidence["met"], first.evidence["last"]) == (
        "2024-05-01T10:00:00Z", "2024-05-01T10:02:15Z", "2024-05-01T10:02:45Z")
    assert "event_count >= 10 within 5m by IpAddress" in first.summary
    # the base rule has no ``generate: true``: it gives no findings of its own
    assert {f.rule for f in run.findings} == {"credential_access.correlated_event_count"}


def test_value_count_finds_a_spray(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"base.yml": BASE_4625, "corr.yml": g.correlation(
        "value_count", "  group-by: [IpAddress]\n  timespan: 10m\n"
                       "  condition: {gte: 5, field: TargetUserName}\n")})
    rows = [g.failed_logon("203.0.113.8", f"user{i}", seconds=10 * i) for i in range(6)]
    rows += [g.failed_logon("203.0.113.9", "administrator", seconds=i) for i in range(20)]
    run = g.run(folder, rows)
    assert [(f.entity, f.evidence["count"]) for f in run.findings] == [("IpAddress=203.0.113.8", 6)]


def test_temporal_and_aliases(tmp_path: Path) -> None:
    dns = """
        title: Pool lookup
        name: pool_dns
        status: test
        logsource: {product: windows, category: dns_query}
        detection:
          sel: {QueryName|endswith: '.supportxmr.com'}
          condition: sel
        """
    port = """
        title: Stratum port
        name: stratum_port
        status: test
        logsource: {product: windows, category: network_connection}
        detection:
          sel: {DestinationPort: 3333}
          condition: sel
        """
    corr = g.correlation("temporal", "  group-by: [miner]\n  timespan: 1m\n  aliases:\n"
                       "    miner: {pool_dns: Image, stratum_port: Image}\n",
                       rules="[pool_dns, stratum_port]")
    folder = g.write_rules(tmp_path / "r", {"dns.yml": dns, "port.yml": port, "corr.yml": corr})

    def lookup(image: str, seconds: float) -> Row:
        return g.win(g.SYSMON, 22, {"Image": image, "QueryName": "pool.supportxmr.com"}, seconds=seconds)

    def connect(image: str, seconds: float) -> Row:
        return g.win(g.SYSMON, 3, {"Image": image, "DestinationIp": "1.2.3.4",
                                   "DestinationPort": "3333"}, seconds=seconds)

    rows = [lookup(r"C:\a\miner.exe", 0), connect(r"C:\a\miner.exe", 30),      # both within 1m
            lookup(r"C:\b\late.exe", 0), connect(r"C:\b\late.exe", 600),       # ten minutes apart
            lookup(r"C:\c\one.exe", 0), connect(r"C:\c\other.exe", 5),         # different programs
            lookup(r"C:\d\dns-only.exe", 0)]
    run = g.run(folder, rows)
    assert [f.entity for f in run.findings] == [r"miner=C:\a\miner.exe"]
    assert run.findings[0].ts == g.T0


def test_temporal_ordered_needs_the_order(tmp_path: Path) -> None:
    first = g.rule("sel: {CommandLine|contains: 'stage-one'}", title="One", extra="name: one\n")
    second = g.rule("sel: {CommandLine|contains: 'stage-two'}", title="Two", extra="name: two\n")
    corr = g.correlation("temporal_ordered", "  group-by: [User]\n  timespan: 5m\n", rules="[one, two]")
    folder = g.write_rules(tmp_path / "r", {"1.yml": first, "2.yml": second, "c.yml": corr})
    rows = [g.proc("a.exe", "stage-one a", User="alice", seconds=0),
            g.proc("b.exe", "stage-two a", User="alice", seconds=60),
            g.proc("b.exe", "stage-two b", User="bob", seconds=0),
            g.proc("a.exe", "stage-one b", User="bob", seconds=60)]
    run = g.run(folder, rows)
    corr_findings = [f for f in run.findings if f.evidence.get("sigma.correlation")]
    assert [f.entity for f in corr_findings] == ["User=alice"]


def test_fixed_buckets_for_exact_counts(tmp_path: Path) -> None:
    folder = g.write_rules(tmp_path / "r", {"base.yml": BASE_4625, "corr.yml": g.correlation(
        "event_count", "  group-by: [IpAddress]\n  timespan: 5m\n  condition: {eq: 3}\n")})
    rows = [g.failed_logon("192.0.2.1", seconds=i) for i in range(3)]
    rows += [g.failed_logon("192.0.2.2", seconds=i) for i in range(4)]
    run = g.run(folder, rows)
    assert [f.entity for f in run.findings] == ["IpAddress=192.0.2.1"]


@pytest.mark.parametrize("kind,condition", [
    ("value_sum", "{gte: 1000, field: Bytes}"),
    ("value_avg", "{gte: 400, field: Bytes}"),
    ("value_median", "{gte: 200, field: Bytes}"),
    ("value_percentile", "{gte: 700, field: Bytes, percentile: 90}"),
])
def test_metric_correlations(tmp_path: Path, kind: str, condition: str) -> None:
    base = g.rule("sel: {DestinationPort: 443}", NET, title="Https", extra="name: https\n")
    corr = g.correlation(kind, f"  group-by: [Image]\n  timespan: 1m\n  condition: {condition}\n",
                       rules="[https]")
    folder = g.write_rules(tmp_path / "r", {"base.yml": base, "corr.yml": corr})

    def sent(image: str, size: int, seconds: float) -> Row:
        return g.win(g.SYSMON, 3, {"Image": image, "DestinationIp": "1.2.3.4", "DestinationPort": "443",
                                   "Bytes": str(size)}, seconds=seconds)

    rows = [sent(r"C:\a.exe", n, i) for i, n in enumerate((100, 200, 900))]
    rows += [sent(r"C:\b.exe", 100, i) for i in range(3)]
    run = g.run(folder, rows)
    assert run.problems == []
    assert [f.entity for f in run.findings] == [r"Image=C:\a.exe"]
