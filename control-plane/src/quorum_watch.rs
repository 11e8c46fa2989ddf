//! A leader that can send but not hear steps aside; a node without a
//! reachable quorum refuses writes at once.
//!
//! With a one-way cut (the leader's messages arrive, nothing comes back)
//! the followers keep hearing heartbeats and never stand for election,
//! while the leader commits nothing: openraft 0.9 does not step down on its
//! own. It does report, on the leader, how long ago a quorum last
//! acknowledged it (`RaftMetrics::millis_since_quorum_ack`). This module
//! watches that figure:
//!
//! - past the step-aside bound (the election timeout's upper end,
//!   [`crate::Timeouts::election_max`]) the leader *goes silent*: its
//!   network refuses to send appends or heartbeats, so the followers' election
//!   timers run out and they elect among themselves. Dropping messages is
//!   always safe in Raft; the silent node still answers votes, and it
//!   speaks again as soon as it is no longer the leader of that term (it
//!   hears the new leader, or it loses or wins a later election);
//! - meanwhile writes to it are refused at once ([`QuorumWatch::write_refusal`])
//!   with a retryable error, instead of waiting for a commit that cannot
//!   come. So are writes on a node that has known no leader for two
//!   election timeouts (a minority side of a partition).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::clock_watch::ClockWatch;
use crate::types::{NodeId, Raft};

/// How every refusal for want of a quorum begins (a forwarded write's
/// failure carries it back to the follower, which then answers at once).
pub(crate) const NO_QUORUM: &str = "no quorum:";

/// Shared by the network (which goes silent) and the write path.
#[derive(Debug)]
pub(crate) struct QuorumWatch {
    /// Longest time without a quorum's acknowledgement before the leader
    /// steps aside.
    step_aside_after: Duration,
    /// Longest time without any known leader before writes are refused at
    /// once.
    leaderless_refuse_after: Duration,
    silent: AtomicBool,
    /// The term in which this node went silent.
    silent_term: AtomicU64,
    leaderless_since: Mutex<Option<Instant>>,
    /// When an append (or heartbeat) last arrived from a leader. A
    /// follower keeps naming its last leader after that one dies (until it
    /// votes in a later term), so this, not `current_leader`, says how long
    /// it has gone without one.
    last_append: Mutex<Instant>,
    /// The term this node leads and since when.
    leading_since: Mutex<Option<(u64, Instant)>>,
    /// This node's clock against the cluster's: an unsynchronized leader
    /// steps aside as one without a quorum does.
    pub(crate) clock: std::sync::Arc<ClockWatch>,
}

impl QuorumWatch {
    pub(crate) fn new(election_max: Duration, clock: std::sync::Arc<ClockWatch>) -> Self {
        QuorumWatch {
            clock,
            step_aside_after: election_max,
            leaderless_refuse_after: election_max * 4,
            silent: AtomicBool::new(false),
            silent_term: AtomicU64::new(0),
            leaderless_since: Mutex::new(None),
            leading_since: Mutex::new(None),
            last_append: Mutex::new(Instant::now()),
        }
    }

