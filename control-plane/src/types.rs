//! The openraft type configuration and everything that travels in the log:
//! member labels (the custom node type), commands, and their outcomes.
//!
//! A log entry carries a [`Batch`]: many commands proposed together (group
//! commit) plus the leader's clock reading. The state machine never reads a
//! clock or a random source; everything it needs arrives here.

use std::fmt;

use geiger_protocol::{Derivation, RecordId};
use serde::{Deserialize, Serialize};

/// Serde for byte vectors as one length-prefixed blob (serde writes a
/// plain `Vec<u8>` element by element, which dominated the cost of big
/// entropy chunks and stored responses).
pub mod raw_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// A node's Raft ID.
pub type NodeId = u64;

/// What every member of the cluster is known by: where to reach it and where
/// it runs. The labels drive the placement report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the internal listener (Raft RPC, forwarded writes).
    pub rpc_addr: String,
    /// `host:port` of the public HTTP API.
    pub api_addr: String,
    pub zone: String,
    pub cloud: String,
    pub region: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}/{}/{})",
            self.rpc_addr, self.cloud, self.region, self.zone
        )
    }
}

openraft::declare_raft_types!(
    /// geiger's Raft types: batches of commands in, batches of outcomes out,
    /// snapshots as files on disk.
    pub TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// One Raft entry's worth of commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's wall clock (Unix ms) when it proposed the batch. Every
    /// timestamp written by these commands comes from here.
    pub at_ms: u64,
    pub commands: Vec<Command>,
}

/// Outcomes, one per command of the batch, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
}

/// Every change the ledger knows. Each is checked completely before it
/// writes anything, so a rejected command changes nothing.
///
/// Log entries and snapshots name variants by position (`crate::codec`, in
/// both formats): new variants go at the end, and no variant changes shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A paying customer, known by the SHA-256 of its API key (the key itself
    /// is never stored).
    CreateCustomer {
        id: String,
        name: String,
        key_sha256: [u8; 32],
    },
    /// A new chain; its genesis record is sealed at apply time.
    CreateChain { customer: String, tag: String },
    /// A draw by `geiger-derive-v1`: `request` is the original request body
    /// (JSON bytes, kept verbatim for `GET /v1/draws/{id}`). Entries written
    /// before v2 existed are this variant and must re-apply to the same
    /// record forever, so it keeps meaning v1; new draws are [`Command::DrawWith`].
    Draw {
        customer: String,
        #[serde(with = "crate::types::raw_bytes")]
        request: Vec<u8>,
    },
    /// A chunk of device output, appended by the link's owner under its
    /// lease epoch. `seq` must follow the device's previous chunk.
    AppendEntropy {
        device: String,
        epoch: u64,
        seq: u64,
        #[serde(with = "crate::types::raw_bytes")]
        bytes: Vec<u8>,
    },
    /// A chunk that failed its health tests: its sequence number is accounted
    /// for, its bytes are never used (only their length and hash are kept).
    QuarantineChunk {
        device: String,
        epoch: u64,
        seq: u64,
        length: u32,
        sha256: [u8; 32],
        reason: String,
    },
    /// Gives the link of `device` to `owner` with a new, higher epoch.
    /// With `expected_epoch` set, only if the current epoch is that one
    /// (compare-and-set, so two controllers cannot both win).
    AssignLease {
        device: String,
        owner: NodeId,
        expected_epoch: Option<u64>,
        duration_ms: u64,
    },
    /// Extends the current lease; only its owner, under its epoch, before it expires.
    RenewLease {
        device: String,
        owner: NodeId,
        epoch: u64,
        duration_ms: u64,
    },
    /// Sets (or replaces) the labels recorded for a member.
    SetMemberLabels { node: NodeId, member: Member },
    /// Retires the current signing key and makes `secret` the new one. The
    /// secret is generated by the proposer: apply has no randomness.
    RotateKey { secret: [u8; 32] },
    /// Registers the link to a device, or changes its address. `device`
    /// must be the id derived from `public_key` (`dev_` + hex of the first
    /// 16 bytes of its SHA-256), so an id cannot be claimed by another key.
    RegisterLink {
        device: String,
        address: String,
        public_key: [u8; 32],
    },
    /// Removes a link from the registry. Its lease (and so its epoch) is
    /// kept but expires at once: appends under it are refused from now on,
    /// and a later registration continues with a higher epoch.
    RemoveLink { device: String },
    /// Sequences `from..to` of the device will never arrive (skipped by a
    /// device restart, or fallen out of its retention): accounted as
    /// skipped. Under the owner's lease and epoch, like an append.
    SkipChunks {
        device: String,
        epoch: u64,
        from: u64,
        to: u64,
    },
    /// `AppendEntropy` with the chunk's provenance: the device's timestamp
    /// and Ed25519 signature (docs/LINK.md) are kept beside the chunk, so
    /// anyone holding the ledger can re-check that the device issued it.
    AppendSignedEntropy {
        device: String,
        epoch: u64,
        seq: u64,
        timestamp_ms: u64,
        #[serde(with = "crate::types::raw_bytes")]
        signature: Vec<u8>,
        #[serde(with = "crate::types::raw_bytes")]
        bytes: Vec<u8>,
    },
    /// [`Command::CreateChain`] with a client idempotency key: if this
    /// customer already used `request_id`, nothing is created and the
    /// outcome is that request's chain ([`Outcome::Replayed`]).
    CreateChainOnce {
        customer: String,
        tag: String,
        request_id: String,
    },
    /// [`Command::Draw`] by the named derivation. The proposer picks it
    /// (the node sends [`Derivation::CURRENT`]), so applying the entry is
    /// the same on every replica and on every replay, whatever build later
    /// re-applies it.
    DrawWith {
        customer: String,
        #[serde(with = "crate::types::raw_bytes")]
        request: Vec<u8>,
        derivation: Derivation,
    },
    /// [`Command::RotateKey`] with the secret sealed under the cluster's
    /// key-encryption key (`crate::key_encryption`): neither the log nor
    /// the wire carries it in plaintext. `public_key` names the key, so
    /// apply needs no KEK to account for it.
    RotateSealedKey {
        public_key: [u8; 32],
        sealed: crate::key_encryption::SealedSecret,
    },
    /// Raises the cluster feature level (`crate::feature_level`): from
    /// this entry on, every replica applies what `level` adds. Proposed by
    /// the leader alone, once every member supports `level`; a build that
    /// does not stops rather than apply differently. A level-2 variant:
    /// never proposed to a cluster with a member older than levels.
    RaiseFeatureLevel { level: u32 },
}

