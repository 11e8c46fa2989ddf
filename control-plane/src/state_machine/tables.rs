//! The state machine's redb tables and the records stored in them.
//!
//! Every table maps bytes to bytes, so snapshots can stream any table the
//! same way. Keys are built so redb's byte order is the order we scan in:
//! numbers are big-endian, composite keys put the prefix first. Values are
//! the structs below in `crate::codec`'s format (or raw bytes where noted);
//! `super::format` says which format a database holds.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Bookkeeping: last applied log id, membership, pool cursor, current key,
/// ledger sequence.
pub const META: Table = TableDefinition::new("meta");
/// customer id → [`Customer`].
pub const CUSTOMERS: Table = TableDefinition::new("customers");
/// SHA-256 of an API key → customer id (raw bytes).
pub const CUSTOMER_KEYS: Table = TableDefinition::new("customer_keys");
/// chain id (text) → [`ChainMeta`], holding the genesis record's 201 bytes
/// (written once).
pub const CHAINS: Table = TableDefinition::new("chains");
/// chain id (text) → [`ChainHead`]: owner, length and newest ID, rewritten
/// by every draw (kept apart from [`CHAINS`] so that write stays small).
pub const CHAIN_HEADS: Table = TableDefinition::new("chain_heads");
/// draw id (text) → [`StoredDraw`]: the original request and 201 response bytes.
pub const DRAWS: Table = TableDefinition::new("draws");
/// chain id (text) ++ position (u64 BE) → draw id (text). Also the
/// successor index: a chain is a line, so the draw after the record at
/// position p is the one at p + 1.
pub const CHAIN_DRAWS: Table = TableDefinition::new("chain_draws");
/// pool sequence (u64 BE, append order across devices) → [`PoolChunk`].
pub const POOL: Table = TableDefinition::new("pool");
/// device id → [`DeviceState`].
pub const DEVICES: Table = TableDefinition::new("devices");
/// device id ++ 0x00 ++ chunk seq (u64 BE) → [`QuarantinedChunk`].
pub const QUARANTINE: Table = TableDefinition::new("quarantine");
/// device id (one link per device) → [`crate::types::Lease`].
pub const LEASES: Table = TableDefinition::new("leases");
/// node id (u64 BE) → [`crate::types::Member`] labels.
pub const MEMBERS: Table = TableDefinition::new("members");
/// key id → [`StoredKey`], with the Ed25519 secret in plaintext: the
/// format before the key-encryption key. Only read now; the next rotation
/// moves every entry into [`SIGNING_KEYS`] with its secret erased.
pub const KEYS: Table = TableDefinition::new("keys");
/// key id → [`KeyRecord`]: every signing key, its public half, and its
/// secret sealed under the key-encryption key while it is current (see
/// `crate::key_encryption`; erased once it retires).
pub const SIGNING_KEYS: Table = TableDefinition::new("signing_keys");
/// device id → [`crate::state_machine::links::Link`]: the link registry.
pub const LINKS: Table = TableDefinition::new("links");
/// device id ++ 0x00 ++ first skipped seq (u64 BE) → end of the skipped
/// range (u64, exclusive): sequences the device will never deliver.
pub const SKIPPED: Table = TableDefinition::new("skipped");
/// device id ++ 0x00 ++ chunk seq (u64 BE) →
/// [`crate::state_machine::links::ChunkProvenance`]: the device's timestamp
/// and signature of an appended chunk.
pub const PROVENANCE: Table = TableDefinition::new("provenance");
/// device id ++ 0x00 ++ chunk seq (u64 BE) → [`ExhaustedChunk`]: the bytes
/// of a signed chunk once every byte of it is used or discarded, so anyone
/// can check a draw's entropy against the device's signature
/// (docs/DERIVATION.md §10). Written once, never changed.
pub const EXHAUSTED: Table = TableDefinition::new("exhausted_chunks");
/// device id ++ 0x00 ++ registered_at_ms (u64 BE) → [`RemovedLink`]: the
/// public key of a link that was removed, and when, so chunks it signed stay
/// checkable after the registry forgets it.
pub const REMOVED_LINKS: Table = TableDefinition::new("removed_links");
/// customer id ++ 0x00 ++ ledger index of the genesis (u64 BE) → chain id:
/// the public list of a customer's chains, in creation order.
pub const CUSTOMER_CHAINS: Table = TableDefinition::new("customer_chains");
/// customer id ++ 0x00 ++ `request_id` → chain id: which chain a
/// customer's `POST /v1/chains` with that `request_id` created.
pub const CHAIN_REQUESTS: Table = TableDefinition::new("chain_requests");

