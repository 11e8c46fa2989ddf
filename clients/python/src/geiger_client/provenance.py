"""Provenance of a draw's entropy (docs/DERIVATION.md §10): each segment
checked against the device-signed chunk it came from, which geiger
publishes at ``GET /v1/chunks/{device}/{seq}`` once every byte of it is
used (409 ``chunk_not_exhausted`` before).

:func:`check_segment` gives the outcome of one segment against one chunk:
``"verified"`` or the first of the six checks of §10.4 that fails
(``wrong_chunk``, ``malformed``, ``key_not_device``, ``key_not_published``,
``hash_mismatch``, ``bad_signature``, ``out_of_range``,
``entropy_mismatch``, ``revealed_before_issue``).
:func:`check_draw_provenance` does every segment of a draw, with a
``fetch(device, seq)`` that returns the chunk, ``None`` while it is not
exhausted (the segment is then ``"pending"``), or an empty mapping when
there is no such signed chunk (``"not_found"``).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .verify import VerifyError, _decompress, _is_small_order, _strict_b64, parse_time

CHUNK_DOMAIN = b"geiger-chunk-v1\x00"
_L = 2**252 + 27742317777372353535851937790883648493

Chunk = Mapping[str, Any]


def device_id_of(public_key: bytes) -> str:
    """``dev_`` and the hex of the first 16 bytes of SHA-256 of the key."""
    return "dev_" + hashlib.sha256(public_key).digest()[:16].hex()


def chunk_statement(device: str, seq: int, sha256: bytes, timestamp_ms: int) -> bytes:
    """The 80 bytes a device signs for chunk ``seq``."""
    ident = bytes.fromhex(device[len("dev_"):])
    if not device.startswith("dev_") or len(ident) != 16:
        raise ValueError(f"`{device}` is not a device ID")
    return CHUNK_DOMAIN + ident + struct.pack(">Q", seq) + sha256 + struct.pack(">Q", timestamp_ms)


def _verify_strict(public_key: bytes, signature: bytes, message: bytes) -> bool:
    point, r_point = _decompress(public_key), _decompress(signature[:32])
    if (int.from_bytes(signature[32:], "little") >= _L or point is None or r_point is None
            or _is_small_order(point) or _is_small_order(r_point)):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_segment(segment: Mapping[str, Any], entropy: bytes, issued_at: str, chunk: Chunk,
                  keys: Mapping[str, Any]) -> str:
    """The outcome of one segment (its bytes ``entropy``, as the draw
    records them) against ``chunk``, by the checks of §10.4 in order."""
    try:
        if chunk["device"] != segment["device"] or chunk["seq"] != segment["chunk_seq"]:
            return "wrong_chunk"
        key = _strict_b64(chunk["public_key"], 32) if isinstance(chunk["public_key"], str) else None
        if key is None:
            return "malformed"
        if device_id_of(key) != chunk["device"]:
            return "key_not_device"
        devices = keys.get("devices") or []
        if not any(isinstance(d, dict) and d.get("device") == chunk["device"]
                   and d.get("public_key") == chunk["public_key"] for d in devices):
            return "key_not_published"
        data = bytes.fromhex(chunk["hex"])
        if len(data) != chunk["length"]:
            return "malformed"
        digest = hashlib.sha256(data).digest()
        if digest.hex() != chunk["sha256"]:
            return "hash_mismatch"
        signature = _strict_b64(chunk["signature"], 64) if isinstance(chunk["signature"], str) else None
        if signature is None:
            return "malformed"
        message = chunk_statement(chunk["device"], chunk["seq"], digest, chunk["timestamp_ms"])
        if not _verify_strict(key, signature, message):
            return "bad_signature"
        start, end = segment["offset"], segment["offset"] + segment["length"]
        if end > len(data):
            return "out_of_range"
        if data[start:end] != entropy:
            return "entropy_mismatch"
        if parse_time(issued_at) > parse_time(chunk["exhausted_at"]):
            return "revealed_before_issue"
    except (KeyError, TypeError, ValueError, VerifyError):
        return "malformed"
    return "verified"


def check_draw_provenance(response: Mapping[str, Any], keys: Mapping[str, Any],
                          fetch: Callable[[str, int], Optional[Chunk]]) -> List[Tuple[Dict[str, Any], str]]:
    """Each segment of a draw's 201 body (verify it first) with its outcome,
    ``"pending"`` where ``fetch`` says the chunk is not exhausted yet."""
    draw = response["draw"]
    entropy = bytes.fromhex(draw["entropy"]["hex"])
    out: List[Tuple[Dict[str, Any], str]] = []
    at = 0
    for segment in draw["entropy"]["segments"]:
        piece = entropy[at:at + segment["length"]]
        at += segment["length"]
        chunk = fetch(segment["device"], segment["chunk_seq"])
        if chunk is None:
            out.append((segment, "pending"))
        elif not chunk:
            out.append((segment, "not_found"))
        else:
            out.append((segment, check_segment(segment, piece, draw["issued_at"], chunk, keys)))
    if at != len(entropy):
        raise VerifyError("entropy_length", "the segment lengths do not add up to the entropy")
    return out
