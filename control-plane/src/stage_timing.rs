//! Where a write's time goes, stage by stage, in this process.
//!
//! Each stage a draw passes through (docs/ARCHITECTURE.md, "One draw's
//! latency, by stage") adds its duration to a process-wide total. A stage
//! that handles a whole batch at once counts its duration once per command
//! in the batch, since every one of them waited for it; so a stage's total
//! divided by its commands is what it added to an average command, and the
//! averages of the stages on a draw's path add up to its latency.
//!
//! Two relaxed atomic additions per stage and command batch: cheap enough
//! to be always on. The node publishes the totals as
//! `geiger_write_stage_seconds_total{stage}` and
//! `geiger_write_stage_commands_total{stage}`; `node/benches/draw_stages.rs`
//! turns two scrapes into the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A stage of a write's path, in the order a draw meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The draw handler, from its start to its answer: everything below
    /// that happens on the node the client talks to.
    Handler,
    /// Authentication, rate check, reading and parsing the body, checking
    /// the request: from the handler's start to handing the command on.
    HttpIn,
    /// A request worker's round trip: queued for a worker, the ledger
    /// write, the answer back.
    Worker,
    /// The ledger write as the worker sees it: batching, proposing (or
    /// forwarding), the outcome back.
    LedgerWrite,
    /// Queued in the batcher until its batch is sealed (linger, waiting
    /// for an in-flight slot).
    BatchWait,
    /// A follower's forward of a batch to the leader, to the leader's
    /// answer (the leader's `Raft` stage is inside it).
    Forward,
    /// The leader's Raft write of a batch: its log append and fsync,
    /// replication to a quorum and their fsyncs, commit and apply.
    Raft,
    /// One group of log writes and its fsync, on any member.
    LogAppend,
    /// Applying one batch to the state machine (checks, derivation,
    /// signing, the state database's transaction).
    Apply,
    /// From the ledger's outcome to the handler's answer.
    HttpOut,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Handler,
        Stage::HttpIn,
        Stage::Worker,
        Stage::LedgerWrite,
        Stage::BatchWait,
        Stage::Forward,
        Stage::Raft,
        Stage::LogAppend,
        Stage::Apply,
        Stage::HttpOut,
    ];

    /// The `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Handler => "handler",
            Stage::HttpIn => "http_in",
            Stage::Worker => "worker",
            Stage::LedgerWrite => "ledger_write",
            Stage::BatchWait => "batch_wait",
            Stage::Forward => "forward",
            Stage::Raft => "raft",
            Stage::LogAppend => "log_append",
            Stage::Apply => "apply",
            Stage::HttpOut => "http_out",
        }
    }
}

struct Total {
    micros: AtomicU64,
    commands: AtomicU64,
}

/// Every stage's totals.
pub struct StageTotals {
    totals: [Total; Stage::ALL.len()],
}

impl StageTotals {
    #[allow(clippy::declare_interior_mutable_const)]
    pub const fn new() -> Self {
        const ZERO: Total = Total {
            micros: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        };
        StageTotals {
            totals: [ZERO; Stage::ALL.len()],
        }
    }

    /// `took` was spent in `stage` on behalf of `commands` commands.
    pub fn record(&self, stage: Stage, took: Duration, commands: usize) {
        let total = &self.totals[stage as usize];
        let commands = commands as u64;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        total
            .micros
            .fetch_add(micros.saturating_mul(commands), Ordering::Relaxed);
        total.commands.fetch_add(commands, Ordering::Relaxed);
    }

    /// (stage, seconds, commands) for every stage, in path order.
    pub fn totals(&self) -> Vec<(Stage, f64, u64)> {
        Stage::ALL
            .iter()
            .map(|stage| {
                let total = &self.totals[*stage as usize];
                (
                    *stage,
                    total.micros.load(Ordering::Relaxed) as f64 / 1e6,
                    total.commands.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

impl Default for StageTotals {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's totals.
pub static STAGES: StageTotals = StageTotals::new();

/// `took` was spent in `stage` on behalf of `commands` commands, here.
pub fn record(stage: Stage, took: Duration, commands: usize) {
    STAGES.record(stage, took, commands);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stage_counts_once_per_command_it_held() {
        let stages = StageTotals::new();
        stages.record(Stage::Apply, Duration::from_millis(2), 3);
        stages.record(Stage::Apply, Duration::from_millis(1), 1);
        let (stage, seconds, commands) = stages.totals()[Stage::Apply as usize];
        assert_eq!(stage, Stage::Apply);
        assert_eq!(commands, 4);
        assert!((seconds - 0.007).abs() < 1e-9, "{seconds}");
        // Every stage has its own slot, in path order.
        assert_eq!(
            Stage::ALL.iter().map(|s| *s as usize).collect::<Vec<_>>(),
            (0..Stage::ALL.len()).collect::<Vec<_>>()
        );
    }
}
