//! The client: endpoint rotation, the retry loop, and one method per call.

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
enum Retry {
    /// Reads, draws (idempotent by `previous` + `request_id`) and chain
    /// creation (by `request_id`): after any transport failure or 5xx.
    Idempotent,
    /// Creating other things: only when the request surely never reached
    /// a node.
    ConnectOnly,
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Customer,
    Admin,
}

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
    /// `endpoints` are base URLs such as `http://127.0.0.1:8080`.
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
        let mut http = reqwest::Client::builder()
            .timeout(self.attempt_timeout)
            .connect_timeout(self.attempt_timeout.min(Duration::from_millis(500)))
            .pool_idle_timeout(Duration::from_secs(30));
        for pem in &self.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::InvalidCa(e.to_string()))?;
            if roots.is_empty() {
                return Err(ClientError::InvalidCa("no PEM certificate found".into()));
            }
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        let http = http.build().map_err(|e| ClientError::Unavailable {
            attempts: 0,
            last: e.to_string(),
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                next: AtomicUsize::new(rand::thread_rng().next_u32() as usize),
                endpoints: self.endpoints,
                api_key: self.api_key,
                admin_token: self.admin_token,
                deadline: self.deadline,
                verify: self.verify,
                http,
                keys: RwLock::new(None),
            }),
        })
    }
}

struct Inner {
    endpoints: Vec<String>,
    api_key: Option<String>,
    admin_token: Option<String>,
    deadline: Duration,
    verify: bool,
    http: reqwest::Client,
    next: AtomicUsize,
    keys: RwLock<Option<KeySet>>,
}

/// A successful HTTP exchange (any status the caller must interpret).
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Vec<u8>,
    endpoint: String,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    async fn send(
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
        loop {
            let endpoint = &inner.endpoints[(first + attempt as usize) % inner.endpoints.len()];
            attempt += 1;
            let mut request = inner
                .http
                .request(method.clone(), format!("{endpoint}{path}"));
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
                    match response.bytes().await {
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
            // Back off a little once every node has been tried in this round.
            if attempt as usize % inner.endpoints.len() == 0 {
                let round = attempt as usize / inner.endpoints.len();
                let pause = Duration::from_millis((20u64 << round.min(5)).min(500));
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn api_error(answer: &Answer) -> ClientError {
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

    fn parse<T: for<'de> Deserialize<'de>>(answer: &Answer) -> Result<T, ClientError> {
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Protocol {
            endpoint: answer.endpoint.clone(),
            detail: e.to_string(),
        })
    }

    async fn expect(
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

    /// An operator GET (`/v1/cluster/status`, ...), as JSON.
    pub async fn admin_get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let answer = self
            .expect(
                Method::GET,
                path,
                None,
                Auth::Admin,
                Retry::Idempotent,
                StatusCode::OK,
            )
            .await?;
        Self::parse(&answer)
    }

    /// An operator POST; any 2xx means it worked.
    pub async fn admin_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(body).expect("JSON serialises");
        self.admin_call(Method::POST, path, Some(body)).await
    }

    /// An operator GET whose body is streamed into `out` (backups); returns
    /// the bytes written and the response headers. One node, no retries: a
    /// half-written download is not resumable.
    pub async fn admin_download(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(u64, reqwest::header::HeaderMap), ClientError> {
        use tokio::io::AsyncWriteExt;
        let inner = &self.inner;
        let endpoint =
            &inner.endpoints[inner.next.fetch_add(1, Ordering::Relaxed) % inner.endpoints.len()];
        let failed = |e: String| ClientError::Unavailable {
            attempts: 1,
            last: format!("{endpoint}: {e}"),
        };
        let mut response = inner
            .http
            .get(format!("{endpoint}{path}"))
            .bearer_auth(inner.admin_token.as_deref().unwrap_or(""))
            // A large ledger takes a while: no per-attempt timeout here.
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
            return Err(Self::api_error(&Answer {
                status,
                replayed: false,
                body: body.to_vec(),
                endpoint: endpoint.clone(),
            }));
        }
        let headers = response.headers().clone();
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            out.write_all(&chunk)
                .await
                .map_err(|e| failed(e.to_string()))?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| failed(e.to_string()))?;
        Ok((written, headers))
    }

    /// An operator DELETE; any 2xx means it worked.
    pub async fn admin_delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.admin_call(Method::DELETE, path, None).await
    }

    async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, ClientError> {
        let answer = self
            .send(method, path, body, Auth::Admin, Retry::ConnectOnly)
            .await?;
        if !answer.status.is_success() {
            return Err(Self::api_error(&answer));
        }
        if answer.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Self::parse(&answer)
    }
}

/// 128 random bits, hex: a client idempotency key no other request shares.
fn random_request_id() -> String {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    hex::encode(id)
}
