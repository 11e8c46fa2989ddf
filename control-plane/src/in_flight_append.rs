//! Appends whose answer arrives after openraft's deadline: the piece that
//! keeps writes committing over round trips longer than the heartbeat.
//!
//! openraft 0.9 bounds every AppendEntries it sends by the heartbeat
//! interval (`replication/mod.rs`, `send_log_entries`: a `timeout` of
//! `heartbeat_interval` around `RaftNetwork::append_entries`) and drops the
//! call when that passes. Once a round trip (plus the follower's fsync)
//! exceeds the heartbeat, every append reaches the follower but no answer
//! ever reaches the leader, and nothing commits.
//!
//! Here an append is sent on a task of its own, bounded by
//! [`crate::Timeouts::append_answer`] instead. When openraft gives up on it
//! and asks again — with the same vote and the same `prev_log_id`, since
//! its view of the follower did not move — the new attempt waits for the
//! answer already on its way instead of sending another request that would
//! time out the same way. The answer is used once:
//!
//! - `Success` for entries up to `last` answers a request for entries up to
//!   `last` or beyond: `Success` when the ranges are equal, otherwise
//!   `PartialSuccess(last)`, which openraft documents for exactly this (the
//!   follower holds the log up to `last`, the leader sends the rest next).
//! - `Conflict` and `HigherVote` mean the same for any request with that
//!   `prev_log_id` and vote.
//!
//! This is what Raft calls a delayed response, which it tolerates by
//! design: the follower really did store those entries for this leader's
//! term; the leader merely learns it late. No answer is invented, and none
//! is reused across votes or `prev_log_id`s.
//!
//! Heartbeats (appends without entries) sent while entries are in flight
//! go out on their own with openraft's deadline, as before, so they never
//! cancel the entries' answer. The read-index check (`ensure_linearizable`)
//! builds a fresh peer for each check and never reuses an earlier answer,
//! so a linearizable read still needs a round trip under the heartbeat.

use std::future::Future;

use openraft::error::{RPCError, RaftError, Unreachable};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::task::JoinHandle;

use crate::types::{LogId, Member, NodeId, TypeConfig, Vote};

/// What an append returns to openraft.
pub(crate) type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>>;

/// Which question an append asks: whose term, from where, up to where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppendKey {
    vote: Vote,
    prev: Option<LogId>,
    last: Option<LogId>,
}

impl AppendKey {
    fn of(rpc: &AppendEntriesRequest<TypeConfig>) -> Self {
        AppendKey {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
        }
    }

    fn is_heartbeat(&self) -> bool {
        self.last == self.prev
    }

    /// Whether this append's answer also answers `asked`.
    fn answers(&self, asked: &AppendKey) -> bool {
        self.vote == asked.vote && self.prev == asked.prev && self.last <= asked.last
    }
}

