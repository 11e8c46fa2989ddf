"""Every vector of protocol/tests/vectors.json re-derives exactly."""

import json

import pytest

from geiger_client import NeedMoreEntropy, derive
from helpers import VECTORS

DOC = json.loads(VECTORS.read_text())


def test_the_vectors_file_names_derivation_v1():
    assert DOC["derivation"] == "geiger-derive-v1"
    assert len(DOC["vectors"]) >= 10


@pytest.mark.parametrize("vector", DOC["vectors"], ids=[v["name"] for v in DOC["vectors"]])
def test_each_vector_gives_its_result_reading_exactly_its_bytes(vector):
    result, consumed = derive(vector["spec"], bytes.fromhex(vector["entropy_hex"]))
    assert result == vector["result"]
    assert consumed == vector["consumed"]


@pytest.mark.parametrize("vector", [v for v in DOC["vectors"] if v["consumed"] > 0],
                         ids=[v["name"] for v in DOC["vectors"] if v["consumed"] > 0])
def test_each_vector_with_one_byte_less_needs_more_entropy(vector):
    with pytest.raises(NeedMoreEntropy):
        derive(vector["spec"], bytes.fromhex(vector["entropy_hex"])[:-1])
