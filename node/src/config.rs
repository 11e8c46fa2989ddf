//! Node configuration: defaults in code, then a TOML file, then `GEIGER_*`
//! environment variables (`GEIGER_API__LISTEN=0.0.0.0:8080`: sections and
//! keys joined by a double underscore). Every setting is documented once,
//! here; docs/CONFIG.md shows a complete file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use geiger_control_plane::key_encryption::{KekError, KeyEncryptionKey};
use geiger_control_plane::Timeouts;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's Raft ID; unique in the cluster, never reused.
    pub node_id: u64,
    /// Where the ledger (Raft log, state machine, snapshots) lives.
    pub data_dir: PathBuf,
    /// The cluster's name, as in alerts and the scrape config's `cluster` label.
    pub cluster_name: String,
    pub labels: Labels,
    pub api: ApiSettings,
    pub internal: InternalSettings,
    /// How members talk to each other: mutual TLS (`[cluster.tls]`), or
    /// plaintext where [`ClusterSettings::plaintext`] allows it.
    pub cluster: ClusterSettings,
    pub raft: RaftSettings,
    pub hardware: HardwareSettings,
    pub alerts: AlertSettings,
    pub signing: SigningSettings,
    /// The voters a brand-new cluster starts with. The member with the
    /// lowest ID among them initialises the cluster on its first start (a
    /// no-op once initialised); leave empty on nodes that join later as
    /// learners (`geiger ctl member add`).
    #[serde(default)]
    pub bootstrap: Vec<BootstrapMember>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapMember {
    pub id: u64,
    pub api_addr: String,
    pub rpc_addr: String,
    pub zone: String,
    pub cloud: String,
    pub region: String,
}

/// Where this node runs; the placement report reads these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    pub zone: String,
    pub cloud: String,
    pub region: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// The public HTTP listener.
    pub listen: SocketAddr,
    /// The address other nodes and clients use to reach it (defaults to `listen`).
    pub advertise: Option<String>,
    /// Bearer token for operator calls (`/v1/cluster/status`, `/v1/admin/*`).
    pub admin_token: String,
    /// Bearer token that reads `/metrics` (for Prometheus and the members'
    /// own probes). Empty: `/metrics` answers loopback clients only (and
    /// the admin token anywhere).
    pub metrics_token: String,
    /// Largest request body accepted, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Request-handling workers, and jobs that may wait for one; past that a
    /// write gets a fast 503 with `Retry-After`.
    pub workers: usize,
    pub queue: usize,
    /// Per-customer rate limit: sustained requests per second, and burst.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// Requests without a valid credential (none, or an unknown key), per
    /// source address: sustained per second, and burst. Behind a load
    /// balancer every request comes from its address: size accordingly.
    pub anonymous_rate_per_second: f64,
    pub anonymous_rate_burst: f64,
    /// How the public listener bounds connections.
    pub connections: ListenerSettings,
    /// Serve the API over TLS with this certificate and key. Without it the
    /// listener speaks plaintext HTTP, which [`ApiSettings::plaintext`] must
    /// allow when `listen` is not a loopback address.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// When plaintext is acceptable without `tls`: `loopback_only` (the
    /// default: a node listening on any other address refuses to start), or
    /// `behind_tls_terminating_load_balancer`, for a node that only a load
    /// balancer terminating TLS can reach (a warning is logged at start).
    pub plaintext: PlaintextPolicy,
}

/// When the public listener may speak plaintext HTTP (`api.plaintext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaintextPolicy {
    LoopbackOnly,
    BehindTlsTerminatingLoadBalancer,
}

/// The public listener's certificate (`[api.tls]`, docs/CONFIG.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the certificate chain, this node's certificate first.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key_file: PathBuf,
    /// How often the files are checked for a change; a changed pair that
    /// loads replaces the certificate for new connections, one that does not
    /// is logged and the certificate in use kept.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
    /// PEM: CA certificates that issued the members' API certificates, for
    /// this node's own probes of other members (`/healthz`, `/metrics`),
    /// trusted besides the public web roots. Members' certificates must
    /// name the address they advertise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_reload_check_ms() -> u64 {
    5000
}

