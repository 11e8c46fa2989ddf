//! Which failures the current voters survive. A Raft cluster keeps working
//! while a majority of voters is up, so it survives the loss of a group of
//! voters (one node, every node of one zone, every node of one cloud) if the
//! voters outside that group still form a majority.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Member, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementReport {
    pub voters: usize,
    /// Voters needed for a quorum.
    pub majority: usize,
    pub survives_node_loss: bool,
    pub survives_zone_loss: bool,
    pub survives_cloud_loss: bool,
    /// Voters per zone and per cloud.
    pub zones: BTreeMap<String, usize>,
    pub clouds: BTreeMap<String, usize>,
    /// What to fix, in words, when something is not survived.
    pub warnings: Vec<String>,
}

fn survives(groups: &BTreeMap<String, usize>, voters: usize, majority: usize) -> Option<String> {
    groups
        .iter()
        .find(|(_, &n)| voters - n < majority)
        .map(|(name, n)| name.clone() + &format!(" ({n} of {voters} voters)"))
}

/// The report for `voters` with their labels. An empty label counts as its
/// own group (unknown placement is not assumed to be spread out).
pub fn report(voters: &BTreeMap<NodeId, Member>) -> PlacementReport {
    let n = voters.len();
    let majority = n / 2 + 1;
    let mut zones = BTreeMap::new();
    let mut clouds = BTreeMap::new();
    for m in voters.values() {
        *zones.entry(m.zone.clone()).or_insert(0) += 1;
        *clouds.entry(m.cloud.clone()).or_insert(0) += 1;
    }
    let mut warnings = Vec::new();
    let survives_node_loss = n > majority;
    if !survives_node_loss {
        warnings.push(format!(
            "{n} voter(s): losing any one node loses the quorum; run at least 3"
        ));
    }
    let zone_gap = survives(&zones, n, majority);
    if let Some(z) = &zone_gap {
        warnings.push(format!("losing zone {z} loses the quorum"));
    }
    let cloud_gap = survives(&clouds, n, majority);
    if let Some(c) = &cloud_gap {
        warnings.push(format!("losing cloud {c} loses the quorum"));
    }
    PlacementReport {
        voters: n,
        majority,
        survives_node_loss,
        survives_zone_loss: n > 0 && zone_gap.is_none(),
        survives_cloud_loss: n > 0 && cloud_gap.is_none(),
        zones,
        clouds,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(zone: &str, cloud: &str) -> Member {
        Member {
            zone: zone.into(),
            cloud: cloud.into(),
            ..Default::default()
        }
    }

    #[test]
    fn five_voters_over_three_zones_and_three_clouds_survive_everything() {
        let voters: BTreeMap<_, _> = [
            (1, member("a", "aws")),
            (2, member("b", "gcp")),
            (3, member("c", "azure")),
            (4, member("a", "aws")),
            (5, member("b", "gcp")),
        ]
        .into();
        let r = report(&voters);
        assert!(
            r.survives_node_loss && r.survives_zone_loss && r.survives_cloud_loss,
            "{r:?}"
        );
        assert_eq!(r.majority, 3);
    }

    #[test]
    fn a_cloud_holding_a_majority_is_reported_as_a_single_point_of_failure() {
        let voters: BTreeMap<_, _> = [
            (1, member("a", "aws")),
            (2, member("b", "aws")),
            (3, member("c", "gcp")),
        ]
        .into();
        let r = report(&voters);
        assert!(r.survives_node_loss && r.survives_zone_loss);
        assert!(!r.survives_cloud_loss);
        assert!(
            r.warnings.iter().any(|w| w.contains("aws")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn one_voter_survives_nothing() {
        let voters: BTreeMap<_, _> = [(1, member("a", "aws"))].into();
        let r = report(&voters);
        assert!(!r.survives_node_loss && !r.survives_zone_loss && !r.survives_cloud_loss);
    }
}
