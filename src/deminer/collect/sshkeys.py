"""SSH key formats, read for their metadata only: public key lines, private key files, fingerprints.

Used by the lateral collector (private keys, known_hosts) and the persistence collector
(authorized_keys). Standard library only, Python 3.6 syntax.

- ``fingerprint(blob)`` is what ``ssh-keygen -l`` prints: ``SHA256:`` + unpadded base64 of
  the SHA-256 of the public key blob.
- ``parse_public_key_line`` reads an authorized_keys / ``.pub`` line; ``parse_known_hosts_line``
  a known_hosts line.
- ``parse_private_key`` recognises openssh-key-v1, PEM (PKCS#1 RSA, EC, DSA), PKCS#8 (plain
  and encrypted) and PuTTY ``.ppk`` files and returns their type, whether a passphrase protects
  them, the public blob when it can be had without the passphrase, and the comment.

Nothing here keeps private key material: the private parts are skipped over, never returned.
"""

import base64
import binascii
import hashlib
import re
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple

# Key types sshd accepts in authorized_keys (certificates add "-cert-v01@openssh.com").
KEY_TYPES = frozenset((
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ssh-ed448",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com", "sk-ssh-ed25519@openssh.com",
    "rsa-sha2-256", "rsa-sha2-512",
))
_CERT_SUFFIX = "-cert-v01@openssh.com"

PrivateKey = NamedTuple("PrivateKey", [
    ("format", str),        # openssh, pkcs1, sec1, dsa, pkcs8, pkcs8_encrypted, putty
    ("key_type", str),      # ssh name (ssh-rsa, ssh-ed25519, ...) or "" when unknown
    ("encrypted", bool),
    ("public_blob", Optional[bytes]),
    ("comment", str),
    ("problem", str),       # "" or why the file could not be read completely
])

# DER object identifiers (content bytes) the PEM/PKCS#8 readers need.
_OID_RSA = bytes.fromhex("2a864886f70d010101")
_OID_EC = bytes.fromhex("2a8648ce3d0201")
_OID_DSA = bytes.fromhex("2a8648ce380401")
_CURVES = {
    bytes.fromhex("2a8648ce3d030107"): "nistp256",
    bytes.fromhex("2b81040022"): "nistp384",
    bytes.fromhex("2b81040023"): "nistp521",
}
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_PRIVATE_LABELS = ("OPENSSH PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY",
                   "PRIVATE KEY", "ENCRYPTED PRIVATE KEY")


def fingerprint(blob: bytes) -> str:
    """The OpenSSH SHA-256 fingerprint of a public key blob, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def is_key_type(name: str) -> bool:
    return name in KEY_TYPES or (name.endswith(_CERT_SUFFIX) and
                                 name[:-len(_CERT_SUFFIX)] in KEY_TYPES)


# -- SSH wire format -------------------------------------------------------------------------
class _Reader(object):
    """Reads the SSH wire encoding (uint32-length-prefixed strings) with bounds checks."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def string(self) -> bytes:
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated key data")
        (size,) = struct.unpack(">I", self.data[self.pos:self.pos + 4])
        start = self.pos + 4
        if start + size > len(self.data):
            raise ValueError("truncated key data")
        self.pos = start + size
        return self.data[start:self.pos]

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated key data")
        self.pos += 4
        return int(struct.unpack(">I", self.data[self.pos - 4:self.pos])[0])

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("truncated key data")
        self.pos += 1
        return self.data[self.pos - 1]


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def blob_type(blob: bytes) -> str:
    """The key type named at the start of a public key blob ("" when unreadable)."""
    try:
        return _Reader(blob).string().decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return ""


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key data is not valid base64") from None


# -- public key lines -------------------------------------------------------------------------
def _split_options(line: str) -> Tuple[str, str]:
    """Split authorized_keys options (quoted values may hold spaces) from the rest."""
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in " \t" and not quoted:
            return line[:i], line[i:].lstrip(" \t")
        i += 1
    if quoted:
        raise ValueError("unterminated quote in key options")
    return line, ""


