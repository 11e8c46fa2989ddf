//! Honest clients under a slow-loris, over real sockets to a real node.
//!
//! For each binary named in `BENCH_BINARIES` (`label=path,label=path`;
//! default: this build's `geiger`), starts `geiger dev`, then measures an
//! honest client making chained draws over one keep-alive connection: first
//! on a quiet node, then while `BENCH_LORIS` (default 500) slow-loris
//! connections from five other loopback addresses each send a request head
//! one byte every 500 ms and reconnect whenever the node closes them. Prints
//! p50/p99 of the honest draws in both phases, and how many attack
//! connections the node was holding open at the end.
//!
//! Run: `cargo bench -p geiger-node --bench slow_loris`, or to compare two
//! builds in one run:
//! `BENCH_BINARIES=before=/tmp/geiger-before,after=target/release/geiger cargo bench -p geiger-node --bench slow_loris`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_testkit::launcher::DevProcess;
use geiger_testkit::measure::nearest_rank;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

const API_KEY: &str = "gk_00000000000000000000000000000000000000000000000000000000000000b7";

async fn start_dev(binary: &str, port: u16) -> DevProcess {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dev = DevProcess::start(
        std::path::Path::new(binary),
        tempfile::tempdir().unwrap(),
        addr,
        API_KEY,
        &[],
    )
    .expect("geiger dev starts");
    dev.wait_ready(&reqwest::Client::new(), &url(&dev), Duration::from_secs(60))
        .await;
    dev
}

fn url(dev: &DevProcess) -> String {
    format!("http://{}", dev.addr)
}

/// Chained draws for `for_how_long`; the latency of each, sorted.
async fn honest_draws(dev: &DevProcess, for_how_long: Duration) -> Vec<Duration> {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let chain: Value = http
        .post(format!("{}/v1/chains", url(dev)))
        .bearer_auth(API_KEY)
        .json(&json!({ "tag": "honest" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut previous = chain["id"].as_str().unwrap().to_string();
    let mut latencies = Vec::new();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        let started = Instant::now();
        let reply = http
            .post(format!("{}/v1/draws", url(dev)))
            .bearer_auth(API_KEY)
            .json(&json!({
                "previous": previous,
                "tag": "round",
                "spec": { "kind": "integers", "min": 1, "max": 6, "count": 2, "unique": false }
            }))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let elapsed = started.elapsed();
        match reply {
            Ok(r) if r.status() == 201 => {
                let body: Value = r.json().await.unwrap();
                previous = body["draw"]["id"].as_str().unwrap().to_string();
                latencies.push(elapsed);
            }
            Ok(r) => panic!("honest draw answered {}", r.status()),
            Err(e) => panic!("honest draw failed: {e}"),
        }
    }
    latencies.sort();
    latencies
}

/// One slow-loris connection, reconnecting whenever it is closed, until
/// `stop`. `open` counts connections currently believed open, `cut` those
/// the node closed.
async fn loris(
    target: SocketAddr,
    source: u8,
    open: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    stop: Instant,
) {
    let head = b"GET /v1/keys HTTP/1.1\r\nHost: geiger\r\nX-Slow: ";
    while Instant::now() < stop {
        let socket = TcpSocket::new_v4().unwrap();
        if socket
            .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, source), 0)))
            .is_err()
        {
            return;
        }
        let Ok(mut stream) = socket.connect(target).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        let mut sent = 0;
        while Instant::now() < stop {
            let byte = if sent < head.len() { head[sent] } else { b'a' };
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A closed connection shows as a failed write only on the
            // second write after the close; peek for a FIN as well.
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await
            {
                break;
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
        if Instant::now() < stop {
            cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Milliseconds; NaN without samples.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let binaries = std::env::var("BENCH_BINARIES")
        .unwrap_or_else(|_| format!("current={}", env!("CARGO_BIN_EXE_geiger")));
    let loris_count: usize = std::env::var("BENCH_LORIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let phase = Duration::from_secs(10);
    println!("slow-loris bench: {loris_count} connections from 5 addresses, {phase:?} per phase");
    println!("| binary | quiet draws | quiet p50 ms | quiet p99 ms | attacked draws | attacked p50 ms | attacked p99 ms | attack conns open at end | attack conns cut by the node |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (n, entry) in binaries.split(',').enumerate() {
        let (label, path) = entry.split_once('=').expect("label=path");
        let dev = start_dev(path, 18_500 + n as u16).await;
        let quiet = honest_draws(&dev, phase).await;
        let open = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + phase + Duration::from_secs(8);
        let attackers: Vec<_> = (0..loris_count)
            .map(|i| {
                tokio::spawn(loris(
                    dev.addr,
                    10 + (i % 5) as u8,
                    open.clone(),
                    cut.clone(),
                    stop,
                ))
            })
            .collect();
        // Let the attack build up before measuring.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let attacked = honest_draws(&dev, phase).await;
        let open_at_end = open.load(Ordering::Relaxed);
        let cut_by_node = cut.load(Ordering::Relaxed);
        for a in attackers {
            a.abort();
        }
        println!(
            "| {label} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {open_at_end} | {cut_by_node} |",
            quiet.len(),
            percentile(&quiet, 0.5),
            percentile(&quiet, 0.99),
            attacked.len(),
            percentile(&attacked, 0.5),
            percentile(&attacked, 0.99),
        );
    }
}
