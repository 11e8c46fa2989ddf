//! The replicated state machine on redb (`state.redb`).
//!
//! `apply` is deterministic: it reads no clock (timestamps come in the
//! [`Batch`](crate::types::Batch) from the leader), no randomness (key
//! secrets come in `RotateKey`), and does no I/O beyond its own database.
//! Every replica therefore produces byte-identical records, IDs and
//! signatures.
//!
//! **The Ed25519 signing secret is part of the replicated state** (table
//! `keys`). Draws are sealed at apply time, on every replica, because only
//! then is the entropy they use known; whichever node is leader, every
//! replica must be able to produce the same signature. Ed25519 signing is
//! deterministic (RFC 8032), so it can. The cost is that every voter's disk
//! and every snapshot hold the secret: data directories and backups must be
//! protected like the key itself. Rotation (`RotateKey`) never invalidates
//! old draws: retired keys stay in the table with their validity period.
//!
//! Durability: state-machine commits use `Durability::None` (no fsync),
//! because the log is the durable record. After a crash redb rolls back to
//! its last durable commit and Raft re-applies the entries after it. Once
//! every [`DURABLE_EVERY`], and always before a snapshot is built (the log
//! behind a snapshot gets purged), a commit is made `Immediate` (fsync).
//!
//! Modules: [`tables`] (names and row types), [`tx`] (the transaction and
//! cache layer), [`dispatch`] (one command to the module of its domain),
//! the domains [`chains`] (with [`idempotency`], when a repeat is a
//! replay), [`pool`], [`links`], [`customers`], [`keys`],
//! [`members`], and [`reads`] (local reads). This file opens the database,
//! applies entries, and answers openraft's snapshot calls through
//! [`snapshots`] (building, storing and installing snapshot files).

pub(crate) mod chains;
pub(crate) mod customers;
pub(crate) mod dispatch;
pub mod features;
mod idempotency;
pub(crate) mod keys;
pub use keys::check_current_key;
pub mod format;
pub mod links;
pub(crate) mod members;
pub(crate) mod pool;
pub mod provenance;
pub mod reads;
mod snapshots;
pub mod tables;
#[cfg(test)]
mod test_ledger;
pub(crate) mod tx;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, Snapshot, StorageIOError};
use redb::{Database, Durability};

use self::dispatch::Applier;
pub use self::snapshots::SnapshotBuilder;
use self::snapshots::{current_snapshot, install, receive_into_incoming};
use self::tables::*;
use self::tx::{ApplyCache, ApplyError, Tx};
use crate::key_encryption::KeyEncryptionKey;
use crate::types::{
    BatchOutcome, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// An fsync of the state database costs milliseconds and blocks apply (and
/// so every client's answer); doing it on a timer keeps it off most
/// requests' paths while bounding how much Raft must re-apply after a crash
/// (and how long redb keeps freed pages unreclaimed).
pub const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a background thread asks the kernel to write the state file's
/// dirty pages out (see [`spawn_writeback`]).
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(25);
/// `meta` key of the ledger clock: the latest batch time applied (Unix ms).
pub(crate) const META_CLOCK: &[u8] = b"clock";
const STATE_FILE: &str = "state.redb";
const INSTALLING_FILE: &str = "state.redb.installing";
const SNAPSHOT_DIR: &str = "snapshots";
const CURRENT_META: &str = "current.meta";
const INCOMING_SNAPSHOT: &str = "incoming.snap";

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

/// The database, shared by the state machine (writer), the snapshot builder
/// and local readers. Installing a snapshot swaps in a new database; readers
/// holding the old one finish on it undisturbed.
pub struct Shared {
    dir: PathBuf,
    db: RwLock<Arc<Database>>,
    cache_bytes: usize,
    builds: std::sync::atomic::AtomicU64,
    /// Opens the signing secret again after a snapshot is installed.
    kek: Option<KeyEncryptionKey>,
    /// Set after each apply commits, cleared by the writeback thread when
    /// it syncs: an idle node does not sync a clean file 40 times a second.
    unsynced: std::sync::atomic::AtomicBool,
    /// The writeback thread, unparked when `unsynced` is first set, so an
    /// idle node's thread sleeps instead of waking 40 times a second.
    writeback: std::sync::OnceLock<std::thread::Thread>,
}

impl Shared {
    /// Notes an apply's commit for the writeback thread, waking it if it
    /// was asleep.
    fn note_unsynced(&self) {
        if !self
            .unsynced
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            if let Some(thread) = self.writeback.get() {
                thread.unpark();
            }
        }
    }

    pub fn db(&self) -> Arc<Database> {
        match self.db.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, db: Database) {
        let mut g = match self.db.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(db);
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_DIR)
    }
}

