"""Write a SigmaHQ-sized set of Sigma rules for benchmarks (no SigmaHQ checkout offline).

The rules have the shapes that dominate SigmaHQ's Windows rules: process creation with
``Image|endswith`` + ``CommandLine|contains`` (lists, ``|all``), parent/child pairs,
``filter`` sections, PowerShell script blocks, Security event ids with logon types and
account names, registry ``TargetObject``, file ``TargetFilename``, network ports, DNS queries
and services. Values are drawn from a vocabulary of real tool and path names so some rules
fire on the public attack logs and most do not, as with a real checkout.

    python bench/sigma_synth.py OUT_DIR --rules 2400 [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import uuid
from pathlib import Path

import yaml

IMAGES = ["\\powershell.exe", "\\cmd.exe", "\\rundll32.exe", "\\regsvr32.exe", "\\mshta.exe",
          "\\wmic.exe", "\\schtasks.exe", "\\sc.exe", "\\net.exe", "\\net1.exe", "\\certutil.exe",
          "\\bitsadmin.exe", "\\cscript.exe", "\\wscript.exe", "\\msiexec.exe", "\\reg.exe",
          "\\vssadmin.exe", "\\bcdedit.exe", "\\wevtutil.exe", "\\psexesvc.exe", "\\whoami.exe",
          "\\xmrig.exe", "\\procdump.exe", "\\mimikatz.exe", "\\taskkill.exe", "\\netsh.exe"]
WORDS = ["-enc", "-nop", "hidden", "downloadstring", "iex", "invoke-expression", "bypass",
         "frombase64string", "/create", "/delete", "shadowcopy", "delete", "-urlcache",
         "/transfer", "javascript:", "vbscript:", "scrobj.dll", "/i:http", "process call create",
         "sekurlsa::", "lsadump::", "privilege::debug", "stratum+tcp://", "--donate-level",
         "pool.minexmr", "firewall add", "advfirewall", "clear-log", "cl security", "add-mppreference",
         "exclusionpath", "set-mppreference", "disablerealtimemonitoring", "comsvcs.dll",
         "minidump", "localgroup administrators", "user /add", "\\\\127.0.0.1\\admin$",
         "-decode", "webclient", "invoke-webrequest", "start-bitstransfer", "new-object",
         "/sc minute", "/ru system", "config set dir", "wmiprvse", "add-type", "reflection.assembly"]
KEYS = ["\\CurrentVersion\\Run\\", "\\CurrentVersion\\RunOnce\\", "\\Services\\", "\\Winlogon\\Shell",
        "\\Image File Execution Options\\", "\\Windows Defender\\Exclusions\\", "\\Lsa\\",
        "\\Policies\\Microsoft\\Windows Defender\\", "\\Environment\\UserInitMprLogonScript"]
FILES = ["\\Temp\\", "\\AppData\\Local\\Temp\\", "\\Windows\\Tasks\\", "\\ProgramData\\",
         ".ps1", ".vbs", ".hta", ".bat", ".dll", "\\Startup\\", "mkatz.ini", "\\NetworkDistribution\\"]
DOMAINS = ["minexmr.com", "nanopool.org", "supportxmr.com", "pastebin.com", "ngrok.io",
           "transfer.sh", "raw.githubusercontent.com", "c3pool.com", "2miners.com", "f2pool.com"]
PORTS = [3333, 4444, 5555, 7777, 14444, 45560, 445, 3389]
ACCOUNTS = ["administrator", "admin", "guest", "test", "user", "sql", "backup", "support"]


def _pick(rng: random.Random, items: list[str], low: int = 1, high: int = 4) -> list[str]:
    return rng.sample(items, rng.randint(low, min(high, len(items))))


def _detection(rng: random.Random, shape: int) -> tuple[dict[str, object], dict[str, object]]:
    """(logsource, detection) of one rule of the given shape."""
    if shape == 0:
        det: dict[str, object] = {"selection": {"Image|endswith": _pick(rng, IMAGES),
                                                "CommandLine|contains": _pick(rng, WORDS)},
                                  "condition": "selection"}
        if rng.random() < 0.4:
            det["filter"] = {"ParentImage|endswith": rng.choice(IMAGES)}
            det["condition"] = "selection and not filter"
        return {"category": "process_creation", "product": "windows"}, det
    if shape == 1:
        return ({"category": "process_creation", "product": "windows"},
                {"selection": {"CommandLine|contains|all": _pick(rng, WORDS, 2, 3)},
                 "condition": "selection"})
    if shape == 2:
        return ({"category": "process_creation", "product": "windows"},
                {"parent": {"ParentImage|endswith": _pick(rng, IMAGES)},
                 "child": {"Image|endswith": _pick(rng, IMAGES)}, "condition": "parent and child"})
    if shape == 3:
        return ({"product": "windows", "category": "ps_script"},
                {"selection": {"ScriptBlockText|contains": _pick(rng, WORDS)}, "condition": "selection"})
    if shape == 4:
        sel: dict[str, object] = {"EventID": rng.choice([4624, 4625, 4648, 4672, 4720, 4732]),
                                  "TargetUserName": _pick(rng, ACCOUNTS)}
        if rng.random() < 0.5:
            sel["LogonType"] = rng.choice([3, 10, 2])
        return {"product": "windows", "service": "security"}, {"selection": sel, "condition": "selection"}
    if shape == 5:
        return ({"product": "windows", "category": "registry_set"},
                {"selection": {"TargetObject|contains": _pick(rng, KEYS, 1, 2),
                               "Details|contains": _pick(rng, WORDS, 1, 2)}, "condition": "selection"})
    if shape == 6:
        return ({"product": "windows", "category": "file_event"},
                {"selection": {"TargetFilename|contains": _pick(rng, FILES, 1, 2),
                               "Image|endswith": _pick(rng, IMAGES)}, "condition": "selection"})
    if shape == 7:
        return ({"product": "windows", "category": "network_connection"},
                {"selection": {"DestinationPort": rng.sample(PORTS, 2),
                               "Image|endswith": _pick(rng, IMAGES)}, "condition": "selection"})
    if shape == 8:
        return ({"product": "windows", "category": "dns_query"},
                {"selection": {"QueryName|endswith": _pick(rng, DOMAINS)}, "condition": "selection"})
    return ({"product": "windows", "service": "system"},
            {"selection": {"EventID": 7045, "ImagePath|contains": _pick(rng, WORDS + FILES)},
             "condition": "selection"})


def write_rules(out: Path, count: int, seed: int = 1) -> list[Path]:
    """Write ``count`` rule files into ``out``; returns their paths."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape = rng.choices(range(10), weights=[30, 10, 8, 10, 8, 10, 8, 5, 5, 6])[0]
        logsource, detection = _detection(rng, shape)
        rule = {"title": f"Synthetic rule {i} shape {shape}", "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "status": "test", "logsource": logsource, "detection": detection,
                "tags": ["attack.execution", "attack.t1059"], "level": rng.choice(["low", "medium", "high"])}
        path = out / f"synthetic_{i:05d}.yml"
        path.write_text(yaml.safe_dump(rule, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rules", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{len(write_rules(args.out, args.rules, args.seed))} rules in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
