//! One draw's latency, stage by stage, as a client meets it.
//!
//! Three `geiger node` processes (release build, `lan` timing, fsync on)
//! and a device, this process as the HTTP client (keep-alive, chained
//! 6-of-49 draws, each writer on its own chain). For each phase (1 writer
//! at the leader, 1 through a follower, 16 and 64 at the leader) it scrapes
//! every node's `geiger_write_stage_*` totals before and after and prints
//! the average time each stage added to a draw (stage seconds over stage
//! commands), beside the client's own mean, p50 and p99. Means, not
//! medians, because means add up: the rows in a column sum to the client's
//! mean, and what no stage accounts for is printed as its own row.
//!
//! Run: `cargo bench -p geiger-node --bench draw_stages`; `BENCH_SECONDS`
//! (default 10) sets each phase's length.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/draw_load.rs"]
mod draw_load;

use std::collections::BTreeMap;

use common::Cluster;
use draw_load::{chained_draws, ms, Phase, Setup};

/// Every node's stage totals: node → stage → (seconds, commands).
type Totals = BTreeMap<u64, BTreeMap<String, (f64, f64)>>;

async fn scrape(cluster: &Cluster) -> Totals {
    let mut out = Totals::new();
    for id in cluster.ids() {
        let text = cluster
            .http
            .get(format!("{}/metrics", cluster.url(id)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let stages = out.entry(id).or_default();
        for line in text.lines() {
            for (metric, seconds) in [
                ("geiger_write_stage_seconds_total{stage=\"", true),
                ("geiger_write_stage_commands_total{stage=\"", false),
            ] {
                let Some(rest) = line.strip_prefix(metric) else {
                    continue;
                };
                let Some((stage, value)) = rest.split_once("\"} ") else {
                    continue;
                };
                let value: f64 = value.trim().parse().unwrap_or(0.0);
                let entry = stages.entry(stage.to_string()).or_default();
                if seconds {
                    entry.0 = value;
                } else {
                    entry.1 = value;
                }
            }
        }
    }
    out
}

/// What `stage` added to an average draw on `node` between two scrapes, ms.
fn stage_ms(before: &Totals, after: &Totals, node: u64, stage: &str) -> f64 {
    let get = |t: &Totals| t[&node].get(stage).copied().unwrap_or_default();
    let (s0, c0) = get(before);
    let (s1, c1) = get(after);
    if c1 - c0 < 1.0 {
        return 0.0;
    }
    (s1 - s0) / (c1 - c0) * 1e3
}

/// One phase's column: the client's figures and each row's milliseconds.
struct Column {
    title: String,
    phase: Phase,
    rows: Vec<(String, f64)>,
}

/// The rows for a phase whose draws went to `entry` with `leader` leading.
fn breakdown(
    before: &Totals,
    after: &Totals,
    entry: u64,
    leader: u64,
    phase: &Phase,
) -> Vec<(String, f64)> {
    let at = |node: u64, stage: &str| stage_ms(before, after, node, stage);
    let client = phase.mean.as_secs_f64() * 1e3;
    let handler = at(entry, "handler");
    let http_in = at(entry, "http_in");
    let worker = at(entry, "worker");
    let ledger_write = at(entry, "ledger_write");
    let batch_wait = at(entry, "batch_wait");
    let raft = at(leader, "raft");
    let leader_log = at(leader, "log_append");
    let apply = at(leader, "apply");
    let follower_log: Vec<f64> = before
        .keys()
        .filter(|id| **id != leader)
        .map(|id| at(*id, "log_append"))
        .collect();
    let http_out = at(entry, "http_out");
    let mut rows = vec![
        (
            "outside the handler: client, TCP, hyper".to_string(),
            client - handler,
        ),
        ("http_in: auth, body, parse, checks".into(), http_in),
        (
            "worker hop (queue and answer)".into(),
            worker - ledger_write,
        ),
        ("batch_wait: linger, in-flight slot".into(), batch_wait),
    ];
    let propose = if entry == leader {
        raft
    } else {
        let forward = at(entry, "forward");
        rows.push((
            "forward: follower → leader and back, less the leader's raft".into(),
            forward - raft,
        ));
        forward
    };
    rows.extend([
        ("raft: leader log append + fsync".into(), leader_log),
        (
            "raft: replication, follower append + fsync, commit".into(),
            raft - leader_log - apply,
        ),
        (
            "raft: apply (derive, sign, state transaction)".into(),
            apply,
        ),
        (
            "batcher → worker: outcome back".into(),
            ledger_write - batch_wait - propose,
        ),
        ("http_out: answer".into(), http_out),
        (
            "(memo) follower log append + fsync, each".into(),
            follower_log.iter().sum::<f64>() / follower_log.len().max(1) as f64,
        ),
    ]);
    rows
}

#[tokio::main]
async fn main() {
    let secs = draw_load::phase_seconds();
    let Setup {
        cluster,
        device,
        leader,
        follower,
        key,
        chains,
    } = draw_load::start().await;

    let mut columns = Vec::new();
    for (writers, entry) in [(1usize, leader), (1, follower), (16, leader), (64, leader)] {
        let before = scrape(&cluster).await;
        let phase = chained_draws(&cluster, leader, entry, &key, &chains[..writers], secs).await;
        let after = scrape(&cluster).await;
        let rows = breakdown(&before, &after, entry, leader, &phase);
        let through = if entry == leader {
            "leader"
        } else {
            "follower"
        };
        columns.push(Column {
            title: format!("{writers} at the {through}"),
            phase,
            rows,
        });
    }

    println!("One draw's latency by stage: 3 nodes (lan, fsync on), {secs} s per phase, one run; mean ms per draw");
    let header: Vec<String> = columns.iter().map(|c| c.title.clone()).collect();
    println!("| stage | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(columns.len()));
    let mut names: Vec<String> = Vec::new();
    for c in &columns {
        for (name, _) in &c.rows {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    for name in &names {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                c.rows
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("".to_string(), |(_, v)| format!("{v:.2}"))
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let line = |label: &str, f: &dyn Fn(&Phase) -> String| {
        let cells: Vec<String> = columns.iter().map(|c| f(&c.phase)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    line("**client mean**", &|p| {
        format!("**{:.2}**", p.mean.as_secs_f64() * 1e3)
    });
    line("client p50 / p99", &|p| {
        format!("{} / {}", ms(p.p50), ms(p.p99))
    });
    line("draws/s (failed)", &|p| {
        format!("{:.0} ({})", p.per_second, p.failed)
    });
    drop(device);
}
