//! HardwareSession: drives one link under one lease epoch.
//!
//! 1. It reads the device's registered address and key and the highest
//!    sequence the ledger has accounted for (after a linearizable barrier,
//!    so a lagging replica does not ask for chunks twice), and connects with
//!    its epoch (`geiger_hardware::LinkSession`).
//! 2. It takes whatever events the link has queued (up to a batch), has
//!    [`super::ingest`] translate them into ledger commands, and commits
//!    them as one Raft entry (`write_batch`).
//! 3. Beside it, [`super::lease`] renews the lease while the link is healthy.
//! 4. It stops for good (idles until the watcher stops it) when the ledger
//!    rejects it as stale, its lease expired, or the device has seen a newer
//!    epoch; other failures reconnect with jittered backoff.
//! 5. Pool reserve: above `pool_high_water_bytes` pooled for its device it
//!    stops pulling chunks (the link's credit flow then stops the device),
//!    and resumes below `pool_low_water_bytes`.
//!
//! Duplicates: re-sent chunks (after a reconnect or an owner change) are
//! byte-identical; the ledger refuses a sequence at or below the device's
//! last one and the session drops those silently. So (device, seq) is
//! accounted exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use geiger_control_plane::{Command, ControlPlane};
use geiger_hardware::{
    Backoff, CloseReason, LinkConfig, LinkError, LinkEvent, LinkSession, QuarantineReason,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ingest::{self, Verdict};
use super::lease::Liveness;
use super::settings::LinkSettings;
use crate::actors::supervisor::{spawn_linked, ChildSpec, SpawnFuture};
use crate::metrics::{
    DeviceLabels, DeviceOutcomeLabels, DeviceReasonLabels, DeviceTestLabels, NodeMetrics,
};

/// Most commands (chunks) in one appended batch.
const MAX_BATCH: usize = 32;
/// How often the pool depth is re-read while pulling or paused.
const POOL_CHECK: Duration = Duration::from_millis(200);
/// How long an owner gathers members' attestations of its lease before it
/// says Hello with what it has (a member that has not applied the lease
/// yet is asked again meanwhile).
const ATTESTATION_WAIT: Duration = Duration::from_secs(3);

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
            ctx: SessionCtx {
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.clone(),
                device: self.device.clone(),
                epoch: self.epoch,
                attestations_wanted: Arc::default(),
            },
        };
        spawn_linked(actor, supervisor)
    }
}

pub struct HardwareSession {
    ctx: SessionCtx,
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

/// What one session needs, shared by its driving task and its renewer.
#[derive(Clone)]
pub(super) struct SessionCtx {
    pub(super) ledger: ControlPlane,
    metrics: Arc<NodeMetrics>,
    pub(super) settings: LinkSettings,
    pub(super) device: String,
    pub(super) epoch: u64,
    /// Members' attestations the device last asked for (0: a majority of
    /// the cluster), so the next attempt gathers enough.
    attestations_wanted: Arc<AtomicUsize>,
}

/// Drops the device's source report when the session that received it
/// ends, however it ends.
struct ForgetSourceReport<'a>(&'a SessionCtx);

impl Drop for ForgetSourceReport<'_> {
    fn drop(&mut self) {
        self.0.metrics.sources.forget(&self.0.device);
    }
}

/// How a connected session ended.
enum SessionEnd {
    Reconnect(String),
    Stop(Ended),
}

impl SessionCtx {
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
                Err(ConnectError::Refused(outcome, why)) => {
                    self.session_outcome(outcome);
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
        let mut config = LinkConfig::new(
            link.address.clone(),
            self.epoch,
            key,
            self.settings.link_key.clone(),
        );
        config.resume_after = resume_after;
        // The device wants a majority of the members it trusts to vouch
        // that the ledger gave this node the lease at this epoch.
        let peers = self
            .ledger
            .lease_attestations(
                &self.device,
                self.epoch,
                self.settings.link_key.verifying_key().to_bytes(),
                self.attestations_wanted.load(Ordering::Relaxed),
                ATTESTATION_WAIT,
            )
            .await;
        config.attestations.extend(peers);
        match LinkSession::connect(config).await {
            Ok(s) => {
                tracing::info!(device = %self.device, epoch = self.epoch, address = %link.address, ?resume_after, first_seq = s.info().first_seq, "link session established");
                Ok(s)
            }
            Err(LinkError::StaleEpoch { newest, .. }) => Err(ConnectError::Fenced(newest)),
            Err(e @ LinkError::WrongDevice { .. }) => {
                tracing::error!(device = %self.device, address = %link.address, error = %e, "refused the device: it did not present its registered key");
                Err(ConnectError::Refused(
                    "refused_wrong_device_key",
                    e.to_string(),
                ))
            }
            Err(e @ LinkError::Handshake { .. }) => {
                tracing::warn!(device = %self.device, address = %link.address, error = %e, "the device link's TLS handshake failed (is this node's link key in the device's trusted list?)");
                Err(ConnectError::Refused("tls_handshake_failed", e.to_string()))
            }
            Err(e @ LinkError::LeaseUnproven { needed, .. }) => {
                tracing::warn!(device = %self.device, epoch = self.epoch, error = %e, "the device wants more members to attest this lease; asking again");
                self.attestations_wanted.store(
                    usize::try_from(needed).unwrap_or(usize::MAX),
                    Ordering::Relaxed,
                );
                Err(ConnectError::Refused(
                    "refused_lease_unproven",
                    e.to_string(),
                ))
            }
            Err(e @ LinkError::EpochTooFar { .. }) => {
                tracing::error!(device = %self.device, error = %e, "the device refuses this lease's epoch as too far ahead; an operator must reset its epoch (docs/LINK.md)");
                Err(ConnectError::Refused(
                    "refused_epoch_too_far",
                    e.to_string(),
                ))
            }
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
        let mut source: Option<geiger_hardware::SourceReport> = None;
        let _forget = ForgetSourceReport(self);
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
                if s.source != source {
                    if let Some(report) = s.source {
                        self.metrics.sources.record(&self.device, report);
                    }
                    source = s.source;
                }
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
            let ingest::Translation {
                commands,
                quarantined,
                closed,
            } = ingest::translate(&self.device, self.epoch, events);
            for reason in &quarantined {
                self.count_quarantine(reason);
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
                return match ingest::fenced_by(&reason, self.epoch) {
                    Some(newest) => SessionEnd::Stop(Ended::DeviceFenced { newest }),
                    None => SessionEnd::Reconnect(format!("{reason:?}")),
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
        let (appended, verdict) = ingest::judge(&outcomes);
        if appended > 0 {
            self.metrics
                .chunks_appended
                .get_or_create(&self.labels())
                .inc_by(appended);
        }
        match verdict {
            Verdict::Continue => None,
            Verdict::Reconnect(why) => Some(SessionEnd::Reconnect(why)),
            Verdict::LostLease(why) => {
                tracing::warn!(device = %self.device, epoch = self.epoch, rejection = %why, "appends refused: this node no longer owns the link");
                Some(SessionEnd::Stop(Ended::LostLease(why)))
            }
        }
    }
}

enum ConnectError {
    Fenced(u64),
    /// Refused for a reason counted under its own outcome label.
    Refused(&'static str, String),
    Other(String),
}
