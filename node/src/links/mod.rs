//! The links wing: everything between a hardware device's network link and
//! the replicated pool.
//!
//! ```text
//! leader:      cluster view ──▶ controller ──AssignLease──▶ ledger (leases)
//! every node:  ledger (leases) ──▶ watcher ──starts/stops──▶ link:<device>
//! owner:       device ──link──▶ session ──ingest──▶ ledger (pool)
//!                                  └── lease: renews while the link is healthy
//! ```
//!
//! - [`settings`]: lease timing and the pool reserve, built once from the
//!   configuration.
//! - [`controller`]: the LinkController actor, on the leader: gives every
//!   registered link one live owner (the plan itself is pure, in
//!   `geiger_control_plane::link_controller`).
//! - [`watcher`]: the LinkWatcher actor, on every node: one supervised
//!   HardwareSession per link this node holds a lease on.
//! - [`session`]: the HardwareSession actor: connect, pull, append, resume.
//! - [`lease`]: the owner's lease renewal.
//! - [`ingest`]: link events → ledger commands, and the ledger's answers →
//!   what the session does next; pure.
//!
//! Restarts of these actors are counted under their own names
//! (`geiger_actor_restarts_total{actor="link_controller" | "link_watcher" |
//! "hardware_session"}`).

pub mod controller;
pub mod ingest;
pub mod lease;
pub mod session;
pub mod settings;
pub mod watcher;

pub use settings::LinkSettings;

/// The supervisor's name for the session of `device`'s link.
pub fn child_name(device: &str) -> String {
    format!("link:{device}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use geiger_control_plane::{ControlPlane, ControlPlaneConfig, Member};
    use ractor::Actor;

    use crate::actors::supervisor::{ChildSpec, NodeSupervisor, RestartPolicy, SupervisorMsg};
    use crate::cluster_view;
    use crate::metrics::NodeMetrics;

    #[test]
    fn sessions_are_named_after_their_device() {
        assert_eq!(child_name("dev_ab"), "link:dev_ab");
    }

    /// Waits until `text` shows in the metrics.
    async fn until_rendered(metrics: &NodeMetrics, text: &str) {
        for _ in 0..300 {
            if metrics.render().contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never rendered {text}:\n{}", metrics.render());
    }

    #[tokio::test]
    async fn a_link_actor_that_ends_is_restarted_and_counted_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let member = Member {
            rpc_addr: "127.0.0.1:9".into(),
            api_addr: "127.0.0.1:9".into(),
            ..Member::default()
        };
        let config = ControlPlaneConfig::new(1, member, "restart-test-secret");
        let ledger = ControlPlane::open(config, dir.path()).await.unwrap();
        let metrics = NodeMetrics::new(1);
        let policy = RestartPolicy {
            first_backoff: Duration::from_millis(10),
            ..RestartPolicy::default()
        };
        let supervisor = NodeSupervisor {
            policy,
            metrics: metrics.clone(),
        };
        let (sup, handle) = Actor::spawn(None, supervisor, ()).await.unwrap();
        let settings = LinkSettings {
            node_id: 1,
            lease: Duration::from_secs(3),
            renew: Duration::from_secs(1),
            high_water: 1 << 24,
            low_water: 1 << 23,
            tick: Duration::from_millis(250),
            link_key: ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        };
        let (_publish, view) = cluster_view::channel(1);
        let specs: [(&str, Arc<dyn ChildSpec>); 3] = [
            (
                "link_controller",
                Arc::new(controller::LinkControllerSpec {
                    ledger: ledger.clone(),
                    settings: settings.clone(),
                    view,
                    dead_after: Duration::from_millis(1500),
                }),
            ),
            (
                "link_watcher",
                Arc::new(watcher::LinkWatcherSpec {
                    ledger: ledger.clone(),
                    metrics: metrics.clone(),
                    settings: settings.clone(),
                }),
            ),
            (
                "hardware_session",
                Arc::new(session::HardwareSessionSpec {
                    ledger: ledger.clone(),
                    metrics: metrics.clone(),
                    settings,
                    device: "dev_a".into(),
                    epoch: 1,
                }),
            ),
        ];
        for (kind, spec) in specs {
            // One child at a time, so the supervisor's only child is it.
            sup.cast(SupervisorMsg::Start {
                name: kind.into(),
                spec,
            })
            .unwrap();
            let child = loop {
                if let Some(child) = sup.get_cell().get_children().into_iter().next() {
                    break child;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            child.stop(Some("ended as if it had crashed".into()));
            until_rendered(
                &metrics,
                &format!("geiger_actor_restarts_total{{actor=\"{kind}\"}} 1"),
            )
            .await;
            sup.cast(SupervisorMsg::Stop { name: kind.into() }).unwrap();
            while !sup.get_cell().get_children().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let text = metrics.render();
        for kind in ["link_controller", "link_watcher", "hardware_session"] {
            let line = format!("geiger_actor_restarts_total{{actor=\"{kind}\"}} 1");
            assert!(text.contains(&line), "{text}");
        }
        sup.stop(None);
        handle.await.unwrap();
        ledger.shutdown().await;
    }
}
