//! Resident memory of real `geiger node` processes as the ledger grows.
//!
//! Starts a 3-node cluster of release-built `geiger node` processes and one
//! simulated `geiger-device` on 127.0.0.1 (the launcher of the integration
//! tests, `node/tests/common`), then draws over HTTP with many concurrent
//! writers, each following its own chain via `previous`, until the ledger
//! holds `BENCH_DRAWS` draws. At the start, every tenth of the way and at
//! the end it prints, for each node process, `VmRSS` and `VmHWM` (with the
//! anonymous and file-backed parts of the RSS) from `/proc/<pid>/status`,
//! the space its data directory takes on disk, and its Raft role, term and
//! last snapshot; then the draws per second and any retries.
//!
//! Run (builds `geiger` and `geiger-device` in release):
//! `CARGO_TARGET_DIR=/work/targets/mem nice -n 19 cargo bench -p geiger-node --bench node_memory`
//!
//! Environment:
//! - `BENCH_DRAWS` (default 1,000,000): draws to put in the ledger;
//! - `BENCH_WRITERS` (default 64): concurrent writers, one chain each;
//! - `BENCH_SPREAD=1`: writers spread over the three nodes (followers
//!   forward to the leader) instead of all drawing through the leader;
//! - `BENCH_DEVICE_RATE` (bytes/s, default 1 MiB/s) and
//!   `BENCH_CHUNK_SIZE` (bytes, default 64 KiB, the link's maximum): the
//!   simulated device. A draw (6 of 49) takes 48 bytes, so the simulator's
//!   default 32 KiB/s would cap the cluster near 680 draws/s;
//! - `BENCH_SETTLE_SECS` (default 10): idle time before the last line;
//! - `BENCH_MIN_FREE_MIB` (default 3072): stop (and kill the nodes) when
//!   the file system holding the data has less than this free; the data
//!   directories take several GiB at 1,000,000 draws;
//! - `BENCH_NODE_ENV` (`K=V,K=V`): extra environment for the node
//!   processes, e.g. `MIMALLOC_PURGE_DELAY=0` or `GEIGER_RAFT__SNAPSHOT_EVERY=4000`;
//! - `GEIGER_TEST_KEEP=1` keeps the cluster's directory (configs, data, logs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, Device};
use serde_json::{json, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// A `Vm*`/`Rss*` line of `/proc/<pid>/status`, in bytes.
fn status_bytes(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Space allocated on disk under `path` (files' blocks, recursively).
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| disk_bytes(&e.path()))
                .sum::<u64>()
        })
        .unwrap_or(0)
}

/// Free space on the file system holding `path` (`df -Pk`), in bytes.
fn free_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One line per node: memory from `/proc`, its data directory on disk,
/// then its Raft role, term and last snapshot (from its own status).
async fn print_footprint(cluster: &Cluster, heading: &str) {
    // Memory and disk first, all nodes at the same moment; status after.
    let lines: Vec<(u64, String)> = cluster
        .ids()
        .into_iter()
        .map(|id| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", cluster.node(id).pid()))
                .unwrap_or_default();
            let data = cluster.dir.path().join(format!("node-{id}"));
            let line = format!(
                "VmRSS {:6.1} MiB (anon {:6.1}, file {:5.1})  VmHWM {:6.1} MiB  data dir {:7.1} MiB (state.redb {:7.1}, raft-log.redb {:6.1}, snapshots {:7.1})",
                status_bytes(&status, "VmRSS") as f64 / MIB,
                status_bytes(&status, "RssAnon") as f64 / MIB,
                status_bytes(&status, "RssFile") as f64 / MIB,
                status_bytes(&status, "VmHWM") as f64 / MIB,
                disk_bytes(&data) as f64 / MIB,
                disk_bytes(&data.join("state.redb")) as f64 / MIB,
                disk_bytes(&data.join("raft-log.redb")) as f64 / MIB,
                disk_bytes(&data.join("snapshots")) as f64 / MIB,
            );
            (id, line)
        })
        .collect();
    println!("{heading}");
    for (id, line) in lines {
        let raft = match cluster.status(id).await {
            Some(s) => format!(
                "{} term {} snapshot at {}",
                s["state"].as_str().unwrap_or("?"),
                s["term"],
                s["snapshot_index"]
            ),
            None => "status did not answer".into(),
        };
        println!("  node {id}: {line}  [{raft}]");
    }
}