/// Every table, with the tag that names it in a snapshot file. Tags are
/// part of the snapshot format: never reuse or renumber one. (Tag 6 was a
/// separate successor index, retired for [`CHAIN_DRAWS`].)
pub const ALL: [(u8, Table); 21] = [
    (1, META),
    (2, CUSTOMERS),
    (3, CUSTOMER_KEYS),
    (4, CHAINS),
    (5, DRAWS),
    (7, CHAIN_DRAWS),
    (8, POOL),
    (9, DEVICES),
    (10, QUARANTINE),
    (11, LEASES),
    (12, MEMBERS),
    (13, KEYS),
    (14, LINKS),
    (15, SKIPPED),
    (16, CUSTOMER_CHAINS),
    (17, PROVENANCE),
    (18, CHAIN_HEADS),
    (19, CHAIN_REQUESTS),
    (20, SIGNING_KEYS),
    (21, EXHAUSTED),
    (22, REMOVED_LINKS),
];

pub const META_LAST_APPLIED: &[u8] = b"last_applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_POOL: &[u8] = b"pool";
pub const META_CURRENT_KEY: &[u8] = b"current_key";
pub const META_LEDGER_SEQ: &[u8] = b"ledger_seq";
/// The cluster feature level in force (`u32`; absent: level 1), see
/// `crate::feature_level`.
pub const META_FEATURE_LEVEL: &[u8] = b"feature_level";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub key_sha256: [u8; 32],
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMeta {
    pub customer: String,
    pub tag: String,
    /// The exact 201 body of `POST /v1/chains` (canonical `ChainResponse`).
    #[serde(with = "crate::types::raw_bytes")]
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The chain's owner (repeated from [`ChainMeta`] so a draw reads only this).
    pub customer: String,
    /// Position of the newest draw; 0 while the chain has none.
    pub last_position: u64,
    /// The chain's newest ID (the genesis while it has no draws).
    pub head: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDraw {
    pub id: String,
    pub chain: String,
    pub position: u64,
    pub request_id: Option<String>,
    /// The original request body, byte for byte.
    #[serde(with = "crate::types::raw_bytes")]
    pub request: Vec<u8>,
    /// The original 201 body, byte for byte.
    #[serde(with = "crate::types::raw_bytes")]
    pub response: Vec<u8>,
}

/// The first fields of a [`StoredDraw`]: decoding only these skips copying
/// the stored request and response when a draw only needs to know where its
/// `previous` sits. Field order must match [`StoredDraw`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DrawPlace {
    pub id: String,
    pub chain: String,
    pub position: u64,
}

/// The pool's cursor: chunks `head..next` are in the pool; `head_offset`
/// bytes of chunk `head` are already used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub head: u64,
    pub head_offset: u32,
    pub next: u64,
    /// Unused bytes in the pool, all devices.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChunk {
    pub device: String,
    pub seq: u64,
    #[serde(with = "crate::types::raw_bytes")]
    pub bytes: Vec<u8>,
}

/// A signed chunk's bytes, kept once the chunk is exhausted (its signature
/// and timestamp stay in [`PROVENANCE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExhaustedChunk {
    #[serde(with = "crate::types::raw_bytes")]
    pub bytes: Vec<u8>,
    /// The ledger's clock when its last byte was used: no draw issued
    /// later may use any of its bytes.
    pub exhausted_at_ms: u64,
}

/// A link's registration, kept after `RemoveLink`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedLink {
    pub public_key: [u8; 32],
    pub registered_at_ms: u64,
    pub removed_at_ms: u64,
}

/// Per-device accounting: every chunk sequence number is pooled, used, or
/// quarantined, and the numbers are contiguous from `first_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub pooled_bytes: u64,
    pub used_bytes: u64,
    pub appended_chunks: u64,
    pub quarantined_chunks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedChunk {
    pub length: u32,
    pub sha256: [u8; 32],
    pub reason: String,
    pub at_ms: u64,
}

/// A signing key in [`SIGNING_KEYS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The Ed25519 public key (its SHA-256 names the key).
    pub public_key: [u8; 32],
    pub secret: KeySecret,
    pub valid_from_ms: u64,
    pub valid_until_ms: Option<u64>,
}

/// What the ledger keeps of a signing key's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySecret {
    /// Retired: nothing signs with it again, so nothing of it is kept
    /// (a stolen ledger cannot forge records dated in its period).
    Erased,
    /// Sealed under the cluster's key-encryption key.
    Sealed(crate::key_encryption::SealedSecret),
    /// In plaintext: a cluster run without a key-encryption key (the node
    /// warns at start).
    Plain([u8; 32]),
}

/// A signing key in the legacy [`KEYS`] table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub secret: [u8; 32],
    pub valid_from_ms: u64,
    pub valid_until_ms: Option<u64>,
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn chain_draw_key(chain: &str, position: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(chain.len() + 8);
    k.extend_from_slice(chain.as_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

pub fn customer_chain_key(customer: &str, ledger_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer.len() + 9);
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.extend_from_slice(&ledger_index.to_be_bytes());
    k
}

pub fn chain_request_key(customer: &str, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer.len() + 1 + request_id.len());
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// `device ++ 0x00 ++ seq` (u64 BE): the key of the per-chunk tables
/// `quarantine`, `skipped` (the first sequence of a skipped range) and
/// `provenance`; one device's chunks sort together, in sequence order.
pub fn device_seq_key(device: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.len() + 9);
    k.extend_from_slice(device.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
