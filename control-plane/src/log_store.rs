//! The Raft log and vote, on redb (`raft-log.redb`).
//!
//! One module, about 540 lines without its tests, on purpose: the writer
//! thread, its queue of operations and the in-memory `pending` map are one
//! protocol (the order of appends, votes, truncations and purges, and
//! which entries are readable when), and openraft's storage traits below
//! are its only callers. Split, each half would be unreadable without the
//! other.
//!
//! # The log writer
//!
//! `append` hands its entries to a dedicated writer thread and returns;
//! they are readable at once from an in-memory `pending` map, and the
//! writer calls openraft's flush callback once they are on disk. The fsync
//! thus never blocks a tokio worker. Whatever arrives while the writer is
//! inside one fsync (appends, a vote, a truncation, a purge) goes to disk
//! together in the next transaction, in arrival order.
//!
//! openraft 0.9's core task itself still waits for each append's flush
//! callback before its next command (`RaftCore::append_to_log`), and only
//! then tells the replication streams about the new entries. A leader's
//! fsync and its followers' fsyncs therefore happen one after the other,
//! not in parallel: two fsyncs are on every write's path. The streams then
//! read the entries just flushed, which is why the latest
//! [`KEEP_FLUSHED`] stay in memory.
//!
//! # Durability
//!
//! Every writer transaction commits with `Durability::Immediate`, so redb
//! fsyncs before `commit` returns, and nothing is acknowledged before that:
//!
//! 1. The vote ([`save_vote`](RaftLogStorage::save_vote)): a node must
//!    never vote twice in a term, even across a crash, so `save_vote`
//!    returns only after the writer's commit.
//! 2. Entries ([`append`](RaftLogStorage::append)): a follower acknowledges
//!    entries, and a leader counts itself towards the quorum, only once
//!    they are durable: the flush callback fires after the commit.
//! 3. [`truncate`](RaftLogStorage::truncate): conflicting entries must
//!    not reappear after a crash; it returns after the commit.
//! 4. [`purge`](RaftLogStorage::purge) returns once the purge marker is
//!    durable. The entries below it are then deleted a step per writer
//!    transaction ([`PURGE_STEP`]), alongside whatever else is written;
//!    openraft never reads below the marker, and a step a crash cut off is
//!    finished by the next purge.
//!
//! The committed index is deliberately not stored (openraft's
//! `save_committed` keeps its default, a no-op): openraft awaits it on its
//! core task, and all it bought was re-applying a little earlier after a
//! restart. The state machine records what it applied; the rest is
//! re-learned from the leader.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::codec::Codec;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
/// The format marker (raw bytes, `crate::state_machine::format::CURRENT`).
const KEY_FORMAT: &str = "format";
/// Most queued operations the writer puts in one transaction.
const MAX_GROUP: usize = 4096;
/// How many of the latest durable entries stay in memory after their
/// flush. openraft 0.9's core hands a new entry to the replication streams
/// only after the leader's own flush (see the module docs), so the streams
/// ask for it just after the writer would otherwise have dropped it.
const KEEP_FLUSHED: usize = 64;
/// Most purged entries deleted per writer transaction. A purge after a
/// snapshot covers thousands of entries (hundreds of MiB of a large
/// ledger's log); deleted in one transaction it held every append, and so
/// openraft's core and its heartbeats, for seconds: long enough for
/// elections at every snapshot.
const PURGE_STEP: usize = 512;

/// The redb-backed log store; cheap to clone (one shared writer).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<Database>,
    /// Entries handed to the writer and not yet known to be in redb, and
    /// the latest [`KEEP_FLUSHED`] that are, by index. They take precedence
    /// over redb when reading.
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue ends the writer after what is queued; joining
        // it releases the database file, so the node can reopen it.
        drop(lock(&self.ops).take());
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

/// Called once the entries of an append are on disk (or failed to get there).
type Flushed = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// One unit of work for the writer, applied in queue order.
enum Op {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        flushed: Flushed,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        log_id: LogId,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn logs_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

/// Runs blocking redb reads off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(logs_err(ErrorVerb::Read, e)),
    }
}

