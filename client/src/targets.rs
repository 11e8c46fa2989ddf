//! Where requests go. The configured endpoints are expanded into one
//! target per address: an endpoint whose host is a name (one public
//! hostname in front of several load balancers) is resolved to *every*
//! address it has, and each address gets its own connection pool pinned to
//! it, so the URL, the `Host` header and TLS keep the name while the client
//! fails over between the addresses. Names are resolved at the first
//! request and again whenever a whole round of attempts has failed (the
//! DNS may have dropped a dead edge or added a new one by then); a failed
//! resolution keeps the addresses known before.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a resolution stays fresh: failures in quick succession do not
/// each ask the resolver again.
const MIN_RESOLVE_INTERVAL: Duration = Duration::from_millis(250);

/// One address to send requests to.
#[derive(Debug)]
pub(crate) struct Target {
    /// The base URL as configured (`http://api.geiger.test`).
    pub base: String,
    /// For messages: the base URL and, for a resolved name, the address.
    pub label: String,
    pub http: reqwest::Client,
}

/// The HTTP settings every pool shares.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub attempt_timeout: Duration,
    /// Certificate authorities trusted beside the public web roots.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl HttpSettings {
    fn builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .timeout(self.attempt_timeout)
            .connect_timeout(self.attempt_timeout.min(Duration::from_millis(500)))
            // Below the node's idle keep-alive timeout (its
            // `header_read_timeout_ms`, 10 s by default): a connection the
            // server is closing must not be picked for the next request.
            .pool_idle_timeout(Duration::from_secs(5));
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    }
}

/// Turns a host name and port into addresses: the system resolver
/// (getaddrinfo, so `/etc/resolv.conf` and `/etc/hosts`), or a fixed table
/// in tests.
#[derive(Clone)]
pub(crate) enum Resolver {
    System,
    #[cfg(test)]
    Table(Arc<Mutex<HashMap<String, Vec<IpAddr>>>>),
}

impl Resolver {
    async fn addresses(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Resolver::System => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
            #[cfg(test)]
            Resolver::Table(table) => Ok(table
                .lock()
                .unwrap()
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .unwrap_or_default()),
        }
    }
}

/// A configured endpoint.
#[derive(Debug)]
struct Endpoint {
    base: String,
    /// The host name to resolve and its port; `None` for an IP literal (or
    /// a URL that does not parse, which fails at the request with reqwest's
    /// own message).
    name: Option<(String, u16)>,
}

pub(crate) struct Targets {
    endpoints: Vec<Endpoint>,
    settings: HttpSettings,
    lookup: Resolver,
    /// For endpoints that need no resolution.
    shared: reqwest::Client,
    current: RwLock<Arc<Vec<Arc<Target>>>>,
    resolved_at: Mutex<Option<Instant>>,
    /// Pools pinned to (name, address), kept across resolutions so
    /// connections survive a re-resolution that returns the same address.
    pinned: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
}

impl Targets {
    pub fn new(
        endpoints: &[String],
        settings: HttpSettings,
        lookup: Resolver,
    ) -> Result<Self, reqwest::Error> {
        let endpoints: Vec<Endpoint> = endpoints
            .iter()
            .map(|base| {
                let name = reqwest::Url::parse(base).ok().and_then(|url| {
                    let port = url.port_or_known_default()?;
                    let host = url.host_str()?;
                    let literal = host.trim_start_matches('[').trim_end_matches(']');
                    match literal.parse::<IpAddr>() {
                        Ok(_) => None,
                        Err(_) => Some((host.to_string(), port)),
                    }
                });
                Endpoint {
                    base: base.clone(),
                    name,
                }
            })
            .collect();
        let shared = settings.builder().build()?;
        let targets = Targets {
            endpoints,
            settings,
            lookup,
            shared,
            current: RwLock::new(Arc::new(Vec::new())),
            resolved_at: Mutex::new(None),
            pinned: Mutex::new(HashMap::new()),
        };
        // Endpoints that are addresses already are usable before any
        // resolution; names are added at the first request.
        let unresolved = targets.expand(&HashMap::new());
        *targets.current.write().unwrap() = Arc::new(unresolved);
        Ok(targets)
    }

    /// The targets now, resolving names first if that never happened.
    pub async fn get(&self) -> Arc<Vec<Arc<Target>>> {
        let never = self.resolved_at.lock().unwrap().is_none();
        if never && self.endpoints.iter().any(|e| e.name.is_some()) {
            self.refresh().await;
        }
        self.current.read().unwrap().clone()
    }

