//! TLS for the public listener (rustls with the ring provider; no OpenSSL).
//!
//! - **The certificate comes from PEM files** (`[api.tls] cert_file`,
//!   `key_file`) and is checked at start: a node with an unreadable or
//!   mismatched pair does not start.
//! - **It is reloaded without a restart**: [`ServerCertificate`] resolves
//!   every handshake to the key pair it holds now, and [`watch`] polls the
//!   files' metadata; a changed pair that loads replaces it for new
//!   connections (open ones keep theirs), one that does not is logged and
//!   counted, and the certificate in use is kept.
//! - **HTTP/2 or HTTP/1.1 by ALPN**: the client's offer decides; a client
//!   that offers nothing gets HTTP/1.1.
//! - **Its expiry is a metric** (`geiger_tls_certificate_expiry_timestamp_seconds`),
//!   read from the certificate's notAfter, so an alert fires before it lapses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSettings;
use crate::metrics::NodeMetrics;

/// The ALPN protocol IDs the listener offers, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate chain {path}: {source}")]
    Certificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("reading the private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate in {path} cannot be parsed: {detail}")]
    Unparsable { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain with its key, ready for handshakes.
#[derive(Debug)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in Unix seconds.
    pub not_after: i64,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its private key.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<LoadedCertificate, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: cert_file.to_path_buf(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_path_buf(),
        });
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::Unparsable {
            path: cert_file.to_path_buf(),
            detail: e.to_string(),
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.to_path_buf(),
        source,
    })?;
    let key =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Unusable {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        })?;
    Ok(LoadedCertificate {
        key: Arc::new(key),
        not_after,
    })
}

/// Says so in the log when a certificate being put in service has already
/// expired (it is served anyway: the alert and the metric say the rest).
fn warn_if_expired(settings: &TlsSettings, not_after: i64) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if not_after <= now {
        tracing::warn!(
            cert_file = %settings.cert_file.display(),
            not_after,
            "the public API certificate has expired: clients that check it will refuse this node"
        );
    }
}

/// Hands every handshake the certificate loaded last.
#[derive(Debug)]
pub struct ServerCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(ServerCertificate {
            current: RwLock::new(key),
        })
    }

    /// New connections get `key` from now on; open ones keep theirs.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The public listener's TLS: the acceptor configuration and the
/// certificate it serves, which [`watch`] keeps current.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub certificate: Arc<ServerCertificate>,
    settings: TlsSettings,
}

impl ServerTls {
    /// Loads the certificate named in `settings`; fails if it is unusable.
    pub fn start(settings: &TlsSettings, metrics: &NodeMetrics) -> Result<Self, TlsError> {
        let loaded = load(&settings.cert_file, &settings.key_file)?;
        metrics.tls_certificate_loaded(loaded.not_after);
        warn_if_expired(settings, loaded.not_after);
        let certificate = ServerCertificate::new(loaded.key);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        tracing::info!(
            cert_file = %settings.cert_file.display(),
            not_after = loaded.not_after,
            "serving the public API over TLS"
        );
        Ok(ServerTls {
            config: Arc::new(config),
            certificate,
            settings: settings.clone(),
        })
    }
}

/// What identifies a version of a file cheaply: a replaced or rewritten file
/// changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Polls the certificate and key files and loads them again when either
/// changes, until the task is aborted. A pair that does not load (a file
/// half written, a key that does not match yet) is logged once per change
/// and tried again at the next change.
pub async fn watch(tls: ServerTls, metrics: Arc<NodeMetrics>) {
    let settings = &tls.settings;
    let stamps = || (stamp(&settings.cert_file), stamp(&settings.key_file));
    let mut seen = stamps();
    let mut ticker = tokio::time::interval(Duration::from_millis(settings.reload_check_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = stamps();
        if now == seen {
            continue;
        }
        seen = now;
        match load(&settings.cert_file, &settings.key_file) {
            Ok(loaded) => {
                tls.certificate.replace(loaded.key);
                metrics.tls_certificate_loaded(loaded.not_after);
                metrics.tls_reload(true);
                warn_if_expired(settings, loaded.not_after);
                tracing::info!(
                    cert_file = %settings.cert_file.display(),
                    not_after = loaded.not_after,
                    "public API certificate reloaded"
                );
            }
            Err(e) => {
                metrics.tls_reload(false);
                tracing::error!(
                    error = %e,
                    "the changed certificate or key does not load; keeping the certificate in use"
                );
            }
        }
    }
}
