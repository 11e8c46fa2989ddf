"""Shared test helpers: the repository's paths, the record bundle, single-
field tampers, and re-sealing records with a test key."""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
from typing import Any, Dict, Iterator, List, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from geiger_client import canonical_bytes, key_id_of, parse_json, record_id

REPO = pathlib.Path(__file__).resolve().parents[3]
VECTORS = REPO / "protocol" / "tests" / "vectors.json"
#: Records from a real `geiger dev`, committed; CLIENTS_RECORDS names a
#: fresh bundle instead (clients/check.sh makes one).
RECORDS = pathlib.Path(os.environ.get("CLIENTS_RECORDS", REPO / "clients" / "testdata" / "records.json"))


def load_bundle() -> Dict[str, Any]:
    return parse_json(RECORDS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


Path = Tuple[Any, ...]


def leaves(value: Any, path: Path = ()) -> Iterator[Path]:
    """Every leaf (string, number, bool, null) of a JSON value, by path."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaves(item, path + (name,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, path + (i,))
    else:
        yield path


def changed(value: Any) -> Any:
    """A different value of the same JSON type (or null made a string)."""
    if value is None:
        return "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1 if value == (1 << 63) - 1 else value + 1
    if isinstance(value, str):
        if not value:
            return "a"
        return value[:-1] + ("b" if value[-1] == "a" else "a")
    raise TypeError(type(value))


def set_path(record: Any, path: Path, new: Any) -> Any:
    out = copy.deepcopy(record)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


def get_path(record: Any, path: Path) -> Any:
    for step in path:
        record = record[step]
    return record


def single_field_tampers(record: Any) -> List[Tuple[str, Any]]:
    """Each leaf changed alone, and each object member removed alone."""
    out = []
    for path in leaves(record):
        out.append(("/".join(map(str, path)), set_path(record, path, changed(get_path(record, path)))))

    def members(value: Any, path: Path) -> Iterator[Path]:
        if isinstance(value, dict):
            for name, item in value.items():
                yield path + (name,)
                yield from members(item, path + (name,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from members(item, path + (i,))

    for path in members(record, ()):
        removed = copy.deepcopy(record)
        target = removed
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        out.append(("-" + "/".join(map(str, path)), removed))
    return out


class ResealKey:
    """An Ed25519 key that re-seals records, so tests can build records
    whose ID and signature are right but whose content is wrong."""

    def __init__(self, seed: bytes = bytes(range(32))) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public)

    def key_set(self, valid_from: str = "2000-01-01T00:00:00.000Z", valid_until: Any = None) -> Dict[str, Any]:
        return {"keys": [{"key_id": self.key_id, "alg": "ed25519",
                          "public_key": base64.b64encode(self.public).decode(),
                          "valid_from": valid_from, "valid_until": valid_until}]}

    def seal_draw(self, response: Dict[str, Any]) -> Dict[str, Any]:
        draw = {k: v for k, v in response["draw"].items() if k != "id"}
        draw["key_id"] = self.key_id
        message = canonical_bytes(draw)
        return {"draw": {**draw, "id": record_id("draw", message)},
                "signature": {"alg": "ed25519", "key_id": self.key_id,
                              "value": base64.b64encode(self.private.sign(message)).decode()}}

    def seal_chain(self, response: Dict[str, Any]) -> Dict[str, Any]:
        body = {k: v for k, v in response["chain"].items() if k != "id"}
        body["key_id"] = self.key_id
        message = canonical_bytes(body)
        rid = record_id("chain", message)
        return {"id": rid, "chain": {**body, "id": rid},
                "signature": {"alg": "ed25519", "key_id": self.key_id,
                              "value": base64.b64encode(self.private.sign(message)).decode()}}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
