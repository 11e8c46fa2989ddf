//! Lease attestations (docs/LINK.md, "Epochs a device can trust"): this
//! member's signature, with its device-link key, that the ledger it has
//! applied leases a device to a node at an epoch; and the owner's
//! collection of such signatures from the other members before it says
//! Hello to the device.
//!
//! A member attests only what its own applied state shows: the device's
//! current lease names exactly the asking node and epoch. It never asks the
//! leader: a majority of members each reading its own replica is the proof.

use std::time::Duration;

use geiger_protocol::lease_proof::{majority_of, LeaseAttestation, LeaseClaim};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::control_plane::ControlPlane;
use crate::raft_network::client::Credential;
use crate::raft_network::{LeaseAttestationRequest, PATH_LEASE_ATTESTATION};
use crate::replica::Replica;
use crate::state_machine::links::registry;
use crate::state_machine::reads;

/// Pause between asks of a member that has not applied the lease yet.
const RETRY_EVERY: Duration = Duration::from_millis(100);

impl Replica {
    /// Signs `req`'s lease if this replica's ledger holds exactly it.
    pub(crate) fn attest_lease(
        &self,
        req: &LeaseAttestationRequest,
    ) -> Result<LeaseAttestation, String> {
        let key = self
            .config
            .link_key
            .as_ref()
            .ok_or("this node has no link key")?;
        let db = self.shared.db();
        let lease = reads::leases(&db)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|l| l.device == req.device)
            .ok_or_else(|| format!("no lease of {} here", req.device))?;
        if lease.epoch != req.epoch || lease.owner != req.owner {
            return Err(format!(
                "the ledger here leases {} to node {} at epoch {}, not to node {} at epoch {}",
                req.device, lease.owner, lease.epoch, req.owner, req.epoch
            ));
        }
        let link = registry::link(&db, &req.device)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} is not registered here", req.device))?;
        Ok(LeaseAttestation::sign(
            key,
            &LeaseClaim {
                device_key: link.public_key,
                epoch: req.epoch,
                owner_key: req.owner_key,
            },
        ))
    }
}

impl ControlPlane {
    /// The other members' attestations that this node holds `device`'s
    /// lease at `epoch`, gathered until, with this node's own, they are a
    /// majority of the members (or `at_least`, if more), or until `within`
    /// has passed. A member that has not applied the lease yet is asked
    /// again; one that says otherwise, or cannot be reached, gives none.
    pub async fn lease_attestations(
        &self,
        device: &str,
        epoch: u64,
        owner_key: [u8; 32],
        at_least: usize,
        within: Duration,
    ) -> Vec<LeaseAttestation> {
        let inner = self.replica();
        let peers: Vec<_> = inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != inner.id)
            .map(|(id, member)| (*id, member.rpc_addr.clone()))
            .collect();
        let wanted = majority_of(peers.len() + 1).max(at_least).saturating_sub(1);
        let request = LeaseAttestationRequest {
            device: device.to_string(),
            epoch,
            owner: inner.id,
            owner_key,
        };
        let deadline = Instant::now() + within;
        // Dropping the set (once enough have answered) cancels the rest.
        let mut asks = JoinSet::new();
        for (id, addr) in peers {
            let (inner, request) = (inner.clone(), request.clone());
            asks.spawn(async move {
                    loop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return None;
                        }
                        let answer = inner
                            .client
                            .call::<_, Result<LeaseAttestation, String>>(
                                id,
                                &addr,
                                PATH_LEASE_ATTESTATION,
                                &request,
                                left.min(inner.config.timeouts.rpc * 4),
                                Credential::Peer,
                            )
                            .await;
                        match answer {
                            Ok(Ok(a)) => return Some(a),
                            Ok(Err(why)) => {
                                tracing::debug!(peer = id, device = %request.device, epoch, why, "member did not attest the lease (yet)")
                            }
                            Err(e) => {
                                tracing::debug!(peer = id, error = %e, "lease attestation call failed")
                            }
                        }
                        tokio::time::sleep(RETRY_EVERY.min(left)).await;
                    }
            });
        }
        let mut got = Vec::new();
        while got.len() < wanted {
            match asks.join_next().await {
                Some(Ok(Some(a))) => got.push(a),
                Some(_) => {}
                None => break,
            }
        }
        got
    }
}
