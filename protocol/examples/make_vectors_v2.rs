//! Prints the `geiger-derive-v2` test vectors (protocol/tests/vectors_v2.json).
//!
//! Run `cargo run -p geiger-protocol --example make_vectors_v2 > protocol/tests/vectors_v2.json`
//! only when adding vectors: the file is the published reference, and the
//! tests check the code against it, never the other way round.

use geiger_protocol::derive::DrawResult;
use geiger_protocol::{derive_v2, Spec};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A reproducible byte stream: SHA-256("geiger-derive-v2 vectors" || label || counter_le32).
fn stream(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(b"geiger-derive-v2 vectors");
        h.update(label.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn main() {
    let ints = |min, max, count, unique| Spec::Integers {
        min,
        max,
        count,
        unique,
    };
    let cases: Vec<(&str, Spec, Vec<u8>)> = vec![
        ("one die", ints(1, 6, 1, false), vec![0x80]),
        (
            "one die, first three bits rejected",
            ints(1, 6, 1, false),
            vec![0xe8],
        ),
        ("two dice, one group", ints(1, 6, 2, false), vec![0x1c]),
        ("ten dice", ints(1, 6, 10, false), stream("dice", 64)),
        ("roulette", ints(0, 36, 1, false), stream("roulette", 64)),
        (
            "one of a billion",
            ints(1, 1_000_000_000, 1, false),
            stream("billion", 64),
        ),
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
            "range 2^32 + 1 values",
            ints(0, 1 << 32, 4, false),
            stream("above32", 64),
        ),
        (
            "awkward range 2^63 + 8 values",
            ints(-8, i64::MAX, 4, false),
            stream("awkward", 256),
        ),
        (
            "negative range",
            ints(-1000, -900, 5, false),
            stream("negative", 64),
        ),
        (
            "unique integers filling their range",
            ints(10, 20, 11, true),
            stream("unique", 64),
        ),
        (
            "unique integers near the i64 top",
            ints(i64::MAX - 9, i64::MAX, 3, true),
            stream("top", 64),
        ),
        (
            "six of forty-nine",
            Spec::Selection { k: 6, n: 49 },
            stream("lotto", 64),
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
            stream("deck", 96),
        ),
        ("permutation of 1", Spec::Permutation { n: 1 }, vec![]),
        ("16 bytes", Spec::Bytes { count: 16 }, stream("bytes", 16)),
    ];
    let vectors: Vec<_> = cases
        .into_iter()
        .map(|(name, spec, entropy)| {
            let derived = derive_v2(&spec, &entropy).expect("enough entropy for every vector");
            // Keep exactly the recorded bytes, so each vector also pins them.
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
                "consumed_bits": derived.consumed_bits,
                "result": result,
            })
        })
        .collect();
    let doc = json!({ "derivation": "geiger-derive-v2", "vectors": vectors });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
