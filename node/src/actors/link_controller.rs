//! The LinkController actor: the driver of the link-ownership controller.
//!
//! It runs on every node, under the supervisor, and acts only while its node
//! is the Raft leader. Each tick it
//!
//! 1. probes every other member's `/healthz` (the process answers on its
//!    advertised API address) concurrently, with a short timeout;
//! 2. counts a member alive while its last answer is younger than
//!    `dead_after` (the leader itself always is);
//! 3. hands links, leases, members (with their zone labels), the live set
//!    and the time to the pure `geiger_control_plane::link_controller::plan`,
//!    and proposes the resulting `AssignLease` commands as one batch.
//!
//! Why probes and not openraft: openraft 0.9's metrics give the leader only
//! each follower's matched log id (`RaftMetrics::replication`), no
//! per-follower heartbeat time (that arrives in 0.10). A matched index says
//! nothing while the log is idle, and an idle log is exactly the case of a
//! cluster whose only link owner died. A probe answers in milliseconds,
//! fails at once for a killed process (connection refused) and within the
//! timeout for a paused or cut-off one.
//!
//! Safety never depends on this view: a wrong "dead" verdict only moves a
//! link early; the epoch's compare-and-set and the state machine's epoch
//! check keep the old owner from appending anything after the move.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use geiger_control_plane::link_controller::{plan, ControllerInput};
use geiger_control_plane::{ControlPlane, NodeId, Outcome};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::hardware_session::{now_ms, LinkSettings};
use super::supervisor::{ChildSpec, SpawnFuture};
use crate::peer_api::PeerApi;

pub struct LinkController {
    pub ledger: ControlPlane,
    pub settings: LinkSettings,
    pub tick: Duration,
    pub probe_timeout: Duration,
    pub dead_after: Duration,
    /// Members' public API, over TLS when this node's is.
    peers: PeerApi,
}

pub struct ControllerState {
    /// When each member last answered a probe; reset when leadership is won.
    last_seen: BTreeMap<NodeId, Instant>,
    leading: bool,
}

pub enum ControllerMsg {
    Tick,
}

impl LinkController {
    pub fn new(ledger: ControlPlane, settings: LinkSettings, peers: PeerApi) -> Self {
        let dead_after = (settings.lease / 2).max(Duration::from_millis(500));
        LinkController {
            ledger,
            tick: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(400).min(dead_after / 2),
            dead_after,
            settings,
            peers,
        }
    }

    async fn probe(&self, members: &BTreeMap<NodeId, String>) -> Vec<NodeId> {
        let probes = members.iter().map(|(id, addr)| {
            let id = *id;
            let req = self
                .peers
                .client()
                .get(self.peers.url(addr, "/healthz"))
                .timeout(self.probe_timeout)
                .send();
            async move { (id, matches!(req.await, Ok(r) if r.status().is_success())) }
        });
        let mut alive = Vec::new();
        let handles: Vec<_> = probes.map(tokio::spawn).collect();
        for h in handles {
            if let Ok((id, true)) = h.await {
                alive.push(id);
            }
        }
        alive
    }

    async fn tick(&self, state: &mut ControllerState) -> Result<(), ActorProcessingErr> {
        let me = self.settings.node_id;
        let leading = self.ledger.raft().metrics().borrow().current_leader == Some(me);
        if !leading {
            state.leading = false;
            return Ok(());
        }
        let status = self.ledger.status()?;
        if !state.leading {
            // Newly leader: everybody gets the benefit of the doubt for one
            // `dead_after`, so a single lost probe does not move links.
            state.leading = true;
            let now = Instant::now();
            state.last_seen = status.members.keys().map(|id| (*id, now)).collect();
        }
        let others: BTreeMap<NodeId, String> = status
            .members
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, m)| (*id, m.api_addr.clone()))
            .collect();
        let now = Instant::now();
        for id in self.probe(&others).await {
            state.last_seen.insert(id, now);
        }
        let mut alive: BTreeSet<NodeId> = state
            .last_seen
            .iter()
            .filter(|(_, t)| t.elapsed() < self.dead_after)
            .map(|(id, _)| *id)
            .collect();
        alive.insert(me);
        let links = self.ledger.links()?;
        let devices: Vec<String> = links.into_iter().map(|l| l.device).collect();
        if devices.is_empty() {
            return Ok(());
        }
        let leases = self.ledger.leases()?;
        let assignments = plan(&ControllerInput {
            devices: &devices,
            leases: &leases,
            members: &status.members,
            alive: &alive,
            now_ms: now_ms(),
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
        myself.send_after(self.tick, || ControllerMsg::Tick);
        Ok(ControllerState {
            last_seen: BTreeMap::new(),
            leading: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ControllerMsg>,
        ControllerMsg::Tick: ControllerMsg,
        state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = self.tick(state).await {
            tracing::warn!(error = %e, "link controller tick failed");
        }
        // Scheduled after the work, so slow probes never pile ticks up.
        myself.send_after(self.tick, || ControllerMsg::Tick);
        Ok(())
    }
}

pub struct LinkControllerSpec {
    pub ledger: ControlPlane,
    pub settings: LinkSettings,
    pub peers: PeerApi,
}

impl ChildSpec for LinkControllerSpec {
    fn kind(&self) -> &'static str {
        "hardware_session"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = LinkController::new(
            self.ledger.clone(),
            self.settings.clone(),
            self.peers.clone(),
        );
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
            Ok(r.get_cell())
        })
    }
}
