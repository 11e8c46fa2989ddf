//! HardwareSession: one per link this node owns. And the LinkWatcher that
//! starts and stops them as ownership moves.
//!
//! The **LinkWatcher** reads the replicated leases every tick and keeps the
//! supervisor's `link:<device>` children equal to the links this node holds
//! a lease on (replacing a child whose epoch changed).
//!
//! A **HardwareSession** drives one link under one lease epoch:
//!
//! 1. it reads the device's registered address and key and the highest
//!    sequence the ledger has accounted for (after a linearizable barrier,
//!    so a lagging replica does not ask for chunks twice), and connects with
//!    its epoch (`geiger_hardware::LinkSession`);
//! 2. it appends good chunks in batches (`write_batch`, one Raft entry),
//!    quarantines failing ones (`QuarantineChunk`: recorded, never used),
//!    and records gaps (`SkipChunks`), all under its epoch;
//! 3. it renews its lease every `renew` while the link is healthy (or was,
//!    or the session is still starting, within `2 × lease`), so an owner
//!    whose device is unreachable or stuck lets the lease lapse and the
//!    controller tries another node;
//! 4. it stops for good (idles until the watcher stops it) when the ledger
//!    rejects it as stale, its lease expired, or the device has seen a newer
//!    epoch; other failures reconnect with jittered backoff;
//! 5. pool reserve: above `pool_high_water_bytes` pooled for its device it
//!    stops pulling chunks (the link's credit flow then stops the device),
//!    and resumes below `pool_low_water_bytes`.
//!
//! Duplicates: re-sent chunks (after a reconnect or an owner change) are
//! byte-identical; the ledger refuses a sequence at or below the device's
//! last one (`SequenceGap` with `got < expected`) and the session drops
//! those silently. So (device, seq) is accounted exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use geiger_control_plane::{Command, ControlPlane, Error as LedgerError, Outcome, Rejection};
use geiger_hardware::{
    Backoff, ChunkOutcome, CloseReason, LinkConfig, LinkError, LinkEvent, LinkSession,
    QuarantineReason,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::supervisor::{ChildSpec, SpawnFuture, SupervisorMsg};
use crate::config::NodeConfig;
use crate::metrics::{
    DeviceLabels, DeviceOutcomeLabels, DeviceReasonLabels, DeviceTestLabels, NodeMetrics,
};

/// Most commands (chunks) in one appended batch.
const MAX_BATCH: usize = 32;
/// How often the pool depth is re-read while pulling or paused.
const POOL_CHECK: Duration = Duration::from_millis(200);

/// Lease timing and the pool reserve, from the node's configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub node_id: u64,
    pub lease: Duration,
    pub renew: Duration,
    pub high_water: u64,
    pub low_water: u64,
    /// Watcher tick.
    pub tick: Duration,
}

