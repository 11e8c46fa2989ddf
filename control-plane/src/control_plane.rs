//! The handle the node binary holds: open the replica, mount its internal
//! router, write commands (forwarded to the leader when this node is not
//! it), read local state, change membership, and report status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::RaftError;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::batcher::{self, Pending};
use crate::clock_watch::{ClockStanding, ClockWatch};
use crate::config::ControlPlaneConfig;
use crate::departed_leader;
use crate::feature_level::{self, FeatureLevel, PeerBuilds};
use crate::log_store::LogStore;
use crate::placement::{self, PlacementReport};
use crate::quorum_watch::QuorumWatch;
use crate::raft_network::client::{Credential, Network, RpcClient, TransportError};
use crate::raft_network::server::{self, Gate};
use crate::raft_network::{AdminOp, ForwardError, PATH_ADMIN};
use crate::replica::Replica;
use crate::snapshot_schedule::{self, SnapshotSchedule};
use crate::state_machine::reads::{self, ChainInfo, DevicePool};
use crate::state_machine::tables::{Customer, StoredDraw};
use crate::state_machine::StateMachine;
use crate::types::{Command, Lease, Member, NodeId, Outcome, Raft};
use crate::Error;

/// How often the leader looks whether the cluster's feature level can
/// rise (`crate::feature_level`); the look ends once it is at this build's.
const FEATURE_LOOK_EVERY: Duration = Duration::from_millis(100);

/// One replica of the ledger. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Replica>,
    gate: Arc<Gate>,
    batch_tx: mpsc::Sender<Pending>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// What each peer's build supports, as heard in its answers.
    builds: Arc<PeerBuilds>,
}

/// Replication state of one peer, seen from the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub matched_index: Option<u64>,
    /// Entries the peer is behind the leader's last log entry.
    pub lag: Option<u64>,
}

/// A snapshot of this node's view of the cluster, for `/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this leader.
    pub millis_since_quorum_ack: Option<u64>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub members: BTreeMap<NodeId, Member>,
    /// Only on the leader.
    pub peers: Vec<PeerStatus>,
    pub pool_bytes: u64,
    pub devices: Vec<DevicePool>,
    pub leases: Vec<Lease>,
    pub placement: PlacementReport,
    /// Absent from nodes older than feature levels.
    #[serde(default)]
    pub feature_level: FeatureLevels,
}

/// The cluster feature level in force (as this replica has applied it)
/// and the highest this node's build supports (`crate::feature_level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureLevels {
    pub cluster: u32,
    pub build: u32,
}

