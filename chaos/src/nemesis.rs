//! The nemesis: a seeded, reproducible schedule of faults, and their
//! execution against a running [`Cluster`]. Each fault is healed after a set
//! time, and only one fault is active at a time, so the recovery after each
//! one can be measured on its own.
//!
//! The schedule (what, when, for how long, against which node, zone, cloud
//! or device) is a pure function of the profile, the seed and the placement,
//! so `--seed N` replays the same run. Only "the leader" is resolved when the
//! fault fires, since who leads then is the point of those faults.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::launcher::{Cluster, Placement};
use crate::proxy::{Endpoint, LinkRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 the leader; restart it at heal.
    KillLeader,
    /// kill -9 one node; restart it at heal.
    KillNode,
    /// SIGSTOP one node; SIGCONT at heal (a long GC pause, a stalled VM).
    PauseNode,
    /// Cut every link between one zone and the rest.
    PartitionZone,
    /// Cut every link between one cloud and the rest.
    PartitionCloud,
    /// kill -9 every node of one cloud at once; restart them at heal.
    LoseCloud,
    /// Starve the leader's CPU: SIGSTOP/SIGCONT bursts of 100–300 ms (a
    /// busy host, a noisy neighbour). Must cost no election.
    StarveLeader,
    /// Cut every link between the leader and the other nodes.
    IsolateLeader,
    /// Cut every node's link to one device.
    CutDeviceLink,
    /// Restart one device agent so that it emits stuck output.
    StuckDevice,
    /// Restart every node in turn, each once ready before the next.
    RollingRestart,
    /// kill -9 every node at once, then start them all.
    RestartAll,
    /// 200 ms added each way to every node-to-node link.
    SlowLinks,
    /// The leader can send but not receive.
    OneWayLeader,
    /// Every node-to-node connection is reset with probability 2% per
    /// relayed chunk (soak only).
    LossyLinks,
    /// Restart the leader with its wall clock an hour ahead (libfaketime);
    /// restart it with the true clock at heal. No draw may carry its clock.
    SkewClock,
}

impl FaultKind {
    /// The kinds every profile runs at least once.
    pub const CORE: [FaultKind; 15] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::PauseNode,
        FaultKind::PartitionZone,
        FaultKind::PartitionCloud,
        FaultKind::IsolateLeader,
        FaultKind::CutDeviceLink,
        FaultKind::StuckDevice,
        FaultKind::RollingRestart,
        FaultKind::RestartAll,
        FaultKind::SlowLinks,
        FaultKind::OneWayLeader,
        FaultKind::LoseCloud,
        FaultKind::StarveLeader,
        FaultKind::SkewClock,
    ];
    /// Only in the soak profile.
    pub const EXTRA: [FaultKind; 1] = [FaultKind::LossyLinks];

    /// The gray failures the cluster must keep committing through (issue
    /// 19): a run fails if no draw succeeds while one of them holds.
    pub fn writes_continue(self) -> bool {
        matches!(
            self,
            FaultKind::SlowLinks
                | FaultKind::LossyLinks
                | FaultKind::LoseCloud
                | FaultKind::StarveLeader
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillNode => "kill_node",
            FaultKind::PauseNode => "pause_node",
            FaultKind::PartitionZone => "partition_zone",
            FaultKind::PartitionCloud => "partition_cloud",
            FaultKind::LoseCloud => "lose_cloud",
            FaultKind::StarveLeader => "starve_leader",
            FaultKind::IsolateLeader => "isolate_leader",
            FaultKind::CutDeviceLink => "cut_device_link",
            FaultKind::StuckDevice => "stuck_device",
            FaultKind::RollingRestart => "rolling_restart",
            FaultKind::RestartAll => "restart_all",
            FaultKind::SlowLinks => "slow_links",
            FaultKind::OneWayLeader => "one_way_leader",
            FaultKind::LossyLinks => "lossy_links",
            FaultKind::SkewClock => "skew_clock",
        }
    }
}

/// What a fault is aimed at, fixed when the schedule is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// Whoever leads when the fault fires.
    Leader,
    Node {
        id: u64,
    },
    Zone {
        zone: u8,
    },
    Cloud {
        name: String,
    },
    Device {
        index: usize,
    },
    Everything,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedFault {
    pub index: usize,
    pub kind: FaultKind,
    pub target: Target,
    /// When it starts, from the workload's time zero.
    pub at_ms: u64,
    /// How long it lasts before it is healed.
    pub hold_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// About two minutes: every core fault kind once.
    Ci,
    /// Thirty minutes: every kind, then random ones.
    Soak,
}