/// Bounds on every connection to a listener (docs/CONFIG.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    /// Time a client has to send a complete request head, from the
    /// connection's start and again from the end of each response: so also
    /// how long an idle keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a whole request body, from its head.
    pub body_read_timeout_ms: u64,
    /// A connection on which no byte moved either way for this long is
    /// closed (a client that stops reading its response, say).
    pub stall_timeout_ms: u64,
    /// Connections open at once, in total and from one source address; past
    /// either, a new connection is closed at once.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalSettings {
    /// The node-to-node listener: Raft RPC and forwarded writes.
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    /// Shared by every member; every internal request must carry it. With
    /// `[cluster.tls]` it is a second factor beside the peer's certificate.
    pub cluster_secret: String,
    /// Connections open at once on the internal listener, in total and from
    /// one peer address; past either, a new connection is closed at once.
    /// A peer opens one connection per call in flight (HTTP/1.1, reused).
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

/// Node-to-node transport (`[cluster]`, docs/CONFIG.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Mutual TLS between members: the cluster CA and this node's
    /// certificate, which must name `node-<node_id>.geiger.internal`.
    #[serde(default)]
    pub tls: Option<ClusterTlsSettings>,
    /// When members may talk plaintext without `tls`: `loopback_only` (the
    /// default: a node whose internal listener is on any other address
    /// refuses to start) or `allowed` (a private network the operator
    /// trusts; a warning is logged at start).
    pub plaintext: ClusterPlaintext,
}

/// When members may talk plaintext (`cluster.plaintext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterPlaintext {
    LoopbackOnly,
    Allowed,
}

/// `[cluster.tls]`: PEM files, reloaded when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsSettings {
    /// The cluster CA certificate(s) peers' certificates must chain to
    /// (several while a CA is being replaced).
    pub ca_file: PathBuf,
    /// This node's certificate chain (its own first) and private key; used
    /// by its internal listener and for its calls to other members.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// How often the three files are checked for a change.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// `lan`, `regional` or `cross_cloud` (docs/CONFIG.md); the fields
    /// below override it.
    pub profile: String,
    pub heartbeat_ms: Option<u64>,
    pub election_min_ms: Option<u64>,
    pub election_max_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    /// How long an append's answer is awaited (the longest round trip under
    /// which writes still commit; docs/CONFIG.md).
    pub append_answer_ms: Option<u64>,
    /// Fewest log entries between snapshots.
    pub snapshot_every: u64,
    /// And no snapshot before the log has grown by this multiple of the
    /// last one's index (docs/CONFIG.md).
    pub snapshot_growth: f64,
    /// The state database's page cache, MiB: the ledger's tables. Bounds
    /// that database's share of resident memory however large the ledger
    /// grows; more of it means fewer reads of the file (docs/CONFIG.md).
    pub state_cache_mb: u64,
    /// Largest offset of this node's clock from the cluster's before it may
    /// neither lead nor stamp (docs/DERIVATION.md, `issued_at`).
    pub max_clock_offset_ms: u64,
}

impl RaftSettings {
    /// The Raft and lease timing: the profile, then the overrides. Built
    /// once by `Node::start`, which hands it to the ledger and to the link
    /// settings.
    pub fn timeouts(&self) -> Timeouts {
        let mut t = match self.profile.as_str() {
            "cross_cloud" => Timeouts::cross_cloud(),
            "regional" => Timeouts::regional(),
            _ => Timeouts::lan(),
        };
        let ms = Duration::from_millis;
        if let Some(v) = self.heartbeat_ms {
            t.heartbeat = ms(v);
        }
        if let Some(v) = self.election_min_ms {
            t.election_min = ms(v);
        }
        if let Some(v) = self.election_max_ms {
            t.election_max = ms(v);
        }
        if let Some(v) = self.lease_ms {
            t.lease = ms(v);
        }
        if let Some(v) = self.append_answer_ms {
            t.append_answer = ms(v);
        }
        t
    }
}

/// Where the key-encryption key comes from: the key the signing secrets
/// are sealed under in the ledger, the Raft log, snapshots and backups
/// (docs/RUNBOOK.md, "Signing keys at rest"). At most one of the two; with
/// neither, secrets are stored in plaintext and the node warns at start.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// A file holding the KEK as 64 hex digits, readable by the service
    /// user only, outside the data directory.
    pub key_encryption_key_file: String,
    /// The KEK itself, 64 hex digits (for an environment variable,
    /// `GEIGER_SIGNING__KEY_ENCRYPTION_KEY`, filled from a secret store).
    pub key_encryption_key: String,
}

