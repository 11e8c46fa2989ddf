//! The report: every figure of a run, computed from the request records and
//! the fault events, written as `report.json` (everything) and
//! `summary.txt` (what a person reads first).
//!
//! Definitions (docs/AVAILABILITY.md explains how to read them):
//! - *offered*: requests the workload was scheduled to send;
//! - *succeeded*: 201s; *expected answers*: 409s on shared chains (the
//!   contract working) and 4xx to deliberately invalid requests;
//! - *failed*: everything else (timeouts, 5xx, unexpected 4xx or 409);
//! - *latency*: from when a request was due (not when it was sent) to its
//!   answer, for successes;
//! - *longest window without a successful draw*: the largest gap between
//!   consecutive successful answers (and the run's start and end);
//! - per fault: *time to first success* (fault start → the first success of
//!   a request sent after it), *back to rate* (heal → the first second whose
//!   success rate is at least 90% of the 5 s before the fault) and the
//!   *outage* (the longest success gap from the fault's start until the next
//!   fault).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checker::CheckReport;
use crate::nemesis::{FaultEvent, Schedule};
use crate::proxy::ProxyStats;
use crate::workload::{Outcome, RequestRecord};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub offered: u64,
    pub succeeded: u64,
    pub expected_conflicts: u64,
    pub rejected_invalid: u64,
    pub failed: u64,
    pub failure_ratio: f64,
    /// Failures by kind (`unavailable`, `rejected_503`, ...).
    pub failures_by_kind: std::collections::BTreeMap<String, u64>,
    pub replays: u64,
    pub latency: Latency,
    pub longest_gap_ms: f64,
    pub longest_gap_from_ms: f64,
    pub offered_per_s: f64,
    pub succeeded_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecovery {
    pub index: usize,
    pub kind: String,
    pub target: String,
    pub start_ms: f64,
    pub healed_ms: f64,
    pub held_ms: f64,
    pub time_to_first_success_ms: Option<f64>,
    pub back_to_rate_ms: Option<f64>,
    pub outage_ms: f64,
    pub failed_requests: u64,
    pub baseline_per_s: f64,
    pub notes: Vec<String>,
    /// The fault's expectations it did not meet (each fails the run).
    #[serde(default)]
    pub unmet: Vec<String>,
}

/// One second of the run, for the timeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub second: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub profile: String,
    pub seed: u64,
    pub command: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub placement: serde_json::Value,
    pub figures: Figures,
    pub faults: Vec<FaultRecovery>,
    pub timeline: Vec<Bucket>,
    pub check: CheckReport,
    pub proxy: ProxyStats,
    pub schedule: Schedule,
    pub notes: Vec<String>,
}

/// The outcome counts as an answer the contract expects (not a failure).
fn expected(r: &RequestRecord) -> bool {
    match &r.outcome {
        Outcome::Drawn { .. } => true,
        Outcome::Conflict { .. } => r.shared,
        Outcome::Rejected { status, .. } => r.bad && (400..500).contains(status),
        _ => false,
    }
}

fn failure_kind(o: &Outcome) -> String {
    match o {
        Outcome::Drawn { .. } => "none".into(),
        Outcome::Conflict { .. } => "conflict_on_own_chain".into(),
        Outcome::Rejected { status, code, .. } => format!("rejected_{status}_{code}"),
        Outcome::Unavailable { .. } => "unavailable".into(),
        Outcome::Failed { .. } => "failed".into(),
    }
}

/// The q-quantile (0..=1) of sorted values, nearest rank; 0 without any.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    geiger_testkit::measure::nearest_rank(sorted, q).unwrap_or(0.0)
}

/// The longest interval in `[from, to]` containing none of `times`
/// (sorted); returns (length, start).
pub fn longest_gap(times: &[f64], from: f64, to: f64) -> (f64, f64) {
    let mut best = (0.0, from);
    let mut prev = from;
    for &t in times.iter().filter(|&&t| t >= from && t <= to) {
        if t - prev > best.0 {
            best = (t - prev, prev);
        }
        prev = t;
    }
    if to - prev > best.0 {
        best = (to - prev, prev);
    }
    best
}

