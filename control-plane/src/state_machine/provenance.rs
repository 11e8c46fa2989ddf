//! Provenance anyone can check ("reveal on exhaustion", docs/DERIVATION.md
//! §10): once every byte of a signed chunk is used by draws (or discarded),
//! no later draw can read from it, so its bytes are kept beside the
//! device's signature ([`EXHAUSTED`]) and served publicly; before that, no
//! byte of it is. Also the device keys chunks are checked against: the link
//! registry's current keys, and the keys of removed links ([`REMOVED_LINKS`]).
//!
//! Writes happen in apply, from ledger state only, so every replica holds
//! the same entries.

use redb::{Database, ReadableTable};

use super::dispatch::Applier;
use super::links::registry::Link;
use super::pool::{ChunkProvenance, Piece};
use super::reads::{get, ReadError};
use super::tables::*;
use super::tx::ApplyError;
use crate::feature_level::FeatureLevel;

impl Applier<'_, '_> {
    /// Keeps the bytes of a signed chunk that `piece` has just used up.
    /// Unsigned chunks (appended without provenance) have nothing to be
    /// checked against and are not kept. Call before the chunk leaves the
    /// pool.
    pub(super) fn reveal_exhausted(&self, piece: &Piece) -> Result<(), ApplyError> {
        // Kept from the entry that raised the cluster to this level on, so
        // that no replica keeps a chunk another (older build) does not.
        if self.level < FeatureLevel::REVEAL {
            return Ok(());
        }
        let key = device_seq_key(&piece.device, piece.chunk_seq);
        if self.tx.get_raw(PROVENANCE, &key)?.is_none() {
            return Ok(());
        }
        let Some(chunk) = self.tx.get::<PoolChunk>(POOL, &u64_key(piece.pool_seq))? else {
            return Ok(());
        };
        self.tx.put(
            EXHAUSTED,
            &key,
            &ExhaustedChunk {
                bytes: chunk.bytes,
                exhausted_at_ms: self.at_ms,
            },
        )
    }

    /// Keeps a link's public key when it is removed, so the chunks it signed
    /// stay checkable and the key stays published with its validity.
    pub(super) fn record_removed_link(&self, device: &str) -> Result<(), ApplyError> {
        if self.level < FeatureLevel::REVEAL {
            return Ok(());
        }
        let Some(link) = self.tx.get::<Link>(LINKS, device.as_bytes())? else {
            return Ok(());
        };
        self.tx.put(
            REMOVED_LINKS,
            &device_seq_key(device, link.registered_at_ms),
            &RemovedLink {
                public_key: link.public_key,
                registered_at_ms: link.registered_at_ms,
                removed_at_ms: self.at_ms,
            },
        )
    }
}

/// What anyone may learn of a chunk (`GET /v1/chunks/{device}/{seq}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReveal {
    /// Every byte used or discarded: its bytes and the device's signature.
    Exhausted {
        provenance: ChunkProvenance,
        bytes: Vec<u8>,
        /// The ledger's clock when it became exhausted.
        exhausted_at_ms: u64,
    },
    /// Signed and appended, but some of its bytes may still be drawn.
    NotExhausted,
    /// Signed and used up, but before the ledger kept the bytes of
    /// exhausted chunks (ledgers older than this module): gone for good.
    NotKept,
    /// No signed chunk with that sequence number in the ledger.
    Unknown,
}

/// Whether chunk `seq` of `device` is exhausted, and if so its bytes.
pub fn chunk_reveal(db: &Database, device: &str, seq: u64) -> Result<ChunkReveal, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    let key = device_seq_key(device, seq);
    let Some(provenance) = get::<ChunkProvenance>(&tx, PROVENANCE, &key)? else {
        return Ok(ChunkReveal::Unknown);
    };
    if let Some(chunk) = get::<ExhaustedChunk>(&tx, EXHAUSTED, &key)? {
        return Ok(ChunkReveal::Exhausted {
            provenance,
            bytes: chunk.bytes,
            exhausted_at_ms: chunk.exhausted_at_ms,
        });
    }
    Ok(if still_pooled(&tx, device, seq)? {
        ChunkReveal::NotExhausted
    } else {
        ChunkReveal::NotKept
    })
}

/// The first fields of a [`PoolChunk`], decoded without its bytes. Field
/// order must match [`PoolChunk`].
#[derive(serde::Deserialize)]
struct PoolPlace {
    device: String,
    seq: u64,
}

