//! The client: endpoint rotation, the retry loop, and one method per public
//! call. Building it is in `builder`, operator calls in `admin`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geiger_protocol::{
    verify_chain, verify_draw, ChainResponse, CreateChainRequest, DrawRequest, DrawResponse,
    ErrorBody, ErrorCode, KeySet, RecordId,
};
use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::RwLock;

use crate::error::ClientError;
use crate::targets::Targets;
use crate::REPLAY_HEADER;

/// A draw as issued: the parsed, verified record and the exact bytes.
#[derive(Debug, Clone)]
pub struct Issued {
    pub response: DrawResponse,
    pub raw: Vec<u8>,
    /// True when the node recognised a retry and replayed the original.
    pub replayed: bool,
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct IssuedChain {
    pub response: ChainResponse,
    pub raw: Vec<u8>,
    pub endpoint: String,
}

/// `GET /v1/draws/{id}`, with the embedded response's exact bytes.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub request: DrawRequest,
    pub response: DrawResponse,
    pub response_raw: Vec<u8>,
}

/// When a failed attempt may be tried again on another node.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, draws (idempotent by `previous` + `request_id`) and chain
    /// creation (by `request_id`): after any transport failure or 5xx.
    Idempotent,
    /// Creating other things: only when the request surely never reached
    /// a node.
    ConnectOnly,
}

#[derive(Clone, Copy)]
pub(crate) enum Auth {
    None,
    Customer,
    Admin,
}

pub(crate) struct Inner {
    pub(crate) endpoints: Vec<String>,
    pub(crate) targets: Targets,
    pub(crate) api_key: Option<String>,
    pub(crate) admin_token: Option<String>,
    pub(crate) deadline: Duration,
    pub(crate) verify: bool,
    pub(crate) next: AtomicUsize,
    pub(crate) keys: RwLock<Option<KeySet>>,
}

/// A successful HTTP exchange (any status the caller must interpret).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) replayed: bool,
    pub(crate) body: Vec<u8>,
    pub(crate) endpoint: String,
}

