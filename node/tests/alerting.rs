//! Monitoring and paging end to end (issue 7), with real processes on
//! 127.0.0.1: a 3-node cluster of `geiger node` (one node per zone) fed by
//! one `geiger-device`; a real Prometheus scraping the nodes every second
//! with the shipped rules (`monitoring/prometheus/rules/`, unchanged); a
//! real Alertmanager with the shipped routing (`monitoring/alertmanager/
//! alertmanager.yml`, webhook URLs pointed at the recorder); and the
//! recording webhook receiver (`monitoring/e2e/receiver.py`). All three are
//! started by `monitoring/e2e/stack.sh`; the nodes push their own alerts to
//! that Alertmanager (`[alerts]` through `GEIGER_ALERTS__*`).
//!
//! 1. Quiet run: nothing reaches `/page` for `WINDOW`.
//! 2. Kill a follower (not the link owner): `GeigerNodeDown` for it reaches
//!    `/page` within the same `WINDOW`.
//! 3. Restart it and, at the same moment, stop the device: the node's
//!    resolved notice reaches `/page`, and the leader's pushed
//!    `GeigerLinkDown` (`source="control-plane"`, a warning) reaches
//!    `/ticket`.
//! 4. Restart the device: the pushed `GeigerLinkDown` resolved notice.
//!
//! It prints the time from fault to page (and to resolved notice) at the
//! receiver, and the scrape cost per node. Takes about 4.5 minutes: the
//! shipped `for: 1m` on node-down and the routes' `group_wait` and
//! `group_interval` (1 m) set the pace. Needs `prometheus`, `promtool`,
//! `prometheus-alertmanager` (or `alertmanager`) and `python3`: without
//! them the test fails (CI installs them; `apt-get install prometheus
//! prometheus-alertmanager python3`). `GEIGER_TEST_KEEP=1` keeps the
//! directories (node logs, Prometheus and Alertmanager logs, the receiver's
//! record `received.jsonl`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{one_per_zone, Cluster, Device};
use serde_json::Value;

/// The window a fault must page within, and the length of the quiet run:
/// node-down needs `for: 1m` + 1 s scrape + the pager's 15 s `group_wait`.
const WINDOW: Duration = Duration::from_secs(90);
/// A resolved notice waits for the next flush of its group: `group_interval`
/// of 1 m on both the pager and the ticket routes.
const RESOLVE_WITHIN: Duration = Duration::from_secs(90);
/// The pushed link-down: `link_down_after_s` + a push + the ticket route's
/// 30 s `group_wait`.
const LINK_DOWN_WITHIN: Duration = Duration::from_secs(60);
/// The cluster name: `common` writes `cluster_name = "test"`, and the scrape
/// config's `cluster` label must be the same string.
const CLUSTER: &str = "test";

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("monitoring")
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
}

/// Fails (never skips) when a tool is missing: CI installs them.
fn require_tools() {
    let mut missing: Vec<&str> = ["prometheus", "promtool", "python3"]
        .into_iter()
        .filter(|b| !on_path(b))
        .collect();
    if !on_path("prometheus-alertmanager") && !on_path("alertmanager") {
        missing.push("alertmanager (prometheus-alertmanager)");
    }
    assert!(
        missing.is_empty(),
        "the monitoring end-to-end test needs {missing:?} on PATH: \
         apt-get install prometheus prometheus-alertmanager python3 \
         (CI's .ci/run installs them); it does not skip"
    );
}

/// Prometheus, Alertmanager and the receiver, from `monitoring/e2e/stack.sh`;
/// stopped on drop, even when the test fails.
struct Stack {
    dir: tempfile::TempDir,
    prom_url: String,
    am_url: String,
    receiver_log: PathBuf,
    http: reqwest::Client,
}

