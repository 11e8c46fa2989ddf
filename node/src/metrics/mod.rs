//! The node's Prometheus metrics, named as docs/METRICS.md promises (the
//! monitoring rules are tested against that file). `prometheus-client`
//! appends `_total` to counters and `_info` to info metrics itself.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use self::labels::*;
pub use self::source_reports::{SourceReports, SourceView};
pub use self::total_counter::TotalCounter;

mod labels;
mod source_reports;
mod total_counter;
mod write_stages;

/// Request latency buckets in seconds; 0.05 is the draw latency objective.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the node exports, registered once at start.
pub struct NodeMetrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLatencyLabels, Histogram>,
    pub http_in_flight: Family<RouteLabels, Gauge>,
    pub draws: Family<DrawLabels, Counter>,
    pub chains_created: Counter,
    pub actor_restarts: Family<ActorLabels, Counter>,
    pub node_ready: Gauge,
    pub raft_term: Gauge,
    pub raft_role: Family<RoleLabels, Gauge>,
    pub raft_leader_id: Gauge,
    pub raft_voters: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_committed_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_snapshot_index: Gauge,
    pub raft_replication_lag_entries: Family<PeerLabels, Gauge>,
    pub raft_replication_lag_seconds: Family<PeerLabels, FloatGauge>,
    pub raft_voters_reachable: Family<NoLabels, Gauge>,
    pub clock_offset_seconds: Family<NoLabels, FloatGauge>,
    pub clock_unsynchronized: Gauge,
    pub cluster_feature_level: Gauge,
    pub build_feature_level: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_elections: Counter,
    pub link_up: Family<DeviceLabels, Gauge>,
    pub link_owned: Family<DeviceLabels, Gauge>,
    pub link_owner_epoch: Family<DeviceLabels, Gauge>,
    pub link_last_chunk_timestamp: Family<DeviceLabels, FloatGauge>,
    pub pool_depth_bytes: Family<DeviceLabels, Gauge>,
    pub pool_depth_seconds: Family<DeviceLabels, FloatGauge>,
    pub pool_appended_bytes: Family<DeviceLabels, TotalCounter>,
    pub pool_consumed_bytes: Family<DeviceLabels, TotalCounter>,
    pub chunks_appended: Family<DeviceLabels, Counter>,
    pub alert_pushes: Family<OutcomeLabels, Counter>,
    pub alerts_pushed_active: Family<AlertNameLabels, Gauge>,
    pub link_sessions: Family<DeviceOutcomeLabels, Counter>,
    pub link_received_bytes: Family<DeviceLabels, Counter>,
    pub chunks_quarantined: Family<DeviceReasonLabels, Counter>,
    pub health_test_failures: Family<DeviceTestLabels, Counter>,
    /// Owner: the devices' reports on their sources, and their counters.
    pub sources: SourceReports,
    pub api_connections_open: Gauge,
    pub api_connections_refused: Family<ReasonLabels, Counter>,
    pub api_connections_stalled: Counter,
    pub source_rate_limited: Counter,
    pub auth_catch_ups: TotalCounter,
    pub tls: TlsMetrics,
    pub internal_connections_refused: Family<ReasonLabels, Counter>,
    pub internal_requests: Counter,
    pub peer_tls_refused: Family<ReasonLabels, Counter>,
}

