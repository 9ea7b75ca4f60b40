"""TLS handshake facts from the first bytes of a flow: what a sensor sees before encryption.

``client_hello`` reads a ClientHello (possibly spread over several records and segments) into
the SNI, the JA3 string and MD5 (Salesforce's definition: legacy version, ciphers, extensions,
groups, point formats, GREASE removed) and JA4 (FoxIO's published algorithm, e.g.
``t13d1516h2_8daaf6152771_e5627efa2ab1``). ``server_hello`` reads the chosen version and, for
TLS 1.2 and older where the certificate travels in clear, the leaf certificate's subject and
issuer. Input is hostile: readers are bounded by the bytes given and return less, never raise.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

Facts = dict[str, Any]


def _text(raw: bytes, cap: int) -> str:
    return raw[:cap].decode("utf-8", "backslashreplace")


def _grease(v: int) -> bool:
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def _handshakes(buf: bytes) -> bytes:
    """The handshake-protocol bytes of consecutive TLS records (stops at other records)."""
    out, pos = bytearray(), 0
    while pos + 5 <= len(buf) and buf[pos] == 0x16 and buf[pos + 1] == 3:
        n = int.from_bytes(buf[pos + 3:pos + 5], "big")
        out += buf[pos + 5:pos + 5 + n]
        pos += 5 + n
    return bytes(out)


def _u16s(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw) - 1, 2)]


_TLS_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
              0x0304: "TLS 1.3"}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alpn_chars(first: bytes) -> str:
    if not first:
        return "00"
    a, b = first[:1], first[-1:]
    if a.isalnum() and b.isalnum() and a.isascii() and b.isascii():
        return (a + b).decode()
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def client_hello(buf: bytes) -> Facts | None:
    """SNI, JA3 (string and MD5), JA4 and the offered version of a ClientHello."""
    hs = _handshakes(buf)
    if len(hs) < 42 or hs[0] != 1:
        return None
    body = hs[4:4 + int.from_bytes(hs[1:4], "big")]
    legacy = int.from_bytes(body[0:2], "big")
    pos = 34 + 1 + body[34] if len(body) > 34 else len(body)
    n = int.from_bytes(body[pos:pos + 2], "big")
    ciphers = [c for c in _u16s(body[pos + 2:pos + 2 + n]) if not _grease(c)]
    pos += 2 + n
    pos += 1 + (body[pos] if pos < len(body) else 0)
    end = min(len(body), pos + 2 + int.from_bytes(body[pos:pos + 2], "big"))
    pos += 2
    exts: list[int] = []
    groups: list[int] = []
    formats: list[int] = []
    sigalgs: list[int] = []
    versions: list[int] = []
    alpn = b""
    sni: str | None = None
    while pos + 4 <= end:
        etype, elen = struct.unpack_from("!HH", body, pos)
        data = body[pos + 4:pos + 4 + elen]
        pos += 4 + elen
        if _grease(etype):
            continue
        exts.append(etype)
        if etype == 0 and len(data) >= 5 and data[2] == 0:
            sni = _text(data[5:5 + int.from_bytes(data[3:5], "big")], 255)
        elif etype == 10:
            groups = [g for g in _u16s(data[2:2 + int.from_bytes(data[:2], "big")]) if not _grease(g)]
        elif etype == 11 and data:
            formats = list(data[1:1 + data[0]])
        elif etype == 13:
            sigalgs = [s for s in _u16s(data[2:2 + int.from_bytes(data[:2], "big")]) if not _grease(s)]
        elif etype == 16 and len(data) >= 3:
            alpn = data[3:3 + data[2]]
        elif etype == 43 and data:
            versions = [v for v in _u16s(data[1:1 + data[0]]) if not _grease(v)]
    ja3 = ",".join([str(legacy)] + ["-".join(map(str, x)) for x in (ciphers, exts, groups, formats)])
    offered = max(versions) if versions else legacy
    rest = sorted(f"{e:04x}" for e in exts if e not in (0, 16))
    ext_text = ",".join(rest) + ("_" + ",".join(f"{s:04x}" for s in sigalgs) if sigalgs else "")
    ja4 = (f"t{_JA4_VERSIONS.get(offered, '00')}{'d' if 0 in exts else 'i'}"
           f"{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{_alpn_chars(alpn)}_"
           f"{_sha12(','.join(sorted(f'{c:04x}' for c in ciphers))) if ciphers else '0' * 12}_"
           f"{_sha12(ext_text) if rest else '0' * 12}")
    facts: Facts = {"ja3": ja3, "ja3_hash": hashlib.md5(ja3.encode(), usedforsecurity=False).hexdigest(),
                    "ja4": ja4, "version": _TLS_NAMES.get(offered, f"0x{offered:04x}")}
    if sni is not None:
        facts["sni"] = sni
    if alpn:
        facts["alpn"] = _text(alpn, 64)
    return facts


_OIDS = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
         "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
         "0.9.2342.19200300.100.1.25": "DC"}


def _der(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``; ValueError if bad."""
    if pos + 2 > len(buf):
        raise ValueError("short")
    tag, n, pos = buf[pos], buf[pos + 1], pos + 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > len(buf):
            raise ValueError("length")
        n, pos = int.from_bytes(buf[pos:pos + k], "big"), pos + k
    return tag, pos, pos + n


