/*
  deminer: Windows miner droppers and mining-botnet markers.

  Meta as in miner_binaries.yar. PowerShell's -EncodedCommand takes base64 of UTF-16LE
  text, so miner strings hidden that way are searched as base64 of their wide form.
*/

rule PowerShell_Miner_Downloader
{
    meta:
        description = "PowerShell that downloads code (WebClient DownloadString/DownloadFile, Invoke-WebRequest, BITS) and also carries miner settings: Stratum URL, XMRig, pool, wallet or algorithm"
        severity = "high"
        attack = "T1059.001,T1105,T1496"

    strings:
        $dl_iex_cradle = /(IEX|Invoke-Expression)\s*\(?\s*\(\s*New-Object\s+(System\.)?Net\.WebClient\s*\)\s*\.\s*DownloadString/ nocase
        $dl_webclient = /New-Object\s+(System\.)?Net\.WebClient/ nocase
        $dl_download_call = /\.Download(String|File|Data)\s*\(/ nocase
        $dl_web_request = /(Invoke-WebRequest|Invoke-RestMethod|iwr|irm)\s[^\n]{0,200}(\|\s*(IEX|Invoke-Expression)\b|-OutFile)/ nocase
        $dl_bits = "Start-BitsTransfer" nocase

        $miner_stratum = "stratum+" nocase
        $miner_xmrig = "xmrig" nocase
        $miner_donate = "donate-level" nocase
        $miner_algo = /(-a|--algo)[= ]+(rx\/0|cryptonight|randomx|cn\/r)/ nocase
        $miner_pool_arg = /\s(-o|--url)[= ]+["']?(stratum\+[a-z]+:\/\/)?[A-Za-z0-9.\-]{3,200}:[0-9]{2,5}\b/
        $miner_wallet = /\b4[0-9AB][1-9A-HJ-NP-Za-km-z]{93}\b/
        $miner_pool_name = /(minexmr|supportxmr|moneroocean|nanopool|c3pool|hashvault|xmrpool|herominers)\.(com|net|org|stream|pro|eu)/ nocase

    condition:
        filesize < 8MB and any of ($dl_*) and any of ($miner_*)
}

rule PowerShell_Encoded_Stratum
{
    meta:
        description = "PowerShell run with -EncodedCommand where the encoded payload, or the launcher next to it, holds a Stratum pool URL or miner name"
        severity = "high"
        attack = "T1059.001,T1027.010,T1496"

    strings:
        $ps = "powershell" nocase ascii wide
        $enc = /\s[-\/](e|ec|en|enc|enco|encodedcommand)\s+[A-Za-z0-9+\/]{20}/ nocase ascii wide
        // UTF-16LE text, base64-encoded as -EncodedCommand wants it.
        $wide_stratum = "s\x00t\x00r\x00a\x00t\x00u\x00m\x00+\x00" base64 base64wide
        $wide_xmrig = "x\x00m\x00r\x00i\x00g\x00" base64 base64wide
        $wide_xmrig_banner = "X\x00M\x00R\x00i\x00g\x00" base64 base64wide
        $wide_donate = "d\x00o\x00n\x00a\x00t\x00e\x00-\x00l\x00e\x00v\x00e\x00l\x00" base64 base64wide
        $plain_stratum = "stratum+" nocase ascii wide

    condition:
        filesize < 8MB and $ps and $enc and any of ($wide_*, $plain_stratum)
}

rule LemonDuck_Miner_Markers
{
    meta:
        description = "Markers of the Lemon Duck / DTLMiner (EternalBlue downloader) mining botnet: scheduled task names Ddrivers, DnsScan, WebServers, the mkatz.ini credential dump, Lemon_Duck names"
        severity = "critical"
        attack = "T1053.005,T1003.001,T1496"
        family = "LemonDuck"

    strings:
        $task_ddrivers = "Ddrivers" ascii wide
        $task_dnsscan = "DnsScan" ascii wide
        $task_webservers = "WebServers" ascii wide
        $mkatz = "mkatz.ini" ascii wide nocase
        $lemon_var = "Lemon_Duck" ascii wide nocase
        $lemon_agent = "Lemon-Duck-" ascii wide nocase

    condition:
        // One of these names alone is weak (WebServers is a common word); two together are not.
        filesize < 32MB and 2 of them
}