def parse_public_key_line(line: str) -> Optional[Tuple[str, str, bytes, str]]:
    """``(options, key_type, blob, comment)`` of an authorized_keys or ``.pub`` line.

    Returns None for blank and comment lines; raises ValueError (with the reason) for a line
    sshd would not accept as a key: no key type, bad base64, or a blob of another type.
    """
    text = line.strip().lstrip("\ufeff")
    if not text or text.startswith("#"):
        return None
    options = ""
    first = text.split(None, 1)[0]
    if not is_key_type(first):
        options, text = _split_options(text)
        if not text:
            raise ValueError("no key type")
    parts = text.split(None, 2)
    key_type = parts[0]
    if not is_key_type(key_type):
        raise ValueError("unknown key type %r" % key_type[:40])
    if len(parts) < 2:
        raise ValueError("no key data after %s" % key_type)
    blob = _b64(parts[1])
    inner = blob_type(blob)
    if inner != key_type:
        raise ValueError("key data is %r, not %s" % (inner[:40], key_type))
    return options, key_type, blob, parts[2].strip() if len(parts) > 2 else ""


def parse_known_hosts_line(line: str) -> Optional[Tuple[str, str, str, bytes, str]]:
    """``(marker, host_patterns, key_type, blob, comment)`` of a known_hosts line.

    ``marker`` is ``@cert-authority``, ``@revoked`` or "". Hashed host fields (``|1|salt|hash``)
    are returned as found. None for blank and comment lines; ValueError for broken ones.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    marker = ""
    if text.startswith("@"):
        pieces = text.split(None, 1)
        marker, text = pieces[0], pieces[1] if len(pieces) > 1 else ""
    parts = text.split(None, 3)
    if len(parts) < 3:
        raise ValueError("expected host patterns, key type and key data")
    if not is_key_type(parts[1]):
        raise ValueError("unknown key type %r" % parts[1][:40])
    blob = _b64(parts[2])
    if blob_type(blob) != parts[1]:
        raise ValueError("key data does not match its type %s" % parts[1])
    return marker, parts[0], parts[1], blob, parts[3].strip() if len(parts) > 3 else ""


# -- private keys -----------------------------------------------------------------------------
def looks_private(head: bytes) -> bool:
    """True when a file's first bytes start a private key this module can read."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"PuTTY-User-Key-File-"):
        return True
    match = _PEM_BEGIN.match(text[:80].decode("ascii", "replace"))
    return match is not None and match.group(1) in _PRIVATE_LABELS


def parse_private_key(data: bytes) -> Optional[PrivateKey]:
    """Metadata of a private key file's content, or None when it is not one."""
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n").decode("ascii", "replace")
    if text.startswith("PuTTY-User-Key-File-"):
        return _putty(text)
    match = _PEM_BEGIN.match(text)
    label = match.group(1) if match else ""
    if label not in _PRIVATE_LABELS:
        return None
    fmt = {"OPENSSH PRIVATE KEY": "openssh", "RSA PRIVATE KEY": "pkcs1",
           "EC PRIVATE KEY": "sec1", "DSA PRIVATE KEY": "dsa", "PRIVATE KEY": "pkcs8",
           "ENCRYPTED PRIVATE KEY": "pkcs8_encrypted"}[label]
    guess = {"pkcs1": "ssh-rsa", "dsa": "ssh-dss", "sec1": "ecdsa"}.get(fmt, "")
    try:
        headers, body = _pem_body(text, label)
    except ValueError as exc:
        return PrivateKey(fmt, guess, False, None, "", str(exc))
    if fmt == "openssh":
        return _openssh(body)
    if fmt == "pkcs8_encrypted":
        return PrivateKey(fmt, "", True, None, "", "")
    if "ENCRYPTED" in headers.get("proc-type", "").upper():
        return PrivateKey(fmt, guess, True, None, "", "")
    try:
        key_type, blob = _der_public(fmt, body)
    except ValueError as exc:
        return PrivateKey(fmt, guess, False, None, "", "cannot read the key: %s" % exc)
    return PrivateKey(fmt, key_type or guess, False, blob, "", "")


