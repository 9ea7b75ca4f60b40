"""STIX 2.x bundles as indicators: the values a bundle's patterns and observables name.

``iocs.read_iocs`` calls ``read_bundle`` for a JSON ``--ioc`` file. What it takes, by design:

* ``indicator`` objects with ``pattern_type: stix`` (or none, as in STIX 2.0). The pattern is
  parsed for real by ``stix_pattern.parse_pattern`` (the whole grammar: observations,
  qualifiers, comparisons, literals).
* Every comparison ``path = 'value'`` or ``path IN ('a', 'b')`` whose path names something the
  rules can match becomes one indicator: ``domain-name:value``, ``ipv4-addr:value``,
  ``ipv6-addr:value``, ``url:value``, ``network-traffic:dst_ref.value``, ``file:name``,
  ``process:name`` and ``…hashes.'SHA-256'``/``'SHA-1'``/``MD5``.
* ``AND``, ``FOLLOWEDBY`` and qualifiers are not enforced: each supported comparison loads on
  its own. That is looser than the pattern, and what a sweep for known-bad values wants.
* Anything else (other paths, ``LIKE``/``MATCHES``/``ISSUBSET``/ordering operators, ``NOT``,
  ``EXISTS``) is listed per indicator as a problem; the indicator's supported comparisons
  still load. Patterns that do not parse and other pattern types (Sigma, YARA, Snort) are
  reported and skipped. Revoked objects are skipped.
* Cyber-observable objects at the top level of the bundle (``domain-name``, ``ipv4-addr``,
  ``ipv6-addr``, ``url``, ``file``) and inside STIX 2.0 ``observed-data`` load as indicators.
* ``family`` is the name of the malware, intrusion set, threat actor, campaign or tool an
  ``indicates`` relationship links the indicator to.

Values are checked and normalised by ``iocs.make_row``; this module only finds them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from deminer.detect.stix_pattern import Comparison, PatternError, parse_pattern
from deminer.textsafe import clean

_SCO_TYPES = ("domain-name", "ipv4-addr", "ipv6-addr", "url", "file")
_NAMED_TYPES = ("malware", "intrusion-set", "threat-actor", "campaign", "tool")
_HASHES = {"SHA256": "sha256", "SHA1": "sha1", "MD5": "md5"}
_VALUE_PATHS = {
    ("domain-name", "value"): "domain",
    ("ipv4-addr", "value"): "ip",
    ("ipv6-addr", "value"): "ip",
    ("url", "value"): "url",
    ("network-traffic", "dst_ref", "value"): "ip_or_domain",
    ("file", "name"): "filename",
    ("process", "name"): "process_name",
    ("process", "image_ref", "name"): "process_name",
    ("process", "binary_ref", "name"): "process_name",
}


class StixError(ValueError):
    """A JSON document that is not a STIX bundle (or STIX objects) at all."""


@dataclass(frozen=True)
class Candidate:
    """A value found in a bundle, before ``iocs`` checks it."""

    kind: str
    value: str
    family: str | None
    description: str | None
    ref: str                   # the STIX id (and path) it came from


def _path_text(path: tuple[str, ...]) -> str:
    rest = "".join(p if p.startswith("[") else "." + p for p in path[2:])
    return f"{path[0]}:{path[1]}{rest}"


def comparison_kind(comp: Comparison) -> tuple[str | None, str]:
    """The indicator kind a comparison yields, or ``None`` and the reason it is not loaded."""
    path = comp.path
    if len(path) >= 3 and path[-2].lower() == "hashes":
        algo = path[-1].upper().replace("-", "").replace("_", "")
        kind: str | None = _HASHES.get(algo)
        if kind is None:
            return None, f"hash {path[-1]} is not one of SHA-256, SHA-1, MD5"
    else:
        kind = _VALUE_PATHS.get(path)
        if kind is None:
            return None, f"no indicator kind for {_path_text(path)}"
    if comp.negated:
        return None, "negated comparison"
    if comp.op not in ("=", "==", "IN"):
        return None, f"operator {comp.op}"
    if not all(v.kind == "str" for v in comp.values):
        return None, "value is not a string"
    return kind, ""


def _ip_or_domain(kind: str, value: str) -> str:
    if kind == "ip_or_domain":
        try:
            ipaddress.ip_address(value.strip("[]"))
            return "ip"
        except ValueError:
            return "domain"
    return kind


def _single_host(value: str) -> str:
    # A /32 or /128 "network" is one address; other prefixes stay and fail as networks.
    for suffix in ("/32", "/128"):
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


def _sco(obj: dict[str, Any], ref: str) -> list[Candidate]:
    kind = obj.get("type")
    desc = f"STIX {kind} object"
    out: list[Candidate] = []
    if kind in ("domain-name", "ipv4-addr", "ipv6-addr", "url"):
        value = obj.get("value")
        if isinstance(value, str):
            k = {"domain-name": "domain", "url": "url"}.get(kind, "ip")
            out.append(Candidate(k, _single_host(value) if k == "ip" else value, None, desc, ref))
    elif kind == "file":
        hashes = obj.get("hashes")
        if isinstance(hashes, dict):
            for algo, value in sorted(hashes.items()):
                hkind = _HASHES.get(str(algo).upper().replace("-", "").replace("_", ""))
                if hkind and isinstance(value, str):
                    out.append(Candidate(hkind, value, None, desc, ref))
        name = obj.get("name")
        if isinstance(name, str) and not out:
            # A name alone is weak, but it is what the bundle says; with hashes, hashes win.
            out.append(Candidate("filename", name, None, desc, ref))
    return out


def _label(obj: dict[str, Any], index: int) -> str:
    ref = obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]"
    name = obj.get("name")
    return clean(f"{ref} ({name})" if isinstance(name, str) and name else ref, 200)


def _indicator(obj: dict[str, Any], index: int, family: str | None,
               problems: list[str]) -> list[Candidate]:
    label = _label(obj, index)
    ref = clean(obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]", 200)
    pattern_type = obj.get("pattern_type", "stix")
    if not isinstance(pattern_type, str) or pattern_type.lower() != "stix":
        problems.append(f"{label}: pattern_type {clean(pattern_type, 40)!r} is not loaded "
                        "(only STIX patterns)")
        return []
    pattern = obj.get("pattern")
    if not isinstance(pattern, str):
        problems.append(f"{label}: indicator without a pattern")
        return []
    try:
        comparisons = parse_pattern(pattern)
    except PatternError as exc:
        problems.append(f"{label}: pattern does not parse: {exc}")
        return []
    name, text = obj.get("name"), obj.get("description")
    desc = name if isinstance(name, str) and name else text if isinstance(text, str) else None
    out: list[Candidate] = []
    skipped: list[str] = []
    for comp in comparisons:
        kind, reason = comparison_kind(comp)
        if kind is None:
            skipped.append(f"{clean(comp.text, 160)} ({reason})")
            continue
        for tok in comp.values:
            k = _ip_or_domain(kind, tok.value)
            value = _single_host(tok.value) if k == "ip" else tok.value
            out.append(Candidate(k, value, family, desc[:300] if desc else None, ref))
    if skipped:
        problems.append(f"{label}: {len(skipped)} of {len(comparisons)} comparisons not loaded: "
                        + "; ".join(skipped[:10]) + (" …" if len(skipped) > 10 else ""))
    return out


def read_bundle(doc: Any) -> tuple[list[Candidate], list[str]]:
    """Indicator candidates of a STIX bundle (or a bare list of STIX objects) and the problems.

    Raises ``StixError`` when ``doc`` is not STIX at all.
    """
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        objects = doc.get("objects", [])
        if not isinstance(objects, list):
            raise StixError("the bundle's 'objects' is not a list")
    elif isinstance(doc, dict) and isinstance(doc.get("type"), str) and "--" in str(doc.get("id", "")):
        objects = [doc]                                  # one STIX object on its own
    elif isinstance(doc, list) and doc and all(isinstance(o, dict) and "type" in o for o in doc):
        objects = doc
    else:
        raise StixError("JSON but not a STIX 2 bundle (expected \"type\": \"bundle\" and objects)")

    names: dict[str, str] = {}
    for obj in objects:
        if isinstance(obj, dict) and obj.get("type") in _NAMED_TYPES and isinstance(obj.get("name"), str):
            names[str(obj.get("id"))] = clean(obj["name"], 100)
    families: dict[str, set[str]] = {}
    for obj in objects:
        if (isinstance(obj, dict) and obj.get("type") == "relationship"
                and obj.get("relationship_type") == "indicates"
                and str(obj.get("target_ref")) in names):
            families.setdefault(str(obj.get("source_ref")), set()).add(names[str(obj["target_ref"])])

    candidates: list[Candidate] = []
    problems: list[str] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            problems.append(f"objects[{index}]: not a STIX object")
            continue
        if obj.get("revoked") is True:
            continue
        otype = obj["type"]
        ref = clean(obj.get("id") if isinstance(obj.get("id"), str) else f"objects[{index}]", 200)
        if otype == "indicator":
            family = ", ".join(sorted(families.get(str(obj.get("id")), ()))) or None
            candidates.extend(_indicator(obj, index, family, problems))
        elif otype in _SCO_TYPES:
            candidates.extend(_sco(obj, ref))
        elif otype == "observed-data" and isinstance(obj.get("objects"), dict):
            # STIX 2.0 embeds its observables; 2.1 refers to top-level SCOs (loaded above).
            for key, sco in sorted(obj["objects"].items()):
                if isinstance(sco, dict):
                    candidates.extend(_sco(sco, f"{ref}/{clean(key, 40)}"))
    return candidates, problems
