//! The cost of TLS on the public API, measured in one run against
//! plaintext: this process is the client; each mode gets a fresh
//! `geiger dev` (a one-node cluster with a simulated device), plaintext
//! first, then TLS with a certificate from a CA made here (rcgen).
//!
//! Per mode: chained draws at 1 and at 64 concurrent writers (draws/s,
//! p50/p99 in ms, node CPU ms per draw from /proc), then lookups of issued
//! draws by 64 concurrent readers (lookups/s), and the node's own count of
//! TLS handshakes per 1,000 requests. Clients are one reqwest client per
//! phase over HTTP/1.1 with keep-alive, as the SDK uses.
//!
//! Run: `cargo bench -p geiger-node --bench tls_cost`
//! (`BENCH_SECONDS`, default 10, sets each phase's length; `BENCH_ROUNDS`,
//! default 1, repeats the pair, alternating which mode goes first).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_testkit::launcher::DevProcess;
use geiger_testkit::measure::nearest_rank;
use serde_json::{json, Value};

const API_KEY: &str = "gk_00000000000000000000000000000000000000000000000000000000000000d1";

/// A `geiger dev` and the base URL it serves.
struct Dev {
    process: DevProcess,
    url: String,
}

/// A CA and a certificate for 127.0.0.1 it issued, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn start_dev(port: u16, tls: Option<&Pki>) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The bench measures transport, not the rate limits.
    let mut env: Vec<(&str, OsString)> = [
        "GEIGER_API__RATE_PER_SECOND",
        "GEIGER_API__RATE_BURST",
        "GEIGER_API__ANONYMOUS_RATE_PER_SECOND",
        "GEIGER_API__ANONYMOUS_RATE_BURST",
    ]
    .into_iter()
    .map(|k| (k, OsString::from("1000000")))
    .collect();
    if let Some(pki) = tls {
        std::fs::write(dir.path().join("api.crt"), &pki.cert_pem).unwrap();
        std::fs::write(dir.path().join("api.key"), &pki.key_pem).unwrap();
        env.push((
            "GEIGER_API__TLS__CERT_FILE",
            dir.path().join("api.crt").into(),
        ));
        env.push((
            "GEIGER_API__TLS__KEY_FILE",
            dir.path().join("api.key").into(),
        ));
    }
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_geiger"));
    let process = DevProcess::start(binary, dir, addr, API_KEY, &env).expect("geiger dev starts");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    process
        .wait_ready(&client(tls), &url, Duration::from_secs(60))
        .await;
    Dev { process, url }
}

fn client(tls: Option<&Pki>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30));
    if let Some(pki) = tls {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// User plus system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    geiger_testkit::measure::cpu_time_of(pid).as_secs_f64()
}

