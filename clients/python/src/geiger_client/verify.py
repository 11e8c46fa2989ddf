"""Offline verification of geiger records, as ``geiger verify`` does it.

Every check of docs/DERIVATION.md section 7: the record's shape (the wire
types of the OpenAPI document), content-hash ID, key validity and Ed25519
signature, derivation name and spec limits, entropy hash and segment
accounting, re-derivation of the result from exactly the recorded bytes,
and, when the previous record is at hand, the link to it.

Nothing here does I/O: records and key sets are parsed JSON values (use
:func:`geiger_client.canonical.parse_json` to keep large integers exact).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import CanonicalError, canonical_bytes
from .derive import DERIVATION_V1, NeedMoreEntropy, derive
from .derive_v2 import DERIVATION_V2, derive_v2

__all__ = [
    "VerifyError",
    "VerifyReport",
    "record_id",
    "key_id_of",
    "verify_chain",
    "verify_draw",
    "verify_lookup",
    "verify_record",
    "check_spec",
    "DRAW_BODY_FIELDS",
    "CHAIN_BODY_FIELDS",
]

JSON = Any
MAX_VALUES = 10_000
MAX_BYTES = 65_536
MAX_SELECTION_N = (1 << 53) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
U32_MAX, U64_MAX = (1 << 32) - 1, (1 << 64) - 1

#: Members of a signed draw body (docs/DERIVATION.md section 6).
DRAW_BODY_FIELDS = (
    "type", "chain", "position", "previous", "tag", "customer", "request_id", "spec",
    "result", "issued_at", "ledger_index", "entropy", "derivation", "key_id",
)
#: Members of a signed chain body.
CHAIN_BODY_FIELDS = ("type", "customer", "tag", "created_at", "ledger_index", "key_id")
ENTROPY_FIELDS = ("segments", "hex", "sha256")
SEGMENT_FIELDS = ("device", "chunk_seq", "offset", "length")
SIGNATURE_FIELDS = ("alg", "key_id", "value")
KEY_FIELDS = ("key_id", "alg", "public_key", "valid_from", "valid_until")
SPEC_FIELDS = {
    "integers": ("kind", "min", "max", "count", "unique"),
    "permutation": ("kind", "n"),
    "selection": ("kind", "k", "n"),
    "bytes": ("kind", "count"),
}

_ID_RE = re.compile(r"^(ch|dr)_[a-z2-7]{40}$")
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")


class VerifyError(Exception):
    """A record failed verification. ``code`` says which check failed
    (``id_mismatch``, ``bad_signature``, ``result_mismatch``, ...), the
    message says it for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class VerifyReport:
    """What was checked, in order, for a human-readable report."""

    kind: str
    id: str
    checks: List[str] = field(default_factory=list)


# ---- shape -----------------------------------------------------------------

def _malformed(where: str, why: str) -> VerifyError:
    return VerifyError("malformed_record", f"`{where}` {why}")


def _obj(value: JSON, where: str, fields: Sequence[str], optional: Sequence[str] = ()) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(where, "is not an object")
    for name in fields:
        if name not in value and name not in optional:
            raise _malformed(f"{where}.{name}", "is missing")
    for name in value:
        if name not in fields:
            raise _malformed(f"{where}.{name}", "is not a field of this record")
    return value


