//! A rolling upgrade from the version before postcard (storage and wire
//! format 1) to this build, as an operator does it: three real `geiger
//! node` processes of the previous version under steady chained draws,
//! then one node at a time stopped (SIGTERM) and started again with this
//! build on the same data: a follower, the leader, the other follower.
//!
//! Mid-way an upgraded node leads a member of the previous build, which
//! cannot apply the level-2 rules (kept chunk bytes): the cluster feature
//! level must stay at 1 until the last member is upgraded, then rise, and
//! every node must then answer alike for every chunk.
//!
//! While versions are mixed, upgraded members speak the legacy wire format
//! to the old ones (they answer 404 at the current format's paths) and the
//! old leader replicates to upgraded followers at the legacy paths. Every
//! upgraded node migrates its state database and Raft log when it starts.
//!
//! The two builds' `lan` timing differs too (heartbeat 25 ms, election
//! 70–140 ms then; 100 ms and 200–400 ms now). A follower of either build
//! waits out its leader's lease plus its own election timeout (210–280 ms
//! for the old one) before it stands, so the slower heartbeat is inside
//! it (deploy/README.md, "Changing Raft timing"): no term may change while
//! the builds are mixed.
//!
//! Needs the previous version's `geiger` in `GEIGER_PREVIOUS_BIN_DIR`:
//! `scripts/rolling-upgrade` builds it from git and runs this test.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Device, NodeSpec};
use serde_json::{json, Value};

const WRITERS: usize = 4;
/// The longest any writer may go without a committed draw, upgrades
/// included (a stopped node's clients move to another node).
const MAX_GAP: Duration = Duration::from_secs(15);

/// What one writer did: its chain, the IDs it committed in order, and the
/// longest it waited between two commits.
#[derive(Debug, Default)]
struct Writer {
    chain: String,
    committed: Vec<String>,
    longest_gap: Duration,
    retries: u64,
}