async fn metric_sum(http: &reqwest::Client, url: &str, prefix: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `writers` tasks, each on its own chain, drawing for `phase`; returns
/// the sorted latencies and the IDs of the draws issued.
async fn draws(
    http: &reqwest::Client,
    url: &str,
    writers: usize,
    phase: Duration,
) -> (Vec<Duration>, Vec<String>) {
    let until = Instant::now() + phase;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let http = http.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let chain: Value = http
                    .post(format!("{url}/v1/chains"))
                    .bearer_auth(API_KEY)
                    .json(&json!({ "tag": format!("writer {w}") }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let mut previous = chain["id"].as_str().unwrap().to_string();
                let mut latencies = Vec::new();
                let mut ids = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let r = http
                        .post(format!("{url}/v1/draws"))
                        .bearer_auth(API_KEY)
                        .json(&json!({
                            "previous": previous,
                            "tag": "round",
                            "spec": { "kind": "integers", "min": 1, "max": 6, "count": 2 }
                        }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201, "draw failed");
                    let body: Value = r.json().await.unwrap();
                    latencies.push(started.elapsed());
                    previous = body["draw"]["id"].as_str().unwrap().to_string();
                    ids.push(previous.clone());
                }
                (latencies, ids)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (l, i) = t.await.unwrap();
        latencies.extend(l);
        ids.extend(i);
    }
    latencies.sort();
    (latencies, ids)
}

/// 64 readers looking up issued draws for `phase`; returns lookups done.
async fn lookups(
    http: &reqwest::Client,
    url: &str,
    ids: Arc<Vec<String>>,
    phase: Duration,
) -> usize {
    let until = Instant::now() + phase;
    let tasks: Vec<_> = (0..64)
        .map(|r| {
            let (http, url, ids) = (http.clone(), url.to_string(), ids.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    let id = &ids[(r * 7919 + n) % ids.len()];
                    let resp = http
                        .get(format!("{url}/v1/draws/{id}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200, "lookup failed");
                    resp.bytes().await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// Milliseconds; NaN without samples.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

struct Figures {
    draws_1: f64,
    p50_1: f64,
    p99_1: f64,
    cpu_ms_per_draw_1: f64,
    draws_64: f64,
    p50_64: f64,
    p99_64: f64,
    cpu_ms_per_draw_64: f64,
    lookups: f64,
    handshakes_per_1000: Option<f64>,
}

async fn measure(tls: Option<&Pki>, port: u16, phase: Duration) -> Figures {
    let dev = start_dev(port, tls).await;
    let pid = dev.process.pid();
    let http = client(tls);
    let requests = "geiger_http_requests_total";
    let handshakes = "geiger_tls_handshakes_total{listener=\"api\",outcome=\"ok\"}";
    let requests_before = metric_sum(&http, &dev.url, requests).await;
    let handshakes_before = metric_sum(&http, &dev.url, handshakes).await;

    let mut figures = Vec::new();
    let mut all_ids = Vec::new();
    for writers in [1, 64] {
        let http = client(tls);
        let cpu = cpu_seconds(pid);
        let started = Instant::now();
        let (latencies, ids) = draws(&http, &dev.url, writers, phase).await;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu;
        figures.push((
            latencies.len() as f64 / elapsed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            cpu * 1000.0 / latencies.len().max(1) as f64,
        ));
        all_ids.extend(ids);
    }
    let reader = client(tls);
    let started = Instant::now();
    let n = lookups(&reader, &dev.url, Arc::new(all_ids), phase).await;
    let lookups = n as f64 / started.elapsed().as_secs_f64();

    let requests_after = metric_sum(&http, &dev.url, requests).await;
    let handshakes_after = metric_sum(&http, &dev.url, handshakes).await;
    let handshakes_per_1000 = tls.map(|_| {
        (handshakes_after - handshakes_before) * 1000.0 / (requests_after - requests_before)
    });
    Figures {
        draws_1: figures[0].0,
        p50_1: figures[0].1,
        p99_1: figures[0].2,
        cpu_ms_per_draw_1: figures[0].3,
        draws_64: figures[1].0,
        p50_64: figures[1].1,
        p99_64: figures[1].2,
        cpu_ms_per_draw_64: figures[1].3,
        lookups,
        handshakes_per_1000,
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let phase = Duration::from_secs(seconds);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pki = pki();
    println!(
        "TLS cost bench: geiger dev, HTTP/1.1 keep-alive clients, {seconds} s per phase, {rounds} round(s)"
    );
    for round in 0..rounds {
        // Odd rounds measure TLS first, so a drift in the machine's load
        // shows as disagreement between rounds rather than as a TLS cost.
        let port = 18_600 + 2 * round as u16;
        let (plain, tls) = if round % 2 == 0 {
            let plain = measure(None, port, phase).await;
            (plain, measure(Some(&pki), port + 1, phase).await)
        } else {
            let tls = measure(Some(&pki), port + 1, phase).await;
            (measure(None, port, phase).await, tls)
        };
        let order = if round % 2 == 0 {
            "plaintext first"
        } else {
            "TLS first"
        };
        println!("\nround {} ({order})\n", round + 1);
        print_table(&plain, &tls);
    }
}

fn print_table(plain: &Figures, tls: &Figures) {
    println!("| figure | plaintext | TLS | TLS / plaintext |");
    println!("| --- | --- | --- | --- |");
    let row = |name: &str, p: f64, t: f64| {
        println!("| {name} | {p:.2} | {t:.2} | {:.3} |", t / p);
    };
    row("draws/s, 1 writer", plain.draws_1, tls.draws_1);
    row("draw p50 ms, 1 writer", plain.p50_1, tls.p50_1);
    row("draw p99 ms, 1 writer", plain.p99_1, tls.p99_1);
    row(
        "node CPU ms per draw, 1 writer",
        plain.cpu_ms_per_draw_1,
        tls.cpu_ms_per_draw_1,
    );
    row("draws/s, 64 writers", plain.draws_64, tls.draws_64);
    row("draw p50 ms, 64 writers", plain.p50_64, tls.p50_64);
    row("draw p99 ms, 64 writers", plain.p99_64, tls.p99_64);
    row(
        "node CPU ms per draw, 64 writers",
        plain.cpu_ms_per_draw_64,
        tls.cpu_ms_per_draw_64,
    );
    row("lookups/s, 64 readers", plain.lookups, tls.lookups);
    println!(
        "| TLS handshakes per 1,000 requests | - | {:.2} | - |",
        tls.handshakes_per_1000.unwrap_or(f64::NAN)
    );
}
