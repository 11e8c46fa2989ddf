//! A wrong clock, as an operator with one misconfigured host would have it:
//! one of three `geiger node` processes runs with its wall clock an hour
//! ahead (libfaketime from Debian's `faketime` package; its monotonic clock
//! is left alone). It must learn that it is the wrong one, say so in its
//! metrics, lead only when no good node can (to hand over entries only it
//! holds), and no draw may carry its clock.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cluster, Device};
use serde_json::{json, Value};

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics(cluster: &Cluster, id: u64) -> String {
    match cluster
        .http
        .get(format!("{}/metrics", cluster.url(id)))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes `n` chained draws through `node`; checks each `issued_at` is
/// within 5 s of this (correct) clock; returns the last draw's ID.
async fn draws_stamped_by_good_clocks(
    cluster: &Cluster,
    node: u64,
    key: &str,
    mut previous: String,
    n: usize,
) -> String {
    for _ in 0..n {
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let r = cluster
                .http
                .post(format!("{}/v1/draws", cluster.url(node)))
                .bearer_auth(key)
                .json(&json!({"previous": previous, "tag": "clock", "spec": {"kind": "bytes", "count": 4}}))
                .send()
                .await;
            let last = match r {
                Ok(r) if r.status() == 201 => break r.json::<Value>().await.unwrap(),
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "no draw committed through node {node} in 20 s: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let issued = body["draw"]["issued_at"].as_str().unwrap();
        let at = geiger_protocol::record::parse_timestamp(issued)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (at - now_ms()).abs() < 5_000,
            "a draw carries a wrong clock: issued_at {issued}"
        );
        previous = body["draw"]["id"].as_str().unwrap().to_string();
    }
    previous
}

#[tokio::test]
async fn a_node_whose_clock_is_an_hour_ahead_knows_it_leads_only_to_hand_over_and_never_stamps_a_draw(
) {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("device"), &["--rate", "262144"]);
    let mut cluster = Cluster::start(common::one_per_zone(3), "");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = cluster
        .post(leader, "/v1/admin/customers", &json!({"name": "clock"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();

    // Node 3 comes back an hour ahead (whatever it was before).
    let wrong = 3;
    cluster.terminate(wrong);
    let node = cluster.nodes.get_mut(&wrong).unwrap();
    node.process.env.extend(
        geiger_testkit::launcher::faketime::clock_shifted("+1h")
            .expect("libfaketime (apt-get install faketime; scripts/test-deps installs it)"),
    );
    cluster.restart(wrong);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    assert_ne!(leader, wrong);

    // It learns from the leader that it is the wrong one, and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&cluster, wrong).await;
        let offset = sample(&m, "geiger_clock_offset_seconds");
        if sample(&m, "geiger_clock_unsynchronized") == Some(1.0)
            && offset.is_some_and(|o| (o - 3600.0).abs() < 5.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {wrong} never learned its clock is off: offset {offset:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for good in cluster.ids().into_iter().filter(|id| *id != wrong) {
        let m = metrics(&cluster, good).await;
        assert_eq!(
            sample(&m, "geiger_clock_unsynchronized"),
            Some(0.0),
            "node {good}"
        );
    }

    let created = cluster
        .http
        .post(format!("{}/v1/chains", cluster.url(leader)))
        .bearer_auth(&key)
        .json(&json!({"tag": "clock"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let chain = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Through the wrong node too: it forwards, the leader stamps.
    let head = draws_stamped_by_good_clocks(&cluster, wrong, &key, chain, 5).await;

    // Now the worst case: the draws that follow commit with the wrong
    // node's acknowledgement alone (the other good node is paused), and then
    // the leader dies. Only the wrong node holds those draws, so no good node
    // can win a vote until it has them: the wrong node may lead, as a last
    // resort, just long enough to hand them over, stamping nothing.
    let good = cluster
        .ids()
        .into_iter()
        .find(|id| *id != wrong && *id != leader)
        .unwrap();
    cluster.pause(good);
    let head = draws_stamped_by_good_clocks(&cluster, leader, &key, head, 3).await;
    cluster.kill(leader);
    cluster.resume(good);
    let started = Instant::now();
    let mut new_leader = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(s) = cluster.status(good).await {
            if s["leader"].as_u64() == Some(good) {
                new_leader = Some(good);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(new_leader) = new_leader else {
        cluster.dump_logs();
        panic!("the good node was not elected");
    };
    // The draws only the wrong node held survived: the chain goes on from
    // the last of them, and its `previous` is spent.
    draws_stamped_by_good_clocks(&cluster, new_leader, &key, head.clone(), 5).await;
    let again = cluster
        .http
        .post(format!("{}/v1/draws", cluster.url(new_leader)))
        .bearer_auth(&key)
        .json(&json!({"previous": head, "tag": "clock", "spec": {"kind": "bytes", "count": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "{:?}", again.text().await);
    drop(device);
}
