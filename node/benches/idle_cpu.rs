//! An idle cluster's CPU, per node and per thread: three `geiger node`
//! processes on 127.0.0.1 (`lan` timing, fsync on, release build) with a
//! simulated device, the pool at its high-water mark, no requests. Where an
//! idle node spends its CPU, by thread name (tokio workers, the Raft log
//! writer, the state writeback, ...).
//!
//! Run: `cargo bench -p geiger-node --bench idle_cpu`; `IDLE_SECONDS`
//! (default 30) sets the measured window.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Device};
use geiger_testkit::measure::{context_switches_of, cpu_time_by_thread, cpu_time_of};

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // A small pool fills in seconds; what an idle node does once the pool
    // is full does not depend on its size.
    let cluster = Cluster::start(
        common::one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 1048576\npool_low_water_bytes = 524288\n",
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let device = Device::start(&cluster.dir.path().join("device"), &["--rate", "1048576"]);
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    cluster
        .wait_until(Duration::from_secs(60), "a full pool", || async {
            let s = cluster.status(leader).await?;
            (s["pool_bytes"].as_u64()? >= 1_000_000).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let pids: BTreeMap<u64, u32> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.node(id).pid()))
        .collect();
    let before: BTreeMap<u64, (Duration, BTreeMap<String, Duration>, u64)> = pids
        .iter()
        .map(|(id, pid)| {
            (
                *id,
                (
                    cpu_time_of(*pid),
                    cpu_time_by_thread(*pid),
                    context_switches_of(*pid),
                ),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let leader_now = cluster.wait_for_leader(Duration::from_secs(5)).await;
    println!("idle CPU over {secs} s (pool full, no requests), % of one core:");
    for (id, pid) in &pids {
        let (total_before, threads_before, switches_before) = &before[id];
        let total = cpu_time_of(*pid) - *total_before;
        let switches = context_switches_of(*pid) - switches_before;
        let pct = |d: Duration| d.as_secs_f64() * 100.0 / secs as f64;
        let role = if *id == leader_now {
            "leader"
        } else {
            "follower"
        };
        println!(
            "node {id} ({role}): {:.2} %, {:.0} context switches/s",
            pct(total),
            switches as f64 / secs as f64
        );
        let mut threads: Vec<(String, Duration)> = cpu_time_by_thread(*pid)
            .into_iter()
            .map(|(name, t)| {
                let was = threads_before.get(&name).copied().unwrap_or_default();
                (name, t.saturating_sub(was))
            })
            .filter(|(_, d)| !d.is_zero())
            .collect();
        threads.sort_by_key(|t| std::cmp::Reverse(t.1));
        for (name, d) in threads {
            println!("    {name:<20} {:.2} %", pct(d));
        }
    }
    drop(device);
}
