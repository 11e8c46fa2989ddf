#!/usr/bin/env python3
"""An independent implementation of geiger-derive-v2, written from
docs/DERIVATION.md section 9 alone, that checks every vector in
vectors_v2.json: the result, the bits read and the bytes recorded.

It reads one bit at a time, exactly as the document's pseudocode does
(the Rust implementation reads runs of bits at once), so agreement also
checks that the two readings are the same.
Run: python3 protocol/tests/reference_derive_v2.py
"""
import json
import pathlib
import sys

LIMIT = 1 << 64


class NeedMoreEntropy(Exception):
    pass


class Bits:
    """E as a bit stream, the most significant bit of each byte first."""

    def __init__(self, data: bytes):
        self.data = data
        self.read = 0  # B: bits handed out so far

    def bit(self) -> int:
        i = self.read
        if i // 8 >= len(self.data):
            raise NeedMoreEntropy()
        self.read += 1
        return (self.data[i // 8] >> (7 - i % 8)) & 1

    def uniform(self, n: int) -> int:
        """A uniform integer in [0, n), 1 <= n <= 2**64 (section 9.3)."""
        assert 1 <= n <= LIMIT
        v, c = 1, 0
        while True:
            while v < n:
                v = 2 * v
                c = 2 * c + self.bit()
            if c < n:
                return c
            v -= n
            c -= n


def steps(spec: dict) -> list:
    """The ranges of a spec's steps, in order (section 9.5)."""
    kind = spec["kind"]
    if kind == "integers":
        s = spec["max"] - spec["min"] + 1
        count = spec["count"]
        if spec.get("unique", False):
            return [s - i for i in range(count)]
        return [s] * count
    if kind == "permutation":
        return [spec["n"] - i for i in range(spec["n"])]
    if kind == "selection":
        return [spec["n"] - i for i in range(spec["k"])]
    raise ValueError(kind)


def offsets(bits: Bits, ranges: list) -> list:
    """Greedy groups with a product of at most 2**64, one uniform per
    group, split by mixed radix, first step least significant (9.4)."""
    out = []
    j = 0
    while j < len(ranges):
        group = [ranges[j]]
        product = ranges[j]
        j += 1
        while j < len(ranges) and product * ranges[j] <= LIMIT:
            product *= ranges[j]
            group.append(ranges[j])
            j += 1
        u = bits.uniform(product)
        for r in group:
            out.append(u % r)
            u //= r
    return out


def shuffle(xs: list) -> list:
    """Section 3's partial Fisher-Yates, offsets given (9.5)."""
    a = {}
    out = []
    for i, x in enumerate(xs):
        j = i + x
        a_i, a_j = a.get(i, i), a.get(j, j)
        a[i], a[j] = a_j, a_i
        out.append(a[i])
    return out


def derive(spec: dict, data: bytes):
    """Returns (result, bits read B, bytes recorded ceil(B/8))."""
    kind = spec["kind"]
    bits = Bits(data)
    if kind == "bytes":
        count = spec["count"]
        if count > len(data):
            raise NeedMoreEntropy()
        return {"hex": data[:count].hex()}, 8 * count, count
    xs = offsets(bits, steps(spec))
    if kind == "integers":
        if spec.get("unique", False):
            xs = shuffle(xs)
        values = [spec["min"] + x for x in xs]
    else:
        values = [w + 1 for w in shuffle(xs)]
    return {"values": values}, bits.read, (bits.read + 7) // 8


def main() -> int:
    path = pathlib.Path(__file__).with_name("vectors_v2.json")
    doc = json.loads(path.read_text())
    assert doc["derivation"] == "geiger-derive-v2"
    failures = 0
    for v in doc["vectors"]:
        data = bytes.fromhex(v["entropy_hex"])
        try:
            got = derive(v["spec"], data)
        except NeedMoreEntropy:
            got = ("need more entropy",)
        want = (v["result"], v["consumed_bits"], v["consumed"])
        # A recorded draw uses every recorded byte and no more.
        if got != want or want[2] != len(data):
            failures += 1
            print(f"MISMATCH {v['name']}: got {got}, want {want}")
        elif data:
            try:
                derive(v["spec"], data[:-1])
                failures += 1
                print(f"MISMATCH {v['name']}: one byte fewer still derives")
            except NeedMoreEntropy:
                pass
    print(f"{len(doc['vectors']) - failures}/{len(doc['vectors'])} v2 vectors match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
