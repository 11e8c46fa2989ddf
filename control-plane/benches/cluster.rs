//! Throughput, latency and failover of a 3-node control plane on loopback,
//! fsync on (every node's log commits are `Durability::Immediate`).
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/cp cargo bench -p geiger-control-plane --bench cluster`
//!
//! Environment: `BENCH_SECS` (per writer count, default 5), `BENCH_WRITERS`
//! (writer counts, default `1,16,64`; empty skips), `BENCH_TRIALS`
//! (failover trials, default 10; 0 skips), `BENCH_SPREAD=1` to send writes to all
//! three nodes round-robin (followers forward to the leader) instead of
//! only to the leader.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_control_plane::{Command, ControlPlane, ControlPlaneConfig, Outcome};
use geiger_testkit::in_process::{draw_request, TestCluster};
use geiger_testkit::measure::{nearest_rank, process_cpu_time, resident_memory_line};

/// The allocator the `geiger` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn tune(config: &mut ControlPlaneConfig) {
    geiger_testkit::in_process::default_tune(config);
    let ms = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    };
    if let Some(d) = ms("BENCH_HEARTBEAT_MS") {
        config.timeouts.heartbeat = d;
    }
    if let Some(d) = ms("BENCH_ELECTION_MIN_MS") {
        config.timeouts.election_min = d;
    }
    if let Some(d) = ms("BENCH_ELECTION_MAX_MS") {
        config.timeouts.election_max = d;
    }
    if let Ok(v) = std::env::var("BENCH_MAX_BATCH") {
        config.max_batch = v.parse().unwrap_or(config.max_batch);
    }
    if let Ok(v) = std::env::var("BENCH_LINGER_US") {
        config.batch_linger = Duration::from_micros(v.parse().unwrap_or(500));
    }
    if let Ok(v) = std::env::var("BENCH_INFLIGHT") {
        config.max_inflight_batches = v.parse().unwrap_or(config.max_inflight_batches);
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    nearest_rank(sorted, p).unwrap_or_default()
}

async fn new_chain(cp: &ControlPlane) -> String {
    match cp
        .write(Command::CreateChain {
            customer: "cu_test".into(),
            tag: "bench".into(),
        })
        .await
        .expect("chain")
    {
        Outcome::ChainCreated { id, .. } => id.to_string(),
        other => panic!("chain: {other:?}"),
    }
}

/// One writer: draws back to back on its own chain until `stop`.
async fn writer(cp: ControlPlane, mut previous: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let outcome = cp
            .write(Command::Draw {
                customer: "cu_test".into(),
                request: draw_request(&previous, None),
            })
            .await;
        match outcome {
            Ok(Outcome::Drawn { id, .. }) => {
                latencies.push(start.elapsed());
                previous = id.to_string();
            }
            other => panic!("draw failed: {other:?}"),
        }
    }
    latencies
}

async fn throughput(cluster: &TestCluster, writers: usize, secs: u64, spread: bool) {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    let mut chains = Vec::new();
    for i in 0..writers {
        let node = if spread { i % 3 } else { leader };
        chains.push((node, new_chain(cluster.node(node)).await));
    }
    // Warm up, then measure.
    for (phase, secs) in [("warmup", 1), ("measure", secs)] {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (node, chain) in &chains {
            let cp = cluster.node(*node).clone();
            let head = cp.chain_linearizable(chain).await.unwrap().unwrap().head;
            tasks.push(tokio::spawn(writer(cp, head, stop.clone())));
        }
        let started = Instant::now();
        let cpu_started = process_cpu_time();
        let sampler = tokio::spawn(pipeline_gaps(cluster.node(leader).clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let gaps = sampler.await.unwrap();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_started);
        if phase == "warmup" {
            continue;
        }
        all.sort();
        println!(
            "writers={writers:3} draws={:7} draws/s={:8.0} p50={:7.3}ms p99={:7.3}ms max={:7.3}ms cpu/draw={:.0}us (all 3 replicas) cores={:.2}",
            all.len(),
            all.len() as f64 / elapsed.as_secs_f64(),
            percentile(&all, 0.50).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
            all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e6 / all.len().max(1) as f64,
            cpu.as_secs_f64() / elapsed.as_secs_f64(),
        );
        if env("BENCH_PIPELINE", 0) == 1 {
            println!("  leader pipeline, mean entries behind its last log entry: {gaps}");
        }
    }
}

/// Samples the leader every 5 ms until `stop`: how many entries its
/// fastest follower has not yet acknowledged, and how many it has not yet
/// applied itself. Shows which stage writes wait in.
async fn pipeline_gaps(cp: ControlPlane, stop: Arc<AtomicBool>) -> String {
    let (mut unacked, mut unapplied, mut n) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let m = cp.raft().metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let acked = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .filter_map(|(_, l)| l.map(|l| l.index))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        unacked += last.saturating_sub(acked);
        unapplied += last.saturating_sub(applied);
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = n.max(1) as f64;
    format!(
        "not acknowledged by a follower {:.2}, not applied {:.2}",
        unacked as f64 / n,
        unapplied as f64 / n
    )
}

/// Kills the leader while a follower writes; measures kill → next commit.
async fn failover(cluster: &mut TestCluster, trials: u64) {
    let mut samples = Vec::new();
    for trial in 0..trials {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let writer_node = (leader + 1) % 3;
        let cp = cluster.node(writer_node).clone();
        let chain = new_chain(&cp).await;
        let mut previous = cp.chain_linearizable(&chain).await.unwrap().unwrap().head;
        // A few draws so the path is warm.
        for _ in 0..5 {
            match cp
                .write(Command::Draw {
                    customer: "cu_test".into(),
                    request: draw_request(&previous, None),
                })
                .await
                .unwrap()
            {
                Outcome::Drawn { id, .. } => previous = id.to_string(),
                other => panic!("{other:?}"),
            }
        }
        let killed_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let killed2 = killed_at.clone();
        let cp2 = cp.clone();
        let writer = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let request_id = format!("t{trial}-{n}");
                let attempt_started = Instant::now();
                let outcome = cp2
                    .write(Command::Draw {
                        customer: "cu_test".into(),
                        request: draw_request(&previous, Some(&request_id)),
                    })
                    .await;
                let done = Instant::now();
                match outcome {
                    Ok(Outcome::Drawn { id, .. }) | Ok(Outcome::Replayed { id, .. }) => {
                        previous = id.to_string();
                        n += 1;
                        // Only a write proposed after the kill counts: one
                        // already committed when the leader died proves nothing.
                        let killed = *killed2.lock().unwrap();
                        if let Some(k) = killed {
                            if attempt_started >= k {
                                return done.duration_since(k);
                            }
                        }
                    }
                    // An unknown outcome: retry the same request id.
                    Err(_) => {}
                    Ok(other) => panic!("{other:?}"),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kill_started = Instant::now();
        *killed_at.lock().unwrap() = Some(kill_started);
        cluster.kill(leader).await;
        let kill_took = kill_started.elapsed();
        let elected = cluster.wait_for_leader(Duration::from_secs(10)).await.ok();
        let elected_after = kill_started.elapsed();
        let took = writer.await.unwrap();
        println!(
            "failover trial {trial}: {:.1} ms (kill took {:.1} ms, new leader {:?} seen after {:.1} ms)",
            took.as_secs_f64() * 1e3,
            kill_took.as_secs_f64() * 1e3,
            elected,
            elected_after.as_secs_f64() * 1e3
        );
        samples.push(took);
        cluster.restart(leader).await.unwrap();
        cluster.node(leader).linearizable_barrier().await.unwrap();
    }
    samples.sort();
    println!(
        "failover: median={:.1}ms min={:.1}ms max={:.1}ms over {} trials",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    );
}

fn main() {
    geiger_control_plane::memory::disable_transparent_huge_pages();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let secs = env("BENCH_SECS", 5);
        let trials = env("BENCH_TRIALS", 10);
        let spread = env("BENCH_SPREAD", 0) == 1;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = TestCluster::start(dir.path(), 3, tune)
            .await
            .expect("cluster");
        // Enough entropy for every draw below (6 of 49 uses 48 bytes).
        cluster.seed("sk_bench", 6000, 4096).await.expect("seed");
        println!(
            "3-node loopback cluster, fsync on, writes to {}",
            if spread { "all nodes" } else { "the leader" }
        );
        let writer_counts = std::env::var("BENCH_WRITERS").unwrap_or_else(|_| "1,16,64".into());
        for writers in writer_counts
            .split(',')
            .filter_map(|w| w.trim().parse().ok())
        {
            throughput(&cluster, writers, secs, spread).await;
        }
        if trials > 0 {
            failover(&mut cluster, trials).await;
        }
        let status = cluster.node(0).status().expect("status");
        let rss = resident_memory_line();
        println!(
            "ledger: last applied index {:?}, snapshot {:?}; process (3 replicas) {rss}",
            status.last_applied_index, status.snapshot_index
        );
        for i in 0..3 {
            cluster.kill(i).await;
        }
    });
}
