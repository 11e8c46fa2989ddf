//! geiger as its users meet it, side by side with etcd in one run.
//!
//! - geiger: three `geiger node` processes on 127.0.0.1 (`lan` timing,
//!   fsync on, release build), a simulated device filling the pool, and
//!   this process as the client: HTTP/1.1 with keep-alive, chained 6-of-49
//!   draws, each writer on its own chain, at 1, 16 and 64 writers, sent to
//!   the leader; then, at 1 and 64, alternating in one-second slices
//!   between the leader and a follower, for the cost of forwarding.
//! - etcd: three members of Debian's `etcd-server` (defaults, fsync on)
//!   doing the equivalent chained conditional append through its JSON
//!   gateway: a transaction that puts a 300-byte record at `succ/<previous>`
//!   only if that key does not exist yet, each writer on its own chain.
//! - lookups: `wrk` (16, then 64 connections) against a geiger follower,
//!   `GET /v1/draws/{id}`.
//! - as deployed, 64 writers again: spread over the three members (writer
//!   `i` at member `i % 3`, as the shipped edge's `leastconn` spreads
//!   clients); then each member held to the same share of a core (a cgroup
//!   CPU quota, `BENCH_MEMBER_CPU` cores, default 0.5; `0` skips these;
//!   needs root), with the writers at the leader and then spread. Held,
//!   the member that does the most work per write throttles first, as it
//!   would on a machine of its own. The device and this client are not
//!   held.
//!
//! Phases alternate between the systems at each writer count, so a noisy
//! machine hurts both alike; the table ends with the ratios geiger/etcd.
//! Also reported: the CPU each write phase cost per answered write (the
//! servers' processes, the busiest of them, and this client's; at
//! saturation on a shared machine the ratio of throughputs follows the
//! servers' sum) and what the servers wrote to storage per write (from
//! `/proc/<pid>/io`), and the idle cluster's CPU (pool full, no requests),
//! per node.
//!
//! Run: `cargo bench -p geiger-node --bench e2e_vs_etcd` with `etcd` and
//! `wrk` on PATH (`apt-get install etcd-server wrk`). `BENCH_SECONDS`
//! (default 10) sets each phase's length.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/draw_load.rs"]
mod draw_load;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use draw_load::{
    alternating_draws, chained_draws, drive, drive_spread, ms, spread_draws, Setup, Step,
};
use geiger_testkit::cpu_quota::CpuQuota;
use serde_json::{json, Value};

/// The same chained conditional append on etcd at `url`: the record goes
/// to `succ/<previous>` if nothing is there yet; the next link is new.
fn etcd_step(url: String) -> Step {
    let http = reqwest::Client::new();
    let record = vec![b'r'; 300];
    Arc::new(move |previous: String| {
        let (http, url) = (http.clone(), url.clone());
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let key = b64(format!("succ/{previous}").as_bytes());
        let value = b64(&record);
        Box::pin(async move {
            let txn = json!({
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": value}}],
            });
            let r = http
                .post(format!("{url}/v3/kv/txn"))
                .json(&txn)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            if v["succeeded"] != true {
                return None;
            }
            let revision = v["header"]["revision"].as_str()?.to_string();
            Some(format!("{previous}.{revision}"))
        })
    })
}

/// A three-member etcd on loopback; killed on drop.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_etcd(dir: &Path) -> Etcd {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| (common::free_port(), common::free_port()))
        .collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("etcd-{i}.log"))).unwrap();
        children.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "geiger-bench"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd starts (apt-get install etcd-server)"),
        );
    }
    Etcd {
        children,
        clients: ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect(),
    }
}

