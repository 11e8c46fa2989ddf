//! `geiger dev`: one node, one simulated device, an embedded default
//! configuration, and a customer with a ready chain, so that the curl
//! examples it prints work as printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use geiger_control_plane::key_encryption::KeyEncryptionKey;
use geiger_control_plane::{Command, Outcome};
use geiger_hardware::{Agent, AgentConfig, SourceConfig, TrustedNodes};
use rand::RngCore;

use crate::config::{BootstrapMember, NodeConfig};
use crate::node::{Node, NodeError};
use crate::private_files::{self, PrivateFileError};

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("simulated device: {0}")]
    Device(String),
    #[error("ledger: {0}")]
    Ledger(#[from] geiger_control_plane::Error),
    #[error("the dev node did not become ready: {0}")]
    NotReady(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    PrivateFile(#[from] PrivateFileError),
}

pub struct RunningDev {
    node: Node,
    device: tokio::task::JoinHandle<()>,
    stop_device: tokio::sync::oneshot::Sender<()>,
}

impl RunningDev {
    pub async fn shutdown(self) {
        let _ = self.stop_device.send(());
        let _ = self.device.await;
        self.node.shutdown().await;
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A free loopback port for the internal listener (dev only: a small race
/// with other processes is acceptable there).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Reads the dev secrets kept in the data directory, or makes them (0600,
/// in a 0700 directory).
fn dev_secret(data_dir: &std::path::Path, name: &str) -> Result<String, DevError> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            private_files::check_private(&path)?;
            Ok(s.trim().to_string())
        }
        _ => {
            let secret = random_hex(24);
            let _ = std::fs::remove_file(&path);
            private_files::write_new_private(&path, secret.as_bytes())?;
            Ok(secret)
        }
    }
}

pub async fn start(listen: SocketAddr, data_dir: PathBuf) -> Result<RunningDev, DevError> {
    private_files::private_dir(&data_dir)?;
    let internal = free_port()?;
    // The embedded defaults, with secrets of this dev data directory's own.
    // `api.listen` as an override, so that the plaintext rule (config.rs)
    // judges the address actually served.
    let mut config = NodeConfig::load_with(
        None,
        &[
            ("api.listen", listen.to_string()),
            ("api.admin_token", dev_secret(&data_dir, "admin-token")?),
            (
                "internal.cluster_secret",
                dev_secret(&data_dir, "cluster-secret")?,
            ),
        ],
    )?;
    // The key-encryption key sits beside the other dev secrets, outside the
    // ledger directory, unless one is configured already.
    if config.signing.key_encryption_key_file.is_empty()
        && config.signing.key_encryption_key.is_empty()
    {
        let path = data_dir.join("key-encryption-key");
        if std::fs::metadata(&path).is_err() {
            let kek = KeyEncryptionKey::generate_hex();
            private_files::write_new_private(&path, kek.as_bytes())?;
        }
        config.signing.key_encryption_key_file = path.display().to_string();
    }
    config.data_dir = data_dir.join("ledger");
    config.internal.listen = internal;
    config.bootstrap = vec![BootstrapMember {
        id: config.node_id,
        api_addr: listen.to_string(),
        rpc_addr: internal.to_string(),
        zone: config.labels.zone.clone(),
        cloud: config.labels.cloud.clone(),
        region: config.labels.region.clone(),
    }];
    let admin_token = config.api.admin_token.clone();
    let node = Node::start(config).await?;

    // The simulated device runs in this process, on its own loopback port,
    // and reaches the node over a real link like any device.
    let agent = Agent::bind(AgentConfig::new(
        free_port()?,
        data_dir.join("device"),
        SourceConfig::sim(),
        TrustedNodes::fixed([node.link_public_key]),
    ))
    .await
    .map_err(|e| DevError::Device(e.to_string()))?;
    let device_addr = agent.local_addr()?;
    let device_id = agent.device_id();
    let device_key = agent.public_key();
    let (stop_device, stopped) = tokio::sync::oneshot::channel::<()>();
    let device = tokio::spawn(agent.run_until(async move {
        let _ = stopped.await;
    }));

    wait_for_leader(&node).await?;
    node.ledger
        .write(Command::RegisterLink {
            device: device_id.to_string(),
            address: device_addr.to_string(),
            public_key: device_key.to_bytes(),
        })
        .await?;

    let api_key = match std::env::var("GEIGER_DEV_API_KEY") {
        Ok(key) if !key.is_empty() => key,
        _ => format!("gk_{}", random_hex(32)),
    };
    if node.ledger.customer_by_api_key(&api_key)?.is_none() {
        node.ledger
            .write(Command::CreateCustomer {
                id: format!("cu_dev_{}", random_hex(4)),
                name: "dev".into(),
                key_sha256: geiger_control_plane::api_key_hash(&api_key),
            })
            .await?;
    }
    let customer = node
        .ledger
        .customer_by_api_key(&api_key)?
        .ok_or_else(|| DevError::NotReady("the dev customer was not stored".into()))?;
    let chain = match node
        .ledger
        .write(Command::CreateChain {
            customer: customer.id.clone(),
            tag: "dev table".into(),
        })
        .await?
    {
        Outcome::ChainCreated { id, .. } => id,
        other => return Err(DevError::NotReady(format!("creating a chain: {other:?}"))),
    };

    // Plaintext on loopback by default; TLS when `GEIGER_API__TLS__*` set it.
    let scheme = if node.config.api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{listen}");
    println!(
        "\ngeiger dev is running at {url}  (data in {dir}; Ctrl-C stops it)\n\
         \n  API key     {api_key}\n  admin token {admin_token}\n  device      {device_id} (simulated, {device_addr})\n  chain       {chain} (ready for its first draw)\n\
         \nTry:\n\
         \n  # open a chain\n  curl -s -X POST {url}/v1/chains -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' -d '{{\"tag\": \"roulette 1\"}}'\n\
         \n  # draw two dice on the ready chain (a second identical call gets 409 previous_already_used)\n  curl -s -X POST {url}/v1/draws -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' -d '{{\"previous\": \"{chain}\", \"tag\": \"round 1\", \"spec\": {{\"kind\": \"integers\", \"min\": 1, \"max\": 6, \"count\": 2}}}}'\n\
         \n  # see the chain and every draw on it (public)\n  curl -s {url}/v1/chains/{chain}/draws\n",
        dir = data_dir.display(),
    );
    Ok(RunningDev {
        node,
        device,
        stop_device,
    })
}

async fn wait_for_leader(node: &Node) -> Result<(), DevError> {
    for _ in 0..200 {
        if node.ledger.linearizable_barrier().await.is_ok() && !node.ledger.keys()?.keys.is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevError::NotReady(
        "no leader and signing key after 10 s".into(),
    ))
}
