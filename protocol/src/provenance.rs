//! Provenance anyone can check (docs/DERIVATION.md §10): the statement a
//! device signs for each chunk, the public form of an exhausted chunk
//! (`GET /v1/chunks/{device}/{seq}`), the device keys published beside the
//! signing keys, and the check that a draw's segment is exactly a slice of
//! a chunk the device signed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::device::DeviceId;
use crate::record::{parse_timestamp, EntropySegment, KeySet};

/// Prefix of every chunk statement, including its version.
pub const CHUNK_DOMAIN: &[u8; 16] = b"geiger-chunk-v1\0";
/// Length of the signed statement.
pub const CHUNK_STATEMENT_LEN: usize = 80;

/// The exact bytes a device signs for chunk `seq`: the domain, the 16 bytes
/// of its id, `seq` (u64 BE), SHA-256 of the chunk's bytes, and the
/// device's timestamp (Unix ms, u64 BE).
pub fn chunk_statement(
    device: &DeviceId,
    seq: u64,
    sha256: &[u8; 32],
    timestamp_ms: u64,
) -> [u8; CHUNK_STATEMENT_LEN] {
    let mut out = [0u8; CHUNK_STATEMENT_LEN];
    out[0..16].copy_from_slice(CHUNK_DOMAIN);
    out[16..32].copy_from_slice(&device.0);
    out[32..40].copy_from_slice(&seq.to_be_bytes());
    out[40..72].copy_from_slice(sha256);
    out[72..80].copy_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// A device public key and the period its link was registered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeyInfo {
    /// `dev_` and the hex of the first 16 bytes of SHA-256 of the key.
    pub device: String,
    pub alg: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// When the link was registered.
    pub valid_from: String,
    /// When the link was removed; `None` while registered.
    pub valid_until: Option<String>,
}

/// `GET /v1/chunks/{device}/{seq}`: an exhausted chunk, public.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicChunk {
    pub device: String,
    pub seq: u64,
    /// Base64 of the device's 32-byte Ed25519 public key.
    pub public_key: String,
    /// The device's timestamp, Unix milliseconds, as signed.
    pub timestamp_ms: u64,
    /// Number of bytes in the chunk.
    pub length: u32,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Base64 of the device's 64-byte Ed25519 signature of the statement.
    pub signature: String,
    /// The chunk's bytes, lowercase hex.
    pub hex: String,
    /// When the ledger used its last byte (RFC 3339, the ledger's clock as
    /// in `issued_at`): every draw that used it was issued at or before.
    pub exhausted_at: String,
}

/// Why a segment's provenance does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    #[error("the chunk served is {served}, not the segment's {wanted}")]
    WrongChunk { served: String, wanted: String },
    #[error("malformed chunk: {0}")]
    Malformed(&'static str),
    #[error("the public key is not the key of device {0}")]
    KeyNotDevice(String),
    #[error("the key set publishes no such key for device {0}")]
    KeyNotPublished(String),
    #[error("the chunk's SHA-256 does not match its bytes")]
    HashMismatch,
    #[error("the device signature does not verify")]
    BadSignature,
    #[error("bytes {offset}..{end} are not inside the chunk's {length} bytes")]
    OutOfRange { offset: u32, end: u64, length: u32 },
    #[error("the draw's entropy differs from bytes {offset}..{end} of the chunk")]
    EntropyMismatch { offset: u32, end: u64 },
    #[error("the chunk was public (exhausted at {exhausted_at}) before the draw was issued at {issued_at}")]
    RevealedBeforeIssue {
        exhausted_at: String,
        issued_at: String,
    },
}