/// The client URL of etcd's leader, once there is one.
async fn etcd_leader(etcd: &Etcd) -> String {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for url in &etcd.clients {
            let status: Option<Value> = match http
                .post(format!("{url}/v3/maintenance/status"))
                .json(&json!({}))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if let Some(s) = status {
                if s["leader"].is_string() && s["leader"] == s["header"]["member_id"] {
                    return url.clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("etcd elected no leader in 30 s");
}

/// Lookups of `draw` by wrk over `connections` against `url`: (per
/// second, p99).
fn wrk_lookups(url: &str, draw: &str, connections: u32, secs: u64) -> (f64, String) {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(format!("{url}/v1/draws/{draw}"))
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .unwrap_or_default();
    if !non_2xx.is_empty() {
        eprintln!("wrk: {non_2xx}");
    }
    (rate, p99)
}

/// User plus system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    geiger_testkit::measure::cpu_time_of(pid).as_secs_f64()
}

/// CPU a phase cost per request, in µs: the servers' (the processes in
/// `servers`, summed), the busiest server's, and this client's. At
/// saturation on a shared machine the sum, not the rate, says which system
/// does more work per write; with one machine per member, as deployed, the
/// busiest member's share is what would run out first.
struct CpuPerRequest {
    servers_us: f64,
    busiest: (String, f64),
    client_us: f64,
    /// What the servers wrote to storage per request, in KiB (all members:
    /// logs, state files, pages each B-tree copied on write).
    servers_written_kib: f64,
}

impl std::fmt::Display for CpuPerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} µs servers (busiest: {} {:.0} µs) + {:.0} µs client; {:.1} KiB written to storage",
            self.servers_us,
            self.busiest.0,
            self.busiest.1,
            self.client_us,
            self.servers_written_kib
        )
    }
}

/// Runs `phase` and measures what it cost each of `servers` (name, pid)
/// and this process.
async fn with_cpu(
    servers: &[(String, u32)],
    phase: impl std::future::Future<Output = draw_load::Phase>,
) -> (draw_load::Phase, CpuPerRequest) {
    let each = || {
        servers
            .iter()
            .map(|(_, p)| cpu_seconds(*p))
            .collect::<Vec<_>>()
    };
    let own = || geiger_testkit::measure::process_cpu_time().as_secs_f64();
    let written = || -> u64 {
        servers
            .iter()
            .map(|(_, p)| geiger_testkit::measure::storage_writes_of(*p))
            .sum()
    };
    let (servers_before, own_before, written_before) = (each(), own(), written());
    let result = phase.await;
    let requests = result.completed.max(1) as f64;
    let per_request: Vec<f64> = each()
        .iter()
        .zip(&servers_before)
        .map(|(after, before)| (after - before) * 1e6 / requests)
        .collect();
    let busiest = per_request
        .iter()
        .zip(servers)
        .max_by(|a, b| a.0.total_cmp(b.0))
        .map(|(us, (name, _))| (name.clone(), *us))
        .unwrap_or_default();
    let cpu = CpuPerRequest {
        servers_us: per_request.iter().sum(),
        busiest,
        client_us: (own() - own_before) * 1e6 / requests,
        servers_written_kib: written().saturating_sub(written_before) as f64 / 1024.0 / requests,
    };
    (result, cpu)
}

/// How the 64 writers meet the cluster in the deployment-shaped phases.
struct Shape {
    label: &'static str,
    /// Writers spread over every member, or all at the leader.
    spread: bool,
    /// Each member held to this share of a core, or sharing the machine.
    held: Option<f64>,
}

impl Shape {
    fn describe(&self) -> String {
        let entry = if self.spread {
            "writers spread over the members"
        } else {
            "writers at the leader"
        };
        match self.held {
            Some(cores) => format!("{entry}, each member held to {cores} of a core"),
            None => format!("{entry}, members sharing the machine"),
        }
    }
}

/// The phases after the main table: writers spread over the members as
/// the shipped edge spreads them, then (unless `BENCH_MEMBER_CPU=0`) each
/// member held to `BENCH_MEMBER_CPU` cores (default 0.5), at the leader
/// and spread, standing in for one machine per member.
fn deployed_shapes() -> Vec<Shape> {
    let cores: f64 = std::env::var("BENCH_MEMBER_CPU")
        .ok()
        .map(|s| s.parse().expect("BENCH_MEMBER_CPU is a number of cores"))
        .unwrap_or(0.5);
    let mut shapes = vec![Shape {
        label: "spread",
        spread: true,
        held: None,
    }];
    if cores > 0.0 {
        shapes.push(Shape {
            label: "held",
            spread: false,
            held: Some(cores),
        });
        shapes.push(Shape {
            label: "spread-held",
            spread: true,
            held: Some(cores),
        });
    }
    shapes
}

