//! The lease plan: which live member should own each link. Pure: no I/O,
//! no clock.
//!
//! The leader runs a driver (the node's link-controller actor) that
//! gathers the inputs (registered links, leases, members and their zone
//! labels, which members answer its probes, the time) and proposes what
//! [`plan`] returns. The rules:
//!
//! - Every registered link has exactly one owner: a lease with a fencing
//!   epoch. A link without a lease gets one.
//! - A lease stays where it is while it runs and its owner is a live
//!   member. Healthy links are never moved to rebalance (a move costs the
//!   link a reconnect and re-sent chunks for no gain in safety).
//! - A lease moves when it expired (the owner stopped renewing it: dead,
//!   paused, cut off, or its link unhealthy), when its owner is seen dead
//!   before that (faster failover: safety comes from the epoch, not from
//!   the lease running out), or when its owner left the membership.
//! - A new owner is the live member that keeps the spread even: fewest
//!   links in its zone first, then fewest on the node, then not the leader,
//!   and the previous owner only when nobody else is alive (it stopped
//!   renewing for a reason).
//! - Every assignment is an `AssignLease` with `expected_epoch` set to the
//!   epoch it replaces (0 for none): the state machine's compare-and-set
//!   bumps the epoch, and two controllers (an old leader and a new one)
//!   cannot both win.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Command, Lease, Member, NodeId};

/// What the controller sees on one tick.
#[derive(Debug, Clone)]
pub struct ControllerInput<'a> {
    /// Registered links, by device id.
    pub devices: &'a [String],
    pub leases: &'a [Lease],
    /// Current members (voters and learners) with their labels.
    pub members: &'a BTreeMap<NodeId, Member>,
    /// Members that answered the leader recently.
    pub alive: &'a BTreeSet<NodeId>,
    /// The leader's clock, Unix ms (the one that stamps the batch).
    pub now_ms: u64,
    /// Duration of a new lease.
    pub lease_ms: u64,
    /// The node planning (the leader): among equally loaded candidates it
    /// takes a link last, so losing the leader rarely also loses a link
    /// owner (which would add an election to the failover).
    pub leader: Option<NodeId>,
}

/// Why a link gets a new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The link has never had a lease.
    Unowned,
    /// The lease ran out: its owner stopped renewing it.
    Expired,
    /// The owner does not answer, though its lease still runs.
    OwnerDown,
    /// The owner is no longer a member.
    OwnerGone,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unowned => "unowned",
            Reason::Expired => "expired",
            Reason::OwnerDown => "owner_down",
            Reason::OwnerGone => "owner_gone",
        }
    }
}

/// One decision: give `device` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub device: String,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub reason: Reason,
    /// The `AssignLease` to propose.
    pub command: Command,
}

/// Does this lease need a new owner, and why?
fn needs_owner(lease: Option<&Lease>, input: &ControllerInput<'_>) -> Option<Reason> {
    let Some(lease) = lease else {
        return Some(Reason::Unowned);
    };
    if !input.members.contains_key(&lease.owner) {
        Some(Reason::OwnerGone)
    } else if input.now_ms > lease.expires_at_ms {
        Some(Reason::Expired)
    } else if !input.alive.contains(&lease.owner) {
        Some(Reason::OwnerDown)
    } else {
        None
    }
}