def _int(value: JSON, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _malformed(where, f"must be an integer in [{lo}, {hi}]")
    return value


def _str(value: JSON, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(where, "must be a string")
    return value


def _record_id(value: JSON, where: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise _malformed(where, "is not a record ID (ch_ or dr_ and 40 base32 characters)")
    return value


def _check_spec_shape(spec: JSON, where: str) -> Dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("kind") not in SPEC_FIELDS:
        raise _malformed(f"{where}.kind", "is not integers, permutation, selection or bytes")
    kind = spec["kind"]
    _obj(spec, where, SPEC_FIELDS[kind], optional=("unique",) if kind == "integers" else ())
    if kind == "integers":
        _int(spec["min"], f"{where}.min", I64_MIN, I64_MAX)
        _int(spec["max"], f"{where}.max", I64_MIN, I64_MAX)
        _int(spec["count"], f"{where}.count", 0, U32_MAX)
        if not isinstance(spec.get("unique", False), bool):
            raise _malformed(f"{where}.unique", "must be true or false")
    elif kind == "permutation":
        _int(spec["n"], f"{where}.n", 0, U32_MAX)
    elif kind == "selection":
        _int(spec["k"], f"{where}.k", 0, U32_MAX)
        _int(spec["n"], f"{where}.n", 0, U64_MAX)
    else:
        _int(spec["count"], f"{where}.count", 0, U32_MAX)
    return spec


def _check_draw_body_shape(draw: JSON) -> None:
    _obj(draw, "draw", ("id",) + DRAW_BODY_FIELDS)
    if draw["type"] != "draw":
        raise _malformed("draw.type", "must be \"draw\"")
    _record_id(draw["id"], "draw.id")
    _record_id(draw["chain"], "draw.chain")
    _record_id(draw["previous"], "draw.previous")
    _int(draw["position"], "draw.position", 0, U64_MAX)
    _int(draw["ledger_index"], "draw.ledger_index", 0, U64_MAX)
    for name in ("tag", "customer", "issued_at", "derivation", "key_id"):
        _str(draw[name], f"draw.{name}")
    if draw["request_id"] is not None:
        _str(draw["request_id"], "draw.request_id")
    _check_spec_shape(draw["spec"], "draw.spec")
    result = draw["result"]
    if isinstance(result, dict) and "values" in result:
        _obj(result, "draw.result", ("values",))
        if not isinstance(result["values"], list):
            raise _malformed("draw.result.values", "must be a list")
        for i, v in enumerate(result["values"]):
            _int(v, f"draw.result.values[{i}]", I64_MIN, I64_MAX)
    elif isinstance(result, dict) and "hex" in result:
        _obj(result, "draw.result", ("hex",))
        _str(result["hex"], "draw.result.hex")
    else:
        raise _malformed("draw.result", "must be {\"values\": [...]} or {\"hex\": \"...\"}")
    entropy = _obj(draw["entropy"], "draw.entropy", ENTROPY_FIELDS)
    _str(entropy["hex"], "draw.entropy.hex")
    _str(entropy["sha256"], "draw.entropy.sha256")
    if not isinstance(entropy["segments"], list):
        raise _malformed("draw.entropy.segments", "must be a list")
    for i, seg in enumerate(entropy["segments"]):
        where = f"draw.entropy.segments[{i}]"
        _obj(seg, where, SEGMENT_FIELDS)
        _str(seg["device"], f"{where}.device")
        _int(seg["chunk_seq"], f"{where}.chunk_seq", 0, U64_MAX)
        _int(seg["offset"], f"{where}.offset", 0, U32_MAX)
        _int(seg["length"], f"{where}.length", 0, U32_MAX)


def _check_signature_shape(sig: JSON) -> Dict[str, Any]:
    checked = _obj(sig, "signature", SIGNATURE_FIELDS)
    for name in SIGNATURE_FIELDS:
        _str(checked[name], f"signature.{name}")
    return checked


# ---- pieces ----------------------------------------------------------------

def record_id(kind: str, canonical_body: bytes) -> str:
    """``ch_``/``dr_`` and the first 25 bytes of SHA-256 of the canonical
    body in lowercase unpadded base32 (40 characters)."""
    prefix = {"chain": "ch_", "draw": "dr_"}[kind]
    digest = hashlib.sha256(canonical_body).digest()[:25]
    return prefix + base64.b32encode(digest).decode("ascii").lower()


def key_id_of(public_key: bytes) -> str:
    """``k_`` and the first 8 bytes of SHA-256 of the public key, in hex."""
    return "k_" + hashlib.sha256(public_key).digest()[:8].hex()


def _strict_b64(text: str, length: int) -> Optional[bytes]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Canonical form only (padding and zero trailing bits), as the Rust
    # verifier's decoder requires.
    if len(raw) != length or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def _decompress(raw: bytes) -> Optional[Tuple[int, int]]:
    """The edwards25519 point 32 bytes encode, or None when they encode none."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return None
    yy = y * y % _P
    u, v = (yy - 1) % _P, (_D * yy + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx != u:
        if vxx != (-u) % _P:
            return None
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x == 0 and sign == 1:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x, y


def _is_curve_point(raw: bytes) -> bool:
    return _decompress(raw) is not None


def _is_small_order(point: Tuple[int, int]) -> bool:
    """True when 8 times the point is the identity: one of the 8 points of
    small order, which RFC 8032's strict verification (and the Rust
    verifier's verify_strict) refuses as a public key or as R. OpenSSL does
    not, so this library checks it itself."""
    x, y = point
    for _ in range(3):  # doubling on -x^2 + y^2 = 1 + d x^2 y^2
        xy = x * y % _P
        dxy = _D * xy * xy % _P
        x, y = (2 * xy * pow(1 + dxy, _P - 2, _P) % _P,
                (y * y + x * x) * pow(1 - dxy, _P - 2, _P) % _P)
    return x == 0 and y == 1


def parse_time(text: str) -> Tuple[int, int]:
    """RFC 3339 UTC (``...Z``) as (seconds since 1970, nanoseconds)."""
    m = _TIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise VerifyError("bad_timestamp", f"timestamp `{text}` is not RFC 3339")
    import calendar

    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise VerifyError("bad_timestamp", f"timestamp `{text}` is not RFC 3339")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    nanos = int((m.group(7) or "").ljust(9, "0"))
    return seconds, nanos


def _find_key(keys: JSON, key_id: str) -> Optional[Dict[str, Any]]:
    key_list = keys.get("keys") if isinstance(keys, dict) else None
    if not isinstance(key_list, list):
        raise VerifyError("bad_key_set", "the key set is not `GET /v1/keys` JSON")
    for key in key_list:
        if isinstance(key, dict) and key.get("key_id") == key_id:
            return key
    return None


def _check_signature(keys: JSON, sig: Dict[str, Any], record_key_id: str, signed_at: str,
                     message: bytes, report: VerifyReport) -> None:
    if sig["alg"] != "ed25519":
        raise VerifyError("unsupported_algorithm", f"signature algorithm `{sig['alg']}` is not ed25519")
    if sig["key_id"] != record_key_id:
        raise VerifyError("key_id_mismatch",
                          f"the signature names key {sig['key_id']} but the record names key {record_key_id}")
    key = _find_key(keys, record_key_id)
    if key is None:
        raise VerifyError("unknown_key", f"key {record_key_id} is not in the key set")

    def bad_key(reason: str) -> VerifyError:
        return VerifyError("bad_key", f"key {record_key_id} is malformed: {reason}")

    try:
        _obj(key, "key", KEY_FIELDS, optional=("valid_until",))
    except VerifyError as e:
        raise bad_key(e.message) from None
    raw = _strict_b64(key["public_key"], 32) if isinstance(key["public_key"], str) else None
    if raw is None:
        raise bad_key("public_key is not 32 bytes of base64")
    if not _is_curve_point(raw):
        raise bad_key("not an Ed25519 point")
    if key_id_of(raw) != key["key_id"]:
        raise bad_key("key_id does not match the public key")
    at = parse_time(signed_at)
    start = parse_time(key["valid_from"])
    until = key.get("valid_until")
    end = parse_time(until) if until is not None else None
    if at < start or (end is not None and at >= end):
        raise VerifyError("key_not_valid_at", f"key {record_key_id} was not valid at {signed_at}")
    report.checks.append(f"key {record_key_id} is known and was valid at {signed_at}")

    signature = _strict_b64(sig["value"], 64)
    if signature is None:
        raise VerifyError("malformed_signature", "the signature is malformed")
    # As the Rust verifier's verify_strict: S < L, R a point, and neither
    # the key nor R of small order (OpenSSL checks only the first).
    public_point, r_point = _decompress(raw), _decompress(signature[:32])
    if (int.from_bytes(signature[32:], "little") >= 2**252 + 27742317777372353535851937790883648493
            or public_point is None or r_point is None
            or _is_small_order(public_point) or _is_small_order(r_point)):
        raise VerifyError("bad_signature", "the signature does not match the record")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise VerifyError("bad_signature", "the signature does not match the record") from None
    report.checks.append("Ed25519 signature over the canonical record is valid")


def _canonical(body: Dict[str, Any]) -> bytes:
    try:
        return canonical_bytes(body)
    except CanonicalError as e:
        raise VerifyError("canonical", f"the record cannot be canonicalised: {e}") from None


def _check_id(kind: str, claimed: str, canonical_body: bytes, report: VerifyReport) -> None:
    actual = record_id(kind, canonical_body)
    if actual != claimed:
        raise VerifyError("id_mismatch", f"the ID is {claimed} but the record hashes to {actual}")
    report.checks.append(f"ID {claimed} is the hash of the record")


def check_spec(spec: Mapping[str, Any]) -> None:
    """The hard limits of docs/DERIVATION.md section 5 (``invalid_spec``)."""
    def bad(msg: str) -> VerifyError:
        return VerifyError("invalid_spec", f"the spec breaks a limit: {msg}")

    kind = spec["kind"]
    if kind == "integers":
        if not 1 <= spec["count"] <= MAX_VALUES:
            raise bad(f"`count` must be between 1 and {MAX_VALUES}, got {spec['count']}")
        if spec["min"] > spec["max"]:
            raise bad(f"`min` ({spec['min']}) must not be greater than `max` ({spec['max']})")
        span = spec["max"] - spec["min"] + 1
        if spec.get("unique", False) and spec["count"] > span:
            raise bad(f"`unique` needs at least `count` ({spec['count']}) values in [min, max], "
                      f"which holds only {span}")
    elif kind == "permutation":
        if not 1 <= spec["n"] <= MAX_VALUES:
            raise bad(f"`n` must be between 1 and {MAX_VALUES}, got {spec['n']}")
    elif kind == "selection":
        if not 1 <= spec["n"] <= MAX_SELECTION_N:
            raise bad(f"`n` must be between 1 and {MAX_SELECTION_N}, got {spec['n']}")
        if not 1 <= spec["k"] <= MAX_VALUES:
            raise bad(f"`k` must be between 1 and {MAX_VALUES}, got {spec['k']}")
        if spec["k"] > spec["n"]:
            raise bad(f"`k` ({spec['k']}) must not be greater than `n` ({spec['n']})")
    elif not 1 <= spec["count"] <= MAX_BYTES:
        raise bad(f"`count` must be between 1 and {MAX_BYTES}, got {spec['count']}")


# ---- records ---------------------------------------------------------------

def verify_chain(chain: JSON, keys: JSON) -> VerifyReport:
    """Verifies a chain's genesis record (the 201 body of ``POST
    /v1/chains``): shape, ID and signature."""
    _obj(chain, "record", ("id", "chain", "signature"))
    record = _obj(chain["chain"], "chain", ("id",) + CHAIN_BODY_FIELDS)
    if record["type"] != "chain":
        raise _malformed("chain.type", "must be \"chain\"")
    _record_id(chain["id"], "id")
    _record_id(record["id"], "chain.id")
    for name in ("customer", "tag", "created_at", "key_id"):
        _str(record[name], f"chain.{name}")
    _int(record["ledger_index"], "chain.ledger_index", 0, U64_MAX)
    sig = _check_signature_shape(chain["signature"])

    report = VerifyReport(kind="chain", id=chain["id"])
    if chain["id"] != record["id"]:
        raise VerifyError("id_mismatch", f"the ID is {chain['id']} but the record hashes to {record['id']}")
    body = {k: v for k, v in record.items() if k != "id"}
    message = _canonical(body)
    _check_id("chain", chain["id"], message, report)
    _check_signature(keys, sig, record["key_id"], record["created_at"], message, report)
    return report


def verify_draw(response: JSON, keys: JSON, previous: Optional[JSON] = None) -> VerifyReport:
    """Verifies a draw (the 201 body of ``POST /v1/draws``, or the
    ``response`` of a lookup). ``previous``, when given, is the record the
    draw names as ``previous``: a chain's 201 body or a draw's."""
    _obj(response, "record", ("draw", "signature"))
    draw = response["draw"]
    _check_draw_body_shape(draw)
    sig = _check_signature_shape(response["signature"])
    report = VerifyReport(kind="draw", id=draw["id"])

    body = {k: v for k, v in draw.items() if k != "id"}
    message = _canonical(body)
    _check_id("draw", draw["id"], message, report)
    _check_signature(keys, sig, draw["key_id"], draw["issued_at"], message, report)

    # Every version ever issued keeps verifying; the record names its own.
    derivations = {DERIVATION_V1: derive, DERIVATION_V2: derive_v2}
    derive_fn = derivations.get(draw["derivation"]) if isinstance(draw["derivation"], str) else None
    if derive_fn is None:
        raise VerifyError("unsupported_derivation",
                          f"derivation `{draw['derivation']}` is not supported by this verifier")
    spec = draw["spec"]
    check_spec(spec)

    entropy_rec = draw["entropy"]
    try:
        entropy = bytes.fromhex(entropy_rec["hex"]) if len(entropy_rec["hex"]) % 2 == 0 else None
    except ValueError:
        entropy = None
    if entropy is None or any(c.isspace() for c in entropy_rec["hex"]):
        raise VerifyError("entropy_not_hex", "the entropy is not valid hex")
    actual_hash = hashlib.sha256(entropy).hexdigest()
    if actual_hash != entropy_rec["sha256"]:
        raise VerifyError("entropy_hash_mismatch",
                          f"the entropy hashes to {actual_hash}, the record says {entropy_rec['sha256']}")
    covered = sum(seg["length"] for seg in entropy_rec["segments"])
    if covered != len(entropy):
        raise VerifyError("segment_length_mismatch",
                          f"the entropy segments cover {covered} bytes but {len(entropy)} bytes are recorded")
    report.checks.append(f"{len(entropy)} entropy bytes from {len(entropy_rec['segments'])} "
                         "segment(s) match their SHA-256")

    try:
        result, consumed = derive_fn(spec, entropy)
    except NeedMoreEntropy:
        raise VerifyError("entropy_too_short",
                          "the recorded entropy is too short to derive the result") from None
    if consumed != len(entropy):
        raise VerifyError("unused_entropy",
                          f"the recorded entropy has {len(entropy) - consumed} bytes the derivation did not use")
    if result != draw["result"]:
        raise VerifyError("result_mismatch",
                          "re-deriving the result from the recorded entropy gives a different result")
    report.checks.append(f"{draw['derivation']} re-derives the same {spec['kind']} result from the recorded entropy")

    _check_chain_position(draw, previous, report)
    return report


def _check_chain_position(draw: Dict[str, Any], previous: Optional[JSON], report: VerifyReport) -> None:
    def broken(why: str) -> VerifyError:
        return VerifyError("broken_link", f"the link to `previous` is broken: {why}")

    if not draw["chain"].startswith("ch_"):
        raise broken(f"`chain` {draw['chain']} is not a chain ID")
    position, prev = draw["position"], draw["previous"]
    if position == 1:
        if prev != draw["chain"]:
            raise broken("position 1 must follow the chain's genesis")
    elif position == 0:
        raise broken("positions start at 1")
    elif prev.startswith("ch_"):
        raise broken("only position 1 follows the genesis")
    if previous is None:
        return
    if isinstance(previous, dict) and "chain" in previous and "draw" not in previous:
        prev_id, prev_chain = previous["id"], previous["id"]
        prev_customer, prev_position = previous["chain"]["customer"], 0
    else:
        body = previous["draw"]
        prev_id, prev_chain = body["id"], body["chain"]
        prev_customer, prev_position = body["customer"], body["position"]
    if prev != prev_id:
        raise broken(f"`previous` is {prev} but the given record is {prev_id}")
    if draw["chain"] != prev_chain or draw["customer"] != prev_customer:
        raise broken("`previous` belongs to another chain or customer")
    if position != prev_position + 1:
        raise broken(f"position {position} does not follow position {prev_position}")
    report.checks.append(f"follows {prev_id} at position {position} of chain {draw['chain']}")


def _normal_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    if spec.get("kind") == "integers" and "unique" not in spec:
        return {**spec, "unique": False}
    return spec


def verify_lookup(lookup: JSON, keys: JSON, previous: Optional[JSON] = None) -> VerifyReport:
    """Verifies ``GET /v1/draws/{id}`` output: the draw, and that the
    recorded request is the one the signed draw answers."""
    _obj(lookup, "lookup", ("request", "response"))
    request = _obj(lookup["request"], "request", ("previous", "tag", "spec", "request_id"),
                   optional=("request_id",))
    _record_id(request["previous"], "request.previous")
    _str(request["tag"], "request.tag")
    _check_spec_shape(request["spec"], "request.spec")
    report = verify_draw(lookup["response"], keys, previous)
    draw = lookup["response"]["draw"]
    if (request["previous"] != draw["previous"] or request["tag"] != draw["tag"]
            or _normal_spec(request["spec"]) != _normal_spec(draw["spec"])
            or request.get("request_id") != draw["request_id"]):
        raise VerifyError("request_mismatch", "the recorded request differs from the signed draw")
    report.checks.append("the recorded request matches the signed draw")
    return report


def verify_record(record: JSON, keys: JSON, previous: Optional[JSON] = None) -> VerifyReport:
    """Verifies whatever ``geiger verify`` accepts: a draw lookup, a draw's
    201 body, or a chain's 201 body."""
    if isinstance(record, dict) and "response" in record:
        return verify_lookup(record, keys, previous)
    if isinstance(previous, dict) and "response" in previous:
        previous = previous["response"]
    if isinstance(record, dict) and "draw" in record:
        return verify_draw(record, keys, previous)
    if isinstance(record, dict) and "chain" in record:
        return verify_chain(record, keys)
    raise VerifyError("malformed_record", "input is neither a draw lookup, a draw nor a chain")