/// What the writers ran into besides plain 201s.
#[derive(Default)]
struct Hiccups {
    entropy_exhausted: AtomicU64,
    unavailable: AtomicU64,
    rate_limited: AtomicU64,
    already_used: AtomicU64,
    transport: AtomicU64,
}

struct Writer {
    http: reqwest::Client,
    url: String,
    key: String,
    previous: String,
    target: u64,
    claimed: Arc<AtomicU64>,
    drawn: Arc<AtomicU64>,
    hiccups: Arc<Hiccups>,
}

impl Writer {
    /// Draws on its chain until the writers together have claimed `target`
    /// draws. A draw whose answer was lost is found again by its 409 (the
    /// chain already moved on), so every claimed draw is counted once.
    async fn run(mut self) {
        while self.claimed.fetch_add(1, Ordering::Relaxed) < self.target {
            self.previous = self.draw_once().await;
            self.drawn.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn draw_once(&self) -> String {
        let body = json!({
            "previous": self.previous,
            "tag": "round",
            "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true},
        });
        loop {
            let sent = self
                .http
                .post(format!("{}/v1/draws", self.url))
                .bearer_auth(&self.key)
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(_) => {
                    self.hiccups.transport.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let Ok(bytes) = response.bytes().await else {
                self.hiccups.transport.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().unwrap_or_default();
            match (status, code) {
                (201, _) => {
                    if let Some(id) = v["draw"]["id"].as_str() {
                        return id.to_string();
                    }
                }
                (409, "previous_already_used") => {
                    self.hiccups.already_used.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = v["error"]["existing_id"].as_str() {
                        return id.to_string();
                    }
                }
                (503, "entropy_exhausted") => {
                    self.hiccups
                        .entropy_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                (503, _) => {
                    self.hiccups.unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                (429, _) => {
                    self.hiccups.rate_limited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                _ => {}
            }
            panic!(
                "draw on {} answered {status}: {}",
                self.previous,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

fn main() {
    let draws = env_u64("BENCH_DRAWS", 1_000_000);
    let writers = env_u64("BENCH_WRITERS", 64).max(1);
    let spread = std::env::var("BENCH_SPREAD").is_ok_and(|v| v == "1");
    let device_rate = env_u64("BENCH_DEVICE_RATE", 1 << 20);
    let chunk_size = env_u64("BENCH_CHUNK_SIZE", 64 << 10);
    let settle = Duration::from_secs(env_u64("BENCH_SETTLE_SECS", 10));
    let every = (draws / 10).max(1);
    let min_free = env_u64("BENCH_MIN_FREE_MIB", 3072) << 20;
    let node_env: Vec<(String, String)> = std::env::var("BENCH_NODE_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The per-customer rate limit (500/s by default) would be the
        // bottleneck: lift it. Everything else is the node's default.
        let mut env = vec![
            ("GEIGER_API__RATE_PER_SECOND".into(), "1000000".into()),
            ("GEIGER_API__RATE_BURST".into(), "1000000".into()),
        ];
        env.extend(node_env.iter().cloned());
        let cluster = Cluster::start_with_env(common::one_per_zone(3), "", env);
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
        let rate = device_rate.to_string();
        let chunk = chunk_size.to_string();
        let device = Device::start(
            &cluster.dir.path().join("device"),
            &["--rate", &rate, "--chunk-size", &chunk],
        );
        let (status, body) = cluster
            .post(leader, "/v1/admin/links", &device.registration())
            .await
            .expect("POST /v1/admin/links");
        assert!(status == 201 || status == 200, "link: {status} {body}");
        cluster
            .wait_until(Duration::from_secs(60), "1 MiB in the pool", || async {
                let s = cluster.status(leader).await?;
                (s["pool_bytes"].as_u64()? >= 1 << 20).then_some(())
            })
            .await;
        let (status, body) = cluster
            .post(leader, "/v1/admin/customers", &json!({"name": "bench"}))
            .await
            .expect("POST /v1/admin/customers");
        assert_eq!(status, 201, "{body}");
        let key = body["api_key"].as_str().expect("api_key").to_string();

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(writers as usize)
            .build()
            .expect("http client");
        let mut chains = Vec::new();
        for w in 0..writers {
            let r = http
                .post(format!("{}/v1/chains", cluster.url(leader)))
                .bearer_auth(&key)
                .json(&json!({"tag": format!("writer {w}")}))
                .send()
                .await
                .expect("POST /v1/chains");
            assert_eq!(r.status().as_u16(), 201);
            let v: Value = r.json().await.expect("chain JSON");
            chains.push(v["id"].as_str().expect("chain id").to_string());
        }

        println!(
            "geiger node memory: 3 nodes, {draws} draws, {writers} writers through {}, device {device_rate} B/s in chunks of {chunk_size} B",
            if spread { "all three nodes" } else { "the leader" }
        );
        if !node_env.is_empty() {
            println!("node environment: {node_env:?}");
        }
        print_footprint(&cluster, "       0 draws in the ledger").await;

        let claimed = Arc::new(AtomicU64::new(0));
        let drawn = Arc::new(AtomicU64::new(0));
        let hiccups = Arc::new(Hiccups::default());
        let ids = cluster.ids();
        let start = Instant::now();
        let tasks: Vec<_> = chains
            .iter()
            .enumerate()
            .map(|(w, chain)| {
                let node = if spread { ids[w % ids.len()] } else { leader };
                tokio::spawn(
                    Writer {
                        http: http.clone(),
                        url: cluster.url(node),
                        key: key.clone(),
                        previous: chain.clone(),
                        target: draws,
                        claimed: claimed.clone(),
                        drawn: drawn.clone(),
                        hiccups: hiccups.clone(),
                    }
                    .run(),
                )
            })
            .collect();

        let mut next = every;
        let (mut last_at, mut last_drawn) = (start, 0);
        let mut polls = 0u64;
        while next <= draws {
            tokio::time::sleep(Duration::from_millis(100)).await;
            polls += 1;
            if polls % 10 == 0 {
                let free = free_bytes(cluster.dir.path()).unwrap_or(u64::MAX);
                assert!(
                    free >= min_free,
                    "stopping: {} MiB free on the data's file system (BENCH_MIN_FREE_MIB)",
                    free >> 20
                );
            }
            let now = drawn.load(Ordering::Relaxed);
            if now < next {
                if tasks.iter().all(|t| t.is_finished()) {
                    break;
                }
                continue;
            }
            let at = Instant::now();
            let rate = (now - last_drawn) as f64 / at.duration_since(last_at).as_secs_f64();
            print_footprint(
                &cluster,
                &format!(
                    "{now:8} draws in the ledger, {:6.1} s, {rate:6.0} draws/s since the line before",
                    start.elapsed().as_secs_f64()
                ),
            )
            .await;
            (last_at, last_drawn) = (at, now);
            while next <= now {
                next += every;
            }
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let elapsed = start.elapsed();
        let total = drawn.load(Ordering::Relaxed);

        // The chains' lengths, read back through a linearizable read.
        let mut in_chains = 0;
        for chain in &chains {
            let (status, v) = cluster
                .get(leader, &format!("/v1/chains/{chain}"))
                .await
                .expect("GET /v1/chains/{id}");
            assert_eq!(status, 200, "{v}");
            in_chains += v["length"].as_u64().unwrap_or(0);
        }
        let h = &hiccups;
        println!(
            "{total} draws in {:.1} s: {:.0} draws/s ({in_chains} in the chains' lengths); \
             retried: {} entropy_exhausted, {} unavailable, {} rate_limited, {} transport errors; {} 409s after a lost answer",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            h.entropy_exhausted.load(Ordering::Relaxed),
            h.unavailable.load(Ordering::Relaxed),
            h.rate_limited.load(Ordering::Relaxed),
            h.transport.load(Ordering::Relaxed),
            h.already_used.load(Ordering::Relaxed),
        );
        assert_eq!(in_chains, total, "the chains hold every counted draw");
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
            print_footprint(
                &cluster,
                &format!("{total:8} draws, idle for {} s", settle.as_secs()),
            )
            .await;
        }
        drop(device);
    });
}