def _oid(raw: bytes) -> str:
    parts, value = [], 0
    for b in raw:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        return ""
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def _name(buf: bytes, start: int, end: int) -> str:
    """An X.501 Name as RFC 4514 text (last RDN first, as OpenSSL's ``-nameopt RFC2253``)."""
    rdns, pos = [], start
    while pos < end:
        _, s, e = _der(buf, pos)          # SET
        pos, atoms = e, []
        while s < e:
            _, as_, ae = _der(buf, s)     # SEQUENCE { OID, value }
            _, os_, oe = _der(buf, as_)
            vtag, vs, ve = _der(buf, oe)
            raw = buf[vs:ve]
            value = raw.decode("utf-16-be", "backslashreplace") if vtag == 30 else _text(raw, 256)
            oid = _oid(buf[os_:oe])
            atoms.append(f"{_OIDS.get(oid, oid)}={value}")
            s = ae
        rdns.append("+".join(atoms))
    return ",".join(reversed(rdns))


def certificate_names(der: bytes) -> tuple[str, str] | None:
    """(subject, issuer) of a DER certificate, read only as far as the subject."""
    try:
        _, pos, _ = _der(der, 0)                       # Certificate
        _, pos, _ = _der(der, pos)                     # TBSCertificate
        tag, _, end = _der(der, pos)
        if tag == 0xA0:                                # [0] version
            pos = end
        fields = []
        for _ in range(5):                             # serial, sigalg, issuer, validity, subject
            _, s, e = _der(der, pos)
            fields.append((s, e))
            pos = e
        if fields[4][1] > len(der):
            return None
        return _name(der, *fields[4]), _name(der, *fields[2])
    except (ValueError, IndexError):
        return None


def server_hello(buf: bytes) -> Facts:
    """Chosen version from a ServerHello and the leaf certificate's names (TLS ≤ 1.2)."""
    hs, pos, facts = _handshakes(buf), 0, {}
    while pos + 4 <= len(hs):
        htype, n = hs[pos], int.from_bytes(hs[pos + 1:pos + 4], "big")
        body = hs[pos + 4:pos + 4 + n]
        pos += 4 + n
        if htype == 2 and len(body) >= 38:
            version = int.from_bytes(body[0:2], "big")
            epos = 40 + body[34]                  # after sid, cipher, compression, ext length
            while epos + 4 <= len(body):       # supported_versions tells TLS 1.3 apart
                etype, elen = struct.unpack_from("!HH", body, epos)
                if etype == 43 and elen == 2:
                    version = int.from_bytes(body[epos + 4:epos + 6], "big")
                epos += 4 + elen
            facts["version"] = _TLS_NAMES.get(version, f"0x{version:04x}")
        elif htype == 11 and len(body) >= 6:
            names = certificate_names(body[6:6 + int.from_bytes(body[3:6], "big")])
            if names:
                facts["cert_subject"], facts["cert_issuer"] = names
    return facts
