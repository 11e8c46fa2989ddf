//! The cluster launcher: real `geiger node` processes and `geiger-device`
//! agents on loopback, every node-to-node and node-to-device connection
//! routed through the [`Proxy`].
//!
//! Each node listens on its own address 127.0.Z.N (zone Z, node N) so a
//! zone is visible in every address and log line. A node advertises its
//! proxy address (`internal.advertise`, and the `rpc_addr` of its
//! `[[bootstrap]]` entry) instead of its own listener, and devices are
//! registered under their proxy address, so the harness sits on every link
//! it may want to break. Clients talk to the nodes' API directly: faults
//! are between the parts of geiger, not between geiger and its users.
//!
//! Ports, config files, starting, signalling and stopping processes, and
//! log tails are the shared launcher's (`geiger_testkit::launcher`, also
//! used by the node's end-to-end tests); this module adds the placement,
//! the proxies, learners and link registration.
//!
//! Members talk over mutual TLS: the harness makes a cluster CA and one
//! certificate per node with `geiger ctl cert` in `<dir>/certs` and gives
//! each node its `[cluster.tls]` section, as an operator would.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use geiger_testkit::launcher::{self as process, DeviceProcess, NodeConfig, NodeProcess};
use serde::Serialize;
use serde_json::{json, Value};

use crate::proxy::{Endpoint, Proxy, ProxyError, Source};

pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789abcdef";
pub const CLUSTER_SECRET: &str = "chaos-cluster-secret-0123456789abcdef";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Starting or stopping a process, or its files.
    #[error(transparent)]
    Process(#[from] process::LaunchError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Http(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let wrap = process::io(what);
    move |source| LaunchError::Process(wrap(source))
}

/// Where one node runs and what it is.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    pub id: u64,
    pub zone: u8,
    pub cloud: String,
    pub voter: bool,
}

impl Placement {
    pub fn zone_name(&self) -> String {
        format!("zone-{}", self.zone)
    }
}

/// Five voters in three failure domains, as deploy/README.md describes the
/// reference placement: two in each cloud and one at the on-prem site (with
/// a learner beside it), spread over three zones. No zone and no cloud
/// holds a majority, so losing any one of them leaves a quorum.
pub fn default_placement() -> Vec<Placement> {
    let p = |id, zone, cloud: &str, voter| Placement {
        id,
        zone,
        cloud: cloud.into(),
        voter,
    };
    vec![
        p(1, 1, "cloud-a", true),
        p(2, 1, "cloud-b", true),
        p(3, 2, "cloud-a", true),
        p(4, 2, "cloud-b", true),
        p(5, 3, "on-prem", true),
        p(6, 3, "on-prem", false),
    ]
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub dir: PathBuf,
    pub geiger_bin: PathBuf,
    pub device_bin: PathBuf,
    pub placement: Vec<Placement>,
    pub devices: usize,
    /// Bytes per second each simulated device produces.
    pub device_rate: u64,
    /// Extra TOML sections for every node (`[raft]`, `[hardware]`).
    pub extra_toml: String,
}

/// A node process and its addresses.
#[derive(Debug)]
pub struct NodeProc {
    pub placement: Placement,
    pub ip: Ipv4Addr,
    pub api: SocketAddr,
    pub rpc: SocketAddr,
    /// What every peer uses to reach this node's internal listener.
    pub rpc_proxy: SocketAddr,
    pub process: NodeProcess,
}

/// A device agent process.
#[derive(Debug)]
pub struct DeviceProc {
    pub index: usize,
    /// The address registered for the link: the proxy in front of it.
    pub proxy: SocketAddr,
    pub process: DeviceProcess,
    /// The fault flags it was last started with (none: a healthy device).
    pub fault_args: Vec<String>,
}

pub struct Cluster {
    pub config: ClusterConfig,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub devices: Vec<DeviceProc>,
    pub proxy: Proxy,
    pub http: reqwest::Client,
    /// The workload's customer key, once created.
    pub api_key: Option<String>,
}

/// A free port on `ip`, from below the ephemeral range (see
/// `geiger_testkit::launcher::ports`).
fn free_port(ip: Ipv4Addr) -> Result<u16, LaunchError> {
    process::free_port(ip).map_err(io(format!("finding a free port on {ip}")))
}

fn node_config(
    p: &Placement,
    api: SocketAddr,
    rpc: SocketAddr,
    rpc_proxy: SocketAddr,
    data_dir: &Path,
    extra: &str,
) -> NodeConfig {
    NodeConfig {
        id: p.id,
        data_dir: data_dir.to_path_buf(),
        cluster_name: "chaos".into(),
        zone: p.zone_name(),
        cloud: p.cloud.clone(),
        region: "region-1".into(),
        api,
        rpc,
        advertise: Some(rpc_proxy),
        admin_token: ADMIN_TOKEN.into(),
        cluster_secret: CLUSTER_SECRET.into(),
        extra_toml: extra.into(),
        bootstrap: Vec::new(),
    }
}

