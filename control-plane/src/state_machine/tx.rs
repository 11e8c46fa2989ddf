//! The transaction and cache layer under every command: [`Tx`] (typed,
//! write-back access to the tables inside one redb write transaction),
//! [`ApplyCache`] (decoded state kept between transactions) and
//! [`ApplyError`] (a storage failure, never a rejection).
//!
//! Nothing here knows a command; the domain modules (`chains`, `pool`,
//! `links`, `customers`, `keys`, `members`) read and write through it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use geiger_protocol::Signer;
use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::tables::*;
use crate::key_encryption::KeyEncryptionKey;

/// A storage failure while applying: fatal for the node (Raft stops it),
/// never a rejection.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] crate::codec::CodecError),
    #[error("canonical JSON: {0}")]
    Canonical(#[from] geiger_protocol::canonical::CanonicalError),
    #[error("signing key: {0}")]
    KeyEncryption(#[from] crate::key_encryption::KekError),
    /// The cluster raised its feature level beyond this build: this
    /// replica cannot apply what follows and must be upgraded.
    #[error("the cluster raised its feature level to {wanted}; this build supports up to {supported}: upgrade this node to a build that supports level {wanted}")]
    FeatureLevel { wanted: u32, supported: u32 },
}

macro_rules! storage {
    ($e:expr) => {
        $e.map_err(|e| ApplyError::Storage(e.into()))
    };
}

type RawTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Typed access to the tables inside one write transaction.
///
/// Each table is opened once per transaction and kept open until
/// [`Tx::finish`]: a draw touches six tables, and opening one is a lookup in
/// redb's table directory plus a root update on close.
///
/// The small, hot tables ([`META`]: pool cursor, ledger sequence, clock;
/// [`DEVICES`]: per-device accounting) are read and rewritten by every draw.
/// Their values are kept in a write-back map for the transaction and
/// written once, by [`Tx::finish`], which must run before the commit.
pub struct Tx<'a> {
    pub tx: &'a WriteTransaction,
    open: RefCell<Vec<(String, RawTable<'a>)>>,
    /// (index in [`HOT_TABLES`], key) → value as it stands in this
    /// transaction (`None`: deleted); `dirty` marks entries to write back.
    hot: RefCell<HashMap<(usize, Vec<u8>), HotValue>>,
}

struct HotValue {
    value: Option<Vec<u8>>,
    dirty: bool,
}

/// The tables kept in the write-back map.
const HOT_TABLES: [Table; 2] = [META, DEVICES];

/// `table`'s index in [`HOT_TABLES`], compared by name (a
/// `TableDefinition` is only a typed name).
fn hot_table(table: Table) -> Option<usize> {
    HOT_TABLES.iter().position(|t| t.name() == table.name())
}

impl<'a> Tx<'a> {
    pub fn new(tx: &'a WriteTransaction) -> Self {
        Tx {
            tx,
            open: RefCell::new(Vec::new()),
            hot: RefCell::new(HashMap::new()),
        }
    }

    /// Writes the hot values back and closes every table. Call once, before
    /// committing; a `Tx` dropped without it loses its hot writes.
    pub fn finish(self) -> Result<(), ApplyError> {
        let hot = std::mem::take(&mut *self.hot.borrow_mut());
        for ((slot, key), v) in hot {
            if !v.dirty {
                continue;
            }
            self.with(HOT_TABLES[slot], |t| {
                if let Some(value) = &v.value {
                    storage!(t.insert(key.as_slice(), value.as_slice()))?;
                } else {
                    storage!(t.remove(key.as_slice()))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Runs `f` on `table`, opening it on first use. `f` must not call back
    /// into this `Tx`.
    fn with<R>(
        &self,
        table: Table,
        f: impl FnOnce(&mut RawTable<'a>) -> Result<R, ApplyError>,
    ) -> Result<R, ApplyError> {
        let mut open = self.open.borrow_mut();
        let name = table.name();
        let i = match open.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let t = storage!(self.tx.open_table(table))?;
                open.push((name.to_string(), t));
                open.len() - 1
            }
        };
        f(&mut open[i].1)
    }

    fn get_stored(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
        self.with(table, |t| {
            let v = storage!(t.get(key))?;
            Ok(v.map(|v| v.value().to_vec()))
        })
    }

    pub fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
        let Some(slot) = hot_table(table) else {
            return self.get_stored(table, key);
        };
        if let Some(v) = self.hot.borrow().get(&(slot, key.to_vec())) {
            return Ok(v.value.clone());
        }
        let value = self.get_stored(table, key)?;
        self.hot.borrow_mut().insert(
            (slot, key.to_vec()),
            HotValue {
                value: value.clone(),
                dirty: false,
            },
        );
        Ok(value)
    }

    /// Decodes the value in place. Trailing bytes are ignored, so `T`
    /// may be a prefix of the stored struct (see [`DrawPlace`]).
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, ApplyError> {
        if hot_table(table).is_some() {
            return match self.get_raw(table, key)? {
                Some(bytes) => Ok(Some(crate::codec::decode(&bytes)?)),
                None => Ok(None),
            };
        }
        self.with(table, |t| match storage!(t.get(key))? {
            Some(v) => Ok(Some(crate::codec::decode(v.value())?)),
            None => Ok(None),
        })
    }

    fn set_hot(&self, slot: usize, key: &[u8], value: Option<Vec<u8>>) {
        self.hot
            .borrow_mut()
            .insert((slot, key.to_vec()), HotValue { value, dirty: true });
    }

    pub fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), ApplyError> {
        if let Some(slot) = hot_table(table) {
            self.set_hot(slot, key, Some(value.to_vec()));
            return Ok(());
        }
        self.with(table, |t| {
            storage!(t.insert(key, value))?;
            Ok(())
        })
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<(), ApplyError> {
        self.put_raw(table, key, &crate::codec::encode(value)?)
    }

    /// Every entry of a (small, cold) table, decoded. Not for the hot
    /// tables, whose pending writes live in the write-back map.
    pub fn scan<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(Vec<u8>, T)>, ApplyError> {
        debug_assert!(hot_table(table).is_none());
        self.with(table, |t| {
            let mut out = Vec::new();
            for item in storage!(t.iter())? {
                let (k, v) = storage!(item)?;
                out.push((k.value().to_vec(), crate::codec::decode(v.value())?));
            }
            Ok(out)
        })
    }

    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), ApplyError> {
        if let Some(slot) = hot_table(table) {
            self.set_hot(slot, key, None);
            return Ok(());
        }
        self.with(table, |t| {
            storage!(t.remove(key))?;
            Ok(())
        })
    }
}

/// State kept in memory between transactions, so hot paths need not decode
/// it again for every command. Everything here is derived from the ledger
/// and rebuilt from it after a snapshot is installed.
#[derive(Default)]
pub struct ApplyCache {
    /// The signing key in force.
    pub signer: Option<Signer>,
    /// Opens sealed signing secrets (`None`: this node has no KEK).
    pub kek: Option<KeyEncryptionKey>,
    /// The pool chunk draws are reading from, decoded: one 4 KiB chunk
    /// serves dozens of draws. A pool sequence number names the same chunk
    /// on every replica forever (it comes from the committed log), so this
    /// can only go stale by the chunk being used up, which is checked.
    pool_head: Option<(u64, Arc<PoolChunk>)>,
}

impl ApplyCache {
    pub(super) fn new(signer: Option<Signer>, kek: Option<KeyEncryptionKey>) -> Self {
        ApplyCache {
            signer,
            kek,
            pool_head: None,
        }
    }

    /// The chunk at pool sequence `seq`, from memory when it is the head.
    pub(super) fn pool_chunk(
        &mut self,
        tx: &Tx<'_>,
        seq: u64,
    ) -> Result<Option<Arc<PoolChunk>>, ApplyError> {
        if let Some((cached, chunk)) = &self.pool_head {
            if *cached == seq {
                return Ok(Some(chunk.clone()));
            }
        }
        let Some(chunk) = tx.get::<PoolChunk>(POOL, &u64_key(seq))? else {
            return Ok(None);
        };
        let chunk = Arc::new(chunk);
        self.pool_head = Some((seq, chunk.clone()));
        Ok(Some(chunk))
    }
}
