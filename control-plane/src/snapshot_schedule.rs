//! When this replica builds a snapshot.
//!
//! A snapshot dumps the whole state (every draw ever made) into a file
//! ([`crate::state_machine`]'s snapshots), so its cost grows with the
//! ledger, while the log it lets us purge grows only with the entries
//! since the last one. openraft's own policy (every N entries) then costs
//! more per entry the larger the ledger: measured on a 2-core machine, a
//! 108 MB state took 3.5-3.8 s to dump on each of the three members at
//! once, every 20,000 entries, and the benchmark phases it fell in spent up
//! to twice the CPU per draw. At a million draws a member would be dumping
//! most of the time.
//!
//! So openraft's policy is off (`SnapshotPolicy::Never`) and this task
//! triggers the build: after `every` entries at the least, and not before
//! the log has grown by `growth` times the index of the last snapshot. With
//! growth 1 the snapshots fall at 20,000, 40,000, 80,000... entries; their
//! dumps together cost at most twice the last one, a fixed cost per entry
//! whatever the ledger's size, and the log holds at most half the history.
//! Growth 0 is openraft's old policy.

use std::time::Duration;

use crate::types::Raft;

/// A trigger that produced no snapshot (a failed build; openraft ignores a
/// trigger while it is building) is repeated after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// When a snapshot is due (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotSchedule {
    /// Fewest log entries between two snapshots.
    pub every: u64,
    /// Fewest log entries between two snapshots, as a multiple of the
    /// last snapshot's index.
    pub growth: f64,
}

impl SnapshotSchedule {
    /// Whether a snapshot is due with `applied` entries applied and the
    /// last snapshot at `last` (none yet: `None`).
    pub fn due(&self, applied: u64, last: Option<u64>) -> bool {
        let last = last.unwrap_or(0);
        let wait = self.every.max((last as f64 * self.growth) as u64);
        applied.saturating_sub(last) >= wait
    }
}

/// Runs for the replica's life: looks at each change of openraft's
/// metrics (every apply), so a snapshot is triggered when it falls due.
pub(crate) async fn run(raft: Raft, schedule: SnapshotSchedule) {
    let mut metrics = raft.metrics();
    // The snapshot index when this task last triggered, and when.
    let mut triggered: Option<(Option<u64>, tokio::time::Instant)> = None;
    loop {
        let (applied, last) = {
            let m = metrics.borrow_and_update();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|s| s.index))
        };
        let waiting =
            triggered.is_some_and(|(at, when)| at == last && when.elapsed() < RETRY_AFTER);
        if let Some(applied) = applied.filter(|a| !waiting && schedule.due(*a, last)) {
            tracing::info!(applied, last_snapshot = ?last, "snapshot due");
            triggered = Some((last, tokio::time::Instant::now()));
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "could not trigger a snapshot");
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return; // Raft has shut down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_comes_after_every_entries() {
        let s = SnapshotSchedule {
            every: 20_000,
            growth: 1.0,
        };
        assert!(!s.due(19_999, None));
        assert!(s.due(20_000, None));
    }

    #[test]
    fn with_growth_one_each_snapshot_waits_until_the_log_has_doubled() {
        let s = SnapshotSchedule {
            every: 20_000,
            growth: 1.0,
        };
        assert!(!s.due(39_999, Some(20_000)));
        assert!(s.due(40_000, Some(20_000)));
        assert!(!s.due(1_999_999, Some(1_000_000)));
        assert!(s.due(2_000_000, Some(1_000_000)));
    }

    #[test]
    fn growth_zero_is_a_snapshot_every_so_many_entries() {
        let s = SnapshotSchedule {
            every: 50,
            growth: 0.0,
        };
        assert!(!s.due(1_000_049, Some(1_000_000)));
        assert!(s.due(1_000_050, Some(1_000_000)));
    }

    #[test]
    fn a_state_installed_ahead_of_its_snapshot_is_not_due_at_once() {
        // A snapshot index above the applied one (just installed) is no
        // reason to build another.
        let s = SnapshotSchedule {
            every: 50,
            growth: 0.0,
        };
        assert!(!s.due(100, Some(120)));
    }
}
