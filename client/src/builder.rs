//! `ClientBuilder`: endpoints, credentials, timeouts and trusted CAs, then
//! the per-address connection pools (`targets`).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use tokio::sync::RwLock;

use crate::client::{Client, Inner};
use crate::error::ClientError;
use crate::targets::{HttpSettings, Resolver, Targets};

pub struct ClientBuilder {
    endpoints: Vec<String>,
    api_key: Option<String>,
    admin_token: Option<String>,
    attempt_timeout: Duration,
    deadline: Duration,
    verify: bool,
    extra_roots_pem: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// `endpoints` are base URLs such as `http://127.0.0.1:8080`, or one
    /// public name such as `https://api.geiger.example`: a name is resolved
    /// to every address it has, and the client fails over between them
    /// (resolving again when all have failed).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        ClientBuilder {
            endpoints: endpoints
                .into_iter()
                .map(|e| e.into().trim_end_matches('/').to_string())
                .collect(),
            api_key: None,
            admin_token: None,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            verify: true,
            extra_roots_pem: Vec::new(),
        }
    }

    /// Also trusts the CA certificates in `pem` (one or more), for nodes
    /// whose certificates a private CA issued. The public web roots stay
    /// trusted.
    pub fn trust_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots_pem.push(pem.into());
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// One attempt on one node.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// All attempts of one call together.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Skips verification of received records (for load tests that verify
    /// later, in bulk). On by default.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::Unavailable {
                attempts: 0,
                last: "no endpoints given".into(),
            });
        }
        self.build_with(Resolver::System)
    }

    pub(crate) fn build_with(self, lookup: Resolver) -> Result<Client, ClientError> {
        let mut extra_roots = Vec::new();
        for pem in &self.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::InvalidCa(e.to_string()))?;
            if roots.is_empty() {
                return Err(ClientError::InvalidCa("no PEM certificate found".into()));
            }
            extra_roots.extend(roots);
        }
        let settings = HttpSettings {
            attempt_timeout: self.attempt_timeout,
            extra_roots,
        };
        let targets = Targets::new(&self.endpoints, settings, lookup).map_err(|e| {
            ClientError::Unavailable {
                attempts: 0,
                last: e.to_string(),
            }
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                next: AtomicUsize::new(rand::thread_rng().next_u32() as usize),
                endpoints: self.endpoints,
                targets,
                api_key: self.api_key,
                admin_token: self.admin_token,
                deadline: self.deadline,
                verify: self.verify,
                keys: RwLock::new(None),
            }),
        })
    }
}