/// Whether chunk `seq` of `device` is still in the pool. A device's chunks
/// enter the FIFO pool in sequence order and leave it in the same order, so
/// its pooled chunks are the ones from its oldest pooled chunk on: found by
/// walking the pool from its head to the device's first entry (which
/// exists when the device has pooled bytes; devices' chunks interleave, so
/// the walk is short).
fn still_pooled(tx: &redb::ReadTransaction, device: &str, seq: u64) -> Result<bool, ReadError> {
    let state: DeviceState = get(tx, DEVICES, device.as_bytes())?.unwrap_or_default();
    if state.pooled_bytes == 0 {
        return Ok(false);
    }
    let pool = tx.open_table(POOL).map_err(ReadError::new)?;
    for item in pool.iter().map_err(ReadError::new)? {
        let (_, v) = item.map_err(ReadError::new)?;
        let place: PoolPlace = crate::codec::decode(v.value()).map_err(ReadError::new)?;
        if place.device == device {
            return Ok(place.seq <= seq);
        }
    }
    Ok(false)
}

/// A device public key and when it was registered (`valid_until`: when it
/// was removed; `None` while registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub device: String,
    pub public_key: [u8; 32],
    pub valid_from_ms: u64,
    pub valid_until_ms: Option<u64>,
}

