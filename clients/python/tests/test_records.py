"""Real records from `geiger dev` verify; every single-field tamper, and
every re-sealed record whose content is wrong, is rejected."""

import copy
import json
import subprocess
import sys

import pytest

from geiger_client import (VerifyError, canonical_bytes, parse_json, verify_chain, verify_draw,
                           verify_lookup, verify_record)
from helpers import REPO, ResealKey, changed, load_bundle, single_field_tampers

BUNDLE = load_bundle()
KEYS = BUNDLE["keys"]
LOOKUPS = BUNDLE["lookups"]
KINDS = [l["response"]["draw"]["spec"]["kind"] for l in LOOKUPS]


def previous_of(i):
    return BUNDLE["chain"] if i == 0 else LOOKUPS[i - 1]["response"]


def test_the_bundle_holds_draws_of_every_spec_kind():
    assert set(KINDS) == {"integers", "permutation", "selection", "bytes"}


def test_the_chain_genesis_verifies():
    report = verify_chain(BUNDLE["chain"], KEYS)
    assert report.id == BUNDLE["chain"]["id"] and len(report.checks) == 3


@pytest.mark.parametrize("i", range(len(LOOKUPS)), ids=KINDS)
def test_each_lookup_verifies_with_the_link_to_its_previous(i):
    report = verify_lookup(LOOKUPS[i], KEYS, previous_of(i))
    assert report.id == LOOKUPS[i]["response"]["draw"]["id"]
    assert report.checks[-1] == "the recorded request matches the signed draw"
    assert any(c.startswith("follows ") for c in report.checks)


@pytest.mark.parametrize("i", range(len(LOOKUPS)), ids=KINDS)
def test_the_201_bytes_are_the_canonical_form_of_the_parsed_response(i):
    text = BUNDLE["responses"][i]
    assert canonical_bytes(parse_json(text)) == text.encode("utf-8")
    verify_draw(parse_json(text), KEYS)


def _tamper_cases():
    cases = []
    for i, lookup in enumerate(LOOKUPS):
        for where, tampered in single_field_tampers(lookup):
            cases.append(pytest.param(i, tampered, id=f"{KINDS[i]}{i}:{where}"))
    return cases


@pytest.mark.parametrize("i,tampered", _tamper_cases())
def test_every_single_field_tamper_of_a_lookup_is_rejected(i, tampered):
    # `request.request_id` absent and null mean the same, and an integers
    # spec without `unique` means unique false: those two removals keep the
    # request equal to the signed draw, so they are not tampers.
    req = tampered.get("request", {})
    orig = LOOKUPS[i]["request"]
    if tampered.get("response") == LOOKUPS[i]["response"] and req.get("request_id") == orig.get("request_id") \
            and {**req.get("spec", {}), "unique": req.get("spec", {}).get("unique", False)} \
            == {**orig["spec"], "unique": orig["spec"].get("unique", False)} \
            and {k: v for k, v in req.items() if k not in ("spec", "request_id")} \
            == {k: v for k, v in orig.items() if k not in ("spec", "request_id")}:
        verify_lookup(tampered, KEYS, previous_of(i))
        return
    with pytest.raises(VerifyError):
        verify_lookup(tampered, KEYS, previous_of(i))


@pytest.mark.parametrize("where,tampered", single_field_tampers(BUNDLE["chain"]),
                         ids=[w for w, _ in single_field_tampers(BUNDLE["chain"])])
def test_every_single_field_tamper_of_the_chain_is_rejected(where, tampered):
    with pytest.raises(VerifyError):
        verify_chain(tampered, KEYS)


# Content changes that a correct ID and signature must not rescue: each is
# re-sealed with a test key, so only the deeper checks can catch it.
KEY = ResealKey()
RESEALED_KEYS = KEY.key_set()


def _resealed(i, field_path, new_value=None):
    response = copy.deepcopy(LOOKUPS[i]["response"])
    target = response["draw"]
    for step in field_path[:-1]:
        target = target[step]
    if new_value is None:
        old = target[field_path[-1]]
        # Hex stays hex: an empty entropy (a permutation of one) gains a byte.
        new_value = (old[:-1] + ("1" if old[-1] == "0" else "0") if old else "00") if field_path == ("entropy", "hex") else changed(old)
    target[field_path[-1]] = new_value
    return KEY.seal_draw(response)


def test_a_resealed_untouched_draw_verifies_so_the_tests_below_mean_something():
    chain = KEY.seal_chain(BUNDLE["chain"])
    verify_chain(chain, RESEALED_KEYS)
    for i in range(len(LOOKUPS)):
        verify_draw(KEY.seal_draw(LOOKUPS[i]["response"]), RESEALED_KEYS)


@pytest.mark.parametrize("i", range(len(LOOKUPS)), ids=KINDS)
@pytest.mark.parametrize("path,code", [
    (("entropy", "hex"), "entropy_hash_mismatch"),
    (("entropy", "sha256"), "entropy_hash_mismatch"),
    (("entropy", "segments", 0, "length"), "segment_length_mismatch"),
    (("derivation",), "unsupported_derivation"),
    (("position",), "broken_link"),
])
def test_a_resealed_draw_with_wrong_content_is_rejected_by_the_deeper_checks(i, path, code):
    draw = LOOKUPS[i]["response"]["draw"]
    if path[1:2] == ("segments",) and not draw["entropy"]["segments"]:
        # No entropy, no segment to change: claim one that covers a byte.
        resealed = _resealed(i, ("entropy", "segments"), [{"device": "dev_x", "chunk_seq": 0, "offset": 0, "length": 1}])
    else:
        resealed = _resealed(i, path)
    with pytest.raises(VerifyError) as e:
        verify_draw(resealed, RESEALED_KEYS, previous_of(i))
    assert e.value.code == code


