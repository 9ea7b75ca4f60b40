"""Protocol recognisers over the first bytes of each direction of a flow, whatever the port.

``inspect(orig, resp)`` gets the in-order start of both directions (a few KiB each, as the
flow table kept them) and returns ``(app, facts, swapped)``: the protocol found (``stratum``,
``tls``, ``http``, ``ssh``, ``redis``, ``smb``, ``dns``, ``rdp``) or None, the ``flows.data``
keys of CONTRIBUTING's "Network rows", and whether the bytes prove the *responder* is the
client (a capture that starts mid-session cannot tell from the handshake).

TLS fingerprints come from ``tls_hello`` (ClientHello → SNI, JA3, JA4; ServerHello version
and the leaf certificate's names); DNS wire format is read here by ``parse_dns``. Every
reader is bounded by the bytes it is given and treats them as hostile: it never raises on
junk, it returns less.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Any

import orjson

from deminer.sources.tls_hello import client_hello, server_hello

Facts = dict[str, Any]
MAX_LIST = 32           # commands / methods / ids kept per flow
MAX_TEXT = 1024         # characters kept of one header, banner or command


def _text(raw: bytes, cap: int = MAX_TEXT) -> str:
    return raw[:cap].decode("utf-8", "backslashreplace")


def _add(items: list[Any], value: Any) -> None:
    """Append a first-seen value, keeping lists short for hostile flows."""
    if value not in items and len(items) < MAX_LIST:
        items.append(value)


# -- Stratum (line-delimited JSON-RPC) --------------------------------------------------------
CLIENT_METHODS = frozenset({
    "login", "submit", "keepalived", "getjob", "mining.subscribe", "mining.authorize",
    "mining.submit", "mining.extranonce.subscribe", "mining.configure", "mining.suggest_difficulty"})
POOL_METHODS = frozenset({
    "job", "mining.notify", "mining.set_difficulty", "mining.set_target", "client.reconnect",
    "mining.set_extranonce", "client.show_message"})
# Counted with a regex so a long session beyond the kept bytes still counts (flowtable).
SUBMIT_RE = re.compile(rb'"method"\s*:\s*"(?:mining\.)?submit"')
JOB_RE = re.compile(rb'"method"\s*:\s*"(?:job|mining\.notify)"')


def _json_lines(buf: bytes) -> list[dict[str, Any]]:
    """JSON objects of ``buf``'s lines; a cut first/last line or junk line is skipped."""
    out = []
    for line in buf.split(b"\n"):
        line = line.strip()
        if line[:1] != b"{":
            continue
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(msg, dict):
            out.append(msg)
    return out


def _stratum_side(msgs: list[dict[str, Any]]) -> tuple[int, int]:
    """(client-method count, pool-method-or-login-result count) of one direction."""
    client = pool = 0
    for m in msgs:
        method = m.get("method")
        result = m.get("result")
        if method in CLIENT_METHODS:
            client += 1
        elif method in POOL_METHODS or (isinstance(result, dict) and "job" in result):
            pool += 1
    return client, pool


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else (None if value is None else str(value))


def stratum_facts(client: list[dict[str, Any]], pool: list[dict[str, Any]]) -> Facts:
    facts: Facts = {"methods": [], "pool_methods": [], "algo": []}
    for m in client:
        method, params = m.get("method"), m.get("params")
        if not isinstance(method, str):
            continue
        _add(facts["methods"], method)
        if method == "login" and isinstance(params, dict):
            for key in ("login", "pass", "agent", "rigid"):
                if key not in facts and params.get(key) is not None:
                    facts[key] = _str(params[key])
            algos = params.get("algo")
            for algo in algos if isinstance(algos, list) else []:
                _add(facts["algo"], _str(algo))
        elif isinstance(params, list) and params:
            if method == "mining.authorize":
                facts.setdefault("login", _str(params[0]))
                if len(params) > 1:
                    facts.setdefault("pass", _str(params[1]))
            elif method == "mining.subscribe":
                facts.setdefault("agent", _str(params[0]))
            elif method == "mining.submit":
                facts.setdefault("login", _str(params[0]))
    for m in pool:
        method = m.get("method")
        if isinstance(method, str):
            _add(facts["pool_methods"], method)
        job = m.get("params") if method == "job" else None
        result = m.get("result")
        if isinstance(result, dict) and isinstance(result.get("job"), dict):
            job = result["job"]
            facts["login_result"] = True
        if isinstance(job, dict) and isinstance(job.get("algo"), str):
            _add(facts["algo"], job["algo"])
    return facts


# -- HTTP, SSH, RDP ---------------------------------------------------------------------------
_HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                 b"CONNECT ", b"TRACE ", b"PROPFIND ")


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}[ \t]*(;[^\r\n]*)?")


