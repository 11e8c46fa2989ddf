//! The control plane as a cluster: several real replicas in this process,
//! each with its own data directory and HTTP listener on 127.0.0.1.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use geiger_control_plane::{Command, ControlPlaneConfig, Error, FeatureLevel, Outcome, Rejection};
use geiger_protocol::{verify_draw, DrawResponse};
use geiger_testkit::in_process::{
    add_entropy, default_tune, draw_request, TestCluster, TEST_SECRET,
};

const API_KEY: &str = "sk_test_casino";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Small snapshots, so snapshot paths run in tests.
fn snapshot_often(config: &mut ControlPlaneConfig) {
    default_tune(config);
    config.snapshot_every = 50;
    config.snapshot_growth = 0.0;
    config.keep_behind_snapshot = 5;
    config.snapshot_chunk_bytes = 4096;
}

async fn chain(cp: &geiger_control_plane::ControlPlane) -> String {
    match cp
        .write(Command::CreateChain {
            customer: "cu_test".into(),
            tag: "roulette".into(),
        })
        .await
        .unwrap()
    {
        Outcome::ChainCreated { id, .. } => id.to_string(),
        other => panic!("chain: {other:?}"),
    }
}

async fn draw(
    cp: &geiger_control_plane::ControlPlane,
    previous: &str,
    request_id: Option<&str>,
) -> Result<Outcome, Error> {
    cp.write(Command::Draw {
        customer: "cu_test".into(),
        request: draw_request(previous, request_id),
    })
    .await
}

fn drawn(outcome: Outcome) -> (String, Vec<u8>) {
    match outcome {
        Outcome::Drawn { id, response } => (id.to_string(), response),
        other => panic!("expected a draw, got {other:?}"),
    }
}

/// Draws `n` times in a row on one chain through `cp`; returns the IDs.
async fn draw_run(
    cp: &geiger_control_plane::ControlPlane,
    mut previous: String,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (id, _) = drawn(draw(cp, &previous, None).await.unwrap());
        previous = id.clone();
        ids.push(id);
    }
    ids
}