/// The writer thread: drains the queue, writes everything drained in one
/// transaction, fsyncs, then answers every operation in it.
fn write_loop(
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    rx: mpsc::Receiver<Op>,
) {
    // Durable entries still held in `pending`, oldest first.
    let mut kept: std::collections::VecDeque<LogId> = std::collections::VecDeque::new();
    // Entries up to this index are purged (the marker is durable) but
    // maybe not all deleted yet: each transaction deletes a step of them.
    let mut purging: Option<u64> = None;
    loop {
        // With deletions left, an idle writer keeps deleting.
        let first = match purging {
            None => rx.recv().ok(),
            Some(_) => match rx.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => break,
            },
        };
        if first.is_none() && purging.is_none() {
            break;
        }
        let mut ops: Vec<Op> = first.into_iter().collect();
        while !ops.is_empty() && ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        for op in &ops {
            if let Op::Purge { log_id, .. } = op {
                purging = purging.max(Some(log_id.index));
            }
        }
        let started = std::time::Instant::now();
        let result = write_group(&db, &ops, &mut purging).map_err(|e| e.to_string());
        let mut appended = 0;
        // What is in redb now need not be kept in memory any more, beyond
        // the latest few. An entry leaves memory only as the very log ID
        // that was written: a later append may have replaced it.
        if result.is_ok() {
            for op in &ops {
                if let Op::Append { entries, .. } = op {
                    appended += entries.len();
                    kept.extend(entries.iter().map(|(log_id, _)| *log_id));
                }
            }
            if kept.len() > KEEP_FLUSHED {
                let mut pending = lock(&pending);
                while kept.len() > KEEP_FLUSHED {
                    let Some(log_id) = kept.pop_front() else {
                        break;
                    };
                    if pending.get(&log_id.index).map(|e| e.log_id) == Some(log_id) {
                        pending.remove(&log_id.index);
                    }
                }
            }
        }
        if appended > 0 {
            // Counted per write group: each entry in it waited for it once.
            crate::stage_timing::record(
                crate::stage_timing::Stage::LogAppend,
                started.elapsed(),
                1,
            );
        }
        tracing::debug!(
            operations = ops.len(),
            entries = appended,
            took_us = started.elapsed().as_micros() as u64,
            "log group flushed"
        );
        if let Err(e) = &result {
            tracing::error!(error = %e, "writing the raft log failed");
        }
        for op in ops {
            let r = result.clone();
            match op {
                Op::Append { flushed, .. } => flushed(r.map_err(std::io::Error::other)),
                Op::Vote { done, .. } | Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(r);
                }
            }
        }
    }
}

/// Writes `ops` and the next step of a purge in one transaction. `purging`
/// becomes `None` once nothing at or below it is left.
fn write_group(db: &Database, ops: &[Op], purging: &mut Option<u64>) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    // The fsync point of every operation in the group (see the module docs).
    tx.set_durability(Durability::Immediate);
    for op in ops {
        apply_op(&tx, op)?;
    }
    let purge_done = match *purging {
        Some(upto) => delete_purge_step(&tx, upto)?,
        None => true,
    };
    tx.commit()?;
    if purge_done {
        *purging = None;
    }
    Ok(())
}

/// Deletes up to [`PURGE_STEP`] of the oldest entries at or below `upto`;
/// true when none is left.
fn delete_purge_step(tx: &WriteTransaction, upto: u64) -> Result<bool, redb::Error> {
    let mut table = tx.open_table(LOGS)?;
    let Some(first) = table.first()?.map(|(k, _)| k.value()) else {
        return Ok(true);
    };
    if first > upto {
        return Ok(true);
    }
    let last = upto.min(first.saturating_add(PURGE_STEP as u64 - 1));
    table.retain_in(first..=last, |_, _| false)?;
    Ok(last == upto)
}