/// Opens (or creates) a state database, in the current format
/// ([`format::ensure_current`] migrates one an older version wrote).
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, crate::Error> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(redb::Error::from)?;
    let mut tx = db.begin_write().map_err(redb::Error::from)?;
    tx.set_durability(Durability::Immediate);
    for (_, def) in ALL {
        tx.open_table(def).map_err(redb::Error::from)?;
    }
    tx.commit().map_err(redb::Error::from)?;
    format::ensure_current(&db).map_err(|e| crate::Error::Storage(e.to_string()))?;
    Ok(db)
}

/// The state machine openraft drives.
pub struct StateMachine {
    shared: Arc<Shared>,
    cache: ApplyCache,
    last_durable: std::time::Instant,
}

/// Keeps the kernel writing the state file out in the background.
///
/// Non-durable commits leave their pages dirty in the page cache; the
/// periodic durable commit then had to write two seconds' worth at once,
/// blocking apply (and every client's answer) for up to a few hundred
/// milliseconds. An fdatasync from another thread every 25 ms (when
/// something was applied since the last one) spreads that work out in
/// small portions (at most one sync per 25 ms; the thread sleeps while
/// nothing is applied). Small matters: every fsync of the Raft log
/// queues behind whatever the disk is writing, and at a 250 ms period each
/// writeback held the log up for 20–30 ms (p99 57 ms at 64 writers, against
/// 24 ms at 25 ms). It changes no guarantee: what is durable is still
/// decided by redb's commits. The thread stops when the state machine is
/// dropped.
fn spawn_writeback(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("state-writeback".into())
        .spawn(move || loop {
            // Woken by the first apply after a sync; the timeout only
            // notices a dropped state machine (and any lost wake-up).
            std::thread::park_timeout(std::time::Duration::from_secs(1));
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if !shared
                .unsynced
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                continue;
            }
            let path = shared.dir.join(STATE_FILE);
            drop(shared);
            if let Ok(file) = std::fs::File::open(&path) {
                let _ = file.sync_data();
            }
            // Applies in the meantime gather into the next sync.
            std::thread::sleep(WRITEBACK_EVERY);
        });
    match spawned {
        Ok(handle) => {
            let _ = shared.writeback.set(handle.thread().clone());
        }
        Err(e) => tracing::warn!(error = %e, "no background writeback of the state file"),
    }
}

