//! Shared helpers for end-to-end tests with real processes: a cluster of
//! `geiger node` processes on 127.0.0.1 (ids, ports, zone labels of your
//! choice), `geiger-device` agents, signals (kill -9, SIGSTOP, SIGCONT),
//! restarts, temporary directories, and an admin HTTP client.
//!
//! Every process is killed when its handle drops (a paused one is resumed
//! first), so a failing test leaves nothing running. Each node logs to
//! `<dir>/node-<id>.log`; `Cluster::dump_logs` prints their tails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// A free TCP port on 127.0.0.1 for a node to listen on, checked by binding
/// it. Taken from below the kernel's ephemeral range (32768 and up on
/// Linux), which is where every outgoing connection gets its local port:
/// a port released there could go to some client's connection before the
/// node binds it, and the node then failed to start. Each test process
/// walks its own stretch (by pid) so parallel tests never pick the same.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 220) * 100;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
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
}

/// `n` nodes, ids 1..=n, one per zone `zone-1`, `zone-2`, ...
pub fn one_per_zone(n: u64) -> Vec<NodeSpec> {
    (1..=n)
        .map(|id| NodeSpec::new(id, &format!("zone-{id}")))
        .collect()
}

/// A running (or stopped) node process.
pub struct NodeProc {
    pub spec: NodeSpec,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    pub paused: bool,
}

impl NodeProc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }
}

/// A cluster of `geiger node` processes sharing one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub env: Vec<(String, String)>,
    pub http: reqwest::Client,
}

fn toml_for(spec: &NodeSpec, all: &[NodeSpec], data_dir: &Path, extra: &str) -> String {
    let mut t = format!(
        r#"node_id = {id}
data_dir = "{data}"
cluster_name = "test"

[labels]
zone = "{zone}"
cloud = "{cloud}"
region = "{region}"

[api]
listen = "{api}"
admin_token = "{ADMIN_TOKEN}"

[internal]
listen = "{rpc}"
cluster_secret = "{CLUSTER_SECRET}"
"#,
        id = spec.id,
        data = data_dir.display(),
        zone = spec.zone,
        cloud = spec.cloud,
        region = spec.region,
        api = spec.api_addr(),
        rpc = spec.rpc_addr(),
    );
    t.push_str(extra);
    for m in all {
        t.push_str(&format!(
            "\n[[bootstrap]]\nid = {}\napi_addr = \"{}\"\nrpc_addr = \"{}\"\nzone = \"{}\"\ncloud = \"{}\"\nregion = \"{}\"\n",
            m.id,
            m.api_addr(),
            m.rpc_addr(),
            m.zone,
            m.cloud,
            m.region
        ));
    }
    t
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
        let mut nodes = BTreeMap::new();
        for spec in &specs {
            let data_dir = dir.path().join(format!("node-{}", spec.id));
            let config_path = dir.path().join(format!("node-{}.toml", spec.id));
            std::fs::write(&config_path, toml_for(spec, &specs, &data_dir, extra_toml))
                .expect("write config");
            nodes.insert(
                spec.id,
                NodeProc {
                    spec: spec.clone(),
                    config_path,
                    log_path: dir.path().join(format!("node-{}.log", spec.id)),
                    child: None,
                    paused: false,
                },
            );
        }
        let mut cluster = Cluster {
            dir,
            nodes,
            env,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        };
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.spawn(id);
        }
        cluster
    }

    fn spawn(&mut self, id: u64) {
        let env = self.env.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geiger"));
        cmd.arg("node")
            .arg("--config")
            .arg(&node.config_path)
            .env(
                "GEIGER_LOG",
                std::env::var("GEIGER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        node.child = Some(cmd.spawn().expect("geiger node starts"));
        node.paused = false;
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[&id]
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
            .filter(|(_, n)| n.child.is_some() && !n.paused)
            .map(|(id, _)| *id)
            .collect()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP: the process stays, frozen, with its sockets open.
    pub fn pause(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        signal(node.pid(), "STOP");
        node.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        signal(node.pid(), "CONT");
        node.paused = false;
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(child.id(), "CONT");
            }
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// Starts a stopped or killed node again, with the same config and data.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
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
        for (id, node) in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            // Backtrace frames would push the error itself out of the tail.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let t = l.trim_start();
                    !(t.starts_with("at ")
                        || t.split_once(": ")
                            .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("----- node {id} ({}) -----", node.log_path.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                if node.paused {
                    signal(child.id(), "CONT");
                }
                let _ = child.kill();
                let _ = child.wait();
            }
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

/// The `geiger-device` binary: next to `geiger` in the target directory,
/// built on demand (`cargo build -p geiger-hardware --bin geiger-device`,
/// with `--release` when `geiger` is the release build, as under
/// `cargo bench`) if it is not there yet.
pub fn device_binary() -> PathBuf {
    let geiger = PathBuf::from(env!("CARGO_BIN_EXE_geiger"));
    let dir = geiger.parent().expect("target dir");
    let path = dir.join(format!("geiger-device{}", std::env::consts::EXE_SUFFIX));
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        // Always ask cargo: it is a no-op when the binary is up to date.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = dir.parent().expect("profile dir's parent");
        let mut args = vec!["build", "-p", "geiger-hardware", "--bin", "geiger-device"];
        if dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            args.push("--release");
        }
        let status = Command::new(cargo)
            .args(&args)
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if !matches!(status, Ok(s) if s.success()) && !path.exists() {
            panic!("could not build geiger-device: {status:?}");
        }
    });
    path
}

/// A running `geiger-device` agent.
pub struct Device {
    pub state_dir: PathBuf,
    pub port: u16,
    pub args: Vec<String>,
    pub id: String,
    pub public_key: String,
    pub child: Option<Child>,
    pub log_path: PathBuf,
}

impl Device {
    /// Starts an agent with its state in `state_dir`, listening on a free
    /// port, with extra flags (`--rate`, `--fault-stuck-after`, ...).
    pub fn start(state_dir: &Path, args: &[&str]) -> Device {
        let mut d = Device {
            state_dir: state_dir.to_path_buf(),
            port: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            id: String::new(),
            public_key: String::new(),
            child: None,
            log_path: state_dir.with_extension("log"),
        };
        d.spawn();
        d
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.state_dir).expect("device dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("device log");
        let mut child = Command::new(device_binary())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen")
            .arg(self.addr())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("geiger-device starts");
        // First line: `listening=ADDR device=dev_… public_key=HEX`.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("device prints its key");
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("device=") {
                self.id = v.to_string();
            } else if let Some(v) = field.strip_prefix("public_key=") {
                self.public_key = v.to_string();
            }
        }
        assert!(
            self.id.starts_with("dev_") && self.public_key.len() == 64,
            "unexpected device banner: {line}"
        );
        // Keep draining stdout so the agent never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("device is running").id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills (-9) and starts it again on the same port and state.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The JSON body for `POST /v1/admin/links`.
    pub fn registration(&self) -> Value {
        serde_json::json!({
            "device": self.id,
            "address": self.addr(),
            "public_key": self.public_key,
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}
