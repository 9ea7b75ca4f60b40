"""report.html in a real browser: headless Chromium renders it, runs only our script, asks the
network for nothing, and the DOM it builds holds the graph and no injected element.

Chromium's traffic goes to a recording proxy on 127.0.0.1, so nothing leaves the machine and
every request the page makes is seen (a canary page proves the proxy sees page requests).
Chromium's own background calls to its vendor's services are told apart by host name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deminer.case import Case
from deminer.report.graph_svg import host_anchor
from deminer.report.write import write_report
from deminer.textsafe import clean
from tests.report import outbreak_gen as ob
from tests.report.dom import Node, parse
from tests.report.test_html import assert_inert

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (`make sysdeps` installs it as root)")
# Chromium's own update, time and sign-in services: not requests of the page.
_BROWSER_OWN = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)$")


class _Proxy:
    """Accepts connections on 127.0.0.1, records each request's target host, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hosts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(4096).decode("latin-1")
                except OSError:
                    continue
                m = re.match(r"[A-Z]+ (?:[a-z]+://)?([^/:\s]+)", head)
                if m:
                    self.hosts.append(m.group(1).lower())

    def page_requests(self) -> list[str]:
        return [h for h in self.hosts if not _BROWSER_OWN.search(h)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    p = _Proxy()
    yield p
    p.close()


def _chromium(proxy: _Proxy, profile: Path, *args: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           f"--proxy-server=http://127.0.0.1:{proxy.port}", *args]
    # Its own session, so the browser and every helper process it starts are stopped together.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)      # helpers still running after the browser quit
    assert proc.returncode == 0, proc.returncode
    return out.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    with Case(out / "case") as case:
        ob.build(case)
        return write_report(case, out / "out")["report.html"]


def _visible_rows(doc: Node) -> list[Node]:
    tl = doc.by_id("timeline")
    assert tl is not None
    return [r for r in tl.find_all("tbody")[0].find_all("tr") if "hidden" not in r.attrs]


def test_the_proxy_sees_what_a_page_requests(proxy: _Proxy, tmp_path: Path) -> None:
    canary = tmp_path / "canary.html"
    canary.write_text('<!DOCTYPE html><img src="http://canary.invalid/x.png"><p>hi</p>', encoding="utf-8")
    _chromium(proxy, tmp_path / "profile", "--dump-dom", canary.as_uri())
    assert "canary.invalid" in proxy.page_requests()


def test_rendered_dom_has_the_graph_and_nothing_injected(report: Path, proxy: _Proxy, tmp_path: Path) -> None:
    dom = _chromium(proxy, tmp_path / "profile", "--dump-dom", report.as_uri())
    doc = parse(dom)
    assert_inert(doc)
    [svg] = doc.find_all("svg")
    nodes = {n.attrs["data-host"]: n for n in svg.find_all("a", "node")}
    assert clean(ob.HOSTILE_HOST) in nodes and "patient-zero" in nodes["web-01"].classes
    labels = {e.find_all("text", "elabel")[0].text() for e in svg.find_all("g", "edge")}
    assert {"ssh_key \u00b7 03-01 09:12", "ansible \u00b7 03-01 09:52",
            "eternalblue \u00b7 03-01 11:27"} <= labels
    # Our script ran under the page's CSP: the filter form is shown and counted the rows.
    form = doc.by_id("tl-filter")
    assert form is not None and "hidden" not in form.attrs
    count = doc.by_id("tl-count")
    assert count is not None and count.text() == "25 shown"
    assert "evil<script>alert(1)</script>" in doc.text()
    assert proxy.page_requests() == []


def test_csp_stops_markup_that_escaping_would_have_missed(report: Path, proxy: _Proxy,
                                                          tmp_path: Path) -> None:
    # Defence in depth: plant what an escaping bug would let through, in a copy of the page.
    page = report.read_text(encoding="utf-8").replace(
        "<main>", '<main><script>document.title = "PWNED"</script>'
                  '<img src="http://canary.invalid/pwn.png"><div style="background:url(http://canary.invalid/b)">'
                  "</div>", 1)
    planted = tmp_path / "planted.html"
    planted.write_text(page, encoding="utf-8")
    doc = parse(_chromium(proxy, tmp_path / "profile", "--dump-dom", planted.as_uri()))
    [title] = doc.find_all("title")[:1]
    assert title.text().startswith("deminer report")
    assert proxy.page_requests() == []
    count = doc.by_id("tl-count")
    assert count is not None and count.text() == "25 shown"     # our own script still ran


def test_timeline_filter_link_narrows_rows(report: Path, proxy: _Proxy, tmp_path: Path) -> None:
    url = f"{report.as_uri()}?host={host_anchor('app-01')}&sev=3"
    doc = parse(_chromium(proxy, tmp_path / "profile", "--dump-dom", url))
    rows = _visible_rows(doc)
    # app-01: the cron job and the EternalBlue traffic (high), the miner (critical), and the
    # Ansible push that reached it; its medium download is filtered out.
    assert len(rows) == 4
    assert {r.attrs["data-host"] for r in rows} == {host_anchor("app-01")}
    count = doc.by_id("tl-count")
    assert count is not None and count.text() == "4 shown"


def test_screenshot_renders_the_page(report: Path, proxy: _Proxy, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    _chromium(proxy, tmp_path / "profile", "--window-size=1400,2400", f"--screenshot={shot}",
              "--hide-scrollbars", report.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 2400)
    assert len(data) > 100_000          # a blank or error page compresses to a few kilobytes
    assert proxy.page_requests() == []
