//! The end-to-end tests' cluster: `geiger node` processes on 127.0.0.1
//! (ids, ports, zone labels of your choice) and `geiger-device` agents,
//! started, signalled and stopped by the shared launcher
//! (`geiger_testkit::launcher`), plus an admin HTTP client and waits that
//! panic with the node logs.
//!
//! Every process is killed when its handle drops (a paused one is resumed
//! first), so a failing test leaves nothing running. Each node logs to
//! `<dir>/node-<id>.log`; `Cluster::dump_logs` prints their tails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use geiger_testkit::launcher::{self, DeviceProcess, NodeConfig, NodeProcess};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// The `geiger` binary cargo built for these tests.
fn geiger() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_geiger"))
}

/// A free port on 127.0.0.1 (see `geiger_testkit::launcher::ports`).
pub fn free_port() -> u16 {
    launcher::free_port(Ipv4Addr::LOCALHOST).expect("a free port")
}

/// One node's identity and placement.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub zone: String,
    pub cloud: String,
    pub region: String,
    pub api_port: u16,
    pub rpc_port: u16,
}

impl NodeSpec {
    pub fn new(id: u64, zone: &str) -> Self {
        NodeSpec {
            id,
            zone: zone.into(),
            cloud: "cloud-a".into(),
            region: "region-a".into(),
            api_port: free_port(),
            rpc_port: free_port(),
        }
    }

    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    pub fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    fn config(&self, data_dir: &Path, extra: &str) -> NodeConfig {
        NodeConfig {
            id: self.id,
            data_dir: data_dir.to_path_buf(),
            cluster_name: "test".into(),
            zone: self.zone.clone(),
            cloud: self.cloud.clone(),
            region: self.region.clone(),
            api: SocketAddr::from((Ipv4Addr::LOCALHOST, self.api_port)),
            rpc: SocketAddr::from((Ipv4Addr::LOCALHOST, self.rpc_port)),
            advertise: None,
            admin_token: ADMIN_TOKEN.into(),
            cluster_secret: CLUSTER_SECRET.into(),
            extra_toml: extra.into(),
            bootstrap: Vec::new(),
        }
    }
}

/// `n` nodes, ids 1..=n, one per zone `zone-1`, `zone-2`, ...
pub fn one_per_zone(n: u64) -> Vec<NodeSpec> {
    (1..=n)
        .map(|id| NodeSpec::new(id, &format!("zone-{id}")))
        .collect()
}

/// A node of the cluster: its spec and its process (whose fields, such as
/// `log_path`, read through).
pub struct NodeProc {
    pub spec: NodeSpec,
    pub process: NodeProcess,
}

impl NodeProc {
    pub fn pid(&self) -> u32 {
        self.process.pid().expect("node is running")
    }
}

impl Deref for NodeProc {
    type Target = NodeProcess;
    fn deref(&self) -> &NodeProcess {
        &self.process
    }
}

