//! Operator calls (the admin token): JSON in and out, a download, and
//! deletes. Never retried once a request may have reached a node.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::client::{Answer, Auth, Client, Retry};
use crate::error::ClientError;

impl Client {
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
        let targets = inner.targets.get().await;
        if targets.is_empty() {
            return Err(ClientError::Unavailable {
                attempts: 0,
                last: format!("no address for {}", inner.endpoints.join(", ")),
            });
        }
        let target = &targets[inner.next.fetch_add(1, Ordering::Relaxed) % targets.len()];
        let endpoint = &target.label;
        let failed = |e: String| ClientError::Unavailable {
            attempts: 1,
            last: format!("{endpoint}: {e}"),
        };
        let mut response = target
            .http
            .get(format!("{}{path}", target.base))
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
