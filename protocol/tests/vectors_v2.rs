//! The published `geiger-derive-v2` vectors (protocol/tests/vectors_v2.json,
//! also quoted in docs/DERIVATION.md §9.8) hold for this implementation.

use geiger_protocol::derive::DrawResult;
use geiger_protocol::{derive_v2, Spec};
use serde::Deserialize;

#[derive(Deserialize)]
struct VectorFile {
    derivation: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    spec: Spec,
    entropy_hex: String,
    consumed: usize,
    consumed_bits: u64,
    result: DrawResult,
}

fn vectors() -> VectorFile {
    serde_json::from_str(include_str!("vectors_v2.json")).expect("vectors_v2.json parses")
}

#[test]
fn every_published_v2_vector_derives_to_its_recorded_result_from_its_recorded_bits() {
    let file = vectors();
    assert_eq!(file.derivation, geiger_protocol::DERIVATION_V2);
    assert!(file.vectors.len() >= 15);
    for v in file.vectors {
        let entropy = hex::decode(&v.entropy_hex).unwrap();
        v.spec.validate().unwrap();
        let d = derive_v2(&v.spec, &entropy).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(d.result, v.result, "{}", v.name);
        assert_eq!(
            (d.consumed, d.consumed_bits),
            (v.consumed, v.consumed_bits),
            "{}",
            v.name
        );
        assert_eq!(d.consumed, entropy.len(), "{}", v.name);
        if !entropy.is_empty() {
            assert!(derive_v2(&v.spec, &entropy[..entropy.len() - 1]).is_err());
        }
    }
}
