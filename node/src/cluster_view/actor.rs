//! The actor that owns the [`ClusterView`]: it follows openraft's metrics
//! for leadership and, while this node leads, probes the other members
//! once per tick.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use geiger_control_plane::{ControlPlane, NodeId};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ClusterView, ProbeRound, ViewSettings};
use crate::actors::supervisor::{spawn_linked, ChildSpec, SpawnFuture};
use crate::peer_api::PeerApi;

/// The actor that owns the view.
pub struct ClusterViewActor {
    ledger: ControlPlane,
    settings: ViewSettings,
    publish: Arc<watch::Sender<Arc<ClusterView>>>,
    /// Members' public API, over TLS when this node's is.
    peers: PeerApi,
}

pub enum ViewMsg {
    /// Time for a probe round (while leading).
    Tick,
    /// openraft's leader or term changed.
    Leadership,
}

pub struct ViewState {
    leading_since: Option<Instant>,
    last_answer: BTreeMap<NodeId, Instant>,
    /// Forwards leadership changes from openraft's metrics.
    watcher: JoinHandle<()>,
}

impl ClusterViewActor {
    fn leadership(&self) -> (Option<NodeId>, u64) {
        let m = self.ledger.raft().metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    }

    /// Reads leadership and, while leading, the members, adds the probe
    /// round if one was made, and publishes the view if it differs from the
    /// last one. A new leadership starts with no round.
    fn refresh(&self, state: &mut ViewState, round: Option<BTreeSet<NodeId>>) {
        let me = self.ledger.node_id();
        let (leader, term) = self.leadership();
        let mut view = ClusterView {
            leader,
            term,
            ..ClusterView::unknown(me)
        };
        if !view.is_leader() {
            state.leading_since = None;
            state.last_answer.clear();
        } else {
            let now = Instant::now();
            view.leading_since = Some(*state.leading_since.get_or_insert(now));
            match self.ledger.status() {
                Ok(status) => {
                    view.members = status.members;
                    view.voters = status.voters;
                }
                // Publishing no members would read as every member gone:
                // keep the last view until the ledger answers again.
                Err(e) => {
                    tracing::warn!(error = %e, "cluster view could not read the members");
                    return;
                }
            }
            let (previous, same_leadership) = {
                let published = self.publish.borrow();
                (
                    published.probe.clone(),
                    published.leading_since == view.leading_since,
                )
            };
            view.probe = match round {
                Some(answered) => {
                    for id in &answered {
                        state.last_answer.insert(*id, now);
                    }
                    Some(ProbeRound {
                        at: now,
                        answered,
                        last_answer: state.last_answer.clone(),
                    })
                }
                // Same leadership: the round already published still holds.
                None if same_leadership => previous,
                None => None,
            };
        }
        self.publish.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }

    /// Probes every other member once; the ones that answered.
    async fn probe(&self) -> BTreeSet<NodeId> {
        let me = self.ledger.node_id();
        let members = self.publish.borrow().members.clone();
        let mut probes = tokio::task::JoinSet::new();
        for (id, member) in members.into_iter().filter(|(id, _)| *id != me) {
            let request = self
                .peers
                .client()
                .get(self.peers.url(&member.api_addr, "/healthz"))
                .timeout(self.settings.probe_timeout)
                .send();
            probes.spawn(async move {
                (
                    id,
                    matches!(request.await, Ok(r) if r.status().is_success()),
                )
            });
        }
        let mut answered = BTreeSet::new();
        while let Some(result) = probes.join_next().await {
            if let Ok((id, true)) = result {
                answered.insert(id);
            }
        }
        answered
    }
}

