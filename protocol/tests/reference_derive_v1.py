#!/usr/bin/env python3
"""An independent implementation of geiger-derive-v1, written from
docs/DERIVATION.md alone, that checks every vector in vectors.json.

It exists to show the document is enough to re-implement the derivation in
another language. Run: python3 protocol/tests/reference_derive_v1.py
"""
import json
import pathlib
import sys

MASK64 = (1 << 64) - 1


class Entropy:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def word(self) -> int:
        if self.pos + 8 > len(self.data):
            raise EOFError("need more entropy")
        w = int.from_bytes(self.data[self.pos:self.pos + 8], "little")
        self.pos += 8
        return w

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError("need more entropy")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uniform(self, s: int) -> int:
        """A uniform integer in [0, s), 1 <= s <= 2**64."""
        if s == 1:
            return 0
        if s == 1 << 64:
            return self.word()
        m = self.word() * s
        if (m & MASK64) < s:
            threshold = ((1 << 64) - s) % s
            while (m & MASK64) < threshold:
                m = self.word() * s
        return m >> 64

    def partial_shuffle(self, s: int, k: int) -> list:
        """First k entries of a Fisher-Yates shuffle of [0, s)."""
        slots = {}
        out = []
        for i in range(k):
            j = i + self.uniform(s - i)
            at_j = slots.get(j, j)
            slots[j] = slots.get(i, i)
            out.append(at_j)
        return out


def derive(spec: dict, data: bytes):
    e = Entropy(data)
    kind = spec["kind"]
    if kind == "integers":
        s = spec["max"] - spec["min"] + 1
        if spec.get("unique", False):
            offsets = e.partial_shuffle(s, spec["count"])
        else:
            offsets = [e.uniform(s) for _ in range(spec["count"])]
        result = {"values": [spec["min"] + o for o in offsets]}
    elif kind == "permutation":
        result = {"values": [o + 1 for o in e.partial_shuffle(spec["n"], spec["n"])]}
    elif kind == "selection":
        result = {"values": [o + 1 for o in e.partial_shuffle(spec["n"], spec["k"])]}
    elif kind == "bytes":
        result = {"hex": e.take(spec["count"]).hex()}
    else:
        raise ValueError(kind)
    return result, e.pos


def main() -> int:
    path = pathlib.Path(__file__).with_name("vectors.json")
    doc = json.loads(path.read_text())
    failed = 0
    for v in doc["vectors"]:
        result, consumed = derive(v["spec"], bytes.fromhex(v["entropy_hex"]))
        if result != v["result"] or consumed != v["consumed"]:
            failed += 1
            print(f"MISMATCH {v['name']}: got {result} using {consumed} bytes")
    print(f"reference derivation: {len(doc['vectors']) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
