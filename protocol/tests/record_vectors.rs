//! The record vectors (protocol/tests/record_vectors.json, quoted in
//! docs/DERIVATION.md §6): canonical JSON, key IDs, record IDs and
//! signatures hold for this implementation, byte for byte.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use geiger_protocol::canonical::{to_canonical_vec, value_to_canonical_vec};
use geiger_protocol::verify::Previous;
use geiger_protocol::{
    verify_chain, verify_draw, ChainResponse, DrawResponse, KeySet, RecordId, RecordKind, Signer,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn doc() -> Value {
    serde_json::from_str(include_str!("record_vectors.json")).expect("record_vectors.json parses")
}

#[test]
fn every_canonical_json_case_gives_its_published_bytes() {
    let doc = doc();
    let cases = doc["canonical_json"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let input: Value = serde_json::from_str(case["input"].as_str().unwrap()).unwrap();
        let got = String::from_utf8(value_to_canonical_vec(&input).unwrap()).unwrap();
        assert_eq!(got, case["canonical"].as_str().unwrap(), "{}", case["name"]);
    }
}

#[test]
fn the_key_id_is_k_and_the_hex_of_the_first_8_bytes_of_the_raw_keys_sha256() {
    let doc = doc();
    let key = &doc["key"];
    let secret: [u8; 32] = hex::decode(key["secret_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signer = Signer::from_secret(secret);
    assert_eq!(signer.key_id(), key["key_id"].as_str().unwrap());
    let raw = BASE64.decode(key["public_key"].as_str().unwrap()).unwrap();
    let expected = format!("k_{}", hex::encode(&Sha256::digest(&raw)[..8]));
    assert_eq!(expected, key["key_id"].as_str().unwrap());
}

#[test]
fn every_record_has_its_published_canonical_body_id_and_signature() {
    let doc = doc();
    let keys: KeySet = serde_json::from_value(doc["keys"].clone()).unwrap();
    let secret: [u8; 32] = hex::decode(doc["key"]["secret_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signer = Signer::from_secret(secret);
    let records = doc["records"].as_array().unwrap();
    let chain: ChainResponse = serde_json::from_value(records[0]["response"].clone()).unwrap();
    let body = to_canonical_vec(&chain.chain.body).unwrap();
    assert_eq!(
        body,
        records[0]["canonical_body"].as_str().unwrap().as_bytes()
    );
    assert_eq!(chain.id, RecordId::for_body(RecordKind::Chain, &body));
    assert_eq!(signer.seal_chain(chain.chain.body.clone()).unwrap(), chain);
    verify_chain(&chain, &keys).unwrap();
    for record in &records[1..] {
        let draw: DrawResponse = serde_json::from_value(record["response"].clone()).unwrap();
        let body = to_canonical_vec(&draw.draw.body).unwrap();
        assert_eq!(body, record["canonical_body"].as_str().unwrap().as_bytes());
        assert_eq!(draw.draw.id, RecordId::for_body(RecordKind::Draw, &body));
        // Ed25519 is deterministic: sealing the body again gives the same signature.
        assert_eq!(signer.seal_draw(draw.draw.body.clone()).unwrap(), draw);
        verify_draw(&draw, &keys, Some(Previous::Chain(&chain))).unwrap();
    }
}
