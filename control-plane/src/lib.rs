//! geiger-control-plane: the replicated ledger. openraft 0.9 (storage-v2)
//! with redb underneath, Raft RPC over HTTP, streamed snapshots, group
//! commit, and the [`ControlPlane`] handle the node binary drives.
//!
//! - [`types`]: the Raft type config, member labels, commands and outcomes.
//! - [`config`]: node identity, cluster secret, timeouts (LAN and cross-cloud).
//! - [`log_store`]: the Raft log and vote on redb, with its fsync points.
//! - [`state_machine`]: the ledger: its tables, the deterministic `apply`
//!   cut by domain (chains and draws, the entropy pool, links and leases
//!   with the lease plan, customers, keys, members), local reads, snapshots.
//! - [`snapshot`]: the streamed snapshot file format.
//! - [`key_encryption`]: the key-encryption key signing secrets are sealed
//!   under, in the ledger, the log, snapshots and backups.
//! - [`raft_network`]: every call between replicas over HTTP: Raft RPC,
//!   forwarded writes, admin calls, read indexes ([`raft_network::client`]
//!   sends, [`raft_network::server`] answers).
//! - `in_flight_append`: appends whose answer outlives openraft's
//!   heartbeat-long deadline, so writes commit over slow links.
//! - `quorum_watch`: a leader no quorum acknowledges steps aside; writes
//!   without a reachable quorum are refused at once.
//! - `departed_leader`: a follower whose leader's process is gone stands
//!   for election without waiting out openraft's leader lease.
//! - `replica`: the replica core: the Raft instance and how a batch reaches
//!   the log (proposed here, or forwarded to the leader).
//! - [`batcher`]: group commit of concurrent writes into one entry.
//! - [`feature_level`]: which apply rules the whole cluster follows, raised
//!   by the leader once every member's build supports them.
//! - [`placement`]: which failures the current voters survive.
//! - [`control_plane`]: the handle: open, write, read, membership, status.
//! - [`memory`]: process-wide memory settings (transparent huge pages off).
//! - [`Error`]: what a caller can get back.

// openraft's `StorageError` and `redb::Error` are large, and the storage
// traits fix them as our error types; boxing them at every call would only
// add noise. Errors are rare paths here, not hot ones.
#![allow(clippy::result_large_err)]

pub mod batcher;
mod clock_watch;
pub mod codec;
pub mod config;
pub mod control_plane;
mod departed_leader;
mod error;
pub mod feature_level;
mod in_flight_append;
pub mod key_encryption;
mod lease_attestation;
pub mod log_store;
pub mod memory;
pub mod placement;
mod quorum_watch;
pub mod raft_network;
mod replica;
pub mod snapshot;
pub mod snapshot_schedule;
pub mod stage_timing;
pub mod state_machine;
pub mod types;

pub use clock_watch::ClockStanding;
pub use config::{ControlPlaneConfig, Timeouts};
pub use error::Error;
pub use feature_level::FeatureLevel;

pub use control_plane::{ControlPlane, FeatureLevels, PeerStatus, Status};
pub use placement::PlacementReport;
pub use state_machine::customers::api_key_hash;
pub use state_machine::links::registry::{device_id_of, Link, LinkView};
pub use state_machine::pool::ChunkProvenance;
pub use state_machine::reads::{ChainInfo, DevicePool};
pub use state_machine::tables::{Customer, StoredDraw};
pub use types::{Batch, Command, Lease, Member, NodeId, Outcome, Rejection};
