//! The replica core: one node's Raft instance with its state, and the
//! ways a batch of commands reaches the log. [`Replica::propose`] commits
//! here when this node leads and forwards to the leader otherwise (retrying
//! through elections); the `_as_leader` calls are what the leader runs for
//! its own writes and for those forwarded to it.
//!
//! Dependencies run one way: the handle ([`crate::control_plane`]), the
//! batcher and the internal server ([`crate::raft_network::server`]) call
//! in here; this module calls out only through
//! [`crate::raft_network::client`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::config::ControlPlaneConfig;
use crate::quorum_watch::{QuorumWatch, NO_QUORUM};
use crate::raft_network::client::{Credential, RpcClient, TransportError};
use crate::raft_network::{
    AdminOp, ForwardError, ForwardedResult, ForwardedWrite, PATH_READ_INDEX, PATH_WRITE,
};
use crate::stage_timing::{record, Stage};
use crate::state_machine::Shared;
use crate::types::{Batch, BatchOutcome, Command, Member, NodeId, Raft};
use crate::Error;

/// How a forwarded write the leader refused (for want of a credential) is
/// marked: nothing was proposed, and trying again would not help.
const REFUSED: &str = "refused: ";

/// One node's replica: shared by the handle, the batcher and the internal
/// server.
pub(crate) struct Replica {
    pub(crate) id: NodeId,
    pub(crate) config: ControlPlaneConfig,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: RpcClient,
    /// Whether this node can reach a quorum (and, as leader, has stepped aside).
    pub(crate) quorum: Arc<QuorumWatch>,
    /// The last timestamp this node stamped on a batch: stamps never go
    /// backwards on one leader, even if its wall clock does.
    last_stamp: AtomicU64,
}

impl Replica {
    pub(crate) fn new(
        config: ControlPlaneConfig,
        raft: Raft,
        shared: Arc<Shared>,
        client: RpcClient,
        quorum: Arc<QuorumWatch>,
    ) -> Self {
        Replica {
            id: config.node_id,
            config,
            raft,
            shared,
            client,
            quorum,
            last_stamp: AtomicU64::new(0),
        }
    }

