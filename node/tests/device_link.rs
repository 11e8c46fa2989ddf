//! The device link's channel between real `geiger node` and `geiger-device`
//! processes on 127.0.0.1: a device with another key than the registered
//! one is refused by the node, and a node whose link key the device does not
//! trust is refused by the device, each with a log line and a metric; and
//! a Hello with epoch 2^64-1 leaves the device to the cluster.
//!
//! The tests run one at a time. `GEIGER_TEST_KEEP=1` keeps the logs.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, one_per_zone, test_link_key, trusted_file, Cluster, Device};
use ed25519_dalek::SigningKey;
use geiger_hardware::DeviceId;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn get(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the sample line starting with `prefix`, if any.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `url` until the sample `prefix` is at least 1; returns the text.
async fn wait_counted(url: &str, prefix: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = get(url).await;
        if sample(&text, prefix).is_some_and(|v| v >= 1.0) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} never counted at {url}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn a_device_presenting_another_key_than_the_registered_one_is_refused_logged_and_counted() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(1), "");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev"), &["--rate", "65536"]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    // The link is registered with a key the device at that address lacks.
    let registered = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let id = DeviceId::of(&registered).to_string();
    let body = json!({
        "device": id,
        "address": device.addr(),
        "public_key": hex::encode(registered.as_bytes()),
    });
    let (status, answer) = cluster.post(1, "/v1/admin/links", &body).await.unwrap();
    assert_eq!(status, 201, "{answer}");

    let refused = format!(
        "geiger_link_sessions_total{{device=\"{id}\",outcome=\"refused_wrong_device_key\"}}"
    );
    let text = wait_counted(
        &format!("{}/metrics", cluster.url(1)),
        &refused,
        Duration::from_secs(30),
    )
    .await;
    let established =
        format!("geiger_link_sessions_total{{device=\"{id}\",outcome=\"established\"}}");
    assert_eq!(sample(&text, &established), None, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("geiger_entropy_chunks_appended_total{{device=\"{id}\"}}")
        ),
        None
    );
    let log = log_of(&cluster.node(1).log_path);
    assert!(
        log.contains("refused the device: it did not present its registered key"),
        "no refusal in the node's log"
    );
}

#[tokio::test]
async fn a_node_whose_link_key_the_device_does_not_trust_is_refused_until_the_device_lists_it() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(1), "");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dev");
    let metrics_at = format!("127.0.0.1:{}", free_port());
    // The device trusts some other cluster's node, not this one.
    let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key();
    let device = Device::start_trusting(
        &state,
        &[stranger],
        &["--rate", "65536", "--metrics-listen", &metrics_at],
    );
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let (status, answer) = cluster
        .post(1, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");

    let device_metrics = format!("http://{metrics_at}/metrics");
    wait_counted(
        &device_metrics,
        "geiger_device_refusals_total{reason=\"untrusted_node\"}",
        Duration::from_secs(30),
    )
    .await;
    let node_metrics = format!("{}/metrics", cluster.url(1));
    let text = wait_counted(
        &node_metrics,
        &format!(
            "geiger_link_sessions_total{{device=\"{}\",outcome=\"tls_handshake_failed\"}}",
            device.id
        ),
        Duration::from_secs(30),
    )
    .await;
    let established = format!(
        "geiger_link_sessions_total{{device=\"{}\",outcome=\"established\"}}",
        device.id
    );
    assert_eq!(sample(&text, &established), None, "{text}");
    assert!(
        sample(&get(&device_metrics).await, "geiger_device_sessions_total").unwrap_or(-1.0) == 0.0
    );
    assert!(
        log_of(&state.with_extension("log"))
            .contains("refused a client whose link key is not a trusted cluster node"),
        "no refusal in the device's log"
    );

    // Listing the node's key in place of the stranger's lets it in, without
    // restarting the device. (Listed beside it, the stranger would count
    // as a member: the device wants a majority of those it lists to attest
    // a lease, and this one-node cluster holds one of two.)
    trusted_file(&state, &[test_link_key().verifying_key()]);
    wait_counted(&node_metrics, &established, Duration::from_secs(30)).await;
    wait_counted(
        &device_metrics,
        "geiger_device_tls_handshakes_total",
        Duration::from_secs(10),
    )
    .await;
}

/// The second attack of issue 13, replayed against a device a cluster then
/// uses: one Hello with epoch 2^64-1, first in plaintext with no credential,
/// then inside a session opened with a trusted node's key. Neither is
/// stored, so the cluster's sessions (starting at epoch 1) still work.
#[tokio::test]
async fn a_hello_with_the_largest_epoch_cannot_lock_the_cluster_out_of_a_device() {
    use geiger_hardware::frame::{Frame, Hello, PROTOCOL_VERSION};
    use geiger_hardware::{LinkConfig, LinkError, LinkSession};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dev");
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let device = Device::start(
        &state,
        &["--rate", "65536", "--metrics-listen", &metrics_at],
    );
    let huge = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        epoch: u64::MAX,
        resume_after: None,
        attestations: vec![],
    });

    // No credential: the Hello is not even read, let alone answered.
    let mut tcp = tokio::net::TcpStream::connect(device.addr()).await.unwrap();
    tcp.write_all(&huge.encode()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    // At most a TLS alert record (content type 21), never a frame.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");

    // A trusted node's key: refused as too far ahead, and not stored.
    let key: [u8; 32] = hex::decode(&device.public_key).unwrap().try_into().unwrap();
    let device_key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let config = LinkConfig::new(device.addr(), u64::MAX, device_key, test_link_key());
    match LinkSession::connect(config).await {
        Err(LinkError::EpochTooFar { epoch, limit }) => {
            assert_eq!((epoch, limit), (u64::MAX, 1 << 32));
        }
        Err(other) => panic!("expected EpochTooFar, got {other}"),
        Ok(_) => panic!("the device accepted epoch 2^64-1"),
    }
    let device_metrics = format!("http://{metrics_at}/metrics");
    wait_counted(
        &device_metrics,
        "geiger_device_refusals_total{reason=\"epoch_too_far\"}",
        Duration::from_secs(10),
    )
    .await;
    let refused = get(&device_metrics).await;
    assert_eq!(
        sample(
            &refused,
            "geiger_device_refusals_total{reason=\"tls_handshake\"}"
        ),
        Some(1.0),
        "{refused}"
    );
    assert!(
        log_of(&state.with_extension("log"))
            .contains("refused a session whose epoch jumps further than a cluster can go"),
        "no refusal in the device's log"
    );

    // The cluster takes the device at its own, small, epoch and fills its pool.
    let cluster = Cluster::start(one_per_zone(1), "");
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let (status, answer) = cluster
        .post(1, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    let node_metrics = format!("{}/metrics", cluster.url(1));
    wait_counted(
        &node_metrics,
        &format!(
            "geiger_entropy_chunks_appended_total{{device=\"{}\"}}",
            device.id
        ),
        Duration::from_secs(30),
    )
    .await;
}
