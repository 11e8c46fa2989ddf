//! The provenance vectors (`provenance_vectors.json`, docs/DERIVATION.md
//! §10): a signed chunk as `GET /v1/chunks/{device}/{seq}` serves it, the
//! key set listing its device, the 80-byte statement, and segments with the
//! outcome `check_segment` gives each. The same file is checked by
//! `reference_provenance.py`, written from §10 alone.
//!
//! `GEIGER_WRITE_VECTORS=1 cargo test -p geiger-protocol --test
//! provenance_vectors` rewrites the file (Ed25519 is deterministic, so the
//! file is the same on every run).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use geiger_protocol::device::DeviceId;
use geiger_protocol::provenance::{
    check_segment, chunk_statement, DeviceKeyInfo, ProvenanceError, PublicChunk,
};
use geiger_protocol::{EntropySegment, KeySet};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/provenance_vectors.json");
const TIMESTAMP_MS: u64 = 1_795_000_000_123;
const EXHAUSTED_AT: &str = "2026-12-01T10:00:00.000Z";

fn sign(key: &SigningKey, device: &DeviceId, seq: u64, bytes: &[u8]) -> PublicChunk {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let statement = chunk_statement(device, seq, &sha256, TIMESTAMP_MS);
    PublicChunk {
        device: device.to_string(),
        seq,
        public_key: BASE64.encode(key.verifying_key().as_bytes()),
        timestamp_ms: TIMESTAMP_MS,
        length: bytes.len() as u32,
        sha256: hex::encode(sha256),
        signature: BASE64.encode(key.sign(&statement).to_bytes()),
        hex: hex::encode(bytes),
        exhausted_at: EXHAUSTED_AT.into(),
    }
}

fn outcome(result: Result<(), ProvenanceError>) -> &'static str {
    match result {
        Ok(()) => "verified",
        Err(ProvenanceError::WrongChunk { .. }) => "wrong_chunk",
        Err(ProvenanceError::Malformed(_)) => "malformed",
        Err(ProvenanceError::KeyNotDevice(_)) => "key_not_device",
        Err(ProvenanceError::KeyNotPublished(_)) => "key_not_published",
        Err(ProvenanceError::HashMismatch) => "hash_mismatch",
        Err(ProvenanceError::BadSignature) => "bad_signature",
        Err(ProvenanceError::OutOfRange { .. }) => "out_of_range",
        Err(ProvenanceError::EntropyMismatch { .. }) => "entropy_mismatch",
        Err(ProvenanceError::RevealedBeforeIssue { .. }) => "revealed_before_issue",
    }
}

fn vectors() -> Value {
    let key = SigningKey::from_bytes(&[7; 32]);
    let device = DeviceId::of(&key.verifying_key());
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let seq = 3;
    let chunk = sign(&key, &device, seq, &bytes);
    let keys = KeySet {
        keys: Vec::new(),
        devices: vec![DeviceKeyInfo {
            device: device.to_string(),
            alg: "ed25519".into(),
            public_key: chunk.public_key.clone(),
            valid_from: "2026-11-30T00:00:00.000Z".into(),
            valid_until: None,
        }],
    };
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let statement = chunk_statement(&device, seq, &sha256, TIMESTAMP_MS);

    let stranger = SigningKey::from_bytes(&[8; 32]);
    let stranger_id = DeviceId::of(&stranger.verifying_key());
    let mut changed = bytes.clone();
    changed[40] ^= 1;
    let mut doctored = chunk.clone();
    doctored.hex = hex::encode(&changed);
    doctored.sha256 = hex::encode(Sha256::digest(&changed));
    let mut bad_hash = chunk.clone();
    bad_hash.hex = hex::encode(&changed);

    let issued = "2026-12-01T09:59:59.500Z";
    let segment = |device: &DeviceId, seq, offset: u32, length: u32| EntropySegment {
        device: device.to_string(),
        chunk_seq: seq,
        offset,
        length,
    };
    let mut wrong_entropy = bytes[10..15].to_vec();
    wrong_entropy[4] ^= 0x80;
    let cases: Vec<(&str, EntropySegment, Vec<u8>, &str, PublicChunk)> = vec![
        (
            "a slice of the chunk",
            segment(&device, seq, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            chunk.clone(),
        ),
        (
            "the whole chunk",
            segment(&device, seq, 0, 64),
            bytes.clone(),
            issued,
            chunk.clone(),
        ),
        (
            "issued in the millisecond the chunk was used up",
            segment(&device, seq, 60, 4),
            bytes[60..].to_vec(),
            EXHAUSTED_AT,
            chunk.clone(),
        ),
        (
            "one bit of the draw's entropy changed",
            segment(&device, seq, 10, 5),
            wrong_entropy,
            issued,
            chunk.clone(),
        ),
        (
            "a segment reaching past the chunk",
            segment(&device, seq, 62, 4),
            vec![0; 4],
            issued,
            chunk.clone(),
        ),
        (
            "a segment naming another chunk",
            segment(&device, seq + 1, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            chunk.clone(),
        ),
        (
            "a chunk changed, its hash recomputed",
            segment(&device, seq, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            doctored,
        ),
        (
            "a chunk changed, its hash kept",
            segment(&device, seq, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            bad_hash,
        ),
        (
            "issued after the chunk was public",
            segment(&device, seq, 10, 5),
            bytes[10..15].to_vec(),
            "2026-12-01T10:00:00.001Z",
            chunk.clone(),
        ),
        (
            "another key claiming the device",
            segment(&device, seq, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            sign(&stranger, &device, seq, &bytes),
        ),
        (
            "a device the key set does not list",
            segment(&stranger_id, seq, 10, 5),
            bytes[10..15].to_vec(),
            issued,
            sign(&stranger, &stranger_id, seq, &bytes),
        ),
    ];
    let cases: Vec<Value> = cases
        .into_iter()
        .map(|(name, segment, entropy, issued_at, chunk)| {
            let result = check_segment(&segment, &entropy, issued_at, &chunk, &keys);
            json!({
                "name": name,
                "segment": segment,
                "entropy_hex": hex::encode(&entropy),
                "issued_at": issued_at,
                "chunk": chunk,
                "outcome": outcome(result),
            })
        })
        .collect();
    json!({
        "device_secret_hex": hex::encode([7u8; 32]),
        "keys": keys,
        "chunk": chunk,
        "statement_hex": hex::encode(statement),
        "cases": cases,
    })
}

#[test]
fn the_provenance_vectors_are_what_check_segment_computes() {
    let fresh = vectors();
    if std::env::var_os("GEIGER_WRITE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&fresh).unwrap();
        text.push('\n');
        std::fs::write(PATH, text).unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(stored, fresh);
}

#[test]
fn every_outcome_of_the_check_appears_in_the_vectors() {
    let fresh = vectors();
    let outcomes: std::collections::BTreeSet<&str> = fresh["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    for expected in [
        "verified",
        "wrong_chunk",
        "key_not_device",
        "key_not_published",
        "hash_mismatch",
        "bad_signature",
        "out_of_range",
        "entropy_mismatch",
        "revealed_before_issue",
    ] {
        assert!(outcomes.contains(expected), "{expected} missing");
    }
}
