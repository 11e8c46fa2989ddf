//! Signed records verify, and tampering with any field of a signed record,
//! with its ID, its signature or its entropy makes verification fail.

use geiger_protocol::record::format_timestamp;
use geiger_protocol::sample;
use geiger_protocol::verify::Previous;
use geiger_protocol::{
    verify_chain, verify_draw, ChainResponse, Derivation, DrawResponse, EntropyUse, KeySet, Signer,
    Spec, VerifyError,
};
use serde_json::Value;

const T0: u64 = sample::SAMPLE_TIME_MS;

fn signer() -> Signer {
    Signer::from_secret([7; 32])
}

fn keys() -> KeySet {
    KeySet {
        keys: vec![signer().key_info(format_timestamp(T0), None)],
        devices: Vec::new(),
    }
}

fn genesis() -> ChainResponse {
    sample::genesis(&signer())
}

fn draw_after(
    previous: geiger_protocol::RecordId,
    chain: &ChainResponse,
    position: u64,
    spec: Spec,
) -> DrawResponse {
    sample::draw_after(&signer(), chain, previous, position, spec)
}

fn first_draw() -> (ChainResponse, DrawResponse) {
    let chain = genesis();
    let draw = draw_after(chain.id, &chain, 1, Spec::Permutation { n: 52 });
    (chain, draw)
}

#[test]
fn an_untouched_chain_and_draw_verify_with_every_check_reported() {
    let (chain, draw) = first_draw();
    verify_chain(&chain, &keys()).unwrap();
    let report = verify_draw(&draw, &keys(), Some(Previous::Chain(&chain))).unwrap();
    assert!(report.checks.len() >= 5, "{:?}", report.checks);
    let second = draw_after(draw.draw.id, &chain, 2, Spec::Bytes { count: 32 });
    verify_draw(&second, &keys(), Some(Previous::Draw(&draw))).unwrap();
}

/// Every leaf of the JSON form, changed in a type-preserving way.
fn tampered_variants(value: &Value) -> Vec<(String, Value)> {
    fn walk(path: String, v: &Value, root: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(format!("{path}/{k}"), child, root, out)
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(format!("{path}/{i}"), child, root, out)
                }
            }
            leaf => {
                let changed = match leaf {
                    Value::String(s) if s.is_empty() => Value::String("x".into()),
                    Value::String(s) => {
                        // Swap the last character for another of the same class
                        // so IDs, hex and base64 stay well formed.
                        let mut chars: Vec<char> = s.chars().collect();
                        let last = chars.pop().unwrap();
                        let swapped = match last {
                            'a' => 'b',
                            '0' => '1',
                            '=' => {
                                let c = chars.pop().unwrap();
                                chars.push(if c == 'A' { 'E' } else { 'A' });
                                '='
                            }
                            c if c.is_ascii_digit() => '0',
                            _ => 'a',
                        };
                        chars.push(swapped);
                        Value::String(chars.into_iter().collect())
                    }
                    Value::Number(n) => Value::from(n.as_i64().map(|i| i ^ 1).unwrap_or(1)),
                    Value::Bool(b) => Value::Bool(!b),
                    Value::Null => Value::String("x".into()),
                    _ => unreachable!(),
                };
                let mut copy = root.clone();
                *copy.pointer_mut(&path).unwrap() = changed;
                out.push((path, copy));
            }
        }
    }
    let mut out = Vec::new();
    walk(String::new(), value, value, &mut out);
    out
}

#[test]
fn tampering_with_any_field_of_a_draw_makes_verification_fail() {
    let (chain, draw) = first_draw();
    let original = serde_json::to_value(&draw).unwrap();
    let variants = tampered_variants(&original);
    assert!(variants.len() > 60, "walked {} leaves", variants.len());
    for (path, value) in variants {
        // A variant that no longer parses is rejected too.
        if let Ok(tampered) = serde_json::from_value::<DrawResponse>(value) {
            assert_ne!(tampered, draw, "{path} was not changed");
            let outcome = verify_draw(&tampered, &keys(), Some(Previous::Chain(&chain)));
            assert!(outcome.is_err(), "tampering with {path} went unnoticed");
        }
    }
}

#[test]
fn tampering_with_any_field_of_a_chain_makes_verification_fail() {
    let chain = genesis();
    for (path, value) in tampered_variants(&serde_json::to_value(&chain).unwrap()) {
        if let Ok(tampered) = serde_json::from_value::<ChainResponse>(value) {
            assert!(
                verify_chain(&tampered, &keys()).is_err(),
                "{path} went unnoticed"
            );
        }
    }
}

#[test]
fn re_signed_entropy_tampering_is_caught_by_re_derivation() {
    // An insider with the key re-signs a draw whose entropy was swapped:
    // the signature and ID are then valid, but the result no longer derives.
    let (chain, draw) = first_draw();
    let mut body = draw.draw.body.clone();
    let mut bytes = hex::decode(&body.entropy.hex).unwrap();
    // The top byte of the first word: it decides the first card.
    bytes[7] ^= 0x80;
    body.entropy = EntropyUse::new(body.entropy.segments.clone(), &bytes);
    let forged = signer().seal_draw(body).unwrap();
    let outcome = verify_draw(&forged, &keys(), Some(Previous::Chain(&chain)));
    assert!(
        matches!(outcome, Err(VerifyError::ResultMismatch)),
        "{outcome:?}"
    );
}

