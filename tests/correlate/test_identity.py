"""Host identity: names, FQDNs, NetBIOS names, machine ids, addresses over time, host keys."""

from __future__ import annotations

import datetime as dt

from deminer.case import Case
from deminer.correlate import correlate
from deminer.correlate.identity import resolve_identity, write_aliases
from tests.correlate.builders import T0, add, at, brute_success, host, miner


def test_fqdn_windows_computer_and_bundle_name_are_one_host() -> None:
    with Case(None) as case:
        host(case, "web1", "10.0.0.5", collected=at(600))
        case.add("events", [{"host": "web1.corp.example", "ts": at(5), "event": "logon_success",
                             "channel": "Security", "event_id": 4624, "source": "Security.evtx"}])
        add(case, miner("web1.corp.example", at(10)))
        ident = resolve_identity(case)
        assert ident.aliases["web1.corp.example"] == "web1"
        assert ident.reasons["web1.corp.example"] == "web1 is the short name of web1.corp.example"
        assert ident.host_of("WEB1.corp.example.") == "web1"
        assert ident.host_of("root@web1.corp:22") == "web1"      # a name only an inventory uses
        out = correlate(case)
        assert [v.host for v in out.verdicts] == ["web1"]
        assert out.verdict("web1.corp.example") is out.verdict("web1")
        assert out.verdicts[0].aliases == ["10.0.0.5", "web1.corp.example"]
        rows = case.query("SELECT alias, host, reason FROM host_aliases ORDER BY alias")
        assert rows == [
            {"alias": "10.0.0.5", "host": "web1", "reason": "address 10.0.0.5 belongs to web1 (hosts.ips)"},
            {"alias": "web1", "host": "web1", "reason": "canonical host id"},
            {"alias": "web1.corp.example", "host": "web1",
             "reason": "web1 is the short name of web1.corp.example"}]


def test_same_short_name_in_two_domains_stays_apart() -> None:
    with Case(None) as case:
        for name in ("web1.prod.example", "web1.dev.example", "web1"):
            case.add("events", [{"host": name, "ts": T0, "event": "logon_success", "program": "sshd"}])
        ident = resolve_identity(case)
        assert sorted(ident.hosts) == ["web1", "web1.dev.example", "web1.prod.example"]
        assert any("short name web1 matches several hosts" in n for n in ident.notes)
        assert ident.host_of("web1.prod.example") == "web1.prod.example"


def test_netbios_name_cut_to_15_characters() -> None:
    with Case(None) as case:
        host(case, "accountingserver01", collected=at(600))
        case.add("events", [{"host": "accountingserve", "ts": T0, "event": "logon_failure",
                             "channel": "Security"}])
        ident = resolve_identity(case)
        assert ident.aliases["accountingserve"] == "accountingserver01"
        assert "NetBIOS" in ident.reasons["accountingserve"]


def test_collected_with_host_label_and_hostname() -> None:
    with Case(None) as case:
        host(case, "case-7-db", "10.0.0.20", collected=at(600), hostname="SRV-DB")
        case.add("remote_targets", [{"host": "jump", "kind": "ssh_config", "target": "srv-db.corp"}])
        ident = resolve_identity(case)
        assert ident.aliases["srv-db"] == "case-7-db"
        assert ident.host_of("srv-db.corp") == "case-7-db"
        assert ident.host_of("10.0.0.20") == "case-7-db"


def test_machine_id_merges_a_renamed_host_but_not_clones() -> None:
    with Case(None) as case:
        host(case, "db1", "10.0.0.9", collected=at(600), machine_id="a" * 32)
        host(case, "db1-old", "10.0.0.9", collected=at(-6000), machine_id="a" * 32)
        host(case, "vm1", "10.0.1.1", collected=at(600), machine_id="b" * 32)
        host(case, "vm2", "10.0.1.2", collected=at(600), machine_id="b" * 32)
        ident = resolve_identity(case)
        assert ident.aliases["db1-old"] == "db1" == ident.aliases["db1"]
        assert ident.aliases["vm1"] == "vm1" and ident.aliases["vm2"] == "vm2"
        assert any("vm1 and vm2 share machine id" in n and "cloned" in n for n in ident.notes)


def test_address_host_id_joins_its_owner_and_loopback_names_nobody() -> None:
    with Case(None) as case:
        host(case, "app1", "10.0.0.7", "127.0.0.1", collected=at(600))
        host(case, "app2", "10.0.0.8", "127.0.0.1", collected=at(600))
        add(case, miner("10.0.0.7", at(3)))          # a network rule named the address
        ident = resolve_identity(case)
        assert ident.aliases["10.0.0.7"] == "app1"
        assert ident.host_for_ip("127.0.0.1") is None
        assert ident.aliases["app1"] != ident.aliases["app2"]
        assert correlate(case).verdict("app1").verdict == "infected"  # type: ignore[union-attr]


