//! Offline verification of issued records: what `geiger verify`, the client
//! SDK and the fault harness run on every draw they see.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::canonical::{to_canonical_vec, CanonicalError};
use crate::derivation::Derivation;
use crate::id::{RecordId, RecordKind};
use crate::record::{parse_timestamp, ChainResponse, DrawResponse, KeySet, Signature, ALG_ED25519};
use crate::spec::SpecError;

/// What was checked, in order, for a human-readable report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub checks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("signature algorithm `{0}` is not ed25519")]
    UnsupportedAlgorithm(String),
    #[error("the signature names key {signature} but the record names key {record}")]
    KeyIdMismatch { signature: String, record: String },
    #[error("key {0} is not in the key set")]
    UnknownKey(String),
    #[error("key {key_id} is malformed: {reason}")]
    BadKey { key_id: String, reason: String },
    #[error("key {key_id} was not valid at {at}")]
    KeyNotValidAt { key_id: String, at: String },
    #[error("timestamp `{0}` is not RFC 3339")]
    BadTimestamp(String),
    #[error("the record cannot be canonicalised: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("the ID is {claimed} but the record hashes to {actual}")]
    IdMismatch { claimed: RecordId, actual: RecordId },
    #[error("the signature is malformed")]
    MalformedSignature,
    #[error("the signature does not match the record")]
    BadSignature,
    #[error("derivation `{0}` is not supported by this verifier")]
    UnsupportedDerivation(String),
    #[error("the spec breaks a limit: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("the entropy is not valid hex")]
    EntropyNotHex,
    #[error("the entropy hashes to {actual}, the record says {claimed}")]
    EntropyHashMismatch { claimed: String, actual: String },
    #[error("the entropy segments cover {segments} bytes but {bytes} bytes are recorded")]
    SegmentLengthMismatch { segments: u64, bytes: usize },
    #[error("the recorded entropy is too short to derive the result")]
    EntropyTooShort,
    #[error("the recorded entropy has {unused} bytes the derivation did not use")]
    UnusedEntropy { unused: usize },
    #[error("re-deriving the result from the recorded entropy gives a different result")]
    ResultMismatch,
    #[error("the link to `previous` is broken: {0}")]
    BrokenLink(String),
}

/// The record a draw names as `previous`, when the verifier has it.
#[derive(Debug, Clone, Copy)]
pub enum Previous<'a> {
    Chain(&'a ChainResponse),
    Draw(&'a DrawResponse),
}

fn check_signature(
    keys: &KeySet,
    signature: &Signature,
    record_key_id: &str,
    signed_at: &str,
    message: &[u8],
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    if signature.alg != ALG_ED25519 {
        return Err(VerifyError::UnsupportedAlgorithm(signature.alg.clone()));
    }
    if signature.key_id != record_key_id {
        return Err(VerifyError::KeyIdMismatch {
            signature: signature.key_id.clone(),
            record: record_key_id.to_string(),
        });
    }
    let key = keys
        .find(record_key_id)
        .ok_or_else(|| VerifyError::UnknownKey(record_key_id.to_string()))?;
    let bad_key = |reason: &str| VerifyError::BadKey {
        key_id: key.key_id.clone(),
        reason: reason.to_string(),
    };
    let raw: [u8; 32] = BASE64
        .decode(&key.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_key("public_key is not 32 bytes of base64"))?;
    let public = VerifyingKey::from_bytes(&raw).map_err(|_| bad_key("not an Ed25519 point"))?;
    if crate::record::key_id_of(&public) != key.key_id {
        return Err(bad_key("key_id does not match the public key"));
    }

    let at = parse_timestamp(signed_at)
        .ok_or_else(|| VerifyError::BadTimestamp(signed_at.to_string()))?;
    let from = parse_timestamp(&key.valid_from)
        .ok_or_else(|| VerifyError::BadTimestamp(key.valid_from.clone()))?;
    let until = match &key.valid_until {
        Some(text) => {
            Some(parse_timestamp(text).ok_or_else(|| VerifyError::BadTimestamp(text.clone()))?)
        }
        None => None,
    };
    if at < from || until.is_some_and(|u| at >= u) {
        return Err(VerifyError::KeyNotValidAt {
            key_id: key.key_id.clone(),
            at: signed_at.to_string(),
        });
    }
    report.checks.push(format!(
        "key {} is known and was valid at {signed_at}",
        key.key_id
    ));

    let sig_bytes: [u8; 64] = BASE64
        .decode(&signature.value)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(VerifyError::MalformedSignature)?;
    public
        .verify_strict(message, &DalekSignature::from_bytes(&sig_bytes))
        .map_err(|_| VerifyError::BadSignature)?;
    report
        .checks
        .push("Ed25519 signature over the canonical record is valid".into());
    Ok(())
}

fn check_id(
    kind: RecordKind,
    claimed: RecordId,
    canonical_body: &[u8],
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let actual = RecordId::for_body(kind, canonical_body);
    if actual != claimed {
        return Err(VerifyError::IdMismatch { claimed, actual });
    }
    report
        .checks
        .push(format!("ID {claimed} is the hash of the record"));
    Ok(())
}

/// Verifies a chain's genesis record: ID and signature.
pub fn verify_chain(chain: &ChainResponse, keys: &KeySet) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport::default();
    let body = &chain.chain.body;
    let bytes = to_canonical_vec(body)?;
    if chain.id != chain.chain.id {
        return Err(VerifyError::IdMismatch {
            claimed: chain.id,
            actual: chain.chain.id,
        });
    }
    check_id(RecordKind::Chain, chain.id, &bytes, &mut report)?;
    check_signature(
        keys,
        &chain.signature,
        &body.key_id,
        &body.created_at,
        &bytes,
        &mut report,
    )?;
    Ok(report)
}