pub fn figures(records: &[RequestRecord], duration_ms: f64) -> Figures {
    let mut f = Figures {
        offered: records.len() as u64,
        ..Figures::default()
    };
    let mut latencies = Vec::new();
    let mut success_times = Vec::new();
    for r in records {
        match &r.outcome {
            Outcome::Drawn { replayed, .. } => {
                f.succeeded += 1;
                if *replayed {
                    f.replays += 1;
                }
                latencies.push(r.latency_ms());
                success_times.push(r.end_ms);
            }
            Outcome::Conflict { .. } if r.shared => f.expected_conflicts += 1,
            Outcome::Rejected { status, .. } if r.bad && (400..500).contains(status) => {
                f.rejected_invalid += 1
            }
            other => {
                f.failed += 1;
                *f.failures_by_kind.entry(failure_kind(other)).or_default() += 1;
            }
        }
    }
    debug_assert_eq!(
        f.failed,
        records.iter().filter(|r| !expected(r)).count() as u64
    );
    f.failure_ratio = if f.offered == 0 {
        0.0
    } else {
        f.failed as f64 / f.offered as f64
    };
    latencies.sort_by(f64::total_cmp);
    f.latency = Latency {
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        p999_ms: quantile(&latencies, 0.999),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    };
    success_times.sort_by(f64::total_cmp);
    let (gap, from) = longest_gap(&success_times, 0.0, duration_ms);
    f.longest_gap_ms = gap;
    f.longest_gap_from_ms = from;
    let secs = (duration_ms / 1000.0).max(1e-9);
    f.offered_per_s = f.offered as f64 / secs;
    f.succeeded_per_s = f.succeeded as f64 / secs;
    f
}

pub fn timeline(records: &[RequestRecord], duration_ms: f64) -> Vec<Bucket> {
    // Whole seconds of the run; answers that come after its end count in
    // the last one.
    let n = ((duration_ms / 1000.0).ceil() as usize).max(1);
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|s| Bucket {
            second: s as u64,
            ..Bucket::default()
        })
        .collect();
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in records {
        let s = ((r.end_ms / 1000.0).floor() as usize).min(n - 1);
        if r.outcome.is_success() {
            buckets[s].succeeded += 1;
            lat[s].push(r.latency_ms());
        } else if !expected(r) {
            buckets[s].failed += 1;
        }
    }
    for (b, l) in buckets.iter_mut().zip(lat.iter_mut()) {
        l.sort_by(f64::total_cmp);
        b.p99_ms = quantile(l, 0.99);
    }
    buckets
}

pub fn recoveries(
    records: &[RequestRecord],
    events: &[FaultEvent],
    duration_ms: f64,
) -> Vec<FaultRecovery> {
    let mut successes: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.outcome.is_success())
        .map(|r| (r.start_ms, r.end_ms))
        .collect();
    successes.sort_by(|a, b| a.1.total_cmp(&b.1));
    let ends: Vec<f64> = successes.iter().map(|s| s.1).collect();
    let count_in =
        |from: f64, to: f64| ends.iter().filter(|&&t| t >= from && t < to).count() as f64;
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let window_end = events.get(i + 1).map_or(duration_ms, |n| n.start_ms);
        let baseline = count_in(e.start_ms - 5_000.0, e.start_ms) / 5.0;
        let first = successes
            .iter()
            .filter(|(start, _)| *start >= e.start_ms)
            .map(|(_, end)| end - e.start_ms)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        let mut back = None;
        let mut t = e.healed_ms;
        while t + 1_000.0 <= window_end {
            if count_in(t, t + 1_000.0) >= 0.9 * baseline {
                back = Some(t - e.healed_ms);
                break;
            }
            t += 100.0;
        }
        let (outage, _) = longest_gap(&ends, e.start_ms, window_end);
        let failed = records
            .iter()
            .filter(|r| r.end_ms >= e.start_ms && r.end_ms < window_end && !expected(r))
            .count() as u64;
        let held_ms = e.healed_ms - e.start_ms;
        let mut unmet = e.unmet.clone();
        if e.planned.kind.writes_continue() && first.is_none_or(|f| f > held_ms) {
            unmet.push("no draw succeeded while the fault held".into());
        }
        out.push(FaultRecovery {
            index: e.planned.index,
            kind: e.planned.kind.name().to_string(),
            target: e.resolved.clone(),
            start_ms: e.start_ms,
            healed_ms: e.healed_ms,
            held_ms,
            time_to_first_success_ms: first,
            back_to_rate_ms: back,
            outage_ms: outage,
            failed_requests: failed,
            baseline_per_s: baseline,
            notes: e.notes.clone(),
            unmet,
        });
    }
    out
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