#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// The endpoints as configured (names unresolved).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Where requests go now: one entry per configured address and per
    /// address a configured name resolves to.
    pub async fn addresses(&self) -> Vec<String> {
        self.inner
            .targets
            .get()
            .await
            .iter()
            .map(|t| t.label.clone())
            .collect()
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Auth,
        retry: Retry,
    ) -> Result<Answer, ClientError> {
        let inner = &self.inner;
        let started = Instant::now();
        let first = inner.next.fetch_add(1, Ordering::Relaxed);
        let mut attempt: u32 = 0;
        let mut targets = inner.targets.get().await;
        loop {
            if targets.is_empty() {
                // A name that resolves to nothing (yet): ask again until
                // the deadline.
                attempt += 1;
                if started.elapsed() >= inner.deadline {
                    return Err(ClientError::Unavailable {
                        attempts: attempt,
                        last: format!("no address for {}", inner.endpoints.join(", ")),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                inner.targets.refresh().await;
                targets = inner.targets.get().await;
                continue;
            }
            let target = targets[(first + attempt as usize) % targets.len()].clone();
            let endpoint = &target.label;
            attempt += 1;
            let mut request = target
                .http
                .request(method.clone(), format!("{}{path}", target.base));
            request = match auth {
                Auth::None => request,
                Auth::Customer => request.bearer_auth(inner.api_key.as_deref().unwrap_or("")),
                Auth::Admin => request.bearer_auth(inner.admin_token.as_deref().unwrap_or("")),
            };
            if let Some(bytes) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let replayed = response.headers().contains_key(REPLAY_HEADER);
                    let wait = retry_after(&response);
                    match response.bytes().await {
                        // Refused before anything happened (a rate limit):
                        // safe to send again for every kind of call, after
                        // the wait the node asked for, if the deadline
                        // leaves room for it.
                        Ok(bytes)
                            if status == StatusCode::TOO_MANY_REQUESTS
                                && started.elapsed() + wait < inner.deadline =>
                        {
                            tracing::debug!(%endpoint, ?wait, "rate limited; waiting as asked");
                            drop(bytes);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Ok(bytes) if !status.is_server_error() => {
                            return Ok(Answer {
                                status,
                                replayed,
                                body: bytes.to_vec(),
                                endpoint: endpoint.clone(),
                            });
                        }
                        Ok(bytes) => {
                            if retry != Retry::Idempotent || started.elapsed() >= inner.deadline {
                                return Ok(Answer {
                                    status,
                                    replayed,
                                    body: bytes.to_vec(),
                                    endpoint: endpoint.clone(),
                                });
                            }
                            format!("{endpoint}: {status}")
                        }
                        Err(e) if retry == Retry::Idempotent => format!("{endpoint}: {e}"),
                        Err(e) => {
                            return Err(ClientError::Unavailable {
                                attempts: attempt,
                                last: format!("{endpoint}: {e}"),
                            })
                        }
                    }
                }
                Err(e) if retry == Retry::Idempotent || e.is_connect() => {
                    format!("{endpoint}: {e}")
                }
                Err(e) => {
                    return Err(ClientError::Unavailable {
                        attempts: attempt,
                        last: format!("{endpoint}: {e}"),
                    })
                }
            };
            tracing::debug!(attempt, %failure, "request failed; trying the next node");
            if started.elapsed() >= inner.deadline {
                return Err(ClientError::Unavailable {
                    attempts: attempt,
                    last: failure,
                });
            }
            // Once every address has been tried in this round: back off a
            // little and resolve the names again (the DNS may have dropped
            // a dead edge by now).
            if attempt as usize % targets.len() == 0 {
                let round = attempt as usize / targets.len();
                let pause = Duration::from_millis((20u64 << round.min(5)).min(500));
                tokio::time::sleep(pause).await;
                inner.targets.refresh().await;
                targets = inner.targets.get().await;
            }
        }
    }

    pub(crate) fn api_error(answer: &Answer) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(body) => match (body.error.code, body.error.existing_id) {
                (ErrorCode::PreviousAlreadyUsed, Some(existing)) => {
                    ClientError::PreviousAlreadyUsed { existing }
                }
                _ => ClientError::Api {
                    status: answer.status.as_u16(),
                    body,
                },
            },
            Err(_) => ClientError::Protocol {
                endpoint: answer.endpoint.clone(),
                detail: format!(
                    "status {} without the error shape: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ),
            },
        }
    }

    pub(crate) fn parse<T: for<'de> Deserialize<'de>>(answer: &Answer) -> Result<T, ClientError> {
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Protocol {
            endpoint: answer.endpoint.clone(),
            detail: e.to_string(),
        })
    }

    pub(crate) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Auth,
        retry: Retry,
        success: StatusCode,
    ) -> Result<Answer, ClientError> {
        let answer = self.send(method, path, body, auth, retry).await?;
        if answer.status != success {
            return Err(Self::api_error(&answer));
        }
        Ok(answer)
    }

    /// The cluster's signing keys, cached; refreshed when a record names a
    /// key the cache does not hold (after a rotation).
    pub async fn keys(&self, refresh: bool) -> Result<KeySet, ClientError> {
        if !refresh {
            if let Some(keys) = self.inner.keys.read().await.as_ref() {
                return Ok(keys.clone());
            }
        }
        let answer = self
            .expect(
                Method::GET,
                "/v1/keys",
                None,
                Auth::None,
                Retry::Idempotent,
                StatusCode::OK,
            )
            .await?;
        let keys: KeySet = Self::parse(&answer)?;
        *self.inner.keys.write().await = Some(keys.clone());
        Ok(keys)
    }

    async fn keys_for(&self, key_id: &str) -> Result<KeySet, ClientError> {
        let keys = self.keys(false).await?;
        if keys.find(key_id).is_some() {
            return Ok(keys);
        }
        self.keys(true).await
    }

    /// Verifies a draw against the published keys (offline checks only).
    pub async fn verify(&self, draw: &DrawResponse) -> Result<(), ClientError> {
        let keys = self.keys_for(&draw.draw.body.key_id).await?;
        verify_draw(draw, &keys, None)?;
        Ok(())
    }

    /// `POST /v1/chains`: opens a chain; returns its verified genesis. The
    /// request carries a random `request_id`, so a retry after a lost
    /// answer gets the same chain rather than a second one.
    pub async fn create_chain(&self, tag: &str) -> Result<IssuedChain, ClientError> {
        let body = serde_json::to_vec(&CreateChainRequest {
            tag: tag.into(),
            request_id: Some(random_request_id()),
        })
        .expect("a request serialises");
        let answer = self
            .expect(
                Method::POST,
                "/v1/chains",
                Some(body),
                Auth::Customer,
                Retry::Idempotent,
                StatusCode::CREATED,
            )
            .await?;
        let response: ChainResponse = Self::parse(&answer)?;
        if self.inner.verify {
            let keys = self.keys_for(&response.chain.body.key_id).await?;
            verify_chain(&response, &keys)?;
        }
        Ok(IssuedChain {
            response,
            raw: answer.body,
            endpoint: answer.endpoint,
        })
    }

    /// `POST /v1/draws`. Gives the request a random `request_id` if it has
    /// none, so retries across nodes are recognised as the same request.
    pub async fn draw(&self, mut request: DrawRequest) -> Result<Issued, ClientError> {
        if request.request_id.is_none() {
            request.request_id = Some(random_request_id());
        }
        let body = serde_json::to_vec(&request).expect("a request serialises");
        let answer = self
            .expect(
                Method::POST,
                "/v1/draws",
                Some(body),
                Auth::Customer,
                Retry::Idempotent,
                StatusCode::CREATED,
            )
            .await?;
        let response: DrawResponse = Self::parse(&answer)?;
        if response.draw.body.previous != request.previous {
            return Err(ClientError::Protocol {
                endpoint: answer.endpoint,
                detail: "the draw returned does not follow the requested previous".into(),
            });
        }
        if self.inner.verify {
            self.verify(&response).await?;
        }
        Ok(Issued {
            response,
            raw: answer.body,
            replayed: answer.replayed,
            endpoint: answer.endpoint,
        })
    }

    /// `GET /v1/draws/{id}`, verified.
    pub async fn get_draw(&self, id: &RecordId) -> Result<Lookup, ClientError> {
        let answer = self
            .expect(
                Method::GET,
                &format!("/v1/draws/{id}"),
                None,
                Auth::None,
                Retry::Idempotent,
                StatusCode::OK,
            )
            .await?;
        #[derive(Deserialize)]
        struct RawLookup<'a> {
            #[serde(borrow)]
            request: &'a RawValue,
            #[serde(borrow)]
            response: &'a RawValue,
        }
        let bad = |e: serde_json::Error| ClientError::Protocol {
            endpoint: answer.endpoint.clone(),
            detail: e.to_string(),
        };
        let raw: RawLookup = serde_json::from_slice(&answer.body).map_err(bad)?;
        let request: DrawRequest = serde_json::from_str(raw.request.get()).map_err(bad)?;
        let response: DrawResponse = serde_json::from_str(raw.response.get()).map_err(bad)?;
        if response.draw.id != *id {
            return Err(ClientError::Protocol {
                endpoint: answer.endpoint.clone(),
                detail: format!("asked for {id}, got {}", response.draw.id),
            });
        }
        if self.inner.verify {
            self.verify(&response).await?;
        }
        Ok(Lookup {
            request,
            response,
            response_raw: raw.response.get().as_bytes().to_vec(),
        })
    }

    /// Any public GET, as JSON (chains, chain draws, customer chains).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let answer = self
            .expect(
                Method::GET,
                path,
                None,
                Auth::None,
                Retry::Idempotent,
                StatusCode::OK,
            )
            .await?;
        Self::parse(&answer)
    }
}

