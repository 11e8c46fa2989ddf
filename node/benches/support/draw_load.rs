//! What the end-to-end benchmarks share: a three-node cluster with a full
//! pool and a customer with its chains, and writers driving chained draws
//! over HTTP.

// Each benchmark compiles this file on its own and uses a part of it.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, Cluster, Device};

/// One call of a writer's loop: given the previous answer, the next one.
pub type Step =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// One phase's result, as the client measured it.
pub struct Phase {
    /// Requests answered as expected.
    pub completed: u64,
    pub per_second: f64,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub failed: u64,
}

/// Runs `writers` loops of `step` for `secs`, each starting from its own
/// `first(i)` and feeding each answer into its next call.
pub async fn drive(
    writers: usize,
    secs: u64,
    first: impl Fn(usize) -> String,
    step: Step,
) -> Phase {
    drive_spread(writers, secs, first, &[step]).await
}

/// As [`drive`], with writer `i` sending to `steps[i % steps.len()]`: the
/// writers spread over several entry points, as a balancer that keeps each
/// client's connection on one node spreads them.
pub async fn drive_spread(
    writers: usize,
    secs: u64,
    first: impl Fn(usize) -> String,
    steps: &[Step],
) -> Phase {
    let starts = (0..writers).map(first).collect();
    run(starts, Duration::from_secs(secs), steps)
        .await
        .0
        .phase()
}

/// What a run measured, before it is summed up: runs of the same kind can
/// be pooled (see [`alternating_draws`]).
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    failed: u64,
    elapsed: Duration,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }

    fn phase(mut self) -> Phase {
        let all = &mut self.latencies;
        all.sort();
        let at = |q: f64| geiger_testkit::measure::nearest_rank(all, q).unwrap_or_default();
        let total: Duration = all.iter().sum();
        Phase {
            completed: all.len() as u64,
            per_second: all.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            mean: total / (all.len().max(1) as u32),
            p50: at(0.50),
            p99: at(0.99),
            failed: self.failed,
        }
    }
}

/// One writer per entry of `starts`, writer `i` looping
/// `steps[i % steps.len()]` for `length` from its start; also returns
/// where each writer got to, so a later run can go on from there.
async fn run(starts: Vec<String>, length: Duration, steps: &[Step]) -> (Samples, Vec<String>) {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for (i, mut previous) in starts.into_iter().enumerate() {
        let step = steps[i % steps.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match step(previous.clone()).await {
                    Some(next) => {
                        latencies.push(t.elapsed());
                        previous = next;
                    }
                    None => failed += 1,
                }
            }
            (latencies, failed, previous)
        }));
    }
    let mut samples = Samples::default();
    let mut reached = Vec::new();
    for t in tasks {
        let (l, f, previous) = t.await.unwrap();
        samples.latencies.extend(l);
        samples.failed += f;
        reached.push(previous);
    }
    samples.elapsed = started.elapsed();
    (samples, reached)
}

