//! Lease renewal: an owner keeps its link's lease while the link is
//! healthy, or was within the last `2 × lease`, or its session is still
//! starting; otherwise it lets the lease lapse, so the controller tries
//! another node. A refused renewal means the lease is lost.

use std::time::{Duration, Instant};

use geiger_control_plane::{Command, Error as LedgerError, Outcome};
use tokio::sync::watch;

use super::session::{Ended, SessionCtx};

/// What the renewer needs to know about the link.
#[derive(Debug, Clone, Copy)]
pub(super) enum Liveness {
    /// Connecting for the first time since this instant.
    Starting(Instant),
    /// Connected and healthy now.
    Healthy,
    /// Not healthy (disconnected, unhealthy) since this instant.
    Unhealthy(Instant),
}

impl Liveness {
    /// Whether the lease is worth keeping: the link is healthy, or was, or
    /// has been starting, less than `grace` ago.
    pub(super) fn keeps_lease(self, grace: Duration) -> bool {
        match self {
            Liveness::Healthy => true,
            Liveness::Starting(since) | Liveness::Unhealthy(since) => since.elapsed() < grace,
        }
    }
}

impl SessionCtx {
    /// Renews the lease every `renew` while the link is (or may soon be)
    /// healthy. A refused renewal means the lease is lost: `lost` turns true.
    pub(super) async fn renew_loop(
        self,
        health: watch::Receiver<Liveness>,
        lost: watch::Sender<bool>,
    ) {
        let grace = self.settings.lease * 2;
        let mut interval = tokio::time::interval(self.settings.renew);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let keep = health.borrow().keeps_lease(grace);
            if !keep {
                tracing::warn!(device = %self.device, epoch = self.epoch, "link not healthy: letting the lease lapse");
                continue;
            }
            let renew = Command::RenewLease {
                device: self.device.clone(),
                owner: self.settings.node_id,
                epoch: self.epoch,
                duration_ms: self.settings.lease.as_millis() as u64,
            };
            match self.ledger.write(renew).await {
                Ok(Outcome::Lease(_)) => {}
                Ok(Outcome::Rejected(r)) => {
                    tracing::warn!(device = %self.device, epoch = self.epoch, rejection = %r, "lease renewal refused: the lease is lost");
                    let _ = lost.send(true);
                    return;
                }
                Ok(other) => tracing::warn!(?other, "unexpected renewal outcome"),
                Err(e) => {
                    tracing::warn!(device = %self.device, error = %e, "lease renewal failed; retrying")
                }
            }
        }
    }

    /// The lease is still this session's (owner and epoch), as far as this
    /// replica knows.
    pub(super) fn still_ours(&self) -> Result<Option<Ended>, LedgerError> {
        if self.ledger.link(&self.device)?.is_none() {
            return Ok(Some(Ended::Unregistered));
        }
        let lease = self
            .ledger
            .leases()?
            .into_iter()
            .find(|l| l.device == self.device);
        Ok(match lease {
            Some(l) if l.owner == self.settings.node_id && l.epoch == self.epoch => None,
            Some(l) => Some(Ended::LostLease(format!(
                "the lease is now node {}'s, epoch {}",
                l.owner, l.epoch
            ))),
            None => Some(Ended::LostLease("no lease".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_kept_while_the_link_is_healthy_or_was_within_the_grace() {
        let grace = Duration::from_secs(6);
        let long_ago = Instant::now() - Duration::from_secs(7);
        assert!(Liveness::Healthy.keeps_lease(grace));
        assert!(Liveness::Starting(Instant::now()).keeps_lease(grace));
        assert!(Liveness::Unhealthy(Instant::now()).keeps_lease(grace));
        assert!(!Liveness::Starting(long_ago).keeps_lease(grace));
        assert!(!Liveness::Unhealthy(long_ago).keeps_lease(grace));
    }
}
