/*
  deminer: miner executables (Linux ELF and Windows PE).

  Every rule carries meta: description, severity (info, low, medium, high, critical),
  attack (ATT&CK technique ids, comma separated) and family where it is known.
  The detector yara_scan runs these over the file contents a collector saved; the
  samples that prove each rule fires and stays quiet are built in tests/detect/test_yara_rules.py.
*/

rule XMRig_Family_Binary
{
    meta:
        description = "Executable built from XMRig or a fork (Kinsing's kdevtmpfsi, many renamed miners): XMRig names, donation pool or option, and mining algorithm strings"
        severity = "high"
        attack = "T1496"
        family = "XMRig"

    strings:
        // Strings that only XMRig and its forks carry; renamed builds keep them.
        $own_name = "xmrig" nocase
        $own_donate_v2 = "donate.v2.xmrig.com"
        $own_donate_ssl = "donate.ssl.xmrig.com"
        $own_donate_opt = "donate-level"
        // Shared by miners generally; they raise confidence but never decide alone.
        $gen_randomx = "randomx" nocase
        $gen_cryptonight = "cryptonight" nocase
        $gen_algo_rx0 = "rx/0"
        $gen_stratum_tcp = "stratum+tcp://"
        $gen_stratum_ssl = "stratum+ssl://"
        $gen_rig_id = "\"rig-id\""
        $gen_huge_pages = "huge-pages"
        $gen_subscribe = "mining.subscribe"

    condition:
        (uint32(0) == 0x464c457f or (uint16(0) == 0x5a4d and uint32(uint32(0x3c)) == 0x00004550))
        and any of ($own_*)
        and 4 of them
}

rule Stratum_Login_In_Binary
{
    meta:
        description = "Executable with Stratum JSON-RPC requests built in (Monero-style login/submit or Bitcoin-style mining.subscribe/authorize/submit): it talks to mining pools"
        severity = "high"
        attack = "T1496,T1071"

    strings:
        // Monero-style Stratum: the request templates miners print with a format string.
        $xmr_login = /"method"\s*:\s*"login"/
        $xmr_params = /"params"\s*:\s*\{\s*"login"\s*:/
        $xmr_submit = /"method"\s*:\s*"submit"/
        $xmr_keepalive = /"method"\s*:\s*"keepalived"/
        // Stratum v1 method names (cpuminer, cgminer and their forks).
        $v1_subscribe = "mining.subscribe"
        $v1_authorize = "mining.authorize"
        $v1_submit = "mining.submit"
        $v1_notify = "mining.notify"
        $v1_extranonce = "mining.extranonce.subscribe"

    condition:
        (uint32(0) == 0x464c457f or (uint16(0) == 0x5a4d and uint32(uint32(0x3c)) == 0x00004550))
        and (2 of ($xmr_*) or 2 of ($v1_*))
}

rule UPX_Packed_ELF
{
    meta:
        description = "ELF executable packed with UPX (loader magic UPX! near the start plus the packer trailer or notice); droppers pack miners to hide their strings"
        severity = "medium"
        attack = "T1027.002"

    strings:
        $magic = "UPX!"
        $notice = "This file is packed with the UPX executable packer"
        $id = /\$Id: UPX [0-9]/

    condition:
        // The l_info header with UPX! follows the program headers, so it sits in the first
        // KiB; UPX writes the magic again in its trailer, which survives stripped notices.
        uint32(0) == 0x464c457f
        and $magic in (0..1024)
        and (#magic >= 2 or $notice or $id)
}

rule WinRing0_With_Miner
{
    meta:
        description = "File that carries or loads the WinRing0 kernel driver (used by XMRig on Windows to change CPU MSRs) together with miner strings"
        severity = "high"
        attack = "T1496,T1543.003"
        family = "XMRig"

    strings:
        $drv_x64 = "WinRing0x64.sys" ascii wide nocase
        $drv_x86 = "WinRing0.sys" ascii wide nocase
        $drv_service = "WinRing0_1_2_0" ascii wide
        $miner_xmrig = "xmrig" ascii wide nocase
        $miner_randomx = "randomx" ascii wide nocase
        $miner_cryptonight = "cryptonight" ascii wide nocase
        $miner_stratum = "stratum+" ascii wide nocase
        $miner_donate = "donate-level" ascii wide

    condition:
        // Hardware monitors ship WinRing0 too; only the pairing with miner strings counts.
        filesize < 64MB and any of ($drv_*) and any of ($miner_*)
}