async fn wait_applied_everywhere(cluster: &TestCluster, id: &str) {
    for n in &cluster.nodes {
        if let Some(cp) = &n.cp {
            assert!(
                cp.draw_linearizable(id).await.unwrap().is_some(),
                "node {} lacks {id}",
                n.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draws_written_through_any_node_are_byte_identical_on_all_three_and_verify() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    cluster.seed(API_KEY, 32, 4096).await.unwrap();
    let mut previous = chain(cluster.node(1)).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        let (id, _) = drawn(draw(cluster.node(i % 3), &previous, None).await.unwrap());
        previous = id.clone();
        ids.push(id);
    }
    let keys = cluster.node(0).keys().unwrap();
    assert_eq!(keys.keys.len(), 1);
    for id in &ids {
        let stored: Vec<_> = futures_all(&cluster, id).await;
        assert!(
            stored.windows(2).all(|w| w[0] == w[1]),
            "replicas differ for {id}"
        );
        let response: DrawResponse = serde_json::from_slice(&stored[0].response).unwrap();
        assert_eq!(response.draw.id.to_string(), *id);
        verify_draw(&response, &keys, None).unwrap();
    }
    // The chain index agrees with the successor links.
    for i in 0..3 {
        let listed: Vec<_> = cluster
            .node(i)
            .chain_draws(
                &cluster.node(i).draw(&ids[0]).unwrap().unwrap().chain,
                0,
                100,
            )
            .unwrap();
        assert_eq!(listed.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids);
        let page = cluster.node(i).chain_draws(&listed[0].chain, 3, 2).unwrap();
        assert_eq!(
            page.iter().map(|d| d.position).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }
    let status = cluster.node(0).status().unwrap();
    assert_eq!(status.voters.len(), 3);
    assert!(status.placement.survives_node_loss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_cluster_of_one_build_rises_to_that_builds_feature_level_on_every_replica() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let levels: Vec<_> = (0..3)
            .map(|i| cluster.node(i).feature_level().unwrap())
            .collect();
        if levels.iter().all(|l| *l == FeatureLevel::SUPPORTED) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "levels after 10 s: {levels:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = cluster.node(1).status().unwrap();
    assert_eq!(status.feature_level.cluster, FeatureLevel::SUPPORTED.0);
    assert_eq!(status.feature_level.build, FeatureLevel::SUPPORTED.0);
}

async fn futures_all(cluster: &TestCluster, id: &str) -> Vec<geiger_control_plane::StoredDraw> {
    let mut out = Vec::new();
    for i in 0..cluster.nodes.len() {
        out.push(
            cluster
                .node(i)
                .draw_linearizable(id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_draws_on_one_previous_yield_exactly_one_winner_named_by_the_rest() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    cluster.seed(API_KEY, 16, 4096).await.unwrap();
    let genesis = chain(cluster.node(0)).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cp = cluster.node(i % 3).clone();
        let genesis = genesis.clone();
        tasks.push(tokio::spawn(async move {
            draw(&cp, &genesis, Some(&format!("req-{i}"))).await
        }));
    }
    let mut winners = Vec::new();
    let mut named = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Outcome::Drawn { id, .. } => winners.push(id),
            Outcome::PreviousAlreadyUsed { existing } => {
                named.insert(existing);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one draw may follow a previous");
    assert_eq!(named.into_iter().collect::<Vec<_>>(), winners);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_with_the_same_request_id_replays_the_original_bytes_and_bad_draws_change_nothing()
{
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    cluster.seed(API_KEY, 1, 64).await.unwrap();
    let genesis = chain(cluster.node(0)).await;
    let (id, bytes) = drawn(draw(cluster.node(0), &genesis, Some("r1")).await.unwrap());
    match draw(cluster.node(2), &genesis, Some("r1")).await.unwrap() {
        Outcome::Replayed {
            id: again,
            response,
        } => {
            assert_eq!(again.to_string(), id);
            assert_eq!(response, bytes);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    match draw(cluster.node(1), &genesis, Some("r2")).await.unwrap() {
        Outcome::PreviousAlreadyUsed { existing } => assert_eq!(existing.to_string(), id),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Unknown previous → not found; someone else's chain → forbidden.
    let unknown = id.replace("dr_a", "dr_b").replace("dr_c", "dr_a");
    let unknown = if unknown == id {
        format!("dr_{}", "a".repeat(40))
    } else {
        unknown
    };
    assert!(matches!(
        draw(cluster.node(0), &unknown, None).await.unwrap(),
        Outcome::Rejected(Rejection::NotFound(_))
    ));
    let other = cluster
        .node(0)
        .write(Command::Draw {
            customer: "cu_other".into(),
            request: draw_request(&id, None),
        })
        .await
        .unwrap();
    assert!(
        matches!(other, Outcome::Rejected(Rejection::Forbidden(_))),
        "{other:?}"
    );
    // 64 bytes of pool: a draw needing more is refused and takes nothing.
    let (before, _) = cluster.node(0).pool().unwrap();
    let big = serde_json::to_vec(&serde_json::json!({
        "previous": id, "tag": "t", "spec": {"kind": "bytes", "count": 4096}
    }))
    .unwrap();
    let outcome = cluster
        .node(0)
        .write(Command::Draw {
            customer: "cu_test".into(),
            request: big,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Rejected(Rejection::EntropyExhausted { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(cluster.node(0).pool().unwrap().0, before);
    assert!(cluster.node(0).chain_draws(&genesis, 0, 10).unwrap().len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_epoch_append_and_a_sequence_gap_are_rejected_and_change_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    cluster.seed(API_KEY, 4, 256).await.unwrap();
    let cp = cluster.node(1);
    // Epoch 1 is current; move the link to node 2 (epoch 2).
    let lease = cp
        .write(Command::AssignLease {
            device: "dev-1".into(),
            owner: 2,
            expected_epoch: Some(1),
            duration_ms: 60_000,
        })
        .await
        .unwrap();
    assert!(
        matches!(&lease, Outcome::Lease(l) if l.epoch == 2 && l.owner == 2),
        "{lease:?}"
    );
    cp.linearizable_barrier().await.unwrap();
    let before = cp.pool().unwrap();
    let stale = add_entropy(cp, "dev-1", 1, 4, 1, 256).await;
    assert!(
        matches!(
            stale,
            Err(Error::Rejected(Rejection::StaleEpoch {
                current: 2,
                got: 1
            }))
        ),
        "{stale:?}"
    );
    let gap = add_entropy(cp, "dev-1", 2, 6, 1, 256).await;
    assert!(
        matches!(
            gap,
            Err(Error::Rejected(Rejection::SequenceGap {
                expected: 4,
                got: 6,
                ..
            }))
        ),
        "{gap:?}"
    );
    cp.linearizable_barrier().await.unwrap();
    assert_eq!(cp.pool().unwrap(), before);
    // The current owner, in sequence, is accepted.
    add_entropy(cp, "dev-1", 2, 4, 1, 256).await.unwrap();
    cp.linearizable_barrier().await.unwrap();
    assert_eq!(cp.pool().unwrap().0, before.0 + 256);
    // A compare-and-set on an old epoch loses.
    let lost = cp
        .write(Command::AssignLease {
            device: "dev-1".into(),
            owner: 3,
            expected_epoch: Some(1),
            duration_ms: 60_000,
        })
        .await
        .unwrap();
    assert!(matches!(
        lost,
        Outcome::Rejected(Rejection::StaleEpoch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_no_acknowledged_draw_and_a_new_leader_takes_writes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    cluster.seed(API_KEY, 64, 4096).await.unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    let writer_node = (leader + 1) % 3;
    let genesis = chain(cluster.node(writer_node)).await;
    // A stream of draws through a follower while the leader dies.
    let cp = cluster.node(writer_node).clone();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let acked2 = acked.clone();
    let writer = tokio::spawn(async move {
        let mut previous = genesis;
        let mut failures = 0;
        while acked2.lock().unwrap().len() < 60 && failures < 200 {
            match draw(&cp, &previous, Some(&format!("after-{previous}"))).await {
                Ok(Outcome::Drawn { id, .. }) | Ok(Outcome::Replayed { id, .. }) => {
                    previous = id.to_string();
                    acked2.lock().unwrap().push(previous.clone());
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => failures += 1,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.kill(leader).await;
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 60, "writes resumed under a new leader");
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    assert_ne!(new_leader, leader);
    // The old leader comes back from its data directory and catches up.
    cluster.restart(leader).await.unwrap();
    for id in &acked {
        let copies = futures_all(&cluster, id).await;
        assert!(copies.windows(2).all(|w| w[0] == w[1]));
    }
}

/// Election timing slow enough that waiting out openraft's leader lease
/// is told apart from not waiting: a follower that waits stands no sooner
/// than `election_max + election_min` (9 s) after the last heartbeat.
fn long_lease(config: &mut ControlPlaneConfig) {
    default_tune(config);
    config.timeouts.heartbeat = Duration::from_millis(50);
    config.timeouts.election_min = Duration::from_secs(3);
    config.timeouts.election_max = Duration::from_secs(6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_of_a_leader_whose_process_is_gone_elect_another_without_waiting_out_its_lease() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path(), 3, long_lease).await.unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .unwrap();
    cluster.kill(leader).await;
    let killed = std::time::Instant::now();
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .unwrap();
    let took = killed.elapsed();
    assert_ne!(new_leader, leader);
    // Standing at once, the first round splits and the next comes one
    // election timeout later (3-6 s); waiting out the lease would take 9 s
    // or more.
    assert!(
        took < Duration::from_millis(7500),
        "a new leader {took:?} after the kill: the followers waited out the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_node_one_at_a_time_and_then_all_at_once_keeps_the_ledger() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path(), 3, snapshot_often)
        .await
        .unwrap();
    cluster.seed(API_KEY, 64, 4096).await.unwrap();
    let genesis = chain(cluster.node(0)).await;
    let mut ids = draw_run(cluster.node(0), genesis.clone(), 20).await;
    for i in 0..3 {
        cluster.kill(i).await;
        cluster.restart(i).await.unwrap();
        cluster
            .wait_for_leader(Duration::from_secs(5))
            .await
            .unwrap();
        let more = draw_run(cluster.node(i), ids.last().unwrap().clone(), 10).await;
        ids.extend(more);
    }
    for i in 0..3 {
        cluster.kill(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await.unwrap();
    }
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    for id in &ids {
        let copies = futures_all(&cluster, id).await;
        assert!(copies.windows(2).all(|w| w[0] == w[1]));
    }
    let more = draw_run(cluster.node(2), ids.last().unwrap().clone(), 5).await;
    wait_applied_everywhere(&cluster, more.last().unwrap()).await;
    let listed = cluster.node(1).chain_draws(&genesis, 0, 1000).unwrap();
    assert_eq!(listed.len(), ids.len() + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_snapshot_waits_until_the_log_has_grown_by_the_last_ones_index() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, |c| {
        snapshot_often(c);
        c.snapshot_growth = 1.0;
    })
    .await
    .unwrap();
    cluster.seed(API_KEY, 64, 4096).await.unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    let cp = cluster.node(leader);
    let snapshot_at = || cp.status().unwrap().snapshot_index;
    let applied = || cp.status().unwrap().last_applied_index.unwrap_or(0);
    let mut previous = chain(cp).await;
    // Draws one at a time (one entry each) until `until(applied)` holds.
    async fn draw_until(
        cp: &geiger_control_plane::ControlPlane,
        previous: &mut String,
        until: impl Fn(u64) -> bool,
    ) {
        while !until(cp.status().unwrap().last_applied_index.unwrap_or(0)) {
            *previous = draw_run(cp, previous.clone(), 1).await.pop().unwrap();
        }
    }
    draw_until(cp, &mut previous, |a| a >= 60).await;
    let first = wait_for(Duration::from_secs(10), snapshot_at)
        .await
        .expect("a first snapshot after snapshot_every entries");
    assert!(first >= 50, "first snapshot at {first}");
    draw_until(cp, &mut previous, |a| a >= 2 * first).await;
    let second = wait_for(Duration::from_secs(10), || {
        snapshot_at().filter(|s| *s > first)
    })
    .await
    .expect("a second snapshot once the log doubled");
    assert!(second >= 2 * first, "second snapshot at {second}");
    // Past second + snapshot_every, when a snapshot every 50 entries would
    // have come, but short of twice the second snapshot's index.
    let short_of = 2 * second - 5;
    assert!(short_of >= second + 50);
    draw_until(cp, &mut previous, |a| a >= short_of).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        snapshot_at(),
        Some(second),
        "no snapshot before the log doubled again (applied {})",
        applied()
    );
    draw_until(cp, &mut previous, |a| a >= 2 * second).await;
    let third = wait_for(Duration::from_secs(10), || {
        snapshot_at().filter(|s| *s > second)
    })
    .await
    .expect("a third snapshot once the log doubled again");
    assert!(third >= 2 * second, "third snapshot at {third}");
}

/// Polls `f` until it gives something or `within` has passed.
async fn wait_for<T>(within: Duration, f: impl Fn() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_rejoins_and_catches_up_from_a_snapshot() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path(), 3, snapshot_often)
        .await
        .unwrap();
    cluster.seed(API_KEY, 64, 4096).await.unwrap();
    let genesis = chain(cluster.node(0)).await;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    let victim = (leader + 1) % 3;
    let victim_id = cluster.nodes[victim].id;
    cluster.wipe(victim).await.unwrap();
    let live = (leader + 2) % 3;
    cluster.node(leader).remove(victim_id).await.unwrap();
    // Enough entries for several snapshots and purges while it is gone.
    let ids = draw_run(cluster.node(live), genesis, 120).await;
    let status = cluster.node(leader).status().unwrap();
    assert!(
        status.purged_index.is_some(),
        "the log was purged: {status:?}"
    );
    cluster.restart(victim).await.unwrap();
    let member = cluster.nodes[victim].member.clone();
    cluster
        .node(leader)
        .add_learner(victim_id, member)
        .await
        .unwrap();
    cluster.node(leader).promote(victim_id).await.unwrap();
    let cp = cluster.node(victim);
    cp.linearizable_barrier().await.unwrap();
    let status = cp.status().unwrap();
    assert!(
        status.snapshot_index.is_some(),
        "caught up via a snapshot: {status:?}"
    );
    for id in &ids {
        assert_eq!(
            cp.draw_linearizable(id).await.unwrap(),
            cluster.node(leader).draw(id).unwrap()
        );
    }
    assert_eq!(cluster.node(leader).status().unwrap().voters.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_request_without_the_cluster_secret_gets_401() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 1, default_tune)
        .await
        .unwrap();
    let addr = cluster.nodes[0].addr;
    let client = reqwest::Client::new();
    for secret in [None, Some("wrong"), Some(&TEST_SECRET[1..])] {
        let mut req = client
            .post(format!("http://{addr}/internal/raft/vote"))
            .body(vec![1, 2, 3]);
        if let Some(s) = secret {
            req = req.header("x-geiger-cluster-secret", s);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    let garbage = client
        .post(format!("http://{addr}/internal/raft/vote"))
        .header("x-geiger-cluster-secret", TEST_SECRET)
        .body(vec![0xff; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}
