//! Mutual TLS between members, end to end: real `geiger node` processes on
//! loopback with a cluster CA and node certificates made by
//! `geiger_node::cluster_certs` (what `geiger ctl cert` runs), a real
//! `geiger-device`, and test clients speaking TLS (rustls) to the Raft port.
//!
//! - a client without a cluster certificate, or with one from another CA,
//!   and a plaintext client, are refused by the Raft port: a log line and
//!   `geiger_peer_tls_refused_total{reason}`;
//! - a certificate from the cluster CA for a node that is not a member is
//!   refused (`not_a_member`); a client calling node 1 under node 2's name
//!   refuses node 1's certificate;
//! - three members over mutual TLS commit draws, and a relay in front of
//!   every internal listener captures no cluster secret, admin token, API
//!   key or draw in plaintext;
//! - node certificates replaced on disk under load: reloaded, and no draw
//!   fails or is lost.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Device, NodeSpec, ADMIN_TOKEN, CLUSTER_SECRET};
use geiger_node::cluster_certs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- certificates ------------------------------------------------------------

/// A cluster CA in `<dir>/ca` and node certificates in `<dir>/nodes`.
fn make_pki(dir: &Path, ids: &[u64]) -> PathBuf {
    let ca_dir = dir.join("ca");
    cluster_certs::create_ca(&ca_dir, "test", 30).expect("a CA");
    for id in ids {
        issue(dir, *id, &dir.join("nodes"));
    }
    dir.to_path_buf()
}

fn issue(pki: &Path, id: u64, out: &Path) -> (PathBuf, PathBuf) {
    let (ca, ca_key) = cluster_certs::ca_files(&pki.join("ca"));
    cluster_certs::issue_node(&ca, &ca_key, id, 30, out).expect("a node certificate")
}

fn tls_section(pki: &Path, id: u64) -> String {
    let (cert, key) = cluster_certs::node_files(&pki.join("nodes"), id);
    format!(
        "[cluster.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_check_ms = 200\n",
        pki.join("ca/ca.pem").display(),
        cert.display(),
        key.display()
    )
}

/// Starts `specs` with mutual TLS; `advertise` gives a node's relay.
fn start_over_tls(
    specs: Vec<NodeSpec>,
    advertise: &dyn Fn(u64) -> Option<SocketAddr>,
) -> (Cluster, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<u64> = specs.iter().map(|s| s.id).collect();
    let pki = make_pki(&dir.path().join("pki"), &ids);
    let pki_for_nodes = pki.clone();
    let cluster = Cluster::start_in(dir, specs, "", Vec::new(), &move |_, mut config| {
        config.extra_toml = format!(
            "{}\n{}",
            config.extra_toml,
            tls_section(&pki_for_nodes, config.id)
        );
        config.advertise = advertise(config.id);
        config
    });
    (cluster, pki)
}

