//! The control plane's alert rules, pure so they are tested without a
//! cluster: what the leader remembers between ticks ([`Observations`]) and
//! the alerts that hold now ([`assertions`]), as docs/METRICS.md ("Alerts
//! the control plane pushes") defines them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use geiger_control_plane::Status;

use super::AlertSettings;

/// How long a quarantine stays interesting.
const QUARANTINE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An alert the control plane asserts now, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assertion {
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
}

/// What the pusher remembers between ticks (leader-local, rebuilt freely).
#[derive(Default)]
pub struct Observations {
    /// device → (epoch, lease expiry, when a renewal was last seen).
    renewals: HashMap<String, (u64, u64, Instant)>,
    /// device → (time, appended chunks, quarantined chunks) samples.
    chunks: HashMap<String, VecDeque<(Instant, u64, u64)>>,
    started: Option<Instant>,
}

impl Observations {
    /// Records what the ledger says now, every owner reporting its link up.
    #[cfg(test)]
    fn observe(&mut self, status: &Status, now: Instant) {
        let up = status.leases.iter().map(|l| l.device.clone()).collect();
        self.observe_links(status, &up, now);
    }

    /// Records what the ledger says now; a lease whose expiry moved forward
    /// under the same epoch was renewed. A renewal alone is no proof of a
    /// live link (an owner renews through its session's starting grace, and
    /// a while after the device stops answering; with the device down the
    /// lease then moves every few seconds, each new owner renewing once or
    /// twice), so it counts only when the owner also reports the link up
    /// (`up`: its `geiger_link_up` is 1).
    pub(super) fn observe_links(&mut self, status: &Status, up: &HashSet<String>, now: Instant) {
        self.started.get_or_insert(now);
        for lease in &status.leases {
            let live = up.contains(&lease.device);
            let entry = self.renewals.entry(lease.device.clone()).or_insert((
                lease.epoch,
                lease.expires_at_ms,
                now,
            ));
            if entry.0 == lease.epoch && lease.expires_at_ms > entry.1 {
                let seen = if live { now } else { entry.2 };
                *entry = (lease.epoch, lease.expires_at_ms, seen);
            } else if entry.0 != lease.epoch {
                // A reassignment is not a sign of health: keep the old time.
                *entry = (lease.epoch, lease.expires_at_ms, entry.2);
            }
        }
        for device in &status.devices {
            let samples = self.chunks.entry(device.device.clone()).or_default();
            samples.push_back((now, device.appended_chunks, device.quarantined_chunks));
            while samples
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > QUARANTINE_WINDOW)
            {
                samples.pop_front();
            }
        }
    }

    /// When a renewal of `device`'s lease was last seen (or when watching began).
    fn last_renewal(&self, device: &str) -> Option<Instant> {
        self.renewals.get(device).map(|r| r.2).or(self.started)
    }

    /// (appended, quarantined) chunks in the window.
    fn window_counts(&self, device: &str) -> (u64, u64) {
        match self.chunks.get(device) {
            Some(s) if s.len() >= 2 => {
                let (first, last) = (s.front().unwrap(), s.back().unwrap());
                (
                    last.1.saturating_sub(first.1),
                    last.2.saturating_sub(first.2),
                )
            }
            _ => (0, 0),
        }
    }
}

