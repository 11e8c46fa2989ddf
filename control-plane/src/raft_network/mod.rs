//! The Raft network: every call between replicas, over HTTP on the
//! internal listener. [`client`] sends (Raft RPC for openraft, forwarded
//! writes, admin calls, read indexes); [`server`] answers them. This file is
//! the contract both ends share: the paths, the secret header, and the
//! messages that are not openraft's own. Bodies are bincode.

use serde::{Deserialize, Serialize};

use crate::types::{BatchOutcome, Command, Member, NodeId};

pub mod client;
pub mod server;

/// The header that carries the cluster secret on every internal request.
pub const SECRET_HEADER: &str = "x-geiger-cluster-secret";
/// Paths of the internal endpoints.
pub const PATH_APPEND: &str = "/internal/raft/append";
pub const PATH_VOTE: &str = "/internal/raft/vote";
pub const PATH_SNAPSHOT: &str = "/internal/raft/snapshot";
pub const PATH_WRITE: &str = "/internal/write";
pub const PATH_ADMIN: &str = "/internal/admin";
pub const PATH_READ_INDEX: &str = "/internal/read-index";

/// Writes forwarded from a follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedWrite {
    pub commands: Vec<Command>,
}

/// Why the leader could not take a forwarded write or admin call.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader; try this one.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, Member)> },
    #[error("{0}")]
    Failed(String),
}

pub type ForwardedResult = Result<BatchOutcome, ForwardError>;

/// Membership changes, run on the leader (forwarded there if need be).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    AddLearner { id: NodeId, member: Member },
    Promote { id: NodeId },
    Remove { id: NodeId },
}