/// Draws on `writer`'s chain until `stop`, through node `(i + n) % 3 + 1`
/// for its n-th attempt. A failed attempt is retried (elsewhere) with the
/// same `request_id`: a replay if it had committed after all.
async fn write(
    http: reqwest::Client,
    urls: Vec<String>,
    key: String,
    writer: Arc<Mutex<Writer>>,
    index: usize,
    stop: Arc<AtomicBool>,
) {
    let mut previous = writer.lock().unwrap().chain.clone();
    let mut attempt = index;
    let mut last_commit = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request_id = format!("w{index}-{n}");
        loop {
            let url = &urls[attempt % urls.len()];
            attempt += 1;
            let answer = http
                .post(format!("{url}/v1/draws"))
                .bearer_auth(&key)
                .json(&json!({
                    "previous": previous,
                    "request_id": request_id,
                    "tag": "upgrade",
                    "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true}
                }))
                .send()
                .await;
            if let Ok(r) = answer {
                if r.status() == 201 {
                    let body: Value = r.json().await.unwrap();
                    previous = body["draw"]["id"].as_str().unwrap().to_string();
                    let mut w = writer.lock().unwrap();
                    w.committed.push(previous.clone());
                    w.longest_gap = w.longest_gap.max(last_commit.elapsed());
                    last_commit = Instant::now();
                    break;
                }
            }
            writer.lock().unwrap().retries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Freezes (SIGSTOP) `follower` at a moment it is known to follow
/// `leader`: within 100 ms of acknowledging an entry the leader appended
/// after the attempt began.
///
/// A member of the previous build stands for election after 210-280 ms
/// without its leader (on a starved machine, that happens). Frozen as a
/// candidate, it comes back behind in log but ahead in term: each leader
/// of this build then steps down on its higher vote, and its election
/// timer (70-140 ms, plus 280 ms once it has seen a longer log) can keep
/// it a term ahead of this build's (200-400 ms), so that the upgraded
/// members keep no leader; CI once saw that last a minute
/// (deploy/README.md, "Changing Raft timing"). The
/// freeze stands for an old member that is slow to come back, not for one
/// cut off mid-election.
async fn freeze_while_following(cluster: &mut Cluster, leader: u64, follower: u64) {
    const FRESH: Duration = Duration::from_millis(100);
    let matched = |status: Value| {
        status["peers"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == follower)?["matched_index"]
            .as_u64()
    };
    cluster
        .wait_until(
            Duration::from_secs(30),
            "the old follower acknowledging an append within 100 ms",
            || async {
                let began = Instant::now();
                let before = cluster.status(leader).await?["last_log_index"].as_u64()?;
                // Writers append all the time: entry `before + 1` comes soon.
                while began.elapsed() < FRESH {
                    if matched(cluster.status(leader).await?).is_some_and(|m| m > before) {
                        return (began.elapsed() < FRESH).then_some(());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None
            },
        )
        .await;
    cluster.pause(follower);
}

/// The term node `id` is in.
async fn term_of(cluster: &Cluster, id: u64) -> u64 {
    let status = cluster.status(id).await.expect("status");
    status["term"].as_u64().expect("a term in the status")
}

fn log_of(cluster: &Cluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.node(id).process.log_path).unwrap_or_default()
}

/// Whether any node's log has a line containing `text`.
fn some_log_contains(cluster: &Cluster, text: &str) -> bool {
    cluster
        .ids()
        .iter()
        .any(|id| log_of(cluster, *id).contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous version in GEIGER_PREVIOUS_BIN_DIR: run scripts/rolling-upgrade"]
async fn a_rolling_upgrade_from_the_previous_format_keeps_every_writer_committing() {
    let previous = PathBuf::from(
        std::env::var_os("GEIGER_PREVIOUS_BIN_DIR")
            .expect("GEIGER_PREVIOUS_BIN_DIR (scripts/rolling-upgrade sets it)"),
    )
    .join("geiger");
    assert!(previous.exists(), "{} missing", previous.display());

    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&dir.path().join("device"), &["--rate", "262144"]);
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_binary_in(
        &previous,
        cluster_dir,
        common::one_per_zone(3),
        "",
        Vec::new(),
        &|_, config| config,
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = cluster
        .post(leader, "/v1/admin/customers", &json!({"name": "upgrade"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();

    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let r = cluster
            .http
            .post(format!("{}/v1/chains", cluster.url(leader)))
            .bearer_auth(&key)
            .json(&json!({"tag": format!("writer {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        writers.push(Arc::new(Mutex::new(Writer {
            chain: body["id"].as_str().unwrap().to_string(),
            ..Writer::default()
        })));
    }
    let urls: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let tasks: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            tokio::spawn(write(
                http.clone(),
                urls.clone(),
                key.clone(),
                w.clone(),
                i,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A follower, then the leader, then the other follower. While the
    // leader is upgraded the old follower is frozen, so that an upgraded
    // node is elected and then leads a cluster that still has a member of
    // the previous build: the case the feature level exists for.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let order = [followers[0], leader, followers[1]];
    let last = followers[1];
    let mut committed_at_step = Vec::new();
    // (node, term as the step's draws began, term as they ended)
    let mut terms_at_step = Vec::new();
    let mut upgraded = Vec::new();
    for id in order {
        if id == leader {
            freeze_while_following(&mut cluster, leader, last).await;
        }
        cluster.terminate(id);
        cluster.restart_upgraded(id);
        if id == leader {
            // The two upgraded nodes agree on a leader (the frozen one
            // cannot answer, so it is not asked).
            let new_leader = cluster
                .wait_until(Duration::from_secs(30), "an upgraded leader", || async {
                    let a = cluster.status(followers[0]).await?["leader"].as_u64()?;
                    let b = cluster.status(leader).await?["leader"].as_u64()?;
                    (a == b).then_some(a)
                })
                .await;
            assert_ne!(
                new_leader, last,
                "the frozen old member cannot have been elected"
            );
            eprintln!("node {new_leader} (upgraded) leads node {last} (previous build)");
            cluster.resume(last);
        }
        cluster
            .wait_until(Duration::from_secs(60), "the upgraded node ready", || {
                let http = http.clone();
                let url = cluster.url(id);
                async move {
                    let r = http.get(format!("{url}/readyz")).send().await.ok()?;
                    (r.status() == 200).then_some(())
                }
            })
            .await;
        // Some draws under this mix of versions, and no election.
        let term = term_of(&cluster, id).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let total: usize = writers
            .iter()
            .map(|w| w.lock().unwrap().committed.len())
            .sum();
        committed_at_step.push((id, total));
        terms_at_step.push((id, term, term_of(&cluster, id).await));
        upgraded.push(id);
        if id != last {
            // A member of the previous build remains: the level must not
            // rise, or the upgraded replicas would keep chunks it does not.
            for up in &upgraded {
                let status = cluster.status(*up).await.expect("status");
                assert_eq!(
                    status["feature_level"]["cluster"], 1,
                    "node {up} with an older member in the cluster: {}",
                    status["feature_level"]
                );
            }
        }
    }
    // Every member on this build: the leader raises the level, and every
    // replica applies the raise.
    cluster
        .wait_until(
            Duration::from_secs(30),
            "every node at this build's feature level",
            || async {
                for id in cluster.ids() {
                    let status = cluster.status(id).await?;
                    let level = &status["feature_level"];
                    (level["cluster"] == level["build"] && level["cluster"].as_u64()? > 1)
                        .then_some(())?;
                }
                Some(())
            },
        )
        .await;
    // Draws after the raise use chunks up, which are now kept: go on until
    // the chunk at the front of the pool at the raise is used up and kept
    // (on a starved machine 4 s of draws may not get that far).
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let front = pool_front(&cluster, &http, leader).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster
        .wait_until(
            Duration::from_secs(60),
            "the chunk at the front of the pool at the raise kept",
            || async {
                let r = http.get(&front).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Every step of the upgrade committed draws.
    let mut before = 0;
    for (id, total) in &committed_at_step {
        assert!(
            *total > before,
            "no draw committed while node {id} was upgraded: {committed_at_step:?}"
        );
        before = *total;
    }
    eprintln!("terms over each step's window (node, first, last): {terms_at_step:?}");
    for (id, first, last) in &terms_at_step {
        assert_eq!(
            first, last,
            "an election while node {id}'s step ran on mixed builds: {terms_at_step:?}"
        );
    }
    for (i, w) in writers.iter().enumerate() {
        let w = w.lock().unwrap();
        assert!(
            w.longest_gap < MAX_GAP,
            "writer {i} waited {:?} for a commit",
            w.longest_gap
        );
        eprintln!(
            "writer {i}: {} draws, longest gap {:?}, {} retried attempts",
            w.committed.len(),
            w.longest_gap,
            w.retries
        );
    }

    // Each node migrated its data, and the first upgraded one spoke the
    // legacy format to the old members.
    for id in cluster.ids() {
        let log = log_of(&cluster, id);
        assert!(
            log.contains("state database re-encoded from the legacy format"),
            "node {id} did not migrate its state database"
        );
        assert!(
            log.contains("raft log re-encoded from the legacy format"),
            "node {id} did not migrate its Raft log"
        );
    }
    assert!(
        some_log_contains(&cluster, "member speaks only the legacy wire format"),
        "no upgraded node fell back to the legacy wire format"
    );

    assert!(
        some_log_contains(&cluster, "cluster feature level raised"),
        "no node applied the feature level raise"
    );
    every_node_answers_alike_for_every_chunk(&cluster, &http).await;

    // Every chain, read from every node, holds exactly its writer's draws,
    // in order, and the nodes agree byte for byte.
    for w in &writers {
        let (chain, committed) = {
            let w = w.lock().unwrap();
            (w.chain.clone(), w.committed.clone())
        };
        let mut pages = BTreeMap::new();
        for id in cluster.ids() {
            let read = cluster
                .wait_until(Duration::from_secs(20), "a node caught up", || {
                    let (http, url) = (http.clone(), cluster.url(id));
                    let (chain, expected) = (chain.clone(), committed.len());
                    async move {
                        let read = chain_draws(&http, &url, &chain).await?;
                        (read.1.len() == expected).then_some(read)
                    }
                })
                .await;
            pages.insert(id, read);
        }
        let (first_bytes, first_ids) = pages.values().next().unwrap().clone();
        assert!(
            pages.values().all(|(bytes, _)| *bytes == first_bytes),
            "nodes disagree on chain {chain}"
        );
        assert_eq!(first_ids, committed);
    }

    // A node of the previous build cannot apply this ledger any more:
    // `member add` refuses it, saying why, and the membership is unchanged.
    let outsider = NodeSpec::new(4, "zone-4");
    let member = json!({
        "api_addr": outsider.api_addr(),
        "rpc_addr": outsider.rpc_addr(),
        "zone": "zone-4",
        "cloud": "cloud-a",
        "region": "region-a",
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    cluster.start_outsider(&previous, outsider);
    let refusal = cluster
        .wait_until(Duration::from_secs(20), "the old node refused", || {
            let cluster = &cluster;
            let body = json!({"action": "add_learner", "id": 4, "member": member.clone()});
            async move {
                // 503 while the outsider is not listening yet.
                let (status, body) = cluster
                    .post(leader, "/v1/admin/members", &body)
                    .await
                    .ok()?;
                (status != 503).then_some((status, body))
            }
        })
        .await;
    assert_eq!(refusal.0, 422, "{}", refusal.1);
    let message = refusal.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("supports feature level 1; the cluster is at level 2"),
        "{}",
        refusal.1
    );
    let status = cluster.status(leader).await.expect("status");
    assert!(
        status["members"].get("4").is_none() && status["learners"] == json!([]),
        "the refused node became a member: {status}"
    );
    cluster.kill(4);
}

/// Every page of `GET /v1/chains/{chain}/draws` at `url`: the bodies as
/// served, and the draw IDs in order.
async fn chain_draws(
    http: &reqwest::Client,
    url: &str,
    chain: &str,
) -> Option<(Vec<String>, Vec<String>)> {
    let (mut bodies, mut ids) = (Vec::new(), Vec::new());
    let mut after = 0u64;
    loop {
        let r = http
            .get(format!("{url}/v1/chains/{chain}/draws?after={after}"))
            .send()
            .await
            .ok()?;
        let text = r.text().await.ok()?;
        let page: Value = serde_json::from_str(&text).ok()?;
        for d in page["draws"].as_array()? {
            ids.push(d["draw"]["id"].as_str()?.to_string());
        }
        bodies.push(text);
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return Some((bodies, ids)),
        }
    }
}

/// The cluster's device and the last chunk sequence node `id` knows of.
async fn device_chunks(cluster: &Cluster, id: u64) -> (String, u64) {
    let status = cluster.status(id).await.expect("status");
    let device = &status["devices"][0];
    let name = device["device"].as_str().unwrap().to_string();
    (name, device["last_seq"].as_u64().unwrap())
}

/// The URL at `leader` of the chunk at the front of the pool: the lowest
/// sequence that still has unused bytes (409 `chunk_not_exhausted`).
async fn pool_front(cluster: &Cluster, http: &reqwest::Client, leader: u64) -> String {
    let (device, last_seq) = device_chunks(cluster, leader).await;
    for seq in 0..=last_seq {
        let url = format!("{}/v1/chunks/{device}/{seq}", cluster.url(leader));
        let r = http.get(&url).send().await.unwrap();
        if r.status() == 409 {
            return url;
        }
    }
    panic!("every chunk up to {last_seq} is used up: the pool is empty");
}

/// `GET /v1/chunks/{device}/{seq}` gives the same answer on every node for
/// every chunk the device appended: kept on all or on none, whichever
/// builds the cluster held when it was used up. Some chunks used up after
/// the raise must be kept.
async fn every_node_answers_alike_for_every_chunk(cluster: &Cluster, http: &reqwest::Client) {
    let ids = cluster.ids();
    let (device, last_seq) = device_chunks(cluster, ids[0]).await;
    let mut kept = 0;
    let mut by_status = BTreeMap::<u16, u64>::new();
    for seq in 0..=last_seq {
        // A node may still be applying the last draws: ask until they agree.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut answers = Vec::new();
            for id in &ids {
                let r = http
                    .get(format!("{}/v1/chunks/{device}/{seq}", cluster.url(*id)))
                    .send()
                    .await
                    .unwrap();
                answers.push((r.status().as_u16(), r.text().await.unwrap()));
            }
            if answers.iter().all(|a| *a == answers[0]) {
                kept += u64::from(answers[0].0 == 200);
                *by_status.entry(answers[0].0).or_default() += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nodes disagree on chunk {seq}: {:?}",
                answers.iter().map(|a| a.0).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("chunks 0..={last_seq}: answers by status {by_status:?}");
    assert!(kept > 0, "no chunk used up after the raise was kept");
}
