//! The link registry and skipped-sequence accounting: applying
//! `RegisterLink`, `RemoveLink` and `SkipChunks`, and the reads the link
//! controller, the HardwareSessions and the admin API use.
//!
//! A link is known by its device id, which is derived from the device's
//! Ed25519 public key exactly as `geiger-hardware` derives it (`dev_` and the
//! hex of the first 16 bytes of SHA-256 of the key). The ledger refuses a
//! registration whose id does not match its key, so no key can claim
//! another device's id, and the registered key is the only one the owner
//! verifies chunks against.
//!
//! Per device, every chunk sequence from the first one the ledger saw to the
//! last is accounted exactly once: appended (pooled or used), quarantined,
//! or skipped (a declared gap). The state machine's sequence check makes the
//! three contiguous; [`LinkView`] reports the counts.

use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::apply::{check_name, Applier, ApplyError};
use super::reads::ReadError;
use super::tables::*;
use crate::types::{Lease, NodeId, Outcome, Rejection};

type Applied = Result<Outcome, Rejection>;

/// Longest device address (`host:port`).
const MAX_ADDRESS_BYTES: usize = 255;
/// Consecutive quarantined chunks, at the end of a device's accounted
/// sequence, that make the ledger report the link unhealthy. The same
/// number as the link client's `unhealthy_after` (docs/HEALTH.md).
pub const UNHEALTHY_AFTER: u64 = 2;

/// A registered link, as stored in the `links` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub device: String,
    /// `host:port` of the device agent.
    pub address: String,
    pub public_key: [u8; 32],
    pub registered_at_ms: u64,
}

/// The device id that belongs to `public_key`: `dev_` and 32 hex digits.
pub fn device_id_of(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("dev_{}", hex::encode(&digest[..16]))
}

fn check_address(address: &str) -> Result<(), Rejection> {
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if address.len() > MAX_ADDRESS_BYTES
        || address.chars().any(|c| c.is_control() || c.is_whitespace())
        || !port_ok
    {
        return Err(Rejection::Invalid(format!(
            "`address` must be `host:port`, at most {MAX_ADDRESS_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Applier<'_, '_> {
    pub(super) fn register_link(
        &mut self,
        device: &str,
        address: &str,
        public_key: &[u8; 32],
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device).and_then(|_| check_address(address)) {
            return Ok(Err(r));
        }
        let derived = device_id_of(public_key);
        if derived != device {
            return Ok(Err(Rejection::Invalid(format!(
                "device id {device} does not belong to that public key (its id is {derived})"
            ))));
        }
        let registered_at_ms = match self.tx.get::<Link>(LINKS, device.as_bytes())? {
            Some(old) => old.registered_at_ms,
            None => self.at_ms,
        };
        self.tx.put(
            LINKS,
            device.as_bytes(),
            &Link {
                device: device.to_string(),
                address: address.to_string(),
                public_key: *public_key,
                registered_at_ms,
            },
        )?;
        tracing::info!(device, address, "link registered");
        Ok(Ok(Outcome::Done))
    }

    pub(super) fn remove_link(&mut self, device: &str) -> Result<Applied, ApplyError> {
        if self.tx.get_raw(LINKS, device.as_bytes())?.is_none() {
            return Ok(Err(Rejection::NotFound(format!("link {device}"))));
        }
        self.tx.delete(LINKS, device.as_bytes())?;
        // Keep the lease, so the epoch never goes back, but end it now.
        if let Some(mut lease) = self.tx.get::<Lease>(LEASES, device.as_bytes())? {
            lease.expires_at_ms = lease.expires_at_ms.min(self.at_ms.saturating_sub(1));
            self.tx.put(LEASES, device.as_bytes(), &lease)?;
        }
        tracing::info!(device, "link removed");
        Ok(Ok(Outcome::Done))
    }

    pub(super) fn skip_chunks(
        &mut self,
        device: &str,
        epoch: u64,
        from: u64,
        to: u64,
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device) {
            return Ok(Err(r));
        }
        if from >= to {
            return Ok(Err(Rejection::Invalid(
                "a skipped range `from..to` needs from < to".into(),
            )));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, from)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        self.tx.put(SKIPPED, &quarantine_key(device, from), &to)?;
        state.first_seq.get_or_insert(from);
        state.last_seq = Some(to - 1);
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        tracing::warn!(device, from, to, "device sequences skipped");
        Ok(Ok(Outcome::Done))
    }
}

/// The device's own record of an appended chunk: what it signed (with the
/// chunk's SHA-256 and sequence, docs/LINK.md) and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkProvenance {
    pub timestamp_ms: u64,
    pub sha256: [u8; 32],
    #[serde(with = "crate::types::raw_bytes")]
    pub signature: Vec<u8>,
    pub length: u32,
}

impl Applier<'_, '_> {
    pub(super) fn append_signed(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        timestamp_ms: u64,
        signature: &[u8],
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        if signature.len() != 64 {
            return Ok(Err(Rejection::Invalid(
                "a chunk signature is 64 bytes".into(),
            )));
        }
        let outcome = self.append_entropy(device, epoch, seq, bytes)?;
        if let Ok(Outcome::EntropyAppended { .. }) = outcome {
            self.tx.put(
                PROVENANCE,
                &quarantine_key(device, seq),
                &ChunkProvenance {
                    timestamp_ms,
                    sha256: Sha256::digest(bytes).into(),
                    signature: signature.to_vec(),
                    length: bytes.len() as u32,
                },
            )?;
        }
        Ok(outcome)
    }
}

/// The provenance of chunk `seq` of `device`, if it was appended signed.
pub fn chunk_provenance(
    db: &Database,
    device: &str,
    seq: u64,
) -> Result<Option<ChunkProvenance>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(PROVENANCE).map_err(err)?;
    let key = quarantine_key(device, seq);
    let v = t.get(key.as_slice()).map_err(err)?;
    match v {
        Some(v) => bincode::deserialize(v.value()).map(Some).map_err(err),
        None => Ok(None),
    }
}