/// The alerts that hold now. Pure, so it is tested without a cluster.
pub fn assertions(
    status: &Status,
    obs: &Observations,
    alive_voters: usize,
    settings: &AlertSettings,
    now: Instant,
) -> Vec<Assertion> {
    let base = |name: &str| {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), name.to_string());
        labels.insert("cluster".to_string(), settings.cluster.clone());
        labels.insert("source".to_string(), "control-plane".to_string());
        labels
    };
    let mut out = Vec::new();
    for device in &status.devices {
        let d = &device.device;
        let silent_for = obs
            .last_renewal(d)
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        if silent_for >= settings.link_down_after {
            let mut labels = base("GeigerLinkDown");
            labels.insert("device".into(), d.clone());
            out.push(Assertion {
                labels,
                summary: format!("Link to device {d} is down"),
                description: format!(
                    "No owner has held a healthy session with {d} for {}s; the pool ({} bytes from it) is not being refilled.",
                    silent_for.as_secs(),
                    device.pooled_bytes
                ),
            });
        }
        let (appended, quarantined) = obs.window_counts(d);
        let total = appended + quarantined;
        if quarantined >= 5 && quarantined * 100 > total {
            let mut labels = base("GeigerChunksQuarantined");
            labels.insert("device".into(), d.clone());
            labels.insert("reason".into(), "health_test".into());
            out.push(Assertion {
                labels,
                summary: format!("Device {d} fails its health tests"),
                description: format!(
                    "{quarantined} of {total} chunks from {d} were quarantined in the last 15 minutes; none of them is used."
                ),
            });
        }
    }
    let voters = status.voters.len();
    let majority = voters / 2 + 1;
    if voters > 1 && alive_voters <= majority {
        out.push(Assertion {
            labels: base("GeigerQuorumDegraded"),
            summary: "One more voter loss loses quorum".into(),
            description: format!(
                "{alive_voters} of {voters} voters answer; a majority is {majority}."
            ),
        });
    }
    let p = &status.placement;
    let multi_cloud = p.clouds.len() > 1;
    if voters > 1 && (!p.survives_zone_loss || (multi_cloud && !p.survives_cloud_loss)) {
        out.push(Assertion {
            labels: base("GeigerPlacementNotZoneSafe"),
            summary: "The voter placement does not survive the loss of a zone or cloud".into(),
            description: p.warnings.join("; "),
        });
    }
    for a in &mut out {
        let severity = if a.labels["alertname"] == "GeigerQuorumDegraded" {
            "critical"
        } else {
            "warning"
        };
        a.labels.insert("severity".into(), severity.into());
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use geiger_control_plane::{DevicePool, Lease, Member};
    use std::collections::BTreeSet;

    fn settings() -> AlertSettings {
        AlertSettings {
            alertmanagers: vec![],
            interval: Duration::from_secs(1),
            cluster: "test".into(),
            link_down_after: Duration::from_secs(10),
        }
    }

    fn status(zones: &[&str], lease_expiry: u64, appended: u64, quarantined: u64) -> Status {
        let members: BTreeMap<u64, Member> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                (
                    i as u64 + 1,
                    Member {
                        zone: z.to_string(),
                        cloud: "c".into(),
                        ..Member::default()
                    },
                )
            })
            .collect();
        let placement = geiger_control_plane::placement::report(&members);
        Status {
            node_id: 1,
            state: "Leader".into(),
            leader: Some(1),
            term: 2,
            last_log_index: Some(10),
            last_applied_index: Some(10),
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: Some(1),
            voters: members.keys().copied().collect::<BTreeSet<_>>(),
            learners: BTreeSet::new(),
            members,
            peers: vec![],
            pool_bytes: 1000,
            devices: vec![DevicePool {
                device: "dev_a".into(),
                pooled_bytes: 1000,
                used_bytes: 0,
                appended_chunks: appended,
                quarantined_chunks: quarantined,
                first_seq: Some(0),
                last_seq: Some(appended + quarantined),
            }],
            leases: vec![Lease {
                device: "dev_a".into(),
                owner: 2,
                epoch: 3,
                expires_at_ms: lease_expiry,
            }],
            placement,
            feature_level: Default::default(),
        }
    }

    fn names(a: &[Assertion]) -> Vec<&str> {
        a.iter().map(|a| a.labels["alertname"].as_str()).collect()
    }

    #[test]
    fn a_healthy_well_placed_cluster_asserts_nothing() {
        let mut obs = Observations::default();
        let t0 = Instant::now();
        let s = status(&["a", "b", "c"], 1000, 10, 0);
        obs.observe(&s, t0);
        assert!(assertions(&s, &obs, 3, &settings(), t0).is_empty());
        // Renewals keep the link up past the timeout.
        let later = t0 + Duration::from_secs(20);
        let s = status(&["a", "b", "c"], 5000, 50, 0);
        obs.observe(&s, later);
        assert!(assertions(&s, &obs, 3, &settings(), later).is_empty());
    }

    #[test]
    fn a_lease_nobody_renews_becomes_a_link_down_alert_with_stable_labels() {
        let mut obs = Observations::default();
        let t0 = Instant::now();
        let s = status(&["a", "b", "c"], 1000, 10, 0);
        obs.observe(&s, t0);
        let later = t0 + Duration::from_secs(11);
        obs.observe(&s, later);
        let a = assertions(&s, &obs, 3, &settings(), later);
        assert_eq!(names(&a), vec!["GeigerLinkDown"]);
        let labels: Vec<&str> = a[0].labels.keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            vec!["alertname", "cluster", "device", "severity", "source"]
        );
    }

    #[test]
    fn renewals_while_the_owner_reports_the_link_down_do_not_keep_it_up() {
        let mut obs = Observations::default();
        let t0 = Instant::now();
        let up: HashSet<String> = ["dev_a".to_string()].into();
        obs.observe_links(&status(&["a", "b", "c"], 1000, 10, 0), &up, t0);
        // The device is gone: the owner still renews through its grace.
        let none = HashSet::new();
        let mut s = status(&["a", "b", "c"], 1000, 10, 0);
        for i in 1..=11 {
            s.leases[0].expires_at_ms = 1000 + i * 1000;
            obs.observe_links(&s, &none, t0 + Duration::from_secs(i));
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            names(&assertions(&s, &obs, 3, &settings(), later)),
            vec!["GeigerLinkDown"]
        );
        // Back: a renewal with the link reported up clears it.
        s.leases[0].expires_at_ms = 20_000;
        obs.observe_links(&s, &up, t0 + Duration::from_secs(12));
        assert!(assertions(&s, &obs, 3, &settings(), t0 + Duration::from_secs(12)).is_empty());
    }

    #[test]
    fn many_quarantined_chunks_alert_but_a_rare_one_does_not() {
        let mut obs = Observations::default();
        let t0 = Instant::now();
        obs.observe(&status(&["a", "b", "c"], 1000, 100, 0), t0);
        let t1 = t0 + Duration::from_secs(5);
        let rare = status(&["a", "b", "c"], 2000, 1100, 1);
        obs.observe(&rare, t1);
        assert!(assertions(&rare, &obs, 3, &settings(), t1).is_empty());
        let t2 = t0 + Duration::from_secs(8);
        let stuck = status(&["a", "b", "c"], 3000, 1100, 40);
        obs.observe(&stuck, t2);
        assert_eq!(
            names(&assertions(&stuck, &obs, 3, &settings(), t2)),
            vec!["GeigerChunksQuarantined"]
        );
    }

    #[test]
    fn losing_a_voter_of_three_degrades_quorum_and_two_zones_are_not_zone_safe() {
        let mut obs = Observations::default();
        let t0 = Instant::now();
        let s = status(&["a", "b", "c"], 1000, 10, 0);
        obs.observe(&s, t0);
        let a = assertions(&s, &obs, 2, &settings(), t0);
        assert_eq!(names(&a), vec!["GeigerQuorumDegraded"]);
        assert_eq!(a[0].labels["severity"], "critical");
        let s = status(&["a", "a", "b"], 1000, 10, 0);
        assert_eq!(
            names(&assertions(&s, &obs, 3, &settings(), t0)),
            vec!["GeigerPlacementNotZoneSafe"]
        );
    }
}