/// Verifies a draw: signature and key validity, content-hash ID, the
/// recorded entropy (hash and segment accounting), re-derivation of the
/// result from exactly that entropy, and, when `previous` is given, the link
/// to it (same chain, same customer, next position).
pub fn verify_draw(
    draw: &DrawResponse,
    keys: &KeySet,
    previous: Option<Previous<'_>>,
) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport::default();
    let body = &draw.draw.body;
    let bytes = to_canonical_vec(body)?;
    check_id(RecordKind::Draw, draw.draw.id, &bytes, &mut report)?;
    check_signature(
        keys,
        &draw.signature,
        &body.key_id,
        &body.issued_at,
        &bytes,
        &mut report,
    )?;

    let derivation = Derivation::from_name(&body.derivation)
        .ok_or_else(|| VerifyError::UnsupportedDerivation(body.derivation.clone()))?;
    body.spec.validate()?;

    let entropy = hex::decode(&body.entropy.hex).map_err(|_| VerifyError::EntropyNotHex)?;
    let actual_hash = hex::encode(Sha256::digest(&entropy));
    if actual_hash != body.entropy.sha256 {
        return Err(VerifyError::EntropyHashMismatch {
            claimed: body.entropy.sha256.clone(),
            actual: actual_hash,
        });
    }
    let covered: u64 = body.entropy.segments.iter().map(|s| s.length as u64).sum();
    if covered != entropy.len() as u64 {
        return Err(VerifyError::SegmentLengthMismatch {
            segments: covered,
            bytes: entropy.len(),
        });
    }
    report.checks.push(format!(
        "{} entropy bytes from {} segment(s) match their SHA-256",
        entropy.len(),
        body.entropy.segments.len()
    ));

    // Whole bytes for every version: v2's skipped bits lie in the last byte,
    // so a byte it did not reach at all is still unused entropy.
    let derived = derivation
        .derive(&body.spec, &entropy)
        .map_err(|_| VerifyError::EntropyTooShort)?;
    if derived.consumed != entropy.len() {
        return Err(VerifyError::UnusedEntropy {
            unused: entropy.len() - derived.consumed,
        });
    }
    if derived.result != body.result {
        return Err(VerifyError::ResultMismatch);
    }
    report.checks.push(format!(
        "{} re-derives the same {} result from the recorded entropy",
        derivation.name(),
        body.spec.kind_name()
    ));

    check_chain_position(draw, previous, &mut report)?;
    Ok(report)
}

fn check_chain_position(
    draw: &DrawResponse,
    previous: Option<Previous<'_>>,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let body = &draw.draw.body;
    let broken = |why: String| Err(VerifyError::BrokenLink(why));
    if body.chain.kind() != RecordKind::Chain {
        return broken(format!("`chain` {} is not a chain ID", body.chain));
    }
    match (body.position, body.previous.kind()) {
        (1, RecordKind::Chain) if body.previous == body.chain => {}
        (1, _) => return broken("position 1 must follow the chain's genesis".into()),
        (0, _) => return broken("positions start at 1".into()),
        (_, RecordKind::Draw) => {}
        (_, RecordKind::Chain) => {
            return broken("only position 1 follows the genesis".into());
        }
    }
    let Some(previous) = previous else {
        return Ok(());
    };
    let (prev_id, prev_chain, prev_customer, prev_position) = match previous {
        Previous::Chain(c) => (c.id, c.id, &c.chain.body.customer, 0),
        Previous::Draw(d) => (
            d.draw.id,
            d.draw.body.chain,
            &d.draw.body.customer,
            d.draw.body.position,
        ),
    };
    if body.previous != prev_id {
        return broken(format!(
            "`previous` is {} but the given record is {prev_id}",
            body.previous
        ));
    }
    if body.chain != prev_chain || &body.customer != prev_customer {
        return broken("`previous` belongs to another chain or customer".into());
    }
    if body.position != prev_position + 1 {
        return broken(format!(
            "position {} does not follow position {prev_position}",
            body.position
        ));
    }
    report.checks.push(format!(
        "follows {prev_id} at position {} of chain {}",
        body.position, body.chain
    ));
    Ok(())
}
