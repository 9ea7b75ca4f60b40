"""hosts.jsonl and graph.json: every host and edge, with verdicts, deterministic, hostile-safe."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.report import exports
from deminer.report.write import write_report
from tests.report import outbreak_gen as ob


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_hosts_jsonl_has_every_host_with_its_verdict(tmp_path: Path) -> None:
    with Case(tmp_path / "case") as case:
        built = ob.build(case)
        out = write_report(case, tmp_path / "out")
    rows = {str(r["host"]): r for r in _lines(out["hosts.jsonl"])}
    assert set(rows) == set(built.hosts) and len(rows) == 10
    web = rows["web-01"]
    assert web["verdict"] == "infected" and web["patient_zero"] is True
    assert web["infected_at"] == "2024-03-01T08:12:05Z"
    assert web["entry_vector"] == "web upload exploit (T1190)"
    assert web["findings"] == {"critical": 2, "high": 2, "medium": 1} and web["findings_total"] == 5
    assert web["ips"] == ["10.0.0.10"] and web["correlated"] is True
    # missing / at_risk stored as JSON text by correlate come out as lists.
    assert rows["printer-01"]["missing"] == ["no logs", "no process list"]
    assert rows["win-fs-01"]["at_risk"] == ["no MS17-010 update among 12 installed updates",
                                            "reachable from infected app-01 on port 139,445"]
    assert rows["mail-01"]["verdict"] == "clean" and rows["db-01"]["verdict"] == "suspicious"
    assert rows[ob.HOSTILE_HOST]["verdict"] == "infected"
    # Control and bidi characters are \\u escapes in the file, never raw bytes.
    raw = out["hosts.jsonl"].read_bytes()
    assert b"\x1b" not in raw and "\u202e".encode() not in raw and b"\\u202e" in raw
    assert [r["host"] for r in _lines(out["hosts.jsonl"])] == sorted(rows)


def test_graph_json_holds_nodes_and_edges_with_their_evidence(tmp_path: Path) -> None:
    with Case(tmp_path / "case") as case:
        built = ob.build(case)
        out = write_report(case, tmp_path / "out")
    doc = json.loads(out["graph.json"].read_text(encoding="utf-8"))
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert len(nodes) == 10
    assert nodes["web-01"]["patient_zero"] is True and nodes["web-01"]["verdict"] == "infected"
    assert nodes["app-03"]["infected_at"] == "2024-03-01T11:17:05Z"
    assert nodes["printer-01"]["verdict"] == "unknown" and nodes["printer-01"]["infected_at"] is None
    edges = doc["edges"]
    assert [(e["source"], e["target"], e["technique"]) for e in edges][:2] == [
        ("web-01", "ansible-01", "ssh_key"), ("ansible-01", "app-01", "ansible")]
    key = next(f for f in built.findings if f.rule == "lateral_movement.stored_private_key")
    first = edges[0]
    assert first["findings"] == [key.id] and first["ts"] == "2024-03-01T09:12:05Z"
    assert first["reason"] == "web-01's /root/.ssh/id_rsa opens ansible-01"
    assert first["attack"] == ["T1021.004"] and first["confidence"] == "high"
    assert {e["target"] for e in edges} >= {ob.HOSTILE_HOST, "win-fs-01"}


def test_exports_are_deterministic(tmp_path: Path) -> None:
    outs = []
    for n in range(2):
        with Case(tmp_path / f"case{n}") as case:
            ob.build(case)
            outs.append(write_report(case, tmp_path / f"out{n}"))
    for name in ("hosts.jsonl", "graph.json", "findings.jsonl", "iocs.stix.json"):
        assert outs[0][name].read_bytes() == outs[1][name].read_bytes(), name


def test_without_correlation_hosts_come_from_findings_and_edges() -> None:
    with Case(None) as case:
        ts = dt.datetime(2024, 5, 1, 10)
        case.add("findings", [
            Finding("impact.miner_process", "Miner", "critical", ("T1496",), "srv-1", ts, "pid 1", "x").row(),
            Finding("credential_access.ssh_brute_force", "Guessing", "medium", ("T1110",), "srv-2", ts,
                    "1.2.3.4", "y").row()])
        hosts = {h.host: h for h in exports.load_hosts(case)}
        assert hosts["srv-1"].verdict == "suspicious" and not hosts["srv-1"].correlated
        assert "critical" in (hosts["srv-1"].reason or "")
        assert hosts["srv-2"].verdict == "unknown"
        # An edge end that is no known host (an outside attacker) still becomes a node.
        case.add("infection_edges", [{"src_host": "203.0.113.9", "dst_host": "srv-1", "technique": "ssh",
                                      "ts": ts}])
        case.add("host_verdicts", [{"host": "srv-1", "verdict": "pwned", "reason": "odd"}])
        hosts = {h.host: h for h in exports.load_hosts(case)}
    assert hosts["203.0.113.9"].verdict == "unknown"
    assert hosts["203.0.113.9"].reason == "correlate gave no verdict for this host"
    # A verdict outside the vocabulary is shown as unknown and says what it was.
    assert hosts["srv-1"].verdict == "unknown" and "'pwned'" in (hosts["srv-1"].reason or "")


def test_text_list_reads_json_lists_and_plain_text() -> None:
    assert exports.text_list('["a", "b", null]') == ("a", "b")
    assert exports.text_list("no logs collected") == ("no logs collected",)
    assert exports.text_list("no auth log; no process list") == ("no auth log", "no process list")
    assert exports.text_list("[broken") == ("[broken",)
    assert exports.text_list(None) == () and exports.text_list("") == ()


def test_timeline_keeps_the_most_severe_when_capped() -> None:
    ts = dt.datetime(2024, 5, 1)
    with Case(None) as case:
        case.add("findings", [Finding("r.info", "i", "info", (), "h", ts + dt.timedelta(minutes=i), f"e{i}",
                                      "s").row() for i in range(50)]
                 + [Finding("r.high", "x", "high", (), "h", ts + dt.timedelta(minutes=99 - i), f"h{i}",
                            "s").row() for i in range(5)])
        edges = [exports.EdgeView("a", "h", "ssh", ts + dt.timedelta(minutes=30))]
        full = exports.timeline(case, edges, cap=100)
        capped = exports.timeline(case, edges, cap=10)
    assert len(full.entries) == 56 and full.min_severity == "info" and full.total == 56
    # 10 entries: the edge, the five high findings, then the four earliest info ones.
    assert len(capped.entries) == 10 and capped.min_severity == "info" and capped.total == 56
    assert [e.severity for e in capped.entries].count("high") == 6   # five findings + the edge
    assert [e.ts for e in capped.entries if e.severity == "info"] == [
        ts + dt.timedelta(minutes=i) for i in range(4)]
    stamps = [e.ts for e in capped.entries]
    assert stamps == sorted(stamps) and capped.entries[4].kind == "spread"


def test_a_file_that_cannot_be_written_is_named_and_the_rest_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "graph.json").mkdir(parents=True)           # something in the way of one output
    with Case(tmp_path / "case") as case:
        ob.build(case)
        files = write_report(case, out)
        errors = case.query("SELECT source, message, stage FROM errors WHERE stage = 'report'")
    assert set(files) == {"report.html", "findings.jsonl", "hosts.jsonl", "iocs.stix.json"}
    assert len(errors) == 1 and errors[0]["source"] == str(out / "graph.json")
    assert "could not write graph.json" in errors[0]["message"]
    page = files["report.html"].read_text(encoding="utf-8")
    assert "could not write graph.json" in page and not (out / "graph.json.tmp").exists()