/// How long a 429 asks the caller to wait (`Retry-After` in seconds;
/// one second when absent or unreadable, at most a minute).
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.min(60))
}

/// 128 random bits, hex: a client idempotency key no other request shares.
fn random_request_id() -> String {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    hex::encode(id)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::targets::Resolver;
    use crate::ClientBuilder;

    /// A real HTTP/1.1 listener on 127.0.0.1 answering every request with
    /// `{"served": true}`; returns its port.
    async fn tiny_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let body = br#"{"served":true}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if socket.write_all(head.as_bytes()).await.is_err()
                            || socket.write_all(body).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    /// Answers the first `refusals` requests with 429 and `Retry-After: 1`,
    /// then `{"served": true}`; returns its port and the request count.
    async fn rate_limited_server(refusals: usize) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let (head, body): (&str, &[u8]) =
                            if counter.fetch_add(1, Ordering::SeqCst) < refusals {
                                (
                                    "429 Too Many Requests\r\nretry-after: 1",
                                    br#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
                                )
                            } else {
                                ("200 OK", br#"{"served":true}"#)
                            };
                        let head = format!(
                            "HTTP/1.1 {head}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if socket.write_all(head.as_bytes()).await.is_err()
                            || socket.write_all(body).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn a_rate_limited_call_waits_as_asked_and_is_sent_again() {
        let (port, seen) = rate_limited_server(1).await;
        let client = ClientBuilder::new([format!("http://127.0.0.1:{port}")])
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap();
        let started = Instant::now();
        let answer = client.get_json("/anything").await.unwrap();
        assert_eq!(answer["served"], true);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_rate_limit_longer_than_the_deadline_is_returned_to_the_caller() {
        let (port, seen) = rate_limited_server(usize::MAX).await;
        let client = ClientBuilder::new([format!("http://127.0.0.1:{port}")])
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap();
        match client.get_json("/anything").await {
            Err(ClientError::Api { status, .. }) => assert_eq!(status, 429),
            other => panic!("expected the 429, got {other:?}"),
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    fn table(ips: &[&str]) -> Arc<Mutex<HashMap<String, Vec<IpAddr>>>> {
        Arc::new(Mutex::new(HashMap::from([(
            "api.geiger.test".to_string(),
            ips.iter().map(|i| i.parse().unwrap()).collect(),
        )])))
    }

    #[tokio::test]
    async fn one_name_with_a_dead_and_a_live_address_answers_every_call() {
        let port = tiny_server().await;
        // Nothing listens on 127.0.0.2 at that port: connection refused.
        let client = ClientBuilder::new([format!("http://api.geiger.test:{port}")])
            .deadline(Duration::from_secs(5))
            .build_with(Resolver::Table(table(&["127.0.0.2", "127.0.0.1"])))
            .unwrap();
        for _ in 0..6 {
            let answer = client.get_json("/anything").await.unwrap();
            assert_eq!(answer["served"], true);
        }
        assert_eq!(client.addresses().await.len(), 2);
    }

    #[tokio::test]
    async fn when_every_address_fails_the_name_is_resolved_again_within_the_same_call() {
        let port = tiny_server().await;
        let names = table(&["127.0.0.2"]);
        let client = ClientBuilder::new([format!("http://api.geiger.test:{port}")])
            .deadline(Duration::from_secs(5))
            .build_with(Resolver::Table(names.clone()))
            .unwrap();
        let moved = names.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            moved
                .lock()
                .unwrap()
                .insert("api.geiger.test".into(), vec!["127.0.0.1".parse().unwrap()]);
        });
        let started = Instant::now();
        let answer = client.get_json("/anything").await.unwrap();
        assert_eq!(answer["served"], true);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(
            client.addresses().await,
            [format!("http://api.geiger.test:{port} (127.0.0.1:{port})")]
        );
    }

    #[tokio::test]
    async fn a_name_that_never_resolves_is_unavailable_at_the_deadline() {
        let client = ClientBuilder::new(["http://nowhere.geiger.test"])
            .deadline(Duration::from_millis(300))
            .build_with(Resolver::Table(table(&[])))
            .unwrap();
        match client.get_json("/x").await {
            Err(ClientError::Unavailable { last, .. }) => assert!(last.contains("no address")),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