#[test]
fn a_key_used_outside_its_validity_period_is_refused() {
    let (_, draw) = first_draw();
    let rotated = KeySet {
        keys: vec![signer().key_info(format_timestamp(T0), Some(format_timestamp(T0 + 2)))],
        devices: Vec::new(),
    };
    assert!(matches!(
        verify_draw(&draw, &rotated, None),
        Err(VerifyError::KeyNotValidAt { .. })
    ));
    let still_valid = KeySet {
        keys: vec![signer().key_info(format_timestamp(T0), Some(format_timestamp(T0 + 3)))],
        devices: Vec::new(),
    };
    verify_draw(&draw, &still_valid, None).unwrap();
}

#[test]
fn a_draw_presented_as_following_the_wrong_record_is_refused() {
    let (chain, draw) = first_draw();
    let other = draw_after(draw.draw.id, &chain, 2, Spec::Bytes { count: 8 });
    assert!(matches!(
        verify_draw(&other, &keys(), Some(Previous::Chain(&chain))),
        Err(VerifyError::BrokenLink(_))
    ));
    assert!(matches!(
        verify_draw(&draw, &KeySet::default(), None),
        Err(VerifyError::UnknownKey(_))
    ));
}

fn first_v2_draw(spec: Spec) -> (ChainResponse, DrawResponse) {
    let chain = genesis();
    let draw = sample::draw_after_with(&signer(), &chain, chain.id, 1, spec, Derivation::V2);
    (chain, draw)
}

#[test]
fn a_v2_draw_verifies_and_names_its_derivation() {
    for spec in [
        Spec::Permutation { n: 52 },
        Spec::Selection { k: 6, n: 49 },
        Spec::Bytes { count: 16 },
    ] {
        let (chain, draw) = first_v2_draw(spec);
        assert_eq!(draw.draw.body.derivation, "geiger-derive-v2");
        let report = verify_draw(&draw, &keys(), Some(Previous::Chain(&chain))).unwrap();
        assert!(
            report.checks.iter().any(|c| c.contains("geiger-derive-v2")),
            "{:?}",
            report.checks
        );
    }
}

#[test]
fn tampering_with_any_field_of_a_v2_draw_makes_verification_fail() {
    let (chain, draw) = first_v2_draw(Spec::Permutation { n: 52 });
    let variants = tampered_variants(&serde_json::to_value(&draw).unwrap());
    assert!(variants.len() > 60, "walked {} leaves", variants.len());
    for (path, value) in variants {
        if let Ok(tampered) = serde_json::from_value::<DrawResponse>(value) {
            assert_ne!(tampered, draw, "{path} was not changed");
            let outcome = verify_draw(&tampered, &keys(), Some(Previous::Chain(&chain)));
            assert!(outcome.is_err(), "tampering with {path} went unnoticed");
        }
    }
}

/// An insider with the key re-signs a v2 draw after changing one thing:
/// the ID and signature are valid, the derivation catches it.
#[test]
fn a_re_signed_v2_draw_with_changed_entropy_result_or_version_fails() {
    let (chain, draw) = first_v2_draw(Spec::Permutation { n: 52 });
    let body = draw.draw.body.clone();
    let bytes = hex::decode(&body.entropy.hex).unwrap();
    let reseal = |b: geiger_protocol::DrawBody| signer().seal_draw(b).unwrap();
    let check = |d: &DrawResponse| verify_draw(d, &keys(), Some(Previous::Chain(&chain)));

    // The first bit decides the first group, so the first cards.
    let mut flipped = bytes.clone();
    flipped[0] ^= 0x80;
    let mut b = body.clone();
    b.entropy = EntropyUse::new(b.entropy.segments.clone(), &flipped);
    assert!(matches!(
        check(&reseal(b)),
        Err(VerifyError::ResultMismatch)
    ));

    // One byte more than the derivation reads: entropy used for nothing.
    let mut longer = bytes.clone();
    longer.push(0);
    let mut b = body.clone();
    b.entropy = EntropyUse::new(b.entropy.segments.clone(), &longer);
    b.entropy.segments[1].length += 1;
    assert!(matches!(
        check(&reseal(b)),
        Err(VerifyError::UnusedEntropy { unused: 1 })
    ));

    // One byte fewer: the derivation runs out.
    let mut b = body.clone();
    b.entropy = EntropyUse::new(b.entropy.segments.clone(), &bytes[..bytes.len() - 1]);
    b.entropy.segments[1].length -= 1;
    assert!(matches!(
        check(&reseal(b)),
        Err(VerifyError::EntropyTooShort)
    ));

    // The same record claimed under v1: v1 reads the bytes otherwise.
    let mut b = body.clone();
    b.derivation = "geiger-derive-v1".into();
    assert!(check(&reseal(b)).is_err());

    // A version nobody issued.
    let mut b = body.clone();
    b.derivation = "geiger-derive-v3".into();
    assert!(matches!(
        check(&reseal(b)),
        Err(VerifyError::UnsupportedDerivation(_))
    ));

    // The skipped bits of the last byte are recorded and signed: changing
    // them (re-signed) still derives the same result, yet the record is
    // another record with another ID, so the original cannot be altered.
    let d = geiger_protocol::derive_v2(&body.spec, &bytes).unwrap();
    let skipped = bytes.len() as u64 * 8 - d.consumed_bits;
    assert!(skipped < 8);
    if skipped > 0 {
        let mut other = bytes.clone();
        *other.last_mut().unwrap() ^= 1;
        let mut b = body.clone();
        b.entropy = EntropyUse::new(b.entropy.segments.clone(), &other);
        let resealed = reseal(b);
        assert_ne!(resealed.draw.id, draw.draw.id);
    }
}