/// The whole run's timing and faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub profile: Profile,
    pub seed: u64,
    pub duration_ms: u64,
    pub faults: Vec<PlannedFault>,
}

fn target_for(
    kind: FaultKind,
    rng: &mut ChaCha8Rng,
    placement: &[Placement],
    devices: usize,
) -> Target {
    let mut zones: Vec<u8> = placement.iter().map(|p| p.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    let mut clouds: Vec<String> = placement.iter().map(|p| p.cloud.clone()).collect();
    clouds.sort();
    clouds.dedup();
    match kind {
        FaultKind::KillLeader
        | FaultKind::IsolateLeader
        | FaultKind::OneWayLeader
        | FaultKind::StarveLeader
        | FaultKind::SkewClock => Target::Leader,
        FaultKind::KillNode | FaultKind::PauseNode => Target::Node {
            id: placement[rng.gen_range(0..placement.len())].id,
        },
        FaultKind::PartitionZone => Target::Zone {
            zone: zones[rng.gen_range(0..zones.len())],
        },
        FaultKind::PartitionCloud | FaultKind::LoseCloud => Target::Cloud {
            name: clouds[rng.gen_range(0..clouds.len())].clone(),
        },
        FaultKind::CutDeviceLink | FaultKind::StuckDevice => Target::Device {
            index: rng.gen_range(0..devices.max(1)),
        },
        FaultKind::RollingRestart
        | FaultKind::RestartAll
        | FaultKind::SlowLinks
        | FaultKind::LossyLinks => Target::Everything,
    }
}

/// How long a device emits stuck output: longer than an owner takes to
/// reconnect to a restarted device (about 10 s), or no stuck chunk would
/// ever reach the health tests.
const STUCK_HOLD_MS: u64 = 15_000;

/// How long a node runs with a wrong clock: long enough to restart, rejoin,
/// learn from the leader that it is the wrong one, and stand in elections.
const SKEW_HOLD_MS: u64 = 10_000;

/// The schedule for `profile` and `seed`: the same inputs always give the
/// same schedule.
pub fn schedule(profile: Profile, seed: u64, placement: &[Placement], devices: usize) -> Schedule {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let warmup_ms = 10_000;
    let mut faults = Vec::new();
    let duration_ms = match profile {
        Profile::Ci => {
            // 10 s warm-up, then an 11 s slot per kind: 4 s of fault, 7 s to
            // recover and show the steady rate again; 8 s cool-down.
            let mut kinds = FaultKind::CORE.to_vec();
            kinds.shuffle(&mut rng);
            let mut at = warmup_ms;
            for (i, kind) in kinds.into_iter().enumerate() {
                let target = target_for(kind, &mut rng, placement, devices);
                let hold_ms = match kind {
                    FaultKind::StuckDevice => STUCK_HOLD_MS,
                    FaultKind::SkewClock => SKEW_HOLD_MS,
                    _ => 4_000,
                };
                faults.push(PlannedFault {
                    index: i,
                    kind,
                    target,
                    at_ms: at,
                    hold_ms,
                });
                at += hold_ms + 7_000;
            }
            at + 8_000
        }
        Profile::Soak => {
            let total_ms = 30 * 60_000 + 30_000;
            let mut kinds: Vec<FaultKind> = FaultKind::CORE
                .iter()
                .chain(FaultKind::EXTRA.iter())
                .copied()
                .collect();
            kinds.shuffle(&mut rng);
            let all = kinds.clone();
            let mut at = warmup_ms;
            let mut i = 0;
            loop {
                let slot = rng.gen_range(20_000..=40_000);
                if at + slot > total_ms - 20_000 {
                    break;
                }
                // Every kind once first, then any kind.
                let kind = if i < all.len() {
                    all[i]
                } else {
                    all[rng.gen_range(0..all.len())]
                };
                let target = target_for(kind, &mut rng, placement, devices);
                let mut hold_ms = rng.gen_range(3_000..=10_000);
                match kind {
                    FaultKind::StuckDevice => hold_ms = hold_ms.max(STUCK_HOLD_MS),
                    FaultKind::SkewClock => hold_ms = hold_ms.max(SKEW_HOLD_MS),
                    _ => {}
                }
                faults.push(PlannedFault {
                    index: i,
                    kind,
                    target,
                    at_ms: at,
                    hold_ms,
                });
                at += slot.max(hold_ms + 10_000);
                i += 1;
            }
            total_ms
        }
    };
    Schedule {
        profile,
        seed,
        duration_ms,
        faults,
    }
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    pub planned: PlannedFault,
    /// What it hit, resolved (e.g. the leader's id at the time).
    pub resolved: String,
    pub start_ms: f64,
    /// When the heal action began.
    pub healed_ms: f64,
    /// When the heal action finished (restarts issued, links restored).
    pub heal_done_ms: f64,
    pub notes: Vec<String>,
    /// What this kind of fault must not do and did (an election under CPU
    /// starvation, nodes unready through slow links): each fails the run.
    #[serde(default)]
    pub unmet: Vec<String>,
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn node_endpoints(ids: &[u64]) -> Vec<Endpoint> {
    ids.iter().map(|&id| Endpoint::Node(id)).collect()
}

/// The leader now, or else a running voter (so a leader fault still hits
/// something during an election).
async fn current_leader(cluster: &Cluster) -> u64 {
    if let Some(l) = cluster.leader().await {
        return l;
    }
    let live = cluster.live();
    cluster
        .voters()
        .into_iter()
        .find(|v| live.contains(v))
        .unwrap_or(1)
}

/// The Raft term most live nodes report.
async fn term_of(cluster: &Cluster) -> Option<u64> {
    let mut terms = Vec::new();
    for id in cluster.live() {
        if let Some(t) = cluster.status(id).await.and_then(|s| s["term"].as_u64()) {
            terms.push(t);
        }
    }
    terms.sort_unstable();
    terms.get(terms.len() / 2).copied()
}

/// The ledger's count of quarantined chunks for device `index`, from any node.
async fn quarantined(cluster: &Cluster, index: usize) -> Option<u64> {
    let device = cluster.devices[index].process.id.clone();
    for id in cluster.live() {
        if let Ok(v) = cluster.admin_get(id, "/v1/admin/links").await {
            if let Some(link) = v["links"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["device"] == device.as_str()))
            {
                return link["quarantined_chunks"].as_u64();
            }
        }
    }
    None
}

/// Runs the schedule against the cluster, in real time from `t0`.
pub async fn run(cluster: &mut Cluster, schedule: &Schedule, t0: Instant) -> Vec<FaultEvent> {
    let mut events = Vec::new();
    // A fault that overran its slot (a slow rolling restart) pushes the next
    // one back, so every fault starts on a healed cluster and its recovery
    // is measured on its own; the actual times are in the events.
    let min_gap = Duration::from_secs(5);
    let mut not_before = t0;
    for planned in &schedule.faults {
        let due = (t0 + Duration::from_millis(planned.at_ms)).max(not_before);
        if due >= t0 + Duration::from_millis(schedule.duration_ms) {
            tracing::warn!(
                fault = planned.kind.name(),
                "no time left in the run for this fault"
            );
            break;
        }
        tokio::time::sleep_until(due).await;
        let event = inject(cluster, planned, t0).await;
        tracing::info!(
            fault = planned.kind.name(),
            target = %event.resolved,
            start_ms = event.start_ms,
            heal_done_ms = event.heal_done_ms,
            "fault done"
        );
        events.push(event);
        not_before = Instant::now() + min_gap;
    }
    events
}

async fn inject(cluster: &mut Cluster, planned: &PlannedFault, t0: Instant) -> FaultEvent {
    let hold = Duration::from_millis(planned.hold_ms);
    let start_ms = ms(t0);
    let mut notes = Vec::new();
    let mut unmet = Vec::new();
    let ids = cluster.ids();
    let resolved;
    let healed_ms;
    match planned.kind {
        FaultKind::KillLeader | FaultKind::KillNode => {
            let id = match &planned.target {
                Target::Node { id } => *id,
                _ => current_leader(cluster).await,
            };
            resolved = format!("node {id}");
            cluster.kill(id);
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            if let Err(e) = cluster.restart(id) {
                notes.push(format!("restart failed: {e}"));
            }
        }
        FaultKind::LoseCloud => {
            let Target::Cloud { name } = &planned.target else {
                unreachable!("lose_cloud targets a cloud")
            };
            let lost: Vec<u64> = cluster
                .nodes
                .values()
                .filter(|n| &n.placement.cloud == name)
                .map(|n| n.placement.id)
                .collect();
            resolved = format!("{name} (nodes {lost:?} killed)");
            for &id in &lost {
                cluster.kill(id);
            }
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            for &id in &lost {
                if let Err(e) = cluster.restart(id) {
                    notes.push(format!("node {id} restart failed: {e}"));
                }
            }
        }
        FaultKind::SkewClock => {
            let id = current_leader(cluster).await;
            resolved = format!("node {id}, clock +1 h");
            match geiger_testkit::launcher::faketime::clock_shifted("+1h") {
                None => {
                    notes.push(
                        "skipped: libfaketime is not installed (apt-get install faketime)".into(),
                    );
                    healed_ms = ms(t0);
                }
                Some(env) => {
                    cluster.set_clock_env(id, env);
                    if let Err(e) = cluster.restart(id) {
                        notes.push(format!("restart with the wrong clock failed: {e}"));
                    }
                    // The fault is real only if the node sees the wrong
                    // time: it must say so (docs/METRICS.md).
                    let until = Instant::now() + hold;
                    let mut said = None;
                    while Instant::now() < until {
                        if said.is_none() && clock_unsynchronized(cluster, id).await {
                            said = Some(hold.saturating_sub(until - Instant::now()));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    match said {
                        Some(after) => notes.push(format!(
                            "node {id} reported its clock unsynchronized {} ms after its restart",
                            after.as_millis()
                        )),
                        None => {
                            unmet.push(format!("node {id} never reported its clock unsynchronized"))
                        }
                    }
                    healed_ms = ms(t0);
                    cluster.set_clock_env(id, Vec::new());
                    if let Err(e) = cluster.restart(id) {
                        notes.push(format!("restart with the true clock failed: {e}"));
                    }
                }
            }
        }
        FaultKind::StarveLeader => {
            let leader = current_leader(cluster).await;
            let term_before = term_of(cluster).await;
            resolved = format!("node {leader}");
            // Seeded by the fault's slot, so a run replays the same bursts.
            let mut rng = ChaCha8Rng::seed_from_u64(planned.at_ms);
            let until = Instant::now() + hold;
            let mut bursts = 0;
            while Instant::now() < until {
                cluster.pause(leader);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..=300))).await;
                cluster.resume(leader);
                bursts += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..=400))).await;
            }
            healed_ms = ms(t0);
            let term_after = term_of(cluster).await;
            let elected = term_before.is_none() || term_before != term_after;
            notes.push(format!(
                "{bursts} bursts; term {term_before:?} -> {term_after:?} ({})",
                if elected { "ELECTION" } else { "no election" }
            ));
            if elected {
                unmet.push("CPU starvation of 100-300 ms cost an election".into());
            }
        }
        FaultKind::PauseNode => {
            let Target::Node { id } = planned.target else {
                unreachable!("pause targets a node")
            };
            resolved = format!("node {id}");
            cluster.pause(id);
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            cluster.resume(id);
        }
        FaultKind::PartitionZone | FaultKind::PartitionCloud => {
            let (side, what): (Vec<u64>, String) = match &planned.target {
                Target::Zone { zone } => (
                    cluster
                        .nodes
                        .values()
                        .filter(|n| n.placement.zone == *zone)
                        .map(|n| n.placement.id)
                        .collect(),
                    format!("zone-{zone}"),
                ),
                Target::Cloud { name } => (
                    cluster
                        .nodes
                        .values()
                        .filter(|n| &n.placement.cloud == name)
                        .map(|n| n.placement.id)
                        .collect(),
                    name.clone(),
                ),
                other => unreachable!("a partition targets a zone or cloud, not {other:?}"),
            };
            let other: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !side.contains(id))
                .collect();
            resolved = format!("{what} (nodes {side:?} | {other:?})");
            cluster
                .proxy
                .partition(&node_endpoints(&side), &node_endpoints(&other));
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            cluster.proxy.heal_all();
        }
        FaultKind::IsolateLeader => {
            let leader = current_leader(cluster).await;
            let other: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
            resolved = format!("node {leader}");
            cluster
                .proxy
                .partition(&[Endpoint::Node(leader)], &node_endpoints(&other));
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            cluster.proxy.heal_all();
        }
        FaultKind::OneWayLeader => {
            let leader = current_leader(cluster).await;
            resolved = format!("node {leader} hears no one");
            for &id in ids.iter().filter(|&&id| id != leader) {
                cluster
                    .proxy
                    .cut_one_way(Endpoint::Node(id), Endpoint::Node(leader));
            }
            let cut_at = Instant::now();
            let until = cut_at + hold;
            // The others must notice the deaf leader and elect another: the
            // time until most of them name a different leader.
            let mut elected = None;
            while Instant::now() < until {
                if let Some(l) = cluster.leader().await {
                    if l != leader {
                        elected = Some((l, cut_at.elapsed()));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            match elected {
                Some((l, after)) => notes.push(format!(
                    "new leader {l} named {} ms after the cut",
                    after.as_millis()
                )),
                None => unmet.push("no new leader while the leader was deaf".into()),
            }
            tokio::time::sleep_until(until).await;
            healed_ms = ms(t0);
            cluster.proxy.heal_all();
        }
        FaultKind::SlowLinks | FaultKind::LossyLinks => {
            resolved = "every node-to-node link".into();
            let slow = if planned.kind == FaultKind::SlowLinks {
                LinkRule {
                    delay: Duration::from_millis(200),
                    ..LinkRule::default()
                }
            } else {
                LinkRule {
                    drop: 0.02,
                    ..LinkRule::default()
                }
            };
            for &a in &ids {
                for &b in &ids {
                    if a != b {
                        cluster
                            .proxy
                            .set_rule(Endpoint::Node(a), Endpoint::Node(b), slow);
                    }
                }
            }
            if planned.kind == FaultKind::SlowLinks {
                // Writes committing is not all: readiness (what a load
                // balancer asks) and link sessions need linearizable reads,
                // which a round trip above the heartbeat used to stop.
                let probe_at = hold * 3 / 4;
                tokio::time::sleep(probe_at).await;
                let live = cluster.live();
                let mut ready = 0;
                for &id in &live {
                    ready += usize::from(cluster.ready(id).await);
                }
                let said = format!(
                    "{ready} of {} nodes ready {:.1} s into the fault",
                    live.len(),
                    probe_at.as_secs_f64()
                );
                // A load balancer would drop every unready node while
                // writes still commit through them.
                if ready < live.len() {
                    unmet.push(said);
                } else {
                    notes.push(said);
                }
                tokio::time::sleep(hold.saturating_sub(probe_at)).await;
            } else {
                tokio::time::sleep(hold).await;
            }
            healed_ms = ms(t0);
            cluster.proxy.heal_all();
        }
        FaultKind::CutDeviceLink => {
            let Target::Device { index } = planned.target else {
                unreachable!("a device fault targets a device")
            };
            resolved = format!("device {index}");
            cluster
                .proxy
                .partition(&node_endpoints(&ids), &[Endpoint::Device(index)]);
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            cluster.proxy.heal_all();
        }
        FaultKind::StuckDevice => {
            let Target::Device { index } = planned.target else {
                unreachable!("a device fault targets a device")
            };
            resolved = format!("device {index}");
            // Two good chunks, then one byte value forever: the owner's
            // health tests must quarantine what follows.
            let args = vec!["--fault-stuck-after".to_string(), "8192".to_string()];
            let before = quarantined(cluster, index).await;
            if let Err(e) = cluster.restart_device(index, &args) {
                notes.push(format!("stuck restart failed: {e}"));
            }
            tokio::time::sleep(hold).await;
            healed_ms = ms(t0);
            // Whether the fault was exercised at all: stuck chunks must have
            // reached the owner and been quarantined.
            match (before, quarantined(cluster, index).await) {
                (Some(b), Some(a)) => notes.push(format!(
                    "{} chunks quarantined during the fault",
                    a.saturating_sub(b)
                )),
                _ => notes.push("quarantine count unavailable".into()),
            }
            if let Err(e) = cluster.restart_device(index, &[]) {
                notes.push(format!("healthy restart failed: {e}"));
            }
        }
        FaultKind::RollingRestart => {
            resolved = format!("nodes {ids:?} in turn");
            for &id in &ids {
                cluster.terminate(id, Duration::from_secs(5));
                if let Err(e) = cluster.restart(id) {
                    notes.push(format!("node {id} restart failed: {e}"));
                }
                if !cluster.wait_ready(id, Duration::from_secs(15)).await {
                    notes.push(format!("node {id} not ready within 15 s"));
                }
            }
            healed_ms = ms(t0);
        }
        FaultKind::RestartAll => {
            resolved = "every node".into();
            for &id in &ids {
                cluster.kill(id);
            }
            tokio::time::sleep(hold.min(Duration::from_secs(1))).await;
            healed_ms = ms(t0);
            for &id in &ids {
                if let Err(e) = cluster.restart(id) {
                    notes.push(format!("node {id} restart failed: {e}"));
                }
            }
        }
    }
    FaultEvent {
        planned: planned.clone(),
        resolved,
        start_ms,
        healed_ms,
        heal_done_ms: ms(t0),
        notes,
        unmet,
    }
}

/// Undoes anything still broken: links, pauses, stopped nodes, faulty devices.
/// Whether node `id`'s metrics say its clock is off the cluster's.
async fn clock_unsynchronized(cluster: &Cluster, id: u64) -> bool {
    let Ok(r) = cluster
        .http
        .get(format!("{}/metrics", cluster.url(id)))
        .timeout(Duration::from_secs(1))
        .send()
        .await
    else {
        return false;
    };
    r.text()
        .await
        .is_ok_and(|t| t.lines().any(|l| l == "geiger_clock_unsynchronized 1"))
}

pub fn heal_everything(cluster: &mut Cluster) -> Vec<String> {
    let mut notes = Vec::new();
    cluster.proxy.heal_all();
    for id in cluster.ids() {
        if cluster.is_paused(id) {
            cluster.resume(id);
        }
        if cluster.set_clock_env(id, Vec::new()) || !cluster.is_running(id) {
            if let Err(e) = cluster.restart(id) {
                notes.push(format!("node {id}: {e}"));
            }
        }
    }
    for index in 0..cluster.devices.len() {
        if !cluster.devices[index].fault_args.is_empty() || !cluster.device_is_running(index) {
            if let Err(e) = cluster.restart_device(index, &[]) {
                notes.push(format!("device {index}: {e}"));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::default_placement;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let p = default_placement();
        for profile in [Profile::Ci, Profile::Soak] {
            assert_eq!(schedule(profile, 42, &p, 2), schedule(profile, 42, &p, 2));
        }
    }

    #[test]
    fn different_seeds_give_different_schedules() {
        let p = default_placement();
        let a = schedule(Profile::Ci, 1, &p, 2);
        let b = schedule(Profile::Ci, 2, &p, 2);
        assert_ne!(a.faults, b.faults);
    }

    #[test]
    fn the_ci_profile_runs_every_core_fault_once_in_under_three_minutes() {
        let s = schedule(Profile::Ci, 7, &default_placement(), 2);
        let mut kinds: Vec<FaultKind> = s.faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        let mut core = FaultKind::CORE.to_vec();
        core.sort();
        assert_eq!(kinds, core);
        assert!(
            (100_000..=200_000).contains(&s.duration_ms),
            "{}",
            s.duration_ms
        );
        // One fault at a time: each heals before the next starts.
        for w in s.faults.windows(2) {
            assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms);
        }
    }

    #[test]
    fn the_soak_profile_lasts_thirty_minutes_and_runs_every_kind() {
        let s = schedule(Profile::Soak, 7, &default_placement(), 2);
        assert!(s.duration_ms >= 30 * 60_000);
        for kind in FaultKind::CORE.iter().chain(FaultKind::EXTRA.iter()) {
            assert!(s.faults.iter().any(|f| f.kind == *kind), "{kind:?} missing");
        }
        assert!(s.faults.last().unwrap().at_ms + 10_000 < s.duration_ms);
    }

    #[test]
    fn targets_exist_in_the_placement() {
        let p = default_placement();
        let s = schedule(Profile::Soak, 99, &p, 2);
        for f in &s.faults {
            match &f.target {
                Target::Node { id } => assert!(p.iter().any(|n| n.id == *id)),
                Target::Zone { zone } => assert!(p.iter().any(|n| n.zone == *zone)),
                Target::Cloud { name } => assert!(p.iter().any(|n| &n.cloud == name)),
                Target::Device { index } => assert!(*index < 2),
                Target::Leader | Target::Everything => {}
            }
        }
    }
}