/// Makes the cluster CA and a certificate for each of `ids` in `dir` with
/// `geiger ctl cert` (files already there from an earlier run are kept).
fn cluster_certificates(geiger: &Path, dir: &Path, ids: &[u64]) -> Result<PathBuf, LaunchError> {
    let run = |args: Vec<String>| -> Result<(), LaunchError> {
        let out = std::process::Command::new(geiger)
            .arg("ctl")
            .arg("cert")
            .args(&args)
            .output()
            .map_err(io("running geiger ctl cert"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LaunchError::Http(format!(
                "geiger ctl cert {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let dir_arg = dir.display().to_string();
    if !dir.join("ca.pem").exists() {
        run(vec![
            "ca".into(),
            "--dir".into(),
            dir_arg.clone(),
            "--cluster".into(),
            "chaos".into(),
        ])?;
    }
    for id in ids {
        if !dir.join(format!("node-{id}.pem")).exists() {
            run(vec![
                "node".into(),
                "--id".into(),
                id.to_string(),
                "--ca-dir".into(),
                dir_arg.clone(),
                "--out".into(),
                dir_arg.clone(),
            ])?;
        }
    }
    Ok(dir.to_path_buf())
}

impl Cluster {
    /// Starts the proxies, the voters and the devices; then waits for a
    /// leader, adds the learners, registers the links and creates the
    /// workload's customer.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, LaunchError> {
        std::fs::create_dir_all(&config.dir).map_err(io("creating the run directory"))?;
        let proxy = Proxy::new();
        let ids: Vec<u64> = config.placement.iter().map(|p| p.id).collect();
        let certs = cluster_certificates(&config.geiger_bin, &config.dir.join("certs"), &ids)?;
        let mut configs = Vec::new();
        for p in &config.placement {
            let ip = Ipv4Addr::new(127, 0, p.zone, p.id as u8);
            let api = SocketAddr::from((ip, free_port(ip)?));
            let rpc = SocketAddr::from((ip, free_port(ip)?));
            let rpc_proxy = proxy
                .listen(
                    SocketAddr::from((ip, 0)),
                    rpc,
                    Endpoint::Node(p.id),
                    Source::ByProcess,
                )
                .await?;
            let data = config.dir.join(format!("node-{}", p.id));
            let extra = format!(
                "{}\n[cluster.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                config.extra_toml,
                certs.join("ca.pem").display(),
                certs.join(format!("node-{}.pem", p.id)).display(),
                certs.join(format!("node-{}.key", p.id)).display(),
            );
            let node = node_config(p, api, rpc, rpc_proxy, &data, &extra);
            configs.push((p.clone(), ip, rpc_proxy, node));
        }
        // Learners join later through the admin API, never by bootstrap.
        let voters: Vec<_> = configs
            .iter()
            .filter(|(p, ..)| p.voter)
            .map(|(.., c)| c.as_bootstrap())
            .collect();
        let mut nodes = BTreeMap::new();
        for (placement, ip, rpc_proxy, mut node) in configs {
            node.bootstrap = voters.clone();
            let id = placement.id;
            let mut process = NodeProcess::prepare(
                &config.geiger_bin,
                &node,
                config.dir.join(format!("node-{id}.toml")),
                config.dir.join(format!("node-{id}.log")),
            )?;
            // The node's own default filter otherwise; older builds took any
            // GEIGER_* variable for a setting, so set it only when asked.
            if let Ok(filter) = std::env::var("GEIGER_CHAOS_NODE_LOG") {
                process.env.push(("GEIGER_LOG".into(), filter));
            }
            // The harness spawns from its main thread, which lives as long
            // as it does: a harness killed by -9 takes its nodes along.
            process.die_with_parent = true;
            nodes.insert(
                id,
                NodeProc {
                    placement,
                    ip,
                    api: node.api,
                    rpc: node.rpc,
                    rpc_proxy,
                    process,
                },
            );
        }
        // Every node, learners too, gets its device link key now, and the
        // devices trust exactly these keys.
        let trusted = config.dir.join("trusted-nodes");
        let data_dirs: Vec<_> = nodes
            .keys()
            .map(|id| config.dir.join(format!("node-{id}")))
            .collect();
        process::trust_nodes(&trusted, &data_dirs)?;
        let mut devices = Vec::new();
        for index in 0..config.devices {
            // Devices sit "on-prem", in a range of their own.
            let ip = Ipv4Addr::new(127, 0, 100, index as u8 + 1);
            let listen = SocketAddr::from((ip, free_port(ip)?));
            let proxy_addr = proxy
                .listen(
                    SocketAddr::from((ip, 0)),
                    listen,
                    Endpoint::Device(index),
                    Source::ByProcess,
                )
                .await?;
            let mut process = DeviceProcess::new(
                &config.device_bin,
                config.dir.join(format!("device-{index}")),
                listen,
                trusted.clone(),
                Vec::new(),
                config.dir.join(format!("device-{index}.log")),
            );
            process.die_with_parent = true;
            devices.push(DeviceProc {
                index,
                proxy: proxy_addr,
                process,
                fault_args: Vec::new(),
            });
        }
        let mut cluster = Cluster {
            config,
            nodes,
            devices,
            proxy,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| LaunchError::Http(e.to_string()))?,
            api_key: None,
        };
        let voters: Vec<u64> = cluster.voters();
        for id in &voters {
            cluster.spawn(*id)?;
        }
        for index in 0..cluster.devices.len() {
            cluster.spawn_device(index)?;
        }
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
        tracing::info!(leader, "cluster has a leader");
        let learners: Vec<u64> = cluster
            .nodes
            .values()
            .filter(|n| !n.placement.voter)
            .map(|n| n.placement.id)
            .collect();
        for id in learners {
            cluster.spawn(id)?;
            cluster.add_learner(id).await?;
        }
        for index in 0..cluster.devices.len() {
            let d = &cluster.devices[index];
            let body = d.process.registration(&d.proxy.to_string());
            cluster
                .admin_post_anywhere("/v1/admin/links", &body, Duration::from_secs(30))
                .await?;
        }
        let customer = cluster
            .admin_post_anywhere(
                "/v1/admin/customers",
                &json!({"name": "chaos-workload"}),
                Duration::from_secs(30),
            )
            .await?;
        cluster.api_key = customer["api_key"].as_str().map(str::to_string);
        Ok(cluster)
    }

    pub fn voters(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.placement.voter)
            .map(|n| n.placement.id)
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Running and not paused.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.process.is_live())
            .map(|n| n.placement.id)
            .collect()
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].api)
    }

    /// Every node's API base URL, for the client SDK.
    pub fn endpoints(&self) -> Vec<String> {
        self.ids().into_iter().map(|id| self.url(id)).collect()
    }

    fn spawn(&mut self, id: u64) -> Result<(), LaunchError> {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.process.spawn()?;
        // Register before it can dial out, so its connections are known.
        if let Some(pid) = node.process.pid() {
            self.proxy.register_pid(pid, Endpoint::Node(id));
        }
        Ok(())
    }

    fn spawn_device(&mut self, index: usize) -> Result<(), LaunchError> {
        let rate = self.config.device_rate;
        let d = &mut self.devices[index];
        d.process.args = vec!["--rate".into(), rate.to_string()];
        d.process.args.extend(d.fault_args.iter().cloned());
        d.process.spawn()?;
        Ok(())
    }

    fn node_process(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes.get_mut(&id).expect("known node").process
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        self.node_process(id).kill();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, id: u64, grace: Duration) {
        self.node_process(id).terminate(grace);
    }

    /// SIGSTOP: frozen with its sockets open, like a long GC pause or a VM stall.
    pub fn pause(&mut self, id: u64) {
        self.node_process(id).pause();
    }

    pub fn resume(&mut self, id: u64) {
        self.node_process(id).resume();
    }

    /// Gives node `id` the extra environment `env` from its next start on
    /// (a wrong clock: `testkit::launcher::faketime`), replacing any such
    /// environment given before; an empty `env` takes it away. Returns
    /// whether anything changed.
    pub fn set_clock_env(&mut self, id: u64, env: Vec<(String, String)>) -> bool {
        let process = self.node_process(id);
        let before = process.env.clone();
        process
            .env
            .retain(|(k, _)| !geiger_testkit::launcher::faketime::VARIABLES.contains(&k.as_str()));
        process.env.extend(env);
        process.env != before
    }

    /// Starts a node again (killing it first if it runs), same config and data.
    pub fn restart(&mut self, id: u64) -> Result<(), LaunchError> {
        self.kill(id);
        self.spawn(id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].process.is_running()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes[&id].process.paused
    }

    pub fn kill_device(&mut self, index: usize) {
        self.devices[index].process.kill();
    }

    pub fn device_is_running(&self, index: usize) -> bool {
        self.devices[index].process.pid().is_some()
    }

    /// Restarts a device agent with extra flags (e.g. `--fault-stuck-after`),
    /// same state directory and port, so its identity and sequence carry on.
    pub fn restart_device(
        &mut self,
        index: usize,
        fault_args: &[String],
    ) -> Result<(), LaunchError> {
        self.kill_device(index);
        self.devices[index].fault_args = fault_args.to_vec();
        self.spawn_device(index)
    }

    /// `GET path` on one node with the admin token.
    pub async fn admin_get(&self, id: u64, path: &str) -> Result<Value, LaunchError> {
        let r = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| LaunchError::Http(format!("node {id} GET {path}: {e}")))?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(LaunchError::Http(format!(
                "node {id} GET {path}: {status} {body}"
            )));
        }
        Ok(body)
    }

    pub async fn admin_post(
        &self,
        id: u64,
        path: &str,
        body: &Value,
    ) -> Result<Value, LaunchError> {
        let r = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| LaunchError::Http(format!("node {id} POST {path}: {e}")))?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(LaunchError::Http(format!(
                "node {id} POST {path}: {status} {body}"
            )));
        }
        Ok(body)
    }

    /// POSTs to the leader if known, else to each live node in turn, until
    /// one accepts or `within` passes.
    async fn admin_post_anywhere(
        &self,
        path: &str,
        body: &Value,
        within: Duration,
    ) -> Result<Value, LaunchError> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut order = self.live();
            if let Some(l) = self.leader().await {
                order.retain(|&id| id != l);
                order.insert(0, l);
            }
            for id in order {
                match self.admin_post(id, path, body).await {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(LaunchError::Timeout(within, format!("POST {path}: {last}")))
    }

    async fn add_learner(&self, id: u64) -> Result<(), LaunchError> {
        let n = &self.nodes[&id];
        let body = json!({
            "action": "add_learner",
            "id": id,
            "member": {
                "api_addr": n.api.to_string(),
                "rpc_addr": n.rpc_proxy.to_string(),
                "zone": n.placement.zone_name(),
                "cloud": n.placement.cloud,
                "region": "region-1",
            }
        });
        self.admin_post_anywhere("/v1/admin/members", &body, Duration::from_secs(60))
            .await
            .map(|_| ())
    }

    /// `GET /v1/cluster/status` from one node, if it answers.
    pub async fn status(&self, id: u64) -> Option<Value> {
        self.admin_get(id, "/v1/cluster/status").await.ok()
    }

    /// The leader most live nodes name, if any does.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        let asks = self.live().into_iter().map(|id| self.status(id));
        for status in futures_join_all(asks).await.into_iter().flatten() {
            if let Some(l) = status["leader"].as_u64() {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l)
    }

    pub async fn wait_for_leader(&self, within: Duration) -> Result<u64, LaunchError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Timeout(within, "a leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `/readyz` answers 200.
    pub async fn ready(&self, id: u64) -> bool {
        matches!(
            self.http.get(format!("{}/readyz", self.url(id))).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    pub async fn wait_ready(&self, id: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ready(id).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The pool depth (bytes) the leader reports, if it answers.
    pub async fn pool_bytes(&self) -> Option<u64> {
        let leader = self.leader().await?;
        self.status(leader).await?["pool_bytes"].as_u64()
    }

    /// The last lines of every log, for a failed run's summary.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .values()
            .map(|n| n.process.log_path.clone())
            .chain(self.devices.iter().map(|d| d.process.log_path.clone()))
            .map(|path| process::log_tail(&path, lines))
            .collect()
    }

    /// Stops everything (resuming paused processes first so they die).
    pub fn shutdown(&mut self) {
        for node in self.nodes.values_mut() {
            node.process.resume();
            node.process.kill();
        }
        for index in 0..self.devices.len() {
            self.kill_device(index);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs futures concurrently and collects their outputs in order.
pub async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    // Polling them in turn inside one task is enough here: each is an HTTP
    // call that mostly waits.
    let joined = JoinAll {
        futures: set.into_iter().map(Some).collect(),
        outputs: Vec::new(),
    };
    out.extend(joined.await);
    out
}

struct JoinAll<F: std::future::Future> {
    futures: Vec<Option<std::pin::Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

// The futures are boxed and the outputs are never pinned.
impl<F: std::future::Future> Unpin for JoinAll<F> {}

impl<F: std::future::Future> std::future::Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if this.outputs.is_empty() {
            this.outputs = (0..this.futures.len()).map(|_| None).collect();
        }
        let mut pending = false;
        for (i, slot) in this.futures.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        this.outputs[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(
                this.outputs
                    .drain(..)
                    .map(|o| o.expect("polled to completion"))
                    .collect(),
            )
        }
    }
}