def _headers(buf: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = buf.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _header(lines: list[bytes], name: bytes) -> str | None:
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return _text(value.strip())
    return None


def http_facts(req: bytes, resp: bytes) -> Facts:
    facts: Facts = {}
    if req.startswith(_HTTP_METHODS):
        lines, _ = _headers(req)
        parts = lines[0].split(b" ")
        facts["method"], facts["uri"] = _text(parts[0]), _text(parts[1] if len(parts) > 1 else b"")
        facts["host"], facts["user_agent"] = _header(lines, b"host"), _header(lines, b"user-agent")
    if resp.startswith(b"HTTP/"):
        lines, body = _headers(resp)
        status = lines[0].split(b" ")
        if len(status) > 1 and status[1].isdigit():
            facts["status"] = int(status[1])
        facts["content_type"] = _header(lines, b"content-type")
        if (_header(lines, b"transfer-encoding") or "").lower() == "chunked":
            size, _, rest = body.partition(b"\r\n")     # skip the first chunk's size line
            body = rest if _CHUNK_SIZE.fullmatch(size) else body
        if body:
            facts["body_magic"] = body[:16].hex()
    return {k: v for k, v in facts.items() if v is not None}


def ssh_banner(buf: bytes) -> str | None:
    # RFC 4253 lets a server send other lines before its version string.
    for line in buf[:2048].split(b"\n")[:8]:
        if line.startswith(b"SSH-"):
            return _text(line.rstrip(b"\r"), 255)
    return None


def rdp_facts(req: bytes, resp: bytes) -> Facts | None:
    """TPKT + X.224 Connection Request: the mstshash cookie and the requested protocols."""
    if len(req) < 11 or req[:2] != b"\x03\x00" or req[5] != 0xE0:
        return None
    tpkt = req[4:int.from_bytes(req[2:4], "big")]
    facts: Facts = {}
    rest = tpkt[7:]
    if rest.startswith(b"Cookie:"):
        cookie, _, rest = rest.partition(b"\r\n")
        value = cookie[7:].strip()
        facts["cookie"] = _text(value[9:] if value.startswith(b"mstshash=") else value, 255)
    if len(rest) >= 8 and rest[0] == 1:
        facts["requested_protocols"] = int.from_bytes(rest[4:8], "little")
    if len(resp) >= 19 and resp[:2] == b"\x03\x00" and resp[5] == 0xD0 and resp[11] == 2:
        facts["selected_protocol"] = int.from_bytes(resp[15:19], "little")
    return facts


# -- Redis RESP -------------------------------------------------------------------------------
_REDIS_INLINE = frozenset({
    b"PING", b"INFO", b"CONFIG", b"SET", b"GET", b"AUTH", b"SLAVEOF", b"REPLICAOF", b"FLUSHALL",
    b"FLUSHDB", b"SAVE", b"BGSAVE", b"KEYS", b"EVAL", b"MODULE", b"DBSIZE", b"SCAN", b"QUIT",
    b"ECHO", b"SELECT", b"DEL", b"CLIENT", b"COMMAND", b"HELLO", b"SYSTEM.EXEC", b"EXISTS"})


def redis_commands(buf: bytes) -> list[str] | None:
    """The first commands of a RESP client stream (arrays of bulk strings or inline)."""
    out: list[str] = []
    pos = 0
    while pos < len(buf) and len(out) < MAX_LIST:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        line = buf[pos:eol]
        pos = eol + 2
        if line[:1] == b"*":
            if not line[1:].isdigit():
                return None
            args = []
            for _ in range(min(int(line[1:]), 64)):
                eol = buf.find(b"\r\n", pos)
                if eol < 0 or buf[pos:pos + 1] != b"$" or not buf[pos + 1:eol].isdigit():
                    return out or None          # cut by the kept-bytes cap, or not RESP
                n = int(buf[pos + 1:eol])
                args.append(buf[eol + 2:eol + 2 + n])
                pos = eol + 4 + n
            out.append(_text(b" ".join(args)))
        elif line.split(b" ", 1)[0].upper() in _REDIS_INLINE:
            out.append(_text(line))
        elif not out:
            return None
    return out or None


# -- SMB1 / SMB2 ------------------------------------------------------------------------------
_SMB1 = {0x04: "CLOSE", 0x24: "LOCKING_ANDX", 0x25: "TRANSACTION", 0x26: "TRANSACTION_SECONDARY",
         0x2B: "ECHO", 0x2E: "READ_ANDX", 0x2F: "WRITE_ANDX", 0x32: "TRANSACTION2",
         0x33: "TRANSACTION2_SECONDARY", 0x71: "TREE_DISCONNECT",
         0x72: "NEGOTIATE", 0x73: "SESSION_SETUP_ANDX", 0x74: "LOGOFF_ANDX",
         0x75: "TREE_CONNECT_ANDX", 0xA0: "NT_TRANSACT", 0xA2: "NT_CREATE_ANDX"}
_SMB2 = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE",
         "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY",
         "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")
