//! The cluster feature level: which state and commands the whole cluster
//! can apply, so that replicas of different builds never apply one entry
//! differently while an upgrade rolls through.
//!
//! - Each build knows the levels up to [`FeatureLevel::SUPPORTED`] and says
//!   so on every internal answer ([`FEATURE_HEADER`]). An answer without
//!   the header comes from a build older than levels: [`FeatureLevel::BASE`].
//! - The level in force is kept in the ledger
//!   (`crate::state_machine::features`) and only rises, by
//!   [`crate::Command::RaiseFeatureLevel`]. The leader proposes it once
//!   every member has lately answered with that level or higher
//!   ([`PeerBuilds`], [`run`]). What a level adds takes effect from that
//!   entry on, on every replica alike; until then every build applies as
//!   the oldest member would.
//! - A build that finds a ledger above what it supports refuses to open
//!   it, and one asked to apply a raise beyond it stops, saying which build
//!   it needs (docs/ARCHITECTURE.md, "Cluster feature level").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::replica::Replica;
use crate::types::{Command, NodeId};

/// Header on every internal answer: the answering build's
/// [`FeatureLevel::SUPPORTED`].
pub const FEATURE_HEADER: &str = "x-geiger-feature-level";

/// How long a member's report counts. The leader hears every member at
/// each heartbeat (25-100 ms), so this is many reports long, and short so
/// that a member swapped for an older build is heard as such before a
/// raise could count on the build it had before.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// A set of apply rules every replica follows from the entry that raised
/// the ledger to it. Levels only grow; a higher one includes the lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeatureLevel(pub u32);

impl FeatureLevel {
    /// Builds without levels (up to and after commit 0de75ae, until this
    /// module): every command up to `RotateSealedKey`.
    pub const BASE: Self = FeatureLevel(1);
    /// Apply keeps the bytes of exhausted signed chunks and the public keys
    /// of removed links (`crate::state_machine::provenance`), and knows
    /// [`Command::RaiseFeatureLevel`].
    pub const REVEAL: Self = FeatureLevel(2);
    /// The highest level this build can apply.
    pub const SUPPORTED: Self = Self::REVEAL;

    /// The level an internal answer's [`FEATURE_HEADER`] states: `None`
    /// (no header) is a build older than levels. A value that does not
    /// parse counts as the lowest level, which can only hold a raise back.
    pub fn from_header(value: Option<&str>) -> Self {
        value
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map_or(Self::BASE, FeatureLevel)
    }
}

impl std::fmt::Display for FeatureLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What each member last said it supports, as heard in answers to this
/// node's calls (the leader calls every member at each heartbeat).
#[derive(Debug, Default)]
pub(crate) struct PeerBuilds {
    heard: Mutex<BTreeMap<NodeId, (FeatureLevel, Instant)>>,
}

impl PeerBuilds {
    pub(crate) fn heard(&self, peer: NodeId, level: FeatureLevel) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let previous = heard.insert(peer, (level, Instant::now()));
        if previous.map(|(l, _)| l) != Some(level) {
            tracing::info!(
                peer,
                level = level.0,
                "member's build supports feature level"
            );
        }
    }

    /// What `peer` last said it supports, if it said so lately.
    pub(crate) fn level_of(&self, peer: NodeId) -> Option<FeatureLevel> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard
            .get(&peer)
            .filter(|(_, at)| at.elapsed() < FRESH_FOR)
            .map(|(level, _)| *level)
    }

    /// The highest level every one of `members` supports, this build
    /// included; `None` while some member other than `me` has not answered
    /// lately (its build is unknown, so nothing may rise).
    pub(crate) fn common_level(
        &self,
        me: NodeId,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Option<FeatureLevel> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let mut common = FeatureLevel::SUPPORTED;
        for id in members {
            if id == me {
                continue;
            }
            match heard.get(&id) {
                Some((level, at)) if at.elapsed() < FRESH_FOR => common = common.min(*level),
                _ => return None,
            }
        }
        Some(common)
    }
}

/// The leader's part: while the ledger is below this build's level, look
/// every `every` whether every member now supports more, and if so propose
/// the raise. Ends once the ledger is at [`FeatureLevel::SUPPORTED`]
/// (levels never fall).
pub(crate) async fn run(replica: Arc<Replica>, builds: Arc<PeerBuilds>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match raise_if_every_member_can(&replica, &builds).await {
            Ok(level) if level >= FeatureLevel::SUPPORTED => return,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "feature level not raised yet"),
        }
    }
}

/// One look; returns the ledger's level as it stands afterwards.
async fn raise_if_every_member_can(
    replica: &Replica,
    builds: &PeerBuilds,
) -> Result<FeatureLevel, String> {
    let current = crate::state_machine::features::feature_level(&replica.shared.db())
        .map_err(|e| e.to_string())?;
    if current >= FeatureLevel::SUPPORTED {
        return Ok(current);
    }
    let members: Vec<NodeId> = {
        let metrics = replica.raft.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(replica.id) {
            return Ok(current);
        }
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    };
    let Some(common) = builds.common_level(replica.id, members) else {
        return Ok(current);
    };
    if common <= current {
        return Ok(current);
    }
    let command = Command::RaiseFeatureLevel { level: common.0 };
    replica
        .propose_as_leader(vec![command])
        .await
        .map_err(|e| format!("{e:?}"))?;
    tracing::info!(
        from = current.0,
        to = common.0,
        "every member supports a higher feature level: the cluster's is raised"
    );
    Ok(common)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_the_header_comes_from_a_build_older_than_levels() {
        assert_eq!(FeatureLevel::from_header(None), FeatureLevel::BASE);
        assert_eq!(FeatureLevel::from_header(Some("2")), FeatureLevel(2));
        assert_eq!(FeatureLevel::from_header(Some("x")), FeatureLevel::BASE);
    }

    #[test]
    fn the_common_level_waits_for_every_member_and_follows_the_oldest() {
        let builds = PeerBuilds::default();
        assert_eq!(
            builds.common_level(1, [1]),
            Some(FeatureLevel::SUPPORTED),
            "alone, a node's own build decides"
        );
        builds.heard(2, FeatureLevel::SUPPORTED);
        assert_eq!(builds.common_level(1, [1, 2, 3]), None, "3 not heard");
        builds.heard(3, FeatureLevel::BASE);
        assert_eq!(builds.common_level(1, [1, 2, 3]), Some(FeatureLevel::BASE));
        builds.heard(3, FeatureLevel(FeatureLevel::SUPPORTED.0 + 5));
        assert_eq!(
            builds.common_level(1, [1, 2, 3]),
            Some(FeatureLevel::SUPPORTED),
            "never above this build's own level"
        );
    }
}
