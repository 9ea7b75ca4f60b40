/*
  deminer: shell droppers that install miners on Linux hosts.

  Meta as in miner_binaries.yar. Each behaviour alone is something an administrator
  also does (curl | sh, chattr -i, a cron line), so the rule needs three different
  behaviour groups in one script before it fires.
*/

rule Linux_Miner_Dropper_Script
{
    meta:
        description = "Shell script doing several things miner droppers do: kills rival miners, turns off security tools, fetches and runs code, plants cron or SSH-key persistence, runs base64-decoded commands"
        severity = "high"
        attack = "T1059.004,T1105,T1562.001,T1053.003,T1098.004,T1140"

    strings:
        // Group 1: kill competing miners by name.
        $kill_pkill = /pkill\s+(-9\s+)?-f\s+["']?[^\n]{0,40}(xmr|miner|kdevtmpfsi|kinsing|cryptonight|stratum)/
        $kill_killall = /killall\s+(-9\s+)?["']?(xmrig|xmr-stak|minerd|cpuminer|kdevtmpfsi|kinsing)/
        $kill_grep = /grep\s[^\n]{0,60}(xmr|minerd|kdevtmpfsi|kinsing|cryptonight|stratum)[^\n]{0,120}kill\s+-9/
        $kill_loop = /for\s+\w+\s+in\s+[^\n;]{0,300}(xmrig|minerd|kdevtmpfsi|kinsing|cpuminer|xmr-stak)/

        // Group 2: switch off security and cloud monitoring agents.
        $sec_setenforce = /setenforce\s+0/
        $sec_selinux_cfg = "SELINUX=disabled"
        $sec_ufw = /ufw\s+disable/
        $sec_firewalld = /systemctl\s+(stop|disable)\s+(firewalld|apparmor)/
        $sec_aliyun = /(\/usr\/local\/aegis|aliyun-service|AliYunDun|quartz_uninstall)/
        $sec_qcloud = /(\/usr\/local\/qcloud|YDService|YDLive)/
        $sec_chattr = /chattr\s+-[aAR]*i/
        $sec_watchdog = /0\s*>\s*\/proc\/sys\/kernel\/nmi_watchdog/

        // Group 3: fetch code and run it.
        $fetch_pipe = /(curl|wget)\s[^\n|;]{0,200}\|\s*(sudo\s+)?(ba|da|z|k)?sh\b/
        $fetch_devtcp = "/dev/tcp/"
        $fetch_chmod = /(curl|wget)\s[^\n]{0,200}(;|&&|\n)\s*chmod\s+(\+x|[0-7]?7[0-7][0-7])/

        // Group 4: persistence through cron or SSH keys.
        $persist_crontab = /crontab\s+-l[^\n]{0,300}\|\s*crontab\s+-/
        $persist_cron_file = />>?\s*\/(var\/spool\/cron|etc\/cron\.d|etc\/crontab)/
        $persist_keys = />>?\s*["']?[^\s"'>]{0,60}\.ssh\/authorized_keys/

        // Group 5: decode and run hidden commands.
        $decode_b64_shell = /base64\s+(-d|--decode)[^\n|]{0,40}\|\s*(ba|da|z|k)?sh\b/

    condition:
        filesize < 8MB
        and 3 of (any of ($kill_*), any of ($sec_*), any of ($fetch_*), any of ($persist_*), $decode_b64_shell)
}