impl std::fmt::Debug for SigningSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSettings")
            .field("key_encryption_key_file", &self.key_encryption_key_file)
            .field(
                "key_encryption_key",
                &if self.key_encryption_key.is_empty() {
                    ""
                } else {
                    "(set)"
                },
            )
            .finish()
    }
}

impl SigningSettings {
    /// The configured KEK, if any.
    pub fn key_encryption_key(&self) -> Result<Option<KeyEncryptionKey>, ConfigError> {
        let invalid = |e: KekError| ConfigError::Invalid(format!("signing: {e}"));
        match (
            self.key_encryption_key_file.trim(),
            self.key_encryption_key.trim(),
        ) {
            ("", "") => Ok(None),
            (path, "") => KeyEncryptionKey::from_file(Path::new(path))
                .map(Some)
                .map_err(invalid),
            ("", hex) => KeyEncryptionKey::from_hex(hex).map(Some).map_err(invalid),
            _ => Err(ConfigError::Invalid(
                "signing: set key_encryption_key_file or key_encryption_key, not both".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareSettings {
    /// The pool reserve: owners stop appending above the high-water mark and
    /// resume below the low-water mark, in bytes per device.
    pub pool_high_water_bytes: u64,
    pub pool_low_water_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Alertmanager base URLs the leader pushes its own alerts to.
    pub alertmanagers: Vec<String>,
    pub push_interval_s: u64,
    /// A link whose lease no healthy owner has renewed for this long is
    /// pushed as `GeigerLinkDown`.
    pub link_down_after_s: u64,
}

/// The defaults, as TOML so they read like the file an operator writes.
const DEFAULTS: &str = r#"
node_id = 1
data_dir = "geiger-data"
cluster_name = "geiger"

[labels]
zone = "zone-a"
cloud = "cloud-a"
region = "region-a"

[api]
listen = "127.0.0.1:8080"
admin_token = ""
metrics_token = ""
body_limit_bytes = 65536
workers = 128
queue = 4096
rate_per_second = 500.0
rate_burst = 1000.0
anonymous_rate_per_second = 1000.0
anonymous_rate_burst = 2000.0
plaintext = "loopback_only"

[api.connections]
header_read_timeout_ms = 10000
body_read_timeout_ms = 10000
stall_timeout_ms = 30000
max_connections = 4096
max_connections_per_source = 256

[internal]
listen = "127.0.0.1:9080"
cluster_secret = ""
max_connections = 1024
max_connections_per_peer = 256

[cluster]
plaintext = "loopback_only"

[raft]
profile = "lan"
snapshot_every = 20000
snapshot_growth = 1.0
state_cache_mb = 32
max_clock_offset_ms = 500

[hardware]
pool_high_water_bytes = 16777216
pool_low_water_bytes = 8388608

[signing]
key_encryption_key_file = ""
key_encryption_key = ""

[alerts]
alertmanagers = []
push_interval_s = 15
link_down_after_s = 10
"#;

/// Largest `raft.state_cache_mb`: 64 GiB, beyond any machine this runs on
/// (a typo of a few digits is refused, not allocated).
const MAX_STATE_CACHE_MB: u64 = 64 << 10;

/// The `GEIGER_*` variables that name settings: `GEIGER_<SECTION>__<KEY>` or
/// a top-level key. Others with the prefix (`GEIGER_LOG`, `GEIGER_URL`, ...)
/// belong to the command line and are not settings.
fn setting_variables() -> std::collections::HashMap<String, String> {
    const TOP_LEVEL: [&str; 3] = ["GEIGER_NODE_ID", "GEIGER_DATA_DIR", "GEIGER_CLUSTER_NAME"];
    std::env::vars()
        .filter(|(k, _)| {
            TOP_LEVEL.contains(&k.as_str())
                || k.strip_prefix("GEIGER_")
                    .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}

/// The settings that are secrets: a configuration file holding any of them
/// must be private to the service user (secrets belong in the environment
/// or in files of their own; docs/CONFIG.md).
const SECRET_SETTINGS: [&str; 4] = [
    "api.admin_token",
    "api.metrics_token",
    "internal.cluster_secret",
    "signing.key_encryption_key",
];

/// Refuses a configuration file that holds a secret and that other users
/// can read.
fn refuse_secrets_others_can_read(path: &Path) -> Result<(), ConfigError> {
    // The mode first: only a file others can read is parsed a second time,
    // on its own, to see whether it sets a secret.
    let Err(open) = crate::private_files::check_private(path) else {
        return Ok(());
    };
    let file_only = config::Config::builder()
        .add_source(config::File::from(path).required(true))
        .build()?;
    let held: Vec<&str> = SECRET_SETTINGS
        .into_iter()
        .filter(|key| file_only.get_string(key).is_ok_and(|v| !v.is_empty()))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "{open} (it sets {}; or move them to GEIGER_* environment variables)",
        held.join(", ")
    )))
}

impl NodeConfig {
    /// Loads the defaults, then `file` if given, then `GEIGER_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, &[])
    }

    /// Like [`Self::load`], then `overrides` (`("api.listen", "...")`) on top:
    /// for `geiger dev`, which makes its own secrets.
    pub fn load_with(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("GEIGER")
                .source(Some(setting_variables()))
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("alerts.alertmanagers")
                .try_parsing(true),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone())?;
        }
        let cfg: NodeConfig = builder.build()?.try_deserialize()?;
        cfg.validate()?;
        if let Some(path) = file {
            refuse_secrets_others_can_read(path)?;
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.node_id == 0 {
            return invalid("node_id must be at least 1");
        }
        if self.api.admin_token.len() < 16 {
            return invalid("api.admin_token must be set, at least 16 characters");
        }
        if !self.api.metrics_token.is_empty() && self.api.metrics_token.len() < 16 {
            return invalid("api.metrics_token must be empty or at least 16 characters");
        }
        if self.internal.cluster_secret.len() < 16 {
            return invalid("internal.cluster_secret must be set, at least 16 characters");
        }
        if !["lan", "regional", "cross_cloud"].contains(&self.raft.profile.as_str()) {
            return invalid("raft.profile is `lan`, `regional` or `cross_cloud`");
        }
        if self.raft.snapshot_every == 0 {
            return invalid("raft.snapshot_every must be at least 1");
        }
        if !(self.raft.snapshot_growth >= 0.0 && self.raft.snapshot_growth.is_finite()) {
            return invalid("raft.snapshot_growth is a number from 0 up");
        }
        if self.hardware.pool_low_water_bytes > self.hardware.pool_high_water_bytes {
            return invalid("hardware.pool_low_water_bytes exceeds the high-water mark");
        }
        if self.alerts.push_interval_s == 0 {
            return invalid("alerts.push_interval_s must be positive");
        }
        let c = &self.api.connections;
        if c.header_read_timeout_ms == 0
            || c.body_read_timeout_ms == 0
            || c.stall_timeout_ms == 0
            || c.max_connections == 0
            || c.max_connections_per_source == 0
        {
            return invalid("every api.connections setting must be positive");
        }
        if let Some(tls) = &self.api.tls {
            if tls.reload_check_ms == 0 {
                return invalid("api.tls.reload_check_ms must be positive");
            }
        } else if !self.api.listen.ip().to_canonical().is_loopback()
            && self.api.plaintext != PlaintextPolicy::BehindTlsTerminatingLoadBalancer
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the public API in plaintext on {}, which is not a loopback \
                 address: set [api.tls] cert_file and key_file, or, if only a load balancer \
                 that terminates TLS can reach this node, set \
                 api.plaintext = \"behind_tls_terminating_load_balancer\"",
                self.api.listen
            )));
        }
        if self.internal.max_connections == 0 || self.internal.max_connections_per_peer == 0 {
            return invalid(
                "internal.max_connections and max_connections_per_peer must be positive",
            );
        }
        if let Some(tls) = &self.cluster.tls {
            if tls.reload_check_ms == 0 {
                return invalid("cluster.tls.reload_check_ms must be positive");
            }
        } else if !self.internal.listen.ip().to_canonical().is_loopback()
            && self.cluster.plaintext != ClusterPlaintext::Allowed
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to talk to other members in plaintext on {}, which is not a loopback \
                 address: set [cluster.tls] ca_file, cert_file and key_file (docs/RUNBOOK.md, \
                 \"Cluster certificates\"), or, on a private network you trust, set \
                 cluster.plaintext = \"allowed\"",
                self.internal.listen
            )));
        }
        if self.api.workers == 0
            || self.api.queue == 0
            || self.api.rate_per_second <= 0.0
            || self.api.anonymous_rate_per_second <= 0.0
        {
            return invalid(
                "api.workers, api.queue, api.rate_per_second and api.anonymous_rate_per_second must be positive",
            );
        }
        if !(1..=MAX_STATE_CACHE_MB).contains(&self.raft.state_cache_mb) {
            return Err(ConfigError::Invalid(format!(
                "raft.state_cache_mb must be between 1 and {MAX_STATE_CACHE_MB} (MiB), not {}",
                self.raft.state_cache_mb
            )));
        }
        let kek_file = Path::new(self.signing.key_encryption_key_file.trim());
        if !kek_file.as_os_str().is_empty() && kek_file.starts_with(&self.data_dir) {
            return invalid(
                "signing.key_encryption_key_file must be outside data_dir: a copy of the data \
                 directory must not carry the key that opens its signing secrets",
            );
        }
        self.signing.key_encryption_key()?;
        Ok(())
    }

    /// One line saying what this configuration makes of the node, for
    /// `geiger node --check` (no secrets in it).
    pub fn summary(&self) -> String {
        format!(
            "node {} of cluster {:?} in zone {:?}, cloud {:?}; api {}, internal {}; raft profile {}; {}",
            self.node_id,
            self.cluster_name,
            self.labels.zone,
            self.labels.cloud,
            self.api_advertise(),
            self.internal_advertise(),
            self.raft.profile,
            if self.bootstrap.is_empty() {
                "joins as a learner (no bootstrap voters)".to_string()
            } else {
                format!("{} bootstrap voters", self.bootstrap.len())
            }
        )
    }

    pub fn api_advertise(&self) -> String {
        self.api
            .advertise
            .clone()
            .unwrap_or_else(|| self.api.listen.to_string())
    }

    pub fn internal_advertise(&self) -> String {
        self.internal
            .advertise
            .clone()
            .unwrap_or_else(|| self.internal.listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("geiger.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn a_config_file_with_secrets_that_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), SECRETS);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
        assert!(
            err.contains("api.admin_token, internal.cluster_secret"),
            "{err}"
        );
        // The same settings from the environment, and a file without
        // secrets, are fine whatever the file's mode.
        let open = write(dir.path(), "node_id = 3\n");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = NodeConfig::load_with(
            Some(&open),
            &[
                ("api.admin_token", "0123456789abcdef".to_string()),
                ("internal.cluster_secret", "fedcba9876543210".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(loaded.node_id, 3);
    }

    #[test]
    fn the_state_cache_is_set_in_mib_and_a_size_out_of_range_is_refused() {
        let secrets = [
            ("api.admin_token", "0123456789abcdef".to_string()),
            ("internal.cluster_secret", "fedcba9876543210".to_string()),
        ];
        let defaults = NodeConfig::load_with(None, &secrets).unwrap();
        assert_eq!(defaults.raft.state_cache_mb, 32);
        let dir = tempfile::tempdir().unwrap();
        let larger = write(dir.path(), "[raft]\nstate_cache_mb = 128\n");
        let loaded = NodeConfig::load_with(Some(&larger), &secrets).unwrap();
        assert_eq!(loaded.raft.state_cache_mb, 128);
        for bad in ["0", "65537"] {
            let mut with = secrets.to_vec();
            with.push(("raft.state_cache_mb", bad.to_string()));
            let err = NodeConfig::load_with(None, &with).unwrap_err().to_string();
            assert!(
                err.contains("raft.state_cache_mb must be between 1 and 65536"),
                "{err}"
            );
        }
    }

    const SECRETS: &str = "[api]\nadmin_token = \"0123456789abcdef\"\n[internal]\ncluster_secret = \"fedcba9876543210\"\n";

    #[test]
    fn a_file_overrides_the_defaults_it_names_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &format!("node_id = 3\n{SECRETS}"));
        let cfg = NodeConfig::load(Some(&path)).unwrap();
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.api.body_limit_bytes, 65536);
        assert_eq!(cfg.raft.profile, "lan");
    }

    #[test]
    fn environment_variables_override_the_file_and_unrelated_ones_are_ignored() {
        // A child process, so the variables do not leak into other tests.
        if std::env::var_os("GEIGER_CONFIG_TEST_CHILD").is_none() {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "config::tests::environment_variables_override_the_file_and_unrelated_ones_are_ignored",
                ])
                .env("GEIGER_CONFIG_TEST_CHILD", "1")
                .env("GEIGER_API__BODY_LIMIT_BYTES", "1234")
                .env("GEIGER_NODE_ID", "9")
                .env("GEIGER_LOG", "debug")
                .status()
                .unwrap();
            assert!(status.success());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &format!("node_id = 3\n{SECRETS}"));
        let cfg = NodeConfig::load(Some(&path)).unwrap();
        assert_eq!(cfg.api.body_limit_bytes, 1234);
        assert_eq!(cfg.node_id, 9);
    }

    #[test]
    fn each_timing_profile_loads_with_its_own_timeouts_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let load = |profile: &str| {
            let text = format!("{SECRETS}[raft]\nprofile = \"{profile}\"\n");
            NodeConfig::load(Some(&write(dir.path(), &text)))
        };
        let ms = Duration::from_millis;
        for (profile, heartbeat, election) in [
            ("lan", 100, (200, 400)),
            ("regional", 40, (200, 400)),
            ("cross_cloud", 100, (500, 1000)),
        ] {
            let t = load(profile).unwrap().raft.timeouts();
            assert_eq!(t.heartbeat, ms(heartbeat), "{profile}");
            assert_eq!(
                (t.election_min, t.election_max),
                (ms(election.0), ms(election.1))
            );
        }
        assert!(load("wan").is_err());
    }

    #[test]
    fn missing_secrets_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(NodeConfig::load(Some(&write(dir.path(), "node_id = 2\n"))).is_err());
        let typo = format!("{SECRETS}[raft]\nprofil = \"lan\"\n");
        assert!(NodeConfig::load(Some(&write(dir.path(), &typo))).is_err());
    }

    #[test]
    fn every_example_config_in_deploy_loads_with_its_secrets_given_apart() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/onprem/config");
        let secrets = [
            ("api.admin_token", "example-admin-token-0123".to_string()),
            (
                "internal.cluster_secret",
                "example-cluster-secret-0123".to_string(),
            ),
        ];
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = NodeConfig::load_with(Some(&path), &secrets)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(cfg.raft.profile, "cross_cloud", "{}", path.display());
                // A voter's own ID is among the bootstrap voters; a learner has none.
                assert!(
                    cfg.bootstrap.is_empty() || cfg.bootstrap.iter().any(|b| b.id == cfg.node_id),
                    "{}",
                    path.display()
                );
                loaded += 1;
            }
        }
        assert_eq!(loaded, 7, "the seven roles of the reference topology");
    }

    #[test]
    fn members_talking_plaintext_off_loopback_is_refused_unless_allowed_or_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let public = SECRETS.replacen(
            "[internal]\n",
            "[internal]\nlisten = \"10.0.0.5:9080\"\n",
            1,
        );
        let err = NodeConfig::load(Some(&write(dir.path(), &public)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to talk to other members in plaintext on 10.0.0.5:9080"));
        let allowed = format!("{public}[cluster]\nplaintext = \"allowed\"\n");
        NodeConfig::load(Some(&write(dir.path(), &allowed))).unwrap();
        let tls = format!(
            "{public}[cluster.tls]\nca_file = \"ca.pem\"\ncert_file = \"n.pem\"\nkey_file = \"n.key\"\n"
        );
        let cfg = NodeConfig::load(Some(&write(dir.path(), &tls))).unwrap();
        assert_eq!(cfg.cluster.tls.unwrap().reload_check_ms, 5000);
    }

    #[test]
    fn plaintext_on_a_public_address_is_refused_unless_the_config_says_a_load_balancer_terminates_tls(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let public = SECRETS.replacen("[api]\n", "[api]\nlisten = \"0.0.0.0:8080\"\n", 1);
        let err = NodeConfig::load(Some(&write(dir.path(), &public)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to serve the public API in plaintext on 0.0.0.0:8080"));
        assert!(err.contains("behind_tls_terminating_load_balancer"));

        let allowed = public.replacen(
            "[api]\n",
            "[api]\nplaintext = \"behind_tls_terminating_load_balancer\"\n",
            1,
        );
        let cfg = NodeConfig::load(Some(&write(dir.path(), &allowed))).unwrap();
        assert_eq!(
            cfg.api.plaintext,
            PlaintextPolicy::BehindTlsTerminatingLoadBalancer
        );

        let loopback = NodeConfig::load(Some(&write(dir.path(), SECRETS))).unwrap();
        assert_eq!(loopback.api.plaintext, PlaintextPolicy::LoopbackOnly);
        assert!(loopback.api.tls.is_none());

        let with_tls = public.replacen(
            "[internal]",
            "[api.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[internal]",
            1,
        );
        let cfg = NodeConfig::load(Some(&write(dir.path(), &with_tls))).unwrap();
        assert_eq!(cfg.api.tls.unwrap().reload_check_ms, 5000);
    }
}