/// A link with everything the ledger knows about it: registration, lease,
/// and the device's sequence accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    pub device: String,
    pub address: String,
    /// The registered Ed25519 public key, hex.
    pub public_key: String,
    pub registered_at_ms: u64,
    /// The lease holder, whether or not its lease is still running.
    pub owner: Option<NodeId>,
    /// The fencing epoch; 0 before the first lease.
    pub epoch: u64,
    pub lease_expires_at_ms: Option<u64>,
    pub pooled_bytes: u64,
    pub used_bytes: u64,
    pub appended_chunks: u64,
    pub quarantined_chunks: u64,
    pub skipped_chunks: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The last [`UNHEALTHY_AFTER`] accounted chunks were all quarantined.
    pub unhealthy: bool,
}

impl LinkView {
    /// Sequences accounted for, `first_seq..=last_seq`; equals
    /// appended + quarantined + skipped when the accounting has no hole.
    pub fn accounted_span(&self) -> u64 {
        match (self.first_seq, self.last_seq) {
            (Some(f), Some(l)) => l - f + 1,
            _ => 0,
        }
    }
}

fn err(e: impl std::fmt::Display) -> ReadError {
    ReadError::new(e)
}

/// Every registered link, by device id.
pub fn links(db: &Database) -> Result<Vec<LinkView>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let links = tx.open_table(LINKS).map_err(err)?;
    let leases = tx.open_table(LEASES).map_err(err)?;
    let devices = tx.open_table(DEVICES).map_err(err)?;
    let quarantine = tx.open_table(QUARANTINE).map_err(err)?;
    let skipped = tx.open_table(SKIPPED).map_err(err)?;
    let mut out = Vec::new();
    for item in links.iter().map_err(err)? {
        let (_, v) = item.map_err(err)?;
        let link: Link = bincode::deserialize(v.value()).map_err(err)?;
        let key = link.device.as_bytes();
        let lease: Option<Lease> = match leases.get(key).map_err(err)? {
            Some(v) => Some(bincode::deserialize(v.value()).map_err(err)?),
            None => None,
        };
        let state: DeviceState = match devices.get(key).map_err(err)? {
            Some(v) => bincode::deserialize(v.value()).map_err(err)?,
            None => DeviceState::default(),
        };
        let mut skipped_chunks = 0;
        let from = quarantine_key(&link.device, 0);
        let to = quarantine_key(&link.device, u64::MAX);
        for item in skipped
            .range(from.as_slice()..=to.as_slice())
            .map_err(err)?
        {
            let (k, v) = item.map_err(err)?;
            let start =
                u64::from_be_bytes(k.value()[k.value().len() - 8..].try_into().map_err(err)?);
            let end: u64 = bincode::deserialize(v.value()).map_err(err)?;
            skipped_chunks += end.saturating_sub(start);
        }
        let unhealthy = match (state.first_seq, state.last_seq) {
            (Some(first), Some(last)) if last - first + 1 >= UNHEALTHY_AFTER => {
                let mut all = true;
                for seq in (last + 1 - UNHEALTHY_AFTER)..=last {
                    let k = quarantine_key(&link.device, seq);
                    if quarantine.get(k.as_slice()).map_err(err)?.is_none() {
                        all = false;
                        break;
                    }
                }
                all
            }
            _ => false,
        };
        out.push(LinkView {
            device: link.device.clone(),
            address: link.address,
            public_key: hex::encode(link.public_key),
            registered_at_ms: link.registered_at_ms,
            owner: lease.as_ref().map(|l| l.owner),
            epoch: lease.as_ref().map_or(0, |l| l.epoch),
            lease_expires_at_ms: lease.as_ref().map(|l| l.expires_at_ms),
            pooled_bytes: state.pooled_bytes,
            used_bytes: state.used_bytes,
            appended_chunks: state.appended_chunks,
            quarantined_chunks: state.quarantined_chunks,
            skipped_chunks,
            first_seq: state.first_seq,
            last_seq: state.last_seq,
            unhealthy,
        });
    }
    Ok(out)
}