def test_address_reused_over_time_is_resolved_by_time() -> None:
    with Case(None) as case:
        host(case, "laptop-a", "10.0.0.50", collected=at(60))
        host(case, "laptop-b", "10.0.0.50", collected=at(600))
        add(case, miner("10.0.0.50", at(30)))
        ident = resolve_identity(case)
        assert ident.host_for_ip("10.0.0.50", at(30)) == "laptop-a"
        assert ident.host_for_ip("10.0.0.50", at(300)) == "laptop-b"
        assert ident.host_for_ip("10.0.0.50", at(900)) == "laptop-b"
        assert ident.host_for_ip("10.0.0.50") is None
        assert ident.aliases["10.0.0.50"] == "10.0.0.50"
        assert any("10.0.0.50 was claimed by several hosts" in n for n in ident.notes)


def test_known_hosts_entry_with_a_hosts_own_key_names_it() -> None:
    with Case(None) as case:
        host(case, "jump", "10.0.0.2", collected=at(600))
        host(case, "backup", collected=at(600))                 # no address of its own
        case.add("ssh_keys", [
            {"host": "jump", "kind": "known_host", "path": "/root/.ssh/known_hosts",
             "fingerprint": "SHA256:hostkeyB", "comment": "backup01,10.0.0.9"},
            {"host": "backup", "kind": "host_private", "path": "/etc/ssh/ssh_host_ed25519_key",
             "fingerprint": "SHA256:hostkeyB"}])
        ident = resolve_identity(case)
        assert ident.host_for_ip("10.0.0.9") == "backup"
        assert ident.host_of("backup01") == "backup"
        assert ident.claims["10.0.0.9"][0].how == "host key"


def test_dns_answer_is_the_weakest_claim() -> None:
    with Case(None) as case:
        host(case, "db1", collected=at(600))
        host(case, "db2", "10.0.0.21", collected=at(600))
        case.add("dns", [{"ts": T0, "client": "10.0.0.5", "qname": "db1.corp", "qtype": "A",
                          "answers": ["10.0.0.20"]},
                         {"ts": T0, "client": "10.0.0.5", "qname": "db1.corp", "qtype": "A",
                          "answers": ["10.0.0.21"]},            # hosts.ips says db2: stronger
                         {"ts": T0, "client": "10.0.0.5", "qname": "db1.corp", "qtype": "A",
                          "answers": ["198.51.100.9"]}])         # public: not a host address here
        ident = resolve_identity(case)
        assert ident.host_for_ip("10.0.0.20") == "db1"
        assert ident.host_for_ip("10.0.0.21") == "db2"
        assert ident.host_for_ip("198.51.100.9") is None


def test_hostile_host_names_survive() -> None:
    names = ["evil\x1b[2J", "a'b\"c;DROP", "bad\udcffname", "x" * 3000]
    with Case(None) as case:
        for n in names:
            add(case, brute_success(n, "203.0.113.7", at(1)))
        ident = resolve_identity(case)
        assert write_aliases(case, ident) == 4
        out = correlate(case)
        assert sorted(v.verdict for v in out.verdicts) == ["infected"] * 4
        assert case.count("host_verdicts") == 4
        assert not case.query("SELECT * FROM errors")


def test_empty_case() -> None:
    with Case(None) as case:
        out = correlate(case)
        assert out.verdicts == [] and out.edges == [] and out.patient_zero == []
        assert out.entry_vector == "unknown"
        assert "no host is infected" in out.explanations[0]
        assert case.query("SELECT count(*) AS n FROM host_aliases") == [{"n": 0}]


def test_collected_at_is_kept_per_canonical_host() -> None:
    with Case(None) as case:
        host(case, "web1", collected=dt.datetime(2024, 4, 1))
        host(case, "web1", collected=dt.datetime(2024, 4, 2))
        assert resolve_identity(case).collected_at == {"web1": dt.datetime(2024, 4, 2)}


def test_dns_answers_tie_a_windows_hosts_address_to_its_name() -> None:
    # A network rule names 10.1.0.20; only the sensor's DNS log says that is db01 (whose
    # Windows logs say DB01.corp.example and whose hives give no address).
    with Case(None) as case:
        case.add("hosts", [{"host": "db01", "hostname": "DB01",
                            "source": "C/Windows/System32/config/SYSTEM"}])
        case.add("events", [{"host": "db01.corp.example", "ts": T0, "event": "logon_success",
                             "channel": "Security"}])
        case.add("dns", [{"ts": T0, "client": "10.1.0.40", "qname": "db01.corp.example", "qtype": "A",
                          "answers": ["10.1.0.20"]}])
        add(case, miner("10.1.0.20", at(5)))
        ident = resolve_identity(case)
        assert ident.aliases["10.1.0.20"] == "db01" == ident.aliases["db01.corp.example"]
        assert ident.reasons["10.1.0.20"] == "address 10.1.0.20 belongs to db01 (dns)"
        assert [v.host for v in correlate(case).verdicts] == ["db01"]