def _pem_body(text: str, label: str) -> Tuple[Dict[str, str], bytes]:
    """RFC 1421 headers (lower-case names) and the decoded body between the markers."""
    end = text.find("-----END %s-----" % label)
    if end < 0:
        raise ValueError("no END line (truncated?)")
    lines = text[:end].splitlines()[1:]
    headers = {}  # type: Dict[str, str]
    while lines and ":" in lines[0]:
        name, _, value = lines.pop(0).partition(":")
        headers[name.strip().lower()] = value.strip()
    body = "".join(line.strip() for line in lines)
    try:
        return headers, base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key body is not valid base64") from None


# Fields of each key type in the openssh-key-v1 private section: s = string/mpint, b = byte.
_PRIVATE_FIELDS = {
    "ssh-rsa": "ssssss", "ssh-dss": "sssss", "ssh-ed25519": "ss",
    "ecdsa-sha2-nistp256": "sss", "ecdsa-sha2-nistp384": "sss", "ecdsa-sha2-nistp521": "sss",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sssbss", "sk-ssh-ed25519@openssh.com": "ssbss",
}


def _openssh(body: bytes) -> PrivateKey:
    """openssh-key-v1: the public blob is stored in clear; the comment only when unencrypted."""
    magic = b"openssh-key-v1\x00"
    if not body.startswith(magic):
        return PrivateKey("openssh", "", False, None, "", "not an openssh-key-v1 file")
    reader = _Reader(body[len(magic):])
    cipher = ""
    try:
        cipher = reader.string().decode("ascii", "replace")
        reader.string()  # kdf name
        reader.string()  # kdf options (salt, rounds)
        count = reader.uint32()
        if count < 1 or count > 64:
            raise ValueError("implausible key count %d" % count)
        blob = reader.string()
        for _ in range(count - 1):
            reader.string()
        private = reader.string()
    except ValueError as exc:
        return PrivateKey("openssh", "", cipher not in ("", "none"), None, "", str(exc))
    key_type = blob_type(blob)
    if cipher != "none":
        return PrivateKey("openssh", key_type, True, blob, "", "")
    comment, problem = "", ""
    try:
        inner = _Reader(private)
        if inner.uint32() != inner.uint32():
            raise ValueError("check bytes differ (corrupt key)")
        inner_type = inner.string().decode("ascii", "replace")
        fields = _PRIVATE_FIELDS.get(inner_type)
        if fields is not None:
            for kind in fields:
                if kind == "b":
                    inner.byte()
                else:
                    inner.string()
            comment = inner.string().decode("utf-8", "backslashreplace")
    except ValueError as exc:
        problem = str(exc)
    return PrivateKey("openssh", key_type, False, blob, comment, problem)


def _putty(text: str) -> PrivateKey:
    """PuTTY .ppk (v2 and v3): headers in clear, public blob in ``Public-Lines``."""
    lines = text.splitlines()
    key_type = lines[0].partition(":")[2].strip()
    encryption, comment, blob, problem = "", "", None, ""
    for i, line in enumerate(lines):
        name, _, value = line.partition(":")
        if name == "Encryption":
            encryption = value.strip()
        elif name == "Comment":
            comment = value.strip()
        elif name == "Public-Lines":
            try:
                count = int(value.strip())
                blob = _b64("".join(x.strip() for x in lines[i + 1:i + 1 + count]))
            except ValueError as exc:
                problem = "bad Public-Lines: %s" % exc
    if blob is not None and blob_type(blob) != key_type:
        problem = problem or "public key does not match the declared type"
    return PrivateKey("putty", key_type, encryption not in ("", "none"), blob, comment, problem)