_TRANS2 = {0x00: "OPEN2", 0x01: "FIND_FIRST2", 0x02: "FIND_NEXT2", 0x03: "QUERY_FS_INFORMATION",
           0x05: "QUERY_PATH_INFORMATION", 0x06: "SET_PATH_INFORMATION",
           0x07: "QUERY_FILE_INFORMATION", 0x08: "SET_FILE_INFORMATION",
           0x0D: "CREATE_DIRECTORY", 0x0E: "SESSION_SETUP", 0x10: "GET_DFS_REFERRAL"}
DOUBLEPULSAR_MID = 0x51   # the implant answers a Trans2 SESSION_SETUP ping with MID 81


def _netbios(buf: bytes) -> list[bytes]:
    msgs: list[bytes] = []
    pos = 0
    while pos + 4 <= len(buf) and len(msgs) < 256:
        n = int.from_bytes(buf[pos + 1:pos + 4], "big") & 0x1FFFF
        if buf[pos] == 0:
            msgs.append(buf[pos + 4:pos + 4 + n])
        pos += 4 + n
    return msgs


def smb_facts(req: bytes, resp: bytes) -> Facts | None:
    facts: Facts = {"commands": [], "trans2": [], "multiplex_ids": [], "doublepulsar": False}
    probe = False
    for side, buf in ((0, req), (1, resp)):
        for msg in _netbios(buf):
            if msg[:4] == b"\xffSMB" and len(msg) >= 32:
                facts.setdefault("dialect", "smb1")
                cmd, mid = msg[4], int.from_bytes(msg[30:32], "little")
                _add(facts["multiplex_ids"], mid)
                if side == 0:
                    _add(facts["commands"], _SMB1.get(cmd, f"0x{cmd:02x}"))
                if cmd == 0x32 and side == 0 and len(msg) >= 63 and msg[32] >= 15:
                    sub = int.from_bytes(msg[61:63], "little")
                    _add(facts["trans2"], _TRANS2.get(sub, f"0x{sub:04x}"))
                    probe = probe or sub == 0x0E
                elif cmd == 0x32 and side == 1 and mid == DOUBLEPULSAR_MID and probe:
                    facts["doublepulsar"] = True
            elif msg[:4] == b"\xfeSMB" and len(msg) >= 64:
                facts.setdefault("dialect", "smb2")
                off = 0
                while off + 64 <= len(msg):            # compounded requests: NextCommand
                    cmd = int.from_bytes(msg[off + 12:off + 14], "little")
                    if side == 0:
                        _add(facts["commands"], _SMB2[cmd] if cmd < len(_SMB2) else f"0x{cmd:04x}")
                    elif cmd == 0 and len(msg) >= off + 70:
                        facts["smb2_dialect"] = f"0x{int.from_bytes(msg[off + 68:off + 70], 'little'):04x}"
                    nxt = int.from_bytes(msg[off + 20:off + 24], "little")
                    if nxt < 64:
                        break
                    off += nxt
    return facts if "dialect" in facts else None


# -- DNS --------------------------------------------------------------------------------------
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC",
          48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 99: "SPF", 252: "AXFR", 255: "ANY", 257: "CAA"}
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
          "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")
DnsMessage = tuple[int, bool, str, str, str, list[str], bool]


def _dns_name(msg: bytes, pos: int) -> tuple[str, int]:
    """(lower-case name without the trailing dot, position after it); ValueError if bad."""
    labels: list[str] = []
    end, jumps = -1, 0
    while True:
        n = msg[pos]
        if n >= 0xC0:
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 32 or target >= pos:           # pointers go back: no loops
                raise ValueError("bad compression pointer")
            pos = target
        elif n >= 0x40:
            raise ValueError("bad label")
        elif n == 0:
            name = ".".join(labels).lower()
            return name or ".", (end if end >= 0 else pos + 1)
        else:
            if pos + 1 + n > len(msg):
                raise ValueError("short label")
            labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "backslashreplace"))
            pos += 1 + n