impl Command {
    /// Whether only an operator may ask for this command (customers, signing
    /// keys, member labels, links). The rest are what peers send on their
    /// own account: customer writes a follower forwards, and the link
    /// owner's and the link controller's lease and entropy commands. The
    /// internal port takes an operator command only with the admin
    /// credential (`raft_network::server`).
    pub fn is_operator(&self) -> bool {
        match self {
            Command::CreateCustomer { .. }
            | Command::SetMemberLabels { .. }
            | Command::RotateKey { .. }
            | Command::RotateSealedKey { .. }
            | Command::RegisterLink { .. }
            | Command::RemoveLink { .. }
            | Command::RaiseFeatureLevel { .. } => true,
            Command::CreateChain { .. }
            | Command::CreateChainOnce { .. }
            | Command::Draw { .. }
            | Command::DrawWith { .. }
            | Command::AppendEntropy { .. }
            | Command::AppendSignedEntropy { .. }
            | Command::QuarantineChunk { .. }
            | Command::SkipChunks { .. }
            | Command::AssignLease { .. }
            | Command::RenewLease { .. } => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateCustomer { .. } => "create_customer",
            Command::CreateChain { .. } | Command::CreateChainOnce { .. } => "create_chain",
            Command::Draw { .. } | Command::DrawWith { .. } => "draw",
            Command::AppendEntropy { .. } => "append_entropy",
            Command::QuarantineChunk { .. } => "quarantine_chunk",
            Command::AssignLease { .. } => "assign_lease",
            Command::RenewLease { .. } => "renew_lease",
            Command::SetMemberLabels { .. } => "set_member_labels",
            Command::RotateKey { .. } | Command::RotateSealedKey { .. } => "rotate_key",
            Command::RegisterLink { .. } => "register_link",
            Command::RemoveLink { .. } => "remove_link",
            Command::SkipChunks { .. } => "skip_chunks",
            Command::AppendSignedEntropy { .. } => "append_signed_entropy",
            Command::RaiseFeatureLevel { .. } => "raise_feature_level",
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    CustomerCreated {
        id: String,
    },
    /// `response` is the exact 201 body (canonical JSON of a `ChainResponse`).
    ChainCreated {
        id: RecordId,
        #[serde(with = "crate::types::raw_bytes")]
        response: Vec<u8>,
    },
    /// A new draw: `response` is the exact 201 body.
    Drawn {
        id: RecordId,
        #[serde(with = "crate::types::raw_bytes")]
        response: Vec<u8>,
    },
    /// The same request as an earlier one with the same idempotency key (a
    /// draw's `previous` and `request_id`, a chain's customer and
    /// `request_id`): its record's original 201 body, byte for byte. The same
    /// key with another request is `Rejection::RequestIdReused`.
    Replayed {
        id: RecordId,
        #[serde(with = "crate::types::raw_bytes")]
        response: Vec<u8>,
    },
    /// `previous` already has a successor (409 `previous_already_used`).
    PreviousAlreadyUsed {
        existing: RecordId,
    },
    EntropyAppended {
        pool_bytes: u64,
    },
    ChunkQuarantined,
    Lease(Lease),
    KeyRotated {
        key_id: String,
    },
    Done,
    Rejected(Rejection),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("the entropy pool holds {available} bytes; this draw needs more")]
    EntropyExhausted { available: u64 },
    #[error("epoch {got} is stale; the link's epoch is {current}")]
    StaleEpoch { current: u64, got: u64 },
    #[error("the lease of {0} has expired")]
    LeaseExpired(String),
    #[error("{device}: expected chunk {expected}, got {got}")]
    SequenceGap {
        device: String,
        expected: u64,
        got: u64,
    },
    #[error("no signing key yet: rotate a key in first")]
    NoSigningKey,
    /// The idempotency key of an earlier request (a draw's `previous` and
    /// `request_id`, a chain's customer and `request_id`) with a request
    /// that differs from it in `field` (`tag` or `spec`): neither a replay
    /// nor a new request. Last, so that the variants before it keep their
    /// positions in forwarded-write answers.
    #[error("request_id `{request_id}` was used before for a request with another `{field}`")]
    RequestIdReused { request_id: String, field: String },
}

/// A link's lease as stored: who owns the link, under which fencing epoch,
/// until when (Unix ms, leader clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub device: String,
    pub owner: NodeId,
    pub epoch: u64,
    pub expires_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn log_entries_written_before_create_chain_once_existed_still_decode() {
        // `CreateChain { customer: "c", tag: "t" }` as bincode wrote it:
        // variant 1 (u32 LE), then each string as a u64 LE length and bytes.
        let old = [
            1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'c', 1, 0, 0, 0, 0, 0, 0, 0, b't',
        ];
        let decoded: Command = Codec::Legacy.decode(&old).unwrap();
        assert_eq!(
            decoded,
            Command::CreateChain {
                customer: "c".into(),
                tag: "t".into()
            }
        );
        // The new variant went to the end, after `AppendSignedEntropy` (12).
        let once = Command::CreateChainOnce {
            customer: "c".into(),
            tag: "t".into(),
            request_id: "r".into(),
        };
        assert_eq!(Codec::Legacy.encode(&once).unwrap()[..4], [13, 0, 0, 0]);
        // postcard: the variant index as a varint.
        assert_eq!(Codec::Postcard.encode(&once).unwrap()[0], 13);
    }

    #[test]
    fn rejections_keep_their_positions_and_request_id_reused_comes_last() {
        let position = |r: &Rejection| Codec::Legacy.encode(r).unwrap()[..4].to_vec();
        assert_eq!(position(&Rejection::NoSigningKey), [8, 0, 0, 0]);
        let reused = Rejection::RequestIdReused {
            request_id: "r".into(),
            field: "tag".into(),
        };
        assert_eq!(position(&reused), [9, 0, 0, 0]);
        assert_eq!(Codec::Postcard.encode(&reused).unwrap()[0], 9);
        for codec in [Codec::Legacy, Codec::Postcard] {
            let bytes = codec.encode(&Outcome::Rejected(reused.clone())).unwrap();
            assert_eq!(
                codec.decode::<Outcome>(&bytes).unwrap(),
                Outcome::Rejected(reused.clone())
            );
        }
    }
}
