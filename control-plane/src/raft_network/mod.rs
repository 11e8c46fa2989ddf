//! The Raft network: every call between replicas, over HTTP on the
//! internal listener. [`client`] sends (Raft RPC for openraft, forwarded
//! writes, admin calls, read indexes); [`server`] answers them. This file is
//! the contract both ends share: the paths, the secret header, and the
//! messages that are not openraft's own.
//!
//! Bodies are encoded by `crate::codec`, and the path says how: every
//! endpoint is served twice, at its path in the current format (postcard,
//! under [`WIRE_PREFIX`]) and at its legacy path in the legacy format
//! (bincode), which is all a member older than postcard speaks. Putting
//! the format in the path, not in a header, matters for a rolling upgrade:
//! an old member ignores headers it does not know and would try to decode
//! postcard as bincode, but it answers an unknown path with 404 before
//! reading a byte, which is how a caller learns to fall back.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;

use crate::types::{BatchOutcome, Command, Member, NodeId};

pub mod client;
pub mod server;

/// The header that carries the cluster secret on every internal request.
pub const SECRET_HEADER: &str = "x-geiger-cluster-secret";
/// The header that carries the operator's admin credential on internal
/// requests that need it: membership changes, and forwarded writes holding
/// an operator command ([`crate::Command::is_operator`]).
pub const ADMIN_HEADER: &str = "x-geiger-admin-token";
/// Paths of the internal endpoints.
pub const PATH_APPEND: &str = "/internal/raft/append";
pub const PATH_VOTE: &str = "/internal/raft/vote";
pub const PATH_SNAPSHOT: &str = "/internal/raft/snapshot";
pub const PATH_WRITE: &str = "/internal/write";
pub const PATH_ADMIN: &str = "/internal/admin";
pub const PATH_READ_INDEX: &str = "/internal/read-index";
pub const PATH_LEASE_ATTESTATION: &str = "/internal/lease-attestation";

/// The current wire format's paths: [`PATH_APPEND`] in postcard is
/// `/internal/v2/raft/append`.
pub const WIRE_PREFIX: &str = "/internal/v2";

/// Where `path` (one of the `PATH_*` above) is served in `codec`.
pub fn wire_path(codec: Codec, path: &str) -> Cow<'_, str> {
    match (codec, path.strip_prefix("/internal")) {
        (Codec::Postcard, Some(rest)) => Cow::Owned(format!("{WIRE_PREFIX}{rest}")),
        _ => Cow::Borrowed(path),
    }
}

/// The format a request path speaks, and the `PATH_*` it stands for.
pub fn wire_of(path: &str) -> (Codec, Cow<'_, str>) {
    match path.strip_prefix(WIRE_PREFIX) {
        Some(rest) if rest.starts_with('/') => {
            (Codec::Postcard, Cow::Owned(format!("/internal{rest}")))
        }
        _ => (Codec::Legacy, Cow::Borrowed(path)),
    }
}

/// The member a mutual-TLS peer proved it is (its certificate's node ID),
/// set by the node's internal listener on every request of the connection.
/// Absent on a plaintext internal port, where the cluster secret says only
/// "a member".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNodeId(pub NodeId);

/// An owner asks a member to attest its lease (docs/LINK.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseAttestationRequest {
    pub device: String,
    pub epoch: u64,
    /// The node the lease must name: the caller.
    pub owner: NodeId,
    /// The caller's link public key, which the statement binds.
    pub owner_key: [u8; 32],
}

/// What a node's cluster certificate is named, and what the other end of
/// every internal connection checks: `node-<id>.geiger.internal`, a DNS
/// name in the certificate's subject alternative names. The name never
/// resolves through DNS; the client maps it to the member's `rpc_addr`.
pub const PEER_NAME_SUFFIX: &str = ".geiger.internal";

/// The name node `id`'s cluster certificate carries.
pub fn peer_name(id: NodeId) -> String {
    format!("node-{id}{PEER_NAME_SUFFIX}")
}

/// The node ID a peer name stands for; `None` for any other name (only the
/// exact form [`peer_name`] writes: no sign, no leading zero, ASCII case).
pub fn node_id_of_peer_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node-")?.strip_suffix(PEER_NAME_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: NodeId = digits.parse().ok()?;
    (peer_name(id) == name).then_some(id)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_name_names_exactly_one_node_id() {
        assert_eq!(peer_name(3), "node-3.geiger.internal");
        assert_eq!(node_id_of_peer_name("node-3.geiger.internal"), Some(3));
        assert_eq!(node_id_of_peer_name(&peer_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "node-03.geiger.internal",
            "node-+3.geiger.internal",
            "node-.geiger.internal",
            "node-3.geiger.internal.evil",
            "xnode-3.geiger.internal",
            "node-3.other.internal",
            "node-99999999999999999999.geiger.internal",
        ] {
            assert_eq!(node_id_of_peer_name(other), None, "{other}");
        }
    }
}