@pytest.mark.parametrize("i", range(len(LOOKUPS)), ids=KINDS)
def test_a_resealed_draw_with_another_result_fails_re_derivation(i):
    result = copy.deepcopy(LOOKUPS[i]["response"]["draw"]["result"])
    if "values" in result:
        result["values"][-1] = changed(result["values"][-1])
    else:
        result["hex"] = changed(result["hex"])
    with pytest.raises(VerifyError) as e:
        verify_draw(_resealed(i, ("result",), result), RESEALED_KEYS)
    assert e.value.code == "result_mismatch"


def test_a_resealed_draw_with_extra_or_missing_entropy_is_rejected():
    draw = LOOKUPS[0]["response"]["draw"]
    longer = draw["entropy"]["hex"] + "00"
    import hashlib
    entropy = {**draw["entropy"], "hex": longer, "sha256": hashlib.sha256(bytes.fromhex(longer)).hexdigest(),
               "segments": [{**draw["entropy"]["segments"][0], "length": len(longer) // 2}]}
    with pytest.raises(VerifyError) as e:
        verify_draw(_resealed(0, ("entropy",), entropy), RESEALED_KEYS)
    assert e.value.code == "unused_entropy"
    shorter = draw["entropy"]["hex"][:-2]
    entropy = {**draw["entropy"], "hex": shorter, "sha256": hashlib.sha256(bytes.fromhex(shorter)).hexdigest(),
               "segments": [{**draw["entropy"]["segments"][0], "length": len(shorter) // 2}]}
    with pytest.raises(VerifyError) as e:
        verify_draw(_resealed(0, ("entropy",), entropy), RESEALED_KEYS)
    assert e.value.code == "entropy_too_short"


def test_a_resealed_spec_beyond_the_limits_is_rejected():
    spec = {"kind": "permutation", "n": 10001}
    with pytest.raises(VerifyError) as e:
        verify_draw(_resealed(4, ("spec",), spec), RESEALED_KEYS)
    assert e.value.code == "invalid_spec"


def test_a_draw_signed_outside_its_keys_validity_is_rejected():
    draw = KEY.seal_draw(LOOKUPS[0]["response"])
    issued = draw["draw"]["issued_at"]
    for keys in (KEY.key_set(valid_from="2999-01-01T00:00:00.000Z"), KEY.key_set(valid_until=issued)):
        with pytest.raises(VerifyError) as e:
            verify_draw(draw, keys)
        assert e.value.code == "key_not_valid_at"
    verify_draw(draw, KEY.key_set(valid_from=issued, valid_until="2999-01-01T00:00:00.000Z"))


def test_a_key_whose_id_is_not_its_hash_or_that_is_missing_is_rejected():
    draw = LOOKUPS[0]["response"]
    wrong = copy.deepcopy(KEYS)
    wrong["keys"][0]["public_key"] = RESEALED_KEYS["keys"][0]["public_key"]
    with pytest.raises(VerifyError) as e:
        verify_draw(draw, wrong)
    assert e.value.code == "bad_key"
    with pytest.raises(VerifyError) as e:
        verify_draw(draw, {"keys": []})
    assert e.value.code == "unknown_key"


def test_a_link_to_the_wrong_previous_is_rejected():
    with pytest.raises(VerifyError) as e:
        verify_lookup(LOOKUPS[3], KEYS, LOOKUPS[1]["response"])
    assert e.value.code == "broken_link"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "geiger_client", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "clients" / "python" / "src")})


def test_the_cli_verifies_a_lookup_file_and_says_verified(tmp_path):
    (tmp_path / "draw.json").write_text(json.dumps(LOOKUPS[0]))
    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    (tmp_path / "chain.json").write_text(json.dumps(BUNDLE["chain"]))
    out = _cli("verify", str(tmp_path / "draw.json"), "--keys", str(tmp_path / "keys.json"),
               "--previous", str(tmp_path / "chain.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "VERIFIED"


def test_the_cli_fails_a_tampered_file_naming_what_failed(tmp_path):
    tampered = copy.deepcopy(LOOKUPS[0])
    tampered["response"]["draw"]["result"]["values"][0] += 1
    (tmp_path / "draw.json").write_text(json.dumps(tampered))
    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    out = _cli("verify", str(tmp_path / "draw.json"), "--keys", str(tmp_path / "keys.json"))
    assert out.returncode == 1
    assert out.stdout.startswith("FAILED the ID is ")


def test_a_small_order_key_that_openssl_would_accept_for_any_message_is_rejected():
    # The identity point as the key, R the identity and S = 0: [S]B = R + [k]A
    # holds for every message, so plain RFC 8032 verification (OpenSSL's)
    # accepts it; strict verification, like geiger verify's, must not.
    import base64
    import hashlib
    weak = bytes([1]) + bytes(31)
    weak_id = "k_" + hashlib.sha256(weak).digest()[:8].hex()
    keys = {"keys": [{"key_id": weak_id, "alg": "ed25519", "public_key": base64.b64encode(weak).decode(),
                      "valid_from": "2000-01-01T00:00:00.000Z", "valid_until": None}]}
    draw = {k: v for k, v in LOOKUPS[0]["response"]["draw"].items() if k != "id"}
    draw["key_id"] = weak_id
    from geiger_client import record_id
    forged = {"draw": {**draw, "id": record_id("draw", canonical_bytes(draw))},
              "signature": {"alg": "ed25519", "key_id": weak_id,
                            "value": base64.b64encode(bytes([1]) + bytes(63)).decode()}}
    with pytest.raises(VerifyError) as e:
        verify_draw(forged, keys)
    assert e.value.code == "bad_signature"