    /// Whether this node, as leader, has stepped aside: its appends and
    /// heartbeats are not sent.
    pub(crate) fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Acquire)
    }

    /// An append (or heartbeat) arrived from a leader.
    pub(crate) fn heard_append(&self) {
        *self.last_append.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long since an append (or heartbeat) last arrived from a leader.
    pub(crate) fn since_last_append(&self) -> Duration {
        self.last_append
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Whether this node may stand for election. One whose clock is wrong
    /// may not, except as a last resort: when no leader has been heard for
    /// as long as writes take to be refused on a leaderless node. It may hold entries that no
    /// good node has (a leader commits with one follower's acknowledgement,
    /// and that follower may be the wrong one), and then no good node can
    /// win a vote until it has led long enough to hand them over; as a
    /// leader it stamps nothing and steps aside once a follower has them
    /// ([`QuorumWatch::observe`]).
    pub(crate) fn may_stand_for_election(&self) -> bool {
        if !self.clock.standing().unsynchronized {
            return true;
        }
        self.since_last_append() > self.leaderless_refuse_after
    }

    /// Why a write must be refused now, if it must: the leader has had no
    /// quorum acknowledgement for too long, or no leader has been known for
    /// too long.
    pub(crate) fn write_refusal(&self, raft: &Raft, me: NodeId) -> Option<String> {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader == Some(me) {
            let clock = self.clock.standing();
            if clock.unsynchronized {
                return Some(format!(
                    "{NO_QUORUM} this leader's clock is off the cluster's by {} ms",
                    clock.offset_ms.unwrap_or_default()
                ));
            }
            if self.is_silent() {
                return Some(format!("{NO_QUORUM} this leader has stepped aside"));
            }
            if let Some(age) = m.millis_since_quorum_ack {
                if Duration::from_millis(age) > self.step_aside_after {
                    return Some(format!("{NO_QUORUM} last acknowledged {age} ms ago"));
                }
            }
            return None;
        }
        if m.current_leader.is_none() {
            let since = *self
                .leaderless_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(since) = since {
                let for_how_long = since.elapsed();
                if for_how_long > self.leaderless_refuse_after {
                    return Some(format!(
                        "{NO_QUORUM} no leader known for {} ms",
                        for_how_long.as_millis()
                    ));
                }
            }
        }
        None
    }

    /// One look at the metrics: go silent, speak again, note leaderlessness.
    fn observe(&self, raft: &Raft, me: NodeId) {
        let m = raft.metrics();
        let m = m.borrow();
        let leading = m.state == ServerState::Leader;
        self.clock.observe(
            leading,
            m.membership_config.membership().voter_ids().count(),
        );
        {
            let mut since = self
                .leaderless_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match (m.current_leader, *since) {
                (None, None) => *since = Some(Instant::now()),
                (Some(_), Some(_)) => *since = None,
                _ => {}
            }
        }
        // A node whose clock is wrong does not stand for election but as a
        // last resort: a candidate that only bumps its term would keep the
        // good nodes from electing one of them.
        raft.runtime_config().elect(self.may_stand_for_election());
        let led_for = {
            let mut since = self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
            match *since {
                Some((term, at)) if leading && term == m.current_term => at.elapsed(),
                _ => {
                    *since = leading.then(|| (m.current_term, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        if self.is_silent() {
            if !leading || m.current_term != self.silent_term.load(Ordering::Acquire) {
                self.silent.store(false, Ordering::Release);
                tracing::warn!(
                    node = me,
                    state = ?m.state,
                    term = m.current_term,
                    "no longer the silent leader: sending again"
                );
            }
            return;
        }
        if leading {
            let clock = self.clock.standing();
            // Hand the log over first: a voter (not a learner) that has
            // every entry can then win the next vote (see
            // may_stand_for_election).
            let membership = m.membership_config.membership();
            let handed_over = m.replication.as_ref().is_some_and(|r| {
                r.iter().any(|(id, matched)| {
                    *id != me
                        && membership.voter_ids().any(|v| v == *id)
                        && matched.map(|l| l.index) >= m.last_log_index
                })
            });
            if clock.unsynchronized && (handed_over || led_for > self.leaderless_refuse_after) {
                self.silent_term.store(m.current_term, Ordering::Release);
                self.silent.store(true, Ordering::Release);
                tracing::error!(
                    node = me,
                    term = m.current_term,
                    offset_ms = clock.offset_ms,
                    max_offset_ms = self.clock.max_offset_ms(),
                    "this node's clock is off the cluster's by more than the bound: stepping aside (no more appends) so that a node with a good clock leads"
                );
                return;
            }
        }
        if let (true, Some(age)) = (leading, m.millis_since_quorum_ack) {
            if Duration::from_millis(age) > self.step_aside_after {
                self.silent_term.store(m.current_term, Ordering::Release);
                self.silent.store(true, Ordering::Release);
                tracing::warn!(
                    node = me,
                    term = m.current_term,
                    since_quorum_ack_ms = age,
                    "no quorum has acknowledged this leader for longer than an election timeout: stepping aside (no more appends) so that the others elect"
                );
            }
        }
    }

    /// Watches this node's metrics every `every` until the task is aborted.
    pub(crate) async fn run(self: std::sync::Arc<Self>, raft: Raft, me: NodeId, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.observe(&raft, me);
        }
    }
}
