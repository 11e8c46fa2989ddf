//! The Raft network's client side over HTTP: bincode bodies, the cluster secret in a
//! header, reqwest underneath (one pooled client per node, keep-alive).
//!
//! A peer that cannot be connected to, or does not answer in time, is
//! reported to openraft as [`Unreachable`], which makes replication to it
//! back off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE, SECRET_HEADER};
use crate::in_flight_append::InFlightAppend;
use crate::quorum_watch::QuorumWatch;
use crate::types::{Member, NodeId, TypeConfig};

/// A failed RPC at the transport level.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing reached the peer (connection refused, DNS, …): safe to retry.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The request may have reached the peer; its outcome is unknown.
    #[error("peer did not answer: {0}")]
    NoAnswer(String),
    #[error("peer refused our cluster secret")]
    Unauthorized,
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad response body: {0}")]
    Decode(String),
}

/// The HTTP client every internal call goes through.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    secret: Arc<str>,
}

impl RpcClient {
    pub fn new(secret: &str) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))?;
        Ok(RpcClient {
            http,
            secret: Arc::from(secret),
        })
    }

    /// POSTs `body` (bincode) to `http://{addr}{path}` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let bytes = bincode::serialize(body).map_err(|e| TransportError::Decode(e.to_string()))?;
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(SECRET_HEADER, &*self.secret)
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    TransportError::Unreachable(e.to_string())
                } else {
                    TransportError::NoAnswer(e.to_string())
                }
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(TransportError::Unauthorized);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| TransportError::NoAnswer(e.to_string()))?;
        if !status.is_success() {
            return Err(TransportError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        bincode::deserialize(&body).map_err(|e| TransportError::Decode(e.to_string()))
    }
}

/// Creates one [`Peer`] per replication target.
pub struct Network {
    pub(crate) client: RpcClient,
    /// Floor for openraft's per-RPC deadline (which follows the heartbeat
    /// and is too short for an append that includes a follower's fsync).
    pub(crate) rpc_timeout: Duration,
    /// How long an append's answer is awaited across openraft's attempts
    /// (see [`crate::in_flight_append`]).
    pub(crate) append_answer_timeout: Duration,
    /// Whether this node, as leader, has stepped aside and sends nothing.
    pub(crate) quorum: Arc<QuorumWatch>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            target,
            node: node.clone(),
            client: self.client.clone(),
            min_timeout: self.rpc_timeout,
            append_answer_timeout: self.append_answer_timeout,
            in_flight: InFlightAppend::default(),
            quorum: self.quorum.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    node: Member,
    client: RpcClient,
    min_timeout: Duration,
    append_answer_timeout: Duration,
    in_flight: InFlightAppend,
    quorum: Arc<QuorumWatch>,
}

impl Peer {
    async fn raft_call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        raft_call(&self.client, self.target, &self.node, path, req, timeout).await
    }
}

async fn raft_call<Req, Resp, E>(
    client: &RpcClient,
    target: NodeId,
    node: &Member,
    path: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let answer: Result<Resp, RaftError<NodeId, E>> = client
        .call(&node.rpc_addr, path, req, timeout)
        .await
        .map_err(|e| match e {
            TransportError::Unreachable(_)
            | TransportError::NoAnswer(_)
            | TransportError::Status { status: 503, .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            TransportError::Unauthorized => {
                tracing::error!(peer = target, "peer rejected our cluster secret");
                RPCError::Unreachable(Unreachable::new(&e))
            }
            other => RPCError::Network(NetworkError::new(&other)),
        })?;
    answer.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(target, node.clone(), e)))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if self.quorum.is_silent() {
            // Stepped aside (crate::quorum_watch): let the followers elect.
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other("this leader has stepped aside: no quorum acknowledged it"),
            )));
        }
        // openraft gives up on this call after its heartbeat-long deadline;
        // the request itself runs on, up to the answer timeout, and a later
        // attempt can take its answer (see crate::in_flight_append).
        let timeout = option
            .hard_ttl()
            .max(self.min_timeout)
            .max(self.append_answer_timeout);
        let (client, target, node) = (self.client.clone(), self.target, self.node.clone());
        self.in_flight
            .append(rpc, move |rpc| async move {
                raft_call(&client, target, &node, PATH_APPEND, &rpc, timeout).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.raft_call(PATH_SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.raft_call(PATH_VOTE, &rpc, option.hard_ttl().max(self.min_timeout))
            .await
    }

    fn backoff(&self) -> Backoff {
        // Short enough that a restarted peer is picked up quickly, long
        // enough not to spin on a dead one.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
