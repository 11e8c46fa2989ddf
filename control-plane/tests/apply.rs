//! `apply` on one state machine, without Raft: determinism, the ledger
//! clock, and exact idempotency (a reused `request_id` replays only the
//! identical request and otherwise changes nothing).

use std::collections::BTreeMap;

use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::types::{Batch, Entry};
use geiger_control_plane::{Command, Outcome, Rejection};
use geiger_protocol::{ChainResponse, DrawResponse};
use geiger_testkit::in_process::draw_request;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use redb::{ReadableTable, TableDefinition, TableHandle};

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
    let mut a = StateMachine::open(d1.path(), 4 << 20, None).unwrap();
    let mut b = StateMachine::open(d2.path(), 4 << 20, None).unwrap();
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
    let mut sm = StateMachine::open(dir.path(), 4 << 20, None).unwrap();
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
    let mut one_by_one = StateMachine::open(d1.path(), 4 << 20, None).unwrap();
    let mut together = StateMachine::open(d2.path(), 4 << 20, None).unwrap();
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
    let mut lone = StateMachine::open(d1.path(), 4 << 20, None).unwrap();
    let mut batched = StateMachine::open(d2.path(), 4 << 20, None).unwrap();
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
    let mut sm = StateMachine::open(dir.path(), 4 << 20, None).unwrap();
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
                    // A retry much later.
                    create("cu_test", "first", "retry-1"),
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

/// Every row of every table of the ledger, by table name and key: two
/// replicas hold the same state exactly when their dumps are equal.
fn dump(sm: &StateMachine) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let db = sm.shared().db();
    let read = db.begin_read().unwrap();
    let mut rows = BTreeMap::new();
    for handle in read.list_tables().unwrap() {
        let name = handle.name().to_string();
        let table = read
            .open_table(TableDefinition::<&[u8], &[u8]>::new(&name))
            .unwrap();
        for row in table.iter().unwrap() {
            let (k, v) = row.unwrap();
            rows.insert((name.clone(), k.value().to_vec()), v.value().to_vec());
        }
    }
    rows
}

/// A draw request as a client would write it.
fn draw_json(previous: &str, request_id: &str, tag: &str, spec: serde_json::Value) -> Command {
    Command::Draw {
        customer: "cu_test".into(),
        request: serde_json::to_vec(&serde_json::json!({
            "previous": previous, "tag": tag, "spec": spec, "request_id": request_id,
        }))
        .unwrap(),
    }
}

fn reused(request_id: &str, field: &str) -> Outcome {
    Outcome::Rejected(Rejection::RequestIdReused {
        request_id: request_id.into(),
        field: field.into(),
    })
}

