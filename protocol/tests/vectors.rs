//! The published test vectors (protocol/tests/vectors.json, also quoted in
//! docs/DERIVATION.md) hold for this implementation, and derivation is
//! deterministic.

use geiger_protocol::derive::{derive, DrawResult};
use geiger_protocol::Spec;
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
    result: DrawResult,
}

fn vectors() -> VectorFile {
    serde_json::from_str(include_str!("vectors.json")).expect("vectors.json parses")
}

#[test]
fn every_published_vector_derives_to_its_recorded_result() {
    let file = vectors();
    assert_eq!(file.derivation, geiger_protocol::DERIVATION_V1);
    assert!(file.vectors.len() >= 10);
    for v in file.vectors {
        let entropy = hex::decode(&v.entropy_hex).unwrap();
        v.spec.validate().unwrap();
        let derived = derive(&v.spec, &entropy).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(derived.result, v.result, "{}", v.name);
        assert_eq!(derived.consumed, v.consumed, "{}", v.name);
    }
}

#[test]
fn a_vector_with_one_byte_less_entropy_asks_for_more() {
    for v in vectors().vectors.into_iter().filter(|v| v.consumed > 0) {
        let entropy = hex::decode(&v.entropy_hex).unwrap();
        assert!(
            derive(&v.spec, &entropy[..entropy.len() - 1]).is_err(),
            "{}",
            v.name
        );
    }
}

#[test]
fn the_same_entropy_always_gives_the_same_result_and_consumption() {
    let entropy: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let specs = [
        Spec::Integers {
            min: -3,
            max: 1_000_003,
            count: 100,
            unique: true,
        },
        Spec::Permutation { n: 300 },
        Spec::Selection { k: 20, n: 1 << 40 },
        Spec::Bytes { count: 999 },
    ];
    for spec in specs {
        let a = derive(&spec, &entropy).unwrap();
        let b = derive(&spec, &entropy).unwrap();
        assert_eq!(a, b);
        // Extra trailing entropy changes nothing: only a prefix is read.
        let mut longer = entropy.clone();
        longer.extend_from_slice(&[0xAB; 64]);
        assert_eq!(derive(&spec, &longer).unwrap(), a);
    }
}
