//! Local reads of the state machine: what this replica has applied.
//! Each read uses one redb read transaction, so it sees one consistent state.

use std::collections::BTreeMap;

use geiger_protocol::record::format_timestamp;
use geiger_protocol::{KeyInfo, KeySet, Signer};
use redb::{Database, ReadTransaction, ReadableTable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::tables::*;
use crate::types::{Lease, LogId, Member, NodeId};

/// A read failed in storage (never "not found": that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct ReadError(String);

impl ReadError {
    pub(crate) fn new(e: impl std::fmt::Display) -> Self {
        ReadError(e.to_string())
    }
}

fn err(e: impl std::fmt::Display) -> ReadError {
    ReadError(e.to_string())
}

pub(crate) fn get<T: DeserializeOwned>(
    tx: &ReadTransaction,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, ReadError> {
    let t = tx.open_table(table).map_err(err)?;
    let v = t.get(key).map_err(err)?;
    match v {
        Some(v) => crate::codec::decode(v.value()).map(Some).map_err(err),
        None => Ok(None),
    }
}

/// A chain as stored: its genesis 201 body and where it stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub id: String,
    pub customer: String,
    pub tag: String,
    /// The exact 201 body of `POST /v1/chains`.
    pub response: Vec<u8>,
    /// Number of draws so far (the position of the newest).
    pub length: u64,
    /// The ID to name as `previous` for the next draw.
    pub head: String,
}

/// Pool accounting for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePool {
    pub device: String,
    pub pooled_bytes: u64,
    pub used_bytes: u64,
    pub appended_chunks: u64,
    pub quarantined_chunks: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

pub fn draw(db: &Database, id: &str) -> Result<Option<StoredDraw>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    get(&tx, DRAWS, id.as_bytes())
}

pub fn chain(db: &Database, id: &str) -> Result<Option<ChainInfo>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let Some(meta) = get::<ChainMeta>(&tx, CHAINS, id.as_bytes())? else {
        return Ok(None);
    };
    let Some(head) = get::<ChainHead>(&tx, CHAIN_HEADS, id.as_bytes())? else {
        return Err(err(format!("chain {id} has no head record")));
    };
    Ok(Some(ChainInfo {
        id: id.to_string(),
        customer: meta.customer,
        tag: meta.tag,
        response: meta.response,
        length: head.last_position,
        head: head.head,
    }))
}

/// A customer's chains created after ledger index `after`, at most `limit`,
/// in creation order, as (ledger index, chain id).
pub fn customer_chains(
    db: &Database,
    customer: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, String)>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let index = tx.open_table(CUSTOMER_CHAINS).map_err(err)?;
    let from = customer_chain_key(customer, after.saturating_add(1));
    let to = customer_chain_key(customer, u64::MAX);
    let mut out = Vec::new();
    for item in index.range(from.as_slice()..=to.as_slice()).map_err(err)? {
        if out.len() >= limit {
            break;
        }
        let (key, id) = item.map_err(err)?;
        let key = key.value();
        let index_bytes: [u8; 8] = key[key.len() - 8..].try_into().map_err(err)?;
        out.push((
            u64::from_be_bytes(index_bytes),
            String::from_utf8_lossy(id.value()).into_owned(),
        ));
    }
    Ok(out)
}

/// Draws of `chain` at positions after `after`, at most `limit`, in order.
pub fn chain_draws(
    db: &Database,
    chain: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredDraw>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let index = tx.open_table(CHAIN_DRAWS).map_err(err)?;
    let from = chain_draw_key(chain, after.saturating_add(1));
    let to = chain_draw_key(chain, u64::MAX);
    let mut out = Vec::new();
    for item in index.range(from.as_slice()..=to.as_slice()).map_err(err)? {
        if out.len() >= limit {
            break;
        }
        let (_, id) = item.map_err(err)?;
        if let Some(d) = get::<StoredDraw>(&tx, DRAWS, id.value())? {
            out.push(d);
        }
    }
    Ok(out)
}

