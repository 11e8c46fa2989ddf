//! The cluster view: this node's one picture of who leads and which members
//! answer, owned by one actor (as Garage's `rpc::system` is the one owner of
//! peer status there) and read by everything that needs it.
//!
//! - **Leadership** comes from one source, openraft's metrics: this node
//!   leads while `current_leader` is itself. A change is published at once.
//! - **Liveness**: while this node leads, every `tick` the actor probes every
//!   other member's `/healthz` (the process answers on its advertised API
//!   address) concurrently, with one client and one timeout, and publishes
//!   the round. Off the leader nothing is probed.
//!
//! Each publication is an immutable [`ClusterView`] on a tokio watch
//! channel. Its readers: Health (`geiger_raft_voters_reachable`, the
//! replication lag, both leader-only), the AlertPusher (whether to push at
//! all, `GeigerQuorumDegraded`) and the LinkController (which members are
//! alive, which it plans after every round). They all see the same answers,
//! so they cannot disagree about who is alive.
//!
//! Why probes and not openraft: openraft 0.9's metrics give the leader only
//! each follower's matched log id (`RaftMetrics::replication`), no
//! per-follower heartbeat time (that arrives in 0.10). A matched index says
//! nothing while the log is idle, and an idle log is exactly the case of a
//! cluster whose only link owner died. A probe answers in milliseconds,
//! fails at once for a killed process (connection refused) and within the
//! timeout for a paused or cut-off one. Safety never depends on this view:
//! a wrong "dead" only moves a link early, and the epoch fences the old
//! owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_control_plane::{Member, NodeId};
use tokio::sync::watch;

pub use self::actor::{ClusterViewActor, ClusterViewSpec, ViewMsg};

mod actor;

/// How often, how patiently, and after how much silence a member is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSettings {
    /// Pause between the end of one probe round and the start of the next.
    pub tick: Duration,
    /// How long one probe may take.
    pub probe_timeout: Duration,
    /// A member that has not answered for this long is dead
    /// ([`ClusterView::alive`]).
    pub dead_after: Duration,
}

impl ViewSettings {
    /// From the link lease: dead after half a lease without an answer (at
    /// least 500 ms), so an owner is replaced well before its lease would
    /// lapse; a probe gets at most half of that (and 400 ms), so one slow
    /// answer is not yet a death.
    pub fn for_lease(lease: Duration) -> Self {
        let dead_after = (lease / 2).max(Duration::from_millis(500));
        ViewSettings {
            tick: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(400).min(dead_after / 2),
            dead_after,
        }
    }
}

/// One immutable snapshot of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: NodeId,
    /// The leader this node's Raft knows of.
    pub leader: Option<NodeId>,
    pub term: u64,
    /// While this node leads: when this view first saw it lead.
    pub leading_since: Option<Instant>,
    /// While this node leads: the members (with their labels) and voters.
    pub members: BTreeMap<NodeId, Member>,
    pub voters: BTreeSet<NodeId>,
    /// While this node leads: the latest probe round (none before the first).
    pub probe: Option<ProbeRound>,
}

/// What one round of `/healthz` probes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRound {
    /// When the round finished.
    pub at: Instant,
    /// The members other than this node that answered in this round.
    pub answered: BTreeSet<NodeId>,
    /// When each member last answered, since this node began to lead.
    pub last_answer: BTreeMap<NodeId, Instant>,
}

impl ClusterView {
    /// What a node knows before it has looked: nothing.
    pub fn unknown(node_id: NodeId) -> Self {
        ClusterView {
            node_id,
            leader: None,
            term: 0,
            leading_since: None,
            members: BTreeMap::new(),
            voters: BTreeSet::new(),
            probe: None,
        }
    }

    /// Whether this node is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.node_id)
    }

    /// Voters that answered the latest probe round, this node included;
    /// `None` off the leader or before the first round.
    pub fn reachable_voters(&self) -> Option<usize> {
        let probe = self.probe.as_ref()?;
        let own = usize::from(self.voters.contains(&self.node_id));
        let others = self
            .voters
            .iter()
            .filter(|id| **id != self.node_id && probe.answered.contains(id))
            .count();
        Some(own + others)
    }

    /// The members alive at `now`: this node, and every member that
    /// answered within `dead_after`. Right after this node began to lead,
    /// every member gets the benefit of the doubt for one `dead_after`, so
    /// a single lost probe does not move links.
    pub fn alive(&self, dead_after: Duration, now: Instant) -> BTreeSet<NodeId> {
        let recent = |t: Instant| now.saturating_duration_since(t) < dead_after;
        let grace = self.leading_since.is_some_and(recent);
        let last_answer = self.probe.as_ref().map(|p| &p.last_answer);
        self.members
            .keys()
            .copied()
            .filter(|id| {
                *id == self.node_id
                    || grace
                    || last_answer
                        .and_then(|l| l.get(id))
                        .is_some_and(|t| recent(*t))
            })
            .chain(std::iter::once(self.node_id))
            .collect()
    }
}

/// The readers' end: the latest view, and a way to wait for the next.
pub type ViewReceiver = watch::Receiver<Arc<ClusterView>>;

/// The channel the view is published on; kept by the node, so a restarted
/// view actor publishes to the same readers.
pub fn channel(node_id: NodeId) -> (Arc<watch::Sender<Arc<ClusterView>>>, ViewReceiver) {
    let (tx, rx) = watch::channel(Arc::new(ClusterView::unknown(node_id)));
    (Arc::new(tx), rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn leading_view(since: Instant, probe: Option<ProbeRound>) -> ClusterView {
        ClusterView {
            leader: Some(1),
            term: 2,
            leading_since: Some(since),
            members: (1..=3).map(|id| (id, Member::default())).collect(),
            voters: (1..=3).collect(),
            probe,
            ..ClusterView::unknown(1)
        }
    }

    #[test]
    fn right_after_winning_leadership_every_member_is_alive_then_only_those_that_answer() {
        let won = Instant::now();
        let round = ProbeRound {
            at: won + 100 * MS,
            answered: [2].into(),
            last_answer: [(2, won + 100 * MS)].into(),
        };
        let view = leading_view(won, Some(round));
        let dead_after = 500 * MS;
        assert_eq!(view.alive(dead_after, won + 400 * MS), [1, 2, 3].into());
        assert_eq!(view.alive(dead_after, won + 550 * MS), [1, 2].into());
        // Node 2's answer ages out too; this node never does.
        assert_eq!(view.alive(dead_after, won + 700 * MS), [1].into());
    }

    #[test]
    fn reachable_voters_count_this_node_and_the_voters_that_answered_the_last_round() {
        let now = Instant::now();
        assert_eq!(leading_view(now, None).reachable_voters(), None);
        let round = ProbeRound {
            at: now,
            answered: [3, 4].into(),
            last_answer: BTreeMap::new(),
        };
        // Node 4 answered but is no voter.
        assert_eq!(leading_view(now, Some(round)).reachable_voters(), Some(2));
        assert!(!ClusterView::unknown(1).is_leader());
    }
}
