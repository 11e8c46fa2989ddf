"""protocol/tests/provenance_vectors.json holds for the Python client: the
chunk statement and the outcome of every segment case (docs/DERIVATION.md
§10)."""

import pytest

from geiger_client import parse_json
from geiger_client.provenance import check_draw_provenance, check_segment, chunk_statement
from helpers import REPO

DOC = parse_json((REPO / "protocol" / "tests" / "provenance_vectors.json").read_text())


def test_the_statement_is_the_published_80_bytes():
    chunk = DOC["chunk"]
    statement = chunk_statement(chunk["device"], chunk["seq"], bytes.fromhex(chunk["sha256"]),
                                chunk["timestamp_ms"])
    assert len(statement) == 80
    assert statement.hex() == DOC["statement_hex"]


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"] for c in DOC["cases"]])
def test_each_segment_case_has_its_published_outcome(case):
    got = check_segment(case["segment"], bytes.fromhex(case["entropy_hex"]), case["issued_at"],
                        case["chunk"], DOC["keys"])
    assert got == case["outcome"]


def test_a_chunk_not_yet_exhausted_leaves_its_segment_pending():
    case = DOC["cases"][0]
    draw = {"draw": {"issued_at": case["issued_at"],
                     "entropy": {"hex": case["entropy_hex"], "segments": [case["segment"]]}}}
    assert check_draw_provenance(draw, DOC["keys"], lambda device, seq: None)[0][1] == "pending"
    assert check_draw_provenance(draw, DOC["keys"], lambda device, seq: case["chunk"])[0][1] == "verified"