impl LinkSettings {
    pub fn from_config(config: &NodeConfig) -> Self {
        let mut t = match config.raft.profile.as_str() {
            "cross_cloud" => geiger_control_plane::Timeouts::cross_cloud(),
            _ => geiger_control_plane::Timeouts::lan(),
        };
        if let Some(ms) = config.raft.lease_ms {
            t.lease = Duration::from_millis(ms);
        }
        LinkSettings {
            node_id: config.node_id,
            lease: t.lease,
            renew: t.lease_renew.min(t.lease / 2),
            high_water: config.hardware.pool_high_water_bytes,
            low_water: config.hardware.pool_low_water_bytes,
            tick: Duration::from_millis(250),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn child_name(device: &str) -> String {
    format!("link:{device}")
}

// ---- the watcher ----------------------------------------------------------

pub struct LinkWatcher {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
    pub settings: LinkSettings,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct WatcherState {
    /// device → epoch of the session this watcher started.
    running: BTreeMap<String, u64>,
}

pub enum WatcherMsg {
    Tick,
}

impl LinkWatcher {
    fn reconcile(&self, state: &mut WatcherState) -> Result<(), ActorProcessingErr> {
        let me = self.settings.node_id;
        let now = now_ms();
        let tolerance = self.settings.lease.as_millis() as u64;
        let links = self.ledger.links()?;
        let registered: BTreeSet<&str> = links.iter().map(|l| l.device.as_str()).collect();
        let wanted: BTreeMap<String, u64> = self
            .ledger
            .leases()?
            .into_iter()
            .filter(|l| {
                l.owner == me
                    && registered.contains(l.device.as_str())
                    && now <= l.expires_at_ms.saturating_add(tolerance)
            })
            .map(|l| (l.device, l.epoch))
            .collect();
        for (device, epoch) in &wanted {
            if state.running.get(device) == Some(epoch) {
                continue;
            }
            tracing::info!(%device, epoch, "this node owns the link: starting its session");
            let spec = Arc::new(HardwareSessionSpec {
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.clone(),
                device: device.clone(),
                epoch: *epoch,
            });
            if self
                .supervisor
                .cast(SupervisorMsg::Start {
                    name: child_name(device),
                    spec,
                })
                .is_err()
            {
                return Err("the supervisor is gone".into());
            }
            state.running.insert(device.clone(), *epoch);
        }
        let gone: Vec<String> = state
            .running
            .keys()
            .filter(|d| !wanted.contains_key(*d))
            .cloned()
            .collect();
        for device in gone {
            tracing::info!(%device, "this node no longer owns the link: stopping its session");
            if self
                .supervisor
                .cast(SupervisorMsg::Stop {
                    name: child_name(&device),
                })
                .is_err()
            {
                return Err("the supervisor is gone".into());
            }
            state.running.remove(&device);
        }
        // `geiger_link_up` is exported by every node for every link: 0 where
        // no session runs (the session sets its own).
        for link in &links {
            if !state.running.contains_key(&link.device) {
                self.metrics
                    .link_up
                    .get_or_create(&DeviceLabels {
                        device: link.device.clone(),
                    })
                    .set(0);
            }
        }
        Ok(())
    }
}

impl Actor for LinkWatcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<WatcherMsg>,
        _: (),
    ) -> Result<WatcherState, ActorProcessingErr> {
        myself.send_interval(self.settings.tick, || WatcherMsg::Tick);
        Ok(WatcherState {
            running: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WatcherMsg>,
        WatcherMsg::Tick: WatcherMsg,
        state: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = self.reconcile(state) {
            tracing::warn!(error = %e, "link watcher could not read the ledger");
        }
        Ok(())
    }
}

pub struct LinkWatcherSpec {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
    pub settings: LinkSettings,
}

impl ChildSpec for LinkWatcherSpec {
    fn kind(&self) -> &'static str {
        "hardware_session"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = LinkWatcher {
            ledger: self.ledger.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            supervisor: supervisor.clone().into(),
        };
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            Ok(r.get_cell())
        })
    }
}

// ---- the session ----------------------------------------------------------

pub struct HardwareSessionSpec {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
    pub settings: LinkSettings,
    pub device: String,
    pub epoch: u64,
}

impl ChildSpec for HardwareSessionSpec {
    fn kind(&self) -> &'static str {
        "hardware_session"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = HardwareSession {
            ctx: Ctx {
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.clone(),
                device: self.device.clone(),
                epoch: self.epoch,
            },
        };
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            Ok(r.get_cell())
        })
    }
}

pub struct HardwareSession {
    ctx: Ctx,
}

pub enum SessionMsg {
    /// The driving task ended: `Err` is a failure the supervisor restarts.
    Ended(Result<Ended, String>),
}

pub struct SessionState {
    task: JoinHandle<()>,
    renewer: JoinHandle<()>,
}

