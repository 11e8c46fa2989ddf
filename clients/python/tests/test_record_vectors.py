"""protocol/tests/record_vectors.json holds for the Python client: canonical
JSON, key IDs, record IDs and signatures of a genesis, a v1 and a v2 draw."""

import base64

import pytest

from geiger_client import canonical_bytes, key_id_of, parse_json, record_id, verify_chain, verify_draw
from helpers import REPO

DOC = parse_json((REPO / "protocol" / "tests" / "record_vectors.json").read_text())


@pytest.mark.parametrize("case", DOC["canonical_json"], ids=[c["name"] for c in DOC["canonical_json"]])
def test_each_canonical_json_case_gives_its_published_text(case):
    assert canonical_bytes(parse_json(case["input"])).decode() == case["canonical"]


def test_the_key_id_hashes_the_raw_public_key():
    assert key_id_of(base64.b64decode(DOC["key"]["public_key"])) == DOC["key"]["key_id"]


def test_each_record_has_its_published_body_id_and_verifies():
    records = DOC["records"]
    chain = records[0]["response"]
    body = {k: v for k, v in chain["chain"].items() if k != "id"}
    assert canonical_bytes(body).decode() == records[0]["canonical_body"]
    assert record_id("chain", canonical_bytes(body)) == chain["id"]
    verify_chain(chain, DOC["keys"])
    for record in records[1:]:
        draw = record["response"]
        body = {k: v for k, v in draw["draw"].items() if k != "id"}
        assert canonical_bytes(body).decode() == record["canonical_body"]
        assert record_id("draw", canonical_bytes(body)) == draw["draw"]["id"]
        report = verify_draw(draw, DOC["keys"], chain)
        assert any(draw["draw"]["derivation"] in c for c in report.checks)
