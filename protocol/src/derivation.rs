//! The derivation versions geiger knows, by the name a draw records: which
//! one new draws use, and how each derives and estimates its entropy. A
//! verifier keeps every version ever issued (docs/DERIVATION.md §9).

use serde::{Deserialize, Serialize};

use crate::derive::{derive, min_entropy_bytes, Derived, NeedMoreEntropy, DERIVATION_V1};
use crate::derive_v2::{derive_v2, entropy_bytes_estimate_v2, DERIVATION_V2};
use crate::spec::Spec;

/// A derivation version. Ledger commands carry it (bincode, by variant
/// position): new versions go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Derivation {
    /// `geiger-derive-v1`: a 64-bit word per value (Lemire).
    V1,
    /// `geiger-derive-v2`: a bit stream, near the information limit.
    V2,
}

impl Derivation {
    /// What new draws use.
    pub const CURRENT: Derivation = Derivation::V2;
    /// Every version a verifier must accept.
    pub const ALL: [Derivation; 2] = [Derivation::V1, Derivation::V2];

    /// The name recorded in a draw's `derivation` field.
    pub fn name(self) -> &'static str {
        match self {
            Derivation::V1 => DERIVATION_V1,
            Derivation::V2 => DERIVATION_V2,
        }
    }

    /// The version a recorded name stands for, if known.
    pub fn from_name(name: &str) -> Option<Derivation> {
        Derivation::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Derives `spec`'s result from the front of `entropy`.
    pub fn derive(self, spec: &Spec, entropy: &[u8]) -> Result<Derived, NeedMoreEntropy> {
        match self {
            Derivation::V1 => derive(spec, entropy),
            Derivation::V2 => derive_v2(spec, entropy),
        }
    }

    /// A first guess at the bytes `spec` needs: pool readers start there
    /// and read more when the derivation asks for it.
    pub fn entropy_bytes_estimate(self, spec: &Spec) -> usize {
        match self {
            Derivation::V1 => min_entropy_bytes(spec),
            Derivation::V2 => entropy_bytes_estimate_v2(spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_is_found_by_its_recorded_name_and_unknown_names_are_not() {
        for d in Derivation::ALL {
            assert_eq!(Derivation::from_name(d.name()), Some(d));
        }
        assert_eq!(Derivation::from_name("geiger-derive-v3"), None);
        assert_eq!(Derivation::CURRENT.name(), "geiger-derive-v2");
    }
}
