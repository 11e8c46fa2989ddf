//! The Raft network's client side over HTTP: `crate::codec` bodies, the
//! cluster secret in a header, reqwest underneath (one pooled client per
//! node, keep-alive).
//!
//! Calls go to the current format's paths. A member that answers 404 there
//! is older than postcard (mid rolling upgrade): the call is repeated at
//! the legacy path, in the legacy format, and that member is spoken to that
//! way for [`LEGACY_RECHECK`] before the current format is tried again.
//!
//! With [`PeerTls`], every call is HTTPS with this node's cluster
//! certificate, to `https://node-<id>.geiger.internal:<port>` (see
//! [`super::peer_name`]): the name is resolved to the member's `rpc_addr` by
//! [`PeerResolver`], and rustls checks that the server's certificate chains
//! to the cluster CA and names exactly the node this call is meant for, before
//! a byte of the request is sent. Connections are pooled per peer name, so a
//! peer costs one handshake per connection, not one per call.
//!
//! A peer that cannot be connected to, or does not answer in time, is
//! reported to openraft as [`Unreachable`], which makes replication to it
//! back off instead of spinning.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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

use super::{
    node_id_of_peer_name, peer_name, wire_path, ADMIN_HEADER, PATH_APPEND, PATH_SNAPSHOT,
    PATH_VOTE, SECRET_HEADER,
};
use crate::clock_watch::{ClockWatch, CLOCK_HEADER, YOUR_OFFSET_HEADER};
use crate::codec::Codec;
use crate::feature_level::{FeatureLevel, PeerBuilds, FEATURE_HEADER};
use crate::in_flight_append::InFlightAppend;
use crate::quorum_watch::QuorumWatch;
use crate::types::{Member, NodeId, TypeConfig};

/// How long a member found speaking only the legacy format is spoken to
/// in it before the current format is tried again (it may have been
/// upgraded meanwhile).
pub const LEGACY_RECHECK: Duration = Duration::from_secs(30);

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
    /// The peer wants the admin credential for this call (and we have none,
    /// or not the one it has).
    #[error("peer refused the call: admin credential required")]
    Forbidden,
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad response body: {0}")]
    Decode(String),
}

/// On whose account a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A peer's own business (Raft RPC, read indexes, customer and link
    /// writes): the cluster secret.
    Peer,
    /// An operator's command passed on to the leader: the cluster secret
    /// and the admin credential.
    Operator,
}

/// The client half of mutual TLS between nodes: a rustls configuration
/// that presents this node's cluster certificate and accepts a server only
/// when its certificate chains to the cluster CA and carries the peer name
/// of the node called (the node builds it, with certificates that reload).
#[derive(Clone)]
pub struct PeerTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// Resolves peer names (`node-<id>.geiger.internal`) to the address the
/// membership gives for that node; every call records the address first.
#[derive(Debug, Default)]
pub struct PeerResolver {
    addrs: RwLock<HashMap<NodeId, String>>,
}

