"""What each finding says about a host's state: the signs verdicts are made of.

A finding becomes one or more ``Sign`` values, each about one host:

    compromise  the host is infected: a miner, pool traffic, malicious persistence, a
                malicious logon (brute force that succeeded, remote execution on it), an
                exploit that worked, a dropped malicious file
    indicator   suspicious but not proof: an exploit request the server accepted, a process
                in /tmp, beaconing, brute force *from* this host
    targeted    something was tried against the host and nothing says it worked: failed
                guessing, scanning, an EternalBlue probe, an exploit the server refused
    exposure    a way onward if the host falls: a stored private key, an orchestration config
    gap         the evidence itself is incomplete (``defense_evasion.evidence_*``)

Rules are classified by id below; a rule that is not listed (new rules, Sigma rules) counts
by its severity: high or critical is a compromise, medium an indicator, low and info nothing.
A brute-force success from an outside address that had logged in before its failures
(``logins_before_burst``) is only an indicator: a known user's broken client, most likely.
Some rules also say something about the *source* of an attack: an EternalBlue exploit or a
Redis takeover sent from a case host is a compromise of that host too, guessing from it an
indicator. Each sign keeps its finding's id so every verdict can name what caused it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from deminer.correlate.coverage import HIVES
from deminer.correlate.facts import Fact
from deminer.correlate.identity import Identity
from deminer.model import severity_rank

KINDS = ("compromise", "indicator", "targeted", "exposure", "gap")


@dataclass(frozen=True)
class Sign:
    host: str
    kind: str                  # one of KINDS
    ts: dt.datetime | None
    what: str                  # a short phrase for reasons: "malicious logon", "miner"
    rule: str
    finding: str | None        # the finding id (None for a raw event such as LastBackup)
    trust: str = "log"         # log | file | collection | untrusted (set by verdict)
    hive: bool = False         # read from a registry hive (what a hive-only host can show)


# rule id -> (kind, what) for rules whose meaning does not depend on the row
FIXED: dict[str, tuple[str, str]] = {
    **{r: ("compromise", "miner or mining traffic") for r in (
        "impact.miner_process", "impact.win_miner_execution", "impact.net_stratum_session",
        "impact.xmrig_flags", "impact.mining_pool_reference", "impact.known_miner_name",
        "impact.net_wallet_cluster", "command_and_control.pool_connection",
        "command_and_control.net_pool_dns", "command_and_control.net_pool_tls",
        "command_and_control.net_xmrig_donation", "command_and_control.net_ids_miner_alert",
        "defense_evasion.base64_hidden_miner", "defense_evasion.win_winring0_driver")},
    **{r: ("compromise", "known malware indicator") for r in (
        "command_and_control.ioc_in_command", "command_and_control.known_bad_file_hash",
        "command_and_control.ioc_domain_lookup", "execution.yara_match")},
    **{r: ("compromise", "malicious persistence") for r in (
        "persistence.attacker_authorized_key", "persistence.autostart_from_tmp",
        "persistence.binary_in_cron_dir", "persistence.cron_pipe_to_shell",
        "persistence.watchdog_restart", "persistence.win_task_readded",
        "persistence.chained_to_flagged", "execution.win_random_service_binary")},
    **{r: ("compromise", "web shell") for r in (
        "persistence.webshell_upload", "persistence.webshell_request")},
    **{r: ("compromise", "malicious logon") for r in (
        "initial_access.ssh_brute_force_success", "initial_access.win_brute_force_success")},
    **{r: ("compromise", "remote execution on it") for r in (
        "lateral_movement.win_remote_service_install", "lateral_movement.win_remote_task",
        "lateral_movement.win_wmi_exec", "lateral_movement.win_admin_share_then_exec")},
    "credential_access.win_lsass_access": ("compromise", "credential dumping"),
    "command_and_control.net_frp_proxy": ("compromise", "FRP reverse proxy"),
    "lateral_movement.net_worm_fanout": ("compromise", "worm fan-out from it"),
    "lateral_movement.win_pass_the_hash": ("indicator", "pass-the-hash logons"),
    "persistence.unpackaged_system_unit": ("indicator", "unpackaged systemd unit"),
    "persistence.user_unit_watchdog": ("indicator", "per-user watchdog unit"),
    "execution.net_payload_download": ("indicator", "payload download from a bare IP"),
    "command_and_control.net_beaconing": ("indicator", "beaconing"),
    "command_and_control.net_server_egress": ("none", ""),
    **{r: ("targeted", "password guessing against it") for r in (
        "credential_access.ssh_brute_force", "credential_access.ssh_password_spray",
        "credential_access.win_password_spray", "credential_access.win_rdp_brute_force",
        "credential_access.win_smb_brute_force")},
    "initial_access.web_scanning": ("targeted", "web scanning"),
    "lateral_movement.stored_private_key": ("exposure", "stored private key"),
    "lateral_movement.orchestration_config": ("exposure", "orchestration config"),
}

# Rules whose source address attacked from a case host: what that says about the source.
SOURCE_SIDE = {
    "initial_access.ssh_brute_force_success": ("indicator", "guessed a password elsewhere"),
    "initial_access.win_brute_force_success": ("indicator", "guessed a password elsewhere"),
    "credential_access.ssh_brute_force": ("indicator", "password guessing from it"),
    "credential_access.win_smb_brute_force": ("indicator", "password guessing from it"),
    "credential_access.win_rdp_brute_force": ("indicator", "password guessing from it"),
    "credential_access.net_ssh_brute_force": ("indicator", "password guessing from it"),
    "credential_access.net_rdp_brute_force": ("indicator", "password guessing from it"),
    "initial_access.web_exploit_request": ("indicator", "exploit requests from it"),
    **{r: ("indicator", "remote execution from it") for r in (
        "lateral_movement.win_remote_service_install", "lateral_movement.win_remote_task",
        "lateral_movement.win_wmi_exec", "lateral_movement.win_admin_share_then_exec")},
}


def _by_severity(f: Fact) -> tuple[str, str]:
    rank = severity_rank(f.severity)
    if rank >= severity_rank("high"):
        return "compromise", f.rule
    return ("indicator", f.rule) if rank == severity_rank("medium") else ("none", "")


def _eternalblue(f: Fact) -> tuple[str, str, dt.datetime | None]:
    if f.ev_int("implant_replies"):
        return "compromise", "DoublePulsar implant answered", f.ts
    if f.ev_int("overflows"):
        return "indicator", "EternalBlue exploit sent to it", f.ts
    return "targeted", "EternalBlue/DoublePulsar probe", f.ts


def _net_ssh(f: Fact) -> tuple[str, str, dt.datetime | None]:
    if f.ev("success_at"):
        return "compromise", "malicious logon", f.ev_time("success_at")
    if f.ev("long_session_at"):
        return "indicator", "long session after guessing", f.ev_time("long_session_at")
    return "targeted", "password guessing against it", f.ts


def _net_rdp(f: Fact) -> tuple[str, str, dt.datetime | None]:
    if f.ev("long_session_at"):
        return "indicator", "long RDP session after guessing", f.ev_time("long_session_at")
    return "targeted", "password guessing against it", f.ts


def _web_exploit(f: Fact) -> tuple[str, str, dt.datetime | None]:
    if f.ev_int("ok"):
        return "indicator", "exploit request answered 2xx", f.ts
    return "targeted", "exploit requests refused", f.ts


def _redis(f: Fact) -> tuple[str, str, dt.datetime | None]:
    if f.severity == "critical":
        return "compromise", "Redis takeover", f.ts
    return "indicator", "Redis CONFIG SET dir", f.ts


def _cpu(f: Fact) -> tuple[str, str, dt.datetime | None]:
    return ("indicator", "CPU hog", f.ts) if severity_rank(f.severity) >= 2 else ("none", "", f.ts)


BY_ROW: dict[str, Callable[[Fact], tuple[str, str, dt.datetime | None]]] = {
    "lateral_movement.net_eternalblue_traits": _eternalblue,
    "credential_access.net_ssh_brute_force": _net_ssh,
    "credential_access.net_rdp_brute_force": _net_rdp,
    "initial_access.web_exploit_request": _web_exploit,
    "initial_access.net_redis_abuse": _redis,
    "impact.cpu_hog": _cpu,
}


def from_hive(source: str | None) -> bool:
    """Evidence read from a registry hive file (``…/config/SOFTWARE``, ``NTUSER.DAT``)."""
    return bool(source) and re.split(r"[\\/]", str(source))[-1].lower() in HIVES


def source_host(f: Fact, ident: Identity) -> str | None:
    """The case host an attack finding came from (``source.host``, else ``source.ip``)."""
    named = ident.canonical(f.ev("source.host"))
    if named and named in ident.hosts:
        return named
    return ident.host_for_ip(f.ev("source.ip"), f.ts)


def signs_of(f: Fact, ident: Identity) -> list[Sign]:
    """The signs one finding gives (possibly none)."""
    out: list[Sign] = []
    src = source_host(f, ident) if f.ev("source.ip") or f.ev("source.host") else None
    if f.host:
        if f.rule.startswith("defense_evasion.evidence_"):
            kind, what, ts = "gap", f.summary[:160], f.ts
        elif f.rule in BY_ROW:
            kind, what, ts = BY_ROW[f.rule](f)
        else:
            kind, what = FIXED.get(f.rule) or _by_severity(f)
            ts = (f.ev_time("success_ts") or f.ts) if what == "malicious logon" else f.ts
        before = f.ev_int("logins_before_burst")
        if f.rule == "initial_access.ssh_brute_force_success" and before and src is None:
            # An outside address that had logged in before its failures is more likely a known
            # user's broken client than a cracked password (an inside one may be a host that
            # was used for admin hops before it was infected).
            kind, what = "indicator", f"login after guessing from an address with {before} earlier logins"
        if kind != "none":
            out.append(Sign(f.host, kind, ts, what, f.rule, f.id, hive=from_hive(f.ev("source"))))
    if src and src != f.host:
        side = SOURCE_SIDE.get(f.rule)
        if f.rule == "lateral_movement.net_eternalblue_traits":
            exploit = f.ev_int("overflows") or f.ev_int("implant_replies")
            side = ("compromise", "sends EternalBlue exploits") if exploit else (
                "indicator", "sends EternalBlue probes")
        elif f.rule == "initial_access.net_redis_abuse" and f.severity == "critical":
            side = ("compromise", "sends Redis takeover commands")
        if side:
            out.append(Sign(src, side[0], f.ts, side[1], f.rule, f.id))
    return out
