//! Customer authentication that a flood of unknown keys cannot turn into a
//! flood of ledger round trips.
//!
//! A key found in this replica's state is cached (customers are never
//! removed, so a positive answer never goes stale). A key not found may
//! belong to a customer created a moment ago that this replica has not
//! applied yet, so before refusing it the replica catches up with the
//! leader; but:
//! - a leader that has applied an entry of its own term has applied every
//!   customer ever acknowledged, and answers at once;
//! - on a follower, catch-ups are shared: at most one runs at a time, and
//!   every key that arrived before it started is answered by it. 5,000
//!   unknown keys cost a handful of round trips, not 5,000.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use geiger_control_plane::{api_key_hash, ControlPlane, Error as LedgerError};

/// Past this many cached keys the cache starts over (a bound on memory; a
/// miss costs one local read).
const CACHE_CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct Authenticator {
    known: Mutex<HashMap<[u8; 32], String>>,
    catch_up: SharedCatchUp,
}

impl Authenticator {
    /// The customer whose API key this is, from the cache or this replica's
    /// state; `None` when this replica does not know the key (yet).
    pub fn find(&self, ledger: &ControlPlane, key: &str) -> Result<Option<String>, LedgerError> {
        let hash = api_key_hash(key);
        match self.cached(&hash) {
            Some(id) => Ok(Some(id)),
            None => self.lookup(ledger, &hash),
        }
    }

    /// Like [`Authenticator::find`] for a key not found there, after making
    /// sure this replica has applied every customer acknowledged so far
    /// (shared with other callers; free on a leader).
    pub async fn find_after_catch_up(
        &self,
        ledger: &ControlPlane,
        key: &str,
    ) -> Result<Option<String>, LedgerError> {
        if !leader_has_applied_its_term(ledger) {
            self.catch_up.run(ledger).await?;
        }
        self.lookup(ledger, &api_key_hash(key))
    }

    /// Catch-ups with the leader run so far (one per shared run).
    pub fn catch_ups(&self) -> u64 {
        self.catch_up.started.load(Ordering::Relaxed)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<String> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(hash).cloned()
    }

    fn lookup(
        &self,
        ledger: &ControlPlane,
        hash: &[u8; 32],
    ) -> Result<Option<String>, LedgerError> {
        let Some(customer) = ledger.customer_by_key_hash(hash)? else {
            return Ok(None);
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= CACHE_CAPACITY {
            known.clear();
        }
        known.insert(*hash, customer.id.clone());
        Ok(Some(customer.id))
    }
}

/// Whether this node leads and has applied an entry of its own term: then
/// every entry committed before its term is applied here, and every entry
/// committed in its term was applied here before it was acknowledged.
fn leader_has_applied_its_term(ledger: &ControlPlane) -> bool {
    let metrics = ledger.raft().metrics().borrow().clone();
    metrics.current_leader == Some(metrics.id)
        && metrics
            .last_applied
            .is_some_and(|applied| applied.leader_id.term == metrics.current_term)
}

/// One catch-up at a time, shared by every caller that arrived before it
/// started.
#[derive(Default)]
struct SharedCatchUp {
    /// Catch-ups started so far; the n-th to start is number n.
    started: AtomicU64,
    /// Held while a catch-up runs; the number of the latest one to finish.
    finished: tokio::sync::Mutex<u64>,
}

impl SharedCatchUp {
    /// Returns once a catch-up that started after this call has finished.
    async fn run(&self, ledger: &ControlPlane) -> Result<(), LedgerError> {
        let wanted = self.started.load(Ordering::SeqCst) + 1;
        let mut finished = self.finished.lock().await;
        if *finished >= wanted {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        ledger.linearizable_barrier().await?;
        *finished = number;
        Ok(())
    }
}