/// The registered public key of `device`, if it is registered.
pub fn link(db: &Database, device: &str) -> Result<Option<Link>, ReadError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(LINKS).map_err(err)?;
    let v = t.get(device.as_bytes()).map_err(err)?;
    match v {
        Some(v) => bincode::deserialize(v.value()).map(Some).map_err(err),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::apply::{ApplyCache, Tx};
    use crate::types::Command;

    struct Ledger {
        _dir: tempfile::TempDir,
        db: Database,
        cache: ApplyCache,
    }

    impl Ledger {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            for (_, def) in ALL {
                tx.open_table(def).unwrap();
            }
            tx.commit().unwrap();
            Ledger {
                _dir: dir,
                db,
                cache: ApplyCache::default(),
            }
        }

        fn apply(&mut self, at_ms: u64, command: Command) -> Outcome {
            let tx = self.db.begin_write().unwrap();
            let outcome = {
                let t = Tx::new(&tx);
                let mut a = Applier {
                    tx: &t,
                    cache: &mut self.cache,
                    at_ms,
                };
                let outcome = a.apply(&command).unwrap();
                t.finish().unwrap();
                outcome
            };
            tx.commit().unwrap();
            outcome
        }

        fn view(&self, device: &str) -> LinkView {
            links(&self.db)
                .unwrap()
                .into_iter()
                .find(|l| l.device == device)
                .unwrap()
        }
    }

    const KEY: [u8; 32] = [7; 32];

    fn register(device: &str) -> Command {
        Command::RegisterLink {
            device: device.into(),
            address: "127.0.0.1:7000".into(),
            public_key: KEY,
        }
    }

    fn lease(device: &str, expected: u64) -> Command {
        Command::AssignLease {
            device: device.into(),
            owner: 1,
            expected_epoch: Some(expected),
            duration_ms: 3000,
        }
    }

    fn append(device: &str, epoch: u64, seq: u64) -> Command {
        Command::AppendEntropy {
            device: device.into(),
            epoch,
            seq,
            bytes: vec![seq as u8; 16],
        }
    }

    fn quarantine(device: &str, epoch: u64, seq: u64) -> Command {
        Command::QuarantineChunk {
            device: device.into(),
            epoch,
            seq,
            length: 16,
            sha256: [0; 32],
            reason: "health_test".into(),
        }
    }

    #[test]
    fn a_link_registers_only_under_the_id_its_key_derives() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        assert!(id.starts_with("dev_") && id.len() == 36);
        let wrong = format!("dev_{}", "0".repeat(32));
        assert!(matches!(
            l.apply(1, register(&wrong)),
            Outcome::Rejected(Rejection::Invalid(_))
        ));
        assert_eq!(l.apply(1, register(&id)), Outcome::Done);
        let bad_address = Command::RegisterLink {
            device: id.clone(),
            address: "no-port".into(),
            public_key: KEY,
        };
        assert!(matches!(l.apply(2, bad_address), Outcome::Rejected(_)));
        let view = l.view(&id);
        assert_eq!(view.public_key, hex::encode(KEY));
        assert_eq!((view.owner, view.epoch), (None, 0));
        assert_eq!(links(&l.db).unwrap().len(), 1);
    }

    #[test]
    fn skipped_quarantined_and_appended_chunks_account_for_every_sequence() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        assert!(matches!(l.apply(1, lease(&id, 0)), Outcome::Lease(_)));
        assert!(matches!(
            l.apply(2, append(&id, 1, 10)),
            Outcome::EntropyAppended { .. }
        ));
        // A skip must start right after the last accounted sequence...
        let skip = |from, to| Command::SkipChunks {
            device: id.clone(),
            epoch: 1,
            from,
            to,
        };
        assert!(matches!(
            l.apply(3, skip(12, 20)),
            Outcome::Rejected(Rejection::SequenceGap { .. })
        ));
        assert_eq!(l.apply(3, skip(11, 20)), Outcome::Done);
        // ...and the next chunk follows the skipped range.
        assert!(matches!(
            l.apply(4, append(&id, 1, 11)),
            Outcome::Rejected(Rejection::SequenceGap { .. })
        ));
        assert!(matches!(
            l.apply(4, append(&id, 1, 20)),
            Outcome::EntropyAppended { .. }
        ));
        assert_eq!(
            l.apply(5, quarantine(&id, 1, 21)),
            Outcome::ChunkQuarantined
        );
        let v = l.view(&id);
        assert_eq!(
            (v.appended_chunks, v.quarantined_chunks, v.skipped_chunks),
            (2, 1, 9)
        );
        assert_eq!(v.accounted_span(), 12);
        assert_eq!(
            v.appended_chunks + v.quarantined_chunks + v.skipped_chunks,
            v.accounted_span()
        );
        assert!(
            !v.unhealthy,
            "one quarantined chunk is within the false-positive rate"
        );
        assert_eq!(
            l.apply(6, quarantine(&id, 1, 22)),
            Outcome::ChunkQuarantined
        );
        assert!(l.view(&id).unhealthy);
        assert!(matches!(
            l.apply(7, append(&id, 1, 23)),
            Outcome::EntropyAppended { .. }
        ));
        assert!(!l.view(&id).unhealthy);
    }

    #[test]
    fn a_signed_chunk_keeps_its_provenance_and_a_refused_one_leaves_none() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        l.apply(1, lease(&id, 0));
        let signed = |epoch, seq| Command::AppendSignedEntropy {
            device: id.clone(),
            epoch,
            seq,
            timestamp_ms: 77,
            signature: vec![5; 64],
            bytes: vec![1, 2, 3],
        };
        assert!(matches!(
            l.apply(2, signed(1, 0)),
            Outcome::EntropyAppended { .. }
        ));
        let p = chunk_provenance(&l.db, &id, 0).unwrap().unwrap();
        assert_eq!((p.timestamp_ms, p.length), (77, 3));
        assert_eq!(p.signature, vec![5; 64]);
        assert_eq!(p.sha256, <[u8; 32]>::from(Sha256::digest([1u8, 2, 3])));
        assert!(matches!(
            l.apply(3, signed(9, 1)),
            Outcome::Rejected(Rejection::StaleEpoch { .. })
        ));
        assert!(chunk_provenance(&l.db, &id, 1).unwrap().is_none());
        let short = Command::AppendSignedEntropy {
            device: id.clone(),
            epoch: 1,
            seq: 1,
            timestamp_ms: 0,
            signature: vec![0; 10],
            bytes: vec![1],
        };
        assert!(matches!(
            l.apply(4, short),
            Outcome::Rejected(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn a_skip_under_a_stale_epoch_is_refused() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        l.apply(1, lease(&id, 0));
        l.apply(2, lease(&id, 1));
        let stale = Command::SkipChunks {
            device: id.clone(),
            epoch: 1,
            from: 0,
            to: 5,
        };
        assert!(matches!(
            l.apply(3, stale),
            Outcome::Rejected(Rejection::StaleEpoch { current: 2, got: 1 })
        ));
    }

    #[test]
    fn removing_a_link_ends_its_lease_but_keeps_its_epoch() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        l.apply(1, lease(&id, 0));
        assert_eq!(
            l.apply(2, Command::RemoveLink { device: id.clone() }),
            Outcome::Done
        );
        assert!(links(&l.db).unwrap().is_empty());
        assert!(matches!(
            l.apply(2, append(&id, 1, 0)),
            Outcome::Rejected(Rejection::LeaseExpired(_))
        ));
        assert!(matches!(
            l.apply(3, Command::RemoveLink { device: id.clone() }),
            Outcome::Rejected(Rejection::NotFound(_))
        ));
        l.apply(4, register(&id));
        // The next lease continues the epoch sequence.
        match l.apply(5, lease(&id, 1)) {
            Outcome::Lease(lease) => assert_eq!(lease.epoch, 2),
            other => panic!("{other:?}"),
        }
    }
}