/// Checks that `chunk` is the chunk `segment` names, signed by a device key
/// `keys` publishes, that `entropy` (the segment's bytes as the draw records
/// them) is exactly its bytes `offset..offset + length`, and that the chunk
/// was still secret when the draw was issued (`issued_at`).
pub fn check_segment(
    segment: &EntropySegment,
    entropy: &[u8],
    issued_at: &str,
    chunk: &PublicChunk,
    keys: &KeySet,
) -> Result<(), ProvenanceError> {
    if chunk.device != segment.device || chunk.seq != segment.chunk_seq {
        return Err(ProvenanceError::WrongChunk {
            served: format!("{} #{}", chunk.device, chunk.seq),
            wanted: format!("{} #{}", segment.device, segment.chunk_seq),
        });
    }
    let key: [u8; 32] = BASE64
        .decode(&chunk.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(ProvenanceError::Malformed(
            "public_key is not 32 bytes of base64",
        ))?;
    let device = DeviceId::of_key_bytes(&key);
    if device.to_string() != chunk.device {
        return Err(ProvenanceError::KeyNotDevice(chunk.device.clone()));
    }
    if !keys
        .devices
        .iter()
        .any(|d| d.device == chunk.device && d.public_key == chunk.public_key)
    {
        return Err(ProvenanceError::KeyNotPublished(chunk.device.clone()));
    }
    let bytes =
        hex::decode(&chunk.hex).map_err(|_| ProvenanceError::Malformed("hex is not hex"))?;
    if bytes.len() != chunk.length as usize {
        return Err(ProvenanceError::Malformed(
            "length is not the number of bytes",
        ));
    }
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    if hex::encode(sha256) != chunk.sha256 {
        return Err(ProvenanceError::HashMismatch);
    }
    let signature: [u8; 64] = BASE64
        .decode(&chunk.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(ProvenanceError::Malformed(
            "signature is not 64 bytes of base64",
        ))?;
    let statement = chunk_statement(&device, chunk.seq, &sha256, chunk.timestamp_ms);
    VerifyingKey::from_bytes(&key)
        .map_err(|_| ProvenanceError::Malformed("public_key is not a curve point"))?
        .verify_strict(&statement, &Signature::from_bytes(&signature))
        .map_err(|_| ProvenanceError::BadSignature)?;
    let end = u64::from(segment.offset) + u64::from(segment.length);
    if end > bytes.len() as u64 {
        return Err(ProvenanceError::OutOfRange {
            offset: segment.offset,
            end,
            length: chunk.length,
        });
    }
    if bytes[segment.offset as usize..end as usize] != *entropy {
        return Err(ProvenanceError::EntropyMismatch {
            offset: segment.offset,
            end,
        });
    }
    let exhausted = parse_timestamp(&chunk.exhausted_at)
        .ok_or(ProvenanceError::Malformed("exhausted_at is not RFC 3339"))?;
    let issued = parse_timestamp(issued_at).ok_or(ProvenanceError::Malformed(
        "the draw's issued_at is not RFC 3339",
    ))?;
    if issued > exhausted {
        return Err(ProvenanceError::RevealedBeforeIssue {
            exhausted_at: chunk.exhausted_at.clone(),
            issued_at: issued_at.to_string(),
        });
    }
    Ok(())
}

/// Splits a draw's recorded entropy into its segments' bytes, in order;
/// `None` if the lengths do not add up to the entropy's length.
pub fn segment_bytes<'a>(segments: &[EntropySegment], entropy: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    let mut out = Vec::with_capacity(segments.len());
    let mut at = 0usize;
    for s in segments {
        let end = at.checked_add(s.length as usize)?;
        out.push(entropy.get(at..end)?);
        at = end;
    }
    (at == entropy.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    fn signed_chunk(key: &SigningKey, device: &DeviceId, seq: u64, bytes: &[u8]) -> PublicChunk {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let statement = chunk_statement(device, seq, &sha256, 1_795_000_000_000);
        PublicChunk {
            device: device.to_string(),
            seq,
            public_key: BASE64.encode(key.verifying_key().as_bytes()),
            timestamp_ms: 1_795_000_000_000,
            length: bytes.len() as u32,
            sha256: hex::encode(sha256),
            signature: BASE64.encode(key.sign(&statement).to_bytes()),
            hex: hex::encode(bytes),
            exhausted_at: ISSUED.into(),
        }
    }

    const ISSUED: &str = "2026-12-01T10:00:00.000Z";

    fn keys_listing(key: &SigningKey) -> KeySet {
        KeySet {
            keys: Vec::new(),
            devices: vec![DeviceKeyInfo {
                device: DeviceId::of(&key.verifying_key()).to_string(),
                alg: "ed25519".into(),
                public_key: BASE64.encode(key.verifying_key().as_bytes()),
                valid_from: "2026-12-01T00:00:00.000Z".into(),
                valid_until: None,
            }],
        }
    }

    fn segment(device: &DeviceId, seq: u64, offset: u32, length: u32) -> EntropySegment {
        EntropySegment {
            device: device.to_string(),
            chunk_seq: seq,
            offset,
            length,
        }
    }

    #[test]
    fn a_segment_that_is_a_slice_of_a_signed_chunk_verifies_and_a_changed_byte_does_not() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let id = DeviceId::of(&key.verifying_key());
        let bytes: Vec<u8> = (0..64).collect();
        let chunk = signed_chunk(&key, &id, 3, &bytes);
        let keys = keys_listing(&key);
        check_segment(
            &segment(&id, 3, 10, 5),
            &bytes[10..15],
            ISSUED,
            &chunk,
            &keys,
        )
        .unwrap();
        assert!(matches!(
            check_segment(
                &segment(&id, 3, 10, 5),
                &[10, 11, 12, 13, 99],
                ISSUED,
                &chunk,
                &keys
            ),
            Err(ProvenanceError::EntropyMismatch { .. })
        ));
        assert!(matches!(
            check_segment(&segment(&id, 3, 60, 5), &[0; 5], ISSUED, &chunk, &keys),
            Err(ProvenanceError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_segment(
                &segment(&id, 4, 10, 5),
                &bytes[10..15],
                ISSUED,
                &chunk,
                &keys
            ),
            Err(ProvenanceError::WrongChunk { .. })
        ));
        let mut doctored = chunk.clone();
        let mut changed = bytes.clone();
        changed[40] ^= 1;
        doctored.hex = hex::encode(&changed);
        doctored.sha256 = hex::encode(Sha256::digest(&changed));
        assert_eq!(
            check_segment(
                &segment(&id, 3, 10, 5),
                &bytes[10..15],
                ISSUED,
                &doctored,
                &keys
            ),
            Err(ProvenanceError::BadSignature)
        );
    }

    #[test]
    fn a_draw_issued_after_its_chunk_was_made_public_fails() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let id = DeviceId::of(&key.verifying_key());
        let bytes = [3u8; 16];
        let chunk = signed_chunk(&key, &id, 0, &bytes);
        let keys = keys_listing(&key);
        // Issued in the same millisecond as the draw that used it up: fine.
        check_segment(&segment(&id, 0, 0, 4), &bytes[..4], ISSUED, &chunk, &keys).unwrap();
        assert!(matches!(
            check_segment(
                &segment(&id, 0, 0, 4),
                &bytes[..4],
                "2026-12-01T10:00:00.001Z",
                &chunk,
                &keys
            ),
            Err(ProvenanceError::RevealedBeforeIssue { .. })
        ));
    }

    #[test]
    fn a_chunk_signed_by_a_key_the_key_set_does_not_list_fails() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let stranger = SigningKey::from_bytes(&[8; 32]);
        let id = DeviceId::of(&key.verifying_key());
        let bytes = [1u8; 16];
        // Another key claiming the device's ID.
        let mut forged = signed_chunk(&stranger, &id, 0, &bytes);
        assert_eq!(
            check_segment(
                &segment(&id, 0, 0, 16),
                &bytes,
                ISSUED,
                &forged,
                &keys_listing(&key)
            ),
            Err(ProvenanceError::KeyNotDevice(id.to_string()))
        );
        // Its own device, never registered.
        let stranger_id = DeviceId::of(&stranger.verifying_key());
        forged = signed_chunk(&stranger, &stranger_id, 0, &bytes);
        assert_eq!(
            check_segment(
                &segment(&stranger_id, 0, 0, 16),
                &bytes,
                ISSUED,
                &forged,
                &keys_listing(&key)
            ),
            Err(ProvenanceError::KeyNotPublished(stranger_id.to_string()))
        );
    }

    #[test]
    fn segments_split_the_entropy_in_order_and_must_cover_it_exactly() {
        let id = DeviceId([0; 16]);
        let segs = [segment(&id, 0, 250, 6), segment(&id, 1, 0, 2)];
        let e = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(segment_bytes(&segs, &e).unwrap(), vec![&e[..6], &e[6..]]);
        assert!(segment_bytes(&segs, &e[..7]).is_none());
        assert!(segment_bytes(&segs[..1], &e).is_none());
    }
}
