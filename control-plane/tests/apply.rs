//! `apply` on one state machine, without Raft: determinism and the ledger clock.

use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::types::{Batch, Entry};
use geiger_control_plane::{Command, Outcome};
use geiger_protocol::{ChainResponse, DrawResponse};
use geiger_testkit::in_process::draw_request;
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

fn draw_on(previous: &str, request_id: Option<&str>) -> Command {
    Command::Draw {
        customer: "cu_test".into(),
        request: draw_request(previous, request_id),
    }
}

/// Commands of one entry see each other's effects: a draw made earlier in
/// the entry can be named as `previous` (a client may have read it from a
/// faster replica), and a retry finds its original bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draws_made_earlier_in_an_entry_are_visible_to_its_later_commands() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one_by_one = StateMachine::open(d1.path(), 4 << 20).unwrap();
    let mut together = StateMachine::open(d2.path(), 4 << 20).unwrap();
    let out = one_by_one.apply(setup(1_000)).await.unwrap();
    assert_eq!(out, together.apply(setup(1_000)).await.unwrap());
    let Outcome::ChainCreated { id: chain, .. } = &out[1].outcomes[3] else {
        panic!("{:?}", out[1]);
    };
    let chain = chain.to_string();

    // Learn the first draw's ID by applying it alone on one replica (apply
    // is deterministic), as a client could by reading a faster replica.
    let first = vec![draw_on(&chain, Some("a"))];
    let out = one_by_one
        .apply(vec![entry(3, 2_000, first.clone())])
        .await
        .unwrap();
    let Outcome::Drawn {
        id: first_id,
        response: first_bytes,
    } = out[0].outcomes[0].clone()
    else {
        panic!("{out:?}");
    };
    let first_id = first_id.to_string();
    let rest = vec![
        // A draw on the first one.
        draw_on(&first_id, None),
        // A retry of the first draw: the original bytes.
        draw_on(&chain, Some("a")),
        // Another request on the same previous: already used.
        draw_on(&chain, Some("b")),
    ];
    let out_rest = one_by_one
        .apply(vec![entry(4, 2_000, rest.clone())])
        .await
        .unwrap();

    // The other replica gets everything in one transaction.
    let mut all = first;
    all.extend(rest);
    let out_all = together.apply(vec![entry(3, 2_000, all)]).await.unwrap();
    let outcomes = &out_all[0].outcomes;
    assert_eq!(
        outcomes[0],
        Outcome::Drawn {
            id: first_id.parse().unwrap(),
            response: first_bytes.clone()
        }
    );
    assert_eq!(
        outcomes[2],
        Outcome::Replayed {
            id: first_id.parse().unwrap(),
            response: first_bytes.clone()
        }
    );
    assert_eq!(
        outcomes[3],
        Outcome::PreviousAlreadyUsed {
            existing: first_id.parse().unwrap()
        }
    );
    let Outcome::Drawn { response, .. } = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    let second: DrawResponse = serde_json::from_slice(response).unwrap();
    assert_eq!(second.draw.body.position, 2);
    assert_eq!(second.draw.body.previous.to_string(), first_id);
    // Same records, whichever way the commands were grouped.
    assert_eq!(&out_rest[0].outcomes[..], &outcomes[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_many_draws_signs_each_as_a_lone_draw_would() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut lone = StateMachine::open(d1.path(), 4 << 20).unwrap();
    let mut batched = StateMachine::open(d2.path(), 4 << 20).unwrap();
    let chains: Vec<Command> = (0..20)
        .map(|i| Command::CreateChain {
            customer: "cu_test".into(),
            tag: format!("c{i}"),
        })
        .collect();
    // Enough entropy for 20 draws of 6 from 49 (the setup appends 256 bytes).
    let more: Vec<Command> = (8..12)
        .map(|seq| Command::AppendEntropy {
            device: "dev-1".into(),
            epoch: 1,
            seq,
            bytes: (0..=255u8).map(|b| b.wrapping_mul(seq as u8 + 3)).collect(),
        })
        .collect();
    let mut setup_entries = setup(1_000);
    setup_entries.push(entry(3, 1_000, chains));
    setup_entries.push(entry(4, 1_000, more));
    let out = lone.apply(setup_entries.clone()).await.unwrap();
    batched.apply(setup_entries).await.unwrap();
    let heads: Vec<String> = out[2]
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::ChainCreated { id, .. } => id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    // 20 draws in one entry on one replica, one entry each on the other:
    // identical outcomes, in order.
    let draws: Vec<Command> = heads.iter().map(|h| draw_on(h, None)).collect();
    let together = batched
        .apply(vec![entry(5, 2_000, draws.clone())])
        .await
        .unwrap();
    let mut apart = Vec::new();
    for (i, d) in draws.into_iter().enumerate() {
        let out = lone
            .apply(vec![entry(5 + i as u64, 2_000, vec![d])])
            .await
            .unwrap();
        apart.extend(out[0].outcomes.clone());
    }
    assert_eq!(together[0].outcomes, apart);
    for o in &apart {
        let Outcome::Drawn { id, response } = o else {
            panic!("{o:?}");
        };
        let r: DrawResponse = serde_json::from_slice(response).unwrap();
        assert_eq!(r.draw.id, *id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_request_id_creates_one_chain_per_customer_and_replays_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), 4 << 20).unwrap();
    sm.apply(setup(1_000)).await.unwrap();
    let create = |customer: &str, tag: &str, request_id: &str| Command::CreateChainOnce {
        customer: customer.into(),
        tag: tag.into(),
        request_id: request_id.into(),
    };
    let other_customer = Command::CreateCustomer {
        id: "cu_other".into(),
        name: "o".into(),
        key_sha256: [3; 32],
    };
    let out = sm
        .apply(vec![
            entry(
                3,
                2_000,
                vec![
                    other_customer,
                    create("cu_test", "first", "retry-1"),
                    // The retry in the same entry sees the first.
                    create("cu_test", "first", "retry-1"),
                ],
            ),
            entry(
                4,
                3_000,
                vec![
                    // A retry much later, even with another tag.
                    create("cu_test", "other tag", "retry-1"),
                    // Another customer's key space is its own.
                    create("cu_other", "first", "retry-1"),
                    create("cu_test", "second", "retry-2"),
                ],
            ),
        ])
        .await
        .unwrap();
    let Outcome::ChainCreated { id, response } = &out[0].outcomes[1] else {
        panic!("{:?}", out[0]);
    };
    let replay = Outcome::Replayed {
        id: *id,
        response: response.clone(),
    };
    assert_eq!(out[0].outcomes[2], replay);
    assert_eq!(out[1].outcomes[0], replay);
    for other in &out[1].outcomes[1..] {
        let Outcome::ChainCreated { id: new, .. } = other else {
            panic!("{other:?}");
        };
        assert_ne!(new, id);
    }
}
