//! The LinkWatcher: on every node, every tick it reads the replicated
//! leases and keeps the supervisor's `link:<device>` children equal to the
//! registered links this node holds a running lease on (a child whose epoch
//! changed is replaced). It also exports `geiger_link_up` 0 for every link
//! that has no session here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use geiger_control_plane::ControlPlane;
use geiger_protocol::now_unix_ms;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::child_name;
use super::session::HardwareSessionSpec;
use super::settings::LinkSettings;
use crate::actors::supervisor::{spawn_linked, ChildSpec, SpawnFuture, SupervisorMsg};
use crate::metrics::{DeviceLabels, NodeMetrics};

pub struct LinkWatcher {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
    pub settings: LinkSettings,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct WatcherState {
    /// device → epoch of the session this watcher started.
    running: BTreeMap<String, u64>,
}

pub enum WatcherMsg {
    Tick,
}

impl LinkWatcher {
    fn reconcile(&self, state: &mut WatcherState) -> Result<(), ActorProcessingErr> {
        let me = self.settings.node_id;
        let now = now_unix_ms();
        let tolerance = self.settings.lease.as_millis() as u64;
        let links = self.ledger.links()?;
        let registered: BTreeSet<&str> = links.iter().map(|l| l.device.as_str()).collect();
        let wanted: BTreeMap<String, u64> = self
            .ledger
            .leases()?
            .into_iter()
            .filter(|l| {
                l.owner == me
                    && registered.contains(l.device.as_str())
                    && now <= l.expires_at_ms.saturating_add(tolerance)
            })
            .map(|l| (l.device, l.epoch))
            .collect();
        for (device, epoch) in &wanted {
            if state.running.get(device) == Some(epoch) {
                continue;
            }
            tracing::info!(%device, epoch, "this node owns the link: starting its session");
            let spec = Arc::new(HardwareSessionSpec {
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.clone(),
                device: device.clone(),
                epoch: *epoch,
            });
            if self
                .supervisor
                .cast(SupervisorMsg::Start {
                    name: child_name(device),
                    spec,
                })
                .is_err()
            {
                return Err("the supervisor is gone".into());
            }
            state.running.insert(device.clone(), *epoch);
        }
        let gone: Vec<String> = state
            .running
            .keys()
            .filter(|d| !wanted.contains_key(*d))
            .cloned()
            .collect();
        for device in gone {
            tracing::info!(%device, "this node no longer owns the link: stopping its session");
            if self
                .supervisor
                .cast(SupervisorMsg::Stop {
                    name: child_name(&device),
                })
                .is_err()
            {
                return Err("the supervisor is gone".into());
            }
            state.running.remove(&device);
        }
        // `geiger_link_up` is exported by every node for every link: 0 where
        // no session runs (the session sets its own).
        for link in &links {
            if !state.running.contains_key(&link.device) {
                self.metrics
                    .link_up
                    .get_or_create(&DeviceLabels {
                        device: link.device.clone(),
                    })
                    .set(0);
            }
        }
        Ok(())
    }
}

impl Actor for LinkWatcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<WatcherMsg>,
        _: (),
    ) -> Result<WatcherState, ActorProcessingErr> {
        myself.send_interval(self.settings.tick, || WatcherMsg::Tick);
        Ok(WatcherState {
            running: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WatcherMsg>,
        WatcherMsg::Tick: WatcherMsg,
        state: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = self.reconcile(state) {
            tracing::warn!(error = %e, "link watcher could not read the ledger");
        }
        Ok(())
    }
}

pub struct LinkWatcherSpec {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
    pub settings: LinkSettings,
}

impl ChildSpec for LinkWatcherSpec {
    fn kind(&self) -> &'static str {
        "link_watcher"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = LinkWatcher {
            ledger: self.ledger.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            supervisor: supervisor.clone().into(),
        };
        spawn_linked(actor, supervisor)
    }
}