    /// Asks node `id` at `addr` for its read index (the leader's commit
    /// index). Also how this node hears a peer's build, and whether its
    /// process is there at all.
    pub(crate) async fn ask_read_index(
        &self,
        id: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, ForwardError>, TransportError> {
        self.client
            .call(id, addr, PATH_READ_INDEX, &(), timeout, Credential::Peer)
            .await
    }

    /// A member's labels and addresses, as the current membership has them.
    pub(crate) fn member(&self, id: NodeId) -> Option<Member> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// The leader's clock for a new batch; monotonic on this node.
    fn stamp(&self) -> u64 {
        let now = geiger_protocol::now_unix_ms();
        let prev = self.last_stamp.fetch_max(now, Ordering::SeqCst);
        prev.max(now)
    }

    /// One attempt to commit `commands` through the local Raft, which must
    /// be the leader. Used for local writes and for writes forwarded here.
    pub(crate) async fn propose_as_leader(&self, commands: Vec<Command>) -> ForwardedResult {
        if let Some(why) = self.quorum.write_refusal(&self.raft, self.id) {
            return Err(ForwardError::Failed(why));
        }
        let n = commands.len();
        let batch = Batch {
            at_ms: self.stamp(),
            commands,
        };
        let started = Instant::now();
        match self.raft.client_write(batch).await {
            Ok(resp) => {
                record(Stage::Raft, started.elapsed(), n);
                Ok(resp.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    /// Commits `commands` as one Raft entry, here or on the leader,
    /// retrying while a leader is being elected, until the write timeout.
    pub(crate) async fn propose(&self, commands: Vec<Command>) -> Result<BatchOutcome, Error> {
        let deadline = Instant::now() + self.config.timeouts.write;
        let mut last_problem: String;
        loop {
            if let Some(why) = self.quorum.write_refusal(&self.raft, self.id) {
                // Retryable elsewhere, and better said now than after the
                // write timeout.
                return Err(Error::Unavailable(why));
            }
            let attempt = match self.raft.current_leader().await {
                Some(id) if id == self.id => self.propose_as_leader(commands.clone()).await,
                Some(id) => match self.member(id) {
                    Some(member) => {
                        let started = Instant::now();
                        let forwarded = self.forward(id, &member, &commands).await;
                        if forwarded.is_ok() {
                            record(Stage::Forward, started.elapsed(), commands.len());
                        }
                        forwarded
                    }
                    None => Err(ForwardError::NotLeader { leader: None }),
                },
                None => {
                    if !self.raft.is_initialized().await.unwrap_or(false) {
                        return Err(Error::Unavailable(
                            "this node is not part of an initialized cluster".into(),
                        ));
                    }
                    Err(ForwardError::NotLeader { leader: None })
                }
            };
            match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(ForwardError::NotLeader { leader }) => {
                    last_problem = format!("leader moved (now {:?})", leader.map(|l| l.0));
                }
                Err(ForwardError::Failed(e)) => {
                    if e.starts_with(NO_QUORUM) {
                        return Err(Error::Unavailable(e));
                    }
                    if let Some(why) = e.strip_prefix(REFUSED) {
                        return Err(Error::Refused(why.to_string()));
                    }
                    if e.starts_with("unknown:") {
                        // The write may have been committed: do not repeat it.
                        return Err(Error::Unavailable(e));
                    }
                    last_problem = e;
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(last_problem));
            }
            tokio::time::sleep(self.config.timeouts.leader_retry).await;
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        member: &Member,
        commands: &[Command],
    ) -> ForwardedResult {
        let body = ForwardedWrite {
            commands: commands.to_vec(),
        };
        let timeout = self.config.timeouts.write;
        // Operator commands travel with the admin credential, or the leader
        // refuses them (raft_network::server).
        let credential = if commands.iter().any(Command::is_operator) {
            Credential::Operator
        } else {
            Credential::Peer
        };
        match self
            .client
            .call::<_, ForwardedResult>(
                leader,
                &member.rpc_addr,
                PATH_WRITE,
                &body,
                timeout,
                credential,
            )
            .await
        {
            Ok(r) => r,
            Err(TransportError::Unreachable(e)) => Err(ForwardError::Failed(format!(
                "leader {leader} unreachable: {e}"
            ))),
            Err(TransportError::Status { status: 503, .. }) => {
                Err(ForwardError::NotLeader { leader: None })
            }
            // Refused before anything was proposed: nothing to be unsure of.
            Err(e @ (TransportError::Forbidden | TransportError::Unauthorized)) => Err(
                ForwardError::Failed(format!("{REFUSED}leader {leader}: {e}")),
            ),
            Err(e) => Err(ForwardError::Failed(format!(
                "unknown: forwarding to leader {leader}: {e}"
            ))),
        }
    }

    pub(crate) async fn admin_as_leader(&self, op: AdminOp) -> Result<(), ForwardError> {
        let result = match op {
            AdminOp::AddLearner { id, member } => {
                self.raft.add_learner(id, member, true).await.map(|_| ())
            }
            AdminOp::Promote { id } => self
                .raft
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map(|_| ()),
            AdminOp::Remove { id } => {
                let is_voter = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters([id].into())
                } else {
                    ChangeMembers::RemoveNodes([id].into())
                };
                self.raft.change_membership(change, false).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    /// The index a linearizable read must wait for; asked of the leader.
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, ForwardError> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            // openraft confirms leadership with one append to each voter,
            // each abandoned after one heartbeat interval: with round trips
            // above the heartbeat that never succeeds, though writes still
            // commit (crate::in_flight_append).
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                self.read_index_by_commit().await
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    /// The read index by a write: an empty batch of this leader's term,
    /// once committed, proves it led after the read began, and it follows
    /// every entry committed before (a leader holds all of them). Returned
    /// after the entry is applied here, so the applied index is past it.
    /// Bounded like an append's answer: a leader that hears no one would
    /// otherwise hold the read until the fault ends.
    async fn read_index_by_commit(&self) -> Result<u64, ForwardError> {
        let within = self.config.timeouts.append_answer;
        tokio::time::timeout(within, self.propose_as_leader(Vec::new()))
            .await
            .map_err(|_| {
                ForwardError::Failed(format!("no quorum confirmed this leader within {within:?}"))
            })??;
        let applied = self.raft.metrics().borrow().last_applied;
        Ok(applied.map_or(0, |l| l.index))
    }
}
