//! The Health actor: once per tick it asks the ledger how this node stands
//! (leader known, quorum reachable through a linearizable barrier, pool not
//! empty), publishes the answer as readiness, and refreshes the Raft, link
//! and pool gauges of `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use geiger_control_plane::{ControlPlane, Status};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::supervisor::{ChildSpec, SpawnFuture};
use crate::metrics::{DeviceLabels, NodeMetrics, PeerLabels, RoleLabels};

/// Whether this node can serve draws now, and if not, why.
#[derive(Default)]
pub struct Readiness {
    state: Mutex<(bool, Option<String>)>,
}

impl Readiness {
    pub fn get(&self) -> (bool, Option<String>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, ready: bool, why: Option<String>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = state.0 != ready;
        *state = (ready, why);
        changed
    }
}

pub struct Health {
    pub ledger: ControlPlane,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<NodeMetrics>,
    pub interval: Duration,
}

pub struct HealthState {
    last_leader: Option<u64>,
    last_state: String,
}

pub enum HealthMsg {
    Tick,
}

const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

impl Health {
    /// Why the node cannot serve draws, or `None` when it can.
    async fn check(&self, status: &Status) -> Option<String> {
        if status.leader.is_none() {
            return Some("no leader known".into());
        }
        // A barrier goes through the leader and needs a quorum's ack, so it
        // proves the write path is open from here.
        match tokio::time::timeout(self.interval, self.ledger.linearizable_barrier()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(format!("quorum not reachable: {e}")),
            Err(_) => return Some("quorum not reachable in time".into()),
        }
        if status.pool_bytes == 0 {
            return Some("the entropy pool is empty".into());
        }
        None
    }

    fn export(&self, status: &Status, state: &mut HealthState) {
        let m = &self.metrics;
        m.raft_term.set(status.term as i64);
        m.raft_leader_id.set(status.leader.map_or(-1, |l| l as i64));
        let role = status.state.to_lowercase();
        for r in ROLES {
            m.raft_role
                .get_or_create(&RoleLabels {
                    role: r.to_string(),
                })
                .set(i64::from(r == role));
        }
        m.raft_voters.set(status.voters.len() as i64);
        m.raft_last_log_index
            .set(status.last_log_index.unwrap_or(0) as i64);
        m.raft_applied_index
            .set(status.last_applied_index.unwrap_or(0) as i64);
        m.raft_committed_index
            .set(status.last_applied_index.unwrap_or(0) as i64);
        m.raft_snapshot_index
            .set(status.snapshot_index.unwrap_or(0) as i64);
        m.raft_replication_lag_entries.clear();
        for peer in &status.peers {
            m.raft_replication_lag_entries
                .get_or_create(&PeerLabels {
                    peer: peer.id.to_string(),
                })
                .set(peer.lag.unwrap_or(0) as i64);
        }
        for device in &status.devices {
            m.pool_depth_bytes
                .get_or_create(&DeviceLabels {
                    device: device.device.clone(),
                })
                .set(device.pooled_bytes as i64);
        }
        for lease in &status.leases {
            let labels = DeviceLabels {
                device: lease.device.clone(),
            };
            m.link_owner_epoch
                .get_or_create(&labels)
                .set(lease.epoch as i64);
            m.link_owned
                .get_or_create(&labels)
                .set(i64::from(lease.owner == status.node_id));
        }
        if status.leader.is_some() && status.leader != state.last_leader {
            if state.last_leader.is_some() || status.leader.is_some() {
                m.raft_leader_changes.inc();
            }
            tracing::info!(leader = ?status.leader, term = status.term, "leader changed");
            state.last_leader = status.leader;
        }
        if role == "candidate" && state.last_state != "candidate" {
            m.raft_elections.inc();
        }
        if status.state != state.last_state {
            tracing::info!(from = %state.last_state, to = %status.state, "raft role changed");
            state.last_state = status.state.clone();
        }
    }
}

impl Actor for Health {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        _: (),
    ) -> Result<HealthState, ActorProcessingErr> {
        myself.send_interval(self.interval, || HealthMsg::Tick);
        Ok(HealthState {
            last_leader: None,
            last_state: String::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HealthMsg>,
        HealthMsg::Tick: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        let status = self.ledger.status()?;
        self.export(&status, state);
        let why = self.check(&status).await;
        let ready = why.is_none();
        self.metrics.node_ready.set(i64::from(ready));
        if self.readiness.set(ready, why.clone()) {
            match why {
                None => tracing::info!("node ready"),
                Some(why) => tracing::warn!(%why, "node not ready"),
            }
        }
        Ok(())
    }
}

pub struct HealthSpec {
    pub ledger: ControlPlane,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<NodeMetrics>,
    pub interval: Duration,
}

impl ChildSpec for HealthSpec {
    fn kind(&self) -> &'static str {
        "health"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = Health {
            ledger: self.ledger.clone(),
            readiness: self.readiness.clone(),
            metrics: self.metrics.clone(),
            interval: self.interval,
        };
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            Ok(r.get_cell())
        })
    }
}
