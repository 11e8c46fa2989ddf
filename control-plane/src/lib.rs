//! geiger-control-plane: the replicated ledger. openraft 0.9 (storage-v2)
//! with redb underneath, Raft RPC over HTTP, streamed snapshots, group
//! commit, and the [`ControlPlane`] handle the node binary drives.
//!
//! - [`types`]: the Raft type config, member labels, commands and outcomes.
//! - [`config`]: node identity, cluster secret, timeouts (LAN and cross-cloud).
//! - [`log_store`]: the Raft log and vote on redb, with its fsync points.
//! - [`state_machine`]: the ledger tables and the deterministic `apply`.
//! - [`snapshot`]: the streamed snapshot file format.
//! - [`network`] / [`rpc_server`]: Raft RPC and forwarded writes over HTTP.
//! - [`batcher`]: group commit of concurrent writes into one entry.
//! - [`placement`]: which failures the current voters survive.
//! - [`control_plane`]: the handle: open, write, read, membership, status.
//! - [`testing`]: an in-process cluster on loopback, for tests and benchmarks.

// openraft's `StorageError` and `redb::Error` are large, and the storage
// traits fix them as our error types; boxing them at every call would only
// add noise. Errors are rare paths here, not hot ones.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod config;
pub mod control_plane;
pub mod link_controller;
pub mod log_store;
pub mod memory;
pub mod network;
pub mod placement;
pub mod rpc_server;
pub mod snapshot;
pub mod state_machine;
pub mod testing;
pub mod types;

pub use config::{ControlPlaneConfig, Timeouts};

pub use control_plane::{ControlPlane, PeerStatus, Status};
pub use placement::PlacementReport;
pub use state_machine::apply::api_key_hash;
pub use state_machine::links::{device_id_of, ChunkProvenance, Link, LinkView};
pub use state_machine::reads::{ChainInfo, DevicePool};
pub use state_machine::tables::{Customer, StoredDraw};
pub use types::{Batch, Command, Lease, Member, NodeId, Outcome, Rejection};

/// Errors at the crate's edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    /// No leader could be reached within the write timeout (an election that
    /// does not finish, or no quorum). Safe to retry.
    #[error("no leader available: {0}")]
    Unavailable(String),
    /// The command was refused by the ledger; nothing changed.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the control plane is shutting down")]
    Shutdown,
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<state_machine::reads::ReadError> for Error {
    fn from(e: state_machine::reads::ReadError) -> Self {
        Error::Storage(e.to_string())
    }
}
