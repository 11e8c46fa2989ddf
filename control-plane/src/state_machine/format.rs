//! Which encoding `state.redb` holds, and the one-time migration that
//! re-encodes a database written by a version before it.
//!
//! The format is a marker in the `meta` table ([`META_FORMAT`], raw bytes,
//! so it reads the same in any format). A database without it was written
//! in the legacy format (`crate::codec::Codec::Legacy`). Every path that
//! opens a state database comes through [`ensure_current`]: the node at
//! start, a snapshot being installed (a snapshot taken by an older member
//! carries no marker) and `geiger restore` loading an older backup. So
//! everything past this module reads and writes the current format only.
//!
//! Neither format describes itself, so the migration must know every
//! value's type: [`kind_of`] names it for each table and `meta` key, and
//! refuses to guess (an unknown table or key stops the node rather than
//! leave a value it cannot read).

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::links::registry::Link;
use super::pool::ChunkProvenance;
use super::tables::*;
use crate::codec::{Codec, CodecError};
use crate::feature_level::FeatureLevel;
use crate::types::{Lease, LogId, Member, StoredMembership};

/// `meta` key of the format marker.
pub const META_FORMAT: &[u8] = b"format";
/// The marker of the current format.
pub const CURRENT: &[u8] = b"postcard-1";
/// Values re-encoded per read of a table during the migration: bounds the
/// memory it holds besides redb's own pages.
const BATCH: usize = 10_000;

/// Why a state database cannot be brought to the current format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("the database is in format {0:?}, which this version does not know (written by a newer geiger?)")]
    Unknown(String),
    #[error("the state database has a table `{0}` this version does not know")]
    UnknownTable(String),
    #[error("table `meta` holds a key {0:?} this version does not know")]
    UnknownMetaKey(String),
    #[error("the ledger is at cluster feature level {found}, above the {supported} this build supports (it was written by a newer geiger): run a build that supports level {found}")]
    FeatureLevel { found: u32, supported: u32 },
    #[error("table `{table}`, key {key}: {source}")]
    Value {
        table: String,
        key: String,
        source: CodecError,
    },
}

macro_rules! storage {
    ($e:expr) => {
        $e.map_err(|e| FormatError::Storage(e.into()))
    };
}

/// What [`ensure_current`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// Already in the current format.
    Current,
    /// An empty database: marked, nothing to convert.
    Created,
    /// A legacy database, re-encoded: this many values.
    FromLegacy { values: u64 },
}

/// Re-encodes one value of a known type from one format to another.
pub type Convert = fn(&[u8], Codec, Codec) -> Result<Vec<u8>, CodecError>;

/// How the values of one table (or one `meta` key) are encoded.
#[derive(Clone, Copy)]
pub enum ValueKind {
    /// Raw bytes: the same in every format.
    Raw,
    /// A serde value of one type: converts between formats.
    Typed(Convert),
}

/// Re-encodes a `T` from `from` to `to` (a [`Convert`]).
pub(crate) fn typed<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    from: Codec,
    to: Codec,
) -> Result<Vec<u8>, CodecError> {
    to.encode(&from.decode::<T>(bytes)?)
}

/// The kind of value `table` holds under `key`.
pub fn kind_of(table: &str, key: &[u8]) -> Result<ValueKind, FormatError> {
    use ValueKind::{Raw, Typed};
    let kind = match table {
        "meta" => match key {
            META_LAST_APPLIED => Typed(typed::<Option<LogId>>),
            META_MEMBERSHIP => Typed(typed::<StoredMembership>),
            META_POOL => Typed(typed::<PoolState>),
            META_LEDGER_SEQ | super::META_CLOCK => Typed(typed::<u64>),
            META_FEATURE_LEVEL => Typed(typed::<u32>),
            META_CURRENT_KEY | META_FORMAT => Raw,
            other => {
                return Err(FormatError::UnknownMetaKey(
                    String::from_utf8_lossy(other).into_owned(),
                ))
            }
        },
        "customers" => Typed(typed::<Customer>),
        "customer_keys" | "chain_draws" | "customer_chains" | "chain_requests" => Raw,
        "chains" => Typed(typed::<ChainMeta>),
        "chain_heads" => Typed(typed::<ChainHead>),
        "draws" => Typed(typed::<StoredDraw>),
        "pool" => Typed(typed::<PoolChunk>),
        "devices" => Typed(typed::<DeviceState>),
        "quarantine" => Typed(typed::<QuarantinedChunk>),
        "leases" => Typed(typed::<Lease>),
        "members" => Typed(typed::<Member>),
        "keys" => Typed(typed::<StoredKey>),
        "signing_keys" => Typed(typed::<KeyRecord>),
        "links" => Typed(typed::<Link>),
        "skipped" => Typed(typed::<u64>),
        "provenance" => Typed(typed::<ChunkProvenance>),
        "exhausted_chunks" => Typed(typed::<ExhaustedChunk>),
        "removed_links" => Typed(typed::<RemovedLink>),
        other => return Err(FormatError::UnknownTable(other.to_string())),
    };
    Ok(kind)
}