impl Stack {
    /// `targets`: (node name, zone, cloud, host:port) per node.
    fn start(targets: &[(String, String, String, String)]) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = monitoring_dir().join("e2e/stack.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("start").arg(dir.path());
        for (node, zone, cloud, addr) in targets {
            cmd.arg(format!("node={node},zone={zone},cloud={cloud},addr={addr}"));
        }
        let out = cmd
            .env("GEIGER_CLUSTER", CLUSTER)
            .output()
            .expect("bash runs stack.sh");
        // Built before checking, so a failed start is still cleaned up.
        let mut stack = Stack {
            dir,
            prom_url: String::new(),
            am_url: String::new(),
            receiver_log: PathBuf::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        };
        assert!(
            out.status.success(),
            "stack.sh start failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(stack.dir.path().join("env")).expect("stack env");
        for line in env.lines() {
            match line.split_once('=') {
                Some(("PROM_URL", v)) => stack.prom_url = v.to_string(),
                Some(("AM_URL", v)) => stack.am_url = v.to_string(),
                Some(("RECEIVER_LOG", v)) => stack.receiver_log = PathBuf::from(v),
                _ => {}
            }
        }
        assert!(
            !stack.prom_url.is_empty() && !stack.am_url.is_empty(),
            "{env}"
        );
        stack
    }

    /// An instant query: (labels, value) per series.
    async fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.prom_url))
            .query(&[("query", promql)])
            .send()
            .await;
        let Ok(r) = r else { return Vec::new() };
        let body: Value = r.json().await.unwrap_or(Value::Null);
        body["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let value = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every webhook POST so far: (received_at, path, payload).
    fn received(&self) -> Vec<(f64, String, Value)> {
        let text = std::fs::read_to_string(&self.receiver_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|r| {
                (
                    r["received_at"].as_f64().unwrap_or(0.0),
                    r["path"].as_str().unwrap_or("").to_string(),
                    r["payload"].clone(),
                )
            })
            .collect()
    }

    /// When (unix seconds) the first notification after `since` on `path`
    /// arrived holding an alert with `status` and all of `labels`.
    fn find(&self, path: &str, labels: &[(&str, &str)], status: &str, since: f64) -> Option<f64> {
        self.received().into_iter().find_map(|(at, p, payload)| {
            if at < since || p != path {
                return None;
            }
            let hit = payload["alerts"].as_array()?.iter().any(|a| {
                a["status"] == status && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            });
            hit.then_some(at)
        })
    }

    /// Waits for [`Self::find`]; returns seconds from `since` to arrival.
    async fn wait_for(
        &self,
        what: &str,
        path: &str,
        labels: &[(&str, &str)],
        status: &str,
        since: f64,
        within: Duration,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.find(path, labels, status, since) {
                return at - since;
            }
            if Instant::now() > deadline {
                self.dump();
                panic!("{what}: no {status} {labels:?} on {path} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// What reached a path after `since`, as `alertname{labels} status` lines.
    fn summary(&self, path: &str, since: f64) -> Vec<String> {
        let mut out = Vec::new();
        for (at, p, payload) in self.received() {
            if at < since || p != path {
                continue;
            }
            for a in payload["alerts"].as_array().into_iter().flatten() {
                out.push(format!(
                    "+{:.1}s {} {} {}",
                    at - since,
                    a["labels"]["alertname"].as_str().unwrap_or("?"),
                    a["status"].as_str().unwrap_or("?"),
                    a["labels"]
                ));
            }
        }
        out
    }

    fn dump(&self) {
        eprintln!("----- receiver ({}) -----", self.receiver_log.display());
        for path in ["/page", "/ticket"] {
            for line in self.summary(path, 0.0) {
                eprintln!("{path} {line}");
            }
        }
        for log in ["prometheus.log", "alertmanager.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {log} -----");
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{l}");
            }
        }
    }

    async fn wait_query(&self, within: Duration, what: &str, promql: &str, want: f64) {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(promql).await;
            if r.len() == 1 && r[0].1 == want {
                return;
            }
            if Instant::now() > deadline {
                self.dump();
                panic!("timed out after {within:?} waiting for {what}: {promql} = {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(monitoring_dir().join("e2e/stack.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
        if std::env::var_os("GEIGER_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("temp dir"),
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_and_link_down_page_and_resolve_and_a_quiet_cluster_pages_nobody() {
    require_tools();
    let started = Instant::now();
    let specs = one_per_zone(3);
    let name = |id: u64| format!("node-{id}");
    let targets: Vec<_> = specs
        .iter()
        .map(|s| (name(s.id), s.zone.clone(), s.cloud.clone(), s.api_addr()))
        .collect();
    let stack = Stack::start(&targets);
    let mut cluster = Cluster::start_with_env(
        specs,
        "",
        vec![
            ("GEIGER_ALERTS__ALERTMANAGERS".into(), stack.am_url.clone()),
            ("GEIGER_ALERTS__PUSH_INTERVAL_S".into(), "1".into()),
            ("GEIGER_ALERTS__LINK_DOWN_AFTER_S".into(), "3".into()),
        ],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let mut device = Device::start(&cluster.dir.path().join("device"), &["--rate", "65536"]);
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .expect("POST /v1/admin/links");
    assert!(status == 201 || status == 200, "{status} {body}");
    let device_id = device.id.clone();
    let owner = cluster
        .wait_until(Duration::from_secs(30), "a link owner", || async {
            let (_, body) = cluster.get(leader, "/v1/admin/links").await.ok()?;
            let link = body["links"]
                .as_array()?
                .iter()
                .find(|l| l["device"] == device_id.as_str())?
                .clone();
            (link["lease_active"] == true && link["appended_chunks"].as_u64()? > 0)
                .then(|| link["owner"].as_u64())
                .flatten()
        })
        .await;

    // Prometheus sees all three nodes and the link up.
    stack
        .wait_query(
            Duration::from_secs(30),
            "three targets up",
            "sum(up{job=\"geiger\"})",
            3.0,
        )
        .await;
    stack
        .wait_query(
            Duration::from_secs(30),
            "the link up",
            "max(cluster_device:geiger_link_up:max)",
            1.0,
        )
        .await;
    // The metrics the alerts need are there, with the scrape config's labels
    // (the app emits none of cluster/cloud/zone/node itself).
    for (promql, want) in [
        ("count(geiger_node_info{job=\"geiger\",cluster=\"test\",node=~\"node-.\",zone=~\"zone-.\",cloud=\"cloud-a\"})", 3.0),
        ("count(geiger_raft_voters_reachable{job=\"geiger\"})", 1.0),
        ("max(geiger_raft_voters_reachable{job=\"geiger\"})", 3.0),
        ("count(geiger_raft_replication_lag_seconds{job=\"geiger\"})", 2.0),
        ("count(geiger_pool_depth_seconds{job=\"geiger\"})", 3.0),
        ("count({job=\"geiger\",__name__=~\"geiger_.+\",exported_node!=\"\"} or {job=\"geiger\",exported_zone!=\"\"})", f64::NAN),
    ] {
        if want.is_nan() {
            let r = stack.query(promql).await;
            assert!(r.is_empty(), "the app emits identity labels: {r:?}");
        } else {
            stack
                .wait_query(Duration::from_secs(10), promql, promql, want)
                .await;
        }
    }
    let setup = started.elapsed();

    // Scrape cost per node, in steady state.
    let mut cost = Vec::new();
    for (labels, samples) in stack.query("scrape_samples_scraped{job=\"geiger\"}").await {
        let node = labels.get("node").cloned().unwrap_or_default();
        let bytes = stack
            .query(&format!(
                "scrape_body_size_bytes{{job=\"geiger\",node=\"{node}\"}}"
            ))
            .await
            .first()
            .map_or(f64::NAN, |s| s.1);
        cost.push((node, samples, bytes));
    }
    assert_eq!(cost.len(), 3, "{cost:?}");

    // 1. Quiet run: nothing reaches the pager.
    let quiet_from = now_unix();
    tokio::time::sleep(WINDOW).await;
    let pages = stack.summary("/page", quiet_from);
    let tickets = stack.summary("/ticket", quiet_from);
    if !pages.is_empty() {
        stack.dump();
        cluster.dump_logs();
    }
    assert!(
        pages.is_empty(),
        "pages in a quiet run of {WINDOW:?}: {pages:#?}"
    );

    // 2. Kill a follower that does not own the link.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != owner)
        .expect("a follower that is not the owner");
    let victim_name = name(victim);
    let killed_at = now_unix();
    cluster.kill(victim);
    let node_down = stack
        .wait_for(
            "node down",
            "/page",
            &[
                ("alertname", "GeigerNodeDown"),
                ("node", &victim_name),
                ("cluster", CLUSTER),
            ],
            "firing",
            killed_at,
            WINDOW,
        )
        .await;

    // 3. Restart it, and stop the device at the same moment.
    let restarted_at = now_unix();
    cluster.restart(victim);
    device.kill();
    let device_stopped_at = restarted_at;
    let link_labels = [
        ("alertname", "GeigerLinkDown"),
        ("source", "control-plane"),
        ("device", device_id.as_str()),
        ("cluster", CLUSTER),
        ("severity", "warning"),
    ];
    let link_down = stack
        .wait_for(
            "pushed link down",
            "/ticket",
            &link_labels,
            "firing",
            device_stopped_at,
            LINK_DOWN_WITHIN,
        )
        .await;
    // 4. Restart the device.
    let device_back_at = now_unix();
    device.restart();
    let node_resolved = stack
        .wait_for(
            "node down resolved",
            "/page",
            &[("alertname", "GeigerNodeDown"), ("node", &victim_name)],
            "resolved",
            restarted_at,
            RESOLVE_WITHIN,
        )
        .await;
    let link_resolved = stack
        .wait_for(
            "pushed link down resolved",
            "/ticket",
            &link_labels,
            "resolved",
            device_back_at,
            RESOLVE_WITHIN,
        )
        .await;
    let after_kill = stack.summary("/page", killed_at);
    let after_stop = stack.summary("/ticket", device_stopped_at);

    println!(
        "== monitoring end to end (real nodes), total {:.0?}",
        started.elapsed()
    );
    println!("setup (cluster, device, stack, first scrapes): {setup:.0?}");
    for (node, samples, bytes) in &cost {
        println!("scrape cost {node}: {samples} series, {bytes} bytes");
    }
    println!("quiet run {WINDOW:?}: 0 pages; tickets: {tickets:#?}");
    println!("killed {victim_name} (leader {leader}, link owner {owner})");
    println!("GeigerNodeDown page {node_down:.1} s after the kill");
    println!("GeigerNodeDown resolved {node_resolved:.1} s after the restart");
    println!("pushed GeigerLinkDown ticket {link_down:.1} s after the device stopped");
    println!("pushed GeigerLinkDown resolved {link_resolved:.1} s after the device restarted");
    println!("pages since the kill: {after_kill:#?}");
    println!("tickets since the device stopped: {after_stop:#?}");
}
