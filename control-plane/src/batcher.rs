//! Group commit: concurrent writes become one Raft entry.
//!
//! Callers queue commands; the batcher takes everything queued (up to
//! `max_batch`) as one batch and proposes it. At most
//! `max_inflight_batches` proposals are outstanding at once, so while they
//! are being replicated and fsynced, new commands pile up and leave together
//! as the next batch. Under light load a command goes out alone at once;
//! under heavy load one fsync per node covers hundreds of commands.
//!
//! Before sealing a batch the batcher may linger, for at most
//! `batch_linger`: while other batches are still in flight (the slot would
//! otherwise go to whoever came back first), and, on an idle pipeline, until
//! as many commands are queued as the last batch to finish carried (its
//! writers are about to come back). Without this, the first one or two
//! writers to come back after a commit took a slot on their own: under load
//! half the batches held one command, each still costing a full round of
//! fsyncs and an apply transaction on every replica. A lone writer's last
//! batch held one command, so it never waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::replica::Replica;
use crate::stage_timing::{record, Stage};
use crate::types::{Command, Outcome};
use crate::Error;

/// One queued command and where its outcome goes.
pub struct Pending {
    pub command: Command,
    /// When the command was queued (for the batch's debug timing line).
    pub queued_at: std::time::Instant,
    pub reply: oneshot::Sender<Result<Outcome, Error>>,
}

fn drain(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

/// Runs until the channel closes or the task is aborted.
pub(crate) async fn run(inner: Arc<Replica>, mut rx: mpsc::Receiver<Pending>) {
    let max = inner.config.max_batch.max(1);
    let slots = inner.config.max_inflight_batches.max(1);
    let linger = inner.config.batch_linger;
    let inflight = Arc::new(Semaphore::new(slots));
    // Size of the batch that finished last: how many writers are coming back.
    let returning = Arc::new(AtomicUsize::new(1));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        drain(&mut rx, &mut batch, max);
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        // Whatever arrived while we waited for a slot joins this batch.
        drain(&mut rx, &mut batch, max);
        let others_in_flight = inflight.available_permits() + 1 < slots;
        let target = if others_in_flight {
            max
        } else {
            returning.load(Ordering::Relaxed).clamp(1, max)
        };
        if batch.len() < target && !linger.is_zero() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < target {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => {
                        batch.push(p);
                        drain(&mut rx, &mut batch, max);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let inner = inner.clone();
        let returning = returning.clone();
        tokio::spawn(async move {
            let oldest = batch.iter().map(|p| p.queued_at).min();
            let sealed = std::time::Instant::now();
            for p in &batch {
                record(Stage::BatchWait, sealed.duration_since(p.queued_at), 1);
            }
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            let n = commands.len();
            let started = std::time::Instant::now();
            let result = inner.propose(commands).await;
            tracing::debug!(
                commands = n,
                waited_us = oldest.map_or(0, |t| started.duration_since(t).as_micros() as u64),
                took_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            returning.store(n, Ordering::Relaxed);
            drop(permit);
            match result {
                Ok(outcome) if outcome.outcomes.len() == n => {
                    for (reply, outcome) in replies.into_iter().zip(outcome.outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcome) => {
                    tracing::error!(
                        sent = n,
                        got = outcome.outcomes.len(),
                        "outcome count mismatch"
                    );
                    for reply in replies {
                        let _ = reply.send(Err(Error::Raft("outcome count mismatch".into())));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(match &e {
                            Error::Unavailable(_) => Error::Unavailable(text.clone()),
                            Error::Shutdown => Error::Shutdown,
                            _ => Error::Raft(text.clone()),
                        }));
                    }
                }
            }
        });
    }
}
