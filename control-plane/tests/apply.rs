//! `apply` on one state machine, without Raft: determinism and the ledger clock.

use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::testing::draw_request;
use geiger_control_plane::types::{Batch, Entry};
use geiger_control_plane::{Command, Outcome};
use geiger_protocol::{ChainResponse, DrawResponse};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

fn entry(index: u64, at_ms: u64, commands: Vec<Command>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch { at_ms, commands }),
    }
}

fn setup(at_ms: u64) -> Vec<Entry> {
    vec![
        entry(1, at_ms, vec![Command::RotateKey { secret: [5; 32] }]),
        entry(
            2,
            at_ms,
            vec![
                Command::CreateCustomer {
                    id: "cu_test".into(),
                    name: "t".into(),
                    key_sha256: [2; 32],
                },
                Command::AssignLease {
                    device: "dev-1".into(),
                    owner: 1,
                    expected_epoch: None,
                    duration_ms: 1 << 40,
                },
                Command::AppendEntropy {
                    device: "dev-1".into(),
                    epoch: 1,
                    seq: 7,
                    bytes: (0..=255).collect(),
                },
                Command::CreateChain {
                    customer: "cu_test".into(),
                    tag: "t".into(),
                },
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_applying_the_same_entries_produce_the_same_bytes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = StateMachine::open(d1.path(), 4 << 20).unwrap();
    let mut b = StateMachine::open(d2.path(), 4 << 20).unwrap();
    let out_a = a.apply(setup(1_000)).await.unwrap();
    let out_b = b.apply(setup(1_000)).await.unwrap();
    assert_eq!(out_a, out_b);
    let Outcome::ChainCreated { id, response } = &out_a[1].outcomes[3] else {
        panic!("{:?}", out_a[1]);
    };
    let chain: ChainResponse = serde_json::from_slice(response).unwrap();
    assert_eq!(chain.id, *id);
    let draw = |index| {
        vec![entry(
            index,
            2_000,
            vec![Command::Draw {
                customer: "cu_test".into(),
                request: draw_request(&id.to_string(), Some("x")),
            }],
        )]
    };
    assert_eq!(
        a.apply(draw(3)).await.unwrap(),
        b.apply(draw(3)).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stamped_before_the_last_one_is_applied_at_the_later_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), 4 << 20).unwrap();
    let out = sm.apply(setup(1_795_000_000_000)).await.unwrap();
    let Outcome::ChainCreated { id, .. } = &out[1].outcomes[3] else {
        panic!("{:?}", out[1]);
    };
    // A new leader whose clock is 5 s behind proposes the next draw.
    let out = sm
        .apply(vec![entry(
            3,
            1_794_999_995_000,
            vec![Command::Draw {
                customer: "cu_test".into(),
                request: draw_request(&id.to_string(), None),
            }],
        )])
        .await
        .unwrap();
    let Outcome::Drawn { response, .. } = &out[0].outcomes[0] else {
        panic!("{:?}", out[0]);
    };
    let draw: DrawResponse = serde_json::from_slice(response).unwrap();
    assert_eq!(draw.draw.body.issued_at, "2026-11-18T11:06:40.000Z");
    assert_eq!(draw.draw.body.entropy.segments[0].chunk_seq, 7);
}