pub fn customer_by_key_hash(
    db: &Database,
    key_sha256: &[u8; 32],
) -> Result<Option<Customer>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let id = {
        let t = tx.open_table(CUSTOMER_KEYS).map_err(err)?;
        let v = t.get(key_sha256.as_slice()).map_err(err)?;
        match v {
            Some(v) => v.value().to_vec(),
            None => return Ok(None),
        }
    };
    get(&tx, CUSTOMERS, &id)
}

pub fn customer(db: &Database, id: &str) -> Result<Option<Customer>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    get(&tx, CUSTOMERS, id.as_bytes())
}

/// Every signing key, public half only, oldest first.
pub fn keys(db: &Database) -> Result<KeySet, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let mut keys = Vec::new();
    // Keys from before the key-encryption key (until the next rotation
    // moves them).
    for item in tx.open_table(KEYS).map_err(err)?.iter().map_err(err)? {
        let (_, v) = item.map_err(err)?;
        let k: StoredKey = crate::codec::decode(v.value()).map_err(err)?;
        let info = Signer::from_secret(k.secret).key_info(
            format_timestamp(k.valid_from_ms),
            k.valid_until_ms.map(format_timestamp),
        );
        keys.push((k.valid_from_ms, info));
    }
    for item in tx
        .open_table(SIGNING_KEYS)
        .map_err(err)?
        .iter()
        .map_err(err)?
    {
        let (_, v) = item.map_err(err)?;
        let k: KeyRecord = crate::codec::decode(v.value()).map_err(err)?;
        let public = ed25519_dalek::VerifyingKey::from_bytes(&k.public_key).map_err(err)?;
        let info = KeyInfo::for_public_key(
            &public,
            format_timestamp(k.valid_from_ms),
            k.valid_until_ms.map(format_timestamp),
        );
        keys.push((k.valid_from_ms, info));
    }
    keys.sort_by(|a, b| (a.0, &a.1.key_id).cmp(&(b.0, &b.1.key_id)));
    Ok(KeySet {
        keys: keys.into_iter().map(|(_, k)| k).collect(),
        devices: Vec::new(),
    })
}

pub fn pool(db: &Database) -> Result<(PoolState, Vec<DevicePool>), ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let state: PoolState = get(&tx, META, META_POOL)?.unwrap_or_default();
    let t = tx.open_table(DEVICES).map_err(err)?;
    let mut devices = Vec::new();
    for item in t.iter().map_err(err)? {
        let (k, v) = item.map_err(err)?;
        let d: DeviceState = crate::codec::decode(v.value()).map_err(err)?;
        devices.push(DevicePool {
            device: String::from_utf8_lossy(k.value()).into_owned(),
            pooled_bytes: d.pooled_bytes,
            used_bytes: d.used_bytes,
            appended_chunks: d.appended_chunks,
            quarantined_chunks: d.quarantined_chunks,
            first_seq: d.first_seq,
            last_seq: d.last_seq,
        });
    }
    Ok((state, devices))
}

pub fn leases(db: &Database) -> Result<Vec<Lease>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(LEASES).map_err(err)?;
    let mut out = Vec::new();
    for item in t.iter().map_err(err)? {
        let (_, v) = item.map_err(err)?;
        out.push(crate::codec::decode(v.value()).map_err(err)?);
    }
    Ok(out)
}

pub fn members(db: &Database) -> Result<BTreeMap<NodeId, Member>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(MEMBERS).map_err(err)?;
    let mut out = BTreeMap::new();
    for item in t.iter().map_err(err)? {
        let (k, v) = item.map_err(err)?;
        let id: [u8; 8] = k.value().try_into().map_err(err)?;
        out.insert(
            u64::from_be_bytes(id),
            crate::codec::decode(v.value()).map_err(err)?,
        );
    }
    Ok(out)
}

pub fn last_applied(db: &Database) -> Result<Option<LogId>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    Ok(get::<Option<LogId>>(&tx, META, META_LAST_APPLIED)?.flatten())
}

pub fn current_key_id(db: &Database) -> Result<Option<String>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(META).map_err(err)?;
    let v = t.get(META_CURRENT_KEY).map_err(err)?;
    Ok(v.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}
