//! CPU cost of `apply` alone: one state machine, no Raft, no network, no
//! fsync on the hot path. Shows how many draws per second one replica can
//! apply (every replica applies every draw).
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/cp cargo bench -p geiger-control-plane --bench apply`
//! (`BENCH_BATCH=64` measures only entries of 64 draws; `BENCH_CACHE_MB`
//! sets the redb cache, default 32 as in the node; `BENCH_CHAINS` the
//! number of chains, default 64, and so the largest entry; `BENCH_DRAWS=1000000`
//! also grows the ledger and prints resident memory and file size every
//! 100,000 draws).

use std::time::Instant;

use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::types::{Batch, BatchOutcome, Entry};
use geiger_control_plane::{Command, Outcome};
use geiger_testkit::in_process::draw_request;
use geiger_testkit::measure::{process_cpu_time, resident_memory_line, storage_writes_of};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

/// The allocator the `geiger` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident memory of this process and the state file's size, one line.
fn print_footprint(draws: usize, dir: &std::path::Path) {
    let rss = resident_memory_line();
    let meta = std::fs::metadata(dir.join("state.redb"));
    let size = meta.as_ref().map_or(0, |m| m.len());
    let used = meta
        .as_ref()
        .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(m) * 512);
    println!(
        "{draws:8} draws in the ledger: {rss}, state.redb {} MiB long, {} MiB on disk",
        size >> 20,
        used >> 20
    );
}

/// One draw on each of `heads`.
fn draws_on(heads: &[String]) -> Vec<Command> {
    heads
        .iter()
        .map(|previous| Command::Draw {
            customer: "cu_test".into(),
            request: draw_request(previous, None),
        })
        .collect()
}

/// Moves each head to the draw made on it.
fn advance(heads: &mut [String], applied: Vec<BatchOutcome>) {
    for (head, outcome) in heads.iter_mut().zip(&applied[0].outcomes) {
        match outcome {
            Outcome::Drawn { id, .. } => *head = id.to_string(),
            other => panic!("{other:?}"),
        }
    }
}

/// At least the bytes of entropy one 6-of-49 draw uses on average (the
/// derivation rejects some samples, so the exact figure varies).
const DRAW_BYTES: usize = 48;
/// The size of each entropy chunk the benchmark appends.
const CHUNK_BYTES: usize = 4096;

/// `chunks` more chunks of entropy, numbered from `next_seq` on.
fn entropy(next_seq: &mut u64, chunks: usize) -> Vec<Command> {
    (0..chunks)
        .map(|_| {
            let seq = *next_seq;
            *next_seq += 1;
            Command::AppendEntropy {
                device: "dev-1".into(),
                epoch: 1,
                seq,
                bytes: vec![(seq % 251) as u8; CHUNK_BYTES],
            }
        })
        .collect()
}

fn entry(index: u64, commands: Vec<Command>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch {
            at_ms: 1_795_000_000_000 + index,
            commands,
        }),
    }
}

fn main() {
    geiger_control_plane::memory::disable_transparent_huge_pages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_mb: usize = std::env::var("BENCH_CACHE_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let chains: usize = std::env::var("BENCH_CHAINS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let mut sm = StateMachine::open(dir.path(), cache_mb << 20, None).expect("open");
        let mut index = 0;
        let mut seq = 0u64;
        let mut next = |commands| {
            index += 1;
            entry(index, commands)
        };
        let setup = vec![
            next(vec![Command::RotateKey { secret: [7; 32] }]),
            next(vec![
                Command::CreateCustomer {
                    id: "cu_test".into(),
                    name: "t".into(),
                    key_sha256: [1; 32],
                },
                Command::AssignLease {
                    device: "dev-1".into(),
                    owner: 1,
                    expected_epoch: None,
                    duration_ms: u64::MAX / 4,
                },
            ]),
            next(entropy(&mut seq, 2000)),
            next(
                (0..chains)
                    .map(|_| Command::CreateChain {
                        customer: "cu_test".into(),
                        tag: "bench".into(),
                    })
                    .collect(),
            ),
        ];
        let out = sm.apply(setup).await.expect("setup");
        let mut heads: Vec<String> = out[3]
            .outcomes
            .iter()
            .map(|o| match o {
                Outcome::ChainCreated { id, .. } => id.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        let long_run: usize = std::env::var("BENCH_DRAWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let batches: Vec<usize> = std::env::var("BENCH_BATCH")
            .unwrap_or_else(|_| "1,64".into())
            .split(',')
            .filter_map(|b| b.trim().parse().ok())
            .filter(|b| (1..=chains).contains(b))
            .collect();
        // Draws the pool surely holds: its unused bytes when last read, at
        // twice the average a draw uses.
        let pool_bytes = |sm: &StateMachine| {
            let db = sm.shared().db();
            let (pool, _) = geiger_control_plane::state_machine::reads::pool(&db).expect("pool");
            pool.bytes as usize
        };
        let mut sure_draws = pool_bytes(&sm) / (2 * DRAW_BYTES);
        for batch in batches {
            let started = Instant::now();
            let cpu_started = process_cpu_time();
            let written_before = storage_writes_of(std::process::id());
            let mut draws = 0;
            while started.elapsed().as_secs_f64() < 3.0 {
                // Restock in rare large entries, so any batch and chain
                // count can run its whole phase while the draws stay
                // nearly all of what is measured.
                if sure_draws < batch {
                    // Enough for this entry and a MiB beyond.
                    let wanted = 2 * batch * DRAW_BYTES + (1 << 20);
                    if pool_bytes(&sm) < wanted {
                        let chunks = wanted.div_ceil(CHUNK_BYTES);
                        sm.apply(vec![next(entropy(&mut seq, chunks))])
                            .await
                            .expect("refill");
                    }
                    sure_draws = pool_bytes(&sm) / (2 * DRAW_BYTES);
                }
                sure_draws -= batch;
                // One draw per chain, so every command is a real draw.
                let entry = next(draws_on(&heads[..batch]));
                advance(&mut heads[..batch], sm.apply(vec![entry]).await.expect("apply"));
                draws += batch;
            }
            let secs = started.elapsed().as_secs_f64();
            let cpu = (process_cpu_time() - cpu_started).as_secs_f64();
            // Pages the state file dirtied, flushed by the writeback thread.
            let written = storage_writes_of(std::process::id()).saturating_sub(written_before);
            println!(
                "entries of {batch:2} draws: {:7.0} draws/s applied ({:5.1} us wall, {:5.1} us CPU, {:4.1} KiB written per draw)",
                draws as f64 / secs,
                secs * 1e6 / draws as f64,
                cpu * 1e6 / draws as f64,
                written as f64 / 1024.0 / draws as f64
            );
        }
        // Optional: grow the ledger to BENCH_DRAWS draws and watch resident
        // memory, which must not grow with the ledger.
        let mut done = 0usize;
        // CPU per draw over each 100,000: shows whether apply slows as the
        // ledger outgrows the cache.
        let mut interval = (Instant::now(), process_cpu_time(), 0usize);
        while done < long_run {
            // Keep the pool stocked (at least two chunks per entry, as
            // before BENCH_CHAINS, so the figures stay comparable with
            // earlier runs).
            let refill = entropy(
                &mut seq,
                (heads.len() * DRAW_BYTES).div_ceil(CHUNK_BYTES).max(2),
            );
            let out = sm.apply(vec![next(refill)]).await.expect("refill");
            assert!(
                out[0].outcomes.iter().all(|o| matches!(o, Outcome::EntropyAppended { .. })),
                "{out:?}"
            );
            let entry = next(draws_on(&heads));
            advance(&mut heads, sm.apply(vec![entry]).await.expect("apply"));
            done += heads.len();
            if done % 100_032 < heads.len() || done >= long_run {
                print_footprint(done, dir.path());
                let (wall, cpu, from) = interval;
                let n = (done - from) as f64;
                println!(
                    "         since the last line: {:5.1} us wall, {:5.1} us CPU per draw",
                    wall.elapsed().as_secs_f64() * 1e6 / n,
                    (process_cpu_time() - cpu).as_secs_f64() * 1e6 / n
                );
                interval = (Instant::now(), process_cpu_time(), done);
            }
        }
    });
}