impl Actor for HardwareSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        _: (),
    ) -> Result<SessionState, ActorProcessingErr> {
        let (health_tx, health_rx) = watch::channel(Liveness::Starting(Instant::now()));
        let (lost_tx, lost_rx) = watch::channel(false);
        let ctx = self.ctx.clone();
        let renewer = tokio::spawn(ctx.clone().renew_loop(health_rx, lost_tx));
        let task = tokio::spawn(async move {
            let result = ctx.run(health_tx, lost_rx).await;
            let _ = myself.cast(SessionMsg::Ended(result));
        });
        Ok(SessionState { task, renewer })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let SessionMsg::Ended(result) = message;
        state.renewer.abort();
        self.ctx.set_up(false);
        match result {
            // Idle until the watcher stops this child: restarting it would
            // only be refused again.
            Ok(ended) => {
                tracing::info!(device = %self.ctx.device, epoch = self.ctx.epoch, ?ended, "link session over for this lease");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state.task.abort();
        state.renewer.abort();
        self.ctx.set_up(false);
        Ok(())
    }
}

/// Why a session stopped for good under its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The ledger refused this epoch (a newer owner) or the lease ran out.
    LostLease(String),
    /// The device has seen a newer epoch.
    DeviceFenced { newest: u64 },
    /// The link was removed from the registry.
    Unregistered,
}

/// What the renewer needs to know about the link.
#[derive(Debug, Clone, Copy)]
enum Liveness {
    /// Connecting for the first time since this instant.
    Starting(Instant),
    /// Connected and healthy now.
    Healthy,
    /// Not healthy (disconnected, unhealthy) since this instant.
    Unhealthy(Instant),
}

#[derive(Clone)]
struct Ctx {
    ledger: ControlPlane,
    metrics: Arc<NodeMetrics>,
    settings: LinkSettings,
    device: String,
    epoch: u64,
}

/// How a connected session ended.
enum SessionEnd {
    Reconnect(String),
    Stop(Ended),
}

impl Ctx {
    fn labels(&self) -> DeviceLabels {
        DeviceLabels {
            device: self.device.clone(),
        }
    }

    fn set_up(&self, up: bool) {
        self.metrics
            .link_up
            .get_or_create(&self.labels())
            .set(i64::from(up));
    }