/// Two replicas after the setup, and the genesis of the setup's chain.
async fn twin_ledgers(
    dirs: &(tempfile::TempDir, tempfile::TempDir),
) -> (StateMachine, StateMachine, String) {
    let mut tested = StateMachine::open(dirs.0.path(), 4 << 20, None).unwrap();
    let mut control = StateMachine::open(dirs.1.path(), 4 << 20, None).unwrap();
    let out = tested.apply(setup(1_000)).await.unwrap();
    control.apply(setup(1_000)).await.unwrap();
    let Outcome::ChainCreated { id, .. } = &out[1].outcomes[3] else {
        panic!("{:?}", out[1]);
    };
    (tested, control, id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draw_request_id_reused_with_another_tag_or_spec_is_refused_and_changes_nothing() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut tested, mut control, chain) = twin_ledgers(&dirs).await;
    let dice = serde_json::json!({"kind": "integers", "min": 1, "max": 6, "count": 2});
    let original = draw_json(&chain, "r-1", "round 1", dice.clone());
    let out = tested
        .apply(vec![entry(3, 2_000, vec![original.clone()])])
        .await
        .unwrap();
    assert_eq!(
        out,
        control
            .apply(vec![entry(3, 2_000, vec![original])])
            .await
            .unwrap()
    );
    let Outcome::Drawn { id, response } = out[0].outcomes[0].clone() else {
        panic!("{out:?}");
    };

    // Across entries: the same `previous` and `request_id` with another
    // spec (even of another kind) or another tag is refused; the control
    // replica applies an empty entry at the same index.
    let out = tested
        .apply(vec![entry(
            4,
            3_000,
            vec![
                draw_json(
                    &chain,
                    "r-1",
                    "round 1",
                    serde_json::json!({"kind": "bytes", "count": 8}),
                ),
                draw_json(
                    &chain,
                    "r-1",
                    "round 1",
                    serde_json::json!({"kind": "integers", "min": 1, "max": 6, "count": 3}),
                ),
                draw_json(&chain, "r-1", "round 2", dice.clone()),
            ],
        )])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![
            reused("r-1", "spec"),
            reused("r-1", "spec"),
            reused("r-1", "tag")
        ]
    );
    control.apply(vec![entry(4, 3_000, vec![])]).await.unwrap();
    // Nothing changed: no chain head moved, no pool byte was used, no
    // ledger counter advanced.
    assert_eq!(dump(&tested), dump(&control));

    // The exact repeat, written differently (key order, an explicit
    // default), still replays the original bytes; so does the plain one.
    let respelled = Command::Draw {
        customer: "cu_test".into(),
        request: format!(
            r#"{{ "request_id": "r-1", "tag": "round 1", "previous": "{chain}",
                "spec": {{"unique": false, "count": 2, "max": 6, "min": 1, "kind": "integers"}} }}"#
        )
        .into_bytes(),
    };
    let repeats = vec![respelled, draw_json(&chain, "r-1", "round 1", dice)];
    let out = tested
        .apply(vec![entry(5, 4_000, repeats.clone())])
        .await
        .unwrap();
    let replay = Outcome::Replayed { id, response };
    assert_eq!(out[0].outcomes, vec![replay.clone(), replay]);
    assert_eq!(
        out,
        control.apply(vec![entry(5, 4_000, repeats)]).await.unwrap()
    );
    assert_eq!(dump(&tested), dump(&control));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_one_entry_a_reused_draw_request_id_is_refused_between_the_draw_and_its_replay() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut tested, mut control, chain) = twin_ledgers(&dirs).await;
    let dice = serde_json::json!({"kind": "integers", "min": 1, "max": 6, "count": 2});
    let original = draw_json(&chain, "r-1", "round 1", dice.clone());
    let out = tested
        .apply(vec![entry(
            3,
            2_000,
            vec![
                original.clone(),
                draw_json(
                    &chain,
                    "r-1",
                    "round 1",
                    serde_json::json!({"kind": "permutation", "n": 5}),
                ),
                draw_json(&chain, "r-1", "round one", dice),
                original.clone(),
            ],
        )])
        .await
        .unwrap();
    let Outcome::Drawn { id, response } = out[0].outcomes[0].clone() else {
        panic!("{out:?}");
    };
    assert_eq!(
        out[0].outcomes[1..],
        [
            reused("r-1", "spec"),
            reused("r-1", "tag"),
            Outcome::Replayed { id, response },
        ]
    );
    // The same ledger as the draw and its exact replay alone.
    let alone = control
        .apply(vec![entry(3, 2_000, vec![original.clone(), original])])
        .await
        .unwrap();
    assert_eq!(alone[0].outcomes[0], out[0].outcomes[0]);
    assert_eq!(dump(&tested), dump(&control));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_request_id_reused_with_another_tag_is_refused_and_changes_nothing() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut tested, mut control, _) = twin_ledgers(&dirs).await;
    let create = |tag: &str| Command::CreateChainOnce {
        customer: "cu_test".into(),
        tag: tag.into(),
        request_id: "open-1".into(),
    };
    // Within one entry: the chain, a reuse with another tag, the exact repeat.
    let out = tested
        .apply(vec![entry(
            3,
            2_000,
            vec![create("lotto"), create("keno"), create("lotto")],
        )])
        .await
        .unwrap();
    let Outcome::ChainCreated { id, response } = out[0].outcomes[0].clone() else {
        panic!("{out:?}");
    };
    let replay = Outcome::Replayed { id, response };
    assert_eq!(
        out[0].outcomes[1..],
        [reused("open-1", "tag"), replay.clone()]
    );
    let alone = control
        .apply(vec![entry(
            3,
            2_000,
            vec![create("lotto"), create("lotto")],
        )])
        .await
        .unwrap();
    assert_eq!(
        alone[0].outcomes,
        [out[0].outcomes[0].clone(), replay.clone()]
    );
    assert_eq!(dump(&tested), dump(&control));

    // Across entries: refused again (even a tag differing only in case),
    // nothing changes; the exact repeat still replays.
    let out = tested
        .apply(vec![entry(4, 3_000, vec![create("keno"), create("Lotto")])])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        [reused("open-1", "tag"), reused("open-1", "tag")]
    );
    control.apply(vec![entry(4, 3_000, vec![])]).await.unwrap();
    assert_eq!(dump(&tested), dump(&control));
    let out = tested
        .apply(vec![entry(5, 4_000, vec![create("lotto")])])
        .await
        .unwrap();
    assert_eq!(out[0].outcomes, [replay]);
}

