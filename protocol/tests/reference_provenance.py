#!/usr/bin/env python3
"""An independent check of docs/DERIVATION.md §10 (provenance), written
from that text alone, against protocol/tests/provenance_vectors.json.

For each case it runs the six checks of §10.4 in order and compares the
first that fails (or "verified") with the outcome the Rust reference
(`geiger_protocol::provenance::check_segment`) recorded. Needs the
`cryptography` package (Ed25519). Exits non-zero on any disagreement.
"""

import base64
import binascii
import hashlib
import json
import struct
import sys
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VECTORS = Path(__file__).with_name("provenance_vectors.json")
DOMAIN = b"geiger-chunk-v1\x00"


def device_id(public_key: bytes) -> str:
    return "dev_" + hashlib.sha256(public_key).digest()[:16].hex()


def statement(device: str, seq: int, sha256: bytes, timestamp_ms: int) -> bytes:
    ident = bytes.fromhex(device[len("dev_"):])
    assert len(ident) == 16
    return DOMAIN + ident + struct.pack(">Q", seq) + sha256 + struct.pack(">Q", timestamp_ms)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check(segment, entropy: bytes, issued_at: str, chunk, keys) -> str:
    # 1. The chunk is the one the segment names.
    if chunk["device"] != segment["device"] or chunk["seq"] != segment["chunk_seq"]:
        return "wrong_chunk"
    # 2. The key belongs to the device ID and the key set lists it.
    try:
        key = base64.b64decode(chunk["public_key"], validate=True)
    except binascii.Error:
        return "malformed"
    if len(key) != 32:
        return "malformed"
    if device_id(key) != chunk["device"]:
        return "key_not_device"
    if not any(d["device"] == chunk["device"] and d["public_key"] == chunk["public_key"]
               for d in keys.get("devices", [])):
        return "key_not_published"
    # 3. The bytes and their hash.
    try:
        data = bytes.fromhex(chunk["hex"])
    except ValueError:
        return "malformed"
    if len(data) != chunk["length"]:
        return "malformed"
    digest = hashlib.sha256(data).digest()
    if digest.hex() != chunk["sha256"]:
        return "hash_mismatch"
    # 4. The device's signature over the 80-byte statement.
    signature = base64.b64decode(chunk["signature"])
    message = statement(chunk["device"], chunk["seq"], digest, chunk["timestamp_ms"])
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except InvalidSignature:
        return "bad_signature"
    # 5. The slice rule.
    start, end = segment["offset"], segment["offset"] + segment["length"]
    if end > len(data):
        return "out_of_range"
    if data[start:end] != entropy:
        return "entropy_mismatch"
    # 6. Secret until used.
    if instant(issued_at) > instant(chunk["exhausted_at"]):
        return "revealed_before_issue"
    return "verified"


def main() -> int:
    vectors = json.loads(VECTORS.read_text())
    chunk = vectors["chunk"]
    failures = 0
    expected_statement = statement(
        chunk["device"], chunk["seq"], bytes.fromhex(chunk["sha256"]), chunk["timestamp_ms"]
    ).hex()
    if expected_statement != vectors["statement_hex"]:
        print(f"FAIL statement: {expected_statement} != {vectors['statement_hex']}")
        failures += 1
    for case in vectors["cases"]:
        got = check(case["segment"], bytes.fromhex(case["entropy_hex"]), case["issued_at"],
                    case["chunk"], vectors["keys"])
        ok = got == case["outcome"]
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case['name']}: {got}"
              + ("" if ok else f" (the reference says {case['outcome']})"))
    print(f"{len(vectors['cases']) - failures} agree, {failures} disagree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