/// Converts one stored value between formats.
pub fn convert(
    table: &str,
    key: &[u8],
    value: &[u8],
    from: Codec,
    to: Codec,
) -> Result<Vec<u8>, FormatError> {
    match kind_of(table, key)? {
        ValueKind::Raw => Ok(value.to_vec()),
        ValueKind::Typed(f) => f(value, from, to).map_err(|source| FormatError::Value {
            table: table.to_string(),
            key: hex::encode(key),
            source,
        }),
    }
}

/// Reads a format marker: `true` for the current format, `false` for none
/// (format 1, to migrate), an error for a format this version does not
/// know. Shared with the Raft log's migration (`crate::log_store`).
pub(crate) fn is_current(marker: Option<&[u8]>) -> Result<bool, FormatError> {
    match marker {
        Some(CURRENT) => Ok(true),
        Some(other) => Err(FormatError::Unknown(
            String::from_utf8_lossy(other).into_owned(),
        )),
        None => Ok(false),
    }
}

/// Brings `db` to the current format, in one durable write transaction: a
/// crash part-way leaves the legacy database whole, and the next start
/// migrates it again.
pub fn ensure_current(db: &Database) -> Result<Migration, FormatError> {
    let mut tx = storage!(db.begin_write())?;
    tx.set_durability(Durability::Immediate);
    let marker = {
        let meta = storage!(tx.open_table(META))?;
        let v = storage!(meta.get(META_FORMAT))?;
        v.map(|v| v.value().to_vec())
    };
    if is_current(marker.as_deref())? {
        let level = {
            let meta = storage!(tx.open_table(META))?;
            let v = storage!(meta.get(META_FEATURE_LEVEL))?;
            v.map(|v| crate::codec::decode::<u32>(v.value()))
                .transpose()
                .map_err(|source| FormatError::Value {
                    table: "meta".into(),
                    key: hex::encode(META_FEATURE_LEVEL),
                    source,
                })?
        };
        storage!(tx.abort())?;
        // A database a newer build wrote under rules this one does not
        // know: reading it would be guessing, applying to it would diverge.
        if let Some(level) = level.filter(|l| *l > FeatureLevel::SUPPORTED.0) {
            return Err(FormatError::FeatureLevel {
                found: level,
                supported: FeatureLevel::SUPPORTED.0,
            });
        }
        return Ok(Migration::Current);
    }
    let mut values = 0u64;
    for (_, def) in ALL {
        let mut table = storage!(tx.open_table(def))?;
        if storage!(table.len())? == 0 {
            continue;
        }
        // Re-encoded a batch at a time: a table cannot be written while
        // it is being iterated.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch: Vec<(Vec<u8>, Vec<u8>)> = {
                let range = match &after {
                    None => storage!(table.range::<&[u8]>(..))?,
                    Some(k) => storage!(table.range::<&[u8]>((
                        std::ops::Bound::Excluded(k.as_slice()),
                        std::ops::Bound::Unbounded
                    )))?,
                };
                let mut batch = Vec::new();
                for item in range.take(BATCH) {
                    let (k, v) = storage!(item)?;
                    batch.push((k.value().to_vec(), v.value().to_vec()));
                }
                batch
            };
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in &batch {
                let new = convert(def.name(), k, v, Codec::Legacy, Codec::Postcard)?;
                storage!(table.insert(k.as_slice(), new.as_slice()))?;
                values += 1;
            }
        }
    }
    storage!(storage!(tx.open_table(META))?.insert(META_FORMAT, CURRENT))?;
    storage!(tx.commit())?;
    if values == 0 {
        Ok(Migration::Created)
    } else {
        tracing::info!(
            values,
            "state database re-encoded from the legacy format (bincode) to postcard"
        );
        Ok(Migration::FromLegacy { values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_known_kind_of_value() {
        for (_, def) in ALL {
            let key: &[u8] = if def.name() == "meta" {
                META_POOL
            } else {
                b"k"
            };
            assert!(kind_of(def.name(), key).is_ok(), "{}", def.name());
        }
        assert!(matches!(
            kind_of("meta", b"no_such_key"),
            Err(FormatError::UnknownMetaKey(_))
        ));
        assert!(kind_of("meta", META_FEATURE_LEVEL).is_ok());
        assert!(matches!(
            kind_of("no_such_table", b"k"),
            Err(FormatError::UnknownTable(_))
        ));
    }
}

#[cfg(test)]
mod feature_level_tests {
    use super::*;

    fn database_at_level(level: u32) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        assert_eq!(ensure_current(&db).unwrap(), Migration::Created);
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(
                META_FEATURE_LEVEL,
                crate::codec::encode(&level).unwrap().as_slice(),
            )
            .unwrap();
        tx.commit().unwrap();
        (dir, db)
    }

    #[test]
    fn a_ledger_above_this_builds_feature_level_is_refused_with_the_level_it_needs() {
        let beyond = FeatureLevel::SUPPORTED.0 + 1;
        let (_dir, db) = database_at_level(beyond);
        let err = ensure_current(&db).unwrap_err();
        assert!(matches!(err, FormatError::FeatureLevel { found, .. } if found == beyond));
        assert!(err.to_string().contains("newer geiger"), "{err}");
    }

    #[test]
    fn a_ledger_at_this_builds_feature_level_opens() {
        let (_dir, db) = database_at_level(FeatureLevel::SUPPORTED.0);
        assert_eq!(ensure_current(&db).unwrap(), Migration::Current);
    }
}
