//! How the control plane encodes what it stores and sends: every value in
//! `state.redb` and `raft-log.redb`, snapshot files, and the bodies of
//! internal calls between members.
//!
//! The format is postcard ([`Codec::Postcard`]): maintained, compact
//! (variable-length integers) and, like its predecessor, not
//! self-describing, so a value decodes only as the type that wrote it.
//!
//! bincode 1.3 ([`Codec::Legacy`]) wrote everything before; its project has
//! stopped (RUSTSEC-2025-0141, informational). It is kept here, and only
//! here, for two jobs, and goes when no supported version needs them:
//! reading what an older version stored (the migrations in
//! `state_machine::format` and `log_store`, and snapshots and backups in
//! format 1), and talking to members that have not been upgraded yet
//! (`raft_network`: the legacy paths). Nothing new is stored with it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that does not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("bincode (legacy format): {0}")]
    Legacy(#[from] bincode::Error),
}

/// An encoding of serde values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The format of this version (postcard 1).
    Postcard,
    /// The format of versions before it (bincode 1.3, fixed-width integers,
    /// little-endian): read for migration, spoken to old members.
    Legacy,
}

impl Codec {
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Postcard => Ok(postcard::to_allocvec(value)?),
            Codec::Legacy => Ok(bincode::serialize(value)?),
        }
    }

    /// Decodes `bytes` as a `T`. Trailing bytes are ignored in both formats,
    /// so `T` may be a prefix of the stored struct (see
    /// `state_machine::tables::DrawPlace`).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Postcard => Ok(postcard::from_bytes(bytes)?),
            Codec::Legacy => {
                use bincode::Options;
                // `bincode::deserialize`'s encoding, but a length prefix can
                // never make us allocate more than the input holds.
                let options = bincode::DefaultOptions::new()
                    .with_fixint_encoding()
                    .allow_trailing_bytes()
                    .with_limit(bytes.len() as u64);
                Ok(options.deserialize(bytes)?)
            }
        }
    }
}

/// Encodes in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Codec::Postcard.encode(value)
}

/// Decodes from the current format.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Codec::Postcard.decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: String,
        position: u64,
        #[serde(with = "crate::types::raw_bytes")]
        bytes: Vec<u8>,
        until: Option<u64>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Prefix {
        id: String,
        position: u64,
    }

    fn record() -> Record {
        Record {
            id: "dr_x".into(),
            position: 7,
            bytes: vec![1, 2, 3],
            until: None,
        }
    }

    #[test]
    fn both_formats_round_trip_and_read_a_prefix_of_a_struct() {
        for codec in [Codec::Postcard, Codec::Legacy] {
            let bytes = codec.encode(&record()).unwrap();
            assert_eq!(codec.decode::<Record>(&bytes).unwrap(), record());
            let prefix: Prefix = codec.decode(&bytes).unwrap();
            assert_eq!((prefix.id.as_str(), prefix.position), ("dr_x", 7));
        }
    }

    #[test]
    fn the_legacy_format_is_what_bincode_1_wrote() {
        // As bincode::serialize wrote it: u64 LE lengths and integers.
        let expected: Vec<u8> = [
            &4u64.to_le_bytes()[..],
            b"dr_x",
            &7u64.to_le_bytes(),
            &3u64.to_le_bytes(),
            &[1, 2, 3],
            &[0],
        ]
        .concat();
        assert_eq!(Codec::Legacy.encode(&record()).unwrap(), expected);
        assert_eq!(Codec::Legacy.decode::<Record>(&expected).unwrap(), record());
    }

    #[test]
    fn a_length_prefix_beyond_the_input_is_an_error_not_an_allocation() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Codec::Legacy.decode::<Vec<u8>>(&huge).is_err());
        // postcard: varint of 2^63, then nothing.
        let huge = postcard::to_allocvec(&(1u64 << 63)).unwrap();
        assert!(Codec::Postcard.decode::<Vec<u64>>(&huge).is_err());
        assert!(Codec::Postcard.decode::<String>(&huge).is_err());
    }
}
