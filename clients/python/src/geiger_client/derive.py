"""geiger-derive-v1: from a draw's recorded entropy bytes to its result.

Written from docs/DERIVATION.md sections 1-4. ``derive`` returns the result
and how many bytes it read; a verifier also checks that this is every
recorded byte.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

__all__ = ["DERIVATION_V1", "NeedMoreEntropy", "derive"]

DERIVATION_V1 = "geiger-derive-v1"
_TWO64 = 1 << 64
_MASK64 = _TWO64 - 1


class NeedMoreEntropy(ValueError):
    """The entropy ran out before the result was complete."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def word(self) -> int:
        end = self.pos + 8
        if end > len(self.data):
            raise NeedMoreEntropy("need more entropy")
        value = int.from_bytes(self.data[self.pos:end], "little")
        self.pos = end
        return value

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise NeedMoreEntropy("need more entropy")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def uniform(self, s: int) -> int:
        """Lemire's method: uniform in [0, s) for 1 <= s <= 2^64."""
        if s == 1:
            return 0
        if s == _TWO64:
            return self.word()
        m = self.word() * s
        if (m & _MASK64) < s:
            threshold = (_TWO64 - s) % s
            while (m & _MASK64) < threshold:
                m = self.word() * s
        return m >> 64

    def shuffle(self, s: int, k: int) -> List[int]:
        """The first k entries of a front-to-back Fisher-Yates shuffle of
        [0, s), storing only swapped slots."""
        slots: Dict[int, int] = {}
        out: List[int] = []
        for i in range(k):
            j = i + self.uniform(s - i)
            at_j = slots.get(j, j)
            slots[j] = slots.get(i, i)
            out.append(at_j)
        return out


def derive(spec: Dict[str, Any], entropy: bytes) -> Tuple[Dict[str, Any], int]:
    """Derives the result of ``spec`` from ``entropy``; returns the result
    (``{"values": [...]}`` or ``{"hex": "..."}``) and the bytes read.

    Raises NeedMoreEntropy when the bytes run out. The spec must already be
    within the limits (see :func:`geiger_client.verify.check_spec`)."""
    reader = _Reader(entropy)
    kind = spec["kind"]
    if kind == "integers":
        span = spec["max"] - spec["min"] + 1
        if spec.get("unique", False):
            offsets = reader.shuffle(span, spec["count"])
        else:
            offsets = [reader.uniform(span) for _ in range(spec["count"])]
        return {"values": [spec["min"] + o for o in offsets]}, reader.pos
    if kind == "permutation":
        return {"values": [o + 1 for o in reader.shuffle(spec["n"], spec["n"])]}, reader.pos
    if kind == "selection":
        return {"values": [o + 1 for o in reader.shuffle(spec["n"], spec["k"])]}, reader.pos
    if kind == "bytes":
        return {"hex": reader.take(spec["count"]).hex()}, reader.pos
    raise ValueError(f"unknown spec kind {kind!r}")
