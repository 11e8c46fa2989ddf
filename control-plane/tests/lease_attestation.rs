//! Lease attestations over the real internal port of three replicas: each
//! member signs only the lease its own applied ledger holds, for the node
//! it names, and the owner gathers a majority of them (docs/LINK.md).

use std::time::Duration;

use ed25519_dalek::SigningKey;
use geiger_control_plane::{Command, ControlPlaneConfig};
use geiger_protocol::lease_proof::{majority_of, trusted_signers, LeaseClaim};
use geiger_testkit::in_process::{default_tune, TestCluster};

fn link_key_of(node: u64) -> SigningKey {
    SigningKey::from_bytes(&[node as u8; 32])
}

fn tune(config: &mut ControlPlaneConfig) {
    default_tune(config);
    config.link_key = Some(link_key_of(config.node_id));
}

#[tokio::test]
async fn members_attest_only_the_lease_their_ledger_holds_and_the_owner_gathers_a_majority() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, tune).await.unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let device_key = SigningKey::from_bytes(&[99; 32]).verifying_key().to_bytes();
    let device = geiger_control_plane::device_id_of(&device_key);
    let cp = cluster.node(leader);
    cp.write(Command::RegisterLink {
        device: device.clone(),
        address: "127.0.0.1:7000".into(),
        public_key: device_key,
    })
    .await
    .unwrap();
    let owner = cluster.node(0);
    cp.write(Command::AssignLease {
        device: device.clone(),
        owner: owner.node_id(),
        expected_epoch: Some(0),
        duration_ms: 60_000,
    })
    .await
    .unwrap();
    let epoch = cp
        .leases()
        .unwrap()
        .into_iter()
        .find(|l| l.device == device)
        .unwrap()
        .epoch;
    let owner_key = link_key_of(owner.node_id()).verifying_key().to_bytes();
    let members: Vec<[u8; 32]> = (1..=3)
        .map(|n| link_key_of(n).verifying_key().to_bytes())
        .collect();
    let claim = LeaseClaim {
        device_key,
        epoch,
        owner_key,
    };

    // By default, enough peers that with the owner's own word they are a
    // majority: one of two here. Every signature is a member's, over exactly
    // this claim, and none is the owner's (it signs its own).
    let within = Duration::from_secs(5);
    let got = owner
        .lease_attestations(&device, epoch, owner_key, 0, within)
        .await;
    assert_eq!(got.len(), majority_of(3) - 1);
    assert_eq!(trusted_signers(&got, &claim, &members), got.len());
    assert!(got.iter().all(|a| a.signer != owner_key));
    // Asked for all three, both peers sign.
    let got = owner
        .lease_attestations(&device, epoch, owner_key, 3, within)
        .await;
    assert_eq!(trusted_signers(&got, &claim, &members), 2);

    // No member vouches for an epoch or an owner its ledger does not hold.
    let short = Duration::from_millis(600);
    let other_epoch = owner
        .lease_attestations(&device, epoch + 1, owner_key, 3, short)
        .await;
    assert!(other_epoch.is_empty(), "{other_epoch:?}");
    let not_owner = cluster.node(1);
    let pretender_key = link_key_of(not_owner.node_id()).verifying_key().to_bytes();
    let pretender = not_owner
        .lease_attestations(&device, epoch, pretender_key, 3, short)
        .await;
    assert!(pretender.is_empty(), "{pretender:?}");
    let unknown = owner
        .lease_attestations(
            "dev_00000000000000000000000000000000",
            epoch,
            owner_key,
            3,
            short,
        )
        .await;
    assert!(unknown.is_empty());
}
