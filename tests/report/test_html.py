"""report.html: what it says, that hostile evidence stays text, caps, and speed at fleet size."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.report import html
from deminer.report.exports import EdgeView, HostView, load_edges, load_hosts
from deminer.report.graph_svg import host_anchor, render_graph
from deminer.report.stix import Ioc, collect_iocs
from deminer.report.write import write_report
from deminer.textsafe import clean
from tests.report import outbreak_gen as ob
from tests.report.dom import Node, parse

FORBIDDEN_TAGS = {"img", "iframe", "object", "embed", "link", "base", "frame", "audio", "video", "source",
                  "textarea", "form-injected"}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Node]:
    out = tmp_path_factory.mktemp("report")
    with Case(out / "case") as case:
        ob.build(case)
        files = write_report(case, out / "out")
    text = files["report.html"].read_text(encoding="utf-8")
    return text, parse(text)


def assert_inert(doc: Node) -> None:
    """Nothing from evidence became markup: only our one script and style, no handlers,
    no loadable resources, links only inside the page."""
    tags = [n.tag for n in doc.iter()]
    assert tags.count("script") == 1 and tags.count("style") == 1
    assert not FORBIDDEN_TAGS & set(tags)
    for n in doc.iter():
        assert not [a for a in n.attrs if a.startswith("on")], (n.tag, n.attrs)
        for attr in ("href", "src", "xlink:href", "action"):
            value = n.attrs.get(attr)
            assert value is None or value.startswith("#"), (n.tag, attr, value)
    assert len(doc.find_all("svg")) == 1


def test_hostile_evidence_stays_text(page: tuple[str, Node]) -> None:
    text, doc = page
    assert_inert(doc)
    shown = doc.text()
    assert "evil<script>alert(1)</script>\"onload=alert(2)" in shown      # readable, not run
    assert "<img src=x onerror=alert(3)>" in shown and "</textarea><iframe" in shown
    # Control and bidi characters are shown as escapes, never raw.
    assert "\u202e" not in text and "\x1b" not in text and "\x07" not in text
    assert "\\u202egnp.exe\\x1b[31m" in shown
    # The page's one style block is the stylesheet, intact (no "</style>" from evidence ended it).
    css = (html.TEMPLATES / "report.css").read_text(encoding="utf-8")
    [style] = doc.find_all("style")
    assert style.text() == css


def test_csp_pins_inline_code_and_forbids_everything_else(page: tuple[str, Node]) -> None:
    _, doc = page
    meta = next(n for n in doc.find_all("meta") if n.attrs.get("http-equiv") == "Content-Security-Policy")
    policy = meta.attrs["content"] or ""
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    for tag in ("style", "script"):
        body = doc.find_all(tag)[0].text()
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


def test_summary_names_patient_zero_entry_vector_and_span(page: tuple[str, Node]) -> None:
    _, doc = page
    summary = doc.by_id("summary")
    assert summary is not None
    cards = {c.text().lstrip("0123456789"): c.find_all("b")[0].text()
             for c in summary.find_all("div", "card")}
    assert cards == {"infected": "7", "suspicious": "1", "clean": "1", "unknown": "1", "infection edges": "6"}
    pz = summary.find_all("div", "pz-box")[0].text()
    assert "Patient zero: web-01" in pz and "web upload exploit (T1190)" in pz
    assert "exploit request from 45.227.254.8" in pz
    # The finding the reason cites links to it.
    [cited] = [a for a in summary.find_all("div", "pz-box")[0].find_all("a") if a.attrs["href"] != "#" +
               host_anchor("web-01")]
    target = doc.by_id((cited.attrs["href"] or "#")[1:])
    assert target is not None and "Exploit request" in target.text()
    assert "2024-03-01 08:12:05 to 2024-03-01 13:12:05 UTC" in summary.text()


def test_graph_draws_hosts_by_verdict_and_labelled_edges(page: tuple[str, Node]) -> None:
    _, doc = page
    [svg] = doc.find_all("svg")
    nodes = {n.attrs["data-host"]: n for n in svg.find_all("a", "node")}
    assert set(nodes) == {"web-01", "ansible-01", "app-01", "app-02", "app-03", "win-fs-01",
                          clean(ob.HOSTILE_HOST), "db-01"}
    assert "patient-zero" in nodes["web-01"].classes and "infected" in nodes["web-01"].classes
    assert "suspicious" in nodes["db-01"].classes
    assert nodes["app-01"].attrs["href"] == "#" + host_anchor("app-01")
    edges = [(e.attrs["data-src"], e.attrs["data-dst"], e.find_all("text", "elabel")[0].text())
             for e in svg.find_all("g", "edge")]
    assert ("web-01", "ansible-01", "ssh_key \u00b7 03-01 09:12") in edges
    assert ("app-01", "win-fs-01", "eternalblue \u00b7 03-01 11:27") in edges
    assert len(edges) == 6
    assert {tuple(sorted(b.classes)) for b in svg.find_all("g", "summary-box")} == {
        ("clean", "summary-box"), ("summary-box", "unknown")}
    # Patient zero is in the leftmost column; each edge runs left to right.
    x = {h: int(n.find_all("rect")[0].attrs["x"] or 0) for h, n in nodes.items()}
    assert x["web-01"] == min(x.values()) and x["web-01"] < x["ansible-01"] < x["app-02"]


def test_graph_layout_handles_skew_loops_and_parallel_edges() -> None:
    t = dt.datetime(2024, 1, 1)
    hour = dt.timedelta(hours=1)
    hosts = [HostView("a", "infected", t, patient_zero=True), HostView("b", "infected", t + hour),
             HostView("c", "suspicious", None), HostView("d", "clean"), HostView("e", "suspicious")]
    edges = [EdgeView("a", "b", "smb", t + hour), EdgeView("a", "b", "wmi", t + hour),
             EdgeView("c", "c", "cron", t),          # a host re-infecting itself, before it was reached
             EdgeView("b", "c", "ssh", t + 2 * hour),
             EdgeView("b", "a", "ssh", t + 3 * hour)]  # against the infection order (clock skew)
    svg = parse(render_graph(hosts, edges)).find_all("svg")[0]
    x = {n.attrs["data-host"]: int(n.find_all("rect")[0].attrs["x"] or 0) for n in svg.find_all("a", "node")}
    assert x["a"] < x["b"] < x["c"]                    # the backward edge does not move layers
    # A suspicious host on no edge is no entry point: it stands apart, under the layers.
    y = {n.attrs["data-host"]: int(n.find_all("rect")[0].attrs["y"] or 0) for n in svg.find_all("a", "node")}
    assert y["e"] > max(y[h] for h in "abc")
    assert [t.text() for t in svg.find_all("text", "layer")] == [
        "first", "step 1", "step 2", "not linked to the outbreak"]
    drawn = {(g.attrs["data-src"], g.attrs["data-dst"], g.attrs["data-technique"]): g
             for g in svg.find_all("g", "edge")}
    assert "back" in drawn[("b", "a", "ssh")].classes and "back" not in drawn[("a", "b", "smb")].classes
    assert "back" in drawn[("c", "c", "cron")].classes
    ys = [int(drawn[("a", "b", t)].find_all("text")[0].attrs["y"] or 0) for t in ("smb", "wmi")]
    assert ys[0] - ys[1] == 13                          # parallel labels stacked, not on top of each other
    [box] = svg.find_all("g", "summary-box")
    assert box.attrs["data-count"] == "1" and "clean" in box.classes
    assert int(svg.attrs["width"] or 0) >= int(box.find_all("rect")[0].attrs["width"] or 0)


def test_host_sections_show_verdict_evidence_and_links(page: tuple[str, Node]) -> None:
    _, doc = page
    app = doc.by_id(host_anchor("app-01"))
    assert app is not None and app.tag == "details"
    text = app.text()
    assert "miner pushed by Ansible" in text and "2024-03-01 09:57:05 UTC" in text
    assert "Infected by" in text and "ansible-01 via ansible" in text and "win-fs-01 via eternalblue" in text
    # Findings grouped by severity, most severe first, with evidence excerpts (file, line, pid, IP).
    heads = [h.text() for h in app.find_all("h3")]
    assert heads == ["CRITICAL (1)", "HIGH (2)", "MEDIUM (1)"]
    assert "location: /var/spool/cron/crontabs/root" in text and "line: 3" in text
    assert "pid: 4244" in text and "source.ip: 10.0.0.12" in text and "records: 4" in text
    # The verdict's first finding links to that finding, shown in the same section.
    web = doc.by_id(host_anchor("web-01"))
    assert web is not None
    dl = web.find_all("dl")[0]
    facts = dict(zip((d.text() for d in dl.find_all("dt")), dl.find_all("dd"), strict=True))
    [link] = facts["First finding"].find_all("a")
    target = doc.by_id((link.attrs["href"] or "#")[1:])
    assert target is not None and "Exploit request" in target.text() and target.tag == "li"
    printer = doc.by_id(host_anchor("printer-01"))
    assert printer is not None and "no logs" in printer.text() and "Missing evidence" in printer.text()
    mail = doc.by_id(host_anchor("mail-01"))
    assert mail is not None and mail.tag == "tr"          # clean, nothing to say: compact table


def test_timeline_lists_findings_and_spread_in_time_order(page: tuple[str, Node]) -> None:
    _, doc = page
    tl = doc.by_id("timeline")
    assert tl is not None
    rows = tl.find_all("tbody")[0].find_all("tr")
    assert len(rows) == 25
    stamps = [r.find_all("td")[0].text() for r in rows]
    assert stamps == sorted(stamps)
    spread = [r for r in rows if "spread" in r.classes]
    assert len(spread) == 6 and "web-01 \u2192 ansible-01: ssh_key" in spread[0].text()
    assert all(re.fullmatch(r"host-[0-9a-f]{12}", r.attrs["data-host"] or "") for r in rows)
    form = doc.by_id("tl-filter")
    assert form is not None and "hidden" in form.attrs        # shown by the script only


def test_iocs_and_recommendations_follow_the_findings(page: tuple[str, Node]) -> None:
    _, doc = page
    iocs = doc.by_id("iocs")
    assert iocs is not None
    text = iocs.text()
    assert ob.POOL in text and ob.C2 in text and ob.WALLET in text and ob.MINER_SHA in text
    assert "SHA256:Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg" in text
    recs = {n.attrs["id"]: n.text() for n in doc.find_all("div", "rec")}
    assert set(recs) == {"rec-block_pools", "rec-remove_persistence", "rec-patch_ms17_010", "rec-close_ports",
                         "rec-unique_passwords", "rec-no_stored_keys", "rec-isolate_orchestration",
                         "rec-egress_allowlist", "rec-patch_web"}
    assert ob.POOL in recs["rec-block_pools"] and ob.C2 in recs["rec-block_pools"]
    assert "win-fs-01 at risk: no MS17-010 update among 12 installed updates" in recs["rec-patch_ms17_010"]
    assert "win-fs-01 at risk: reachable from infected app-01 on port 139,445" in recs["rec-close_ports"]
    assert "web-01: Unencrypted SSH private key" in recs["rec-no_stored_keys"]
    assert "ansible-01: Orchestration configuration" in recs["rec-isolate_orchestration"]
    persistence = recs["rec-remove_persistence"]
    assert "/var/spool/cron/crontabs/root" in persistence and "/root/.ssh/authorized_keys" in persistence
    assert "db-01 at risk: has account root, guessed on infected web-01" in recs["rec-unique_passwords"]
    assert "spread app-02 \u2192" in recs["rec-unique_passwords"]           # ssh with a reused password


def test_usb_entry_and_no_findings_cases() -> None:
    with Case(None) as case:
        case.add("host_verdicts", [{"host": "teacher-pc", "verdict": "infected", "patient_zero": True,
                                    "entry_vector": "USB stick (WannaMine)", "reason": "earliest LastBackup",
                                    "infected_at": dt.datetime(2023, 5, 2, 9)}])
        doc = parse(html.render(case, *_loaded(case)))
    assert_inert(doc)
    recs = {n.attrs["id"] for n in doc.find_all("div", "rec")}
    assert recs == {"rec-usb_control"}
    with Case(None) as case:
        doc = parse(html.render(case, *_loaded(case)))
    assert "nothing to draw" in doc.text() and "No indicators found" in doc.text()
    assert "Nothing found that calls for a specific recommendation" in doc.text()
    assert "correlation has not run" in doc.text()


def _loaded(case: Case) -> tuple[list[HostView], list[EdgeView], list[Ioc]]:
    return load_hosts(case), load_edges(case), collect_iocs(case)


def test_caps_say_where_the_rest_is() -> None:
    ts = dt.datetime(2024, 5, 1)
    huge = "x" * 1_000_000
    with Case(None) as case:
        case.add("findings", [Finding(
            "impact.cpu_hog", "Hog", "low", ("T1496",), "busy", ts + dt.timedelta(seconds=i), f"pid {i}",
            huge if i == 0 else "s", {"pid": i, "cmdline": huge if i < 3 else "x"}).row()
            for i in range(300)])
        case.add("findings", [{"id": "bad", "rule": "r.x", "title": "t", "severity": "weird", "host": "busy",
                               "ts": ts, "evidence": "{not json"}])
        text = html.render(case, *_loaded(case), limits=html.Limits(findings_per_host=5, timeline=50))
    doc = parse(text)
    assert len(text) < 400_000                     # a megabyte line is cut, not copied
    busy = doc.by_id(host_anchor("busy"))
    assert busy is not None and "296 more findings for this host are in findings.jsonl" in busy.text()
    assert "Showing 50 of 301 entries, the most severe (findings of severity low and above)" in doc.text()


def test_fleet_of_1000_hosts_and_100k_findings_renders_in_seconds(tmp_path: Path) -> None:
    t0 = dt.datetime(2024, 3, 1)
    hosts = [f"host-{i:04d}" for i in range(1000)]
    sev = ("info", "low", "medium", "high", "critical")
    pools = [f"5.6.7.{i}" for i in range(20)]
    with Case(None) as case:
        case.add("hosts", [{"host": h, "ips": [f"10.{i // 250}.{i % 250}.1"]} for i, h in enumerate(hosts)])
        case.add("findings", [{
            "id": f"{n:016x}", "rule": "impact.miner_process", "title": "Miner", "severity": sev[n % 5],
            "attack": ["T1496"], "host": hosts[n % 1000], "ts": t0 + dt.timedelta(seconds=n),
            "entity": f"pid {n}", "summary": "miner",
            "evidence": json.dumps({"pid": n, "raddr": f"{pools[n % 20]}:3333"})}
            for n in range(100_000)])
        case.add("host_verdicts", [
            {"host": h, "verdict": "infected" if i < 400 else "clean" if i < 900 else "unknown",
             "patient_zero": i == 0, "infected_at": t0 + dt.timedelta(minutes=i) if i < 400 else None}
            for i, h in enumerate(hosts)])
        case.add("infection_edges", [
            {"src_host": hosts[(i - 1) // 3], "dst_host": hosts[i], "technique": "smb",
             "ts": t0 + dt.timedelta(minutes=i)} for i in range(1, 400)])
        case.flush()
        start = time.perf_counter()
        files = write_report(case, tmp_path)
        took = time.perf_counter() - start
    assert took < 20, took                          # about 3 s here; generous for slow CI machines
    text = files["report.html"].read_text(encoding="utf-8")
    assert len(text) < 6_000_000
    doc = parse(text)
    [svg] = doc.find_all("svg")
    assert len(svg.find_all("a", "node")) == 150
    more = svg.find_all("g", "more")[0]
    assert more.attrs["data-count"] == "250"
    assert {b.attrs["data-count"] for b in svg.find_all("g", "summary-box")} == {"500", "100"}
    assert len(doc.by_id("timeline").find_all("tr")) == 1001            # type: ignore[union-attr]
    assert "more hosts with findings are listed below" in doc.text()
    with files["findings.jsonl"].open(encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 100_000
    assert re.search(r'<tr id="host-[0-9a-f]{12}"><td>host-0999</td>', text)
