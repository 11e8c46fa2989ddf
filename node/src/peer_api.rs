//! How this node reaches other members' public API for its own probes
//! (`/healthz` for liveness and quorum, `/metrics` for link state): over
//! TLS when this node's API is (a cluster serves its API one way), trusting
//! the public web roots and `[api.tls] ca_file`, so a member's certificate
//! must name the address it advertises (`api.advertise`).

use std::time::Duration;

use crate::config::NodeConfig;

#[derive(Debug, thiserror::Error)]
pub enum PeerApiError {
    #[error("reading api.tls.ca_file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("api.tls.ca_file {path}: {detail}")]
    Invalid {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("the HTTP client for probes: {0}")]
    Client(#[from] reqwest::Error),
}

/// A client and scheme for requests to members' advertised API addresses.
#[derive(Debug, Clone)]
pub struct PeerApi {
    scheme: &'static str,
    http: reqwest::Client,
    /// What reads the members' `/metrics`: the metrics token where one is
    /// set (the same on every member), else the admin token.
    metrics_credential: String,
}

impl PeerApi {
    pub fn from_config(config: &NodeConfig) -> Result<Self, PeerApiError> {
        // Pooled connections are dropped before a member's idle keep-alive
        // timeout (10 s by default) would close them under a request.
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(5));
        let ca_file = config.api.tls.as_ref().and_then(|t| t.ca_file.as_ref());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| PeerApiError::Read {
                path: path.clone(),
                source,
            })?;
            let roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| PeerApiError::Invalid {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            if roots.is_empty() {
                return Err(PeerApiError::Invalid {
                    path: path.clone(),
                    detail: "no PEM certificate in it".into(),
                });
            }
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        Ok(PeerApi {
            scheme: if config.api.tls.is_some() {
                "https"
            } else {
                "http"
            },
            http: http.build()?,
            metrics_credential: if config.api.metrics_token.is_empty() {
                config.api.admin_token.clone()
            } else {
                config.api.metrics_token.clone()
            },
        })
    }

    /// A request for the `/metrics` of the member advertising `addr`.
    pub fn metrics(&self, addr: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(addr, "/metrics"))
            .bearer_auth(&self.metrics_credential)
    }

    /// The URL of `path` on the member advertising `addr` (`host:port`).
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Default for PeerApi {
    /// Plaintext, for tests of actors that run without a node.
    fn default() -> Self {
        PeerApi {
            scheme: "http",
            http: reqwest::Client::new(),
            metrics_credential: String::new(),
        }
    }
}