/// TLS on the listeners: `listener` is `api` (listener/tls.rs) or
/// `internal` (mutual TLS between members, cluster_tls.rs).
#[derive(Debug, Default)]
pub struct TlsMetrics {
    pub certificate_expiry: Family<ListenerLabels, Gauge>,
    pub certificate_reloads: Family<ListenerOutcomeLabels, Counter>,
    pub handshakes: Family<ListenerOutcomeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Draw kinds, for creating every `kind`×`outcome` counter at zero.
pub const DRAW_KINDS: [&str; 5] = ["integers", "permutation", "selection", "bytes", "unknown"];
/// Supervised actor kinds, likewise.
pub const ACTOR_KINDS: [&str; 7] = [
    "http_worker",
    "cluster_view",
    "health",
    "link_controller",
    "link_watcher",
    "hardware_session",
    "alert_pusher",
];

impl NodeMetrics {
    pub fn new(node_id: u64) -> Arc<Self> {
        let mut registry = Registry::default();
        let m = NodeMetrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            http_in_flight: Family::default(),
            draws: Family::default(),
            chains_created: Counter::default(),
            actor_restarts: Family::default(),
            node_ready: Gauge::default(),
            raft_term: Gauge::default(),
            raft_role: Family::default(),
            raft_leader_id: Gauge::default(),
            raft_voters: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_committed_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_snapshot_index: Gauge::default(),
            raft_replication_lag_entries: Family::default(),
            raft_replication_lag_seconds: Family::default(),
            raft_voters_reachable: Family::default(),
            clock_offset_seconds: Family::default(),
            clock_unsynchronized: Gauge::default(),
            cluster_feature_level: Gauge::default(),
            build_feature_level: Gauge::default(),
            raft_leader_changes: Counter::default(),
            raft_elections: Counter::default(),
            link_up: Family::default(),
            link_owned: Family::default(),
            link_owner_epoch: Family::default(),
            link_last_chunk_timestamp: Family::default(),
            pool_depth_bytes: Family::default(),
            pool_depth_seconds: Family::default(),
            pool_appended_bytes: Family::default(),
            pool_consumed_bytes: Family::default(),
            chunks_appended: Family::default(),
            alert_pushes: Family::default(),
            alerts_pushed_active: Family::default(),
            link_sessions: Family::default(),
            link_received_bytes: Family::default(),
            chunks_quarantined: Family::default(),
            health_test_failures: Family::default(),
            sources: SourceReports::default(),
            api_connections_open: Gauge::default(),
            api_connections_refused: Family::default(),
            api_connections_stalled: Counter::default(),
            source_rate_limited: Counter::default(),
            auth_catch_ups: TotalCounter::default(),
            tls: TlsMetrics::default(),
            internal_connections_refused: Family::default(),
            internal_requests: Counter::default(),
            peer_tls_refused: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register_collector(Box::new(write_stages::WriteStages));
        r.register(
            "geiger_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "geiger_http_request_duration_seconds",
            "Time from request received to response handed to the socket",
            m.http_duration.clone(),
        );
        r.register(
            "geiger_http_requests_in_flight",
            "Requests being handled now",
            m.http_in_flight.clone(),
        );
        r.register(
            "geiger_draws",
            "Draw requests answered by this node, by kind and outcome",
            m.draws.clone(),
        );
        r.register(
            "geiger_chains_created",
            "Chains opened through this node",
            m.chains_created.clone(),
        );
        r.register(
            "geiger_actor_restarts",
            "Restarts of a supervised child, by kind",
            m.actor_restarts.clone(),
        );
        r.register(
            "geiger_node_ready",
            "1 when /readyz answers 200",
            m.node_ready.clone(),
        );
        r.register("geiger_raft_term", "Current Raft term", m.raft_term.clone());
        r.register(
            "geiger_raft_role",
            "1 for this node's current role",
            m.raft_role.clone(),
        );
        r.register(
            "geiger_raft_leader_id",
            "Known leader's node ID, -1 when none",
            m.raft_leader_id.clone(),
        );
        r.register(
            "geiger_raft_voters",
            "Voters in the applied membership",
            m.raft_voters.clone(),
        );
        r.register(
            "geiger_raft_last_log_index",
            "Index of the last log entry",
            m.raft_last_log_index.clone(),
        );
        r.register(
            "geiger_raft_committed_index",
            "Highest index known committed",
            m.raft_committed_index.clone(),
        );
        r.register(
            "geiger_raft_applied_index",
            "Highest index applied to the state machine",
            m.raft_applied_index.clone(),
        );
        r.register(
            "geiger_raft_snapshot_index",
            "Last index covered by the latest snapshot",
            m.raft_snapshot_index.clone(),
        );
        r.register(
            "geiger_raft_replication_lag_entries",
            "Leader only: entries a peer has not matched",
            m.raft_replication_lag_entries.clone(),
        );
        r.register(
            "geiger_raft_replication_lag_seconds",
            "Leader only: age of the oldest entry a peer has not matched",
            m.raft_replication_lag_seconds.clone(),
        );
        r.register(
            "geiger_clock_offset_seconds",
            "This node's clock minus the cluster's, as the leader (or, on the leader, the voters) measured it; absent while unknown",
            m.clock_offset_seconds.clone(),
        );
        r.register(
            "geiger_clock_unsynchronized",
            "1 while this node's clock is further off the cluster's than raft.max_clock_offset_ms: it may neither lead nor stamp",
            m.clock_unsynchronized.clone(),
        );
        r.register(
            "geiger_cluster_feature_level",
            "The cluster feature level in force, as this node has applied it (raised once every member's build supports more)",
            m.cluster_feature_level.clone(),
        );
        r.register(
            "geiger_build_feature_level",
            "The highest cluster feature level this node's build supports",
            m.build_feature_level.clone(),
        );
        r.register(
            "geiger_raft_voters_reachable",
            "Leader only: voters, itself included, answering the leader",
            m.raft_voters_reachable.clone(),
        );
        r.register(
            "geiger_raft_leader_changes",
            "Times the known leader became a different node",
            m.raft_leader_changes.clone(),
        );
        r.register(
            "geiger_raft_elections",
            "Elections this node started",
            m.raft_elections.clone(),
        );
        r.register(
            "geiger_link_up",
            "1 on the node receiving chunks from the device",
            m.link_up.clone(),
        );
        r.register(
            "geiger_link_owned",
            "1 on the node holding the device's lease",
            m.link_owned.clone(),
        );
        r.register(
            "geiger_link_owner_epoch",
            "The device's current fencing epoch",
            m.link_owner_epoch.clone(),
        );
        r.register(
            "geiger_link_last_chunk_timestamp_seconds",
            "Replicated: Unix time the last chunk from the device was appended",
            m.link_last_chunk_timestamp.clone(),
        );
        r.register(
            "geiger_pool_depth_bytes",
            "Unused pool bytes from the device",
            m.pool_depth_bytes.clone(),
        );
        r.register(
            "geiger_pool_depth_seconds",
            "Pool bytes from the device over the pool's consumption rate",
            m.pool_depth_seconds.clone(),
        );
        r.register(
            "geiger_pool_appended_bytes",
            "Replicated: bytes added to the pool from the device",
            m.pool_appended_bytes.clone(),
        );
        r.register(
            "geiger_pool_consumed_bytes",
            "Replicated: bytes taken from the pool by draws",
            m.pool_consumed_bytes.clone(),
        );
        r.register(
            "geiger_entropy_chunks_appended",
            "Chunks that passed the health tests and were committed",
            m.chunks_appended.clone(),
        );
        r.register(
            "geiger_link_sessions",
            "Owner: link session attempts, by outcome (established, failed, refused_stale_epoch, refused_wrong_device_key, tls_handshake_failed, refused_epoch_too_far)",
            m.link_sessions.clone(),
        );
        r.register(
            "geiger_link_received_bytes",
            "Owner: entropy bytes received from the device, before health tests",
            m.link_received_bytes.clone(),
        );
        r.register(
            "geiger_entropy_chunks_quarantined",
            "Owner: chunks quarantined (recorded, never used), by reason",
            m.chunks_quarantined.clone(),
        );
        r.register(
            "geiger_entropy_health_test_failures",
            "Owner: continuous health test failures, by test",
            m.health_test_failures.clone(),
        );
        let source = &m.sources.counters;
        r.register(
            "geiger_source_events",
            "Owner: counter events the device's source registered (from its reports)",
            source.events.clone(),
        );
        r.register(
            "geiger_source_raw_samples",
            "Owner: raw samples (bits and ties) the device's extractor produced",
            source.raw_samples.clone(),
        );
        r.register(
            "geiger_source_raw_bits",
            "Owner: raw bits the device's extractor produced",
            source.raw_bits.clone(),
        );
        r.register(
            "geiger_source_raw_rejected",
            "Owner: raw samples the device's own health tests discarded",
            source.raw_rejected.clone(),
        );
        r.register(
            "geiger_source_output_bytes",
            "Owner: bytes the device's source handed to chunks (conditioned, for a decay source)",
            source.output_bytes.clone(),
        );
        r.register(
            "geiger_alert_pushes",
            "Leader: POSTs to Alertmanager, by outcome",
            m.alert_pushes.clone(),
        );
        r.register(
            "geiger_alerts_pushed_active",
            "Leader only: alerts the control plane currently asserts",
            m.alerts_pushed_active.clone(),
        );
        r.register(
            "geiger_api_connections",
            "Connections open on the public listener",
            m.api_connections_open.clone(),
        );
        r.register(
            "geiger_api_connections_refused",
            "Public connections closed at accept, by reason (total_limit, source_limit)",
            m.api_connections_refused.clone(),
        );
        r.register(
            "geiger_api_connections_stalled",
            "Public connections closed because no byte moved for the stall timeout",
            m.api_connections_stalled.clone(),
        );
        r.register(
            "geiger_api_source_rate_limited",
            "Requests without a valid credential refused with 429 for their source address",
            m.source_rate_limited.clone(),
        );
        r.register(
            "geiger_auth_catch_ups",
            "Catch-ups with the leader run to look up a key unknown here (shared by concurrent lookups)",
            m.auth_catch_ups.clone(),
        );
        r.register(
            "geiger_tls_certificate_expiry_timestamp_seconds",
            "The served certificate's notAfter, Unix seconds (only with TLS)",
            m.tls.certificate_expiry.clone(),
        );
        r.register(
            "geiger_tls_certificate_reloads",
            "Certificate files that changed on disk, by outcome (ok, error: old one kept)",
            m.tls.certificate_reloads.clone(),
        );
        r.register(
            "geiger_tls_handshakes",
            "TLS handshakes on the listener, by outcome (ok, error, timeout)",
            m.tls.handshakes.clone(),
        );
        r.register(
            "geiger_internal_connections_refused",
            "Connections to the internal listener closed at accept, by reason (total_limit, source_limit: the per-peer cap)",
            m.internal_connections_refused.clone(),
        );
        r.register(
            "geiger_internal_requests",
            "Requests the internal listener answered (Raft RPC, forwarded writes, read indexes, admin)",
            m.internal_requests.clone(),
        );
        r.register(
            "geiger_peer_tls_refused",
            "Peers refused by the internal listener's mutual TLS, by reason (no_certificate, unknown_ca, expired, handshake, no_node_id, not_a_member)",
            m.peer_tls_refused.clone(),
        );
        r.register(
            "geiger_node",
            "Maps this target to its Raft node ID",
            Info::new(vec![("node_id".to_string(), node_id.to_string())]),
        );
        r.register(
            "geiger_build",
            "Build information",
            Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                (
                    "profile".to_string(),
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    }
                    .to_string(),
                ),
            ]),
        );
        let start: FloatGauge = Gauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );
        r.register(
            "process_start_time_seconds",
            "Unix time the process started",
            start,
        );

        for kind in DRAW_KINDS {
            for outcome in [
                DrawOutcome::created,
                DrawOutcome::replayed,
                DrawOutcome::previous_already_used,
                DrawOutcome::invalid,
                DrawOutcome::unauthorized,
                DrawOutcome::forbidden,
                DrawOutcome::unknown_previous,
                DrawOutcome::rate_limited,
                DrawOutcome::unavailable,
                DrawOutcome::error,
            ] {
                m.draws.get_or_create_owned(&DrawLabels {
                    kind: kind.to_string(),
                    outcome,
                });
            }
        }
        for actor in ACTOR_KINDS {
            m.actor_restarts.get_or_create_owned(&ActorLabels {
                actor: actor.to_string(),
            });
        }
        Arc::new(NodeMetrics { registry, ..m })
    }

    pub fn draw(&self, kind: &str, outcome: DrawOutcome) {
        self.draws
            .get_or_create(&DrawLabels {
                kind: kind.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.api_connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn actor_restarted(&self, actor: &str) {
        self.actor_restarts
            .get_or_create(&ActorLabels {
                actor: actor.to_string(),
            })
            .inc();
    }

    pub fn alert_push(&self, ok: bool) {
        self.alert_pushes
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Replaces the leader-only gauge of asserted alerts (empty off the leader).
    pub fn set_pushed_alerts(&self, counts: &std::collections::BTreeMap<String, i64>) {
        self.alerts_pushed_active.clear();
        for (alertname, n) in counts {
            self.alerts_pushed_active
                .get_or_create(&AlertNameLabels {
                    alertname: alertname.clone(),
                })
                .set(*n);
        }
    }

    /// TLS is on for the public listener: its counters start at zero and
    /// the expiry gauge shows the certificate just loaded.
    pub fn tls_certificate_loaded(&self, not_after: i64) {
        self.tls_certificate_loaded_for("api", not_after)
    }

    /// Likewise for `listener` (`api` or `internal`).
    pub fn tls_certificate_loaded_for(&self, listener: &str, not_after: i64) {
        self.tls
            .certificate_expiry
            .get_or_create(&ListenerLabels {
                listener: listener.into(),
            })
            .set(not_after);
        for outcome in ["ok", "error"] {
            self.tls
                .certificate_reloads
                .get_or_create_owned(&listener_outcome(listener, outcome));
        }
        for outcome in ["ok", "error", "timeout"] {
            self.tls
                .handshakes
                .get_or_create_owned(&listener_outcome(listener, outcome));
        }
    }

    pub fn tls_reload(&self, ok: bool) {
        self.tls_reload_for("api", ok)
    }

    pub fn tls_reload_for(&self, listener: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.tls
            .certificate_reloads
            .get_or_create(&listener_outcome(listener, outcome))
            .inc();
    }

    /// `outcome`: `ok`, `error` or `timeout`.
    pub fn tls_handshake(&self, outcome: &str) {
        self.tls_handshake_for("api", outcome)
    }

    pub fn tls_handshake_for(&self, listener: &str, outcome: &str) {
        self.tls
            .handshakes
            .get_or_create(&listener_outcome(listener, outcome))
            .inc();
    }

    /// Mutual TLS is on: every refusal reason starts at zero.
    pub fn peer_tls_refusals_start(&self) {
        for refusal in crate::cluster_tls::PeerRefusal::ALL {
            self.peer_tls_refused.get_or_create_owned(&ReasonLabels {
                reason: refusal.label().into(),
            });
        }
    }

    pub fn peer_tls_refused(&self, reason: &str) {
        self.peer_tls_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn internal_connection_refused(&self, reason: &str) {
        self.internal_connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn listener_outcome(listener: &str, outcome: &str) -> ListenerOutcomeLabels {
    ListenerOutcomeLabels {
        listener: listener.into(),
        outcome: outcome.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_uses_the_contracted_names_and_starts_counters_at_zero() {
        let m = NodeMetrics::new(7);
        m.draw("integers", DrawOutcome::created);
        m.raft_replication_lag_seconds
            .get_or_create(&PeerLabels { peer: "2".into() })
            .set(1.5);
        m.raft_voters_reachable.get_or_create(&NoLabels {}).set(3);
        let text = m.render();
        for name in [
            "geiger_draws_total{kind=\"integers\",outcome=\"created\"} 1",
            "geiger_draws_total{kind=\"bytes\",outcome=\"unavailable\"} 0",
            "geiger_actor_restarts_total{actor=\"hardware_session\"} 0",
            "geiger_node_info{node_id=\"7\"} 1",
            "geiger_raft_replication_lag_seconds{peer=\"2\"} 1.5",
            "geiger_raft_voters_reachable 3",
            "geiger_raft_term 0",
            "process_start_time_seconds",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn the_pool_byte_totals_are_exposed_as_counters_ending_in_total() {
        let m = NodeMetrics::new(1);
        let device = DeviceLabels {
            device: "dev_a".into(),
        };
        m.pool_appended_bytes.get_or_create(&device).set_total(300);
        m.pool_consumed_bytes.get_or_create(&device).set_total(200);
        m.link_last_chunk_timestamp
            .get_or_create(&device)
            .set(1_700_000_000.25);
        let text = m.render();
        for line in [
            "# TYPE geiger_pool_appended_bytes counter",
            "geiger_pool_appended_bytes_total{device=\"dev_a\"} 300",
            "# TYPE geiger_pool_consumed_bytes counter",
            "geiger_pool_consumed_bytes_total{device=\"dev_a\"} 200",
            "# TYPE geiger_link_last_chunk_timestamp_seconds gauge",
            "geiger_link_last_chunk_timestamp_seconds{device=\"dev_a\"} 1700000000.25",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_total_counter_takes_the_ledgers_total_but_never_goes_down() {
        let c = TotalCounter::default();
        c.set_total(4096);
        assert_eq!(c.get(), 4096);
        c.set_total(1024);
        assert_eq!(c.get(), 4096, "a counter must not decrease");
        c.set_total(8192);
        assert_eq!(c.get(), 8192);
    }
}
