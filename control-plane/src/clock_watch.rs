//! Clock offsets between members, and what a node whose clock is wrong may
//! no longer do.
//!
//! The ledger's clock is the largest batch time ever applied, and the
//! leader stamps each batch with its wall clock, so one leader whose clock
//! runs ahead would freeze every later `issued_at` at its future instant.
//! Three rules keep a wrong clock out of the ledger (docs/DERIVATION.md,
//! "What `issued_at` guarantees"):
//!
//! 1. **Measure.** Every internal request carries the sender's wall clock
//!    (`x-geiger-clock-ms`) and every answer the receiver's, so the sender
//!    estimates the receiver's offset from the round trip (NTP's midpoint
//!    rule: error at most half the round trip). The leader, which talks to
//!    every member at each heartbeat, judges itself by the majority: it is
//!    unsynchronized when a majority of the voters it has measured recently
//!    see it more than `max_offset` away. It tells each follower the offset
//!    it measured for it (`x-geiger-your-offset-ms`), so a follower knows
//!    its own standing without measuring anyone.
//! 2. **Refuse to lead.** An unsynchronized leader steps aside the way a
//!    leader without a quorum does (`crate::quorum_watch`: it stops sending
//!    appends, the others elect), and an unsynchronized node sends no vote
//!    requests, so it does not become leader while its clock is wrong, with
//!    one exception: when it alone holds committed entries (the old leader
//!    committed them with its acknowledgement) and no leader has been heard
//!    for a while, it stands as a last resort, leads without stamping
//!    anything until a follower has every entry, and then steps aside.
//! 3. **Bound the ledger.** A follower refuses appends holding a batch
//!    stamped more than `max_offset` ahead of its own clock (unless it
//!    knows its own clock is the wrong one), so a future stamp cannot
//!    commit even in the moments before the leader has judged itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// The sender's wall clock, Unix ms, on every internal request and answer.
pub const CLOCK_HEADER: &str = "x-geiger-clock-ms";
/// The leader's measurement of the receiver's offset (receiver minus
/// leader, ms).
pub const YOUR_OFFSET_HEADER: &str = "x-geiger-your-offset-ms";

/// How long a measurement counts.
const FRESH_FOR: Duration = Duration::from_secs(30);
/// Round trips longer than this give estimates too loose to keep.
const MAX_ROUND_TRIP_MS: u64 = 2_000;

#[derive(Debug)]
pub(crate) struct ClockWatch {
    max_offset_ms: i64,
    /// Set by the quorum watch at each look at the metrics.
    leading: AtomicBool,
    voters: AtomicUsize,
    /// Each peer's clock minus ours, as measured by our calls to it.
    peers: Mutex<BTreeMap<NodeId, (i64, Instant)>>,
    /// Our clock minus the leader's, as the leader last told us. It stands
    /// until a leader says otherwise (see [`ClockWatch::standing`]).
    told: Mutex<Option<i64>>,
}

