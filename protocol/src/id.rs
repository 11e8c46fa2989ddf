//! Content-hash IDs. An ID is a type prefix (`ch_` for a chain's genesis
//! record, `dr_` for a draw) followed by the lowercase, unpadded RFC 4648
//! base32 form of the first 25 bytes of the SHA-256 of the record's canonical
//! JSON body. 25 bytes make exactly 40 base32 characters and 200 bits, so a
//! `previous` link cannot be forged by a collision.

use std::fmt;
use std::str::FromStr;

use data_encoding::{Encoding, Specification};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Bytes of the SHA-256 digest kept in an ID.
pub const ID_HASH_BYTES: usize = 25;
/// Characters of base32 after the prefix.
pub const ID_BASE32_CHARS: usize = 40;

/// What an ID names; it decides the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Chain,
    Draw,
}

impl RecordKind {
    pub fn prefix(self) -> &'static str {
        match self {
            RecordKind::Chain => "ch_",
            RecordKind::Draw => "dr_",
        }
    }
}

/// The ID of a chain genesis or a draw. Always well formed once constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    kind: RecordKind,
    hash: [u8; ID_HASH_BYTES],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an ID starts with `ch_` (chain) or `dr_` (draw)")]
    UnknownPrefix,
    #[error("an ID has exactly {ID_BASE32_CHARS} lowercase base32 characters after its prefix")]
    BadBody,
}

/// Built once: IDs are formatted for every record the ledger applies.
fn base32_lower() -> &'static Encoding {
    static ENCODING: std::sync::OnceLock<Encoding> = std::sync::OnceLock::new();
    ENCODING.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.encoding().expect("a valid base32 alphabet")
    })
}

impl RecordId {
    /// The ID of a record whose canonical body is `canonical_body`.
    pub fn for_body(kind: RecordKind, canonical_body: &[u8]) -> Self {
        let digest = Sha256::digest(canonical_body);
        let mut hash = [0u8; ID_HASH_BYTES];
        hash.copy_from_slice(&digest[..ID_HASH_BYTES]);
        RecordId { kind, hash }
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    pub fn hash_bytes(&self) -> &[u8; ID_HASH_BYTES] {
        &self.hash
    }

    /// Rebuilds an ID from its parts, as stored compactly by the ledger.
    pub fn from_parts(kind: RecordKind, hash: [u8; ID_HASH_BYTES]) -> Self {
        RecordId { kind, hash }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.prefix())?;
        f.write_str(&base32_lower().encode(&self.hash))
    }
}

impl FromStr for RecordId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, body) = if let Some(rest) = s.strip_prefix("ch_") {
            (RecordKind::Chain, rest)
        } else if let Some(rest) = s.strip_prefix("dr_") {
            (RecordKind::Draw, rest)
        } else {
            return Err(IdError::UnknownPrefix);
        };
        if body.len() != ID_BASE32_CHARS {
            return Err(IdError::BadBody);
        }
        let bytes = base32_lower()
            .decode(body.as_bytes())
            .map_err(|_| IdError::BadBody)?;
        let hash: [u8; ID_HASH_BYTES] = bytes.try_into().map_err(|_| IdError::BadBody)?;
        Ok(RecordId { kind, hash })
    }
}

impl Serialize for RecordId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = RecordId::for_body(RecordKind::Draw, b"{}");
        let text = id.to_string();
        assert!(text.starts_with("dr_"));
        assert_eq!(text.len(), 3 + ID_BASE32_CHARS);
        assert_eq!(text.parse::<RecordId>().unwrap(), id);
    }

    #[test]
    fn ids_of_different_kinds_or_bodies_differ() {
        let a = RecordId::for_body(RecordKind::Draw, b"a");
        let b = RecordId::for_body(RecordKind::Chain, b"a");
        let c = RecordId::for_body(RecordKind::Draw, b"b");
        assert_ne!(a.to_string(), b.to_string());
        assert_ne!(a, c);
    }

    #[test]
    fn malformed_ids_are_rejected_with_a_reason() {
        assert_eq!("xx_abc".parse::<RecordId>(), Err(IdError::UnknownPrefix));
        assert_eq!("dr_abc".parse::<RecordId>(), Err(IdError::BadBody));
        let upper = RecordId::for_body(RecordKind::Draw, b"x")
            .to_string()
            .to_uppercase()
            .replacen("DR_", "dr_", 1);
        assert_eq!(upper.parse::<RecordId>(), Err(IdError::BadBody));
        let bad_symbol = format!("dr_{}", "1".repeat(ID_BASE32_CHARS));
        assert_eq!(bad_symbol.parse::<RecordId>(), Err(IdError::BadBody));
    }
}

#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    impl utoipa::PartialSchema for super::RecordId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^(ch|dr)_[a-z2-7]{40}$"))
                .description(Some(
                    "Content-hash ID: `ch_` (chain genesis) or `dr_` (draw) and 40 base32 characters",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for super::RecordId {}
}