/// A legacy `Draw` entry still derives by v1 (so old logs re-apply to the
/// same records); `DrawWith` by v2 takes only the whole bytes it used, right
/// after the v1 draw's, and both records verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_draw_takes_the_pool_bytes_right_after_the_previous_draw_and_only_those() {
    use geiger_protocol::verify::{verify_draw, Previous};
    use geiger_protocol::{Derivation, KeySet, Signer};

    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), 4 << 20, None).unwrap();
    let out = sm.apply(setup(1_000)).await.unwrap();
    let Outcome::ChainCreated { id, response } = &out[1].outcomes[3] else {
        panic!("{:?}", out[1]);
    };
    let chain: ChainResponse = serde_json::from_slice(response).unwrap();
    let drawn = |out: &[geiger_control_plane::types::BatchOutcome]| -> DrawResponse {
        let Outcome::Drawn { response, .. } = &out[0].outcomes[0] else {
            panic!("{out:?}");
        };
        serde_json::from_slice(response).unwrap()
    };
    let v1 = drawn(
        &sm.apply(vec![entry(3, 2_000, vec![draw_on(&id.to_string(), None)])])
            .await
            .unwrap(),
    );
    let v2 = drawn(
        &sm.apply(vec![entry(
            4,
            3_000,
            vec![Command::DrawWith {
                customer: "cu_test".into(),
                request: draw_request(&v1.draw.id.to_string(), None),
                derivation: Derivation::V2,
            }],
        )])
        .await
        .unwrap(),
    );
    assert_eq!(v1.draw.body.derivation, "geiger-derive-v1");
    assert_eq!(v2.draw.body.derivation, "geiger-derive-v2");
    let (s1, s2) = (
        &v1.draw.body.entropy.segments,
        &v2.draw.body.entropy.segments,
    );
    assert_eq!((s1.len(), s2.len()), (1, 1));
    // 6 of 49: v1 reads six 8-byte words, v2 about five bytes.
    assert_eq!((s1[0].offset, s1[0].length), (0, 48));
    assert_eq!(s2[0].offset, 48, "no byte skipped or used twice");
    assert!((5..=7).contains(&s2[0].length), "{:?}", s2[0]);

    let keys = KeySet {
        keys: vec![Signer::from_secret([5; 32]).key_info("1970-01-01T00:00:00.000Z".into(), None)],
        devices: Vec::new(),
    };
    verify_draw(&v1, &keys, Some(Previous::Chain(&chain))).unwrap();
    verify_draw(&v2, &keys, Some(Previous::Draw(&v1))).unwrap();
}
