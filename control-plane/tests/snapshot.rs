//! Snapshots on their own: a state machine's snapshot, streamed into a
//! fresh replica in small chunks, reproduces every table byte for byte,
//! exhausted chunks included.

use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::state_machine::{provenance, reads};
use geiger_control_plane::types::{Batch, Entry};
use geiger_control_plane::{Command, Outcome};
use geiger_testkit::in_process::draw_request;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn entry(index: u64, commands: Vec<Command>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch {
            at_ms: 1_795_000_000_000 + index,
            commands,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streamed_in_chunks_rebuilds_an_identical_replica() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = StateMachine::open(a_dir.path(), 8 << 20, None).unwrap();
    let setup = vec![
        entry(
            1,
            vec![
                // As the leader proposes once every member runs this build:
                // exhausted chunks are kept from here on.
                Command::RaiseFeatureLevel {
                    level: geiger_control_plane::FeatureLevel::SUPPORTED.0,
                },
                Command::RotateKey { secret: [3; 32] },
            ],
        ),
        entry(
            2,
            vec![
                Command::CreateCustomer {
                    id: "cu_test".into(),
                    name: "t".into(),
                    key_sha256: [9; 32],
                },
                Command::AssignLease {
                    device: "dev-1".into(),
                    owner: 1,
                    expected_epoch: None,
                    duration_ms: 1 << 40,
                },
                // A small signed chunk first: the draws use it up, so the
                // snapshot carries an exhausted chunk too.
                Command::AppendSignedEntropy {
                    device: "dev-1".into(),
                    epoch: 1,
                    seq: 0,
                    timestamp_ms: 5,
                    signature: vec![6; 64],
                    bytes: vec![7; 32],
                },
                Command::AppendEntropy {
                    device: "dev-1".into(),
                    epoch: 1,
                    seq: 1,
                    bytes: (0..=255).cycle().take(10_000).collect(),
                },
                Command::CreateChain {
                    customer: "cu_test".into(),
                    tag: "t".into(),
                },
            ],
        ),
    ];
    let out = a.apply(setup).await.unwrap();
    let mut previous = match &out[1].outcomes[4] {
        Outcome::ChainCreated { id, .. } => id.to_string(),
        other => panic!("{other:?}"),
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let out = a
            .apply(vec![entry(
                3 + i,
                vec![Command::Draw {
                    customer: "cu_test".into(),
                    request: draw_request(&previous, Some("r")),
                }],
            )])
            .await
            .unwrap();
        match &out[0].outcomes[0] {
            Outcome::Drawn { id, .. } => previous = id.to_string(),
            other => panic!("{other:?}"),
        }
        ids.push(previous.clone());
    }

    let mut snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(22));

    // Stream it over in 1 KiB chunks, as the network would.
    let mut b = StateMachine::open(b_dir.path(), 8 << 20, None).unwrap();
    let mut incoming = b.begin_receiving_snapshot().await.unwrap();
    let mut buf = vec![0u8; 1024];
    loop {
        let n = snapshot.snapshot.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        incoming.write_all(&buf[..n]).await.unwrap();
    }
    incoming.flush().await.unwrap();
    b.install_snapshot(&snapshot.meta, incoming).await.unwrap();

    let (applied, _) = b.applied_state().await.unwrap();
    assert_eq!(applied, snapshot.meta.last_log_id);
    let (da, db) = (a.shared().db(), b.shared().db());
    for id in &ids {
        assert_eq!(reads::draw(&da, id).unwrap(), reads::draw(&db, id).unwrap());
        assert!(reads::draw(&db, id).unwrap().is_some());
    }
    assert_eq!(reads::keys(&da).unwrap(), reads::keys(&db).unwrap());
    assert_eq!(reads::pool(&da).unwrap(), reads::pool(&db).unwrap());
    assert_eq!(reads::leases(&da).unwrap(), reads::leases(&db).unwrap());
    let exhausted = provenance::chunk_reveal(&db, "dev-1", 0).unwrap();
    assert!(
        matches!(&exhausted, provenance::ChunkReveal::Exhausted { bytes, .. } if *bytes == vec![7; 32]),
        "{exhausted:?}"
    );
    assert_eq!(
        provenance::chunk_reveal(&da, "dev-1", 0).unwrap(),
        exhausted
    );

    // The installed replica keeps going exactly as the original does.
    let next = |index| {
        vec![entry(
            index,
            vec![Command::Draw {
                customer: "cu_test".into(),
                request: draw_request(&previous, None),
            }],
        )]
    };
    let from_a = a.apply(next(23)).await.unwrap();
    let from_b = b.apply(next(23)).await.unwrap();
    assert_eq!(from_a, from_b);
    assert!(matches!(from_b[0].outcomes[0], Outcome::Drawn { .. }));
}
