//! An in-process cluster on 127.0.0.1 for tests and benchmarks: every node
//! is a real [`ControlPlane`] with its own data directory and its own HTTP
//! listener, talking to the others over loopback exactly as in production.
//! Nodes can be killed (server and Raft stopped mid-flight), restarted from
//! their data directory, or wiped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use geiger_control_plane::{
    api_key_hash, Command, ControlPlane, ControlPlaneConfig, Error, Member, NodeId, Outcome,
    Timeouts,
};

/// The secret every test node shares.
pub const TEST_SECRET: &str = "test-cluster-secret";
/// The admin credential every test replica holds (operator commands a
/// follower forwards carry it; the leader requires it).
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token";

/// One node of a [`TestCluster`].
pub struct TestNode {
    pub id: NodeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub member: Member,
    pub cp: Option<ControlPlane>,
    server: Option<JoinHandle<()>>,
}

/// A cluster of [`TestNode`]s under one base directory.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub tune: fn(&mut ControlPlaneConfig),
}

fn label(id: NodeId, addr: SocketAddr) -> Member {
    Member {
        rpc_addr: addr.to_string(),
        api_addr: String::new(),
        zone: format!("zone-{id}"),
        cloud: format!("cloud-{}", id % 3),
        region: "local".into(),
    }
}

/// LAN timeouts, tightened for loopback.
pub fn default_tune(config: &mut ControlPlaneConfig) {
    config.timeouts = Timeouts::lan();
}

async fn serve(cp: &ControlPlane, listener: TcpListener) -> JoinHandle<()> {
    let router = cp.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}

impl TestNode {
    fn config(&self, tune: fn(&mut ControlPlaneConfig)) -> ControlPlaneConfig {
        let mut c = ControlPlaneConfig::new(self.id, self.member.clone(), TEST_SECRET);
        c.admin_token = Some(TEST_ADMIN_TOKEN.into());
        tune(&mut c);
        c
    }

    /// The running replica. Panics if the node is stopped: test code only.
    pub fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("node is running")
    }

    /// Stops the node abruptly: its server task is aborted (open
    /// connections die with it as its gate closes) and Raft stops without
    /// any handover. Nothing is flushed beyond what was already durable.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }

    /// Starts the node again from its data directory, on the same address.
    pub async fn start(&mut self, tune: fn(&mut ControlPlaneConfig)) -> Result<(), Error> {
        let listener = bind_retry(self.addr).await?;
        let config = self.config(tune);
        // The previous instance's databases close when its last handle
        // drops; give stragglers a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let cp = loop {
            match ControlPlane::open(config.clone(), &self.dir).await {
                Ok(cp) => break cp,
                Err(e) if Instant::now() < deadline && e.to_string().contains("already open") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        };
        self.server = Some(serve(&cp, listener).await);
        self.cp = Some(cp);
        Ok(())
    }
}

async fn bind_retry(addr: SocketAddr) -> Result<TcpListener, Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "rebinding");
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) under `base` and bootstraps them as voters.
    pub async fn start(
        base: &Path,
        n: u64,
        tune: fn(&mut ControlPlaneConfig),
    ) -> Result<Self, Error> {
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            tune,
        };
        for id in 1..=n {
            cluster.spawn_node(base, id).await?;
        }
        let voters: BTreeMap<NodeId, Member> = cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.member.clone()))
            .collect();
        cluster.nodes[0].cp().bootstrap(voters).await?;
        cluster.wait_for_leader(Duration::from_secs(10)).await?;
        Ok(cluster)
    }

    /// Starts a new, empty node (not yet a member) with this id.
    pub async fn spawn_node(&mut self, base: &Path, id: NodeId) -> Result<usize, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let member = label(id, addr);
        let dir = base.join(format!("node-{id}"));
        let mut node = TestNode {
            id,
            dir,
            addr,
            member,
            cp: None,
            server: None,
        };
        let cp = ControlPlane::open(node.config(self.tune), &node.dir).await?;
        node.server = Some(serve(&cp, listener).await);
        node.cp = Some(cp);
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    pub fn node(&self, i: usize) -> &ControlPlane {
        self.nodes[i].cp()
    }

    /// Index of the node that is leader, as seen by running nodes.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(cp) = &n.cp {
                    if cp.raft().current_leader().await == Some(n.id) {
                        return Ok(i);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable("no leader elected".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        let tune = self.tune;
        self.nodes[i].start(tune).await
    }

    /// Stops the node and deletes its data directory.
    pub async fn wipe(&mut self, i: usize) -> Result<(), Error> {
        self.nodes[i].kill().await;
        let dir = self.nodes[i].dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Makes the ledger ready for draws: one customer with `api_key`, a
    /// lease on device `dev-1` for node 1, and `chunks` chunks of entropy
    /// (from a fixed pattern; tests do not need real randomness).
    pub async fn seed(
        &self,
        api_key: &str,
        chunks: u64,
        chunk_bytes: usize,
    ) -> Result<String, Error> {
        let cp = self
            .nodes
            .iter()
            .find_map(|n| n.cp.as_ref())
            .ok_or(Error::Shutdown)?;
        cp.write(Command::CreateCustomer {
            id: "cu_test".into(),
            name: "Test Casino".into(),
            key_sha256: api_key_hash(api_key),
        })
        .await?;
        let epoch = match cp
            .write(Command::AssignLease {
                device: "dev-1".into(),
                owner: 1,
                expected_epoch: None,
                duration_ms: 3_600_000,
            })
            .await?
        {
            Outcome::Lease(l) => l.epoch,
            other => return Err(Error::Raft(format!("lease: {other:?}"))),
        };
        add_entropy(cp, "dev-1", epoch, 0, chunks, chunk_bytes).await?;
        Ok("cu_test".into())
    }
}

/// Appends `chunks` chunks of `chunk_bytes` pseudo-random bytes to `device`
/// under `epoch`, sequences `first_seq..`, 64 chunks per entry.
pub async fn add_entropy(
    cp: &ControlPlane,
    device: &str,
    epoch: u64,
    first_seq: u64,
    chunks: u64,
    chunk_bytes: usize,
) -> Result<(), Error> {
    let mut seq = first_seq;
    let end = first_seq + chunks;
    while seq < end {
        let mut commands = Vec::new();
        while seq < end && commands.len() < 64 {
            let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
            let bytes = (0..chunk_bytes)
                .map(|_| {
                    // xorshift64*: a fixed pattern, not entropy.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect();
            commands.push(Command::AppendEntropy {
                device: device.into(),
                epoch,
                seq,
                bytes,
            });
            seq += 1;
        }
        for outcome in cp.write_batch(commands).await? {
            if let Outcome::Rejected(r) = outcome {
                return Err(Error::Rejected(r));
            }
        }
    }
    Ok(())
}

/// A draw request body for `previous`.
pub fn draw_request(previous: &str, request_id: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "previous": previous,
        "tag": "round",
        "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true},
    });
    if let Some(id) = request_id {
        v["request_id"] = serde_json::Value::String(id.into());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}
