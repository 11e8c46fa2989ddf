//! Prints the record vectors (protocol/tests/record_vectors.json): canonical
//! JSON cases, a key with its ID and `/v1/keys` entry, and a chain genesis,
//! a v1 draw and a v2 draw with their canonical bodies, IDs and signatures.
//!
//! Run `cargo run -p geiger-protocol --example make_record_vectors > protocol/tests/record_vectors.json`
//! only when adding vectors: the tests check the code against the file.
//! The secret key is a published test key; it signs nothing real.

use geiger_protocol::canonical::{to_canonical_vec, value_to_canonical_vec};
use geiger_protocol::record::format_timestamp;
use geiger_protocol::sample::{self, SAMPLE_TIME_MS};
use geiger_protocol::{Derivation, KeySet, Signer, Spec};
use serde_json::{json, Value};

fn canonical_text(v: &Value) -> String {
    String::from_utf8(value_to_canonical_vec(v).unwrap()).unwrap()
}

fn main() {
    let inputs = [
        (
            "members sorted by UTF-16 code units, not UTF-8 bytes",
            "{\"b\":1,\"a\":2,\"A\":3,\"\u{e9}\":4,\"\u{ff61}\":5,\"\u{1f3b2}\":6}",
        ),
        (
            "C0 controls escaped, U+007F..U+009F and U+2028 written as UTF-8",
            "[\"\\u0000\\u0001\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\\u007f\\u0080\\u009f\\u2028\\u00e9\"]",
        ),
        (
            "integers beyond 2^53 written exactly",
            "[0, -1, 9007199254740993, -9223372036854775808, 18446744073709551615]",
        ),
        (
            "whitespace dropped, nested members sorted, empty containers kept",
            " { \"z\" : [ { \"b\" : null , \"a\" : true } ] , \"a\" : { } , \"m\" : [ ] } ",
        ),
    ];
    let canonical: Vec<Value> = inputs
        .iter()
        .map(|(name, input)| {
            let v: Value = serde_json::from_str(input).unwrap();
            json!({ "name": name, "input": input, "canonical": canonical_text(&v) })
        })
        .collect();

    let secret = [7u8; 32];
    let signer = Signer::from_secret(secret);
    let keys = KeySet {
        keys: vec![signer.key_info(format_timestamp(SAMPLE_TIME_MS), None)],
        devices: Vec::new(),
    };
    let chain = sample::genesis(&signer);
    let body_text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    let mut records = vec![json!({
        "name": "chain genesis",
        "response": chain,
        "canonical_body": body_text(to_canonical_vec(&chain.chain.body).unwrap()),
    })];
    for (position, derivation) in [(1, Derivation::V1), (1, Derivation::V2)] {
        let draw = sample::draw_after_with(
            &signer,
            &chain,
            chain.id,
            position,
            Spec::Selection { k: 6, n: 49 },
            derivation,
        );
        records.push(json!({
            "name": format!("first draw, 6 of 49, {}", derivation.name()),
            "response": draw,
            "canonical_body": body_text(to_canonical_vec(&draw.draw.body).unwrap()),
        }));
    }
    let doc = json!({
        "canonical_json": canonical,
        "key": {
            "secret_hex": hex::encode(secret),
            "public_key": keys.keys[0].public_key,
            "key_id": keys.keys[0].key_id,
        },
        "keys": keys,
        "records": records,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
