//! Prints the derivation test vectors (protocol/tests/vectors.json).
//!
//! Run `cargo run -p geiger-protocol --example make_vectors > protocol/tests/vectors.json`
//! only when adding vectors: the file is the published reference, and the
//! tests check the code against it, never the other way round.

use geiger_protocol::derive::{derive, DrawResult};
use geiger_protocol::Spec;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A reproducible byte stream: SHA-256("geiger-derive-v1 vectors" || label || counter_le).
fn stream(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(b"geiger-derive-v1 vectors");
        h.update(label.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn main() {
    let ints = |min, max, count, unique| Spec::Integers {
        min,
        max,
        count,
        unique,
    };
    let cases: Vec<(&str, Spec, Vec<u8>)> = vec![
        ("one die", ints(1, 6, 1, false), words(&[(1 << 63) + 1])),
        (
            "one die, first word rejected",
            ints(1, 6, 1, false),
            words(&[1 << 63, u64::MAX]),
        ),
        ("ten dice", ints(1, 6, 10, false), stream("dice", 160)),
        (
            "constant range uses no entropy",
            ints(-5, -5, 3, false),
            vec![],
        ),
        (
            "full i64 range",
            ints(i64::MIN, i64::MAX, 4, false),
            stream("full", 32),
        ),
        (
            "awkward range 2^63 + 8 values",
            ints(-8, i64::MAX, 4, false),
            stream("awkward", 256),
        ),
        (
            "negative range",
            ints(-1000, -900, 5, false),
            stream("negative", 80),
        ),
        (
            "unique integers",
            ints(10, 20, 11, true),
            stream("unique", 160),
        ),
        (
            "six of forty-nine",
            Spec::Selection { k: 6, n: 49 },
            stream("lotto", 96),
        ),
        (
            "six of a trillion",
            Spec::Selection {
                k: 6,
                n: 1_000_000_000_000,
            },
            stream("trillion", 96),
        ),
        (
            "deck of 52",
            Spec::Permutation { n: 52 },
            stream("deck", 600),
        ),
        ("permutation of 1", Spec::Permutation { n: 1 }, vec![]),
        ("16 bytes", Spec::Bytes { count: 16 }, stream("bytes", 16)),
    ];
    let vectors: Vec<_> = cases
        .into_iter()
        .map(|(name, spec, entropy)| {
            let derived = derive(&spec, &entropy).expect("enough entropy for every vector");
            // Keep exactly what was used, so each vector also pins `consumed`.
            let entropy = &entropy[..derived.consumed];
            let result = match derived.result {
                DrawResult::Values { values } => json!({ "values": values }),
                DrawResult::Hex { hex } => json!({ "hex": hex }),
            };
            json!({
                "name": name,
                "spec": spec,
                "entropy_hex": hex::encode(entropy),
                "consumed": derived.consumed,
                "result": result,
            })
        })
        .collect();
    let doc = json!({ "derivation": "geiger-derive-v1", "vectors": vectors });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
