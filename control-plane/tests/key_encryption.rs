//! Signing secrets at rest: with a key-encryption key, no replica's files
//! (state, Raft log, snapshots) and no backup hold a signing secret in
//! plaintext, a retired key keeps only its public half, and a replica
//! whose KEK cannot open the current key refuses to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use geiger_control_plane::key_encryption::KeyEncryptionKey;
use geiger_control_plane::state_machine::tables::{
    KeyRecord, KeySecret, META, META_CURRENT_KEY, SIGNING_KEYS,
};
use geiger_control_plane::{Command, ControlPlaneConfig, Outcome};
use geiger_testkit::in_process::{default_tune, draw_request, TestCluster};

const API_KEY: &str = "sk_test_casino";

fn kek() -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes([0x5a; 32])
}

fn with_kek(config: &mut ControlPlaneConfig) {
    default_tune(config);
    // Small snapshots, so snapshot files exist to be searched.
    config.snapshot_every = 20;
    config.snapshot_growth = 0.0;
    config.keep_behind_snapshot = 5;
    config.key_encryption_key = Some(kek());
}

fn with_other_kek(config: &mut ControlPlaneConfig) {
    with_kek(config);
    config.key_encryption_key = Some(KeyEncryptionKey::from_bytes([0x33; 32]));
}

fn without_kek(config: &mut ControlPlaneConfig) {
    with_kek(config);
    config.key_encryption_key = None;
}

/// Reads the current key's record from a stopped replica's state file.
fn current_key_record(node_dir: &Path) -> (String, KeyRecord) {
    let db = open_stopped(node_dir);
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    let id = meta
        .get(META_CURRENT_KEY)
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    let keys = tx.open_table(SIGNING_KEYS).unwrap();
    let record = keys.get(id.as_slice()).unwrap().unwrap();
    (
        String::from_utf8(id).unwrap(),
        geiger_control_plane::codec::decode(record.value()).unwrap(),
    )
}

/// A stopped replica's state file (its last handles close a moment after
/// the stop).
fn open_stopped(node_dir: &Path) -> redb::Database {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match redb::Database::open(node_dir.join("state.redb")) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("opening a stopped replica's state: {e}"),
        }
    }
}

/// The current signing secret, opened with the KEK from a stopped replica.
async fn current_secret(cluster: &mut TestCluster, i: usize) -> (String, [u8; 32]) {
    // A follower may still be catching up (it was restarted just before);
    // read its files only once it has applied all the leader has.
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let target = cluster.node(leader).raft().metrics().borrow().last_applied;
    cluster
        .node(i)
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(target.map(|l| l.index), "caught up before the stop")
        .await
        .unwrap();
    cluster.kill(i).await;
    let (id, record) = current_key_record(&cluster.nodes[i].dir);
    cluster.restart(i).await.unwrap();
    let KeySecret::Sealed(sealed) = &record.secret else {
        panic!("the current key is not sealed: {:?}", record.secret);
    };
    (id, *kek().open(sealed, &record.public_key).unwrap())
}

async fn draws(cluster: &TestCluster, previous: &mut String, n: usize) {
    for _ in 0..n {
        match cluster
            .node(0)
            .write(Command::Draw {
                customer: "cu_test".into(),
                request: draw_request(previous, None),
            })
            .await
            .unwrap()
        {
            Outcome::Drawn { id, .. } => *previous = id.to_string(),
            other => panic!("draw: {other:?}"),
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir` that holds `needle` in its bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

async fn first_chain(cluster: &TestCluster) -> String {
    match cluster
        .node(0)
        .write(Command::CreateChain {
            customer: "cu_test".into(),
            tag: "dice".into(),
        })
        .await
        .unwrap()
    {
        Outcome::ChainCreated { id, .. } => id.to_string(),
        other => panic!("chain: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_file_of_any_replica_and_no_backup_holds_a_signing_secret_in_plaintext() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(base.path(), 3, with_kek).await.unwrap();
    cluster.seed(API_KEY, 64, 4096).await.unwrap();
    let mut previous = first_chain(&cluster).await;
    draws(&cluster, &mut previous, 10).await;
    let (first_id, first_secret) = current_secret(&mut cluster, 2).await;

    let second_id = cluster.node(0).rotate_key().await.unwrap();
    draws(&cluster, &mut previous, 40).await;
    let (current_id, second_secret) = current_secret(&mut cluster, 2).await;
    assert_eq!(current_id, second_id);
    assert_ne!(first_id, second_id);
    for i in 0..3 {
        cluster.node(i).raft().trigger().snapshot().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backup = base.path().join("backup.snap");
    cluster.node(0).backup_to(&backup).unwrap();

    for (name, secret) in [("first", first_secret), ("second", second_secret)] {
        let holding = files_holding(base.path(), &secret);
        assert!(
            holding.is_empty(),
            "the {name} signing secret is in plaintext in {holding:?}"
        );
        let as_hex = hex::encode(secret);
        assert!(files_holding(base.path(), as_hex.as_bytes()).is_empty());
    }

    // The retired key: public half and validity kept, secret erased.
    let keys = cluster.node(1).keys().unwrap();
    let first = keys
        .find(&first_id)
        .expect("the retired key is still published");
    assert!(first.valid_until.is_some());
    assert!(keys.find(&second_id).unwrap().valid_until.is_none());
    cluster.kill(1).await;
    let db = open_stopped(&cluster.nodes[1].dir);
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(SIGNING_KEYS).unwrap();
    let retired: KeyRecord = geiger_control_plane::codec::decode(
        table.get(first_id.as_bytes()).unwrap().unwrap().value(),
    )
    .unwrap();
    assert_eq!(retired.secret, KeySecret::Erased);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_kek_cannot_open_the_signing_key_refuses_to_start() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(base.path(), 3, with_kek).await.unwrap();
    cluster.seed(API_KEY, 8, 4096).await.unwrap();
    cluster.kill(2).await;

    cluster.tune = with_other_kek;
    let refused = cluster.restart(2).await.unwrap_err().to_string();
    assert!(refused.contains("KEK"), "{refused}");

    cluster.tune = without_kek;
    let refused = cluster.restart(2).await.unwrap_err().to_string();
    assert!(refused.contains("no key-encryption key"), "{refused}");

    cluster.tune = with_kek;
    cluster.restart(2).await.unwrap();
}
