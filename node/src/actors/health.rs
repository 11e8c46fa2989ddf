//! The Health actor: once per tick it asks the ledger how this node stands
//! (leader known, quorum reachable through a linearizable barrier, pool not
//! empty), publishes the answer as readiness, and refreshes the Raft, link
//! and pool metrics of `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use geiger_control_plane::{ControlPlane, DevicePool, Lease, Status};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::supervisor::{ChildSpec, SpawnFuture};
use crate::metrics::{DeviceLabels, NoLabels, NodeMetrics, PeerLabels, RoleLabels};
use crate::peer_api::PeerApi;

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
    /// Members' public API, over TLS when this node's is.
    pub peers: PeerApi,
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
    /// For the leader's probe of the other voters' `/healthz`.
    http: reqwest::Client,
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

/// The per-device pool counters and the last chunk's time, from the
/// ledger's replicated per-device accounting, so every node exports the
/// same totals (up to its apply lag):
///
/// - `geiger_pool_appended_bytes_total` = pooled + used bytes (an append
///   adds to pooled, a draw moves bytes from pooled to used, quarantined
///   chunks are never pooled), `geiger_pool_consumed_bytes_total` = used;
///   both set from the ledger's totals ([`TotalCounter`]), and created at 0
///   for every leased device the ledger holds no chunk of yet;
/// - `geiger_link_last_chunk_timestamp_seconds` = `now` at the first tick
///   this replica's appended chunk count for the device grew. On first
///   sight of a device (node start) it starts from `newest_signed_ms` (the
///   device's signed timestamp of its newest appended chunk, at most `now`),
///   and stays absent when there is none, rather than claiming a time.
///
/// [`TotalCounter`]: crate::metrics::TotalCounter
fn export_device_totals(
    metrics: &NodeMetrics,
    devices: &[DevicePool],
    leases: &[Lease],
    chunks_seen: &mut BTreeMap<String, u64>,
    now_unix: f64,
    newest_signed_ms: impl Fn(&DevicePool) -> Option<u64>,
) {
    for device in devices {
        let labels = DeviceLabels {
            device: device.device.clone(),
        };
        metrics
            .pool_appended_bytes
            .get_or_create(&labels)
            .set_total(device.pooled_bytes.saturating_add(device.used_bytes));
        metrics
            .pool_consumed_bytes
            .get_or_create(&labels)
            .set_total(device.used_bytes);
        let last_chunk = &metrics.link_last_chunk_timestamp;
        match chunks_seen.insert(device.device.clone(), device.appended_chunks) {
            Some(before) if device.appended_chunks > before => {
                last_chunk.get_or_create(&labels).set(now_unix);
            }
            Some(_) => {}
            // A restarted Health actor keeps what the metric already shows.
            None if device.appended_chunks > 0 && last_chunk.get(&labels).is_none() => {
                if let Some(ms) = newest_signed_ms(device) {
                    last_chunk
                        .get_or_create(&labels)
                        .set((ms as f64 / 1000.0).min(now_unix));
                }
            }
            None => {}
        }
    }
    for lease in leases {
        let labels = DeviceLabels {
            device: lease.device.clone(),
        };
        metrics.pool_appended_bytes.get_or_create_owned(&labels);
        metrics.pool_consumed_bytes.get_or_create_owned(&labels);
    }
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

    /// `geiger_raft_replication_lag_seconds` (leader only): now minus when
    /// this node first saw entry `matched + 1` in its log; 0 when caught up.
    fn export_lag_seconds(&self, status: &Status, state: &mut HealthState) {
        let lag = &self.metrics.raft_replication_lag_seconds;
        lag.clear();
        if status.state != "Leader" {
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
    /// voters whose `/healthz` answers within the probe timeout (like the
    /// alert pusher's probe). Removed, not zeroed, off the leader.
    async fn voters_reachable(&self, status: &Status, http: &reqwest::Client) {
        let gauge = &self.metrics.raft_voters_reachable;
        if status.state != "Leader" {
            gauge.clear();
            return;
        }
        let mut probes = tokio::task::JoinSet::new();
        for m in status
            .voters
            .iter()
            .filter(|id| **id != status.node_id)
            .filter_map(|id| status.members.get(id))
        {
            let req = http
                .get(self.peers.url(&m.api_addr, "/healthz"))
                .timeout(self.interval.mul_f32(0.8))
                .send();
            probes.spawn(async move { matches!(req.await, Ok(r) if r.status().is_success()) });
        }
        let mut alive = 0;
        while let Some(answer) = probes.join_next().await {
            alive += usize::from(matches!(answer, Ok(true)));
        }
        let own = usize::from(status.voters.contains(&status.node_id));
        gauge.get_or_create(&NoLabels {}).set((own + alive) as i64);
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
        self.export_lag_seconds(status, state);
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
            http: self.peers.client().clone(),
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
        let (why, ()) = tokio::join!(
            self.check(&status),
            self.voters_reachable(&status, &state.http)
        );
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
    pub peers: PeerApi,
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
            peers: self.peers.clone(),
        };
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            Ok(r.get_cell())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(device: &str, pooled: u64, used: u64, chunks: u64) -> DevicePool {
        DevicePool {
            device: device.into(),
            pooled_bytes: pooled,
            used_bytes: used,
            appended_chunks: chunks,
            quarantined_chunks: 0,
            first_seq: (chunks > 0).then_some(0),
            last_seq: chunks.checked_sub(1),
        }
    }

    fn lease(device: &str) -> Lease {
        Lease {
            device: device.into(),
            owner: 1,
            epoch: 1,
            expires_at_ms: 0,
        }
    }

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    const APPENDED: &str = "geiger_pool_appended_bytes_total{device=\"dev_a\"}";
    const CONSUMED: &str = "geiger_pool_consumed_bytes_total{device=\"dev_a\"}";
    const LAST_CHUNK: &str = "geiger_link_last_chunk_timestamp_seconds{device=\"dev_a\"}";

    #[test]
    fn the_pool_counters_are_the_ledgers_appended_and_used_bytes_per_device() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        // 3 chunks of 4 KiB appended, 5000 bytes of them drawn.
        let devices = [pool("dev_a", 3 * 4096 - 5000, 5000, 3)];
        export_device_totals(&m, &devices, &[], &mut seen, 100.0, |_| None);
        let text = m.render();
        assert!(
            text.contains("# TYPE geiger_pool_appended_bytes counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE geiger_pool_consumed_bytes counter"),
            "{text}"
        );
        assert_eq!(sample(&text, APPENDED), Some(12288.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(5000.0), "{text}");

        // A draw moves bytes from pooled to used: appended stays, consumed grows.
        let devices = [pool("dev_a", 3 * 4096 - 9000, 9000, 3)];
        export_device_totals(&m, &devices, &[], &mut seen, 101.0, |_| None);
        let text = m.render();
        assert_eq!(sample(&text, APPENDED), Some(12288.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(9000.0), "{text}");
    }

    #[test]
    fn a_leased_device_without_chunks_yet_gets_its_pool_counters_at_zero_and_no_timestamp() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(&m, &[], &[lease("dev_a")], &mut seen, 100.0, |_| Some(1));
        let text = m.render();
        assert_eq!(sample(&text, APPENDED), Some(0.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(0.0), "{text}");
        assert_eq!(sample(&text, LAST_CHUNK), None, "{text}");
    }

    #[test]
    fn the_last_chunk_timestamp_moves_to_now_when_the_ledger_gains_a_chunk_from_the_device() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        let newest_signed = |_: &DevicePool| Some(50_500);
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            newest_signed,
        );
        // First sight: the newest signed chunk's time, in seconds.
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(50.5));
        // Nothing new: unchanged.
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            110.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(50.5));
        // A chunk more (even one a draw used at once): now.
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 4096, 2)],
            &[],
            &mut seen,
            120.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
        // Draws alone do not move it.
        export_device_totals(
            &m,
            &[pool("dev_a", 0, 8192, 2)],
            &[],
            &mut seen,
            130.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
    }

    #[test]
    fn the_last_chunk_timestamp_is_absent_rather_than_guessed_when_no_signed_chunk_is_found() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| None,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), None);
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut seen,
            105.0,
            |_| None,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(105.0));
    }

    #[test]
    fn a_device_clock_ahead_of_this_node_never_puts_the_last_chunk_in_the_future() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| Some(900_000),
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(100.0));
    }

    #[test]
    fn a_restarted_health_actor_keeps_the_last_chunk_timestamp_it_already_exported() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| None,
        );
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut seen,
            120.0,
            |_| None,
        );
        // A new actor (empty memory), same metrics: no step back to the seed.
        let mut fresh = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut fresh,
            125.0,
            |_| Some(60_000),
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
    }
}
