/*
  deminer: miner configuration files.

  Meta as in miner_binaries.yar. Patterns allow any whitespace (including new lines)
  around JSON punctuation and do not depend on key order, so pretty-printed, minified
  and hand-edited configs all match.
*/

rule Miner_JSON_Config
{
    meta:
        description = "JSON miner configuration (XMRig style): a pools list with a host:port URL and a wallet-like user, plus mining options (donate-level, randomx, cpu, algo)"
        severity = "high"
        attack = "T1496"
        family = "XMRig"

    strings:
        $pools = /"pools"\s*:\s*\[/
        $url_host_port = /"url"\s*:\s*"([a-z0-9+]{2,16}:\/\/)?[A-Za-z0-9][A-Za-z0-9.\-]{1,200}:[0-9]{2,5}"/
        $url_stratum = /"url"\s*:\s*"stratum\+(tcp|ssl|tls):\/\//
        // Monero addresses are base58, 95 characters (106 when integrated), starting 4 or 8.
        $user_monero = /"user"\s*:\s*"[48][1-9A-HJ-NP-Za-km-z]{94}/
        // Other coins' wallets (0x... Ethereum, long base58/bech32) are long unbroken tokens.
        $user_long = /"user"\s*:\s*"[A-Za-z0-9]{40,120}/
        $opt_donate = /"donate-level"\s*:\s*[0-9]/
        $opt_randomx = /"randomx"\s*:\s*\{/
        $opt_cpu = /"cpu"\s*:\s*\{/
        $opt_algo = /"algo"\s*:\s*"(rx\/|cn\/|cn-|cryptonight|randomx|argon2|kawpow|ghostrider|astrobwt)/
        $opt_coin = /"coin"\s*:\s*"(monero|xmr)"/ nocase

    condition:
        filesize < 4MB
        and $pools
        and ($url_host_port or $url_stratum)
        and (any of ($user_*) or $url_stratum)
        and any of ($opt_*)
}
