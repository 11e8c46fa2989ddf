//! The public API over TLS, against real `geiger dev` processes over real
//! sockets, with a private CA made in the test (rcgen): HTTP/1.1 and HTTP/2
//! by ALPN, one handshake per connection, certificate rotation under load,
//! the expiry metric, the plaintext rule at start, and the clients
//! (`geiger verify --keys https://...`, `geiger ctl`, the SDK) trusting the
//! private CA.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_client::ClientBuilder;
use geiger_protocol::{DrawRequest, Spec};
use geiger_testkit::launcher::DevProcess;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};

const API_KEY: &str = "gk_00000000000000000000000000000000000000000000000000000000000000c5";

/// A private CA and the certificates it issues for `127.0.0.1`.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// An issued certificate: PEM for the files, DER to compare with what a
/// client is shown.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "geiger test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `127.0.0.1` and `localhost`, valid until `not_after`.
    fn issue(&self, not_after: (i32, u8, u8)) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "geiger node");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

const VALID: (i32, u8, u8) = (2100, 1, 1);
/// 2001-01-01T00:00:00Z.
const EXPIRED: (i32, u8, u8) = (2001, 1, 1);
const EXPIRED_UNIX: i64 = 978_307_200;

/// Writes `contents` to `path` as a rotation tool would: to a temporary
/// name, then renamed over it.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `geiger dev` serving TLS with the files in its directory.
struct Dev {
    process: DevProcess,
    dir: PathBuf,
    addr: SocketAddr,
    ca_pem: String,
}

impl Dev {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.join("api.crt")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join("api.key")
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A client that trusts the test CA; HTTP/1.1 only unless `h2`.
    fn client(&self, h2: bool) -> reqwest::Client {
        let builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10));
        if h2 { builder } else { builder.http1_only() }
            .build()
            .unwrap()
    }

    /// Reads one sample of `/metrics` through `client`.
    async fn metric(&self, client: &reqwest::Client, series: &str) -> f64 {
        let text = client
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    }
}