    /// Resolves every name again (at most every `MIN_RESOLVE_INTERVAL`).
    pub async fn refresh(&self) {
        {
            let mut at = self.resolved_at.lock().unwrap();
            if at.is_some_and(|t| t.elapsed() < MIN_RESOLVE_INTERVAL) {
                return;
            }
            *at = Some(Instant::now());
        }
        let mut resolved: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
        for (host, port) in self.endpoints.iter().filter_map(|e| e.name.clone()) {
            if resolved.contains_key(&(host.clone(), port)) {
                continue;
            }
            match self.lookup.addresses(&host, port).await {
                Ok(mut addrs) if !addrs.is_empty() => {
                    addrs.sort();
                    addrs.dedup();
                    resolved.insert((host, port), addrs);
                }
                Ok(_) => tracing::warn!(%host, "the name resolved to no address"),
                Err(e) => tracing::warn!(%host, error = %e, "resolving failed"),
            }
        }
        if resolved.is_empty() && self.endpoints.iter().any(|e| e.name.is_some()) {
            // Keep what worked before rather than nothing.
            if !self.current.read().unwrap().is_empty() {
                return;
            }
        }
        let previous = self.current.read().unwrap().clone();
        let mut next = self.expand(&resolved);
        // A name that failed to resolve this time keeps its old addresses.
        for e in &self.endpoints {
            if let Some(key) = &e.name {
                if !resolved.contains_key(key) {
                    next.extend(previous.iter().filter(|t| t.base == e.base).cloned());
                }
            }
        }
        *self.current.write().unwrap() = Arc::new(next);
    }

    fn expand(&self, resolved: &HashMap<(String, u16), Vec<SocketAddr>>) -> Vec<Arc<Target>> {
        let mut out = Vec::new();
        for e in &self.endpoints {
            match &e.name {
                None => out.push(Arc::new(Target {
                    base: e.base.clone(),
                    label: e.base.clone(),
                    http: self.shared.clone(),
                })),
                Some(key) => {
                    for addr in resolved.get(key).into_iter().flatten() {
                        out.push(Arc::new(Target {
                            base: e.base.clone(),
                            label: format!("{} ({addr})", e.base),
                            http: self.pinned(&key.0, *addr),
                        }));
                    }
                }
            }
        }
        out
    }

    fn pinned(&self, host: &str, addr: SocketAddr) -> reqwest::Client {
        let mut pinned = self.pinned.lock().unwrap();
        pinned
            .entry((host.to_string(), addr))
            .or_insert_with(|| {
                self.settings
                    .builder()
                    .resolve(host, addr)
                    .build()
                    // The settings built the shared client already; a
                    // pinned one differs only by the override.
                    .unwrap_or_else(|_| self.shared.clone())
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HttpSettings {
        HttpSettings {
            attempt_timeout: Duration::from_secs(1),
            extra_roots: Vec::new(),
        }
    }

    fn table(entries: &[(&str, &[&str])]) -> Arc<Mutex<HashMap<String, Vec<IpAddr>>>> {
        Arc::new(Mutex::new(
            entries
                .iter()
                .map(|(h, ips)| {
                    (
                        h.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
        ))
    }

    #[tokio::test]
    async fn a_name_becomes_one_target_per_address_and_literals_stay_as_they_are() {
        let t = table(&[("api.geiger.test", &["10.0.0.2", "10.0.0.1", "10.0.0.2"])]);
        let targets = Targets::new(
            &[
                "http://api.geiger.test".into(),
                "http://127.0.0.1:8080".into(),
            ],
            settings(),
            Resolver::Table(t),
        )
        .unwrap();
        let labels: Vec<String> = targets
            .get()
            .await
            .iter()
            .map(|t| t.label.clone())
            .collect();
        assert_eq!(
            labels,
            [
                "http://api.geiger.test (10.0.0.1:80)",
                "http://api.geiger.test (10.0.0.2:80)",
                "http://127.0.0.1:8080"
            ]
        );
    }

    #[tokio::test]
    async fn a_new_resolution_replaces_the_addresses_and_a_failed_one_keeps_them() {
        let t = table(&[("api.geiger.test", &["10.0.0.1", "10.0.0.2"])]);
        let targets = Targets::new(
            &["http://api.geiger.test:8080".into()],
            settings(),
            Resolver::Table(t.clone()),
        )
        .unwrap();
        assert_eq!(targets.get().await.len(), 2);
        t.lock()
            .unwrap()
            .insert("api.geiger.test".into(), vec!["10.0.0.3".parse().unwrap()]);
        tokio::time::sleep(MIN_RESOLVE_INTERVAL).await;
        targets.refresh().await;
        let now = targets.get().await;
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].label, "http://api.geiger.test:8080 (10.0.0.3:8080)");
        t.lock().unwrap().clear();
        tokio::time::sleep(MIN_RESOLVE_INTERVAL).await;
        targets.refresh().await;
        assert_eq!(targets.get().await[0].label, now[0].label);
    }
}