/// The human summary.
pub fn summary(report: &Report) -> String {
    let f = &report.figures;
    let mut s = String::new();
    let unmet = unmet_expectations(report);
    let verdict = if !report.check.passed() {
        format!(
            "FAILED: {} invariant violation(s)",
            report.check.violations.len()
        )
    } else if unmet > 0 {
        format!("FAILED: {unmet} fault expectation(s) unmet")
    } else {
        "PASSED: no invariant violated, every fault met its expectations".to_string()
    };
    s.push_str(&format!(
        "geiger-chaos --profile {} --seed {}\n{verdict}\n\n",
        report.profile, report.seed
    ));
    s.push_str(&format!(
        "requests: {} offered ({:.1}/s), {} succeeded, {} failed (failure ratio {:.5}), {} expected 409s on shared chains, {} invalid requests refused\n",
        f.offered, f.offered_per_s, f.succeeded, f.failed, f.failure_ratio, f.expected_conflicts, f.rejected_invalid
    ));
    if !f.failures_by_kind.is_empty() {
        let kinds: Vec<String> = f
            .failures_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        s.push_str(&format!("failures: {}\n", kinds.join(", ")));
    }
    s.push_str(&format!(
        "latency (from due time, successes): p50 {}, p99 {}, p99.9 {}, max {}\n",
        ms(f.latency.p50_ms),
        ms(f.latency.p99_ms),
        ms(f.latency.p999_ms),
        ms(f.latency.max_ms)
    ));
    s.push_str(&format!(
        "longest window without a successful draw: {} (from t={})\n",
        ms(f.longest_gap_ms),
        ms(f.longest_gap_from_ms)
    ));
    s.push_str(&format!(
        "idempotent replays seen: {}; requests committed despite an error: {}\n\n",
        f.replays, report.check.stats.committed_despite_error
    ));
    s.push_str("per fault (start → first success | heal → back to rate | outage | failed):\n");
    for r in &report.faults {
        s.push_str(&format!(
            "  {:>2} {:<16} {:<34} t={:>7}  first ok {:>8}  back {:>8}  outage {:>8}  failed {}\n",
            r.index,
            r.kind,
            r.target,
            ms(r.start_ms),
            r.time_to_first_success_ms.map_or("never".into(), ms),
            r.back_to_rate_ms.map_or("never".into(), ms),
            ms(r.outage_ms),
            r.failed_requests
        ));
        for n in &r.notes {
            s.push_str(&format!("       note: {n}\n"));
        }
        for u in &r.unmet {
            s.push_str(&format!("       UNMET: {u}\n"));
        }
    }
    let c = &report.check.stats;
    s.push_str(&format!(
        "\nchecked: {} acknowledged draws ({} distinct), {} draws in the ledger on {} chains, {} lookups, {} entropy bytes\n",
        c.acknowledged, c.distinct_acknowledged, c.ledger_draws, c.chains, c.lookups, c.entropy_bytes_used
    ));
    s.push_str(&format!(
        "provenance: {} segments checked against their device-signed chunk, {} in chunks not used up yet, {} unanswered\n",
        c.provenance_verified, c.provenance_pending, c.provenance_unanswered
    ));
    for (device, a) in &c.devices {
        s.push_str(&format!(
            "  {device}: {} bytes in draws over {} chunks; ledger: used {:?}, appended {:?}, quarantined {:?}, skipped {:?}, seq {:?}..={:?}\n",
            a.bytes_in_draws, a.chunks_touched, a.used_bytes_reported, a.appended_chunks, a.quarantined_chunks, a.skipped_chunks, a.first_seq, a.last_seq
        ));
    }
    if !report.check.violations.is_empty() {
        s.push_str("\nviolations:\n");
        for v in report.check.violations.iter().take(50) {
            s.push_str(&format!("  [{}] {}\n", v.invariant, v.what));
        }
    }
    for n in &report.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    // The closing line CI runners read: one count per invariant of DESIGN.md.
    let broken: std::collections::BTreeSet<u8> = report
        .check
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    s.push_str(&format!("\nfault expectations: {unmet} unmet\n"));
    s.push_str(&format!(
        "invariants: {} passed, {} failed\n",
        crate::checker::INVARIANTS - broken.len().min(crate::checker::INVARIANTS),
        broken.len()
    ));
    s
}

/// How many of the faults' expectations failed (see `FaultEvent::unmet`).
pub fn unmet_expectations(report: &Report) -> usize {
    report.faults.iter().map(|f| f.unmet.len()).sum()
}