/// A chained 6-of-49 draw on geiger at `url`; the answer is the new draw's ID.
pub fn geiger_step(url: String, key: String) -> Step {
    let http = reqwest::Client::new();
    Arc::new(move |previous: String| {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        Box::pin(async move {
            let body = json!({
                "previous": previous,
                "tag": "bench",
                "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true},
            });
            let r = http
                .post(format!("{url}/v1/draws"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .ok()?;
            if r.status() != 201 {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            v["draw"]["id"].as_str().map(str::to_string)
        })
    })
}

/// Each phase's length: `BENCH_SECONDS`, 10 by default.
pub fn phase_seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// A running cluster ready for draws.
pub struct Setup {
    pub cluster: Cluster,
    pub device: Device,
    pub leader: u64,
    pub follower: u64,
    pub key: String,
    /// One chain per writer, 64 of them.
    pub chains: Vec<String>,
}

/// Three nodes (lan timing, fsync on), customer rate limits lifted, a
/// device registered, the pool at its high-water mark, one customer with
/// 64 chains.
pub async fn start() -> Setup {
    let unlimited = [
        "GEIGER_API__RATE_PER_SECOND",
        "GEIGER_API__RATE_BURST",
        "GEIGER_API__ANONYMOUS_RATE_PER_SECOND",
        "GEIGER_API__ANONYMOUS_RATE_BURST",
    ]
    .iter()
    .map(|k| (k.to_string(), "100000000".to_string()))
    .collect();
    let cluster = Cluster::start_with_env(common::one_per_zone(3), "", unlimited);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let device = Device::start(&cluster.dir.path().join("device"), &["--rate", "1048576"]);
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    cluster
        .wait_until(Duration::from_secs(120), "a full pool", || async {
            // The owner stops pulling at the high-water mark (16 MiB).
            let s = cluster.status(leader).await?;
            (s["pool_bytes"].as_u64()? >= 16_000_000).then_some(())
        })
        .await;
    let (status, body) = cluster
        .post(leader, "/v1/admin/customers", &json!({"name": "bench"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let mut chains = Vec::new();
    for _ in 0..64 {
        let r: Value = http
            .post(format!("{}/v1/chains", cluster.url(leader)))
            .bearer_auth(&key)
            .json(&json!({"tag": "bench"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        chains.push(r["id"].as_str().unwrap().to_string());
    }
    Setup {
        cluster,
        device,
        leader,
        follower,
        key,
        chains,
    }
}

/// One phase of chained draws: one writer per chain in `chains`, sent to
/// node `entry` for `secs`. Each writer goes on from its chain's head as
/// the leader has it (earlier phases moved the chains on; a used
/// `previous` would only get 409s).
pub async fn chained_draws(
    cluster: &Cluster,
    leader: u64,
    entry: u64,
    key: &str,
    chains: &[String],
    secs: u64,
) -> Phase {
    let from = heads(cluster, leader, chains).await;
    drive(
        chains.len(),
        secs,
        move |i| from[i].clone(),
        geiger_step(cluster.url(entry), key.to_string()),
    )
    .await
}

/// As [`chained_draws`], with writer `i` sending to `entries[i % entries.len()]`.
pub async fn spread_draws(
    cluster: &Cluster,
    leader: u64,
    entries: &[u64],
    key: &str,
    chains: &[String],
    secs: u64,
) -> Phase {
    let from = heads(cluster, leader, chains).await;
    let steps: Vec<Step> = entries
        .iter()
        .map(|id| geiger_step(cluster.url(*id), key.to_string()))
        .collect();
    drive_spread(chains.len(), secs, move |i| from[i].clone(), &steps).await
}

/// The newest record of each chain: where its next draw goes on.
pub async fn heads(cluster: &Cluster, node: u64, chains: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for chain in chains {
        let (_, c) = cluster
            .get(node, &format!("/v1/chains/{chain}"))
            .await
            .unwrap();
        out.push(c["head"].as_str().unwrap().to_string());
    }
    out
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Chained draws on `chains` sent alternately to nodes `a` and `b`, in
/// one-second slices ordered a b b a a b b a..., `secs` seconds at each;
/// returns (at `a`, at `b`). Two phases run one after the other meet a
/// machine whose load drifts (other tenants, the page cache, the ledger
/// growing); slices this short, in this order, give both the same drift,
/// so a difference of a few tenths of a millisecond can be told from it.
pub async fn alternating_draws(
    cluster: &Cluster,
    leader: u64,
    (a, b): (u64, u64),
    key: &str,
    chains: &[String],
    secs: u64,
) -> (Phase, Phase) {
    let steps = [
        geiger_step(cluster.url(a), key.to_string()),
        geiger_step(cluster.url(b), key.to_string()),
    ];
    let mut at = [Samples::default(), Samples::default()];
    let mut previous = heads(cluster, leader, chains).await;
    for slice in 0..2 * secs {
        // a b, then b a: each node is as often first as second in a pair.
        let which = ((slice % 2) ^ ((slice / 2) % 2)) as usize;
        let (samples, reached) = run(previous, Duration::from_secs(1), &steps[which..=which]).await;
        at[which].add(samples);
        previous = reached;
    }
    let [at_a, at_b] = at;
    (at_a.phase(), at_b.phase())
}