/// One append on its way, whose answer openraft may no longer be waiting for.
struct Pending {
    key: AppendKey,
    task: JoinHandle<AppendResult>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The append in flight to one peer (at most one: openraft 0.9 has at most
/// one append with entries in flight per follower).
#[derive(Default)]
pub(crate) struct InFlightAppend {
    pending: Option<Pending>,
}

impl InFlightAppend {
    /// Answers `rpc`: from the append already in flight when its answer
    /// answers this one, otherwise by sending `rpc` with `send` (on a task
    /// of its own, so that the answer outlives this call).
    pub(crate) async fn append<F, Fut>(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        send: F,
    ) -> AppendResult
    where
        F: FnOnce(AppendEntriesRequest<TypeConfig>) -> Fut,
        Fut: Future<Output = AppendResult> + Send + 'static,
    {
        let asked = AppendKey::of(&rpc);
        let reusable = self.pending.as_ref().is_some_and(|p| p.key.answers(&asked));
        if !reusable {
            let entries_in_flight = self
                .pending
                .as_ref()
                .is_some_and(|p| p.key.vote == asked.vote && !p.key.is_heartbeat());
            if asked.is_heartbeat() && entries_in_flight {
                // Keep the entries' answer (coming or come) for openraft's
                // next attempt with them; this heartbeat goes on its own,
                // under openraft's deadline.
                return send(rpc).await;
            }
            self.pending = Some(Pending {
                key: asked.clone(),
                task: tokio::spawn(send(rpc)),
            });
        }
        let Some(pending) = self.pending.as_mut() else {
            unreachable!("an append is in flight: set just above or reused");
        };
        // If openraft drops this call here, the task keeps running and the
        // next attempt picks its answer up.
        let joined = (&mut pending.task).await;
        let answered = self
            .pending
            .take()
            .map(|p| p.key.clone())
            .unwrap_or(asked.clone());
        let result = match joined {
            Ok(result) => result,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
        };
        match result {
            Ok(AppendEntriesResponse::Success) if answered.last != asked.last => {
                Ok(AppendEntriesResponse::PartialSuccess(answered.last))
            }
            Ok(AppendEntriesResponse::PartialSuccess(m)) if answered.last != asked.last => {
                Ok(AppendEntriesResponse::PartialSuccess(m))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::Entry;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn request(prev: Option<u64>, last: Option<u64>) -> AppendEntriesRequest<TypeConfig> {
        let from = prev.map_or(0, |p| p + 1);
        let entries = match last {
            Some(l) => (from..=l)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            None => vec![],
        };
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: prev.map(log_id),
            leader_commit: None,
            entries,
        }
    }

    /// A follower that answers `Success` after `delay`, counting requests.
    /// The delays are long beside the tests' short timeouts (1 s or more
    /// against 10–50 ms): a timeout is meant to expire first, and only a
    /// thread stalled for the whole delay could let the answer win.
    fn slow_follower(
        sent: Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl Fn(AppendEntriesRequest<TypeConfig>) -> futures_like::Boxed {
        move |_rpc| {
            sent.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(AppendEntriesResponse::Success)
            })
        }
    }

    mod futures_like {
        pub type Boxed = std::pin::Pin<
            Box<dyn std::future::Future<Output = super::AppendResult> + Send + 'static>,
        >;
    }

    #[tokio::test]
    async fn an_answer_later_than_the_deadline_reaches_the_next_attempt() {
        let sent = Arc::new(AtomicUsize::new(0));
        let follower = slow_follower(sent.clone(), Duration::from_millis(1500));
        let mut in_flight = InFlightAppend::default();
        // openraft's deadline is shorter than the round trip: the first
        // attempts time out...
        for _ in 0..3 {
            let attempt = in_flight.append(request(Some(4), Some(9)), &follower);
            assert!(tokio::time::timeout(Duration::from_millis(50), attempt)
                .await
                .is_err());
        }
        // ...and a later one gets the answer to the first, with more
        // entries asked for: the follower holds the log up to 9.
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            in_flight.append(request(Some(4), Some(12)), &follower),
        )
        .await
        .expect("answered within the round trip");
        assert_eq!(
            answer.unwrap(),
            AppendEntriesResponse::PartialSuccess(Some(log_id(9)))
        );
        assert_eq!(sent.load(Ordering::SeqCst), 1, "one request on the wire");
    }

    #[tokio::test]
    async fn the_same_range_asked_again_gets_success() {
        let sent = Arc::new(AtomicUsize::new(0));
        let follower = slow_follower(sent.clone(), Duration::from_millis(1000));
        let mut in_flight = InFlightAppend::default();
        let first = in_flight.append(request(Some(4), Some(9)), &follower);
        assert!(tokio::time::timeout(Duration::from_millis(20), first)
            .await
            .is_err());
        let answer = in_flight.append(request(Some(4), Some(9)), &follower).await;
        assert_eq!(answer.unwrap(), AppendEntriesResponse::Success);
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_is_never_used_twice() {
        let sent = Arc::new(AtomicUsize::new(0));
        let follower = slow_follower(sent.clone(), Duration::from_millis(1));
        let mut in_flight = InFlightAppend::default();
        for _ in 0..3 {
            let answer = in_flight.append(request(Some(4), None), &follower).await;
            assert_eq!(answer.unwrap(), AppendEntriesResponse::Success);
        }
        assert_eq!(sent.load(Ordering::SeqCst), 3, "each heartbeat asked anew");
    }

    #[tokio::test]
    async fn another_starting_point_or_vote_sends_anew() {
        let sent = Arc::new(AtomicUsize::new(0));
        let follower = slow_follower(sent.clone(), Duration::from_millis(1000));
        let mut in_flight = InFlightAppend::default();
        let first = in_flight.append(request(Some(4), Some(9)), &follower);
        assert!(tokio::time::timeout(Duration::from_millis(10), first)
            .await
            .is_err());
        // A different prev_log_id (openraft searching back after a conflict).
        let answer = in_flight.append(request(Some(2), Some(9)), &follower).await;
        assert_eq!(answer.unwrap(), AppendEntriesResponse::Success);
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        // A later term's leader never sees an earlier term's answer.
        let first = in_flight.append(request(Some(9), Some(10)), &follower);
        assert!(tokio::time::timeout(Duration::from_millis(10), first)
            .await
            .is_err());
        let mut newer = request(Some(9), Some(10));
        newer.vote = Vote::new_committed(2, 1);
        in_flight.append(newer, &follower).await.unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_heartbeat_does_not_cancel_entries_in_flight() {
        let sent = Arc::new(AtomicUsize::new(0));
        let follower = slow_follower(sent.clone(), Duration::from_millis(1000));
        let mut in_flight = InFlightAppend::default();
        let first = in_flight.append(request(Some(4), Some(9)), &follower);
        assert!(tokio::time::timeout(Duration::from_millis(10), first)
            .await
            .is_err());
        let heartbeat = in_flight.append(request(Some(4), None), &follower);
        assert!(tokio::time::timeout(Duration::from_millis(10), heartbeat)
            .await
            .is_err());
        let answer = in_flight.append(request(Some(4), Some(9)), &follower).await;
        assert_eq!(answer.unwrap(), AppendEntriesResponse::Success);
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }
}