impl ControlPlane {
    /// Opens (or creates) this node's replica under `data_dir` and starts
    /// Raft. The node then serves [`ControlPlane::router`] on its internal
    /// listener at `config.member.rpc_addr`.
    pub async fn open(config: ControlPlaneConfig, data_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir)?;
        let raft_config = Arc::new(config.raft_config()?);
        let log = LogStore::open(&data_dir.join("raft-log.redb"), config.log_cache_bytes)?;
        let sm = StateMachine::open(
            data_dir,
            config.state_cache_bytes,
            config.key_encryption_key.clone(),
        )?;
        let shared = sm.shared();
        let clock = Arc::new(ClockWatch::new(config.max_clock_offset));
        let builds = Arc::new(PeerBuilds::default());
        let client = RpcClient::new(
            &config.cluster_secret,
            config.admin_token.as_deref(),
            config.peer_tls.as_ref(),
        )?
        .with_clock(clock.clone())
        .with_builds(builds.clone());
        let quorum = Arc::new(QuorumWatch::new(
            config.timeouts.election_max,
            clock.clone(),
        ));
        let network = Network {
            quorum: quorum.clone(),
            client: client.clone(),
            rpc_timeout: config.timeouts.rpc,
            append_answer_timeout: config.timeouts.append_answer,
        };
        let raft = Raft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        let watch = tokio::spawn(quorum.clone().run(
            raft.clone(),
            config.node_id,
            config.timeouts.heartbeat,
        ));
        let inner = Arc::new(Replica::new(config.clone(), raft, shared, client, quorum));
        let departed = tokio::spawn(departed_leader::run(
            inner.clone(),
            config.timeouts.heartbeat,
        ));
        let snapshots = tokio::spawn(snapshot_schedule::run(
            inner.raft.clone(),
            SnapshotSchedule {
                every: config.snapshot_every,
                growth: config.snapshot_growth,
            },
        ));
        let gate = Arc::new(Gate::new(
            inner.clone(),
            &config.cluster_secret,
            config.admin_token.as_deref(),
            config.snapshot_chunk_bytes as usize,
            clock,
        ));
        let (batch_tx, batch_rx) = mpsc::channel(config.max_batch * 8);
        let batcher = tokio::spawn(batcher::run(inner.clone(), batch_rx));
        let features = tokio::spawn(feature_level::run(
            inner.clone(),
            builds.clone(),
            FEATURE_LOOK_EVERY,
        ));
        tracing::info!(node = config.node_id, dir = %data_dir.display(), "control plane open");
        Ok(ControlPlane {
            inner,
            gate,
            batch_tx,
            tasks: Arc::new(Mutex::new(vec![
                batcher, watch, features, departed, snapshots,
            ])),
            builds,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's clock against the cluster's (`crate::clock_watch`).
    pub fn clock_standing(&self) -> ClockStanding {
        self.inner.quorum.clock.standing()
    }

    pub(crate) fn replica(&self) -> Arc<Replica> {
        self.inner.clone()
    }

    /// The internal endpoints (Raft RPC, forwarded writes, admin), to be
    /// served on the internal listener only. Every request must carry the
    /// cluster secret.
    pub fn router(&self) -> axum::Router {
        server::router(self.gate.clone())
    }

    /// The openraft handle, for metrics and tests.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Stops Raft and every task of this replica. Afterwards the router
    /// answers 503 and the data directory can be reopened once every clone
    /// of this handle is dropped.
    pub async fn shutdown(&self) {
        self.gate.close();
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        tracing::info!(node = self.inner.id, "control plane shut down");
    }

    // ---- writes -------------------------------------------------------

    /// Commits one command, batched with concurrent ones into a single Raft
    /// entry (group commit), and returns its outcome. Forwarded to the
    /// leader if this node is not it; retried while an election runs, up to
    /// the write timeout. `Err(Unavailable)` means the outcome is unknown
    /// or nothing was written; draws are safe to retry either way.
    pub async fn write(&self, command: Command) -> Result<Outcome, Error> {
        let (reply, rx) = oneshot::channel();
        let started = Instant::now();
        self.batch_tx
            .send(Pending {
                command,
                queued_at: started,
                reply,
            })
            .await
            .map_err(|_| Error::Shutdown)?;
        let outcome = rx.await.map_err(|_| Error::Shutdown)?;
        if outcome.is_ok() {
            crate::stage_timing::record(
                crate::stage_timing::Stage::LedgerWrite,
                started.elapsed(),
                1,
            );
        }
        outcome
    }

    /// Commits `commands` as one entry, bypassing the batcher.
    pub async fn write_batch(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, Error> {
        Ok(self.inner.propose(commands).await?.outcomes)
    }

    // ---- membership ---------------------------------------------------

    /// Bootstraps a new cluster with these voters (call on one node, once),
    /// then, once a leader exists, installs the first signing key (secret
    /// drawn here, on the proposer; apply has no randomness).
    pub async fn bootstrap(&self, voters: BTreeMap<NodeId, Member>) -> Result<(), Error> {
        match self.inner.raft.initialize(voters).await {
            Ok(()) => tracing::info!(node = self.inner.id, "cluster initialized"),
            Err(RaftError::APIError(e)) => {
                tracing::info!(error = %e, "cluster already initialized")
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        self.ensure_signing_key().await
    }

    /// Installs a first signing key if the ledger has none.
    pub async fn ensure_signing_key(&self) -> Result<(), Error> {
        self.linearizable_barrier().await?;
        if reads::current_key_id(&self.inner.shared.db())?.is_some() {
            return Ok(());
        }
        match self.rotate_key().await {
            Ok(_) | Err(Error::Rejected(crate::Rejection::AlreadyExists(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the signing key with a fresh one; returns its key id. With
    /// a key-encryption key, the secret leaves this function only sealed.
    pub async fn rotate_key(&self) -> Result<String, Error> {
        let secret = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
        let command = match &self.inner.config.key_encryption_key {
            Some(kek) => {
                let public_key = geiger_protocol::Signer::from_secret(*secret).public_key();
                Command::RotateSealedKey {
                    public_key,
                    sealed: kek.seal(&secret, &public_key),
                }
            }
            None => Command::RotateKey { secret: *secret },
        };
        match self.write(command).await? {
            Outcome::KeyRotated { key_id } => Ok(key_id),
            Outcome::Rejected(r) => Err(Error::Rejected(r)),
            other => Err(Error::Raft(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn admin(&self, op: AdminOp) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.config.timeouts.write * 4;
        loop {
            let leader = self.inner.raft.current_leader().await;
            let result = match leader {
                Some(id) if id == self.inner.id => self.inner.admin_as_leader(op.clone()).await,
                Some(id) => match self.inner.member(id) {
                    Some(m) => self
                        .inner
                        .client
                        .call::<_, Result<(), ForwardError>>(
                            id,
                            &m.rpc_addr,
                            PATH_ADMIN,
                            &op,
                            deadline - Instant::now().min(deadline),
                            Credential::Operator,
                        )
                        .await
                        .unwrap_or_else(|e| Err(ForwardError::Failed(e.to_string()))),
                    None => Err(ForwardError::NotLeader { leader: None }),
                },
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(self.inner.config.timeouts.leader_retry).await;
                }
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
    }

    /// Adds a non-voting learner with its labels; returns once it has caught up.
    /// Refused, with nothing changed, when the node does not answer with
    /// this cluster's secret or its build cannot apply the ledger's
    /// feature level: it would stop at the first entry it cannot read.
    pub async fn add_learner(&self, id: NodeId, member: Member) -> Result<(), Error> {
        self.check_build_of(id, &member).await?;
        tracing::info!(node = id, %member, "adding learner");
        self.admin(AdminOp::AddLearner { id, member }).await
    }

    /// Asks the node to be added for anything (a read index, which it
    /// cannot give) to hear the feature level its answer states.
    async fn check_build_of(&self, id: NodeId, member: &Member) -> Result<(), Error> {
        let refuse = |why: String| Err(Error::Rejected(crate::types::Rejection::Invalid(why)));
        let answer = self
            .inner
            .ask_read_index(id, &member.rpc_addr, self.inner.config.timeouts.rpc * 4)
            .await;
        match answer {
            Ok(_) => {}
            Err(e @ (TransportError::Unauthorized | TransportError::Forbidden)) => {
                return refuse(format!(
                    "node {id} at {} refused this cluster's secret ({e})",
                    member.rpc_addr
                ))
            }
            Err(e) => {
                return Err(Error::MemberUnreachable(format!(
                    "node {id} at {} does not answer ({e}): start it before adding it",
                    member.rpc_addr
                )))
            }
        }
        let cluster = self.feature_level()?;
        match self.builds.level_of(id) {
            Some(build) if build >= cluster => Ok(()),
            build => refuse(format!(
                "node {id} at {} runs a build that supports feature level {}; the cluster is at level {cluster}: upgrade it before adding it",
                member.rpc_addr,
                build.unwrap_or(FeatureLevel::BASE)
            )),
        }
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        tracing::info!(node = id, "promoting to voter");
        self.admin(AdminOp::Promote { id }).await
    }

    /// Removes a voter or learner from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        tracing::info!(node = id, "removing member");
        self.admin(AdminOp::Remove { id }).await
    }

    /// Records new labels for a member (zone, cloud, region, addresses).
    pub async fn set_member_labels(&self, id: NodeId, member: Member) -> Result<(), Error> {
        match self
            .write(Command::SetMemberLabels { node: id, member })
            .await?
        {
            Outcome::Rejected(r) => Err(Error::Rejected(r)),
            _ => Ok(()),
        }
    }

    // ---- reads --------------------------------------------------------

    /// Waits until this replica has applied everything the leader had
    /// committed when the call began (a linearizable read barrier).
    pub async fn linearizable_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.config.timeouts.write;
        loop {
            let index = match self.inner.raft.current_leader().await {
                Some(id) if id == self.inner.id => self.inner.read_index_as_leader().await,
                Some(id) => match self.inner.member(id) {
                    Some(m) => self
                        .inner
                        .ask_read_index(id, &m.rpc_addr, self.inner.config.timeouts.rpc * 4)
                        .await
                        .unwrap_or_else(|e| Err(ForwardError::Failed(e.to_string()))),
                    None => Err(ForwardError::NotLeader { leader: None }),
                },
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match index {
                Ok(index) => {
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(10));
                    return self
                        .inner
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map(|_| ())
                        .map_err(|e| Error::Unavailable(e.to_string()));
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Unavailable(e.to_string()))
                }
                Err(_) => tokio::time::sleep(self.inner.config.timeouts.leader_retry).await,
            }
        }
    }

    /// A draw as applied on this replica: original request and 201 bytes.
    pub fn draw(&self, id: &str) -> Result<Option<StoredDraw>, Error> {
        Ok(reads::draw(&self.inner.shared.db(), id)?)
    }

    /// Like [`Self::draw`], but if the draw is not here yet, waits for this
    /// replica to catch up with the leader and looks again, so a draw
    /// acknowledged anywhere is found everywhere.
    pub async fn draw_linearizable(&self, id: &str) -> Result<Option<StoredDraw>, Error> {
        if let Some(d) = self.draw(id)? {
            return Ok(Some(d));
        }
        self.linearizable_barrier().await?;
        self.draw(id)
    }

    pub fn chain(&self, id: &str) -> Result<Option<ChainInfo>, Error> {
        Ok(reads::chain(&self.inner.shared.db(), id)?)
    }

    pub async fn chain_linearizable(&self, id: &str) -> Result<Option<ChainInfo>, Error> {
        if let Some(c) = self.chain(id)? {
            return Ok(Some(c));
        }
        self.linearizable_barrier().await?;
        self.chain(id)
    }

    /// Writes a consistent copy of this replica's applied state to `path`
    /// (the snapshot format, streamed from one read transaction, fsynced):
    /// a backup. Returns the last log index it covers. Blocking I/O: call
    /// it off the async runtime.
    pub fn backup_to(&self, path: &Path) -> Result<u64, Error> {
        let dumped = crate::snapshot::dump(&self.inner.shared.db(), path)?;
        Ok(dumped.last_applied.map_or(0, |l| l.index))
    }

    /// A customer's chains created after ledger index `after` (0 for the
    /// start), at most `limit`: (ledger index of the genesis, chain id).
    pub fn customer_chains(
        &self,
        customer: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, Error> {
        Ok(reads::customer_chains(
            &self.inner.shared.db(),
            customer,
            after,
            limit,
        )?)
    }

    /// Draws of a chain at positions after `after` (0 for the start), at most `limit`.
    pub fn chain_draws(
        &self,
        chain: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredDraw>, Error> {
        Ok(reads::chain_draws(
            &self.inner.shared.db(),
            chain,
            after,
            limit,
        )?)
    }

    pub fn customer_by_key_hash(&self, key_sha256: &[u8; 32]) -> Result<Option<Customer>, Error> {
        Ok(reads::customer_by_key_hash(
            &self.inner.shared.db(),
            key_sha256,
        )?)
    }

    pub fn customer_by_api_key(&self, api_key: &str) -> Result<Option<Customer>, Error> {
        self.customer_by_key_hash(&crate::api_key_hash(api_key))
    }

    /// Signing public keys with validity periods (`GET /v1/keys`).
    pub fn keys(&self) -> Result<geiger_protocol::KeySet, Error> {
        Ok(reads::keys(&self.inner.shared.db())?)
    }

    pub fn leases(&self) -> Result<Vec<Lease>, Error> {
        Ok(reads::leases(&self.inner.shared.db())?)
    }

    /// Every registered link with its lease and sequence accounting.
    pub fn links(&self) -> Result<Vec<crate::LinkView>, Error> {
        Ok(crate::state_machine::links::registry::links(
            &self.inner.shared.db(),
        )?)
    }

    /// The device's timestamp and signature of an appended chunk.
    pub fn chunk_provenance(
        &self,
        device: &str,
        seq: u64,
    ) -> Result<Option<crate::ChunkProvenance>, Error> {
        Ok(crate::state_machine::pool::chunk_provenance(
            &self.inner.shared.db(),
            device,
            seq,
        )?)
    }

    /// A chunk's bytes and signature if it is exhausted (docs/DERIVATION.md §10).
    pub fn chunk_reveal(
        &self,
        device: &str,
        seq: u64,
    ) -> Result<crate::state_machine::provenance::ChunkReveal, Error> {
        Ok(crate::state_machine::provenance::chunk_reveal(
            &self.inner.shared.db(),
            device,
            seq,
        )?)
    }

    /// Every device public key, registered or removed, with its validity.
    pub fn device_keys(&self) -> Result<Vec<crate::state_machine::provenance::DeviceKey>, Error> {
        Ok(crate::state_machine::provenance::device_keys(
            &self.inner.shared.db(),
        )?)
    }

    /// One registered link (address and public key), if registered.
    pub fn link(&self, device: &str) -> Result<Option<crate::Link>, Error> {
        Ok(crate::state_machine::links::registry::link(
            &self.inner.shared.db(),
            device,
        )?)
    }

    /// Unused pool bytes in total and per device.
    pub fn pool(&self) -> Result<(u64, Vec<DevicePool>), Error> {
        let (state, devices) = reads::pool(&self.inner.shared.db())?;
        Ok((state.bytes, devices))
    }

    /// The placement report for the current voters.
    pub fn placement(&self) -> Result<PlacementReport, Error> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let labels = reads::members(&self.inner.shared.db())?;
        let membership = metrics.membership_config.membership();
        let voters: BTreeMap<NodeId, Member> = membership
            .voter_ids()
            .map(|id| {
                let m = labels
                    .get(&id)
                    .cloned()
                    .or_else(|| membership.get_node(&id).cloned())
                    .unwrap_or_default();
                (id, m)
            })
            .collect();
        Ok(placement::report(&voters))
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Result<Status, Error> {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let labels = reads::members(&self.inner.shared.db())?;
        let mut members = BTreeMap::new();
        for (id, node) in membership.nodes() {
            members.insert(*id, labels.get(id).cloned().unwrap_or_else(|| node.clone()));
        }
        let last = m.last_log_index;
        let peers = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.inner.id)
                    .map(|(id, matched)| {
                        let matched_index = matched.map(|l| l.index);
                        PeerStatus {
                            id: *id,
                            matched_index,
                            lag: last.map(|l| l.saturating_sub(matched_index.unwrap_or(0))),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (pool_bytes, devices) = self.pool()?;
        Ok(Status {
            node_id: self.inner.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            members,
            peers,
            pool_bytes,
            devices,
            leases: self.leases()?,
            placement: self.placement()?,
            feature_level: FeatureLevels {
                cluster: self.feature_level()?.0,
                build: FeatureLevel::SUPPORTED.0,
            },
        })
    }

    /// The cluster feature level in force, as this replica has applied it.
    pub fn feature_level(&self) -> Result<FeatureLevel, Error> {
        Ok(crate::state_machine::features::feature_level(
            &self.inner.shared.db(),
        )?)
    }
}
