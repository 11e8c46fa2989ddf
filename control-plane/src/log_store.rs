//! The Raft log and vote, on redb (`raft-log.redb`).
//!
//! Durability: every write transaction here commits with
//! `Durability::Immediate`, which makes redb fsync before `commit` returns.
//! There are exactly three fsync points, each required by Raft:
//!
//! 1. [`save_vote`](RaftLogStorage::save_vote): a node must never vote twice
//!    in a term, even across a crash, so the vote is on disk before we answer.
//! 2. [`append`](RaftLogStorage::append): a follower acknowledges entries and
//!    a leader counts itself towards the quorum only once they are durable, so
//!    the flush callback fires after the commit (fsync) returns. openraft hands
//!    us many entries at once while earlier ones are in flight, so one fsync
//!    covers a whole group of entries (group commit at the log level).
//! 3. [`truncate`](RaftLogStorage::truncate) and
//!    [`purge`](RaftLogStorage::purge): conflicting entries must not reappear
//!    after a crash, and the purge marker must agree with the entries left.
//!
//! redb work is blocking, so it runs on the blocking thread pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

/// The redb-backed log store; cheap to clone (one shared database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn logs_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

/// Runs blocking redb work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(logs_err(ErrorVerb::Write, e)),
    }
}

impl LogStore {
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, redb::Error> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let mut tx = db.begin_write()?;
        // fsync: creating the tables once so readers never see them missing.
        tx.set_durability(Durability::Immediate);
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(LogStore { db: Arc::new(db) })
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
        bincode::deserialize(v.value())
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
        let entry: Entry = bincode::deserialize(v.value()).map_err(|e| logs_err(verb, e))?;
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
            out.push(bincode::deserialize(v.value()).map_err(|e| logs_err(verb, e))?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        blocking(move || LogStore::read_range(&db, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId> = LogStore::read_meta(&db, KEY_PURGED)?;
            let last = LogStore::last_log_id(&db)?.or(last_purged);
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = bincode::serialize(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        blocking(move || {
            let err = |e: redb::Error| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
            let mut tx = db.begin_write().map_err(|e| err(e.into()))?;
            // fsync point 1: the vote is durable before we return (and answer the candidate).
            tx.set_durability(Durability::Immediate);
            tx.open_table(META)
                .map_err(|e| err(e.into()))?
                .insert(KEY_VOTE, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            tx.commit().map_err(|e| err(e.into()))
        })
        .await?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(move || LogStore::read_meta(&db, KEY_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced on purpose: losing it only means re-learning the commit
        // index from the leader; it lets a restarted node re-apply sooner.
        let db = self.db.clone();
        blocking(move || {
            let bytes =
                bincode::serialize(&committed).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            let err = |e: redb::Error| logs_err(ErrorVerb::Write, e);
            let mut tx = db.begin_write().map_err(|e| err(e.into()))?;
            tx.set_durability(Durability::None);
            tx.open_table(META)
                .map_err(|e| err(e.into()))?
                .insert(KEY_COMMITTED, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            tx.commit().map_err(|e| err(e.into()))
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        Ok(
            blocking(move || LogStore::read_meta::<Option<LogId>>(&db, KEY_COMMITTED))
                .await?
                .flatten(),
        )
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
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let started = std::time::Instant::now();
        let n = encoded.len();
        let result = blocking(move || {
            let err = |e: redb::Error| logs_err(ErrorVerb::Write, e);
            let mut tx = db.begin_write().map_err(|e| err(e.into()))?;
            // fsync point 2: entries are on disk before the flush callback fires.
            tx.set_durability(Durability::Immediate);
            {
                let mut table = tx.open_table(LOGS).map_err(|e| err(e.into()))?;
                for (index, bytes) in &encoded {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
            tx.commit().map_err(|e| err(e.into()))
        })
        .await;
        tracing::debug!(
            entries = n,
            took_us = started.elapsed().as_micros() as u64,
            "log append flushed"
        );
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        tracing::info!(%log_id, "truncating the log from this entry on");
        blocking(move || {
            let err = |e: redb::Error| logs_err(ErrorVerb::Delete, e);
            let mut tx = db.begin_write().map_err(|e| err(e.into()))?;
            // fsync point 3a: conflicting entries must not come back after a crash.
            tx.set_durability(Durability::Immediate);
            tx.open_table(LOGS)
                .map_err(|e| err(e.into()))?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| err(e.into()))?;
            tx.commit().map_err(|e| err(e.into()))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        tracing::debug!(%log_id, "purging the log up to this entry");
        blocking(move || {
            let err = |e: redb::Error| logs_err(ErrorVerb::Delete, e);
            let bytes = bincode::serialize(&log_id).map_err(|e| logs_err(ErrorVerb::Write, e))?;
            let mut tx = db.begin_write().map_err(|e| err(e.into()))?;
            // fsync point 3b: the purge marker and the remaining entries agree on disk.
            tx.set_durability(Durability::Immediate);
            tx.open_table(META)
                .map_err(|e| err(e.into()))?
                .insert(KEY_PURGED, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            tx.open_table(LOGS)
                .map_err(|e| err(e.into()))?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| err(e.into()))?;
            tx.commit().map_err(|e| err(e.into()))
        })
        .await
    }
}
