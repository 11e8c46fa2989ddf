//! The key-encryption key (KEK): signing secrets are stored and replicated
//! only sealed under it, so a stolen disk, Raft log, snapshot or backup
//! does not yield a signing key. The KEK itself lives outside the data
//! directory (a file, or an environment variable, filled by whatever holds
//! it: a secrets manager, a cloud KMS decrypting a wrapped copy at boot,
//! systemd credentials); see docs/RUNBOOK.md.
//!
//! Sealing is XChaCha20-Poly1305 with a random 24-byte nonce (drawn by the
//! proposer, like the secret itself) and the public key as associated
//! data, so a sealed secret cannot be passed off as another key's.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Bound into every sealed secret, so a ciphertext made for another
/// purpose under the same KEK does not open here.
const CONTEXT: &[u8] = b"geiger signing secret v1\0";

/// A signing secret as stored and replicated: ciphertext and tag of the
/// 32-byte Ed25519 secret, and which KEK sealed it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The first 8 bytes of SHA-256 of the KEK: tells "another KEK" apart
    /// from "damaged ciphertext" in the error an operator reads.
    pub kek_id: [u8; 8],
    pub nonce: [u8; 24],
    #[serde(with = "crate::types::raw_bytes")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("kek_id", &hex::encode(self.kek_id))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KekError {
    #[error("the key-encryption key must be 32 bytes, written as 64 hex digits ({0})")]
    Malformed(String),
    #[error("cannot read the key-encryption key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "the key-encryption key file {0} can be read by other users; make it private (chmod 600)"
    )]
    NotPrivate(String),
    #[error("this signing secret was sealed under KEK {sealed_by}, but this node holds KEK {ours}: every node needs the same KEK")]
    OtherKek { sealed_by: String, ours: String },
    #[error("a sealed signing secret did not open (damaged, or not this key's)")]
    Damaged,
    #[error("a signing secret is sealed, but this node has no key-encryption key configured (signing.key_encryption_key_file)")]
    Missing,
}

/// The 32-byte key-encryption key. Wiped from memory when dropped; never
/// printed.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    key: Zeroizing<[u8; 32]>,
    id: [u8; 8],
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEncryptionKey({})", self.id_hex())
    }
}

impl KeyEncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyEncryptionKey {
            key: Zeroizing::new(bytes),
            id,
        }
    }

    /// From 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KekError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), bytes.as_mut())
            .map_err(|e| KekError::Malformed(e.to_string()))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// From a file holding 64 hex digits, which no other user may read.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KekError> {
        let unreadable = |e: std::io::Error| KekError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(unreadable)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KekError::NotPrivate(path.display().to_string()));
            }
        }
        let mut text = std::fs::read_to_string(path).map_err(unreadable)?;
        let kek = Self::from_hex(&text);
        text.zeroize();
        kek
    }

    /// A fresh random key, as 64 hex digits (for `geiger dev` and for
    /// operators creating one).
    pub fn generate_hex() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), bytes.as_mut());
        Zeroizing::new(hex::encode(bytes.as_ref()))
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }

    /// Seals `secret`, binding it to `public_key`.
    pub fn seal(&self, secret: &[u8; 32], public_key: &[u8; 32]) -> SealedSecret {
        let nonce: [u8; 24] = rand::random();
        let aad = associated_data(public_key);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any 32-byte message");
        SealedSecret {
            kek_id: self.id,
            nonce,
            ciphertext,
        }
    }

    /// Opens a secret sealed for `public_key` under this KEK.
    pub fn open(
        &self,
        sealed: &SealedSecret,
        public_key: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>, KekError> {
        if sealed.kek_id != self.id {
            return Err(KekError::OtherKek {
                sealed_by: hex::encode(sealed.kek_id),
                ours: self.id_hex(),
            });
        }
        let aad = associated_data(public_key);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    XNonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| KekError::Damaged)?,
        );
        let mut secret = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(KekError::Damaged);
        }
        secret.copy_from_slice(&plain);
        Ok(secret)
    }
}

fn associated_data(public_key: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(CONTEXT.len() + 32);
    aad.extend_from_slice(CONTEXT);
    aad.extend_from_slice(public_key);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_kek_and_public_key() {
        let secret = [7u8; 32];
        let public = [9u8; 32];
        let sealed = kek(1).seal(&secret, &public);
        assert_eq!(*kek(1).open(&sealed, &public).unwrap(), secret);
        assert!(!sealed
            .ciphertext
            .windows(32)
            .any(|w| w == secret.as_slice()));
    }

    #[test]
    fn another_kek_is_named_as_such() {
        let sealed = kek(1).seal(&[7u8; 32], &[9u8; 32]);
        assert!(matches!(
            kek(2).open(&sealed, &[9u8; 32]),
            Err(KekError::OtherKek { .. })
        ));
    }

    #[test]
    fn a_secret_sealed_for_one_public_key_does_not_open_for_another() {
        let sealed = kek(1).seal(&[7u8; 32], &[9u8; 32]);
        assert_eq!(
            kek(1).open(&sealed, &[8u8; 32]).unwrap_err(),
            KekError::Damaged
        );
    }

    #[test]
    fn a_flipped_bit_in_the_ciphertext_is_refused() {
        let mut sealed = kek(1).seal(&[7u8; 32], &[9u8; 32]);
        sealed.ciphertext[3] ^= 1;
        assert_eq!(
            kek(1).open(&sealed, &[9u8; 32]).unwrap_err(),
            KekError::Damaged
        );
    }

    #[test]
    fn a_kek_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        std::fs::write(&path, KeyEncryptionKey::generate_hex().as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyEncryptionKey::from_file(&path),
            Err(KekError::NotPrivate(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(KeyEncryptionKey::from_file(&path).is_ok());
    }

    #[test]
    fn a_kek_that_is_not_64_hex_digits_is_refused() {
        assert!(matches!(
            KeyEncryptionKey::from_hex("abcd"),
            Err(KekError::Malformed(_))
        ));
    }
}