impl StateMachine {
    /// Opens (or creates) the state machine under `dir`.
    /// `kek` opens the sealed signing secret; a node whose KEK cannot open
    /// the current key refuses to start (it could not sign as the others
    /// do).
    pub fn open(
        dir: &Path,
        cache_bytes: usize,
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self, crate::Error> {
        std::fs::create_dir_all(dir.join(SNAPSHOT_DIR))?;
        // A crash mid-install leaves this behind; the old state is still whole.
        let _ = std::fs::remove_file(dir.join(INSTALLING_FILE));
        let db = open_db(&dir.join(STATE_FILE), cache_bytes)?;
        let cache = {
            let tx = db.begin_write().map_err(redb::Error::from)?;
            let cache = ApplyCache::load(&Tx::new(&tx), kek.clone())
                .map_err(|e| crate::Error::Storage(e.to_string()))?;
            tx.abort().map_err(redb::Error::from)?;
            cache
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            db: RwLock::new(Arc::new(db)),
            cache_bytes,
            builds: std::sync::atomic::AtomicU64::new(0),
            kek,
            unsynced: std::sync::atomic::AtomicBool::new(false),
            writeback: std::sync::OnceLock::new(),
        });
        spawn_writeback(&shared);
        Ok(StateMachine {
            shared,
            cache,
            last_durable: std::time::Instant::now(),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// Applies entries in one write transaction. Blocking.
fn apply_entries(
    db: &Database,
    cache: &mut ApplyCache,
    entries: Vec<Entry>,
    durable: bool,
) -> Result<Vec<BatchOutcome>, ApplyError> {
    let mut tx = db.begin_write().map_err(redb::Error::from)?;
    tx.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    let mut results = Vec::with_capacity(entries.len());
    {
        let t = Tx::new(&tx);
        let mut last: Option<LogId> = None;
        // The ledger clock never runs backwards, even when a new leader's
        // wall clock is behind its predecessor's: each batch's time is the
        // later of its leader's stamp and the last one applied.
        let mut clock: u64 = t.get(META, META_CLOCK)?.unwrap_or(0);
        let mut level = features::stored(&t)?;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(BatchOutcome::default()),
                EntryPayload::Normal(batch) => {
                    clock = clock.max(batch.at_ms);
                    let mut applier = Applier {
                        tx: &t,
                        cache,
                        at_ms: clock,
                        level,
                    };
                    let mut outcomes = Vec::with_capacity(batch.commands.len());
                    for command in &batch.commands {
                        outcomes.push(applier.apply(command)?);
                    }
                    level = applier.level;
                    results.push(BatchOutcome { outcomes });
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    for (id, node) in stored.membership().nodes() {
                        // Labels given at join time; SetMemberLabels may refine them later.
                        if t.get_raw(MEMBERS, &u64_key(*id))?.is_none() {
                            t.put(MEMBERS, &u64_key(*id), node)?;
                        }
                    }
                    tracing::info!(membership = ?stored.membership(), "membership applied");
                    t.put(META, META_MEMBERSHIP, &stored)?;
                    results.push(BatchOutcome::default());
                }
            }
        }
        t.put(META, META_LAST_APPLIED, &last)?;
        t.put(META, META_CLOCK, &clock)?;
        t.finish()?;
    }
    tx.commit().map_err(redb::Error::from)?;
    Ok(results)
}

fn read_applied(db: &Database) -> Result<(Option<LogId>, StoredMembership), ApplyError> {
    let tx = db.begin_write().map_err(redb::Error::from)?;
    let (applied, membership) = {
        let t = Tx::new(&tx);
        let applied: Option<Option<LogId>> = t.get(META, META_LAST_APPLIED)?;
        let membership: Option<StoredMembership> = t.get(META, META_MEMBERSHIP)?;
        (applied.flatten(), membership.unwrap_or_default())
    };
    tx.abort().map_err(redb::Error::from)?;
    Ok((applied, membership))
}

async fn blocking<T: Send + 'static>(
    verb: ErrorVerb,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(sm_err(verb, e)),
        Err(e) => Err(sm_err(verb, e)),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = self.shared.db();
        blocking(ErrorVerb::Read, move || {
            read_applied(&db).map_err(|e| e.to_string())
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.shared.db();
        let mut cache = std::mem::take(&mut self.cache);
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        if durable {
            self.last_durable = std::time::Instant::now();
        }
        let started = std::time::Instant::now();
        let n = entries.len();
        let commands: usize = entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(batch) => batch.commands.len(),
                _ => 0,
            })
            .sum();
        let (cache, result) = tokio::task::spawn_blocking(move || {
            let r = apply_entries(&db, &mut cache, entries, durable);
            (cache, r)
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        // After the commit: the writeback thread syncs what it wrote.
        self.shared.note_unsynced();
        self.cache = cache;
        if commands > 0 {
            crate::stage_timing::record(
                crate::stage_timing::Stage::Apply,
                started.elapsed(),
                commands,
            );
        }
        tracing::debug!(
            entries = n,
            durable,
            took_us = started.elapsed().as_micros() as u64,
            "entries applied"
        );
        result.map_err(|e| {
            tracing::error!(error = %e, "applying entries failed; the node stops");
            sm_err(ErrorVerb::Write, e)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.shared.snapshot_dir().join(INCOMING_SNAPSHOT);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(path = %path.display(), "receiving a snapshot");
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        receive_into_incoming(
            &self.shared.snapshot_dir().join(INCOMING_SNAPSHOT),
            snapshot,
        )
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let shared = self.shared.clone();
        let meta2 = meta.clone();
        let cache = blocking(ErrorVerb::Write, move || {
            install(&shared, &meta2).map_err(|e| e.to_string())
        })
        .await?;
        self.cache = cache;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        current_snapshot(&self.shared).await
    }
}
