//! Hardware links end to end, with real processes on 127.0.0.1: a 3-node
//! cluster of `geiger node` (one node per zone) and `geiger-device` agents.
//!
//! The tests run one at a time (each starts four or five processes).
//! `GEIGER_TEST_KEEP=1` keeps the temporary directories with the logs.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{one_per_zone, Cluster, Device};
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Device output rate for these tests: 16 chunks of 4 KiB a second.
const RATE: &str = "65536";

/// A reserve too large to be reached during a test.
const BIG_RESERVE: &str =
    "[hardware]\npool_high_water_bytes = 67108864\npool_low_water_bytes = 33554432\n";

async fn link(cluster: &Cluster, via: u64, device: &str) -> Option<Value> {
    let (status, body) = cluster.get(via, "/v1/admin/links").await.ok()?;
    if status != 200 {
        return None;
    }
    body["links"]
        .as_array()?
        .iter()
        .find(|l| l["device"] == device)
        .cloned()
}

/// The link as seen from any live node.
async fn link_anywhere(cluster: &Cluster, device: &str) -> Option<Value> {
    for id in cluster.live() {
        if let Some(l) = link(cluster, id, device).await {
            return Some(l);
        }
    }
    None
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Polls the link (through node `via`, or any live node) every 100 ms until
/// `pred` holds; panics with the node logs after `within`.
async fn wait_link(
    cluster: &Cluster,
    via: Option<u64>,
    device: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let l = match via {
            Some(id) => link(cluster, id, device).await,
            None => link_anywhere(cluster, device).await,
        };
        if let Some(l) = l {
            if pred(&l) {
                return l;
            }
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every accounted sequence is appended, quarantined or skipped, once.
fn assert_accounting(l: &Value) {
    let span = match (l["first_seq"].as_u64(), l["last_seq"].as_u64()) {
        (Some(f), Some(last)) => last - f + 1,
        _ => 0,
    };
    assert_eq!(
        u(l, "appended_chunks") + u(l, "quarantined_chunks") + u(l, "skipped_chunks"),
        span,
        "the device's sequences are not accounted exactly once: {l:#}"
    );
}

async fn register(cluster: &Cluster, via: u64, device: &Device) {
    let (status, body) = cluster
        .post(via, "/v1/admin/links", &device.registration())
        .await
        .expect("POST /v1/admin/links");
    assert_eq!(status, 201, "{body}");
}

/// Waits until the link has an owner with a running lease and the ledger
/// holds at least `min_appended` of its chunks; returns the link.
async fn wait_appended(
    cluster: &Cluster,
    device: &str,
    min_appended: u64,
    within: Duration,
) -> Value {
    wait_link(
        cluster,
        None,
        device,
        within,
        &format!("{min_appended} chunks of {device} appended"),
        |l| l["lease_active"] == true && u(l, "appended_chunks") >= min_appended,
    )
    .await
}

async fn metrics(cluster: &Cluster, id: u64) -> String {
    cluster
        .http
        .get(format!("{}/metrics", cluster.url(id)))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// Scrapes node `id` every 100 ms until `pred` holds on the text; panics
/// with the last scrape after `within`.
async fn wait_metrics(
    cluster: &Cluster,
    id: u64,
    within: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(cluster, id).await;
        if pred(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what} on node {id}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The value of one sample line `name{labels} value` in a scrape.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_registered_link_gets_one_owner_and_fills_the_pool_up_to_its_high_water_mark_and_resumes_below_low_water(
) {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(
        one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 131072\npool_low_water_bytes = 65536\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;

    // A wrong id for the key, and a bad key, are refused.
    let mut wrong = device.registration();
    wrong["device"] = json!(format!("dev_{}", "0".repeat(32)));
    let (status, body) = cluster.post(1, "/v1/admin/links", &wrong).await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let mut bad = device.registration();
    bad["public_key"] = json!("not a key");
    let (status, body) = cluster.post(1, "/v1/admin/links", &bad).await.unwrap();
    assert_eq!(status, 422, "{body}");
    // Without the admin token: 401.
    let anonymous = cluster
        .http
        .get(format!("{}/v1/admin/links", cluster.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    register(&cluster, 2, &device).await;
    // Registering again only confirms (or changes) the address.
    let (status, _) = cluster
        .post(3, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 200);

    let l = wait_appended(&cluster, &device.id, 1, Duration::from_secs(20)).await;
    let owner = u(&l, "owner");
    assert!((1..=3).contains(&owner));
    // Every node agrees on the one owner.
    for id in cluster.ids() {
        let seen = wait_link(
            &cluster,
            Some(id),
            &device.id,
            Duration::from_secs(5),
            "the lease replicated",
            |l| l["owner"].is_u64(),
        )
        .await;
        assert_eq!(u(&seen, "owner"), owner, "node {id} sees another owner");
    }

    // The pool fills to the high-water mark, then the owner stops pulling.
    wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(30),
        "the pool reaches its high-water mark",
        |l| u(l, "pooled_bytes") >= 131072,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = link(&cluster, owner, &device.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = link(&cluster, owner, &device.id).await.unwrap();
    assert_eq!(
        u(&before, "appended_chunks"),
        u(&after, "appended_chunks"),
        "the owner kept appending above the high-water mark"
    );
    assert!(u(&after, "pooled_bytes") < 131072 + 32 * 4096, "{after:#}");
    assert_eq!(
        after["up_here"], true,
        "a paused link is still up: {after:#}"
    );
    assert_accounting(&after);

    let text = metrics(&cluster, owner).await;
    let up = format!("geiger_link_up{{device=\"{}\"}}", device.id);
    assert_eq!(sample(&text, &up), Some(1.0), "{text}");
    let appended = format!(
        "geiger_entropy_chunks_appended_total{{device=\"{}\"}}",
        device.id
    );
    assert!(sample(&text, &appended).unwrap_or(0.0) >= 32.0, "{text}");
    let other = if owner == 1 { 2 } else { 1 };
    assert_eq!(sample(&metrics(&cluster, other).await, &up), Some(0.0));

    // The pool counters and the last chunk's time are replicated: every node
    // exports the ledger's per-device totals (the link is paused, so they
    // hold still) as counters, and when the last chunk came in.
    let want_appended = (u(&after, "pooled_bytes") + u(&after, "used_bytes")) as f64;
    let want_consumed = u(&after, "used_bytes") as f64;
    assert!(want_appended >= 131072.0, "{after:#}");
    let appended_bytes = format!(
        "geiger_pool_appended_bytes_total{{device=\"{}\"}}",
        device.id
    );
    let consumed_bytes = format!(
        "geiger_pool_consumed_bytes_total{{device=\"{}\"}}",
        device.id
    );
    let last_chunk = format!(
        "geiger_link_last_chunk_timestamp_seconds{{device=\"{}\"}}",
        device.id
    );
    let mut last_chunk_at = Vec::new();
    for id in cluster.ids() {
        let text = wait_metrics(
            &cluster,
            id,
            Duration::from_secs(5),
            "the ledger's appended bytes",
            |t| sample(t, &appended_bytes) == Some(want_appended),
        )
        .await;
        for line in [
            "# TYPE geiger_pool_appended_bytes counter",
            "# TYPE geiger_pool_consumed_bytes counter",
            "# TYPE geiger_link_last_chunk_timestamp_seconds gauge",
        ] {
            assert!(text.contains(line), "node {id}: {line} missing:\n{text}");
        }
        assert_eq!(
            sample(&text, &consumed_bytes),
            Some(want_consumed),
            "{text}"
        );
        let at = sample(&text, &last_chunk).expect("no last chunk timestamp");
        let now = now_unix();
        assert!(
            at <= now + 1.0 && now - at < 60.0,
            "node {id}: last chunk at {at}, now {now}"
        );
        last_chunk_at.push((id, at));
    }

    // Draws take the pool below the low-water mark: the owner resumes.
    let (key, mut previous) = customer_and_chain(&cluster, 1, "links test").await;
    for round in 0..2 {
        let r = cluster
            .http
            .post(format!("{}/v1/draws", cluster.url(2)))
            .bearer_auth(&key)
            .json(&json!({"previous": previous, "tag": format!("r{round}"), "spec": {"kind": "bytes", "count": 65536}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        previous = body["draw"]["id"].as_str().unwrap().to_string();
    }
    let drained = u(&after, "appended_chunks");
    wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(15),
        "appends resume below the low-water mark",
        |l| u(l, "appended_chunks") > drained + 4,
    )
    .await;
    // Every node counts the draws' bytes as consumed, the new chunks as
    // appended, and moves the last chunk's time forward.
    for (id, at) in last_chunk_at {
        wait_metrics(
            &cluster,
            id,
            Duration::from_secs(5),
            "the draws' bytes consumed and a newer last chunk",
            |t| {
                sample(t, &consumed_bytes).unwrap_or(0.0) >= want_consumed + 131072.0
                    && sample(t, &appended_bytes).unwrap_or(0.0) > want_appended
                    && sample(t, &last_chunk).unwrap_or(0.0) > at
            },
        )
        .await;
    }
}

#[tokio::test]
async fn killing_the_owner_moves_the_link_within_a_bounded_time_and_the_pool_keeps_filling() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_appended(&cluster, &device.id, 8, Duration::from_secs(20)).await;
    let (owner, epoch) = (u(&l, "owner"), u(&l, "epoch"));

    let killed_at = Instant::now();
    cluster.kill(owner);
    let moved = wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(15),
        "the link has a new owner",
        |l| u(l, "owner") != owner && u(l, "epoch") > epoch,
    )
    .await;
    let reassigned = killed_at.elapsed();
    let appended_then = u(&moved, "appended_chunks");
    wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(15),
        "the new owner appends",
        |l| u(l, "appended_chunks") > appended_then,
    )
    .await;
    let first_append = killed_at.elapsed();
    eprintln!(
        "kill -9 of owner {owner}: link reassigned after {reassigned:?} (epoch {epoch} -> {}), first chunk appended by node {} after {first_append:?}",
        u(&moved, "epoch"),
        u(&moved, "owner")
    );
    assert!(
        reassigned < Duration::from_secs(5),
        "reassignment took {reassigned:?}"
    );
    assert!(
        first_append < Duration::from_secs(7),
        "first append took {first_append:?}"
    );
    // The pool keeps filling.
    let later = wait_appended(
        &cluster,
        &device.id,
        appended_then + 16,
        Duration::from_secs(15),
    )
    .await;
    assert_accounting(&later);
}

#[tokio::test]
async fn a_paused_old_owner_cannot_append_anything_once_the_link_has_moved() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_appended(&cluster, &device.id, 8, Duration::from_secs(20)).await;
    let (owner, epoch) = (u(&l, "owner"), u(&l, "epoch"));
    let appended_metric = format!(
        "geiger_entropy_chunks_appended_total{{device=\"{}\"}}",
        device.id
    );

    cluster.pause(owner);
    let moved = wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(15),
        "the link moves off the paused owner",
        |l| u(l, "owner") != owner && u(l, "epoch") > epoch,
    )
    .await;
    wait_appended(
        &cluster,
        &device.id,
        u(&moved, "appended_chunks") + 8,
        Duration::from_secs(15),
    )
    .await;

    // Resumed, the old owner still holds chunks it received under the old
    // epoch, and its session still runs: every append must be refused. An
    // append it sent before the pause may have committed under the old
    // epoch (legitimately, before the move) and only be counted once its
    // answer is read after the resume, so the bound is the ledger's: every
    // chunk this node got accepted was committed before the link moved.
    cluster.resume(owner);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics(&cluster, owner).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the resumed node does not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let accepted = sample(&metrics(&cluster, owner).await, &appended_metric).unwrap_or(0.0);
    assert!(
        accepted <= u(&moved, "appended_chunks") as f64,
        "the old owner appended after the link moved: {accepted} accepted, {} in the ledger when it moved",
        u(&moved, "appended_chunks")
    );
    // Usually it did try, under its old epoch, and the ledger said no (the
    // watcher may also stop its session before it tries: no assertion).
    let log = std::fs::read_to_string(&cluster.node(owner).log_path).unwrap_or_default();
    eprintln!(
        "old owner {owner}: stale-epoch rejection logged: {}",
        log.contains(&format!("epoch {epoch} is stale"))
    );

    let l = wait_appended(
        &cluster,
        &device.id,
        u(&moved, "appended_chunks") + 24,
        Duration::from_secs(15),
    )
    .await;
    assert_ne!(u(&l, "owner"), owner);
    assert_accounting(&l);
    // Nothing was skipped: every chunk reached the pool exactly once.
    assert_eq!(u(&l, "skipped_chunks"), 0, "{l:#}");
}

#[tokio::test]
async fn a_stuck_device_has_its_chunks_quarantined_its_link_reported_unhealthy_and_no_draw_uses_them(
) {
    // Two good chunks, then one byte value forever.
    faulty_device_is_quarantined_and_never_drawn(
        &["--rate", RATE, "--fault-stuck-after", "8192"],
        "repetition_count",
    )
    .await;
}

#[tokio::test]
async fn a_biased_device_has_its_chunks_quarantined_its_link_reported_unhealthy_and_no_draw_uses_them(
) {
    // Bits that are 1 nine times in ten: every chunk fails.
    faulty_device_is_quarantined_and_never_drawn(
        &["--rate", RATE, "--fault-bias", "0.9"],
        "", // whichever test fails first
    )
    .await;
}

async fn faulty_device_is_quarantined_and_never_drawn(args: &[&str], failing_test: &str) {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("faulty"), args);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(30),
        "the link reported unhealthy",
        |l| l["unhealthy"] == true && u(l, "quarantined_chunks") >= 4,
    )
    .await;
    assert!(u(&l, "appended_chunks") <= 2, "{l:#}");
    assert_eq!(u(&l, "pooled_bytes"), u(&l, "appended_chunks") * 4096);
    assert_accounting(&l);
    let owner = u(&l, "owner");
    let text = metrics(&cluster, owner).await;
    let up = format!("geiger_link_up{{device=\"{}\"}}", device.id);
    assert_eq!(sample(&text, &up), Some(0.0), "an unhealthy link is not up");
    let failures = format!(
        "geiger_entropy_health_test_failures_total{{device=\"{}\",test=\"{failing_test}",
        device.id
    );
    assert!(sample(&text, &failures).unwrap_or(0.0) >= 1.0, "{text}");

    // Draw everything the pool holds: only the good chunks are ever used.
    let (key, mut previous) = customer_and_chain(&cluster, 1, "stuck").await;
    let first = l["first_seq"].as_u64().unwrap();
    let good = first + u(&l, "appended_chunks");
    let mut exhausted = false;
    for round in 0..40 {
        let r = cluster
            .http
            .post(format!("{}/v1/draws", cluster.url(2)))
            .bearer_auth(&key)
            .json(&json!({"previous": previous, "tag": format!("s{round}"), "spec": {"kind": "bytes", "count": 1024}}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == 503 {
            assert_eq!(body["error"]["code"], "entropy_exhausted", "{body}");
            exhausted = true;
            break;
        }
        assert_eq!(status, 201, "{body}");
        for seg in body["draw"]["entropy"]["segments"].as_array().unwrap() {
            let seq = seg["chunk_seq"].as_u64().unwrap();
            assert!(
                seq < good,
                "draw used chunk {seq}, past the good ones: {seg}"
            );
        }
        previous = body["draw"]["id"].as_str().unwrap().to_string();
    }
    assert!(
        exhausted,
        "the pool should run dry on the good chunks alone"
    );
}

#[tokio::test]
async fn a_restarted_device_continues_its_sequence_and_the_owner_accepts_its_new_chunks() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_appended(&cluster, &device.id, 8, Duration::from_secs(20)).await;
    let (owner, last) = (u(&l, "owner"), l["last_seq"].as_u64().unwrap());

    device.restart();
    let l = wait_appended(
        &cluster,
        &device.id,
        u(&l, "appended_chunks") + 8,
        Duration::from_secs(20),
    )
    .await;
    assert!(l["last_seq"].as_u64().unwrap() > last);
    assert_eq!(
        u(&l, "owner"),
        owner,
        "a device restart does not move the link"
    );
    // The restart skipped the rest of the device's reserved block: recorded
    // as skipped, never as a hole.
    assert!(u(&l, "skipped_chunks") > 0, "{l:#}");
    assert_accounting(&l);
}

/// The figure: time from `kill -9` of a link's owner to the first
/// chunk appended by the next owner, median of 10 trials (the killed node
/// is restarted between trials). Run with `-- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement: about two minutes"]
async fn measure_the_time_from_killing_the_owner_to_the_first_chunk_appended_by_the_next() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let mut reassign = Vec::new();
    let mut first_chunk = Vec::new();
    for trial in 0..10 {
        // Read through the leader: a node restarted by the previous trial
        // may still be catching up.
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let l = wait_link(
            &cluster,
            Some(leader),
            &device.id,
            Duration::from_secs(30),
            "a running lease",
            |l| l["lease_active"] == true,
        )
        .await;
        let (owner, epoch) = (u(&l, "owner"), u(&l, "epoch"));
        // Let the owner run a little, so the kill lands mid-stream.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let at_kill = u(
            &link(&cluster, owner, &device.id).await.unwrap(),
            "last_seq",
        );
        let killed_at = Instant::now();
        cluster.kill(owner);
        wait_link(
            &cluster,
            None,
            &device.id,
            Duration::from_secs(20),
            "a new owner",
            |l| u(l, "owner") != owner && u(l, "epoch") > epoch,
        )
        .await;
        reassign.push(killed_at.elapsed());
        wait_link(
            &cluster,
            None,
            &device.id,
            Duration::from_secs(20),
            "the new owner's first chunk",
            |l| u(l, "epoch") > epoch && u(l, "last_seq") > at_kill,
        )
        .await;
        first_chunk.push(killed_at.elapsed());
        eprintln!(
            "trial {trial}: owner {owner} killed; reassigned after {:?}, first chunk after {:?}",
            reassign[trial], first_chunk[trial]
        );
        cluster.restart(owner);
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let now = link(&cluster, leader, &device.id).await.unwrap();
        wait_link(
            &cluster,
            Some(owner),
            &device.id,
            Duration::from_secs(30),
            "the restarted node caught up",
            |l| u(l, "epoch") >= u(&now, "epoch"),
        )
        .await;
    }
    reassign.sort();
    first_chunk.sort();
    eprintln!(
        "median of 10: reassigned after {:?}, first chunk appended by the new owner after {:?} (min {:?}, max {:?})",
        (reassign[4] + reassign[5]) / 2,
        (first_chunk[4] + first_chunk[5]) / 2,
        first_chunk[0],
        first_chunk[9]
    );
    let l = link_anywhere(&cluster, &device.id).await.unwrap();
    assert_accounting(&l);
}

/// Opens a customer and a chain through node `via`; returns (api key, chain id).
async fn customer_and_chain(cluster: &Cluster, via: u64, name: &str) -> (String, String) {
    let (status, customer) = cluster
        .post(via, "/v1/admin/customers", &json!({ "name": name }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{customer}");
    let key = customer["api_key"].as_str().unwrap().to_string();
    // A follower may not have applied the new customer yet (401 for a
    // moment): retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = cluster
            .http
            .post(format!("{}/v1/chains", cluster.url(via)))
            .bearer_auth(&key)
            .json(&json!({ "tag": name }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let chain: Value = r.json().await.unwrap_or(Value::Null);
        if status == 201 {
            return (key, chain["id"].as_str().unwrap().to_string());
        }
        assert!(
            status == 401 && Instant::now() < deadline,
            "POST /v1/chains: {status} {chain}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `bytes` draw after `previous`: (status, body).
async fn draw_bytes(
    cluster: &Cluster,
    via: u64,
    key: &str,
    previous: &str,
    count: u32,
) -> (u16, Value) {
    let r = cluster
        .http
        .post(format!("{}/v1/draws", cluster.url(via)))
        .bearer_auth(key)
        .json(&json!({"previous": previous, "tag": "t", "spec": {"kind": "bytes", "count": count}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn with_both_devices_down_draws_use_the_reserve_then_fail_with_entropy_exhausted_and_recover_when_a_device_returns(
) {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(
        one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 65536\npool_low_water_bytes = 32768\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut a = Device::start(&dir.path().join("a"), &["--rate", RATE]);
    let mut b = Device::start(&dir.path().join("b"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &a).await;
    register(&cluster, 2, &b).await;
    for d in [&a, &b] {
        wait_link(
            &cluster,
            None,
            &d.id,
            Duration::from_secs(30),
            "the device's reserve filled",
            |l| u(l, "pooled_bytes") >= 65536,
        )
        .await;
    }
    // The two owners are on different nodes (spread).
    let owner_a = u(&link_anywhere(&cluster, &a.id).await.unwrap(), "owner");
    let owner_b = u(&link_anywhere(&cluster, &b.id).await.unwrap(), "owner");
    assert_ne!(owner_a, owner_b, "two links on one node of three");

    a.kill();
    b.kill();
    let (key, mut previous) = customer_and_chain(&cluster, 3, "reserve").await;
    let mut drawn = 0u64;
    let mut devices_used = std::collections::BTreeSet::new();
    loop {
        let (status, body) = draw_bytes(&cluster, 3, &key, &previous, 4096).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "entropy_exhausted", "{body}");
            break;
        }
        assert_eq!(status, 201, "{body}");
        for seg in body["draw"]["entropy"]["segments"].as_array().unwrap() {
            devices_used.insert(seg["device"].as_str().unwrap().to_string());
        }
        previous = body["draw"]["id"].as_str().unwrap().to_string();
        drawn += 4096;
        assert!(drawn < 1 << 20, "the reserve never ran out");
    }
    assert!(
        drawn >= 2 * 65536 - 4096,
        "only {drawn} bytes came from the reserve"
    );
    assert_eq!(
        devices_used.len(),
        2,
        "the reserve of both devices was used"
    );

    // One device returns: its owner (whoever holds the lease by then)
    // reconnects and the draws succeed again.
    a.restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = draw_bytes(&cluster, 1, &key, &previous, 4096).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("draws did not recover after the device returned");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in [&a, &b] {
        assert_accounting(&link_anywhere(&cluster, &d.id).await.unwrap());
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    geiger_testkit::measure::nearest_rank(sorted, p).unwrap_or_default()
}

async fn draw_latencies(
    cluster: &Cluster,
    via: u64,
    key: &str,
    previous: &mut String,
    n: usize,
) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = draw_bytes(cluster, via, key, previous, 32).await;
        took.push(started.elapsed());
        assert_eq!(status, 201, "{body}");
        *previous = body["draw"]["id"].as_str().unwrap().to_string();
    }
    took.sort();
    took
}

/// The figures: entropy ingestion into the replicated pool from one
/// unthrottled device (bytes/s), and draw latency with and without that
/// ingestion running. Run with `-- --ignored --nocapture` (debug build
/// unless `--release`).
#[tokio::test]
#[ignore = "measurement: about a minute"]
async fn measure_ingestion_throughput_and_its_cost_to_draw_latency() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(
        one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 1073741824\npool_low_water_bytes = 536870912\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::start(&dir.path().join("fast"), &["--rate", "0"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, leader, &device).await;
    wait_appended(&cluster, &device.id, 16, Duration::from_secs(30)).await;
    let (key, mut previous) = customer_and_chain(&cluster, leader, "measure").await;

    let total = |l: &Value| u(l, "pooled_bytes") + u(l, "used_bytes");
    let before = link(&cluster, leader, &device.id).await.unwrap();
    let started = Instant::now();
    let busy = draw_latencies(&cluster, leader, &key, &mut previous, 200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = link(&cluster, leader, &device.id).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let rate = (total(&after) - total(&before)) as f64 / secs;
    let chunks = (u(&after, "appended_chunks") - u(&before, "appended_chunks")) as f64 / secs;

    device.kill();
    // A device at the simulator's realistic default rate (32 KiB/s).
    let slow = Device::start(&dir.path().join("slow"), &[]);
    register(&cluster, leader, &slow).await;
    wait_appended(&cluster, &slow.id, 8, Duration::from_secs(30)).await;
    let realistic = draw_latencies(&cluster, leader, &key, &mut previous, 200).await;
    drop(slow);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = draw_latencies(&cluster, leader, &key, &mut previous, 200).await;
    eprintln!(
        "ingestion: {:.2} MiB/s ({chunks:.0} chunks/s of 4 KiB) into the replicated pool; \
         draw latency (32 bytes, via the leader) while ingesting at full speed p50 {:?} p99 {:?}, \
         with one 32 KiB/s device p50 {:?} p99 {:?}, idle p50 {:?} p99 {:?}",
        rate / (1024.0 * 1024.0),
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        percentile(&realistic, 0.5),
        percentile(&realistic, 0.99),
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
    );
    assert!(rate > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_draws_across_two_devices_never_use_a_byte_twice_and_account_for_every_chunk()
{
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with_env(
        one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 1048576\npool_low_water_bytes = 524288\n",
        vec![
            ("GEIGER_API__RATE_PER_SECOND".into(), "100000".into()),
            ("GEIGER_API__RATE_BURST".into(), "100000".into()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let a = Device::start(&dir.path().join("a"), &["--rate", "1048576"]);
    let b = Device::start(&dir.path().join("b"), &["--rate", "1048576"]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &a).await;
    register(&cluster, 2, &b).await;
    for d in [&a, &b] {
        wait_appended(&cluster, &d.id, 16, Duration::from_secs(30)).await;
    }

    const CHAINS: usize = 20;
    const PER_CHAIN: usize = 500;
    let mut tasks = Vec::new();
    let cluster = std::sync::Arc::new(cluster);
    for c in 0..CHAINS {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            let via = (c % 3) as u64 + 1;
            let (key, mut previous) = customer_and_chain(&cluster, via, &format!("c{c}")).await;
            let mut segments = Vec::new();
            let mut done = 0;
            while done < PER_CHAIN {
                let (status, body) = draw_bytes(&cluster, via, &key, &previous, 64).await;
                if status == 503 {
                    // The pool ran dry for a moment: the devices refill it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                assert_eq!(status, 201, "{body}");
                let entropy = &body["draw"]["entropy"];
                let mut len = 0;
                for seg in entropy["segments"].as_array().unwrap() {
                    let s = (
                        seg["device"].as_str().unwrap().to_string(),
                        seg["chunk_seq"].as_u64().unwrap(),
                        seg["offset"].as_u64().unwrap(),
                        seg["length"].as_u64().unwrap(),
                    );
                    len += s.3;
                    segments.push(s);
                }
                assert_eq!(len * 2, entropy["hex"].as_str().unwrap().len() as u64);
                previous = body["draw"]["id"].as_str().unwrap().to_string();
                done += 1;
            }
            segments
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    // No byte twice: per (device, chunk), the used ranges never overlap.
    all.sort();
    for w in all.windows(2) {
        let (x, y) = (&w[0], &w[1]);
        if x.0 == y.0 && x.1 == y.1 {
            assert!(x.2 + x.3 <= y.2, "bytes used twice: {x:?} and {y:?}");
        }
    }
    let mut used: std::collections::BTreeMap<String, u64> = Default::default();
    for s in &all {
        *used.entry(s.0.clone()).or_default() += s.3;
    }
    assert_eq!(used.len(), 2, "both devices fed the draws");
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    for d in [&a, &b] {
        let l = link(&cluster, leader, &d.id).await.unwrap();
        // Every byte the ledger counts as used is in one of these draws.
        assert_eq!(u(&l, "used_bytes"), used[&d.id], "{l:#}");
        assert_accounting(&l);
    }
}

#[tokio::test]
async fn a_removed_link_stops_its_session_and_registering_it_again_continues_with_a_higher_epoch() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_appended(&cluster, &device.id, 4, Duration::from_secs(20)).await;
    let (owner, epoch) = (u(&l, "owner"), u(&l, "epoch"));

    let r = cluster
        .http
        .delete(format!("{}/v1/admin/links/{}", cluster.url(2), device.id))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let up = format!("geiger_link_up{{device=\"{}\"}}", device.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = link_anywhere(&cluster, &device.id).await.is_none();
        let down = sample(&metrics(&cluster, owner).await, &up) == Some(0.0);
        if gone && down {
            break;
        }
        assert!(Instant::now() < deadline, "the removed link still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = cluster
        .http
        .delete(format!("{}/v1/admin/links/{}", cluster.url(2), device.id))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "removing twice");

    register(&cluster, 3, &device).await;
    let l = wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(20),
        "the link runs again under a higher epoch",
        |x| {
            u(x, "epoch") > epoch
                && x["lease_active"] == true
                && u(x, "appended_chunks") > u(&l, "appended_chunks")
        },
    )
    .await;
    assert_accounting(&l);
}

#[tokio::test]
async fn three_links_spread_over_three_nodes_and_killing_the_leader_moves_only_its_own_link() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<Device> = (0..3)
        .map(|i| Device::start(&dir.path().join(format!("dev{i}")), &["--rate", RATE]))
        .collect();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    for d in &devices {
        register(&cluster, leader, d).await;
    }
    let mut owners = std::collections::BTreeMap::new();
    for d in &devices {
        let l = wait_appended(&cluster, &d.id, 4, Duration::from_secs(30)).await;
        owners.insert(d.id.clone(), (u(&l, "owner"), u(&l, "epoch")));
    }
    let mut nodes: Vec<u64> = owners.values().map(|o| o.0).collect();
    nodes.sort();
    assert_eq!(nodes, vec![1, 2, 3], "one link per node: {owners:?}");

    let killed_at = Instant::now();
    cluster.kill(leader);
    let (moved, epoch) = owners
        .iter()
        .find(|(_, (o, _))| *o == leader)
        .map(|(d, (_, e))| (d.clone(), *e))
        .unwrap();
    wait_link(
        &cluster,
        None,
        &moved,
        Duration::from_secs(15),
        "the dead leader's link moves",
        |l| u(l, "owner") != leader && u(l, "epoch") > epoch,
    )
    .await;
    eprintln!(
        "kill -9 of the leader {leader}, owner of {moved}: reassigned after {:?}",
        killed_at.elapsed()
    );
    assert!(killed_at.elapsed() < Duration::from_secs(6));
    // The other links stayed where they were, and all three keep filling.
    for d in &devices {
        let before = link_anywhere(&cluster, &d.id).await.unwrap();
        let l = wait_appended(
            &cluster,
            &d.id,
            u(&before, "appended_chunks") + 8,
            Duration::from_secs(15),
        )
        .await;
        if d.id != moved {
            assert_eq!(
                (u(&l, "owner"), u(&l, "epoch")),
                owners[&d.id],
                "a live owner's link moved"
            );
        }
        assert_accounting(&l);
    }
}

#[tokio::test]
async fn a_device_restarted_while_its_owner_is_paused_at_high_water_is_reconnected_and_keeps_its_owner(
) {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(
        one_per_zone(3),
        "[hardware]\npool_high_water_bytes = 65536\npool_low_water_bytes = 32768\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_link(
        &cluster,
        None,
        &device.id,
        Duration::from_secs(30),
        "the reserve full",
        |l| u(l, "pooled_bytes") >= 65536,
    )
    .await;
    let (owner, epoch) = (u(&l, "owner"), u(&l, "epoch"));
    device.restart();
    let established = format!(
        "geiger_link_sessions_total{{device=\"{}\",outcome=\"established\"}}",
        device.id
    );
    let up = format!("geiger_link_up{{device=\"{}\"}}", device.id);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = metrics(&cluster, owner).await;
        if sample(&text, &established).unwrap_or(0.0) >= 2.0 && sample(&text, &up) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused owner did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the renewal grace (2 × lease): the lease stays put.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let l = link(&cluster, owner, &device.id).await.unwrap();
    assert_eq!((u(&l, "owner"), u(&l, "epoch")), (owner, epoch), "{l:#}");
    assert_eq!(l["lease_active"], true);
}

#[tokio::test]
async fn every_appended_chunk_keeps_the_devices_signature_and_it_verifies_against_the_registered_key(
) {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(3), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("dev1"), &["--rate", RATE]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    let l = wait_appended(&cluster, &device.id, 4, Duration::from_secs(20)).await;
    let first = l["first_seq"].as_u64().unwrap();
    let key_bytes: [u8; 32] = hex::decode(&device.public_key).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    for seq in first..first + 4 {
        let (status, proof) = cluster
            .get(2, &format!("/v1/admin/links/{}/chunks/{seq}", device.id))
            .await
            .unwrap();
        assert_eq!(status, 200, "{proof}");
        assert_eq!(proof["verified"], true, "{proof}");
        // Checked here too, independently of the node.
        let statement = hex::decode(proof["statement"].as_str().unwrap()).unwrap();
        let signature: [u8; 64] = hex::decode(proof["signature"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        key.verify_strict(
            &statement,
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .expect("the device's signature verifies");
        assert_eq!(&statement[32..40], &seq.to_be_bytes());
        assert_eq!(
            hex::encode(&statement[40..72]),
            proof["sha256"].as_str().unwrap()
        );
    }
    let (status, _) = cluster
        .get(
            2,
            &format!("/v1/admin/links/{}/chunks/999999999", device.id),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_decay_devices_owner_shows_its_count_rate_raw_bits_conditioned_output_and_rejected_share()
{
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(one_per_zone(1), BIG_RESERVE);
    let dir = tempfile::tempdir().unwrap();
    // 10,000 true counts/s, 100 µs dead time: 5,000 registered a second,
    // 2,488 raw bits and 139.9 conditioned bytes (docs/HEALTH.md).
    let device = Device::start(
        &dir.path().join("dev1"),
        &[
            "--source",
            "decay",
            "--count-rate",
            "10000",
            "--chunk-size",
            "256",
        ],
    );
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    register(&cluster, 1, &device).await;
    // Rates are averaged over at least 10 s of reports.
    let l = wait_link(
        &cluster,
        Some(1),
        &device.id,
        Duration::from_secs(60),
        "a source report averaged over 10 s",
        |l| {
            l["source"]["window_seconds"]
                .as_f64()
                .is_some_and(|w| w >= 10.0)
        },
    )
    .await;
    let source = &l["source"];
    let f = |k: &str| source[k].as_f64().unwrap_or(f64::NAN);
    let count = f("count_rate_per_second");
    // Slower than physics only if the machine starves the simulation.
    assert!((3_000.0..=5_500.0).contains(&count), "{source:#}");
    let bits_per_count = f("raw_bits_per_second") / count;
    assert!((0.45..=0.52).contains(&bits_per_count), "{source:#}");
    // 32 output bytes per 569 raw bits, counted in whole 256-byte reads.
    let out_per_bit = f("output_bytes_per_second") / f("raw_bits_per_second");
    assert!(
        (0.5 * 32.0 / 569.0..=1.5 * 32.0 / 569.0).contains(&out_per_bit),
        "{source:#}"
    );
    assert_eq!(f("rejected_fraction"), 0.0, "{source:#}");

    let (_, status) = cluster.get(1, "/v1/cluster/status").await.unwrap();
    assert!(
        status["sources"][&device.id]["count_rate_per_second"].as_f64() > Some(0.0),
        "{status:#}"
    );
    let events = format!("geiger_source_events_total{{device=\"{}\"}}", device.id);
    let output = format!(
        "geiger_source_output_bytes_total{{device=\"{}\"}}",
        device.id
    );
    let text = metrics(&cluster, 1).await;
    assert!(sample(&text, &events) > Some(10_000.0), "{text}");
    assert!(sample(&text, &output) > Some(0.0), "{text}");
}