/// This node's standing, for metrics and refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStanding {
    /// Our clock minus the cluster's, ms, when known.
    pub offset_ms: Option<i64>,
    /// Beyond the bound: this node may neither lead nor stamp.
    pub unsynchronized: bool,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl ClockWatch {
    pub(crate) fn new(max_offset: Duration) -> Self {
        ClockWatch {
            max_offset_ms: i64::try_from(max_offset.as_millis()).unwrap_or(i64::MAX),
            leading: AtomicBool::new(false),
            voters: AtomicUsize::new(1),
            peers: Mutex::new(BTreeMap::new()),
            told: Mutex::new(None),
        }
    }

    pub(crate) fn max_offset_ms(&self) -> i64 {
        self.max_offset_ms
    }

    /// What the quorum watch sees at each tick.
    pub(crate) fn observe(&self, leading: bool, voters: usize) {
        self.leading.store(leading, Ordering::Release);
        self.voters.store(voters.max(1), Ordering::Release);
    }

    /// One round trip to `peer`: sent at `sent_ms`, answered at
    /// `received_ms` (our clock), stamped `peer_ms` by the peer.
    pub(crate) fn measured(&self, peer: NodeId, peer_ms: u64, sent_ms: u64, received_ms: u64) {
        if received_ms < sent_ms || received_ms - sent_ms > MAX_ROUND_TRIP_MS {
            return;
        }
        let midpoint = (sent_ms as i128 + received_ms as i128) / 2;
        let offset = (peer_ms as i128 - midpoint).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, (offset, Instant::now()));
    }

    /// The leader told us our offset from its clock.
    pub(crate) fn told(&self, offset_ms: i64) {
        *self.told.lock().unwrap_or_else(|p| p.into_inner()) = Some(offset_ms);
    }

    /// What to tell `peer` about its offset: only a leader whose own clock
    /// a majority of the voters has been measured to agree with says
    /// anything. "Not yet known to be wrong" is not enough: a leader just
    /// restarted an hour ahead has measured few peers, and telling each of
    /// them it is an hour behind would make them stop refusing its stamps
    /// (rule 3), so its future batches could commit.
    pub(crate) fn statement_for(&self, peer: NodeId) -> Option<i64> {
        if !self.leading.load(Ordering::Acquire) || self.majority_verdict().1 != Some(true) {
            return None;
        }
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get(&peer)
            .filter(|(_, at)| at.elapsed() < FRESH_FOR)
            .map(|(offset, _)| *offset)
    }

    /// What the fresh measurements say of this node's clock, with the
    /// offsets they come from: a majority of the voters (this node
    /// included) agrees with it (`Some(true)`), a majority sees it far off
    /// (`Some(false)`), or neither yet (`None`).
    fn majority_verdict(&self) -> (Vec<i64>, Option<bool>) {
        let fresh: Vec<i64> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(_, at)| at.elapsed() < FRESH_FOR)
            .map(|(o, _)| *o)
            .collect();
        let majority = self.voters.load(Ordering::Acquire) / 2 + 1;
        let far = fresh
            .iter()
            .filter(|o| o.abs() > self.max_offset_ms)
            .count();
        let near = fresh.len() - far + 1;
        let verdict = if far >= majority {
            Some(false)
        } else if near >= majority {
            Some(true)
        } else {
            None
        };
        (fresh, verdict)
    }

    /// This node's standing. Evidence from a majority of the voters wins:
    /// a leader whose clock a majority (itself included) agrees with is
    /// synchronized, one that a majority sees far off is not. Short of a
    /// majority either way (a voter down, the one left disagreeing), the
    /// last word of a leader that had one stands (`told`), however old:
    /// with one good node and one wrong one left, each measures the other
    /// far off, and only that earlier statement says which is which.
    pub fn standing(&self) -> ClockStanding {
        let told = self
            .told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|offset| ClockStanding {
                offset_ms: Some(offset),
                unsynchronized: offset.abs() > self.max_offset_ms,
            });
        if self.leading.load(Ordering::Acquire) {
            let (fresh, verdict) = self.majority_verdict();
            let measured = ClockStanding {
                offset_ms: median(fresh.iter().copied().chain([0]).collect()).map(|m| -m),
                unsynchronized: verdict == Some(false),
            };
            if verdict.is_some() {
                return measured;
            }
            return told.unwrap_or(measured);
        }
        told.unwrap_or(ClockStanding {
            offset_ms: None,
            unsynchronized: false,
        })
    }

    /// Whether a batch stamped `at_ms` is too far ahead of this node's
    /// clock `now_ms` to accept, as a follower. A node that knows its own
    /// clock is the wrong one does not judge others by it.
    pub(crate) fn too_far_ahead(&self, at_ms: u64, now_ms: u64) -> bool {
        !self.standing().unsynchronized
            && at_ms as i128 - now_ms as i128 > self.max_offset_ms as i128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn watch() -> ClockWatch {
        ClockWatch::new(Duration::from_millis(500))
    }

    /// A round trip of 2 ms to a peer whose clock is `offset` from ours.
    fn measure(w: &ClockWatch, peer: NodeId, offset: i64) {
        let sent = 1_000_000_000u64;
        w.measured(peer, (sent as i64 + 1 + offset) as u64, sent, sent + 2);
    }

    #[test]
    fn a_leader_ahead_of_every_follower_knows_it_is_the_wrong_one() {
        let w = watch();
        w.observe(true, 3);
        measure(&w, 2, -HOUR);
        measure(&w, 3, -HOUR);
        let s = w.standing();
        assert!(s.unsynchronized);
        assert_eq!(s.offset_ms, Some(HOUR));
        // It tells no one anything, and judges no stamp by its clock.
        assert_eq!(w.statement_for(2), None);
        assert!(!w.too_far_ahead(u64::MAX, 0));
    }

    #[test]
    fn one_follower_with_a_wrong_clock_does_not_make_its_leader_wrong() {
        let w = watch();
        w.observe(true, 3);
        measure(&w, 2, HOUR);
        measure(&w, 3, 3);
        let s = w.standing();
        assert!(!s.unsynchronized, "{s:?}");
        assert_eq!(s.offset_ms, Some(-3));
        assert_eq!(w.statement_for(2), Some(HOUR));
        assert_eq!(w.statement_for(3), Some(3));
    }

    #[test]
    fn a_leader_tells_no_one_their_offset_until_a_majority_agrees_with_its_clock() {
        // Six voters: a leader restarted an hour ahead has measured two
        // peers. It does not know yet that it is the wrong one, but it must
        // not tell them they are an hour behind: they would stop refusing
        // its stamps.
        let w = watch();
        w.observe(true, 6);
        measure(&w, 2, -HOUR);
        measure(&w, 3, -HOUR);
        assert!(!w.standing().unsynchronized);
        assert_eq!(w.statement_for(2), None);
        // A good leader speaks once three peers (four voters) agree with it.
        let good = watch();
        good.observe(true, 6);
        measure(&good, 2, 4);
        measure(&good, 3, -HOUR);
        assert_eq!(good.statement_for(3), None);
        measure(&good, 4, 2);
        measure(&good, 5, -1);
        assert_eq!(good.statement_for(3), Some(-HOUR));
        assert_eq!(good.statement_for(2), Some(4));
    }

    #[test]
    fn a_follower_knows_its_standing_from_what_the_leader_measured() {
        let w = watch();
        w.observe(false, 3);
        assert_eq!(w.standing().offset_ms, None);
        assert!(!w.standing().unsynchronized);
        w.told(HOUR);
        assert!(w.standing().unsynchronized);
        w.told(-200);
        assert_eq!(
            w.standing(),
            ClockStanding {
                offset_ms: Some(-200),
                unsynchronized: false
            }
        );
    }

    #[test]
    fn a_leader_that_cannot_tell_who_is_wrong_goes_by_what_it_was_last_told() {
        // Three voters, one down: the two left see each other an hour
        // apart, and neither has a majority on its side.
        let wrong = watch();
        wrong.told(HOUR);
        wrong.observe(true, 3);
        measure(&wrong, 2, -HOUR);
        assert!(wrong.standing().unsynchronized);
        assert_eq!(wrong.standing().offset_ms, Some(HOUR));

        let good = watch();
        good.told(-3);
        good.observe(true, 3);
        measure(&good, 3, HOUR);
        assert!(!good.standing().unsynchronized);

        // Never told anything, it cannot know: it goes by its own clock.
        let new = watch();
        new.observe(true, 3);
        measure(&new, 3, HOUR);
        assert!(!new.standing().unsynchronized);
    }

    #[test]
    fn a_majority_on_its_side_outweighs_what_a_leader_was_told() {
        let w = watch();
        w.told(HOUR);
        w.observe(true, 3);
        measure(&w, 2, 5);
        assert!(!w.standing().unsynchronized, "{:?}", w.standing());
        let w = watch();
        w.told(0);
        w.observe(true, 3);
        measure(&w, 2, -HOUR);
        measure(&w, 3, -HOUR);
        assert!(w.standing().unsynchronized);
    }

    #[test]
    fn what_a_follower_was_told_stands_until_a_leader_says_otherwise() {
        let w = watch();
        w.observe(false, 3);
        w.told(HOUR);
        assert!(w.standing().unsynchronized);
        w.told(10);
        assert!(!w.standing().unsynchronized);
    }

    #[test]
    fn a_stamp_further_ahead_than_the_bound_is_too_far_and_one_within_it_is_not() {
        let w = watch();
        assert!(w.too_far_ahead(10_501, 10_000));
        assert!(!w.too_far_ahead(10_500, 10_000));
        assert!(!w.too_far_ahead(0, 10_000));
    }

    #[test]
    fn a_slow_round_trip_gives_no_measurement() {
        let w = watch();
        w.observe(true, 3);
        w.measured(2, 0, 1_000, 1_000 + MAX_ROUND_TRIP_MS + 1);
        w.measured(3, 0, 2_000, 1_000);
        assert_eq!(w.standing().offset_ms, Some(0));
        assert!(!w.standing().unsynchronized);
    }
}
