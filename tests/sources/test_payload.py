"""Payload recognisers: Stratum, TLS (SNI, JA3, JA4, certificates), HTTP, SSH, Redis, SMB, DNS, RDP."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deminer.scenarios import captures as gen
from deminer.sources import payload, tls_hello


# -- TLS --------------------------------------------------------------------------------------
def test_ja4_matches_the_worked_example_of_the_published_spec() -> None:
    # FoxIO's JA4 write-up: these ciphers, extensions (incl. SNI, ALPN h2 and padding) and
    # signature algorithms give t13d1516h2_8daaf6152771_e5627efa2ab1. GREASE is in the hello.
    facts = tls_hello.client_hello(gen.client_hello("pool.supportxmr.com"))
    assert facts is not None
    assert facts["ja4"] == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert facts["sni"] == "pool.supportxmr.com"
    assert facts["version"] == "TLS 1.3" and facts["alpn"] == "h2"


def test_ja3_matches_the_published_salesforce_example() -> None:
    # The JA3 README's example hello and its MD5.
    ciphers = (47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4)
    hello = gen.client_hello("example.com", ciphers=ciphers, exts=(0, 10, 11), groups=(23, 24, 25),
                             legacy=0x0301, grease=False, versions=(), alpn=())
    facts = tls_hello.client_hello(hello)
    assert facts is not None
    assert facts["ja3"] == "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    assert facts["ja3_hash"] == "ada70206e40642a3e4461f35503241d5"
    assert facts["ja4"].startswith("t10d1203") and facts["ja4"][8:10] == "00"   # no ALPN
    assert facts["version"] == "TLS 1.0"


def test_ja3_and_ja4_drop_grease_and_ja3_keeps_extension_order() -> None:
    with_grease = tls_hello.client_hello(gen.client_hello("a.example", grease=True))
    without = tls_hello.client_hello(gen.client_hello("a.example", grease=False))
    assert with_grease is not None and without is not None
    assert with_grease["ja3"] == without["ja3"] and with_grease["ja4"] == without["ja4"]
    assert with_grease["ja3"].split(",")[2].startswith("27-0-51-16-17513-")
    shuffled = tls_hello.client_hello(gen.client_hello("a.example", exts=gen.CHROME_EXTS[::-1]))
    assert shuffled is not None
    assert shuffled["ja4"] == without["ja4"] and shuffled["ja3"] != without["ja3"]


def test_ja4_without_sni_alpn_or_supported_versions() -> None:
    exts = tuple(e for e in gen.CHROME_EXTS if e not in (0x0000, 0x0010, 0x002B))
    facts = tls_hello.client_hello(gen.client_hello(None, exts=exts))
    assert facts is not None
    assert facts["ja4"].startswith("t12i151300_8daaf6152771_")
    assert "sni" not in facts


@pytest.mark.parametrize(("alpn", "chars"), [
    (b"h2", "h2"), (b"http/1.1", "h1"), (b"x", "xx"), (b"\xab", "ab"), (b"\xab\xcd", "ad"),
    (b"\x30\xab", "3b"), (b"\x30\x31\xab\xcd", "3d"), (b"\x30\xab\xcd\x31", "01")])
def test_ja4_alpn_characters_follow_the_spec_examples(alpn: bytes, chars: str) -> None:
    facts = tls_hello.client_hello(gen.client_hello("a.example", alpn=(alpn,)))
    assert facts is not None and facts["ja4"][8:10] == chars


def test_ja4_with_no_ciphers_hashes_to_zeros() -> None:
    facts = tls_hello.client_hello(gen.client_hello("a.example", ciphers=(), grease=False))
    assert facts is not None and facts["ja4"].split("_")[1] == "000000000000"


def test_client_hello_spread_over_records_and_cut_short() -> None:
    record = gen.client_hello("split.example")
    hs = record[5:]
    two = b"\x16\x03\x01" + struct.pack("!H", 100) + hs[:100] + b"\x16\x03\x01" + \
        struct.pack("!H", len(hs) - 100) + hs[100:]
    whole, split = tls_hello.client_hello(record), tls_hello.client_hello(two)
    assert whole is not None and split == whole
    for cut in (10, 60, 120, len(record) - 3):
        tls_hello.client_hello(record[:cut])          # partial facts or None, never an error


def test_certificate_names_from_a_tls12_server_flight() -> None:
    cert = gen.certificate("pool.minexmr.example", "Evil CA")
    facts = tls_hello.server_hello(gen.server_hello_tls12(cert))
    assert facts == {"version": "TLS 1.2", "cert_subject": "CN=pool.minexmr.example,O=Test Pool",
                     "cert_issuer": "CN=Evil CA,O=Test Pool,C=US"}
    assert tls_hello.certificate_names(cert[:40]) is None    # cut before the subject


# -- Stratum ----------------------------------------------------------------------------------
def lines(*msgs: object, compact: bool = False) -> bytes:
    sep = (",", ":") if compact else (", ", ": ")
    return b"".join(json.dumps(m, separators=sep).encode() + b"\n" for m in msgs)


LOGIN = {"method": "login", "id": 1, "params": {"agent": "XMRig/6.21.0", "rigid": "r1", "pass": "w1",
                                                 "algo": ["rx/0", "cn/r"], "login": gen.WALLET}}
RESULT = {"jsonrpc": "2.0", "result": {"job": {"algo": "rx/0", "job_id": "1"}, "status": "OK"}, "id": 1}


def test_stratum_login_in_any_key_order_and_spacing() -> None:
    client = lines(LOGIN) + b'{ "params" : {"id":"s"} ,"method"  :  "submit", "id": 2}\r\n'
    app, facts, swapped = payload.inspect(client, lines(RESULT, compact=True))
    assert (app, swapped) == ("stratum", False)
    assert facts["login"] == gen.WALLET and facts["pass"] == "w1" and facts["agent"] == "XMRig/6.21.0"
    assert facts["rigid"] == "r1" and facts["algo"] == ["rx/0", "cn/r"]
    assert facts["methods"] == ["login", "submit"] and facts["login_result"] is True


def test_stratum_mid_session_is_recognised_and_roles_come_from_the_methods() -> None:
    job = {"jsonrpc": "2.0", "method": "job", "params": {"job_id": "9", "algo": "rx/0"}}
    submit = {"id": 5, "jsonrpc": "2.0", "method": "submit", "params": {"id": "s", "nonce": "00"}}
    keepalive = {"id": 6, "method": "keepalived", "params": {"id": "s"}}
    # The pool's bytes arrived first, so they are "orig": the recogniser says swap.
    app, facts, swapped = payload.inspect(lines(job, job), b'"}\n' + lines(submit, keepalive))
    assert (app, swapped) == ("stratum", True)
    assert facts["methods"] == ["submit", "keepalived"] and facts["pool_methods"] == ["job"]
    assert "login" not in facts


def test_stratum_v1_subscribe_authorize_notify() -> None:
    client = lines({"id": 1, "method": "mining.subscribe", "params": ["bfgminer/5.5"]},
                   {"id": 2, "method": "mining.authorize", "params": ["wallet.rig", "x"]},
                   {"id": 3, "method": "mining.extranonce.subscribe", "params": []})
    pool = lines({"id": None, "method": "mining.set_difficulty", "params": [8]},
                 {"id": None, "method": "mining.notify", "params": ["j"]},
                 {"id": None, "method": "client.reconnect", "params": ["pool2", 3333, 0]})
    app, facts, _ = payload.inspect(client, pool)
    assert app == "stratum"
    assert (facts["login"], facts["pass"], facts["agent"]) == ("wallet.rig", "x", "bfgminer/5.5")
    assert facts["pool_methods"] == ["mining.set_difficulty", "mining.notify", "client.reconnect"]


def test_json_that_is_not_stratum_is_not_stratum() -> None:
    assert payload.inspect(lines({"method": "eth_call", "id": 1}), b"")[0] is None
    assert payload.inspect(b'{"login": "x"}\n', b"")[0] is None


# -- HTTP, SSH, Redis, RDP --------------------------------------------------------------------
def test_http_download_of_an_elf_with_chunked_encoding() -> None:
    req = b"GET /kinsing HTTP/1.1\r\nhost: 198.51.100.4\r\nUSER-AGENT: curl/7.81.0\r\n\r\n"
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n1f4\r\n" + gen.ELF[:40])
    app, facts, _ = payload.inspect(req, resp)
    assert app == "http"
    assert facts == {"method": "GET", "uri": "/kinsing", "host": "198.51.100.4", "user_agent": "curl/7.81.0",
                     "status": 200, "content_type": "application/octet-stream",
                     "body_magic": gen.ELF[:16].hex()}


def test_ssh_banners_after_pre_banner_lines() -> None:
    app, facts, _ = payload.inspect(b"SSH-2.0-Go\r\n", b"hello there\r\nSSH-2.0-OpenSSH_9.6\r\n\x00\x00")
    assert app == "ssh"
    assert facts == {"client_banner": "SSH-2.0-Go", "server_banner": "SSH-2.0-OpenSSH_9.6"}


def test_redis_resp_arrays_inline_commands_and_junk() -> None:
    resp = b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$3\r\ndir\r\n$16\r\n/var/spool/cron/\r\n*1\r\n$4\r\nSAVE\r\n"
    assert payload.inspect(resp, b"+OK\r\n")[:2] == ("redis", {"commands": [
        "CONFIG SET dir /var/spool/cron/", "SAVE"]})
    assert payload.inspect(b"info\r\nCONFIG GET dir\r\n", b"$10\r\n")[:2] == (
        "redis", {"commands": ["info", "CONFIG GET dir"]})
    assert payload.redis_commands(b"*2\r\n$3\r\nGET\r\n$99\r\nab") == ["GET ab"]   # cut by the cap
    assert payload.redis_commands(b"*x\r\n") is None
    assert payload.inspect(b"greetings world\r\n", b"")[0] is None
    assert payload.inspect(b"PING\r\n", b"<html>")[0] is None        # an answer that is not RESP
    many = b"".join(b"PING\r\n" for _ in range(100))
    assert len(payload.redis_commands(many) or []) == payload.MAX_LIST


def test_rdp_connection_request() -> None:
    cap = gen.Capture()
    cap.rdp("192.0.2.1", "10.0.0.2", cookie="hacker")
    req = cap.packets[3][1][40:]
    resp = cap.packets[4][1][40:]
    assert payload.inspect(req, resp)[:2] == ("rdp", {"cookie": "hacker", "requested_protocols": 3,
                                                      "selected_protocol": 2})


# -- SMB --------------------------------------------------------------------------------------
def smb_streams(infected: bool) -> tuple[bytes, bytes]:
    cap = gen.Capture()
    cap.smb_doublepulsar("192.0.2.88", "10.0.0.10", infected=infected)
    client = b"".join(p[40:] for p in (pk for _, pk in cap.packets) if p[12:16] == bytes([192, 0, 2, 88]))
    server = b"".join(p[40:] for p in (pk for _, pk in cap.packets) if p[12:16] != bytes([192, 0, 2, 88]))
    return client, server


def test_smb1_doublepulsar_ping_answered_with_mid_81() -> None:
    app, facts, _ = payload.inspect(*smb_streams(infected=True))
    assert app == "smb"
    assert facts == {"dialect": "smb1", "commands": ["NEGOTIATE", "SESSION_SETUP_ANDX", "TREE_CONNECT_ANDX",
                                                     "TRANSACTION2"],
                     "trans2": ["SESSION_SETUP"], "multiplex_ids": [1, 64, 65, 81], "doublepulsar": True}


def test_smb1_probe_of_a_clean_host_is_not_doublepulsar() -> None:
    facts = payload.inspect(*smb_streams(infected=False))[1]
    assert facts["trans2"] == ["SESSION_SETUP"] and facts["doublepulsar"] is False
    assert 81 not in facts["multiplex_ids"]


def test_smb1_eternalblue_shape_nt_trans_then_trans2_secondaries() -> None:
    secondaries = b"".join(gen.smb1(0x33, 3) for _ in range(5))
    req = gen.smb1(0x72, 1) + gen.smb1(0xA0, 2) + secondaries + gen.smb1(0x99, 4)
    facts = payload.smb_facts(req, b"")
    assert facts is not None
    assert facts["commands"] == ["NEGOTIATE", "NT_TRANSACT", "TRANSACTION2_SECONDARY", "0x99"]


def test_smb2_negotiate_dialect() -> None:
    cap = gen.Capture()
    cap.smb2_negotiate("10.0.0.5", "10.0.0.10")
    data = [pk[40:] for _, pk in cap.packets if len(pk) > 40]
    facts = payload.smb_facts(data[0] + data[2], data[1])
    assert facts is not None
    assert facts["dialect"] == "smb2" and facts["smb2_dialect"] == "0x0311"
    assert facts["commands"] == ["NEGOTIATE", "SESSION_SETUP"]


# -- DNS --------------------------------------------------------------------------------------
def test_dns_answers_of_every_common_type() -> None:
    msg = gen.dns_message("Pool.SupportXMR.com.", 1, 7, [bytes([1, 2, 3, 4]), bytes([5, 6, 7, 8])],
                          response=True)
    assert payload.parse_dns(msg) == (7, True, "NOERROR", "pool.supportxmr.com", "A",
                                      ["1.2.3.4", "5.6.7.8"], True)
    txt = gen.dns_message("c2.example", 16, 8, [b"\x05hello\x06 world"], response=True)
    assert payload.parse_dns(txt)[5] == ["hello world"]  # type: ignore[index]
    cname = gen.dns_message("www.example", 5, 9, [b"\x03cdn\xc0\x10"], response=True)
    assert payload.parse_dns(cname)[5] == ["cdn.example"]  # type: ignore[index]
    mx = gen.dns_message("example", 15, 1, [b"\x00\x0a\x04mail\xc0\x0c"], response=True)
    assert payload.parse_dns(mx)[5] == ["10 mail.example"]  # type: ignore[index]
    nx = gen.dns_message("nope.example", 28, 2, rcode=3, response=True)
    assert payload.parse_dns(nx)[1:6] == (True, "NXDOMAIN", "nope.example", "AAAA", [])  # type: ignore[index]


def test_dns_rejects_pointer_loops_and_junk() -> None:
    loop = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\x01a\x00\x00\x01\x00\x01" + \
        b"\xc0\x1d\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04\x01\x02\x03\x04"
    assert payload.parse_dns(loop) is None
    assert payload.parse_dns(b"\x00" * 11) is None
    assert payload.parse_dns(b"GET / HTTP/1.1\r\n\r\n") is None


def test_dns_over_tcp_is_recognised() -> None:
    q = gen.dns_message("axfr.example", 252, 3)
    app = payload.inspect(struct.pack("!H", len(q)) + q, b"")[0]
    assert app == "dns"


# -- hostile input ----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_inspect_never_raises_on_junk(a: bytes, b: bytes) -> None:
    payload.inspect(a, b)
    payload.parse_dns(a)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_handshakes_never_raise(data: st.DataObject) -> None:
    for blob in (gen.client_hello("x.example"), gen.server_hello_tls12(gen.certificate("a", "b")),
                 *smb_streams(True)):
        pos = data.draw(st.integers(0, len(blob) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=8))
        mutated = blob[:pos] + junk + blob[pos + len(junk):]
        payload.inspect(mutated, mutated)
        tls_hello.client_hello(mutated)
        tls_hello.server_hello(mutated)
