//! The Health actor: once per tick it asks the ledger how this node stands
//! (leader known, quorum answering a linearizable barrier lately, see
//! [`write_path`]; pool not empty), publishes the answer as readiness, and
//! refreshes the Raft, link and pool metrics of `/metrics`. The per-device
//! pool counters are in [`device_totals`].

mod device_totals;
mod write_path;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use geiger_control_plane::{ControlPlane, DevicePool, Status};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use self::device_totals::export_device_totals;
use self::write_path::WritePathProbe;
use super::supervisor::{spawn_linked, ChildSpec, SpawnFuture};
use crate::cluster_view::{ClusterView, ViewReceiver};
use crate::metrics::{DeviceLabels, NoLabels, NodeMetrics, PeerLabels, RoleLabels};

/// Whether this node can serve draws now, and if not, why; and the pool's
/// depth per device in seconds of demand, as the Health actor last saw it.
#[derive(Default)]
pub struct Readiness {
    state: Mutex<(bool, Option<String>)>,
    pool_seconds: Mutex<std::collections::BTreeMap<String, f64>>,
}

impl Readiness {
    /// Device → seconds of demand its pool bytes cover (`+Inf`: no demand).
    pub fn pool_seconds(&self) -> std::collections::BTreeMap<String, f64> {
        self.pool_seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

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
    /// Whether this node leads, and which voters answer.
    pub view: ViewReceiver,
    pub write_path: WritePathProbe,
}

pub struct HealthState {
    last_leader: Option<u64>,
    last_state: String,
    /// Leader only: (when first seen, last log index), one sample per
    /// index change, back to the oldest entry some peer has not matched;
    /// gives `geiger_raft_replication_lag_seconds` to within a tick.
    log_times: VecDeque<(Instant, u64)>,
    /// (when, bytes used by draws from every device), the last 5 minutes:
    /// the whole pool's consumption rate for `geiger_pool_depth_seconds`.
    used: VecDeque<(Instant, u64)>,
    /// Device → appended chunk count at the last tick, to date the last
    /// chunk (`geiger_link_last_chunk_timestamp_seconds`).
    chunks_seen: BTreeMap<String, u64>,
}

/// Samples kept for the replication lag; past it the oldest is kept and
/// the ones after it thinned, so a long-dead peer still shows its full age.
const MAX_LOG_TIMES: usize = 100_000;
/// The window of the pool consumption rate.
const RATE_WINDOW: Duration = Duration::from_secs(300);
/// How far back from a device's last accounted sequence the Health actor
/// looks, once per device, for the newest signed chunk to start
/// `geiger_link_last_chunk_timestamp_seconds` from (quarantined and skipped
/// sequences have none).
const SEED_LOOKBACK: u64 = 4096;

pub enum HealthMsg {
    Tick,
}

const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

impl Health {
    /// Why the node cannot serve draws, or `None` when it can.
    fn check(&self, status: &Status) -> Option<String> {
        // Polled first so that a barrier runs even while no leader is
        // known, and an answer is at hand once one is.
        let write_path = self.write_path.poll();
        if status.leader.is_none() {
            return Some("no leader known".into());
        }
        if let Err(why) = write_path {
            return Some(why);
        }
        if status.pool_bytes == 0 {
            return Some("the entropy pool is empty".into());
        }
        None
    }

    /// `geiger_raft_replication_lag_seconds` (leader only): now minus when
    /// this node first saw entry `matched + 1` in its log; 0 when caught up.
    fn export_lag_seconds(&self, status: &Status, view: &ClusterView, state: &mut HealthState) {
        let lag = &self.metrics.raft_replication_lag_seconds;
        lag.clear();
        if !view.is_leader() {
            state.log_times.clear();
            return;
        }
        let now = Instant::now();
        let last = status.last_log_index.unwrap_or(0);
        if state.log_times.back().is_none_or(|(_, i)| *i < last) {
            state.log_times.push_back((now, last));
        }
        if state.log_times.len() > MAX_LOG_TIMES {
            state.log_times.remove(1);
        }
        let mut oldest_needed = last + 1;
        for peer in &status.peers {
            let need = peer.matched_index.map_or(0, |m| m + 1);
            oldest_needed = oldest_needed.min(need);
            let age = if need > last {
                0.0
            } else {
                state
                    .log_times
                    .iter()
                    .find(|(_, i)| *i >= need)
                    .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64())
            };
            lag.get_or_create(&PeerLabels {
                peer: peer.id.to_string(),
            })
            .set(age);
        }
        // Drop samples no peer can need any more (keep the newest).
        while state.log_times.len() >= 2 && state.log_times[1].1 <= oldest_needed {
            state.log_times.pop_front();
        }
    }

