//! Signed chunks: what a device vouches for. (The device's identity,
//! [`DeviceId`], is defined in `geiger_protocol::device` and re-exported.)
//!
//! A chunk is a run of entropy bytes with a sequence number that the device
//! never reuses. The device signs, with Ed25519, a fixed 80-byte layout:
//!
//! ```text
//! offset size field
//!      0   16 domain tag  "geiger-chunk-v1\0"
//!     16   16 device id   (first 16 bytes of SHA-256 of the public key)
//!     32    8 sequence    u64 big-endian
//!     40   32 SHA-256 of the chunk bytes
//!     72    8 timestamp   u64 big-endian, Unix milliseconds, device clock
//! ```
//!
//! The layout is fixed-width so there is exactly one encoding of each
//! statement (no canonicalisation rules to get wrong), and the domain tag
//! keeps a chunk signature from ever passing for any other signed message.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
pub use geiger_protocol::device::{BadDeviceId, DeviceId, DEVICE_ID_LEN};
use sha2::{Digest, Sha256};

/// Prefix of every chunk statement, including its version.
pub use geiger_protocol::provenance::CHUNK_DOMAIN;
/// Length of the signed statement.
pub const SIGNED_LEN: usize = geiger_protocol::provenance::CHUNK_STATEMENT_LEN;
/// The exact bytes a device signs for a chunk (defined in
/// `geiger_protocol::provenance`, so verifiers need not depend on this crate).
pub fn signed_statement(
    device: &DeviceId,
    seq: u64,
    sha256: &[u8; 32],
    timestamp_ms: u64,
) -> [u8; SIGNED_LEN] {
    geiger_protocol::provenance::chunk_statement(device, seq, sha256, timestamp_ms)
}

/// A chunk as it travels on the link: the device id is not repeated per
/// chunk (the session's handshake names it), but it is part of what is signed.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedChunk {
    pub seq: u64,
    pub timestamp_ms: u64,
    pub signature: [u8; 64],
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SignedChunk {
    // The bytes are secret until a draw uses them; keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedChunk")
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Why a chunk's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {seq}: the Ed25519 signature does not verify against the device's key")]
    BadSignature { seq: u64 },
}

impl SignedChunk {
    /// Signs `bytes` as chunk `seq` of the device holding `key`.
    pub fn sign(key: &SigningKey, seq: u64, timestamp_ms: u64, bytes: Vec<u8>) -> Self {
        let device = DeviceId::of(&key.verifying_key());
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let statement = signed_statement(&device, seq, &digest, timestamp_ms);
        SignedChunk {
            seq,
            timestamp_ms,
            signature: key.sign(&statement).to_bytes(),
            bytes,
        }
    }

    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// Checks the signature with the device's registered key. Strict
    /// verification rejects the malleable and small-order forms, so one
    /// statement has one valid signature encoding from an honest signer.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ChunkError> {
        let device = DeviceId::of(key);
        let statement = signed_statement(&device, self.seq, &self.sha256(), self.timestamp_ms);
        key.verify_strict(&statement, &Signature::from_bytes(&self.signature))
            .map_err(|_| ChunkError::BadSignature { seq: self.seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_signed_chunk_verifies_with_its_device_key() {
        let chunk = SignedChunk::sign(&key(), 42, 1_700_000_000_000, vec![1, 2, 3]);
        assert_eq!(chunk.verify(&key().verifying_key()), Ok(()));
    }

    #[test]
    fn changing_any_signed_field_breaks_the_signature() {
        let vk = key().verifying_key();
        let chunk = SignedChunk::sign(&key(), 42, 1_700_000_000_000, vec![1, 2, 3]);
        let mut c = chunk.clone();
        c.seq = 43;
        assert!(c.verify(&vk).is_err());
        let mut c = chunk.clone();
        c.timestamp_ms += 1;
        assert!(c.verify(&vk).is_err());
        let mut c = chunk.clone();
        c.bytes[0] ^= 1;
        assert!(c.verify(&vk).is_err());
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(chunk.verify(&other).is_err());
    }

    #[test]
    fn the_signed_statement_has_the_documented_layout() {
        let device = DeviceId([0xAA; 16]);
        let s = signed_statement(&device, 0x0102030405060708, &[0xBB; 32], 0x1122334455667788);
        assert_eq!(&s[..16], b"geiger-chunk-v1\0");
        assert_eq!(&s[16..32], &[0xAA; 16]);
        assert_eq!(&s[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&s[40..72], &[0xBB; 32]);
        assert_eq!(
            &s[72..80],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
    }
}
