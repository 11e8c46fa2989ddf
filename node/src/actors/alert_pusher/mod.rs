//! The AlertPusher: on the leader only, it works out what the control plane
//! sees first (or what Prometheus may miss while partitioned) and pushes it
//! to every configured Alertmanager (API v2), as docs/METRICS.md ("Alerts
//! the control plane pushes") specifies: re-sent every interval with
//! `endsAt` four intervals ahead, resolved with `endsAt` now. Labels carry
//! nothing node- or term-specific, so a new leader re-asserting an alert
//! produces the same fingerprint and Alertmanager deduplicates it; nothing
//! needs to pass between leaders.
//!
//! The rules themselves are pure, in [`rules`].

mod rules;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use geiger_control_plane::{ControlPlane, Status};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde::Serialize;

pub use self::rules::{assertions, Assertion, Observations};
use super::supervisor::{spawn_linked, ChildSpec, SpawnFuture};
use crate::cluster_view::ViewReceiver;
use crate::metrics::NodeMetrics;
use crate::peer_api::PeerApi;

#[derive(Clone)]
pub struct AlertSettings {
    pub alertmanagers: Vec<String>,
    pub interval: Duration,
    pub cluster: String,
    /// A link whose lease has not been renewed for this long is down.
    pub link_down_after: Duration,
}

/// One alert as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub struct AlertPusher {
    pub ledger: ControlPlane,
    pub settings: AlertSettings,
    pub metrics: Arc<NodeMetrics>,
    /// Whether this node leads, and how many voters answer.
    pub view: ViewReceiver,
    /// For the Alertmanagers.
    pub http: reqwest::Client,
    /// Members' public API (the owners' `/metrics`), over TLS when this
    /// node's is.
    pub peers: PeerApi,
}

pub struct PusherState {
    obs: Observations,
    /// Alerts asserted by this node while leader, with when each began.
    active: BTreeMap<BTreeMap<String, String>, (Assertion, SystemTime)>,
}

pub enum PusherMsg {
    Tick,
}

impl AlertPusher {
    /// Devices whose owner reports `geiger_link_up{device} 1` on its
    /// `/metrics` (the contract's "live, healthy session"); an owner the
    /// leader cannot reach counts as down (its renewals cannot commit either).
    async fn links_up(&self, status: &Status) -> HashSet<String> {
        let mut probes = tokio::task::JoinSet::new();
        for lease in &status.leases {
            let Some(owner) = status.members.get(&lease.owner) else {
                continue;
            };
            let req = self
                .peers
                .metrics(&owner.api_addr)
                .timeout(Duration::from_millis(500))
                .send();
            let device = lease.device.clone();
            probes.spawn(async move {
                let text = match req.await {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => return None,
                };
                let line = format!("geiger_link_up{{device=\"{device}\"}} 1");
                text.lines().any(|l| l == line).then_some(device)
            });
        }
        let mut up = HashSet::new();
        while let Some(answer) = probes.join_next().await {
            if let Ok(Some(device)) = answer {
                up.insert(device);
            }
        }
        up
    }

    async fn push(&self, alerts: &[PostableAlert]) {
        for am in &self.settings.alertmanagers {
            let url = format!("{}/api/v2/alerts", am.trim_end_matches('/'));
            let ok = matches!(
                self.http.post(&url).json(alerts).timeout(Duration::from_secs(5)).send().await,
                Ok(r) if r.status().is_success()
            );
            if !ok {
                tracing::warn!(%url, "pushing alerts to Alertmanager failed");
            }
            self.metrics.alert_push(ok);
        }
    }
}

impl Actor for AlertPusher {
    type Msg = PusherMsg;
    type State = PusherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<PusherMsg>,
        _: (),
    ) -> Result<PusherState, ActorProcessingErr> {
        myself.send_interval(self.settings.interval, || PusherMsg::Tick);
        Ok(PusherState {
            obs: Observations::default(),
            active: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<PusherMsg>,
        PusherMsg::Tick: PusherMsg,
        state: &mut PusherState,
    ) -> Result<(), ActorProcessingErr> {
        let view = self.view.borrow().clone();
        if !view.is_leader() {
            // Not leader: forget, without resolving. The next leader
            // re-asserts what still holds; the rest expires at its endsAt.
            state.obs = Observations::default();
            state.active.clear();
            self.metrics.set_pushed_alerts(&BTreeMap::new());
            return Ok(());
        }
        // A new leader waits for its first probe round rather than count
        // every other voter lost.
        let Some(alive) = view.reachable_voters() else {
            return Ok(());
        };
        let status = self.ledger.status()?;
        let now = Instant::now();
        let wall = SystemTime::now();
        let up = self.links_up(&status).await;
        state.obs.observe_links(&status, &up, now);
        let current = assertions(&status, &state.obs, alive, &self.settings, now);
        let ends = wall + self.settings.interval * 4;
        let mut batch = Vec::new();
        let mut still = BTreeMap::new();
        for a in current {
            let since = state
                .active
                .get(&a.labels)
                .map_or(wall, |(_, since)| *since);
            if !state.active.contains_key(&a.labels) {
                tracing::warn!(alert = %a.labels["alertname"], labels = ?a.labels, "control-plane alert raised");
            }
            batch.push(postable(&a, since, ends));
            still.insert(a.labels.clone(), (a, since));
        }
        for (labels, (a, since)) in &state.active {
            if !still.contains_key(labels) {
                tracing::info!(alert = %labels["alertname"], "control-plane alert resolved");
                batch.push(postable(a, *since, wall));
            }
        }
        state.active = still;
        let mut counts = BTreeMap::new();
        for labels in state.active.keys() {
            *counts.entry(labels["alertname"].clone()).or_insert(0i64) += 1;
        }
        self.metrics.set_pushed_alerts(&counts);
        if !batch.is_empty() && !self.settings.alertmanagers.is_empty() {
            self.push(&batch).await;
        }
        Ok(())
    }
}

fn postable(a: &Assertion, since: SystemTime, ends: SystemTime) -> PostableAlert {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), a.summary.clone());
    annotations.insert("description".into(), a.description.clone());
    annotations.insert(
        "runbook_url".into(),
        format!("docs/RUNBOOK.md#{}", a.labels["alertname"].to_lowercase()),
    );
    PostableAlert {
        labels: a.labels.clone(),
        annotations,
        starts_at: rfc3339(since),
        ends_at: rfc3339(ends),
    }
}

pub struct AlertPusherSpec {
    pub ledger: ControlPlane,
    pub settings: AlertSettings,
    pub metrics: Arc<NodeMetrics>,
    pub view: ViewReceiver,
    pub peers: PeerApi,
}

impl ChildSpec for AlertPusherSpec {
    fn kind(&self) -> &'static str {
        "alert_pusher"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let actor = AlertPusher {
            ledger: self.ledger.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            view: self.view.clone(),
            http: reqwest::Client::new(),
            peers: self.peers.clone(),
        };
        spawn_linked(actor, supervisor)
    }
}