    /// `geiger_pool_depth_seconds`: a device's pool bytes over the whole
    /// pool's consumption rate (bytes used in the last 5 minutes / 300 s;
    /// an underestimate of the rate in a node's first 5 minutes, which errs
    /// toward not alerting); `+Inf` with no demand, 0 when empty.
    fn export_pool_seconds(&self, status: &Status, state: &mut HealthState) {
        let now = Instant::now();
        let used: u64 = status.devices.iter().map(|d| d.used_bytes).sum();
        state.used.push_back((now, used));
        while state
            .used
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            state.used.pop_front();
        }
        let first = state.used.front().map_or(used, |(_, u)| *u);
        let rate = used.saturating_sub(first) as f64 / RATE_WINDOW.as_secs_f64();
        let mut published = std::collections::BTreeMap::new();
        for device in &status.devices {
            let seconds = if device.pooled_bytes == 0 {
                0.0
            } else if rate <= 0.0 {
                f64::INFINITY
            } else {
                device.pooled_bytes as f64 / rate
            };
            self.metrics
                .pool_depth_seconds
                .get_or_create(&DeviceLabels {
                    device: device.device.clone(),
                })
                .set(seconds);
            published.insert(device.device.clone(), seconds);
        }
        *self
            .readiness
            .pool_seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = published;
    }

    /// `geiger_raft_voters_reachable` (leader only): itself plus the other
    /// voters that answered the cluster view's latest probe round. Removed,
    /// not zeroed, off the leader; left as it was until the first round.
    fn export_voters_reachable(&self, view: &ClusterView) {
        let gauge = &self.metrics.raft_voters_reachable;
        if !view.is_leader() {
            gauge.clear();
        } else if let Some(reachable) = view.reachable_voters() {
            gauge.get_or_create(&NoLabels {}).set(reachable as i64);
        }
    }

    /// The device's signed timestamp (ms) of its newest appended chunk, from
    /// the ledger's provenance records, looking back [`SEED_LOOKBACK`]
    /// sequences at most.
    fn newest_signed_ms(&self, device: &DevicePool) -> Option<u64> {
        let last = device.last_seq?;
        let first = device
            .first_seq
            .unwrap_or(0)
            .max(last.saturating_sub(SEED_LOOKBACK - 1));
        (first..=last).rev().find_map(|seq| {
            self.ledger
                .chunk_provenance(&device.device, seq)
                .ok()
                .flatten()
                .map(|p| p.timestamp_ms)
        })
    }

    fn export(&self, status: &Status, view: &ClusterView, state: &mut HealthState) {
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
        self.export_lag_seconds(status, view, state);
        self.export_voters_reachable(view);
        let clock = self.ledger.clock_standing();
        m.clock_offset_seconds.clear();
        if let Some(offset) = clock.offset_ms {
            m.clock_offset_seconds
                .get_or_create(&NoLabels {})
                .set(offset as f64 / 1000.0);
        }
        m.clock_unsynchronized.set(i64::from(clock.unsynchronized));
        m.cluster_feature_level
            .set(i64::from(status.feature_level.cluster));
        m.build_feature_level
            .set(i64::from(status.feature_level.build));
        self.export_pool_seconds(status, state);
        for device in &status.devices {
            m.pool_depth_bytes
                .get_or_create(&DeviceLabels {
                    device: device.device.clone(),
                })
                .set(device.pooled_bytes as i64);
        }
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        export_device_totals(
            m,
            &status.devices,
            &status.leases,
            &mut state.chunks_seen,
            now_unix,
            |d| self.newest_signed_ms(d),
        );
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
            log_times: VecDeque::new(),
            used: VecDeque::new(),
            chunks_seen: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HealthMsg>,
        HealthMsg::Tick: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        let status = self.ledger.status()?;
        let view = self.view.borrow().clone();
        self.export(&status, &view, state);
        let why = self.check(&status);
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
    pub view: ViewReceiver,
    /// How long a quorum's answer to a barrier counts for readiness, and
    /// how long a barrier may run: the Raft timing's `append_answer` plus
    /// the tick, so readiness tolerates the round trips writes tolerate.
    pub write_path_window: Duration,
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
            view: self.view.clone(),
            write_path: WritePathProbe::new(self.ledger.clone(), self.write_path_window),
        };
        spawn_linked(actor, supervisor)
    }
}
