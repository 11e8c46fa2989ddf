//! `Node`: opens the ledger, serves the internal (Raft) and public (API)
//! listeners, and starts the supervised actor tree. `geiger node` and
//! `geiger dev` both run one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use geiger_control_plane::{ControlPlane, ControlPlaneConfig, Member};
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::actors::alert_pusher::{AlertPusherSpec, AlertSettings};
use crate::actors::health::{HealthSpec, Readiness};
use crate::actors::supervisor::{NodeSupervisor, RestartPolicy, SupervisorMsg};
use crate::actors::workers::{RequestWorkers, RequestWorkersSpec};
use crate::api::{self, AppState};
use crate::cluster_view::{self, ClusterViewSpec, ViewSettings};
use crate::config::NodeConfig;
use crate::links::controller::LinkControllerSpec;
use crate::links::watcher::LinkWatcherSpec;
use crate::links::LinkSettings;
use crate::metrics::NodeMetrics;
use crate::rate_limit::RateLimiter;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("ledger: {0}")]
    Ledger(#[from] geiger_control_plane::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("actors: {0}")]
    Actors(String),
    #[error("public API certificate: {0}")]
    Tls(#[from] crate::listener::tls::TlsError),
    #[error("cluster certificate ([cluster.tls]): {0}")]
    ClusterTls(crate::listener::tls::TlsError),
    #[error(transparent)]
    PeerApi(#[from] crate::peer_api::PeerApiError),
    #[error(transparent)]
    PrivateFile(#[from] crate::private_files::PrivateFileError),
    /// Boxed: `config::ConfigError` is large, and this error travels far.
    #[error(transparent)]
    Config(Box<crate::config::ConfigError>),
    #[error("device link key: {0}")]
    LinkKey(#[from] geiger_hardware::device_store::StoreError),
}

impl From<crate::config::ConfigError> for NodeError {
    fn from(e: crate::config::ConfigError) -> Self {
        NodeError::Config(Box::new(e))
    }
}

/// The node's device link key, in its data directory (docs/LINK.md).
pub const LINK_KEY_FILE: &str = "link.key";
/// How often the Health actor refreshes readiness and the Raft metrics.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// The node's device link key: `DATA_DIR/link.key`, created (0600, in a
/// 0700 directory) if missing. `geiger node --print-link-key` calls it too,
/// so an operator can list a node's key on the devices before its first
/// start.
pub fn link_key(data_dir: &std::path::Path) -> Result<ed25519_dalek::SigningKey, NodeError> {
    crate::private_files::private_dir(data_dir)?;
    Ok(geiger_hardware::device_store::load_or_create_key_file(
        data_dir,
        LINK_KEY_FILE,
    )?)
}

pub struct Node {
    pub ledger: ControlPlane,
    pub config: Arc<NodeConfig>,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The public half of the key this node presents to devices: what
    /// every device lists in its trusted node keys.
    pub link_public_key: ed25519_dalek::VerifyingKey,
    servers: Vec<JoinHandle<()>>,
}

/// The internal listener: Raft RPC and forwarded writes, each connection
/// bounded like the public listener's, capped per peer address, and over
/// mutual TLS when `[cluster.tls]` is set.
async fn serve_internal(
    config: &NodeConfig,
    ledger: &ControlPlane,
    tls: Option<crate::cluster_tls::ClusterTls>,
    metrics: Arc<NodeMetrics>,
) -> Result<JoinHandle<()>, NodeError> {
    let addr = config.internal.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    // Peers keep connections alive; an idle one is closed after the
    // header-read timeout, longer than the peers' own pool idle time (10 s),
    // so a peer never reuses a connection this side is closing.
    let limits = crate::listener::ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(60),
        max_connections: config.internal.max_connections,
        max_connections_per_source: config.internal.max_connections_per_peer,
    };
    let tls = tls.map(|tls| {
        let gate = Arc::new(crate::cluster_tls::PeerGate {
            ledger: ledger.clone(),
            metrics: metrics.clone(),
        });
        (tls.server, gate)
    });
    // Counted so handshakes can be set against requests (connections are
    // reused: a handful of handshakes per thousands of requests).
    let router = ledger.router().layer(axum::middleware::from_fn_with_state(
        metrics.clone(),
        |axum::extract::State(metrics): axum::extract::State<Arc<NodeMetrics>>,
         request: axum::extract::Request,
         next: axum::middleware::Next| async move {
            metrics.internal_requests.inc();
            next.run(request).await
        },
    ));
    Ok(tokio::spawn(crate::listener::serve_internal(
        listener, router, limits, tls, metrics,
    )))
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let config = Arc::new(config);
        let metrics = NodeMetrics::new(config.node_id);
        // Before anything else starts: a bad certificate stops the node here.
        let tls = match &config.api.tls {
            Some(settings) => Some(crate::listener::tls::ServerTls::start(settings, &metrics)?),
            None => {
                if !config.api.listen.ip().to_canonical().is_loopback() {
                    // Only reachable with `api.plaintext` set (config.rs).
                    tracing::warn!(
                        api = %config.api.listen,
                        "serving the public API in plaintext on a non-loopback address: \
                         api.plaintext says a load balancer terminates TLS in front of this node"
                    );
                }
                None
            }
        };
        let peers = crate::peer_api::PeerApi::from_config(&config)?;
        let cluster_tls = match &config.cluster.tls {
            Some(settings) => Some(
                crate::cluster_tls::ClusterTls::start(settings, config.node_id, &metrics)
                    .map_err(NodeError::ClusterTls)?,
            ),
            None => {
                if !config.internal.listen.ip().to_canonical().is_loopback() {
                    // Only reachable with `cluster.plaintext = "allowed"`.
                    tracing::warn!(
                        internal = %config.internal.listen,
                        "members talk plaintext on a non-loopback address: \
                         cluster.plaintext = \"allowed\" says the network is trusted"
                    );
                }
                None
            }
        };
        let member = Member {
            rpc_addr: config.internal_advertise(),
            api_addr: config.api_advertise(),
            zone: config.labels.zone.clone(),
            cloud: config.labels.cloud.clone(),
            region: config.labels.region.clone(),
        };
        let mut cp = ControlPlaneConfig::new(
            config.node_id,
            member,
            config.internal.cluster_secret.clone(),
        );
        cp.cluster_name = config.cluster_name.clone();
        // Operator commands this node passes on to the leader carry it, and
        // the internal port asks it of every operator command (least
        // privilege: the cluster secret alone is a peer's credential).
        cp.admin_token = Some(config.api.admin_token.clone());
        cp.peer_tls = cluster_tls.as_ref().map(|tls| tls.client.clone());
        // The timing is built once: the ledger and the links share it.
        let timeouts = config.raft.timeouts();
        // The ledger holds signing keys and customers' key hashes, and the
        // directory the node's link key.
        let link_key = link_key(&config.data_dir)?;
        let link_public_key = link_key.verifying_key();
        tracing::info!(
            link_key = %hex::encode(link_public_key.as_bytes()),
            "device link key (each device lists it in its --trusted-nodes file)"
        );
        cp.link_key = Some(link_key.clone());
        let links = LinkSettings::new(config.node_id, &timeouts, &config.hardware, link_key);
        let view_settings = ViewSettings::for_lease(links.lease);
        let append_answer = timeouts.append_answer;
        cp.timeouts = timeouts;
        cp.snapshot_every = config.raft.snapshot_every;
        cp.snapshot_growth = config.raft.snapshot_growth;
        cp.state_cache_bytes = (config.raft.state_cache_mb as usize) << 20;
        cp.max_clock_offset = Duration::from_millis(config.raft.max_clock_offset_ms);
        cp.key_encryption_key = config.signing.key_encryption_key()?;
        match &cp.key_encryption_key {
            Some(kek) => {
                tracing::info!(kek = %kek.id_hex(), "signing secrets sealed under the key-encryption key")
            }
            None => tracing::warn!(
                "no key-encryption key (signing.key_encryption_key_file): signing secrets are \
                 stored in plaintext in the data directory, the Raft log and backups"
            ),
        }
        let ledger = ControlPlane::open(cp, &config.data_dir).await?;
        tracing::info!(node = config.node_id, data_dir = %config.data_dir.display(), "ledger opened");

        let mut servers =
            vec![serve_internal(&config, &ledger, cluster_tls.clone(), metrics.clone()).await?];
        if let Some(tls) = cluster_tls {
            servers.push(tokio::spawn(crate::cluster_tls::watch(
                tls,
                config.node_id,
                metrics.clone(),
            )));
        }

        let (supervisor, _) = Actor::spawn(
            None,
            NodeSupervisor {
                policy: RestartPolicy::default(),
                metrics: metrics.clone(),
            },
            (),
        )
        .await
        .map_err(|e| NodeError::Actors(e.to_string()))?;
        let readiness = Arc::new(Readiness::default());
        let workers = RequestWorkers::new(Duration::from_secs(10));
        let start = |name: &str, spec: Arc<dyn crate::actors::supervisor::ChildSpec>| {
            supervisor
                .cast(SupervisorMsg::Start {
                    name: name.to_string(),
                    spec,
                })
                .map_err(|e| NodeError::Actors(e.to_string()))
        };
        start(
            "request-workers",
            Arc::new(RequestWorkersSpec {
                ledger: ledger.clone(),
                workers: config.api.workers,
                queue: config.api.queue,
                handle: workers.clone(),
            }),
        )?;
        let (publish_view, view) = cluster_view::channel(config.node_id);
        start(
            "cluster-view",
            Arc::new(ClusterViewSpec {
                ledger: ledger.clone(),
                settings: view_settings,
                publish: publish_view,
                peers: peers.clone(),
            }),
        )?;
        start(
            "health",
            Arc::new(HealthSpec {
                ledger: ledger.clone(),
                readiness: readiness.clone(),
                metrics: metrics.clone(),
                interval: HEALTH_INTERVAL,
                view: view.clone(),
                write_path_window: append_answer + HEALTH_INTERVAL,
            }),
        )?;
        start(
            "link-controller",
            Arc::new(LinkControllerSpec {
                ledger: ledger.clone(),
                settings: links.clone(),
                view: view.clone(),
                dead_after: view_settings.dead_after,
            }),
        )?;
        start(
            "link-watcher",
            Arc::new(LinkWatcherSpec {
                ledger: ledger.clone(),
                metrics: metrics.clone(),
                settings: links,
            }),
        )?;

        start(
            "alert-pusher",
            Arc::new(AlertPusherSpec {
                ledger: ledger.clone(),
                settings: AlertSettings {
                    alertmanagers: config.alerts.alertmanagers.clone(),
                    interval: Duration::from_secs(config.alerts.push_interval_s),
                    cluster: config.cluster_name.clone(),
                    link_down_after: Duration::from_secs(config.alerts.link_down_after_s),
                },
                metrics: metrics.clone(),
                view,
                peers: peers.clone(),
            }),
        )?;

        let state = AppState {
            ledger: ledger.clone(),
            config: config.clone(),
            metrics,
            limiter: Arc::new(RateLimiter::new(
                config.api.rate_per_second,
                config.api.rate_burst,
            )),
            source_limiter: Arc::new(RateLimiter::new(
                config.api.anonymous_rate_per_second,
                config.api.anonymous_rate_burst,
            )),
            auth: Arc::new(crate::auth::Authenticator::default()),
            workers,
            readiness,
            link_public_key,
        };
        if let Some(tls) = &tls {
            servers.push(tokio::spawn(crate::listener::tls::watch(
                tls.clone(),
                state.metrics.clone(),
            )));
        }
        let api_listener = TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| NodeError::Listen {
                addr: config.api.listen.to_string(),
                source,
            })?;
        servers.push(tokio::spawn(crate::listener::serve(
            api_listener,
            api::router(state.clone()),
            (&config.api.connections).into(),
            tls,
            state.metrics.clone(),
        )));
        tracing::info!(api = %config.api.listen, internal = %config.internal.listen, "node listening");

        let node = Node {
            link_public_key,
            ledger,
            config,
            supervisor,
            servers,
        };
        node.bootstrap_if_first().await?;
        Ok(node)
    }

    /// The lowest-ID bootstrap member initialises a new cluster; everyone
    /// else waits to be contacted by the leader.
    async fn bootstrap_if_first(&self) -> Result<(), NodeError> {
        let members = &self.config.bootstrap;
        let Some(first) = members.iter().map(|m| m.id).min() else {
            return Ok(());
        };
        if first != self.config.node_id {
            return Ok(());
        }
        let voters: BTreeMap<u64, Member> = members
            .iter()
            .map(|m| {
                (
                    m.id,
                    Member {
                        rpc_addr: m.rpc_addr.clone(),
                        api_addr: m.api_addr.clone(),
                        zone: m.zone.clone(),
                        cloud: m.cloud.clone(),
                        region: m.region.clone(),
                    },
                )
            })
            .collect();
        let ledger = self.ledger.clone();
        // The other voters may not be up yet: keep trying in the background
        // rather than failing this node's start.
        tokio::spawn(async move {
            loop {
                match ledger.bootstrap(voters.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "bootstrap not finished; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Stops serving and shuts the ledger down cleanly.
    pub async fn shutdown(self) {
        for server in &self.servers {
            server.abort();
        }
        self.supervisor.stop(None);
        self.ledger.shutdown().await;
    }
}
