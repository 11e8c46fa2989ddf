"""geiger-derive-v2: from a draw's recorded entropy bits to its result.

Written from docs/DERIVATION.md section 9. Bits are read most significant
first within each byte. ``derive_v2`` returns the result and the whole bytes
the bits read lie in (what a draw records); ``derive_v2_bits`` also returns
the number of bits read.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .derive import NeedMoreEntropy

__all__ = ["DERIVATION_V2", "derive_v2", "derive_v2_bits"]

DERIVATION_V2 = "geiger-derive-v2"
_LIMIT = 1 << 64


class _Bits:
    __slots__ = ("data", "read")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    def bit(self) -> int:
        i = self.read
        if i >> 3 >= len(self.data):
            raise NeedMoreEntropy("need more entropy")
        self.read += 1
        return (self.data[i >> 3] >> (7 - (i & 7))) & 1

    def uniform(self, n: int) -> int:
        """Uniform in [0, n), 1 <= n <= 2**64; a rejection keeps its leftover."""
        v, c = 1, 0
        while True:
            while v < n:
                v *= 2
                c = 2 * c + self.bit()
            if c < n:
                return c
            v -= n
            c -= n

    def offsets(self, ranges: List[int]) -> List[int]:
        """Greedy groups of product at most 2**64, one uniform each, split
        by mixed radix with the group's first step least significant."""
        out: List[int] = []
        j = 0
        while j < len(ranges):
            start, product = j, ranges[j]
            j += 1
            while j < len(ranges) and product * ranges[j] <= _LIMIT:
                product *= ranges[j]
                j += 1
            u = self.uniform(product)
            for r in ranges[start:j]:
                out.append(u % r)
                u //= r
        return out


def _shuffle(offsets: List[int]) -> List[int]:
    slots: Dict[int, int] = {}
    out = []
    for i, x in enumerate(offsets):
        j = i + x
        at_j = slots.get(j, j)
        slots[j] = slots.get(i, i)
        out.append(at_j)
    return out


def derive_v2_bits(spec: Dict[str, Any], entropy: bytes) -> Tuple[Dict[str, Any], int, int]:
    """``(result, bits read, bytes recorded)``; raises NeedMoreEntropy when
    the bits run out. The spec must already be within the limits."""
    r = _Bits(entropy)
    kind = spec["kind"]
    if kind == "bytes":
        count = spec["count"]
        if count > len(entropy):
            raise NeedMoreEntropy("need more entropy")
        return {"hex": entropy[:count].hex()}, 8 * count, count
    if kind == "integers":
        span = spec["max"] - spec["min"] + 1
        count = spec["count"]
        if spec.get("unique", False):
            offsets = _shuffle(r.offsets([span - i for i in range(count)]))
        else:
            offsets = r.offsets([span] * count)
        result: Dict[str, Any] = {"values": [spec["min"] + o for o in offsets]}
    elif kind == "permutation":
        n = spec["n"]
        result = {"values": [o + 1 for o in _shuffle(r.offsets([n - i for i in range(n)]))]}
    elif kind == "selection":
        n = spec["n"]
        result = {"values": [o + 1 for o in _shuffle(r.offsets([n - i for i in range(spec["k"])]))]}
    else:
        raise ValueError(f"unknown spec kind {kind}")
    return result, r.read, (r.read + 7) // 8


def derive_v2(spec: Dict[str, Any], entropy: bytes) -> Tuple[Dict[str, Any], int]:
    """``(result, bytes recorded)``, the shape of v1's ``derive``."""
    result, _, consumed = derive_v2_bits(spec, entropy)
    return result, consumed
