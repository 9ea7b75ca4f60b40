"""IOCs from a case as a STIX 2.1 bundle: valid, complete, deterministic, readable back."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from deminer.case import Case
from deminer.detect import iocs as ioc_loader
from deminer.detect.finding import Finding
from deminer.detect.ioc_stix import parse_pattern
from deminer.report import stix
from tests.report import outbreak_gen as ob


def _bundle(case: Case) -> dict[str, Any]:
    return stix.bundle(stix.collect_iocs(case))


def _by_type(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in doc["objects"] if o["type"] == kind]


def test_indicators_cover_pools_c2_downloads_hashes_wallets_and_keys() -> None:
    with Case(None) as case:
        ob.build(case)
        found = {(i.kind, i.value): i for i in stix.collect_iocs(case)}
        doc = _bundle(case)
    patterns = {o["pattern"] for o in _by_type(doc, "indicator")}
    assert {
        f"[domain-name:value = '{ob.POOL}']",
        f"[ipv4-addr:value = '{ob.POOL_IPS[0]}']", f"[ipv4-addr:value = '{ob.POOL_IPS[1]}']",
        "[ipv4-addr:value = '185.112.156.27']",                 # Stratum peer seen only in flows
        f"[url:value = 'stratum+tcp://{ob.POOL}:3333']",
        f"[domain-name:value = '{ob.C2}']",
        f"[url:value = '{ob.PAYLOAD_URL}']", f"[ipv4-addr:value = '{ob.ATTACKER}']",
        f"[file:hashes.'SHA-256' = '{ob.MINER_SHA}']", f"[file:hashes.'SHA-256' = '{ob.DROPPER_SHA}']",
        f"[cryptocurrency-wallet:address = '{ob.WALLET}']",
        "[x-ssh-key:fingerprint = 'SHA256:Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg']",
    } == patterns
    pool = found[("domain", ob.POOL)]
    assert pool.role == "pool" and "web-01" in pool.hosts
    assert pool.first_seen == ob.T0 + dt.timedelta(minutes=19)
    assert found[("ip", ob.POOL_IPS[0])].details >= {f"resolved from {ob.POOL}"}
    assert found[("domain", ob.C2)].role == "c2" and found[("domain", ob.C2)].families == {"DTLMiner"}
    assert found[("sha256", ob.MINER_SHA)].hosts >= {"web-01", "app-03", ob.HOSTILE_HOST}
    assert found[("sha256", ob.MINER_SHA)].details == {"/tmp/.x/kworkerds"}
    assert found[("ssh_key", "SHA256:Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg")].families == {"Outlaw"}
    # Internal addresses in lateral-movement evidence are not indicators.
    assert not any(k == "ip" and v.startswith("10.") for k, v in found)


def test_malware_infrastructure_and_relationships() -> None:
    with Case(None) as case:
        ob.build(case)
        doc = _bundle(case)
    ids = {o["id"]: o for o in doc["objects"]}
    malware = {o["name"]: o for o in _by_type(doc, "malware")}
    assert set(malware) == {"DTLMiner", "Outlaw"} and malware["DTLMiner"]["is_family"] is True
    infra = {o["name"]: o for o in _by_type(doc, "infrastructure")}
    assert infra[f"Mining pool {ob.POOL}"]["infrastructure_types"] == ["undefined"]
    assert infra[f"Command and control {ob.C2}"]["infrastructure_types"] == ["command-and-control"]
    rels = {(ids[r["source_ref"]].get("name"), r["relationship_type"], ids[r["target_ref"]].get("name"))
            for r in _by_type(doc, "relationship")}
    assert (f"Command and control domain {ob.C2}", "indicates", "DTLMiner") in rels
    assert ("DTLMiner", "uses", f"Command and control {ob.C2}") in rels
    assert (f"Mining pool domain {ob.POOL}", "indicates", f"Mining pool {ob.POOL}") in rels
    assert all(r["source_ref"] in ids and r["target_ref"] in ids for r in _by_type(doc, "relationship"))


def test_bundle_is_valid_stix_2_1() -> None:
    validator = pytest.importorskip("stix2validator", reason="stix2-validator (test extra) not installed")
    with Case(None) as case:
        ob.build(case)
        doc = _bundle(case)
    # Every SHOULD is enforced except "SDO ids SHOULD be UUIDv4": ours are uuid5 on purpose, so
    # runs over the same evidence compare.
    options = validator.ValidationOptions(version="2.1", strict=True, disabled=["uuid-check"])
    result = validator.validate_string(json.dumps(doc), options)
    problems = [str(e) for e in (*result.errors, *result.warnings)]
    assert result.is_valid, problems


def test_ids_are_stable_across_runs_and_cases() -> None:
    docs = []
    for _ in range(2):
        with Case(None) as case:
            ob.build(case)
            docs.append(json.dumps(_bundle(case), sort_keys=True))
    assert docs[0] == docs[1]
    doc = json.loads(docs[0])
    assert len({o["id"] for o in doc["objects"]}) == len(doc["objects"])
    ind = next(o for o in _by_type(doc, "indicator") if o["pattern"] == f"[domain-name:value = '{ob.POOL}']")
    assert ind["id"] == stix._sid("indicator", "domain", ob.POOL)
    assert ind["valid_from"] == ind["created"] == "2024-03-01T08:31:05.000Z"


def test_bundle_reads_back_through_the_ioc_loader(tmp_path: Path) -> None:
    with Case(None) as case:
        ob.build(case)
        path = tmp_path / "iocs.stix.json"
        path.write_text(json.dumps(_bundle(case)), encoding="utf-8")
    read = ioc_loader.read_iocs(path)
    rows = {(r["kind"], r["value"]): r for r in read.rows}
    assert ("domain", ob.POOL) in rows and ("ip", ob.POOL_IPS[0]) in rows
    assert ("url", ob.PAYLOAD_URL) in rows and ("sha256", ob.DROPPER_SHA) in rows
    assert rows[("domain", ob.C2)]["family"] == "DTLMiner"
    # Only the two custom observable types (wallet, SSH key) are beyond what --ioc loads.
    assert len(read.problems) == 2
    assert all("cryptocurrency-wallet" in p.detail or "x-ssh-key" in p.detail for p in read.problems)


def test_patterns_escape_quotes_and_backslashes() -> None:
    url = "http://198.51.100.7/a'b\\c.sh"
    ioc = stix.Ioc("url", url, "download")
    [comparison] = parse_pattern(stix.pattern(ioc))
    assert comparison.values[0].value == url


def test_bad_evidence_never_becomes_an_indicator() -> None:
    ts = dt.datetime(2024, 5, 1)
    hostile = "pool.evil\x1b[31m.com"
    with Case(None) as case:
        case.add("findings", [
            {"id": "broken", "rule": "impact.net_stratum_session", "severity": "critical", "host": "h",
             "ts": ts, "evidence": "{not json"},
            {"id": "list", "rule": "impact.net_stratum_session", "severity": "critical", "host": "h",
             "ts": ts, "evidence": "[1, 2]"},
            Finding("impact.net_stratum_session", "s", "critical", ("T1496",), "h", ts, "e", "s", {
                "destination.ip": "999.1.1.1", "destination.domain": hostile, "wallet": "x",
                "login": "'; DROP TABLE", "sha256": "nothex", "cmdline": "A" * 1_000_000,
                "raddr": "127.0.0.1:3333 0.0.0.0:80 [2001:db8::7]:3333"}).row(),
            Finding("initial_access.ssh_brute_force_success", "b", "critical", ("T1110",), "h", ts, "e",
                    "s", {"source.ip": "10.1.2.3"}).row(),
            Finding("initial_access.ssh_brute_force_success", "b", "critical", ("T1110",), "h2", ts, "e",
                    "s", {"source.ip": "8.8.4.4"}).row(),
        ])
        found = {(i.kind, i.value): i for i in stix.collect_iocs(case)}
    assert set(found) == {("ip", "2001:db8::7"), ("ip", "8.8.4.4")}
    assert found[("ip", "8.8.4.4")].role == "attacker"
