//! Applying commands: the deterministic heart of the ledger.
//!
//! Each command is checked in full before its first write, so a rejected
//! command leaves no trace. Commands of one batch run in order inside one
//! redb write transaction and see each other's effects (that is how 50
//! concurrent draws on one `previous` resolve to exactly one winner).

use geiger_protocol::derive::min_entropy_bytes;
use geiger_protocol::record::format_timestamp;
use geiger_protocol::{
    derive, ChainBody, ChainType, DrawBody, DrawRequest, DrawType, EntropySegment, EntropyUse,
    RecordId, RecordKind, Signer, DERIVATION_V1,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::tables::*;
use crate::types::{Command, Lease, Member, NodeId, Outcome, Rejection};

/// Largest entropy chunk accepted in one command.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Longest device id, customer id, name or reason.
const MAX_NAME_BYTES: usize = 128;

/// A storage failure while applying: fatal for the node (Raft stops it),
/// never a rejection.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] bincode::Error),
    #[error("canonical JSON: {0}")]
    Canonical(#[from] geiger_protocol::canonical::CanonicalError),
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

    /// Decodes the value in place. bincode accepts trailing bytes, so `T`
    /// may be a prefix of the stored struct (see [`DrawPlace`]).
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, ApplyError> {
        if hot_table(table).is_some() {
            return match self.get_raw(table, key)? {
                Some(bytes) => Ok(Some(bincode::deserialize(&bytes)?)),
                None => Ok(None),
            };
        }
        self.with(table, |t| match storage!(t.get(key))? {
            Some(v) => Ok(Some(bincode::deserialize(v.value())?)),
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
        self.put_raw(table, key, &bincode::serialize(value)?)
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
    /// The pool chunk draws are reading from, decoded: one 4 KiB chunk
    /// serves dozens of draws. A pool sequence number names the same chunk
    /// on every replica forever (it comes from the committed log), so this
    /// can only go stale by the chunk being used up, which is checked.
    pool_head: Option<(u64, Arc<PoolChunk>)>,
}

impl ApplyCache {
    pub fn load(tx: &Tx<'_>) -> Result<Self, ApplyError> {
        let Some(key_id) = tx.get_raw(META, META_CURRENT_KEY)? else {
            return Ok(ApplyCache::default());
        };
        let key: Option<StoredKey> = tx.get(KEYS, &key_id)?;
        Ok(ApplyCache {
            signer: key.map(|k| Signer::from_secret(k.secret)),
            pool_head: None,
        })
    }

    /// The chunk at pool sequence `seq`, from memory when it is the head.
    fn pool_chunk(&mut self, tx: &Tx<'_>, seq: u64) -> Result<Option<Arc<PoolChunk>>, ApplyError> {
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

/// The context every command of one entry shares.
pub struct Applier<'a, 'b> {
    pub tx: &'a Tx<'b>,
    pub cache: &'a mut ApplyCache,
    /// The leader's clock for this batch.
    pub at_ms: u64,
}

type Applied = Result<Outcome, Rejection>;

pub(super) fn check_name(what: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(Rejection::Invalid(format!(
            "`{what}` must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl Applier<'_, '_> {
    /// Applies one command. `Err` is a storage failure; a rejected command is
    /// `Ok(Outcome::Rejected(_))`.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, ApplyError> {
        let result = match command {
            Command::CreateCustomer {
                id,
                name,
                key_sha256,
            } => self.create_customer(id, name, key_sha256)?,
            Command::CreateChain { customer, tag } => self.create_chain(customer, tag, None)?,
            Command::CreateChainOnce {
                customer,
                tag,
                request_id,
            } => self.create_chain(customer, tag, Some(request_id))?,
            Command::Draw { customer, request } => self.draw(customer, request)?,
            Command::AppendEntropy {
                device,
                epoch,
                seq,
                bytes,
            } => self.append_entropy(device, *epoch, *seq, bytes)?,
            Command::QuarantineChunk {
                device,
                epoch,
                seq,
                length,
                sha256,
                reason,
            } => self.quarantine(device, *epoch, *seq, *length, sha256, reason)?,
            Command::AssignLease {
                device,
                owner,
                expected_epoch,
                duration_ms,
            } => self.assign_lease(device, *owner, *expected_epoch, *duration_ms)?,
            Command::RenewLease {
                device,
                owner,
                epoch,
                duration_ms,
            } => self.renew_lease(device, *owner, *epoch, *duration_ms)?,
            Command::SetMemberLabels { node, member } => self.set_member_labels(*node, member)?,
            Command::RotateKey { secret } => self.rotate_key(secret)?,
            Command::RegisterLink {
                device,
                address,
                public_key,
            } => self.register_link(device, address, public_key)?,
            Command::RemoveLink { device } => self.remove_link(device)?,
            Command::SkipChunks {
                device,
                epoch,
                from,
                to,
            } => self.skip_chunks(device, *epoch, *from, *to)?,
            Command::AppendSignedEntropy {
                device,
                epoch,
                seq,
                timestamp_ms,
                signature,
                bytes,
            } => self.append_signed(device, *epoch, *seq, *timestamp_ms, signature, bytes)?,
        };
        Ok(match result {
            Ok(outcome) => outcome,
            Err(rejection) => {
                tracing::debug!(command = command.kind(), %rejection, "command rejected");
                Outcome::Rejected(rejection)
            }
        })
    }

    /// The next ledger sequence number. One Raft entry holds many commands,
    /// so records carry this per-command number as their `ledger_index`.
    fn next_ledger_index(&self) -> Result<u64, ApplyError> {
        let n = self.tx.get::<u64>(META, META_LEDGER_SEQ)?.unwrap_or(0) + 1;
        self.tx.put(META, META_LEDGER_SEQ, &n)?;
        Ok(n)
    }

    fn create_customer(
        &mut self,
        id: &str,
        name: &str,
        key_sha256: &[u8; 32],
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("id", id).and_then(|_| check_name("name", name)) {
            return Ok(Err(r));
        }
        if self.tx.get_raw(CUSTOMERS, id.as_bytes())?.is_some() {
            return Ok(Err(Rejection::AlreadyExists(format!("customer {id}"))));
        }
        if self.tx.get_raw(CUSTOMER_KEYS, key_sha256)?.is_some() {
            return Ok(Err(Rejection::AlreadyExists("that API key".into())));
        }
        let customer = Customer {
            id: id.to_string(),
            name: name.to_string(),
            key_sha256: *key_sha256,
            created_at_ms: self.at_ms,
        };
        self.tx.put(CUSTOMERS, id.as_bytes(), &customer)?;
        self.tx.put_raw(CUSTOMER_KEYS, key_sha256, id.as_bytes())?;
        tracing::info!(customer = id, "customer created");
        Ok(Ok(Outcome::CustomerCreated { id: id.to_string() }))
    }

    fn create_chain(
        &mut self,
        customer: &str,
        tag: &str,
        request_id: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        if let Err(e) = geiger_protocol::api::validate_tag(tag) {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        if let Some(Err(e)) = request_id.map(geiger_protocol::api::validate_request_id) {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        if self.tx.get_raw(CUSTOMERS, customer.as_bytes())?.is_none() {
            return Ok(Err(Rejection::NotFound(format!("customer {customer}"))));
        }
        let request_key = request_id.map(|r| chain_request_key(customer, r));
        if let Some(key) = &request_key {
            if let Some(chain) = self.tx.get_raw(CHAIN_REQUESTS, key)? {
                let id = std::str::from_utf8(&chain)
                    .ok()
                    .and_then(|s| s.parse().ok());
                let meta = self.tx.get::<ChainMeta>(CHAINS, &chain)?;
                let Some((id, meta)) = id.zip(meta) else {
                    return Ok(Err(Rejection::Invalid(
                        "corrupt chain request index".into(),
                    )));
                };
                return Ok(Ok(Outcome::Replayed {
                    id,
                    response: meta.response,
                }));
            }
        }
        let Some(signer) = self.cache.signer.clone() else {
            return Ok(Err(Rejection::NoSigningKey));
        };
        let ledger_index = self.next_ledger_index()?;
        let sealed = signer.seal_chain(ChainBody {
            record_type: ChainType::Chain,
            customer: customer.to_string(),
            tag: tag.to_string(),
            created_at: format_timestamp(self.at_ms),
            ledger_index,
            key_id: String::new(),
        })?;
        let response = sealed.to_canonical_vec()?;
        let id = sealed.id.to_string();
        self.tx.put(
            CHAINS,
            id.as_bytes(),
            &ChainMeta {
                customer: customer.to_string(),
                tag: tag.to_string(),
                response: response.clone(),
            },
        )?;
        self.tx.put(
            CHAIN_HEADS,
            id.as_bytes(),
            &ChainHead {
                customer: customer.to_string(),
                last_position: 0,
                head: id.clone(),
            },
        )?;
        self.tx.put_raw(
            CUSTOMER_CHAINS,
            &customer_chain_key(customer, ledger_index),
            id.as_bytes(),
        )?;
        if let Some(key) = &request_key {
            self.tx.put_raw(CHAIN_REQUESTS, key, id.as_bytes())?;
        }
        tracing::debug!(chain = %id, customer, "chain created");
        Ok(Ok(Outcome::ChainCreated {
            id: sealed.id,
            response,
        }))
    }

    fn draw(&mut self, customer: &str, request_bytes: &[u8]) -> Result<Applied, ApplyError> {
        let request: DrawRequest = match serde_json::from_slice(request_bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Err(Rejection::Invalid(format!("not a draw request: {e}")))),
        };
        if let Err(e) = request.validate() {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        let previous = request.previous.to_string();
        // Where does `previous` sit, and whose chain is it?
        let (chain_id, previous_position) = match request.previous.kind() {
            RecordKind::Chain => (previous.clone(), 0),
            RecordKind::Draw => match self.tx.get::<DrawPlace>(DRAWS, previous.as_bytes())? {
                Some(d) => (d.chain, d.position),
                None => return Ok(Err(Rejection::NotFound(format!("previous {previous}")))),
            },
        };
        let Some(mut chain) = self.tx.get::<ChainHead>(CHAIN_HEADS, chain_id.as_bytes())? else {
            return Ok(Err(Rejection::NotFound(format!("previous {previous}"))));
        };
        // Ownership before the successor check, so a stranger learns nothing
        // about another customer's chain.
        if chain.customer != customer {
            return Ok(Err(Rejection::Forbidden(format!(
                "chain {chain_id} belongs to another customer"
            ))));
        }
        // A chain is a line: `previous` is free exactly when it is the head;
        // otherwise its successor is the draw one position further on.
        if chain.last_position > previous_position {
            let key = chain_draw_key(&chain_id, previous_position + 1);
            let Some(successor) = self.tx.get_raw(CHAIN_DRAWS, &key)? else {
                return Ok(Err(Rejection::Invalid("corrupt chain index".into())));
            };
            let existing: RecordId = match std::str::from_utf8(&successor)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(id) => id,
                None => return Ok(Err(Rejection::Invalid("corrupt chain index".into()))),
            };
            if request.request_id.is_some() {
                if let Some(d) = self.tx.get::<StoredDraw>(DRAWS, &successor)? {
                    if d.request_id == request.request_id {
                        return Ok(Ok(Outcome::Replayed {
                            id: existing,
                            response: d.response,
                        }));
                    }
                }
            }
            return Ok(Ok(Outcome::PreviousAlreadyUsed { existing }));
        }
        let position = previous_position + 1;
        let Some(signer) = self.cache.signer.clone() else {
            return Ok(Err(Rejection::NoSigningKey));
        };
        let (derived, taken, read) = match self.take_entropy(&request.spec)? {
            Ok(x) => x,
            Err(r) => return Ok(Err(r)),
        };
        // Everything is checked: from here on, only writes.
        let ledger_index = self.next_ledger_index()?;
        let entropy = self.consume(&taken, &read[..derived.consumed])?;
        let (sealed, response) = signer.seal_draw_to_vec(DrawBody {
            record_type: DrawType::Draw,
            chain: chain_id.parse().map_err(|_| {
                ApplyError::Storage(redb::Error::Corrupted(format!("bad chain id {chain_id}")))
            })?,
            position,
            previous: request.previous,
            tag: request.tag.clone(),
            customer: customer.to_string(),
            request_id: request.request_id.clone(),
            spec: request.spec.clone(),
            result: derived.result,
            issued_at: format_timestamp(self.at_ms),
            ledger_index,
            entropy,
            derivation: DERIVATION_V1.to_string(),
            key_id: String::new(),
        })?;
        let id = sealed.draw.id.to_string();
        self.tx.put(
            DRAWS,
            id.as_bytes(),
            &StoredDraw {
                id: id.clone(),
                chain: chain_id.clone(),
                position,
                request_id: request.request_id.clone(),
                request: request_bytes.to_vec(),
                response: response.clone(),
            },
        )?;
        self.tx.put_raw(
            CHAIN_DRAWS,
            &chain_draw_key(&chain_id, position),
            id.as_bytes(),
        )?;
        chain.last_position = position;
        chain.head = id;
        self.tx.put(CHAIN_HEADS, chain_id.as_bytes(), &chain)?;
        Ok(Ok(Outcome::Drawn {
            id: sealed.draw.id,
            response,
        }))
    }

    /// Reads (without consuming) enough pool bytes to derive `spec`.
    /// Returns the derivation and the pieces read, in pool order.
    #[allow(clippy::type_complexity)]
    fn take_entropy(
        &mut self,
        spec: &geiger_protocol::Spec,
    ) -> Result<Result<(geiger_protocol::Derived, Vec<Piece>, Vec<u8>), Rejection>, ApplyError>
    {
        let pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        let mut need = min_entropy_bytes(spec) as u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut cursor = (pool.head, pool.head_offset);
        loop {
            let want = need.min(pool.bytes);
            while (buf.len() as u64) < want {
                let Some(chunk) = self.cache.pool_chunk(self.tx, cursor.0)? else {
                    // The cursor says the bytes exist; if not, refuse rather than guess.
                    return Ok(Err(Rejection::EntropyExhausted {
                        available: pool.bytes,
                    }));
                };
                let start = cursor.1 as usize;
                let avail = chunk.bytes.len().saturating_sub(start);
                let n = avail.min((want - buf.len() as u64) as usize);
                buf.extend_from_slice(&chunk.bytes[start..start + n]);
                pieces.push(Piece {
                    pool_seq: cursor.0,
                    device: chunk.device.clone(),
                    chunk_seq: chunk.seq,
                    offset: cursor.1,
                    length: n as u32,
                    chunk_len: chunk.bytes.len() as u32,
                });
                if start + n >= chunk.bytes.len() {
                    cursor = (cursor.0 + 1, 0);
                } else {
                    cursor.1 += n as u32;
                }
            }
            match derive(spec, &buf) {
                Ok(d) => return Ok(Ok((d, pieces, buf))),
                Err(_) if want < need || need >= pool.bytes => {
                    return Ok(Err(Rejection::EntropyExhausted {
                        available: pool.bytes,
                    }))
                }
                // Rejection sampling wanted more words: extend and derive again.
                Err(_) => need = need + (need / 4).max(64),
            }
        }
    }

    /// Consumes `used` (the front of what `pieces` read) from the pool and
    /// returns the record of where those bytes came from.
    fn consume(&self, pieces: &[Piece], used: &[u8]) -> Result<EntropyUse, ApplyError> {
        let mut pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        let mut left = used.len() as u32;
        let mut segments = Vec::new();
        for piece in pieces {
            if left == 0 {
                break;
            }
            let n = piece.length.min(left);
            left -= n;
            segments.push(EntropySegment {
                device: piece.device.clone(),
                chunk_seq: piece.chunk_seq,
                offset: piece.offset,
                length: n,
            });
            let mut device: DeviceState = self
                .tx
                .get(DEVICES, piece.device.as_bytes())?
                .unwrap_or_default();
            device.pooled_bytes = device.pooled_bytes.saturating_sub(n as u64);
            device.used_bytes += n as u64;
            self.tx.put(DEVICES, piece.device.as_bytes(), &device)?;
            pool.bytes = pool.bytes.saturating_sub(n as u64);
            if piece.offset + n >= piece.chunk_len {
                // Fully used: the bytes live on inside the draws that used them.
                self.tx.delete(POOL, &u64_key(piece.pool_seq))?;
                pool.head = piece.pool_seq + 1;
                pool.head_offset = 0;
            } else {
                pool.head = piece.pool_seq;
                pool.head_offset = piece.offset + n;
            }
        }
        self.tx.put(META, META_POOL, &pool)?;
        Ok(EntropyUse::new(segments, used))
    }

    /// The lease check shared by append and quarantine.
    pub(super) fn check_lease(
        &self,
        device: &str,
        epoch: u64,
    ) -> Result<Result<(), Rejection>, ApplyError> {
        let Some(lease) = self.tx.get::<Lease>(LEASES, device.as_bytes())? else {
            return Ok(Err(Rejection::Forbidden(format!(
                "no lease for link {device}"
            ))));
        };
        if epoch != lease.epoch {
            return Ok(Err(Rejection::StaleEpoch {
                current: lease.epoch,
                got: epoch,
            }));
        }
        if self.at_ms > lease.expires_at_ms {
            return Ok(Err(Rejection::LeaseExpired(device.to_string())));
        }
        Ok(Ok(()))
    }

    pub(super) fn check_seq(
        &self,
        device: &str,
        seq: u64,
    ) -> Result<Result<DeviceState, Rejection>, ApplyError> {
        let state: DeviceState = self.tx.get(DEVICES, device.as_bytes())?.unwrap_or_default();
        if let Some(last) = state.last_seq {
            let expected = last.saturating_add(1);
            if seq != expected {
                return Ok(Err(Rejection::SequenceGap {
                    device: device.to_string(),
                    expected,
                    got: seq,
                }));
            }
        }
        Ok(Ok(state))
    }

    pub(super) fn append_entropy(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device) {
            return Ok(Err(r));
        }
        if bytes.is_empty() || bytes.len() > MAX_CHUNK_BYTES {
            return Ok(Err(Rejection::Invalid(format!(
                "a chunk holds 1 to {MAX_CHUNK_BYTES} bytes"
            ))));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, seq)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        let mut pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        self.tx.put(
            POOL,
            &u64_key(pool.next),
            &PoolChunk {
                device: device.to_string(),
                seq,
                bytes: bytes.to_vec(),
            },
        )?;
        pool.next += 1;
        pool.bytes += bytes.len() as u64;
        self.tx.put(META, META_POOL, &pool)?;
        state.first_seq.get_or_insert(seq);
        state.last_seq = Some(seq);
        state.pooled_bytes += bytes.len() as u64;
        state.appended_chunks += 1;
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        Ok(Ok(Outcome::EntropyAppended {
            pool_bytes: pool.bytes,
        }))
    }

    fn quarantine(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        length: u32,
        sha256: &[u8; 32],
        reason: &str,
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device).and_then(|_| check_name("reason", reason)) {
            return Ok(Err(r));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, seq)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        self.tx.put(
            QUARANTINE,
            &quarantine_key(device, seq),
            &QuarantinedChunk {
                length,
                sha256: *sha256,
                reason: reason.to_string(),
                at_ms: self.at_ms,
            },
        )?;
        state.first_seq.get_or_insert(seq);
        state.last_seq = Some(seq);
        state.quarantined_chunks += 1;
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        tracing::warn!(device, seq, reason, "entropy chunk quarantined");
        Ok(Ok(Outcome::ChunkQuarantined))
    }

    fn assign_lease(
        &mut self,
        device: &str,
        owner: NodeId,
        expected_epoch: Option<u64>,
        duration_ms: u64,
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device) {
            return Ok(Err(r));
        }
        let current = self.tx.get::<Lease>(LEASES, device.as_bytes())?;
        let current_epoch = current.as_ref().map_or(0, |l| l.epoch);
        if let Some(expected) = expected_epoch {
            if expected != current_epoch {
                return Ok(Err(Rejection::StaleEpoch {
                    current: current_epoch,
                    got: expected,
                }));
            }
        }
        let lease = Lease {
            device: device.to_string(),
            owner,
            epoch: current_epoch + 1,
            expires_at_ms: self.at_ms.saturating_add(duration_ms),
        };
        self.tx.put(LEASES, device.as_bytes(), &lease)?;
        tracing::info!(device, owner, epoch = lease.epoch, "link lease assigned");
        Ok(Ok(Outcome::Lease(lease)))
    }

    fn renew_lease(
        &mut self,
        device: &str,
        owner: NodeId,
        epoch: u64,
        duration_ms: u64,
    ) -> Result<Applied, ApplyError> {
        let Some(mut lease) = self.tx.get::<Lease>(LEASES, device.as_bytes())? else {
            return Ok(Err(Rejection::NotFound(format!("lease for link {device}"))));
        };
        if lease.epoch != epoch {
            return Ok(Err(Rejection::StaleEpoch {
                current: lease.epoch,
                got: epoch,
            }));
        }
        if lease.owner != owner {
            return Ok(Err(Rejection::Forbidden(format!(
                "link {device} is owned by node {}",
                lease.owner
            ))));
        }
        if self.at_ms > lease.expires_at_ms {
            return Ok(Err(Rejection::LeaseExpired(device.to_string())));
        }
        lease.expires_at_ms = self.at_ms.saturating_add(duration_ms);
        self.tx.put(LEASES, device.as_bytes(), &lease)?;
        Ok(Ok(Outcome::Lease(lease)))
    }

    fn set_member_labels(&mut self, node: NodeId, member: &Member) -> Result<Applied, ApplyError> {
        self.tx.put(MEMBERS, &u64_key(node), member)?;
        tracing::info!(node, %member, "member labels set");
        Ok(Ok(Outcome::Done))
    }

    fn rotate_key(&mut self, secret: &[u8; 32]) -> Result<Applied, ApplyError> {
        let signer = Signer::from_secret(*secret);
        let key_id = signer.key_id().to_string();
        if self.tx.get_raw(KEYS, key_id.as_bytes())?.is_some() {
            return Ok(Err(Rejection::AlreadyExists(format!("key {key_id}"))));
        }
        if let Some(old_id) = self.tx.get_raw(META, META_CURRENT_KEY)? {
            if let Some(mut old) = self.tx.get::<StoredKey>(KEYS, &old_id)? {
                old.valid_until_ms = Some(self.at_ms);
                self.tx.put(KEYS, &old_id, &old)?;
            }
        }
        self.tx.put(
            KEYS,
            key_id.as_bytes(),
            &StoredKey {
                secret: *secret,
                valid_from_ms: self.at_ms,
                valid_until_ms: None,
            },
        )?;
        self.tx.put_raw(META, META_CURRENT_KEY, key_id.as_bytes())?;
        self.cache.signer = Some(signer);
        tracing::info!(key_id, "signing key rotated");
        Ok(Ok(Outcome::KeyRotated { key_id }))
    }
}

/// Bytes read from one pool chunk.
#[derive(Debug, Clone)]
pub struct Piece {
    pool_seq: u64,
    device: String,
    chunk_seq: u64,
    offset: u32,
    length: u32,
    chunk_len: u32,
}

/// SHA-256 of an API key, as customers are looked up by.
pub fn api_key_hash(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}