/// Runs a write phase with each of `servers` held to `held` cores (or
/// sharing the machine: `None`): what it cost, as [`with_cpu`], and how
/// many CFS periods each member was throttled in (none when not held).
async fn with_cpu_held(
    servers: &[(String, u32)],
    held: Option<f64>,
    phase: impl std::future::Future<Output = draw_load::Phase>,
) -> std::io::Result<(draw_load::Phase, CpuPerRequest, Vec<u64>)> {
    let quotas = match held {
        Some(cores) => servers
            .iter()
            .map(|(_, pid)| CpuQuota::limit(&format!("geiger-bench-{pid}"), *pid, cores))
            .collect::<std::io::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let (result, cpu) = with_cpu(servers, phase).await;
    let throttled = quotas.iter().map(CpuQuota::throttled_periods).collect();
    drop(quotas);
    Ok((result, cpu, throttled))
}

/// The index of each node's last snapshot. A snapshot dumps the whole
/// state on every member at about the same moment (seconds of CPU each, at
/// the ledger sizes this benchmark reaches), so a phase it falls in is
/// marked.
async fn snapshot_indexes(cluster: &common::Cluster) -> Vec<Value> {
    let mut out = Vec::new();
    for id in cluster.ids() {
        out.push(
            cluster
                .status(id)
                .await
                .map(|s| s["snapshot_index"].clone())
                .unwrap_or_default(),
        );
    }
    out
}

/// Runs `phase`; also says whether any node built a snapshot meanwhile.
async fn noting_snapshots<T>(
    cluster: &common::Cluster,
    phase: impl std::future::Future<Output = T>,
) -> (T, bool) {
    let before = snapshot_indexes(cluster).await;
    let out = phase.await;
    (out, snapshot_indexes(cluster).await != before)
}

/// geiger's throughput, p50 and p99 over etcd's.
fn ratios(g: &draw_load::Phase, e: &draw_load::Phase) -> (f64, f64, f64) {
    (
        g.per_second / e.per_second,
        g.p50.as_secs_f64() / e.p50.as_secs_f64(),
        g.p99.as_secs_f64() / e.p99.as_secs_f64(),
    )
}

fn snapshot_note(built: bool) -> &'static str {
    if built {
        " (a snapshot was built during geiger's phase)"
    } else {
        ""
    }
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

    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(etcd_dir.path());
    let etcd_url = etcd_leader(&etcd).await;

    // Idle: pool full, no requests, etcd idle too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<(u64, u32)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.node(id).pid()))
        .collect();
    let before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let idle_secs = secs.max(10);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle: Vec<String> = pids
        .iter()
        .zip(&before)
        .map(|((id, p), b)| {
            format!(
                "node {id} {:.2} %",
                (cpu_seconds(*p) - b) * 100.0 / idle_secs as f64
            )
        })
        .collect();

    // The device process counts with geiger's servers: it feeds the pool.
    let geiger_pids: Vec<(String, u32)> = pids
        .iter()
        .map(|(id, p)| {
            let role = if *id == leader { " (leader)" } else { "" };
            (format!("node {id}{role}"), *p)
        })
        .chain([("device".to_string(), device.pid())])
        .collect();
    let etcd_pids: Vec<(String, u32)> = etcd
        .children
        .iter()
        .zip(&etcd.clients)
        .enumerate()
        .map(|(i, (c, url))| {
            let role = if *url == etcd_url { " (leader)" } else { "" };
            (format!("member {}{role}", i + 1), c.id())
        })
        .collect();
    let mut rows = Vec::new();
    let mut via_follower = Vec::new();
    for (round, writers) in [1usize, 16, 64].into_iter().enumerate() {
        let g = noting_snapshots(
            &cluster,
            with_cpu(
                &geiger_pids,
                chained_draws(&cluster, leader, leader, &key, &chains[..writers], secs),
            ),
        )
        .await;
        // Through a follower (forwarded to the leader), for the cost of the
        // hop: one-second slices alternating between the leader and a
        // follower, so both meet the machine in the same state (two phases
        // in a row differed by more than the hop itself).
        if writers != 16 {
            let (direct, forwarded) = alternating_draws(
                &cluster,
                leader,
                (leader, follower),
                &key,
                &chains[..writers],
                secs,
            )
            .await;
            via_follower.push((writers, direct, forwarded));
        }
        let e = with_cpu(
            &etcd_pids,
            drive(
                writers,
                secs,
                move |i| format!("r{round}-w{i}"),
                etcd_step(etcd_url.clone()),
            ),
        )
        .await;
        rows.push((writers, g, e));
    }
    // As deployed: the shipped edge (deploy/, HAProxy `leastconn`) spreads
    // clients over every node, and each member has a machine of its own.
    let geiger_members = &geiger_pids[..pids.len()]; // the device is hardware of its own
    let all_nodes = cluster.ids();
    let mut shaped = Vec::new();
    for shape in deployed_shapes() {
        let g = async {
            if shape.spread {
                spread_draws(&cluster, leader, &all_nodes, &key, &chains[..64], secs).await
            } else {
                chained_draws(&cluster, leader, leader, &key, &chains[..64], secs).await
            }
        };
        let etcd_steps: Vec<Step> = if shape.spread {
            etcd.clients.iter().cloned().map(etcd_step).collect()
        } else {
            vec![etcd_step(etcd_url.clone())]
        };
        let label = shape.label;
        let e = drive_spread(64, secs, move |i| format!("{label}-w{i}"), &etcd_steps);
        let (g, built) =
            noting_snapshots(&cluster, with_cpu_held(geiger_members, shape.held, g)).await;
        let e = with_cpu_held(&etcd_pids, shape.held, e).await;
        let measured = g.and_then(|g| e.map(|e| (g, e, built)));
        shaped.push((shape, measured));
    }
    let (_, c) = cluster
        .get(leader, &format!("/v1/chains/{}", chains[0]))
        .await
        .unwrap();
    let some_draw = c["head"].as_str().unwrap().to_string();
    // wrk keeps every connection busy, so p99 is queueing at saturation:
    // two loads show the rate a node sustains and what p99 it costs.
    let lookups: Vec<(u32, f64, String)> = [16, 64]
        .into_iter()
        .map(|c| {
            let (rate, p99) = wrk_lookups(&cluster.url(follower), &some_draw, c, secs);
            (c, rate, p99)
        })
        .collect();

    println!("e2e: 3 geiger nodes (lan, fsync) vs 3 etcd members, {secs} s per phase, one run");
    println!("| writers | geiger draws/s | p50 | p99 | failed | etcd txn/s | p50 | p99 | failed | ratio /s | ratio p50 | ratio p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (writers, ((g, _), built), (e, _)) in &rows {
        let (per_second, p50, p99) = ratios(g, e);
        println!(
            "| {writers} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2}{} |",
            g.per_second,
            ms(g.p50),
            ms(g.p99),
            g.failed,
            e.per_second,
            ms(e.p50),
            ms(e.p99),
            e.failed,
            per_second,
            p50,
            p99,
            snapshot_note(*built),
        );
    }
    for (writers, ((_, g), _), (_, e)) in &rows {
        println!("CPU per write, {writers} writers: geiger {g} (nodes and device); etcd {e}");
    }
    for (writers, direct, g) in &via_follower {
        println!(
            "through a follower, {writers} writers (1 s slices alternating with the leader): {:.0} draws/s, p50 {} against {} at the leader ({:.2}×), p99 {} against {}, failed {} and {}",
            g.per_second,
            ms(g.p50),
            ms(direct.p50),
            g.p50.as_secs_f64() / direct.p50.as_secs_f64(),
            ms(g.p99),
            ms(direct.p99),
            g.failed,
            direct.failed,
        );
    }
    for (shape, measured) in &shaped {
        let what = shape.describe();
        match measured {
            Err(e) => println!("{what}: skipped, no CPU quota could be set ({e})"),
            Ok(((g, gc, gt), (e, ec, et), built)) => {
                let (per_second, p50, p99) = ratios(g, e);
                println!(
                    "{what}, 64 writers: geiger {:.0} draws/s, p50 {}, p99 {}, failed {}; etcd {:.0} txn/s, p50 {}, p99 {}, failed {}; ratio /s {:.2}, p50 {:.2}, p99 {:.2}{}",
                    g.per_second,
                    ms(g.p50),
                    ms(g.p99),
                    g.failed,
                    e.per_second,
                    ms(e.p50),
                    ms(e.p99),
                    e.failed,
                    per_second,
                    p50,
                    p99,
                    snapshot_note(*built),
                );
                let throttled = if gt.is_empty() {
                    String::new()
                } else {
                    format!("; periods throttled per member: geiger {gt:?}, etcd {et:?}")
                };
                println!("  CPU per write: geiger {gc}; etcd {ec}{throttled}");
            }
        }
    }
    for (connections, rate, p99) in &lookups {
        println!("lookups at a follower (wrk, {connections} connections): {rate:.0}/s, p99 {p99}");
    }
    println!(
        "idle CPU over {idle_secs} s (pool full, no requests): {}",
        idle.join(", ")
    );
    drop(etcd);
    drop(device);
}
