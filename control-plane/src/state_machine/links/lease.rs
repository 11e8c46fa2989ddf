//! Leases: applying `AssignLease` (compare-and-set on the fencing epoch,
//! which it bumps) and `RenewLease`, and the check every chunk command of a
//! device passes first ([`Applier::check_lease`]): the running lease's
//! epoch, not expired by the leader's clock of this batch. One link per
//! device: leases and epochs are keyed by device id.

use crate::state_machine::dispatch::{check_name, Applied, Applier};
use crate::state_machine::tables::*;
use crate::state_machine::tx::ApplyError;
use crate::types::{Lease, NodeId, Outcome, Rejection};

impl Applier<'_, '_> {
    /// The lease check every chunk command (append, quarantine, skip) passes
    /// first: a running lease under exactly this epoch.
    pub(in crate::state_machine) fn check_lease(
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

    pub(in crate::state_machine) fn assign_lease(
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

    pub(in crate::state_machine) fn renew_lease(
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
}

#[cfg(test)]
mod tests {
    use crate::state_machine::links::registry::device_id_of;
    use crate::state_machine::test_ledger::*;
    use crate::types::{Command, Outcome, Rejection};

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
}