/// A rustls client trusting the cluster CA in `pki`, presenting `identity`
/// (a certificate and key file) if given.
fn tls_client(pki: &Path, identity: Option<(PathBuf, PathBuf)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca/ca.pem")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A read-index request with the right cluster secret, over TLS to `addr`
/// as `name`: what the server answers, or why there is no answer.
async fn internal_call_over_tls(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    name: &str,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // `()` encodes as nothing (legacy path, legacy format).
    let request = format!(
        "POST /internal/read-index HTTP/1.1\r\nhost: {name}\r\nx-geiger-cluster-secret: {CLUSTER_SECRET}\r\ncontent-length: 0\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut answer)).await {
        Ok(Ok(0)) => Err("closed without an answer".into()),
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&answer[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer in 5 s".into()),
    }
}

// ---- metrics and draws -------------------------------------------------------

async fn metrics(cluster: &Cluster, id: u64) -> String {
    cluster
        .http
        .get(format!("{}/metrics", cluster.url(id)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name{labels}` (labels as written), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn create_customer(cluster: &Cluster, node: u64) -> String {
    let (status, body) = cluster
        .post(
            node,
            "/v1/admin/customers",
            &json!({ "name": "TLS casino" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body["api_key"].as_str().unwrap().to_string()
}

async fn with_entropy(cluster: &Cluster, leader: u64) -> Device {
    let device = Device::start(&cluster.dir.path().join("device"), &["--rate", "262144"]);
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert!(status == 201 || status == 200, "{status} {body}");
    cluster
        .wait_until(Duration::from_secs(30), "entropy in the pool", || async {
            let s = cluster.status(leader).await?;
            (s["pool_bytes"].as_u64()? > 100_000).then_some(())
        })
        .await;
    device
}

async fn new_chain(http: &reqwest::Client, url: &str, key: &str) -> String {
    let r = http
        .post(format!("{url}/v1/chains"))
        .bearer_auth(key)
        .json(&json!({ "tag": "tls" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One draw after `previous`: its 201 body, or what went wrong.
async fn draw(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    previous: &str,
) -> Result<Value, String> {
    let r = http
        .post(format!("{url}/v1/draws"))
        .bearer_auth(key)
        .json(&json!({
            "previous": previous,
            "tag": "round",
            "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true}
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status == 201 {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

// ---- a relay that keeps every byte ------------------------------------------

/// A TCP relay in front of `target` that keeps a copy of every byte in
/// both directions.
async fn relay(target: SocketAddr, captured: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let captured = captured.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = copy_keeping(cr, sw, captured.clone());
                let down = copy_keeping(sr, cw, captured);
                let _ = tokio::join!(up, down);
            });
        }
    });
    addr
}

async fn copy_keeping(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    captured: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        captured.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- tests -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_mutual_tls_commit_draws_and_the_wire_shows_no_secret() {
    let specs = common::one_per_zone(3);
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut relays = std::collections::BTreeMap::new();
    for spec in &specs {
        let target: SocketAddr = spec.rpc_addr().parse().unwrap();
        relays.insert(spec.id, relay(target, captured.clone()).await);
    }
    let (cluster, _pki) = start_over_tls(specs, &|id| relays.get(&id).copied());
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let _device = with_entropy(&cluster, leader).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();

    // Through a follower: the customer (an operator command, forwarded with
    // the admin token), a chain and draws (forwarded customer writes, whose
    // answers carry the draws back).
    let key = create_customer(&cluster, follower).await;
    let http = reqwest::Client::new();
    let url = cluster.url(follower);
    let mut previous = new_chain(&http, &url, &key).await;
    let mut draws = Vec::new();
    for _ in 0..30 {
        let body = draw(&http, &url, &key, &previous).await.expect("a draw");
        previous = body["draw"]["id"].as_str().unwrap().to_string();
        draws.push(body);
    }
    // Every member holds every draw.
    for id in cluster.ids() {
        for d in &draws {
            let id_text = d["draw"]["id"].as_str().unwrap();
            cluster
                .wait_until(
                    Duration::from_secs(10),
                    "the draw on every node",
                    || async {
                        let (status, _) = cluster
                            .get(id, &format!("/v1/draws/{id_text}"))
                            .await
                            .ok()?;
                        (status == 200).then_some(())
                    },
                )
                .await;
        }
    }

    let wire = captured.lock().unwrap().clone();
    assert!(
        wire.len() > 50_000,
        "the relay saw only {} bytes",
        wire.len()
    );
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("cluster secret".into(), CLUSTER_SECRET.as_bytes().to_vec()),
        ("admin token".into(), ADMIN_TOKEN.as_bytes().to_vec()),
        ("API key".into(), key.as_bytes().to_vec()),
        ("internal path".into(), b"/internal/".to_vec()),
    ];
    for d in &draws {
        let id = d["draw"]["id"].as_str().unwrap();
        secrets.push((format!("draw {id}"), id.as_bytes().to_vec()));
    }
    for (what, bytes) in &secrets {
        assert!(!contains(&wire, bytes), "the {what} crossed in plaintext");
    }
    // Handshakes were few: connections are kept and reused.
    for id in cluster.ids() {
        let m = metrics(&cluster, id).await;
        let handshakes = sample(
            &m,
            "geiger_tls_handshakes_total{listener=\"internal\",outcome=\"ok\"}",
        );
        let requests = sample(&m, "geiger_internal_requests_total");
        eprintln!("node {id}: {handshakes} internal handshakes for {requests} internal requests");
        assert!(requests > 100.0, "node {id}: {requests} internal requests");
        assert!(
            handshakes * 1000.0 / requests < 50.0,
            "node {id}: {handshakes} handshakes for {requests} requests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_non_members_are_refused_by_the_raft_port_with_a_log_line_and_a_metric() {
    let (cluster, pki) = start_over_tls(common::one_per_zone(3), &|_| None);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let target = cluster.node(1).spec.rpc_addr();
    let name = "node-1.geiger.internal";

    // No client certificate.
    let anonymous = tls_client(&pki, None);
    let answer = internal_call_over_tls(&anonymous, &target, name).await;
    assert!(answer.is_err(), "without a certificate: {answer:?}");

    // A certificate from another CA, naming a member.
    let other = cluster.dir.path().join("other-pki");
    make_pki(&other, &[2]);
    let (cert, key) = cluster_certs::node_files(&other.join("nodes"), 2);
    let stranger = tls_client(&pki, Some((cert, key)));
    let answer = internal_call_over_tls(&stranger, &target, name).await;
    assert!(answer.is_err(), "a certificate of another CA: {answer:?}");

    // Plaintext HTTP with the right secret.
    let mut tcp = TcpStream::connect(&target).await.unwrap();
    tcp.write_all(
        format!("POST /internal/read-index HTTP/1.1\r\nhost: x\r\nx-geiger-cluster-secret: {CLUSTER_SECRET}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/"),
        "plaintext got an HTTP answer"
    );

    // The cluster CA's certificate for node 9, which is not a member.
    let (cert, key) = issue(&pki, 9, &cluster.dir.path().join("node-9-certs"));
    let outsider = tls_client(&pki, Some((cert, key)));
    let answer = internal_call_over_tls(&outsider, &target, name).await;
    assert!(answer.is_err(), "a non-member: {answer:?}");

    // A member's certificate is admitted: the refusals above were about
    // the certificates, not the request.
    let member = tls_client(&pki, Some(cluster_certs::node_files(&pki.join("nodes"), 2)));
    let answer = internal_call_over_tls(&member, &target, name).await;
    assert_eq!(answer.as_deref(), Ok("HTTP/1.1 200 OK"));
    // And the client checks the server: node 1 is not node 2.
    let answer = internal_call_over_tls(&member, &target, "node-2.geiger.internal").await;
    assert!(
        answer.as_ref().is_err_and(|e| e.starts_with("handshake")),
        "node 1 accepted as node 2: {answer:?}"
    );

    let m = metrics(&cluster, 1).await;
    for reason in ["no_certificate", "unknown_ca", "handshake", "not_a_member"] {
        let n = sample(
            &m,
            &format!("geiger_peer_tls_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "reason {reason}: {n}\n{m}");
    }
    let log = std::fs::read_to_string(&cluster.node(1).log_path).unwrap();
    for reason in ["no_certificate", "unknown_ca", "not_a_member"] {
        assert!(
            log.lines()
                .any(|l| l.contains("peer refused on the internal listener") && l.contains(reason)),
            "no log line for {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_replaced_under_load_are_reloaded_and_no_acked_draw_is_lost() {
    let (cluster, pki) = start_over_tls(common::one_per_zone(3), &|_| None);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let _device = with_entropy(&cluster, leader).await;
    let key = create_customer(&cluster, leader).await;
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    // Four writers, each on its own chain, through the followers.
    for (n, id) in cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .cycle()
        .take(4)
        .enumerate()
    {
        let url = cluster.url(id);
        let (http, key, stop, failures) =
            (http.clone(), key.clone(), stop.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut previous = new_chain(&http, &url, &key).await;
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match draw(&http, &url, &key, &previous).await {
                    Ok(body) => {
                        previous = body["draw"]["id"].as_str().unwrap().to_string();
                        acked.push(previous.clone());
                    }
                    Err(e) => {
                        eprintln!("writer {n}: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // New keys and certificates, moved into place as an operator would
    // (written aside, then renamed over the configured files).
    let before: Vec<f64> = {
        let mut v = Vec::new();
        for id in cluster.ids() {
            v.push(sample(
                &metrics(&cluster, id).await,
                "geiger_tls_certificate_reloads_total{listener=\"internal\",outcome=\"ok\"}",
            ));
        }
        v
    };
    for id in cluster.ids() {
        let staging = cluster.dir.path().join(format!("staging-{id}"));
        let (cert, key_file) = issue(&pki, id, &staging);
        let (live_cert, live_key) = cluster_certs::node_files(&pki.join("nodes"), id);
        std::fs::rename(&key_file, &live_key).unwrap();
        std::fs::rename(&cert, &live_cert).unwrap();
    }
    for (i, id) in cluster.ids().into_iter().enumerate() {
        let was = before[i];
        cluster
            .wait_until(
                Duration::from_secs(10),
                "the new certificate loaded",
                || async {
                    let now = sample(
                    &metrics(&cluster, id).await,
                    "geiger_tls_certificate_reloads_total{listener=\"internal\",outcome=\"ok\"}",
                );
                    (now > was).then_some(())
                },
            )
            .await;
    }
    // New connections get the new certificates: cut the old ones by
    // restarting nothing; just keep drawing a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "draws failed during rotation"
    );
    assert!(acked.len() > 20, "only {} draws", acked.len());
    let started = Instant::now();
    for id in cluster.ids() {
        for draw_id in &acked {
            let (status, _) = cluster
                .get(id, &format!("/v1/draws/{draw_id}"))
                .await
                .unwrap();
            assert_eq!(status, 200, "draw {draw_id} on node {id}");
        }
    }
    eprintln!(
        "{} acked draws found on every node ({:?})",
        acked.len(),
        started.elapsed()
    );
}

// ---- measurement -------------------------------------------------------------

/// Draws/s and latency percentiles of `writers` writers, each on its own
/// chain, through `node` for `for_how_long`.
/// User plus system CPU time the cluster's node processes have used, in
/// seconds (from `/proc/PID/stat`, in clock ticks of 1/100 s on Linux).
fn cluster_cpu_seconds(cluster: &Cluster) -> f64 {
    cluster
        .ids()
        .into_iter()
        .map(|id| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", cluster.node(id).pid()))
                .expect("the node's /proc stat");
            // Fields after the command name, which ends at the last ')'.
            let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 =
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            ticks as f64 / 100.0
        })
        .sum()
}

async fn load(
    cluster: &Cluster,
    node: u64,
    key: &str,
    writers: usize,
    for_how_long: Duration,
) -> (f64, Duration, Duration, u64) {
    let http = reqwest::Client::new();
    let url = cluster.url(node);
    let mut chains = Vec::new();
    for _ in 0..writers {
        chains.push(new_chain(&http, &url, key).await);
    }
    let started = Instant::now();
    let deadline = started + for_how_long;
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for chain in chains {
        let (http, url, key, failures) =
            (http.clone(), url.clone(), key.to_string(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut previous = chain;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match draw(&http, &url, &key, &previous).await {
                    Ok(body) => {
                        latencies.push(t.elapsed());
                        previous = body["draw"]["id"].as_str().unwrap().to_string();
                    }
                    Err(e) => {
                        // The first few, so a measurement says what failed.
                        if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("draw failed: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (
        latencies.len() as f64 / elapsed,
        at(0.50),
        at(0.99),
        failures.load(Ordering::Relaxed),
    )
}

/// Plaintext against mutual TLS between three members on loopback, in one
/// run: draws/s and p50/p99 at 1 and 64 writers through a follower (so
/// each draw crosses the node link twice: forwarded, then replicated), and
/// the TLS run's handshakes per 1,000 internal requests.
///
/// `cargo test -p geiger-node --test cluster_tls -- --ignored --nocapture`
/// (`MEASURE_SECS`, default 10, per writer count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_the_cost_of_mutual_tls_between_members() {
    let secs: u64 = std::env::var("MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let env = vec![
        (
            "GEIGER_API__RATE_PER_SECOND".to_string(),
            "1000000".to_string(),
        ),
        ("GEIGER_API__RATE_BURST".to_string(), "1000000".to_string()),
    ];
    let mut rows = Vec::new();
    for tls in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let specs = common::one_per_zone(3);
        let ids: Vec<u64> = specs.iter().map(|s| s.id).collect();
        let pki = make_pki(&dir.path().join("pki"), &ids);
        let cluster = Cluster::start_in(dir, specs, "", env.clone(), &move |_, mut config| {
            if tls {
                config.extra_toml = tls_section(&pki, config.id);
            }
            config
        });
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let _device = with_entropy(&cluster, leader).await;
        let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
        let key = create_customer(&cluster, leader).await;
        for writers in [1, 64] {
            let cpu_before = cluster_cpu_seconds(&cluster);
            let (rate, p50, p99, failed) =
                load(&cluster, follower, &key, writers, Duration::from_secs(secs)).await;
            let cpu = cluster_cpu_seconds(&cluster) - cpu_before;
            // CPU of all three nodes per draw served, in microseconds.
            let cpu_per_draw = cpu * 1e6 / (rate * secs as f64).max(1.0);
            rows.push((tls, writers, rate, p50, p99, failed, cpu_per_draw));
        }
        if tls {
            let (mut handshakes, mut requests) = (0.0, 0.0);
            for id in cluster.ids() {
                let m = metrics(&cluster, id).await;
                handshakes += sample(
                    &m,
                    "geiger_tls_handshakes_total{listener=\"internal\",outcome=\"ok\"}",
                );
                requests += sample(&m, "geiger_internal_requests_total");
            }
            eprintln!(
                "mutual TLS: {handshakes} handshakes for {requests} internal requests: {:.3} per 1,000",
                handshakes * 1000.0 / requests
            );
        }
    }
    eprintln!(
        "| between members | writers | draws/s | p50 | p99 | failed | CPU per draw (3 nodes) |"
    );
    for (tls, writers, rate, p50, p99, failed, cpu) in &rows {
        eprintln!(
            "| {} | {writers} | {rate:.0} | {:.1} ms | {:.1} ms | {failed} | {cpu:.0} µs |",
            if *tls { "mutual TLS" } else { "plaintext" },
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    for writers in [1, 64] {
        let plain = rows.iter().find(|r| !r.0 && r.1 == writers).unwrap();
        let tls = rows.iter().find(|r| r.0 && r.1 == writers).unwrap();
        eprintln!(
            "{writers} writers, TLS / plaintext: draws/s {:.2}, p50 {:.2}, p99 {:.2}, CPU per draw {:.2}",
            tls.2 / plain.2,
            tls.3.as_secs_f64() / plain.3.as_secs_f64(),
            tls.4.as_secs_f64() / plain.4.as_secs_f64(),
            tls.6 / plain.6
        );
    }
}