def _rdata(msg: bytes, rtype: int, start: int, end: int) -> str:
    raw = msg[start:end]
    if rtype == 1 and len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if rtype == 28 and len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    if rtype in (2, 5, 12):
        return _dns_name(msg, start)[0]
    if rtype == 15 and len(raw) > 2:
        return f"{int.from_bytes(raw[:2], 'big')} {_dns_name(msg, start + 2)[0]}"
    if rtype == 33 and len(raw) > 6:
        prio, weight, port = struct.unpack_from("!HHH", raw)
        return f"{prio} {weight} {port} {_dns_name(msg, start + 6)[0]}"
    if rtype == 16:
        parts, pos = [], 0
        while pos < len(raw):
            parts.append(raw[pos + 1:pos + 1 + raw[pos]])
            pos += 1 + raw[pos]
        return _text(b"".join(parts), 4096)
    if rtype == 6:
        mname, pos = _dns_name(msg, start)
        rname, pos = _dns_name(msg, pos)
        return " ".join([mname, rname, *map(str, struct.unpack_from("!IIIII", msg, pos))])
    return raw[:256].hex()


def parse_dns(msg: bytes) -> DnsMessage | None:
    """(id, is_response, rcode, qname, qtype, answers, whole message read) or None if not DNS."""
    if len(msg) < 17:
        return None
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    if qd != 1 or (flags >> 11) & 0xF > 5:
        return None
    try:
        qname, pos = _dns_name(msg, 12)
        code = int.from_bytes(msg[pos:pos + 2], "big")
        qtype = QTYPES.get(code, f"TYPE{code}")
        pos += 4
        answers: list[str] = []
        for i in range(an + ns + ar):
            _, pos = _dns_name(msg, pos)
            rtype, _, _, rdlen = struct.unpack_from("!HHIH", msg, pos)
            pos += 10
            if pos + rdlen > len(msg):
                raise ValueError("short record")
            if i < an and len(answers) < 64:
                answers.append(_rdata(msg, rtype, pos, pos + rdlen))
            pos += rdlen
    except (ValueError, IndexError, struct.error):
        return None
    rcode = flags & 0xF
    return (ident, bool(flags & 0x8000), RCODES[rcode] if rcode < len(RCODES) else f"RCODE{rcode}",
            qname, qtype, answers, pos == len(msg))


def dns_stream(buf: bytes) -> list[DnsMessage]:
    """DNS messages of a TCP stream (each after a two-byte length)."""
    out: list[DnsMessage] = []
    pos = 0
    while pos + 2 <= len(buf) and len(out) < 256:
        n = int.from_bytes(buf[pos:pos + 2], "big")
        msg = parse_dns(buf[pos + 2:pos + 2 + n]) if pos + 2 + n <= len(buf) else None
        if msg is None or not msg[6]:
            break
        out.append(msg)
        pos += 2 + n
    return out


# -- dispatch ---------------------------------------------------------------------------------
def _one_way(a: bytes, b: bytes) -> tuple[str, Facts] | None:
    """The protocol when ``a`` is the client side's bytes and ``b`` the server's."""
    if a[:1] == b"\x16" and a[5:6] == b"\x01":
        hello = client_hello(a)
        if hello is not None:
            return "tls", {**hello, **server_hello(b)}
    if a.startswith(_HTTP_METHODS) or (not a and b.startswith(b"HTTP/1.")):
        return "http", http_facts(a, b)
    if a[4:8] in (b"\xffSMB", b"\xfeSMB") and a[:1] == b"\x00":
        smb = smb_facts(a, b)
        if smb:
            return "smb", smb
    rdp = rdp_facts(a, b)
    if rdp is not None:
        return "rdp", rdp
    if a[:1] == b"*" or a[:1].isalpha():
        commands = redis_commands(a)
        if commands and (a[:1] == b"*" or not b or b[:1] in b"+-:$*"):
            return "redis", {"commands": commands}
    if len(a) > 14 and dns_stream(a):
        return "dns", {}
    return None


def inspect(orig: bytes, resp: bytes) -> tuple[str | None, Facts, bool]:
    """(app, facts, swapped) for a flow's first bytes; ``swapped``: resp is the client."""
    if orig.startswith(b"SSH-") or resp.startswith(b"SSH-"):
        facts = {"client_banner": ssh_banner(orig), "server_banner": ssh_banner(resp)}
        return "ssh", {k: v for k, v in facts.items() if v is not None}, False
    if b"{" in orig[:64] or b"{" in resp[:64]:
        msgs_o, msgs_r = _json_lines(orig), _json_lines(resp)
        oc, op = _stratum_side(msgs_o)
        rc, rp = _stratum_side(msgs_r)
        if oc + op + rc + rp:
            swapped = rc + op > oc + rp
            client, pool = (msgs_r, msgs_o) if swapped else (msgs_o, msgs_r)
            return "stratum", stratum_facts(client, pool), swapped
    found = _one_way(orig, resp)
    if found is not None:
        return found[0], found[1], False
    found = _one_way(resp, orig) if resp else None
    if found is not None:
        return found[0], found[1], True
    return None, {}, False