impl Actor for ClusterViewActor {
    type Msg = ViewMsg;
    type State = ViewState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<ViewMsg>,
        _: (),
    ) -> Result<ViewState, ActorProcessingErr> {
        // Only a new leader or term is news here. openraft's full metrics
        // change with every entry and every heartbeat's answer (the time
        // since the quorum's last acknowledgement), so watching them woke
        // this task dozens of times a second on an idle leader; its server
        // metrics change only with the vote, role, leader and membership.
        let mut metrics = self.ledger.raft().server_metrics();
        let forward = myself.clone();
        let watcher = tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader, m.vote.leader_id().get_term())
                };
                if last != Some(now) {
                    last = Some(now);
                    if forward.cast(ViewMsg::Leadership).is_err() {
                        return;
                    }
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        myself.send_after(self.settings.tick, || ViewMsg::Tick);
        Ok(ViewState {
            leading_since: None,
            last_answer: BTreeMap::new(),
            watcher,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ViewMsg>,
        message: ViewMsg,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ViewMsg::Leadership => self.refresh(state, None),
            ViewMsg::Tick => {
                if self.leadership().0 == Some(self.ledger.node_id()) {
                    let answered = self.probe().await;
                    self.refresh(state, Some(answered));
                } else {
                    self.refresh(state, None);
                }
                // Scheduled after the round, so slow probes never pile up.
                myself.send_after(self.settings.tick, || ViewMsg::Tick);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<ViewMsg>,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        state.watcher.abort();
        Ok(())
    }
}

pub struct ClusterViewSpec {
    pub ledger: ControlPlane,
    pub settings: ViewSettings,
    pub publish: Arc<watch::Sender<Arc<ClusterView>>>,
    pub peers: PeerApi,
}

impl ChildSpec for ClusterViewSpec {
    fn kind(&self) -> &'static str {
        "cluster_view"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = ClusterViewActor {
            ledger: self.ledger.clone(),
            settings: self.settings,
            publish: self.publish.clone(),
            peers: self.peers.clone(),
        };
        spawn_linked(actor, supervisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use geiger_control_plane::{ControlPlaneConfig, Member};
    use tokio::net::TcpListener;

    use crate::cluster_view::{channel, ViewReceiver};

    const MS: Duration = Duration::from_millis(1);

    /// One replica on loopback: its Raft listener, a `/healthz` listener
    /// that can be silenced, and its own cluster view.
    struct Replica {
        ledger: ControlPlane,
        member: Member,
        raft_server: JoinHandle<()>,
        healthz: JoinHandle<()>,
        view: ViewReceiver,
        actor: ActorRef<ViewMsg>,
    }

    async fn replica(id: NodeId, dir: &std::path::Path) -> Replica {
        let raft_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let member = Member {
            rpc_addr: raft_listener.local_addr().unwrap().to_string(),
            api_addr: api_listener.local_addr().unwrap().to_string(),
            zone: format!("z{id}"),
            ..Member::default()
        };
        let config = ControlPlaneConfig::new(id, member.clone(), "view-test-secret");
        let ledger = ControlPlane::open(config, &dir.join(id.to_string()))
            .await
            .unwrap();
        let router = ledger.router();
        let raft_server = tokio::spawn(async move {
            let _ = axum::serve(raft_listener, router).await;
        });
        let healthz = tokio::spawn(async move {
            let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            let _ = axum::serve(api_listener, app).await;
        });
        let (publish, view) = channel(id);
        let actor = ClusterViewActor {
            ledger: ledger.clone(),
            settings: ViewSettings::for_lease(Duration::from_secs(3)),
            publish,
            peers: PeerApi::default(),
        };
        let (actor, _) = Actor::spawn(None, actor, ()).await.unwrap();
        Replica {
            ledger,
            member,
            raft_server,
            healthz,
            view,
            actor,
        }
    }

    /// Waits until some replica's view satisfies `what`; its index.
    async fn until(replicas: &[Replica], what: impl Fn(&ClusterView) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = replicas.iter().position(|r| what(&r.view.borrow())) {
                return i;
            }
            assert!(Instant::now() < deadline, "the views never got there");
            tokio::time::sleep(20 * MS).await;
        }
    }

    /// Waits until every replica's view names `leader`.
    async fn agree(replicas: &[Replica], leader: NodeId) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !replicas
            .iter()
            .all(|r| r.view.borrow().leader == Some(leader))
        {
            assert!(
                Instant::now() < deadline,
                "the views never agreed on the leader"
            );
            tokio::time::sleep(20 * MS).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_stops_answering_goes_down_and_a_new_leader_sees_itself_lead() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for id in 1..=3 {
            replicas.push(replica(id, dir.path()).await);
        }
        let voters = replicas
            .iter()
            .zip(1..)
            .map(|(r, id)| (id, r.member.clone()))
            .collect();
        replicas[0].ledger.bootstrap(voters).await.unwrap();

        // The leader's view: it leads, every voter answers.
        let all = |v: &ClusterView| v.is_leader() && v.reachable_voters() == Some(3);
        let leader = until(&replicas, all).await;
        let first_term = replicas[leader].view.borrow().term;
        agree(&replicas, leader as u64 + 1).await;
        for (i, r) in replicas.iter().enumerate() {
            let view = r.view.borrow();
            assert_eq!(view.leader, Some(leader as u64 + 1));
            assert_eq!(view.is_leader(), i == leader, "replica {i}");
            assert!(
                i == leader || view.probe.is_none(),
                "only the leader probes"
            );
        }

        // A follower's process stops answering: the next rounds say so,
        // and past `dead_after` it is no longer alive.
        let silent = (leader + 1) % 3;
        let silent_id = silent as u64 + 1;
        replicas[silent].healthz.abort();
        let dead_after = ViewSettings::for_lease(Duration::from_secs(3)).dead_after;
        let gone = |v: &ClusterView| {
            v.is_leader()
                && v.reachable_voters() == Some(2)
                && !v.alive(dead_after, Instant::now()).contains(&silent_id)
        };
        assert_eq!(until(&replicas, gone).await, leader);

        // The leader goes away: another replica's view sees itself lead.
        replicas[leader].ledger.shutdown().await;
        replicas[leader].raft_server.abort();
        replicas[leader].actor.stop(None);
        let others: Vec<Replica> = replicas
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| (i != leader).then_some(r))
            .collect();
        let new_leader = until(&others, |v| v.is_leader() && v.term > first_term).await;
        let theirs = others[new_leader].view.borrow().node_id;
        assert_ne!(theirs, leader as u64 + 1);
        agree(&others, theirs).await;
        for r in others {
            r.actor.stop(None);
            r.ledger.shutdown().await;
        }
    }
}