pub fn write(dir: &Path, report: &Report) -> Result<(), ReportError> {
    let put = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    put(
        "report.json",
        &serde_json::to_vec_pretty(report).expect("the report serialises"),
    )?;
    put("summary.txt", summary(report).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 0.999), 999.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    fn record(start_ms: f64, end_ms: f64, ok: bool) -> RequestRecord {
        RequestRecord {
            seq: 0,
            worker: 0,
            chain: "ch".into(),
            shared: false,
            bad: false,
            previous: "p".into(),
            request_id: "r".into(),
            retry: false,
            intended_ms: start_ms,
            start_ms,
            end_ms,
            outcome: if ok {
                Outcome::Drawn {
                    id: "d".into(),
                    replayed: false,
                    raw: "{}".into(),
                    endpoint: "e".into(),
                }
            } else {
                Outcome::Unavailable {
                    message: "timeout".into(),
                }
            },
        }
    }

    #[test]
    fn a_fault_s_outage_and_recovery_are_measured_from_the_records() {
        use crate::nemesis::{FaultKind, PlannedFault, Target};
        // 10 successes a second, none from 10 s to 12.5 s, two failures.
        let mut records: Vec<RequestRecord> = (0..200)
            .map(|i| i as f64 * 100.0)
            .filter(|t| !(10_000.0..12_500.0).contains(t))
            .map(|t| record(t, t + 10.0, true))
            .collect();
        records.push(record(10_000.0, 11_000.0, false));
        records.push(record(10_100.0, 11_100.0, false));
        let event = FaultEvent {
            planned: PlannedFault {
                index: 0,
                kind: FaultKind::KillLeader,
                target: Target::Leader,
                at_ms: 10_000,
                hold_ms: 1_000,
            },
            resolved: "node 1".into(),
            start_ms: 10_000.0,
            healed_ms: 11_000.0,
            heal_done_ms: 11_000.0,
            notes: vec![],
            unmet: vec![],
        };
        let r = &recoveries(&records, &[event], 20_000.0)[0];
        assert_eq!(r.baseline_per_s, 10.0);
        assert_eq!(r.time_to_first_success_ms, Some(2_510.0));
        assert_eq!(r.outage_ms, 2_510.0);
        assert_eq!(r.failed_requests, 2);
        // The first 1 s window holding 9 successes (90% of 10) starts at
        // 12.4 s: 1.4 s after the heal.
        assert_eq!(r.back_to_rate_ms, Some(1_400.0));
        let f = figures(&records, 20_000.0);
        assert_eq!(f.failed, 2);
        assert_eq!(f.longest_gap_ms, 2_600.0);
    }

    #[test]
    fn a_gray_failure_without_a_success_while_it_held_is_unmet_and_a_kill_is_not() {
        use crate::nemesis::{FaultKind, PlannedFault, Target};
        // Successes every 100 ms except from 10 s to 12.5 s.
        let records: Vec<RequestRecord> = (0..200)
            .map(|i| i as f64 * 100.0)
            .filter(|t| !(10_000.0..12_500.0).contains(t))
            .map(|t| record(t, t + 10.0, true))
            .collect();
        let event = |kind, hold_ms: u64| FaultEvent {
            planned: PlannedFault {
                index: 0,
                kind,
                target: Target::Leader,
                at_ms: 10_000,
                hold_ms,
            },
            resolved: "every link".into(),
            start_ms: 10_000.0,
            healed_ms: 10_000.0 + hold_ms as f64,
            heal_done_ms: 10_000.0 + hold_ms as f64,
            notes: vec![],
            unmet: vec![],
        };
        let slow_2s = &recoveries(&records, &[event(FaultKind::SlowLinks, 2_000)], 20_000.0)[0];
        assert_eq!(
            slow_2s.unmet,
            vec!["no draw succeeded while the fault held"]
        );
        let slow_4s = &recoveries(&records, &[event(FaultKind::SlowLinks, 4_000)], 20_000.0)[0];
        assert!(slow_4s.unmet.is_empty(), "{:?}", slow_4s.unmet);
        let kill = &recoveries(&records, &[event(FaultKind::KillLeader, 2_000)], 20_000.0)[0];
        assert!(kill.unmet.is_empty(), "{:?}", kill.unmet);
    }

    #[test]
    fn the_longest_gap_counts_the_edges_of_the_run() {
        assert_eq!(longest_gap(&[100.0, 200.0], 0.0, 1000.0), (800.0, 200.0));
        assert_eq!(longest_gap(&[600.0, 700.0], 0.0, 800.0), (600.0, 0.0));
        assert_eq!(longest_gap(&[], 0.0, 50.0), (50.0, 0.0));
    }
}
