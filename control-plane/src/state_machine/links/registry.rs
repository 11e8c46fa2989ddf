//! The link registry: applying `RegisterLink` and `RemoveLink`, and the
//! reads the link controller, the HardwareSessions and the admin API use
//! ([`links`], [`link`]).
//!
//! A link is known by its device id, which is derived from the device's
//! Ed25519 public key exactly as `geiger-hardware` derives it (`dev_` and the
//! hex of the first 16 bytes of SHA-256 of the key). The ledger refuses a
//! registration whose id does not match its key, so no key can claim
//! another device's id, and the registered key is the only one the owner
//! verifies chunks against.
//!
//! [`LinkView`] joins the registration with the lease and the device's
//! sequence accounting (kept by [`crate::state_machine::pool`]): every
//! sequence from the first the ledger saw to the last is appended,
//! quarantined or skipped, exactly once.

use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::state_machine::dispatch::{check_name, Applied, Applier};
use crate::state_machine::reads::ReadError;
use crate::state_machine::tables::*;
use crate::state_machine::tx::ApplyError;
use crate::types::{Lease, NodeId, Outcome, Rejection};

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
/// (The rule itself lives in `geiger_protocol::device`.)
pub fn device_id_of(public_key: &[u8; 32]) -> String {
    geiger_protocol::device::DeviceId::of_key_bytes(public_key).to_string()
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
    pub(in crate::state_machine) fn register_link(
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

    pub(in crate::state_machine) fn remove_link(
        &mut self,
        device: &str,
    ) -> Result<Applied, ApplyError> {
        if self.tx.get_raw(LINKS, device.as_bytes())?.is_none() {
            return Ok(Err(Rejection::NotFound(format!("link {device}"))));
        }
        self.record_removed_link(device)?;
        self.tx.delete(LINKS, device.as_bytes())?;
        // Keep the lease, so the epoch never goes back, but end it now.
        if let Some(mut lease) = self.tx.get::<Lease>(LEASES, device.as_bytes())? {
            lease.expires_at_ms = lease.expires_at_ms.min(self.at_ms.saturating_sub(1));
            self.tx.put(LEASES, device.as_bytes(), &lease)?;
        }
        tracing::info!(device, "link removed");
        Ok(Ok(Outcome::Done))
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

/// Every registered link, by device id.
pub fn links(db: &Database) -> Result<Vec<LinkView>, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    let links = tx.open_table(LINKS).map_err(ReadError::new)?;
    let leases = tx.open_table(LEASES).map_err(ReadError::new)?;
    let devices = tx.open_table(DEVICES).map_err(ReadError::new)?;
    let quarantine = tx.open_table(QUARANTINE).map_err(ReadError::new)?;
    let skipped = tx.open_table(SKIPPED).map_err(ReadError::new)?;
    let mut out = Vec::new();
    for item in links.iter().map_err(ReadError::new)? {
        let (_, v) = item.map_err(ReadError::new)?;
        let link: Link = crate::codec::decode(v.value()).map_err(ReadError::new)?;
        let key = link.device.as_bytes();
        let lease: Option<Lease> = match leases.get(key).map_err(ReadError::new)? {
            Some(v) => Some(crate::codec::decode(v.value()).map_err(ReadError::new)?),
            None => None,
        };
        let state: DeviceState = match devices.get(key).map_err(ReadError::new)? {
            Some(v) => crate::codec::decode(v.value()).map_err(ReadError::new)?,
            None => DeviceState::default(),
        };
        let mut skipped_chunks = 0;
        let from = device_seq_key(&link.device, 0);
        let to = device_seq_key(&link.device, u64::MAX);
        for item in skipped
            .range(from.as_slice()..=to.as_slice())
            .map_err(ReadError::new)?
        {
            let (k, v) = item.map_err(ReadError::new)?;
            let start = u64::from_be_bytes(
                k.value()[k.value().len() - 8..]
                    .try_into()
                    .map_err(ReadError::new)?,
            );
            let end: u64 = crate::codec::decode(v.value()).map_err(ReadError::new)?;
            skipped_chunks += end.saturating_sub(start);
        }
        let unhealthy = match (state.first_seq, state.last_seq) {
            (Some(first), Some(last)) if last - first + 1 >= UNHEALTHY_AFTER => {
                let mut all = true;
                for seq in (last + 1 - UNHEALTHY_AFTER)..=last {
                    let k = device_seq_key(&link.device, seq);
                    if quarantine
                        .get(k.as_slice())
                        .map_err(ReadError::new)?
                        .is_none()
                    {
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

/// The registration of `device` (address, public key, time), if registered.
pub fn link(db: &Database, device: &str) -> Result<Option<Link>, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    let t = tx.open_table(LINKS).map_err(ReadError::new)?;
    let v = t.get(device.as_bytes()).map_err(ReadError::new)?;
    match v {
        Some(v) => crate::codec::decode(v.value())
            .map(Some)
            .map_err(ReadError::new),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::test_ledger::*;
    use crate::types::Command;

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
