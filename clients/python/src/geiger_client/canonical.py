"""Canonical JSON (RFC 8785 as geiger uses it) and strict JSON parsing.

The canonical form is what a record's ID hashes and what its Ed25519
signature covers (docs/DERIVATION.md section 6): members sorted by the UTF-16
code units of their names, no whitespace, strings escaped as ECMAScript's
``JSON.stringify`` does, integers written exactly in decimal (geiger's one
departure from RFC 8785: integers beyond 2^53 are not rounded through a
double). Fractional numbers have no canonical form in geiger records and are
refused.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

__all__ = ["CanonicalError", "canonical_bytes", "parse_json"]


class CanonicalError(ValueError):
    """A value that has no canonical form in geiger records."""


def _utf16_key(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as UTF-16 code units do.
    return name.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: List[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise CanonicalError(f"fractional number {value!r} has no canonical form in geiger records")
    elif isinstance(value, str):
        # With ensure_ascii off, Python escapes exactly what JSON.stringify
        # does: quote, backslash, \b \f \n \r \t, other C0 controls as \u00xx
        # in lowercase hex; everything else is written as itself.
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, name in enumerate(sorted(value, key=_utf16_key)):
            if not isinstance(name, str):
                raise CanonicalError("object member names must be strings")
            if i:
                out.append(",")
            out.append(json.dumps(name, ensure_ascii=False))
            out.append(":")
            _write(value[name], out)
        out.append("}")
    else:
        raise CanonicalError(f"{type(value).__name__} cannot be represented as JSON")


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (UTF-8)."""
    out: List[str] = []
    _write(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate from a \ud800 escape
        raise CanonicalError("a string holds a lone UTF-16 surrogate") from e


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    members: Dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise ValueError(f"duplicate member {name!r}")
        members[name] = value
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: "str | bytes") -> Any:
    """Parses JSON as geiger's verifier does: integers exact, duplicate
    member names and NaN/Infinity refused."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