fn apply_op(tx: &WriteTransaction, op: &Op) -> Result<(), redb::Error> {
    match op {
        Op::Append { entries, .. } => {
            let mut table = tx.open_table(LOGS)?;
            for (log_id, bytes) in entries {
                table.insert(log_id.index, bytes.as_slice())?;
            }
        }
        Op::Vote { bytes, .. } => {
            tx.open_table(META)?.insert(KEY_VOTE, bytes.as_slice())?;
        }
        Op::Truncate { from, .. } => {
            tx.open_table(LOGS)?.retain_in(*from.., |_, _| false)?;
        }
        // The entries go a step per transaction (see `PURGE_STEP`); until
        // then some may still be in redb, below the marker, where openraft
        // never reads.
        Op::Purge { bytes, .. } => {
            tx.open_table(META)?.insert(KEY_PURGED, bytes.as_slice())?;
        }
    }
    Ok(())
}

impl LogStore {
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, crate::Error> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(redb::Error::from)?;
        let mut tx = db.begin_write().map_err(redb::Error::from)?;
        // fsync: creating the tables once so readers never see them missing.
        tx.set_durability(Durability::Immediate);
        tx.open_table(LOGS).map_err(redb::Error::from)?;
        tx.open_table(META).map_err(redb::Error::from)?;
        tx.commit().map_err(redb::Error::from)?;
        ensure_current_format(&db)?;
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (ops, rx) = mpsc::channel();
        let writer = {
            let db = db.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || write_loop(db, pending, rx))
                .map_err(redb::Error::Io)?
        };
        Ok(LogStore {
            shared: Arc::new(Shared {
                db,
                pending,
                ops: Mutex::new(Some(ops)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Makes `entries` readable at once and queues them for the writer,
    /// which calls `flushed` once they are durable.
    fn queue_append(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        flushed: Flushed,
    ) -> Result<(), StorageError> {
        let mut encoded = Vec::new();
        {
            let mut pending = lock(&self.shared.pending);
            for entry in entries {
                let bytes =
                    crate::codec::encode(&entry).map_err(|e| logs_err(ErrorVerb::Write, e))?;
                encoded.push((entry.log_id, bytes));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.send(Op::Append {
            entries: encoded,
            flushed,
        })
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        match lock(&self.shared.ops).as_ref() {
            Some(ops) => ops
                .send(op)
                .map_err(|_| logs_err(ErrorVerb::Write, "the log writer has stopped")),
            None => Err(logs_err(ErrorVerb::Write, "the log store is closed")),
        }
    }

    /// Queues `op` and waits until the writer has made it durable.
    async fn send_and_wait(
        &self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
        op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.send(op(done))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, verb, e)),
            Err(_) => Err(io_err(subject, verb, "the log writer has stopped")),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let verb = ErrorVerb::Read;
        let tx = db.begin_read().map_err(|e| logs_err(verb, e))?;
        let table = tx.open_table(META).map_err(|e| logs_err(verb, e))?;
        let Some(v) = table.get(key).map_err(|e| logs_err(verb, e))? else {
            return Ok(None);
        };
        crate::codec::decode(v.value())
            .map(Some)
            .map_err(|e| logs_err(verb, e))
    }

    fn last_log_id(db: &Database) -> Result<Option<LogId>, StorageError> {
        let verb = ErrorVerb::Read;
        let tx = db.begin_read().map_err(|e| logs_err(verb, e))?;
        let table = tx.open_table(LOGS).map_err(|e| logs_err(verb, e))?;
        let Some((_, v)) = table.last().map_err(|e| logs_err(verb, e))? else {
            return Ok(None);
        };
        let entry: Entry = crate::codec::decode(v.value()).map_err(|e| logs_err(verb, e))?;
        Ok(Some(entry.log_id))
    }

    fn read_range(
        db: &Database,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        let verb = ErrorVerb::Read;
        let tx = db.begin_read().map_err(|e| logs_err(verb, e))?;
        let table = tx.open_table(LOGS).map_err(|e| logs_err(verb, e))?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>((start, end))
            .map_err(|e| logs_err(verb, e))?
        {
            let (_, v) = item.map_err(|e| logs_err(verb, e))?;
            out.push(crate::codec::decode(v.value()).map_err(|e| logs_err(verb, e))?);
        }
        Ok(out)
    }
}

/// Brings `raft-log.redb` to the current format (`crate::codec`), in one
/// durable transaction, as `state_machine::format` does for the state
/// database: a log without the marker was written by a version before
/// postcard, and its entries, vote and purge marker are re-encoded.
fn ensure_current_format(db: &Database) -> Result<(), crate::Error> {
    use crate::state_machine::format::{self, Convert, CURRENT};
    let storage = |e: &dyn std::fmt::Display| crate::Error::Storage(format!("raft log: {e}"));
    let convert = |what: &str, bytes: &[u8], f: Convert| {
        f(bytes, Codec::Legacy, Codec::Postcard)
            .map_err(|e| crate::Error::Storage(format!("raft log: {what}: {e}")))
    };
    let mut tx = db.begin_write().map_err(|e| storage(&e))?;
    tx.set_durability(Durability::Immediate);
    {
        let mut meta = tx.open_table(META).map_err(|e| storage(&e))?;
        let marker = meta
            .get(KEY_FORMAT)
            .map_err(|e| storage(&e))?
            .map(|v| v.value().to_vec());
        if format::is_current(marker.as_deref()).map_err(|e| storage(&e))? {
            drop(meta);
            return tx.abort().map_err(|e| storage(&e));
        }
        let vote = meta.get(KEY_VOTE).map_err(|e| storage(&e))?;
        let vote = vote.map(|v| v.value().to_vec());
        if let Some(v) = vote {
            let new = convert("vote", &v, format::typed::<Vote>)?;
            meta.insert(KEY_VOTE, new.as_slice())
                .map_err(|e| storage(&e))?;
        }
        let purged = meta.get(KEY_PURGED).map_err(|e| storage(&e))?;
        let purged = purged.map(|v| v.value().to_vec());
        if let Some(v) = purged {
            let new = convert("purge marker", &v, format::typed::<LogId>)?;
            meta.insert(KEY_PURGED, new.as_slice())
                .map_err(|e| storage(&e))?;
        }
        let mut logs = tx.open_table(LOGS).map_err(|e| storage(&e))?;
        let mut next = 0u64;
        let mut converted = 0u64;
        loop {
            let batch: Vec<(u64, Vec<u8>)> = {
                let mut batch = Vec::new();
                for item in logs
                    .range(next..)
                    .map_err(|e| storage(&e))?
                    .take(PURGE_STEP)
                {
                    let (k, v) = item.map_err(|e| storage(&e))?;
                    batch.push((k.value(), v.value().to_vec()));
                }
                batch
            };
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            for (index, v) in &batch {
                let new = convert("entry", v, format::typed::<Entry>)?;
                logs.insert(*index, new.as_slice())
                    .map_err(|e| storage(&e))?;
            }
            converted += batch.len() as u64;
            let Some(n) = last.checked_add(1) else {
                break;
            };
            next = n;
        }
        meta.insert(KEY_FORMAT, CURRENT).map_err(|e| storage(&e))?;
        if converted > 0 {
            tracing::info!(
                entries = converted,
                "raft log re-encoded from the legacy format (bincode) to postcard"
            );
        }
    }
    tx.commit().map_err(|e| storage(&e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // Entries still on their way to disk are usually the ones a
        // replication stream wants: serve them from memory when they cover
        // the whole range.
        let from_memory: Vec<Entry> = lock(&self.shared.pending)
            .range((start, end))
            .map(|(_, e)| e.clone())
            .collect();
        let first = match start {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => None,
        };
        if from_memory
            .first()
            .map(|e| e.log_id.index)
            .is_some_and(|i| Some(i) == first)
        {
            return Ok(from_memory);
        }
        // Slow path. `from_memory` was copied before redb is read: the
        // writer drops an entry from `pending` only after committing it, so
        // each entry is in one or the other (or both; memory wins).
        let db = self.shared.db.clone();
        let stored = blocking(move || LogStore::read_range(&db, start, end)).await?;
        let mut merged: BTreeMap<u64, Entry> =
            stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        merged.extend(from_memory.into_iter().map(|e| (e.log_id.index, e)));
        Ok(merged.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.shared.db.clone();
        let (last_purged, stored_last) = blocking(move || {
            let last_purged: Option<LogId> = LogStore::read_meta(&db, KEY_PURGED)?;
            Ok((last_purged, LogStore::last_log_id(&db)?))
        })
        .await?;
        let pending_last = lock(&self.shared.pending)
            .last_key_value()
            .map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: pending_last.or(stored_last).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = crate::codec::encode(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.send_and_wait(ErrorSubject::Vote, ErrorVerb::Write, |done| Op::Vote {
            bytes,
            done,
        })
        .await?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.shared.db.clone();
        blocking(move || LogStore::read_meta(&db, KEY_VOTE)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.queue_append(
            entries,
            Box::new(move |result| callback.log_io_completed(result)),
        )
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::info!(%log_id, "truncating the log from this entry on");
        // Gone from memory now; from disk, after any earlier queued append
        // (which may hold some of them) has been written.
        let _ = lock(&self.shared.pending).split_off(&log_id.index);
        self.send_and_wait(ErrorSubject::Logs, ErrorVerb::Delete, |done| Op::Truncate {
            from: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log up to this entry");
        let bytes = crate::codec::encode(&log_id).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        // Purged entries are gone for readers, including the flushed ones
        // still kept in memory.
        lock(&self.shared.pending).retain(|&index, _| index > log_id.index);
        self.send_and_wait(ErrorSubject::Logs, ErrorVerb::Delete, |done| Op::Purge {
            log_id,
            bytes,
            done,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn terms(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect()
    }

    /// Appends without waiting; the receiver reports the flush.
    fn append(
        store: &LogStore,
        entries: Vec<Entry>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), std::io::Error>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store
            .queue_append(
                entries,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
        rx
    }

    #[tokio::test]
    async fn a_log_written_in_the_legacy_format_is_re_encoded_once_and_reads_the_same() {
        use crate::types::Batch;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        let entries: Vec<Entry> = (4..=9)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(2, 1), i),
                payload: EntryPayload::Normal(Batch {
                    at_ms: 1_795_000_000_000 + i,
                    commands: vec![crate::Command::CreateChain {
                        customer: "cu_a".into(),
                        tag: format!("t{i}"),
                    }],
                }),
            })
            .collect();
        let vote = Vote::new_committed(2, 1);
        let purged = LogId::new(CommittedLeaderId::new(1, 1), 3);
        {
            // As a version before postcard left it: bincode, no marker.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut logs = tx.open_table(LOGS).unwrap();
                for e in &entries {
                    let bytes = Codec::Legacy.encode(e).unwrap();
                    logs.insert(e.log_id.index, bytes.as_slice()).unwrap();
                }
                let mut meta = tx.open_table(META).unwrap();
                let vote_bytes = Codec::Legacy.encode(&vote).unwrap();
                meta.insert(KEY_VOTE, vote_bytes.as_slice()).unwrap();
                let purged_bytes = Codec::Legacy.encode(&purged).unwrap();
                meta.insert(KEY_PURGED, purged_bytes.as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        for _ in 0..2 {
            // The second open finds the marker and converts nothing again.
            let mut store = LogStore::open(&path, 1 << 20).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), Some(vote));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(purged));
            assert_eq!(state.last_log_id.map(|l| l.index), Some(9));
            let read = store.try_get_log_entries(4..=9).await.unwrap();
            assert_eq!(read, entries);
            drop(store);
        }
        let db = Database::open(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        let marker = meta.get(KEY_FORMAT).unwrap().unwrap().value().to_vec();
        assert_eq!(marker, crate::state_machine::format::CURRENT);
    }

    #[tokio::test]
    async fn a_truncation_behind_unflushed_appends_wins_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        let mut store = LogStore::open(&path, 1 << 20).unwrap();
        // Queued, not awaited: some may still be in memory only.
        let first = append(&store, (1..=5).map(|i| entry(1, i)).collect());
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        let second = append(&store, vec![entry(2, 3), entry(2, 4)]);
        let read = store.try_get_log_entries(1..=10).await.unwrap();
        assert_eq!(terms(&read), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
        drop(store);
        // What the flush reported is what a restarted node finds.
        let mut reopened = LogStore::open(&path, 1 << 20).unwrap();
        let read = reopened.try_get_log_entries(1..=10).await.unwrap();
        assert_eq!(terms(&read), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    }

    #[tokio::test]
    async fn entries_are_readable_as_soon_as_append_returns_and_durable_when_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        let mut store = LogStore::open(&path, 1 << 20).unwrap();
        let mut flushes = Vec::new();
        for i in 1..=200 {
            flushes.push(append(&store, vec![entry(1, i)]));
            let read = store.try_get_log_entries(i..=i).await.unwrap();
            assert_eq!(terms(&read), vec![(i, 1)], "entry {i} right after append");
        }
        for f in flushes {
            f.await.unwrap().unwrap();
        }
        store.save_vote(&Vote::new(7, 2)).await.unwrap();
        drop(store);
        let mut reopened = LogStore::open(&path, 1 << 20).unwrap();
        let read = reopened.try_get_log_entries(1..=200).await.unwrap();
        assert_eq!(read.len(), 200);
        assert_eq!(reopened.read_vote().await.unwrap(), Some(Vote::new(7, 2)));
    }

    #[tokio::test]
    async fn flushed_entries_leave_memory_beyond_the_latest_few_and_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20).unwrap();
        for i in 1..=200 {
            append(&store, vec![entry(1, i)]).await.unwrap().unwrap();
        }
        let held = lock(&store.shared.pending).len();
        assert!(held > 0 && held <= KEEP_FLUSHED, "{held} entries in memory");
        let read = store.try_get_log_entries(1..=200).await.unwrap();
        assert_eq!(terms(&read), (1..=200).map(|i| (i, 1)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn entries_rewritten_after_a_truncation_read_as_rewritten_while_old_ones_leave_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20).unwrap();
        append(&store, (1..=10).map(|i| entry(1, i)).collect())
            .await
            .unwrap()
            .unwrap();
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
            .await
            .unwrap();
        // Unflushed while the old entries 5..=10 leave memory.
        let rewritten = append(&store, vec![entry(2, 5), entry(2, 6)]);
        // Their flushes are not awaited here: the last append below waits
        // for all of them (the writer answers in queue order).
        for i in 7..=7 + KEEP_FLUSHED as u64 {
            drop(append(&store, vec![entry(2, i)]));
        }
        let read = store.try_get_log_entries(4..=7).await.unwrap();
        assert_eq!(terms(&read), vec![(4, 1), (5, 2), (6, 2), (7, 2)]);
        rewritten.await.unwrap().unwrap();
        let last = 7 + KEEP_FLUSHED as u64;
        append(&store, vec![entry(2, last + 1)])
            .await
            .unwrap()
            .unwrap();
        let read = store.try_get_log_entries(4..=7).await.unwrap();
        assert_eq!(terms(&read), vec![(4, 1), (5, 2), (6, 2), (7, 2)]);
    }

    #[tokio::test]
    async fn a_large_purge_returns_at_once_and_finishes_in_steps_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        let mut store = LogStore::open(&path, 1 << 20).unwrap();
        let n = 5 * PURGE_STEP as u64;
        append(&store, (1..=n).map(|i| entry(1, i)).collect())
            .await
            .unwrap()
            .unwrap();
        let upto = n - 10;
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), upto))
            .await
            .unwrap();
        // Appends behind the purge are not held up by it.
        append(&store, vec![entry(1, n + 1)])
            .await
            .unwrap()
            .unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(upto));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(n + 1));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let db = store.shared.db.clone();
            let left = LogStore::read_range(&db, Bound::Unbounded, Bound::Included(upto)).unwrap();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} entries left",
                left.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let rest = store.try_get_log_entries(upto + 1..).await.unwrap();
        assert_eq!(rest.len(), 11);
        drop(store);
        let mut reopened = LogStore::open(&path, 1 << 20).unwrap();
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(upto));
    }
}