# -- DER (PKCS#1, SEC1, PKCS#8) ---------------------------------------------------------------
def _der(data: bytes, pos: int) -> Tuple[int, int, int]:
    """``(tag, start, end)`` of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        size = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + size


def _der_items(data: bytes, start: int, end: int) -> List[Tuple[int, bytes]]:
    """The children of a constructed element, as ``(tag, content)``."""
    items = []
    pos = start
    while pos < end:
        tag, s, e = _der(data, pos)
        items.append((tag, data[s:e]))
        pos = e
    return items


def _sequence(data: bytes) -> List[Tuple[int, bytes]]:
    tag, start, end = _der(data, 0)
    if tag != 0x30:
        raise ValueError("not a DER SEQUENCE")
    return _der_items(data, start, end)


def _ints(items: List[Tuple[int, bytes]], first: int, count: int) -> List[bytes]:
    values = [content for tag, content in items[first:first + count] if tag == 0x02]
    if len(values) != count:
        raise ValueError("missing INTEGER fields")
    return values


def _ec_public(content: bytes, curve: Optional[str]) -> Tuple[str, Optional[bytes]]:
    """SEC1 ECPrivateKey -> ecdsa blob when the curve and the public point are present."""
    point = None
    for tag, value in _sequence(content)[2:]:
        if tag == 0xA0:
            _, s, e = _der(value, 0)
            curve = _CURVES.get(value[s:e], curve)
        elif tag == 0xA1:
            _, s, e = _der(value, 0)
            point = value[s + 1:e]  # skip the BIT STRING's unused-bits byte
    if curve is None:
        return "ecdsa", None
    name = "ecdsa-sha2-" + curve
    if not point:
        return name, None
    return name, _string(name.encode()) + _string(curve.encode()) + _string(point)


def _der_public(fmt: str, body: bytes) -> Tuple[str, Optional[bytes]]:
    """The public key blob derivable from an unencrypted DER private key."""
    if fmt == "pkcs1":  # RSAPrivateKey: version, n, e, d, ...
        n, e = _ints(_sequence(body), 1, 2)
        return "ssh-rsa", _string(b"ssh-rsa") + _string(e) + _string(n)
    if fmt == "dsa":  # version, p, q, g, y, x
        p, q, g, y = _ints(_sequence(body), 1, 4)
        return "ssh-dss", _string(b"ssh-dss") + b"".join(_string(v) for v in (p, q, g, y))
    if fmt == "sec1":
        return _ec_public(body, None)
    items = _sequence(body)  # PKCS#8: version, AlgorithmIdentifier, OCTET STRING
    if len(items) < 3 or items[1][0] != 0x30 or items[2][0] != 0x04:
        raise ValueError("not a PKCS#8 PrivateKeyInfo")
    algorithm = _der_items(items[1][1], 0, len(items[1][1]))
    oid = algorithm[0][1] if algorithm else b""
    if oid == _OID_RSA:
        return _der_public("pkcs1", items[2][1])
    if oid == _OID_EC:
        curve = _CURVES.get(algorithm[1][1]) if len(algorithm) > 1 else None
        return _ec_public(items[2][1], curve)
    if oid == _OID_DSA and len(algorithm) > 1:
        p, q, g = _ints(_der_items(algorithm[1][1], 0, len(algorithm[1][1])), 0, 3)
        _, start, end = _der(items[2][1], 0)
        x = int.from_bytes(items[2][1][start:end], "big")
        y_int = pow(int.from_bytes(g, "big"), x, int.from_bytes(p, "big"))
        y = y_int.to_bytes((y_int.bit_length() + 8) // 8, "big")
        return "ssh-dss", _string(b"ssh-dss") + b"".join(_string(v) for v in (p, q, g, y))
    if oid == bytes.fromhex("2b6570"):
        return "ssh-ed25519", None  # deriving the public half needs curve arithmetic
    return "", None