/// The assignments to propose now, in device order.
pub fn plan(input: &ControllerInput<'_>) -> Vec<Assignment> {
    let leases: BTreeMap<&str, &Lease> = input
        .leases
        .iter()
        .map(|l| (l.device.as_str(), l))
        .collect();
    let zone_of = |id: &NodeId| input.members.get(id).map_or("", |m| m.zone.as_str());
    let candidates: Vec<NodeId> = input
        .members
        .keys()
        .filter(|id| input.alive.contains(id))
        .copied()
        .collect();

    // Load from the leases that stay where they are.
    let mut node_load: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut zone_load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut devices: Vec<&String> = input.devices.iter().collect();
    devices.sort();
    devices.dedup();
    let mut todo = Vec::new();
    for device in devices {
        let lease = leases.get(device.as_str()).copied();
        match needs_owner(lease, input) {
            None => {
                if let Some(l) = lease {
                    *node_load.entry(l.owner).or_default() += 1;
                    *zone_load.entry(zone_of(&l.owner)).or_default() += 1;
                }
            }
            Some(reason) => todo.push((device, lease, reason)),
        }
    }

    let mut out = Vec::new();
    for (device, lease, reason) in todo {
        let previous = lease.map(|l| l.owner);
        let best = candidates.iter().min_by_key(|id| {
            (
                Some(**id) == previous,
                zone_load.get(zone_of(id)).copied().unwrap_or(0),
                node_load.get(*id).copied().unwrap_or(0),
                Some(**id) == input.leader,
                **id,
            )
        });
        let Some(&to) = best else {
            // Nobody alive to take it: leave it; the next tick tries again.
            continue;
        };
        *node_load.entry(to).or_default() += 1;
        *zone_load.entry(zone_of(&to)).or_default() += 1;
        out.push(Assignment {
            device: device.clone(),
            from: previous,
            to,
            reason,
            command: Command::AssignLease {
                device: device.clone(),
                owner: to,
                expected_epoch: Some(lease.map_or(0, |l| l.epoch)),
                duration_ms: input.lease_ms,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(zone: &str) -> Member {
        Member {
            zone: zone.into(),
            ..Member::default()
        }
    }

    fn members(zones: &[(NodeId, &str)]) -> BTreeMap<NodeId, Member> {
        zones.iter().map(|(id, z)| (*id, member(z))).collect()
    }

    fn lease(device: &str, owner: NodeId, epoch: u64, expires_at_ms: u64) -> Lease {
        Lease {
            device: device.into(),
            owner,
            epoch,
            expires_at_ms,
        }
    }

    fn devices(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("dev_{i}")).collect()
    }

    fn owners(plan: &[Assignment]) -> Vec<NodeId> {
        plan.iter().map(|a| a.to).collect()
    }

    #[test]
    fn every_unowned_link_gets_exactly_one_owner_spread_over_zones_and_nodes() {
        let m = members(&[(1, "a"), (2, "a"), (3, "b")]);
        let alive: BTreeSet<NodeId> = [1, 2, 3].into();
        let devs = devices(3);
        let input = ControllerInput {
            devices: &devs,
            leases: &[],
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 3);
        // Zone b (one node) gets one, zone a's two nodes one each.
        let mut to = owners(&plan);
        to.sort();
        assert_eq!(to, vec![1, 2, 3]);
        for a in &plan {
            assert_eq!(a.reason, Reason::Unowned);
            assert_eq!(
                a.command,
                Command::AssignLease {
                    device: a.device.clone(),
                    owner: a.to,
                    expected_epoch: Some(0),
                    duration_ms: 3000,
                }
            );
        }
    }

    #[test]
    fn a_running_lease_of_a_live_owner_is_left_alone_and_counts_toward_the_spread() {
        let m = members(&[(1, "a"), (2, "b"), (3, "c")]);
        let alive: BTreeSet<NodeId> = [1, 2, 3].into();
        let devs = devices(2);
        let leases = [lease("dev_0", 1, 4, 5000)];
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].device, "dev_1");
        assert_eq!(plan[0].to, 2, "not node 1, which already owns a link");
    }

    #[test]
    fn an_expired_lease_moves_to_another_node_under_compare_and_set_of_its_epoch() {
        let m = members(&[(1, "a"), (2, "b")]);
        let alive: BTreeSet<NodeId> = [1, 2].into();
        let devs = devices(1);
        let leases = [lease("dev_0", 1, 7, 5000)];
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &alive,
            now_ms: 5001,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].from, plan[0].to), (Some(1), 2));
        assert_eq!(plan[0].reason, Reason::Expired);
        assert!(matches!(
            plan[0].command,
            Command::AssignLease {
                expected_epoch: Some(7),
                owner: 2,
                ..
            }
        ));
        // At the instant of expiry the lease still holds.
        let input = ControllerInput {
            now_ms: 5000,
            ..input
        };
        assert!(super::plan(&input).is_empty());
    }

    #[test]
    fn a_dead_owner_loses_its_link_before_its_lease_runs_out() {
        let m = members(&[(1, "a"), (2, "b"), (3, "c")]);
        let alive: BTreeSet<NodeId> = [2, 3].into();
        let devs = devices(2);
        let leases = [lease("dev_0", 1, 3, 9000), lease("dev_1", 2, 1, 9000)];
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].device, "dev_0");
        assert_eq!(plan[0].reason, Reason::OwnerDown);
        assert_eq!(plan[0].to, 3, "node 2 already owns dev_1");
    }

    #[test]
    fn the_previous_owner_gets_its_link_back_only_when_nobody_else_is_alive() {
        let m = members(&[(1, "a"), (2, "b")]);
        let devs = devices(1);
        let leases = [lease("dev_0", 1, 2, 100)];
        let only_one: BTreeSet<NodeId> = [1].into();
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &only_one,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        assert_eq!(owners(&plan(&input)), vec![1]);
        let nobody = BTreeSet::new();
        let input = ControllerInput {
            alive: &nobody,
            ..input
        };
        assert!(plan(&input).is_empty());
    }

    #[test]
    fn an_owner_that_left_the_membership_loses_its_link_and_unregistered_leases_are_ignored() {
        let m = members(&[(2, "b")]);
        let alive: BTreeSet<NodeId> = [1, 2].into();
        let devs = devices(1);
        let leases = [lease("dev_0", 1, 5, 9000), lease("dev_gone", 1, 1, 0)];
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].reason, Reason::OwnerGone);
        assert_eq!((plan[0].device.as_str(), plan[0].to), ("dev_0", 2));
    }

    #[test]
    fn the_leader_takes_a_link_only_when_the_others_are_as_loaded() {
        let m = members(&[(1, "a"), (2, "b"), (3, "c")]);
        let alive: BTreeSet<NodeId> = [1, 2, 3].into();
        let devs = devices(3);
        let input = ControllerInput {
            devices: &devs,
            leases: &[],
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: Some(1),
        };
        // dev_0 and dev_1 go to the followers, dev_2 to the leader.
        assert_eq!(owners(&plan(&input)), vec![2, 3, 1]);
    }

    #[test]
    fn many_links_stay_balanced_when_a_zone_dies() {
        let m = members(&[(1, "a"), (2, "b"), (3, "c")]);
        let devs = devices(6);
        let leases: Vec<Lease> = devs
            .iter()
            .enumerate()
            .map(|(i, d)| lease(d, (i % 3) as u64 + 1, 1, 9000))
            .collect();
        let alive: BTreeSet<NodeId> = [2, 3].into();
        let input = ControllerInput {
            devices: &devs,
            leases: &leases,
            members: &m,
            alive: &alive,
            now_ms: 1000,
            lease_ms: 3000,
            leader: None,
        };
        let plan = plan(&input);
        assert_eq!(plan.len(), 2, "node 1's two links move");
        let mut to = owners(&plan);
        to.sort();
        assert_eq!(to, vec![2, 3], "one to each survivor");
    }
}