impl PeerResolver {
    fn remember(&self, id: NodeId, addr: &str) {
        let known = self
            .addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|a| a == addr);
        if !known {
            self.addrs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, addr.to_string());
        }
    }

    fn address_of(&self, name: &str) -> Option<String> {
        let id = node_id_of_peer_name(name)?;
        self.addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

impl reqwest::dns::Resolve for PeerResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let addr = self.address_of(&name);
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        Box::pin(async move {
            let Some(addr) = addr else {
                let e: BoxError = format!("no member address known for {name}").into();
                return Err(e);
            };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
                .await
                .map_err(|e| -> BoxError { Box::new(e) })?
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The port of a `host:port` address (`[v6]:port` too).
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The HTTP client every internal call goes through.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    secret: Arc<str>,
    admin: Option<Arc<str>>,
    /// Set when calls go over mutual TLS.
    peers: Option<Arc<PeerResolver>>,
    /// Measures peers' clocks on every call (`crate::clock_watch`).
    clock: Option<Arc<ClockWatch>>,
    /// Members found speaking only the legacy format, and when.
    legacy_peers: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Hears each peer's feature level on every answer
    /// (`crate::feature_level`).
    builds: Option<Arc<PeerBuilds>>,
}

impl RpcClient {
    pub fn new(
        secret: &str,
        admin_token: Option<&str>,
        tls: Option<&PeerTls>,
    ) -> Result<Self, crate::Error> {
        // Idle connections are dropped well before the internal listener
        // closes them (its header-read timeout), so a pooled connection is
        // not reused just as the server hangs up.
        let mut builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // One call per connection at a time, connections pooled per
            // peer (and the same protocol with and without TLS).
            .http1_only()
            .connect_timeout(Duration::from_millis(500));
        let mut peers = None;
        if let Some(tls) = tls {
            let resolver = Arc::new(PeerResolver::default());
            builder = builder
                .use_preconfigured_tls((*tls.config).clone())
                .dns_resolver(resolver.clone())
                .https_only(true);
            peers = Some(resolver);
        }
        let http = builder
            .build()
            .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))?;
        Ok(RpcClient {
            http,
            secret: Arc::from(secret),
            admin: admin_token.map(Arc::from),
            peers,
            clock: None,
            legacy_peers: Arc::default(),
            builds: None,
        })
    }

    /// Measures each peer's clock on every call, and passes on what the
    /// leader measured of the peer's.
    pub(crate) fn with_clock(mut self, clock: Arc<ClockWatch>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Notes each peer's feature level from its answers.
    pub(crate) fn with_builds(mut self, builds: Arc<PeerBuilds>) -> Self {
        self.builds = Some(builds);
        self
    }

    /// The URL of `path` on node `target`, which the membership says is at
    /// `addr`.
    fn url(&self, target: NodeId, addr: &str, path: &str) -> Result<String, TransportError> {
        match &self.peers {
            None => Ok(format!("http://{addr}{path}")),
            Some(resolver) => {
                let port = port_of(addr).ok_or_else(|| {
                    TransportError::Unreachable(format!("member address {addr:?} has no port"))
                })?;
                resolver.remember(target, addr);
                Ok(format!("https://{}:{port}{path}", peer_name(target)))
            }
        }
    }

    /// The format `target` is spoken to in.
    fn codec_for(&self, target: NodeId) -> Codec {
        let mut legacy = match self.legacy_peers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match legacy.get(&target) {
            Some(found) if found.elapsed() < LEGACY_RECHECK => Codec::Legacy,
            Some(_) => {
                legacy.remove(&target);
                Codec::Postcard
            }
            None => Codec::Postcard,
        }
    }

    fn found_legacy(&self, target: NodeId) {
        let mut legacy = match self.legacy_peers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if legacy.insert(target, Instant::now()).is_none() {
            tracing::info!(
                peer = target,
                "member speaks only the legacy wire format (an older version): calling it in that format"
            );
        }
    }

    /// POSTs `body` to `path` (one of the `PATH_*`) on node `target` at
    /// `addr` and decodes the answer, in the current format or, for a
    /// member older than it, in the legacy one.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
        credential: Credential,
    ) -> Result<Resp, TransportError> {
        let codec = self.codec_for(target);
        let answer = self
            .call_in(codec, target, addr, path, body, timeout, credential)
            .await;
        match answer {
            // Unknown path: nothing was read or done there, so the call can
            // be made again.
            Err(TransportError::Status { status: 404, .. }) if codec == Codec::Postcard => {
                self.found_legacy(target);
                self.call_in(Codec::Legacy, target, addr, path, body, timeout, credential)
                    .await
            }
            answer => answer,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_in<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        codec: Codec,
        target: NodeId,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
        credential: Credential,
    ) -> Result<Resp, TransportError> {
        let bytes = codec
            .encode(body)
            .map_err(|e| TransportError::Decode(e.to_string()))?;
        let url = self.url(target, addr, &wire_path(codec, path))?;
        let mut request = self
            .http
            .post(url)
            .header(SECRET_HEADER, &*self.secret)
            .header("content-type", "application/octet-stream");
        let sent_ms = geiger_protocol::now_unix_ms();
        request = request.header(CLOCK_HEADER, sent_ms);
        if let Some(offset) = self.clock.as_ref().and_then(|c| c.statement_for(target)) {
            request = request.header(YOUR_OFFSET_HEADER, offset);
        }
        if credential == Credential::Operator {
            let Some(admin) = &self.admin else {
                return Err(TransportError::Forbidden);
            };
            request = request.header(ADMIN_HEADER, &**admin);
        }
        let response = request
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
        if let Some(clock) = &self.clock {
            let peer_ms = response
                .headers()
                .get(CLOCK_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(peer_ms) = peer_ms {
                clock.measured(target, peer_ms, sent_ms, geiger_protocol::now_unix_ms());
            }
        }
        let status = response.status();
        // Only an authenticated answer speaks for the member's build.
        if let Some(builds) = self.builds.as_ref().filter(|_| {
            status != reqwest::StatusCode::UNAUTHORIZED && status != reqwest::StatusCode::FORBIDDEN
        }) {
            let stated = response
                .headers()
                .get(FEATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            builds.heard(target, FeatureLevel::from_header(stated));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(TransportError::Unauthorized);
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(TransportError::Forbidden);
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
        codec
            .decode(&body)
            .map_err(|e| TransportError::Decode(e.to_string()))
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
        .call(target, &node.rpc_addr, path, req, timeout, Credential::Peer)
        .await
        .map_err(|e| match e {
            TransportError::Unreachable(_)
            | TransportError::NoAnswer(_)
            | TransportError::Status { status: 503, .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            TransportError::Unauthorized | TransportError::Forbidden => {
                tracing::error!(peer = target, error = %e, "peer refused our call");
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
        if !self.quorum.may_stand_for_election() {
            // A node whose clock is wrong must not lead (but as a last
            // resort, crate::quorum_watch): it asks no one.
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(
                    "this node's clock is off the cluster's: not standing for election",
                ),
            )));
        }
        self.raft_call(PATH_VOTE, &rpc, option.hard_ttl().max(self.min_timeout))
            .await
    }

    fn backoff(&self) -> Backoff {
        // Short enough that a restarted peer is picked up quickly, long
        // enough not to spin on a dead one.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