    fn session_outcome(&self, outcome: &str) {
        self.metrics
            .link_sessions
            .get_or_create(&DeviceOutcomeLabels {
                device: self.device.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Renews the lease every `renew` while the link is (or may soon be)
    /// healthy. A refused renewal means the lease is lost: `lost` turns true.
    async fn renew_loop(self, health: watch::Receiver<Liveness>, lost: watch::Sender<bool>) {
        let grace = self.settings.lease * 2;
        let mut interval = tokio::time::interval(self.settings.renew);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let keep = match *health.borrow() {
                Liveness::Healthy => true,
                Liveness::Starting(since) | Liveness::Unhealthy(since) => since.elapsed() < grace,
            };
            if !keep {
                tracing::warn!(device = %self.device, epoch = self.epoch, "link not healthy: letting the lease lapse");
                continue;
            }
            let renew = Command::RenewLease {
                device: self.device.clone(),
                owner: self.settings.node_id,
                epoch: self.epoch,
                duration_ms: self.settings.lease.as_millis() as u64,
            };
            match self.ledger.write(renew).await {
                Ok(Outcome::Lease(_)) => {}
                Ok(Outcome::Rejected(r)) => {
                    tracing::warn!(device = %self.device, epoch = self.epoch, rejection = %r, "lease renewal refused: the lease is lost");
                    let _ = lost.send(true);
                    return;
                }
                Ok(other) => tracing::warn!(?other, "unexpected renewal outcome"),
                Err(e) => {
                    tracing::warn!(device = %self.device, error = %e, "lease renewal failed; retrying")
                }
            }
        }
    }

    /// The lease is still this session's (owner and epoch), as far as this
    /// replica knows.
    fn still_ours(&self) -> Result<Option<Ended>, LedgerError> {
        if self.ledger.link(&self.device)?.is_none() {
            return Ok(Some(Ended::Unregistered));
        }
        let lease = self
            .ledger
            .leases()?
            .into_iter()
            .find(|l| l.device == self.device);
        Ok(match lease {
            Some(l) if l.owner == self.settings.node_id && l.epoch == self.epoch => None,
            Some(l) => Some(Ended::LostLease(format!(
                "the lease is now node {}'s, epoch {}",
                l.owner, l.epoch
            ))),
            None => Some(Ended::LostLease("no lease".into())),
        })
    }

    /// Connects and drives the link until the lease is lost.
    async fn run(
        self,
        health: watch::Sender<Liveness>,
        mut lost: watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            if *lost.borrow() {
                return Ok(Ended::LostLease("renewal refused".into()));
            }
            match self.still_ours() {
                Ok(Some(ended)) => return Ok(ended),
                Ok(None) => {}
                Err(e) => tracing::warn!(device = %self.device, error = %e, "ledger read failed"),
            }
            let attempt = self.connect().await;
            let end = match attempt {
                Ok(session) => {
                    self.session_outcome("established");
                    backoff.reset();
                    self.drive(session, &health, &mut lost).await
                }
                Err(ConnectError::Fenced(newest)) => {
                    self.session_outcome("refused_stale_epoch");
                    return Ok(Ended::DeviceFenced { newest });
                }
                Err(ConnectError::Other(why)) => {
                    self.session_outcome("failed");
                    SessionEnd::Reconnect(why)
                }
            };
            self.set_up(false);
            health.send_if_modified(|h| {
                if matches!(h, Liveness::Healthy) {
                    *h = Liveness::Unhealthy(Instant::now());
                    true
                } else {
                    false
                }
            });
            match end {
                SessionEnd::Stop(ended) => return Ok(ended),
                SessionEnd::Reconnect(why) => {
                    let delay = backoff.next_delay();
                    tracing::info!(device = %self.device, epoch = self.epoch, %why, delay_ms = delay.as_millis() as u64, "link session ended; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = lost.changed() => {}
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<LinkSession, ConnectError> {
        let other = |e: &dyn std::fmt::Display| ConnectError::Other(e.to_string());
        let link = self
            .ledger
            .link(&self.device)
            .map_err(|e| other(&e))?
            .ok_or_else(|| ConnectError::Other("the link is not registered".into()))?;
        let key = VerifyingKey::from_bytes(&link.public_key).map_err(|e| other(&e))?;
        // Everything the cluster has accounted for, not just what this
        // replica has applied: otherwise the device re-sends chunks the
        // ledger already holds (harmless, dropped, but wasted).
        self.ledger
            .linearizable_barrier()
            .await
            .map_err(|e| other(&e))?;
        let resume_after = self
            .ledger
            .pool()
            .map_err(|e| other(&e))?
            .1
            .into_iter()
            .find(|d| d.device == self.device)
            .and_then(|d| d.last_seq);
        let mut config = LinkConfig::new(link.address.clone(), self.epoch, key);
        config.resume_after = resume_after;
        match LinkSession::connect(config).await {
            Ok(s) => {
                tracing::info!(device = %self.device, epoch = self.epoch, address = %link.address, ?resume_after, first_seq = s.info().first_seq, "link session established");
                Ok(s)
            }
            Err(LinkError::StaleEpoch { newest, .. }) => Err(ConnectError::Fenced(newest)),
            Err(e) => Err(other(&e)),
        }
    }

    fn pooled_bytes(&self) -> Option<u64> {
        let (_, devices) = self.ledger.pool().ok()?;
        Some(
            devices
                .into_iter()
                .find(|d| d.device == self.device)
                .map_or(0, |d| d.pooled_bytes),
        )
    }

    async fn drive(
        &self,
        mut session: LinkSession,
        health: &watch::Sender<Liveness>,
        lost: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let state = session.state();
        let mut received = 0u64;
        let mut paused = false;
        let mut last_pool_check = Instant::now() - POOL_CHECK;
        loop {
            // Link state → metrics and the renewer.
            {
                let s = state.borrow();
                let up = s.connected && s.healthy;
                self.set_up(up);
                health.send_if_modified(|h| match (up, *h) {
                    (true, Liveness::Healthy) => false,
                    (true, _) => {
                        *h = Liveness::Healthy;
                        true
                    }
                    (false, Liveness::Healthy) => {
                        *h = Liveness::Unhealthy(Instant::now());
                        true
                    }
                    (false, _) => false,
                });
                if s.received_bytes > received {
                    self.metrics
                        .link_received_bytes
                        .get_or_create(&self.labels())
                        .inc_by(s.received_bytes - received);
                    received = s.received_bytes;
                }
            }
            // The pool reserve.
            if last_pool_check.elapsed() >= POOL_CHECK {
                last_pool_check = Instant::now();
                if let Some(pooled) = self.pooled_bytes() {
                    if !paused && pooled >= self.settings.high_water {
                        tracing::info!(device = %self.device, pooled, "pool above its high-water mark: pausing the link");
                        paused = true;
                    } else if paused && pooled < self.settings.low_water {
                        tracing::info!(device = %self.device, pooled, "pool below its low-water mark: resuming the link");
                        paused = false;
                    }
                }
            }
            if paused {
                // Not pulling, so a closed session would go unnoticed until
                // the pool drains: reconnect now, to stay healthy.
                if !state.borrow().connected {
                    return SessionEnd::Reconnect("session closed while paused".into());
                }
                tokio::select! {
                    _ = tokio::time::sleep(POOL_CHECK) => continue,
                    _ = lost.changed() => return SessionEnd::Stop(Ended::LostLease("renewal refused".into())),
                }
            }
            let first = tokio::select! {
                ev = session.next_event() => ev,
                _ = tokio::time::sleep(POOL_CHECK) => continue,
                _ = lost.changed() => return SessionEnd::Stop(Ended::LostLease("renewal refused".into())),
            };
            let Some(first) = first else {
                return SessionEnd::Reconnect("session ended".into());
            };
            // Take whatever else is already queued, up to a batch.
            let mut events = vec![first];
            while events.len() < MAX_BATCH && !matches!(events.last(), Some(LinkEvent::Closed(_))) {
                match tokio::time::timeout(Duration::ZERO, session.next_event()).await {
                    Ok(Some(ev)) => events.push(ev),
                    _ => break,
                }
            }
            let mut closed = None;
            let mut commands = Vec::with_capacity(events.len());
            for ev in events {
                match ev {
                    LinkEvent::Chunk(ChunkOutcome::Good(c)) => {
                        commands.push(Command::AppendSignedEntropy {
                            device: self.device.clone(),
                            epoch: self.epoch,
                            seq: c.seq,
                            timestamp_ms: c.timestamp_ms,
                            signature: c.signature.to_vec(),
                            bytes: c.bytes,
                        })
                    }
                    LinkEvent::Chunk(ChunkOutcome::Quarantine(c, reason)) => {
                        self.count_quarantine(&reason);
                        commands.push(Command::QuarantineChunk {
                            device: self.device.clone(),
                            epoch: self.epoch,
                            seq: c.seq,
                            length: c.bytes.len() as u32,
                            sha256: c.sha256,
                            reason: reason_text(&reason),
                        })
                    }
                    LinkEvent::Gap { from, to } => commands.push(Command::SkipChunks {
                        device: self.device.clone(),
                        epoch: self.epoch,
                        from,
                        to,
                    }),
                    LinkEvent::Closed(reason) => closed = Some(reason),
                }
            }
            if !commands.is_empty() {
                if let Some(end) = self.append(commands).await {
                    return end;
                }
            }
            if let Some(reason) = closed {
                // A chunk that failed its signature ends the session and
                // never reaches the ledger (its sequence number is
                // unauthenticated): counted here only.
                if matches!(reason, CloseReason::BadSignature { .. }) {
                    tracing::warn!(device = %self.device, ?reason, "link session closed on a bad chunk");
                    self.metrics
                        .chunks_quarantined
                        .get_or_create(&DeviceReasonLabels {
                            device: self.device.clone(),
                            reason: "signature".to_string(),
                        })
                        .inc();
                }
                return match reason {
                    CloseReason::Superseded { by } if by > self.epoch => {
                        SessionEnd::Stop(Ended::DeviceFenced { newest: by })
                    }
                    other => SessionEnd::Reconnect(format!("{other:?}")),
                };
            }
        }
    }

    fn count_quarantine(&self, reason: &QuarantineReason) {
        self.metrics
            .chunks_quarantined
            .get_or_create(&DeviceReasonLabels {
                device: self.device.clone(),
                reason: reason.metric_reason().to_string(),
            })
            .inc();
        if let QuarantineReason::Health(f) = reason {
            self.metrics
                .health_test_failures
                .get_or_create(&DeviceTestLabels {
                    device: self.device.clone(),
                    test: f.test_name().to_string(),
                })
                .inc();
        }
    }

    /// Commits one batch; `Some` when the session must end.
    async fn append(&self, commands: Vec<Command>) -> Option<SessionEnd> {
        let outcomes = match self.ledger.write_batch(commands).await {
            Ok(o) => o,
            // Unknown whether it was committed: reconnect, resuming after
            // whatever the ledger holds; duplicates are dropped.
            Err(e) => return Some(SessionEnd::Reconnect(format!("append failed: {e}"))),
        };
        let mut appended = 0u64;
        let mut end = None;
        for outcome in outcomes {
            match outcome {
                Outcome::EntropyAppended { .. } => appended += 1,
                Outcome::ChunkQuarantined | Outcome::Done => {}
                Outcome::Rejected(Rejection::SequenceGap { expected, got, .. })
                    if got < expected =>
                {
                    tracing::debug!(device = %self.device, seq = got, "duplicate chunk dropped");
                }
                Outcome::Rejected(r @ Rejection::SequenceGap { .. }) => {
                    end.get_or_insert(SessionEnd::Reconnect(format!(
                        "the ledger expects another sequence: {r}"
                    )));
                }
                Outcome::Rejected(
                    r @ (Rejection::StaleEpoch { .. }
                    | Rejection::LeaseExpired(_)
                    | Rejection::Forbidden(_)),
                ) => {
                    tracing::warn!(device = %self.device, epoch = self.epoch, rejection = %r, "appends refused: this node no longer owns the link");
                    end = Some(SessionEnd::Stop(Ended::LostLease(r.to_string())));
                    break;
                }
                other => {
                    tracing::warn!(device = %self.device, ?other, "unexpected append outcome");
                }
            }
        }
        if appended > 0 {
            self.metrics
                .chunks_appended
                .get_or_create(&self.labels())
                .inc_by(appended);
        }
        end
    }
}

enum ConnectError {
    Fenced(u64),
    Other(String),
}

/// The ledger's reason text: at most 128 bytes, no control characters.
fn reason_text(reason: &QuarantineReason) -> String {
    let mut text = format!("{}: {reason}", reason.metric_reason());
    text.retain(|c| !c.is_control());
    if text.len() > 128 {
        let mut cut = 128;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use geiger_hardware::HealthFailure;

    #[test]
    fn a_quarantine_reason_fits_the_ledgers_limits() {
        let r = QuarantineReason::Health(HealthFailure::AdaptiveProportion {
            value: 0xff,
            count: 13,
            window: 512,
            cutoff: 13,
        });
        let text = reason_text(&r);
        assert!(text.starts_with("health_test: health test failed: adaptive proportion"));
        assert!(text.len() <= 128 && !text.chars().any(char::is_control));
    }

    #[test]
    fn sessions_are_named_after_their_device() {
        assert_eq!(child_name("dev_ab"), "link:dev_ab");
    }
}