/// Every device key the ledger knows: removed links (oldest first per
/// device), then the registered ones. Links removed before the ledger kept
/// [`REMOVED_LINKS`] are gone from it.
pub fn device_keys(db: &Database) -> Result<Vec<DeviceKey>, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    let mut out = Vec::new();
    let removed = tx.open_table(REMOVED_LINKS).map_err(ReadError::new)?;
    for item in removed.iter().map_err(ReadError::new)? {
        let (k, v) = item.map_err(ReadError::new)?;
        let r: RemovedLink = crate::codec::decode(v.value()).map_err(ReadError::new)?;
        let k = k.value();
        let device = String::from_utf8_lossy(&k[..k.len().saturating_sub(9)]).into_owned();
        out.push(DeviceKey {
            device,
            public_key: r.public_key,
            valid_from_ms: r.registered_at_ms,
            valid_until_ms: Some(r.removed_at_ms),
        });
    }
    let links = tx.open_table(LINKS).map_err(ReadError::new)?;
    for item in links.iter().map_err(ReadError::new)? {
        let (_, v) = item.map_err(ReadError::new)?;
        let l: Link = crate::codec::decode(v.value()).map_err(ReadError::new)?;
        out.push(DeviceKey {
            device: l.device,
            public_key: l.public_key,
            valid_from_ms: l.registered_at_ms,
            valid_until_ms: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::links::registry::device_id_of;
    use crate::state_machine::test_ledger::*;
    use crate::types::{Command, Outcome};
    use geiger_protocol::Derivation;

    fn signed(device: &str, seq: u64, bytes: Vec<u8>) -> Command {
        Command::AppendSignedEntropy {
            device: device.into(),
            epoch: 1,
            seq,
            timestamp_ms: 1000 + seq,
            signature: vec![seq as u8; 64],
            bytes,
        }
    }

    fn draw(customer: &str, previous: &str, count: u32) -> Command {
        let request = serde_json::json!({
            "previous": previous,
            "tag": "t",
            "spec": {"kind": "bytes", "count": count},
        });
        Command::DrawWith {
            customer: customer.into(),
            request: serde_json::to_vec(&request).unwrap(),
            derivation: Derivation::V2,
        }
    }

    fn id_of(outcome: Outcome) -> String {
        match outcome {
            Outcome::ChainCreated { id, .. } | Outcome::Drawn { id, .. } => id.to_string(),
            other => panic!("{other:?}"),
        }
    }

    /// A ledger with one registered, leased device that appended two signed
    /// 16-byte chunks, and a chain to draw on.
    fn ledger() -> (Ledger, String, String) {
        ledger_at(FeatureLevel::SUPPORTED)
    }

    fn ledger_at(level: FeatureLevel) -> (Ledger, String, String) {
        let mut l = Ledger::at_level(level);
        let dev = device_id_of(&KEY);
        l.apply(1, Command::RotateKey { secret: [3; 32] });
        l.apply(1, register(&dev));
        l.apply(1, lease(&dev, 0));
        for seq in 0..2 {
            let bytes = (0..16).map(|i| (seq * 16 + i) as u8).collect();
            assert!(matches!(
                l.apply(2, signed(&dev, seq, bytes)),
                Outcome::EntropyAppended { .. }
            ));
        }
        l.apply(
            3,
            Command::CreateCustomer {
                id: "cu_a".into(),
                name: "a".into(),
                key_sha256: [1; 32],
            },
        );
        let chain = id_of(l.apply(
            3,
            Command::CreateChain {
                customer: "cu_a".into(),
                tag: "t".into(),
            },
        ));
        (l, dev, chain)
    }

    #[test]
    fn a_chunk_is_revealed_exactly_when_its_last_byte_is_drawn_and_not_before() {
        let (mut l, dev, chain) = ledger();
        assert_eq!(
            chunk_reveal(&l.db, &dev, 0).unwrap(),
            ChunkReveal::NotExhausted
        );
        assert_eq!(chunk_reveal(&l.db, &dev, 7).unwrap(), ChunkReveal::Unknown);
        // 10 of chunk 0's 16 bytes: still secret.
        let first = id_of(l.apply(4, draw("cu_a", &chain, 10)));
        assert_eq!(
            chunk_reveal(&l.db, &dev, 0).unwrap(),
            ChunkReveal::NotExhausted
        );
        // The last 6 bytes of chunk 0 and 4 of chunk 1: chunk 0 is out.
        id_of(l.apply(5, draw("cu_a", &first, 10)));
        match chunk_reveal(&l.db, &dev, 0).unwrap() {
            ChunkReveal::Exhausted {
                provenance,
                bytes,
                exhausted_at_ms,
            } => {
                assert_eq!(bytes, (0..16).collect::<Vec<u8>>());
                assert_eq!(exhausted_at_ms, 5, "the clock of the draw that used it up");
                assert_eq!(provenance.timestamp_ms, 1000);
                assert_eq!(provenance.signature, vec![0; 64]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            chunk_reveal(&l.db, &dev, 1).unwrap(),
            ChunkReveal::NotExhausted
        );
    }

    #[test]
    fn a_chunk_used_up_before_the_ledger_kept_chunks_is_not_kept_rather_than_pending() {
        let (mut l, dev, chain) = ledger();
        id_of(l.apply(4, draw("cu_a", &chain, 20)));
        // As a ledger written before `exhausted_chunks` existed would be.
        let tx = l.db.begin_write().unwrap();
        tx.open_table(EXHAUSTED)
            .unwrap()
            .remove(device_seq_key(&dev, 0).as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(chunk_reveal(&l.db, &dev, 0).unwrap(), ChunkReveal::NotKept);
        assert_eq!(
            chunk_reveal(&l.db, &dev, 1).unwrap(),
            ChunkReveal::NotExhausted
        );
    }

    #[test]
    fn chunks_are_kept_from_the_entry_that_raises_the_cluster_to_the_reveal_level_and_not_before() {
        // A cluster with a member older than feature levels: no replica
        // keeps what that member would not.
        let (mut l, dev, chain) = ledger_at(FeatureLevel::BASE);
        let first = id_of(l.apply(4, draw("cu_a", &chain, 20)));
        assert_eq!(chunk_reveal(&l.db, &dev, 0).unwrap(), ChunkReveal::NotKept);
        assert_eq!(
            crate::state_machine::features::feature_level(&l.db).unwrap(),
            FeatureLevel::BASE
        );
        assert_eq!(
            l.apply(
                5,
                Command::RaiseFeatureLevel {
                    level: FeatureLevel::REVEAL.0
                }
            ),
            Outcome::Done
        );
        id_of(l.apply(6, draw("cu_a", &first, 12)));
        assert!(matches!(
            chunk_reveal(&l.db, &dev, 1).unwrap(),
            ChunkReveal::Exhausted { .. }
        ));
        assert_eq!(
            crate::state_machine::features::feature_level(&l.db).unwrap(),
            FeatureLevel::REVEAL
        );
    }

    #[test]
    fn below_the_reveal_level_a_removed_links_key_is_not_recorded() {
        let (mut l, dev, _) = ledger_at(FeatureLevel::BASE);
        l.apply(9, Command::RemoveLink { device: dev });
        assert!(device_keys(&l.db).unwrap().is_empty());
    }

    #[test]
    fn two_replicas_applying_the_same_commands_store_identical_exhausted_chunks() {
        let dump = |l: &Ledger| {
            let tx = l.db.begin_read().unwrap();
            let t = tx.open_table(EXHAUSTED).unwrap();
            t.iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect::<Vec<_>>()
        };
        let mut dumps = Vec::new();
        for _ in 0..2 {
            let (mut l, _, chain) = ledger();
            let first = id_of(l.apply(4, draw("cu_a", &chain, 20)));
            id_of(l.apply(5, draw("cu_a", &first, 12)));
            dumps.push(dump(&l));
        }
        assert_eq!(dumps[0].len(), 2, "both chunks used up");
        assert_eq!(dumps[0], dumps[1]);
    }

    #[test]
    fn a_removed_link_keeps_its_key_published_with_its_validity() {
        let (mut l, dev, _) = ledger();
        let keys = device_keys(&l.db).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].valid_from_ms, keys[0].valid_until_ms), (1, None));
        l.apply(
            9,
            Command::RemoveLink {
                device: dev.clone(),
            },
        );
        let keys = device_keys(&l.db).unwrap();
        assert_eq!(
            keys,
            vec![DeviceKey {
                device: dev,
                public_key: KEY,
                valid_from_ms: 1,
                valid_until_ms: Some(9),
            }]
        );
    }
}