/// Starts `geiger dev` on a free loopback port with `cert` as its API
/// certificate, and waits until it is ready over TLS.
async fn start_dev(pki: &Pki, cert: &Issued) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(dir.path().join("api.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("api.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_geiger"));
    let env: [(&str, std::ffi::OsString); 5] = [
        (
            "GEIGER_API__TLS__CERT_FILE",
            dir.path().join("api.crt").into(),
        ),
        (
            "GEIGER_API__TLS__KEY_FILE",
            dir.path().join("api.key").into(),
        ),
        ("GEIGER_API__TLS__RELOAD_CHECK_MS", "100".into()),
        // These tests load one node from one address without a key (the
        // rotation test opens a connection per request); they measure TLS,
        // not the per-source share, which tests/unauthenticated.rs covers.
        ("GEIGER_API__ANONYMOUS_RATE_PER_SECOND", "1000000".into()),
        ("GEIGER_API__ANONYMOUS_RATE_BURST", "1000000".into()),
    ];
    let dir_path = dir.path().to_path_buf();
    let process = DevProcess::start(binary, dir, addr, API_KEY, &env).expect("geiger dev starts");
    let dev = Dev {
        process,
        dir: dir_path,
        addr,
        ca_pem: pki.ca_pem(),
    };
    // An expired certificate is served too: wait without checking it.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    dev.process
        .wait_ready(&http, &dev.url(), Duration::from_secs(60))
        .await;
    dev
}

/// The certificate a fresh TLS connection is shown (the client trusts the
/// test CA and checks the name, as any client would).
async fn certificate_seen(dev: &Dev) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from(pem_to_der(&dev.ca_pem));
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(dev.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_tls_node_answers_over_http1_and_h2_as_alpn_chooses_with_one_handshake_per_connection() {
    let pki = Pki::new();
    let dev = start_dev(&pki, &pki.issue(VALID)).await;
    let handshakes = "geiger_tls_handshakes_total{listener=\"api\",outcome=\"ok\"}";

    let h1 = dev.client(false);
    let before = dev.metric(&h1, handshakes).await;
    for _ in 0..50 {
        let r = h1
            .get(format!("{}/v1/keys", dev.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let h2 = dev.client(true);
    for _ in 0..50 {
        let r = h2
            .get(format!("{}/v1/keys", dev.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // A draw over h2 too: a request with a body, through the body deadline.
    let chain: Value = h2
        .post(format!("{}/v1/chains", dev.url()))
        .bearer_auth(API_KEY)
        .json(&json!({ "tag": "h2" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let draw = h2
        .post(format!("{}/v1/draws", dev.url()))
        .bearer_auth(API_KEY)
        .json(&json!({
            "previous": chain["id"],
            "tag": "round 1",
            "spec": { "kind": "integers", "min": 1, "max": 6, "count": 2 }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(draw.status(), 201);
    // 102 requests on two connections: the HTTP/1.1 one (already open when
    // `before` was read) and the h2 one.
    let after = dev.metric(&h1, handshakes).await;
    assert_eq!(after - before, 1.0, "handshakes {before} -> {after}");
}

#[tokio::test]
async fn replacing_the_certificate_files_changes_what_new_connections_see_and_loses_no_request() {
    let pki = Pki::new();
    let first = pki.issue(VALID);
    let dev = Arc::new(start_dev(&pki, &first).await);
    assert_eq!(certificate_seen(&dev).await, first.der);

    // Load during the rotation: kept-alive connections, and a client that
    // opens a new connection (a new handshake) for every request.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (dev, stop, ok, failed) = (dev.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let fresh_each_time = worker == 0;
            let mut client = dev.client(false);
            while !stop.load(Ordering::Relaxed) {
                if fresh_each_time {
                    client = dev.client(false);
                }
                match client.get(format!("{}/v1/keys", dev.url())).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(r.status().to_string()),
                    Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new certificate: key first, then the chain, as the docs advise.
    let second = pki.issue(VALID);
    replace_file(&dev.key_file(), &second.key_pem);
    replace_file(&dev.cert_file(), &second.cert_pem);
    let started = Instant::now();
    while certificate_seen(&dev).await != second.der {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new connections still see the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken replacement is refused and the second certificate kept.
    replace_file(&dev.cert_file(), "not a certificate");
    let reloads = "geiger_tls_certificate_reloads_total{listener=\"api\",outcome=\"error\"}";
    let client = dev.client(false);
    let started = Instant::now();
    while dev.metric(&client, reloads).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload error counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(certificate_seen(&dev).await, second.der);
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "requests failed during rotation: {failed:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load to mean anything"
    );
    let reloaded = "geiger_tls_certificate_reloads_total{listener=\"api\",outcome=\"ok\"}";
    assert!(dev.metric(&client, reloaded).await >= 1.0);
}

#[tokio::test]
async fn an_expired_certificate_shows_in_the_expiry_metric_and_checking_clients_refuse_it() {
    let pki = Pki::new();
    let dev = start_dev(&pki, &pki.issue(EXPIRED)).await;
    let unchecked = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let expiry = dev
        .metric(
            &unchecked,
            "geiger_tls_certificate_expiry_timestamp_seconds{listener=\"api\"}",
        )
        .await;
    assert_eq!(expiry as i64, EXPIRED_UNIX);
    let err = dev
        .client(false)
        .get(format!("{}/healthz", dev.url()))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");
}

/// Runs `geiger dev` on `listen` with `env`; returns its exit status if it
/// exits within `within`, or the stderr lines read so far once `until`
/// matches one (then kills it).
fn run_dev_until(
    listen: &str,
    env: &[(&str, &str)],
    until: &str,
    within: Duration,
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geiger"))
        .args(["dev", "--listen", listen, "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("GEIGER_API__PLAINTEXT")
        .envs(env.iter().copied())
        .env("GEIGER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < within {
        while let Ok(line) = lines_rx.try_recv() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(until) {
                let _ = child.kill();
                let _ = child.wait();
                return (None, seen);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(line) = lines_rx.try_recv() {
                seen.push_str(&line);
                seen.push('\n');
            }
            return (status.code(), seen);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("geiger dev neither exited nor logged {until:?} in {within:?}:\n{seen}");
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused_at_start_unless_the_config_says_tls_ends_at_a_load_balancer(
) {
    let listen = format!("0.0.0.0:{}", free_port());
    let (status, stderr) = run_dev_until(&listen, &[], "node listening", Duration::from_secs(30));
    assert_ne!(status, Some(0), "{stderr}");
    assert!(status.is_some(), "started anyway:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to serve the public API in plaintext on {listen}, which is not a loopback address"
        )),
        "{stderr}"
    );

    let listen = format!("0.0.0.0:{}", free_port());
    let (status, stderr) = run_dev_until(
        &listen,
        &[(
            "GEIGER_API__PLAINTEXT",
            "behind_tls_terminating_load_balancer",
        )],
        "node listening",
        Duration::from_secs(30),
    );
    assert_eq!(status, None, "did not start:\n{stderr}");
    assert!(
        stderr.contains("serving the public API in plaintext on a non-loopback address"),
        "no warning logged:\n{stderr}"
    );
}

#[tokio::test]
async fn geiger_verify_geiger_ctl_and_the_sdk_work_against_a_tls_node_with_a_private_ca() {
    let pki = Pki::new();
    let dev = start_dev(&pki, &pki.issue(VALID)).await;

    // The SDK, trusting the private CA: a chain and a verified draw.
    let sdk = ClientBuilder::new([dev.url()])
        .api_key(API_KEY)
        .trust_ca_pem(pki.ca_pem())
        .build()
        .unwrap();
    let chain = sdk.create_chain("tls").await.unwrap();
    let issued = sdk
        .draw(DrawRequest {
            previous: chain.response.chain.id,
            tag: "round 1".into(),
            spec: Spec::Integers {
                min: 1,
                max: 6,
                count: 2,
                unique: false,
            },
            request_id: None,
        })
        .await
        .unwrap();
    // Without the CA, the same SDK call is refused (unknown issuer).
    let untrusting = ClientBuilder::new([dev.url()])
        .api_key(API_KEY)
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(untrusting.create_chain("tls").await.is_err());

    // `geiger verify --keys https://...` with and without --ca-file.
    let lookup = dev
        .client(false)
        .get(format!(
            "{}/v1/draws/{}",
            dev.url(),
            issued.response.draw.id
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let lookup_file = dev.dir.join("lookup.json");
    std::fs::write(&lookup_file, &lookup).unwrap();
    let keys_url = format!("{}/v1/keys", dev.url());
    let verify = |ca: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geiger"));
        cmd.arg("verify")
            .arg(&lookup_file)
            .args(["--keys", &keys_url])
            .env_remove("GEIGER_CA_FILE");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = verify(Some(&dev.ca_file()));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fetching the key set from"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `geiger ctl status` over https, the CA from GEIGER_CA_FILE.
    let out = Command::new(env!("CARGO_BIN_EXE_geiger"))
        .args(["ctl", "--url", &dev.url(), "status", "--json"])
        .env("GEIGER_ADMIN_TOKEN", dev.admin_token())
        .env("GEIGER_CA_FILE", dev.ca_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status.get("leader").is_some(), "{status}");
}

#[tokio::test]
async fn members_of_a_tls_cluster_probe_each_other_over_tls_with_the_cluster_ca() {
    let pki = Pki::new();
    let cert = pki.issue(VALID);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let env = vec![
        (
            "GEIGER_API__TLS__CERT_FILE".to_string(),
            file("api.crt", &cert.cert_pem),
        ),
        (
            "GEIGER_API__TLS__KEY_FILE".to_string(),
            file("api.key", &cert.key_pem),
        ),
        (
            "GEIGER_API__TLS__CA_FILE".to_string(),
            file("ca.pem", &pki.ca_pem()),
        ),
    ];
    let cluster = common::Cluster::start_with_env(common::one_per_zone(3), "", env);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // The leader counts the voters whose /healthz answers its probe: all
    // three only if its probes speak TLS and trust the cluster's CA.
    let started = Instant::now();
    loop {
        let mut reachable = None;
        for id in cluster.ids() {
            let url = format!("https://{}/metrics", cluster.node(id).spec.api_addr());
            let Ok(r) = http.get(url).send().await else {
                continue;
            };
            let text = r.text().await.unwrap_or_default();
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("geiger_raft_voters_reachable "))
            {
                reachable = v.trim().parse::<u64>().ok();
            }
        }
        if reachable == Some(3) {
            break;
        }
        if started.elapsed() > Duration::from_secs(45) {
            cluster.dump_logs();
            panic!("the leader reaches {reachable:?} voters over TLS, not 3");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
