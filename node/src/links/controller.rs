//! The LinkController actor: the driver of the link-ownership plan
//! (`geiger_control_plane::link_controller::plan`, pure, in the ledger's
//! crate beside the leases it decides).
//!
//! It runs on every node, under the supervisor, and acts only while the
//! cluster view says this node leads. After every probe round the view
//! publishes it hands links, leases, members (with their zone labels), the
//! members alive in the view (answered within `dead_after`) and the time to
//! the plan, and proposes the resulting `AssignLease` commands as one batch.
//!
//! Safety never depends on the view: a wrong "dead" verdict only moves a
//! link early; the epoch's compare-and-set and the state machine's epoch
//! check keep the old owner from appending anything after the move.

use std::time::{Duration, Instant};

use geiger_control_plane::state_machine::links::plan::{plan, ControllerInput};
use geiger_control_plane::{ControlPlane, Outcome};
use geiger_protocol::now_unix_ms;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::settings::LinkSettings;
use crate::actors::supervisor::{spawn_linked, ChildSpec, SpawnFuture};
use crate::cluster_view::{ClusterView, ViewReceiver};

pub struct LinkController {
    pub ledger: ControlPlane,
    pub settings: LinkSettings,
    pub view: ViewReceiver,
    /// A member silent for this long is dead (the view's setting).
    pub dead_after: Duration,
}

pub struct ControllerState {
    /// Turns every view the cluster view publishes into a `Plan`.
    follower: JoinHandle<()>,
    /// The probe round planned last, so a queued `Plan` for the same round
    /// does nothing.
    planned: Option<Instant>,
}

pub enum ControllerMsg {
    /// A new view is out: plan from it.
    Plan,
}

impl LinkController {
    async fn plan(&self, view: &ClusterView) -> Result<(), ActorProcessingErr> {
        let me = self.settings.node_id;
        let links = self.ledger.links()?;
        let devices: Vec<String> = links.into_iter().map(|l| l.device).collect();
        if devices.is_empty() {
            return Ok(());
        }
        let leases = self.ledger.leases()?;
        let alive = view.alive(self.dead_after, Instant::now());
        let assignments = plan(&ControllerInput {
            devices: &devices,
            leases: &leases,
            members: &view.members,
            alive: &alive,
            now_ms: now_unix_ms(),
            lease_ms: self.settings.lease.as_millis() as u64,
            leader: Some(me),
        });
        if assignments.is_empty() {
            return Ok(());
        }
        let commands = assignments.iter().map(|a| a.command.clone()).collect();
        let outcomes = self.ledger.write_batch(commands).await?;
        for (a, outcome) in assignments.iter().zip(outcomes) {
            match outcome {
                Outcome::Lease(lease) => tracing::info!(
                    device = %a.device,
                    from = ?a.from,
                    to = a.to,
                    epoch = lease.epoch,
                    reason = a.reason.as_str(),
                    "link assigned"
                ),
                other => tracing::warn!(device = %a.device, ?other, "link assignment refused"),
            }
        }
        Ok(())
    }
}

impl Actor for LinkController {
    type Msg = ControllerMsg;
    type State = ControllerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<ControllerMsg>,
        _: (),
    ) -> Result<ControllerState, ActorProcessingErr> {
        let mut view = self.view.clone();
        let follower = tokio::spawn(async move {
            while view.changed().await.is_ok() {
                if myself.cast(ControllerMsg::Plan).is_err() {
                    return;
                }
            }
        });
        Ok(ControllerState {
            follower,
            planned: None,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<ControllerMsg>,
        ControllerMsg::Plan: ControllerMsg,
        state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        let view = self.view.borrow().clone();
        // Only the leader plans, and only from a probe round it has not
        // planned from yet.
        let Some(round) = view.probe.as_ref().filter(|_| view.is_leader()) else {
            return Ok(());
        };
        if state.planned == Some(round.at) {
            return Ok(());
        }
        state.planned = Some(round.at);
        if let Err(e) = self.plan(&view).await {
            tracing::warn!(error = %e, "link controller could not plan");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<ControllerMsg>,
        state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        state.follower.abort();
        Ok(())
    }
}

pub struct LinkControllerSpec {
    pub ledger: ControlPlane,
    pub settings: LinkSettings,
    pub view: ViewReceiver,
    pub dead_after: Duration,
}

impl ChildSpec for LinkControllerSpec {
    fn kind(&self) -> &'static str {
        "link_controller"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = LinkController {
            ledger: self.ledger.clone(),
            settings: self.settings.clone(),
            view: self.view.clone(),
            dead_after: self.dead_after,
        };
        spawn_linked(actor, supervisor)
    }
}
