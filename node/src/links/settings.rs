//! The links' timing and pool reserve, built once from the node's
//! configuration and the Raft timeouts `Node::start` already built.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use geiger_control_plane::Timeouts;

use crate::config::HardwareSettings;

/// Lease timing and the pool reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    pub node_id: u64,
    pub lease: Duration,
    /// How often an owner renews: the profile's renewal, at most half a lease.
    pub renew: Duration,
    /// Above this many pooled bytes from its device an owner stops pulling...
    pub high_water: u64,
    /// ...and below this many it pulls again.
    pub low_water: u64,
    /// The link watcher's tick.
    pub tick: Duration,
    /// The key this node presents to devices in the link's TLS handshake.
    pub link_key: SigningKey,
}

impl LinkSettings {
    pub fn new(
        node_id: u64,
        timeouts: &Timeouts,
        hardware: &HardwareSettings,
        link_key: SigningKey,
    ) -> Self {
        LinkSettings {
            node_id,
            lease: timeouts.lease,
            renew: timeouts.lease_renew.min(timeouts.lease / 2),
            high_water: hardware.pool_high_water_bytes,
            low_water: hardware.pool_low_water_bytes,
            tick: Duration::from_millis(250),
            link_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    #[test]
    fn the_lease_comes_from_the_raft_profile_and_its_override_and_renewal_stays_within_half_a_lease(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geiger.toml");
        let text = "node_id = 7\n\
            [api]\nadmin_token = \"0123456789abcdef\"\n\
            [internal]\ncluster_secret = \"fedcba9876543210\"\n\
            [raft]\nprofile = \"cross_cloud\"\nlease_ms = 1200\n\
            [hardware]\npool_high_water_bytes = 4096\npool_low_water_bytes = 1024\n";
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config = NodeConfig::load(Some(&path)).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let links = LinkSettings::new(
            config.node_id,
            &config.raft.timeouts(),
            &config.hardware,
            key.clone(),
        );
        assert_eq!(links.link_key, key);
        assert_eq!(links.node_id, 7);
        assert_eq!(links.lease, Duration::from_millis(1200));
        assert_eq!(links.renew, Duration::from_millis(600));
        assert_eq!((links.high_water, links.low_water), (4096, 1024));
    }
}
