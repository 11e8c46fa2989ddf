"""Every vector of protocol/tests/vectors_v2.json re-derives exactly."""

import json

import pytest

from geiger_client import NeedMoreEntropy, derive_v2_bits
from helpers import REPO

DOC = json.loads((REPO / "protocol" / "tests" / "vectors_v2.json").read_text())
IDS = [v["name"] for v in DOC["vectors"]]


def test_the_v2_vectors_file_names_derivation_v2():
    assert DOC["derivation"] == "geiger-derive-v2"
    assert len(DOC["vectors"]) >= 15


@pytest.mark.parametrize("vector", DOC["vectors"], ids=IDS)
def test_each_v2_vector_gives_its_result_reading_exactly_its_bits(vector):
    result, bits, consumed = derive_v2_bits(vector["spec"], bytes.fromhex(vector["entropy_hex"]))
    assert result == vector["result"]
    assert (bits, consumed) == (vector["consumed_bits"], vector["consumed"])


@pytest.mark.parametrize("vector", [v for v in DOC["vectors"] if v["consumed"] > 0],
                         ids=[v["name"] for v in DOC["vectors"] if v["consumed"] > 0])
def test_each_v2_vector_with_one_byte_less_needs_more_entropy(vector):
    with pytest.raises(NeedMoreEntropy):
        derive_v2_bits(vector["spec"], bytes.fromhex(vector["entropy_hex"])[:-1])