/// A cluster of `geiger node` processes sharing one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Writes a config per node and starts them all. `extra_toml` is added
    /// to every node's file (whole sections, e.g. `"[hardware]\n..."`; it
    /// must not repeat `[labels]`, `[api]` or `[internal]`).
    pub fn start(specs: Vec<NodeSpec>, extra_toml: &str) -> Cluster {
        Self::start_with_env(specs, extra_toml, Vec::new())
    }

    pub fn start_with_env(
        specs: Vec<NodeSpec>,
        extra_toml: &str,
        env: Vec<(String, String)>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, specs, extra_toml, env, &|_, config| config)
    }

    /// Like [`Self::start_with_env`] in `dir`, with each node's config
    /// passed through `adjust` first (per-node sections, `advertise`).
    pub fn start_in(
        dir: tempfile::TempDir,
        specs: Vec<NodeSpec>,
        extra_toml: &str,
        env: Vec<(String, String)>,
        adjust: &dyn Fn(&Path, NodeConfig) -> NodeConfig,
    ) -> Cluster {
        Self::start_binary_in(geiger(), dir, specs, extra_toml, env, adjust)
    }

    /// Like [`Self::start_in`], running `binary` (another version's
    /// `geiger`) instead of this build's.
    pub fn start_binary_in(
        binary: &Path,
        dir: tempfile::TempDir,
        specs: Vec<NodeSpec>,
        extra_toml: &str,
        env: Vec<(String, String)>,
        adjust: &dyn Fn(&Path, NodeConfig) -> NodeConfig,
    ) -> Cluster {
        let configs: Vec<NodeConfig> = specs
            .iter()
            .map(|s| {
                let config = s.config(&dir.path().join(format!("node-{}", s.id)), extra_toml);
                adjust(dir.path(), config)
            })
            .collect();
        let voters: Vec<_> = configs.iter().map(NodeConfig::as_bootstrap).collect();
        let log_filter =
            std::env::var("GEIGER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into());
        // Every node of every test cluster holds the same link key, so a
        // device started anywhere trusts them ([`Device::start`]); the fault
        // harness gives each node its own.
        for config in &configs {
            write_test_link_key(&config.data_dir);
        }
        let mut nodes = BTreeMap::new();
        for (spec, mut config) in specs.into_iter().zip(configs) {
            config.bootstrap = voters.clone();
            let mut process = NodeProcess::prepare(
                binary,
                &config,
                dir.path().join(format!("node-{}.toml", spec.id)),
                dir.path().join(format!("node-{}.log", spec.id)),
            )
            .expect("node config written");
            process.env = vec![("GEIGER_LOG".into(), log_filter.clone())];
            process.env.extend(env.iter().cloned());
            nodes.insert(spec.id, NodeProc { spec, process });
        }
        for node in nodes.values_mut() {
            node.process.spawn().expect("geiger node starts");
        }
        Cluster {
            dir,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                // The nodes close keep-alive connections idle for 10 s; a
                // benchmark's client sits idle that long between phases.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        }
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[&id]
    }

    fn process(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes.get_mut(&id).expect("known node").process
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// `http://127.0.0.1:<api port>` of node `id`.
    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].spec.api_addr())
    }

    /// Running, not paused nodes.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.process.is_live())
            .map(|(id, _)| *id)
            .collect()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        self.process(id).kill();
    }

    /// SIGSTOP: the process stays, frozen, with its sockets open.
    pub fn pause(&mut self, id: u64) {
        self.process(id).pause();
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        self.process(id).resume();
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self, id: u64) {
        self.process(id).terminate(Duration::from_secs(10));
    }

    /// Starts a stopped or killed node again, with the same config and data.
    pub fn restart(&mut self, id: u64) {
        self.process(id).restart().expect("geiger node restarts");
    }

    /// Starts `binary` as node `spec` with an empty bootstrap list: it
    /// waits to be added (`POST /v1/admin/members`).
    pub fn start_outsider(&mut self, binary: &Path, spec: NodeSpec) {
        let config = spec.config(&self.dir.path().join(format!("node-{}", spec.id)), "");
        write_test_link_key(&config.data_dir);
        let mut process = NodeProcess::prepare(
            binary,
            &config,
            self.dir.path().join(format!("node-{}.toml", spec.id)),
            self.dir.path().join(format!("node-{}.log", spec.id)),
        )
        .expect("node config written");
        process.env = vec![(
            "GEIGER_LOG".into(),
            std::env::var("GEIGER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        )];
        process.spawn().expect("geiger node starts");
        self.nodes.insert(spec.id, NodeProc { spec, process });
    }

    /// Starts a stopped node again with this build's `geiger`: an upgrade
    /// in place, same config and data.
    pub fn restart_upgraded(&mut self, id: u64) {
        let process = self.process(id);
        process.binary = geiger().to_path_buf();
        process.restart().expect("geiger node restarts upgraded");
    }

    pub async fn get(&self, id: u64, path: &str) -> Result<(u16, Value), String> {
        let r = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn post(&self, id: u64, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let r = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `GET /v1/cluster/status` from node `id`.
    pub async fn status(&self, id: u64) -> Option<Value> {
        match self.get(id, "/v1/cluster/status").await {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Waits until every live node knows the same leader; returns it.
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.live() {
                leaders.push(self.status(id).await.and_then(|s| s["leader"].as_u64()));
            }
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| l == &Some(*first)) {
                    return *first;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {within:?}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `check` every 100 ms until it returns `Some`, or panics with
    /// `what` (and the node logs) after `within`.
    pub async fn wait_until<T, F, Fut>(&self, within: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("timed out after {within:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every node's log, on stderr.
    pub fn dump_logs(&self) {
        for node in self.nodes.values() {
            eprint!("{}", launcher::log_tail(&node.process.log_path, 40));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.process.resume();
            node.process.kill();
        }
        if std::env::var_os("GEIGER_TEST_KEEP").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("temp dir"),
            ));
        }
    }
}

// ---- devices ---------------------------------------------------------------

/// The device link key every test node holds (see [`Cluster::start`]).
pub fn test_link_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

fn write_test_link_key(data_dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir).expect("node data dir");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(data_dir.join("link.key"))
        .expect("link key file");
    std::io::Write::write_all(&mut f, hex::encode(test_link_key().to_bytes()).as_bytes())
        .expect("link key written");
}

/// Writes a trusted-nodes file listing `keys`, beside `state_dir`.
pub fn trusted_file(state_dir: &Path, keys: &[ed25519_dalek::VerifyingKey]) -> PathBuf {
    let path = state_dir.with_extension("trusted");
    let text: String = keys
        .iter()
        .map(|k| format!("{}\n", hex::encode(k.as_bytes())))
        .collect();
    std::fs::write(&path, text).expect("trusted nodes written");
    path
}

/// A running `geiger-device` agent on 127.0.0.1 (its fields, such as `id`
/// and `public_key`, read through).
pub struct Device(DeviceProcess);

impl Device {
    /// Starts an agent with its state in `state_dir`, listening on a free
    /// port, with extra flags (`--rate`, `--fault-stuck-after`, ...).
    pub fn start(state_dir: &Path, args: &[&str]) -> Device {
        Self::start_trusting(state_dir, &[test_link_key().verifying_key()], args)
    }

    /// As [`Device::start`], serving only nodes with one of `keys`.
    pub fn start_trusting(
        state_dir: &Path,
        keys: &[ed25519_dalek::VerifyingKey],
        args: &[&str],
    ) -> Device {
        let mut d = DeviceProcess::new(
            &launcher::device_binary(geiger()),
            state_dir.to_path_buf(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            trusted_file(state_dir, keys),
            args.iter().map(|s| s.to_string()).collect(),
            state_dir.with_extension("log"),
        );
        d.spawn().expect("geiger-device starts");
        Device(d)
    }

    pub fn addr(&self) -> String {
        self.0.listen.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.0.pid().expect("device is running")
    }

    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Kills (-9) and starts it again on the same port and state.
    pub fn restart(&mut self) {
        self.0.restart().expect("geiger-device restarts");
    }

    /// The JSON body for `POST /v1/admin/links`.
    pub fn registration(&self) -> Value {
        self.0.registration(&self.addr())
    }
}

impl Deref for Device {
    type Target = DeviceProcess;
    fn deref(&self) -> &DeviceProcess {
        &self.0
    }
}

impl DerefMut for Device {
    fn deref_mut(&mut self) -> &mut DeviceProcess {
        &mut self.0
    }
}
