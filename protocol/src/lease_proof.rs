//! Lease attestations: the proof a device asks for before it accepts an
//! epoch (docs/LINK.md, "Epochs a device can trust").
//!
//! A cluster member that has applied the ledger's lease for a device signs,
//! with its node link key, the statement "the ledger leased device D to the
//! node holding link key O at epoch E". The owner collects these from the
//! members and sends them in its Hello; the device accepts the epoch only
//! when a majority of the members it trusts signed it. One member alone (a
//! bug, or a compromised host) can therefore no longer move a device's
//! epoch: it would need a majority of the cluster to lie with it, which is
//! what it takes to corrupt the ledger itself.
//!
//! The statement is 88 fixed bytes: `geiger-lease-v1\0` (16), the device's
//! public key (32), the epoch (u64 big-endian, 8), the owner's link public
//! key (32). The prefix keeps it from being taken for anything else the
//! same key signs (TLS transcripts sign a 64-space prefix and a context
//! string; nothing else is signed with a node link key).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Domain separation for lease statements.
pub const LEASE_STATEMENT_PREFIX: &[u8; 16] = b"geiger-lease-v1\0";
/// Length of a lease statement.
pub const LEASE_STATEMENT_LEN: usize = 16 + 32 + 8 + 32;
/// Bytes of one attestation on the wire: signer key and signature.
pub const ATTESTATION_LEN: usize = 32 + 64;

/// What a lease attestation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClaim {
    /// The device's Ed25519 public key (its registered identity).
    pub device_key: [u8; 32],
    pub epoch: u64,
    /// The owner's node link public key (the key it presents to the device).
    pub owner_key: [u8; 32],
}

impl LeaseClaim {
    /// The exact bytes a member signs.
    pub fn statement(&self) -> [u8; LEASE_STATEMENT_LEN] {
        let mut out = [0u8; LEASE_STATEMENT_LEN];
        out[..16].copy_from_slice(LEASE_STATEMENT_PREFIX);
        out[16..48].copy_from_slice(&self.device_key);
        out[48..56].copy_from_slice(&self.epoch.to_be_bytes());
        out[56..].copy_from_slice(&self.owner_key);
        out
    }
}

/// One member's signature over a [`LeaseClaim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseAttestation {
    /// The signing member's link public key.
    pub signer: [u8; 32],
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

impl LeaseAttestation {
    pub fn sign(key: &SigningKey, claim: &LeaseClaim) -> Self {
        LeaseAttestation {
            signer: key.verifying_key().to_bytes(),
            signature: key.sign(&claim.statement()).to_bytes(),
        }
    }

    /// Whether the signature is the signer's over exactly this claim.
    pub fn verifies(&self, claim: &LeaseClaim) -> bool {
        match VerifyingKey::from_bytes(&self.signer) {
            Ok(key) => key
                .verify(&claim.statement(), &Signature::from_bytes(&self.signature))
                .is_ok(),
            Err(_) => false,
        }
    }

    pub fn to_bytes(&self) -> [u8; ATTESTATION_LEN] {
        let mut out = [0u8; ATTESTATION_LEN];
        out[..32].copy_from_slice(&self.signer);
        out[32..].copy_from_slice(&self.signature);
        out
    }

    pub fn from_bytes(bytes: &[u8; ATTESTATION_LEN]) -> Self {
        let mut signer = [0u8; 32];
        let mut signature = [0u8; 64];
        signer.copy_from_slice(&bytes[..32]);
        signature.copy_from_slice(&bytes[32..]);
        LeaseAttestation { signer, signature }
    }
}

/// How many of `trusted` members validly signed `claim`. A signer counts
/// once however often it appears; signers outside `trusted` count nothing.
pub fn trusted_signers(
    attestations: &[LeaseAttestation],
    claim: &LeaseClaim,
    trusted: &[[u8; 32]],
) -> usize {
    let mut counted: Vec<[u8; 32]> = Vec::new();
    for a in attestations {
        if trusted.contains(&a.signer) && !counted.contains(&a.signer) && a.verifies(claim) {
            counted.push(a.signer);
        }
    }
    counted.len()
}

/// A majority of `members`: the fewest signers that prove a lease.
pub fn majority_of(members: usize) -> usize {
    members / 2 + 1
}

mod signature_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = serde::de::Deserialize::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn claim() -> LeaseClaim {
        LeaseClaim {
            device_key: [7; 32],
            epoch: 42,
            owner_key: key(1).verifying_key().to_bytes(),
        }
    }

    #[test]
    fn the_statement_is_the_prefix_then_device_epoch_and_owner_in_fixed_places() {
        let s = claim().statement();
        assert_eq!(&s[..16], b"geiger-lease-v1\0");
        assert_eq!(&s[16..48], &[7; 32]);
        assert_eq!(&s[48..56], &42u64.to_be_bytes());
        assert_eq!(&s[56..], &claim().owner_key);
    }

    #[test]
    fn an_attestation_verifies_only_for_the_claim_it_signed() {
        let a = LeaseAttestation::sign(&key(2), &claim());
        assert!(a.verifies(&claim()));
        for other in [
            LeaseClaim {
                epoch: 43,
                ..claim()
            },
            LeaseClaim {
                device_key: [8; 32],
                ..claim()
            },
            LeaseClaim {
                owner_key: key(3).verifying_key().to_bytes(),
                ..claim()
            },
        ] {
            assert!(!a.verifies(&other));
        }
        let mut forged = a;
        forged.signer = key(3).verifying_key().to_bytes();
        assert!(!forged.verifies(&claim()));
        assert_eq!(LeaseAttestation::from_bytes(&a.to_bytes()), a);
    }

    #[test]
    fn only_distinct_trusted_signers_count_towards_a_majority() {
        let trusted: Vec<[u8; 32]> = (1..=5).map(|n| key(n).verifying_key().to_bytes()).collect();
        let by = |n: u8| LeaseAttestation::sign(&key(n), &claim());
        // The same member three times is one signer; an outsider is none.
        let proof = vec![by(1), by(1), by(1), by(9), by(2)];
        assert_eq!(trusted_signers(&proof, &claim(), &trusted), 2);
        assert!(trusted_signers(&proof, &claim(), &trusted) < majority_of(trusted.len()));
        let proof = vec![by(1), by(2), by(4)];
        assert_eq!(trusted_signers(&proof, &claim(), &trusted), 3);
        assert_eq!(majority_of(5), 3);
        assert_eq!(majority_of(1), 1);
        assert_eq!(majority_of(4), 3);
    }
}
