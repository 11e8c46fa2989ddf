//! Extractors that turn every malformed request into an `ApiError` in the
//! contract's shape: JSON bodies (415, 413, 400), customer API keys and the
//! admin token (401), and record IDs in paths (404).

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use geiger_protocol::{ErrorCode, RecordId, RecordKind};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

/// A JSON body, parsed, with the exact bytes it came in (kept for draws).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as `Content-Type: application/json`",
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
            let mut timed_out = false;
            while let Some(e) = cause {
                timed_out |= e.is::<crate::listener::BodyTimedOut>();
                cause = e.source();
            }
            if timed_out {
                return ApiError::new(
                    ErrorCode::RequestTimeout,
                    "the request body did not arrive in time",
                );
            }
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than {} bytes",
                    state.config.api.body_limit_bytes
                ),
            )
        })?;
        let value =
            serde_json::from_slice(&raw).map_err(|e| ApiError::invalid_json(e.to_string()))?;
        Ok(JsonBody { value, raw })
    }
}

/// The credential of an `Authorization: Bearer <credential>` header; the
/// scheme name is case-insensitive (RFC 7235 §2.1).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// `gk_` and 64 lowercase hex digits, as `POST /v1/admin/customers` makes them.
fn is_well_formed_key(key: &str) -> bool {
    key.strip_prefix("gk_").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A customer, authenticated by its API key.
pub struct AuthedCustomer {
    pub id: String,
}

impl FromRequestParts<AppState> for AuthedCustomer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let ledger_error = |e: geiger_control_plane::Error| ApiError::internal(e.to_string());
        if let Some(id) = state.auth.find(&state.ledger, key).map_err(ledger_error)? {
            return Ok(AuthedCustomer { id });
        }
        // Unknown here: guessing keys is paid for from the source's share.
        charge_source(parts, state)?;
        // A customer created a moment ago may not be applied on this replica
        // yet: catch up before refusing. Only for well-formed keys, so
        // garbage credentials never cost a leader round trip.
        if is_well_formed_key(key) {
            if let Some(id) = state.auth.find_after_catch_up(&state.ledger, key).await? {
                return Ok(AuthedCustomer { id });
            }
        }
        Err(ApiError::unauthorized())
    }
}

/// Takes one request from the share of requests without a valid credential
/// that the request's source address gets: 429 with `Retry-After` when it
/// is spent. Requests that did not come through the listener (no source
/// address) are not limited.
pub fn charge_source(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Ok(());
    };
    state
        .source_limiter
        .check(&peer.ip().to_string())
        .map_err(|wait| {
            state.metrics.source_rate_limited.inc();
            ApiError::new(
                ErrorCode::RateLimited,
                "too many requests without a valid credential from this address; slow down",
            )
            .with_retry_after(wait)
        })
}

impl AuthedCustomer {
    /// Takes one request from the customer's rate limit: 429 with
    /// `Retry-After` when it is spent.
    pub fn check_rate(&self, state: &AppState) -> Result<(), ApiError> {
        state.limiter.check(&self.id).map_err(|wait| {
            ApiError::new(
                ErrorCode::RateLimited,
                "too many requests for this customer; slow down",
            )
            .with_retry_after(wait)
        })
    }
}

/// The operator, authenticated by the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let given = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        // Compare hashes so the comparison time does not depend on where the
        // strings first differ.
        if Sha256::digest(given.as_bytes())
            == Sha256::digest(state.config.api.admin_token.as_bytes())
        {
            Ok(Admin)
        } else {
            charge_source(parts, state)?;
            Err(ApiError::unauthorized())
        }
    }
}

/// Whoever may read `/metrics`: a bearer of the metrics token
/// (`api.metrics_token`) or of the admin token from anywhere, and anyone
/// from a loopback address (whatever it sends) when no metrics token is
/// configured. Metrics name link epochs and pool timing, which the public
/// has no use for.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let api = &state.config.api;
        if api.metrics_token.is_empty() {
            // No source address: called in-process, not through a listener.
            let local = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_none_or(|ConnectInfo(peer)| peer.ip().is_loopback());
            if local {
                return Ok(MetricsReader);
            }
        }
        if let Some(given) = bearer(parts) {
            let given = Sha256::digest(given.as_bytes());
            let metrics_token = (!api.metrics_token.is_empty())
                .then(|| Sha256::digest(api.metrics_token.as_bytes()));
            if metrics_token == Some(given) || Sha256::digest(api.admin_token.as_bytes()) == given {
                return Ok(MetricsReader);
            }
        }
        charge_source(parts, state)?;
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "metrics need the metrics token (api.metrics_token) or the admin token as a bearer token",
        ))
    }
}

/// Parses a path ID of the expected kind, or answers 404 (an ID that cannot
/// exist is simply not found).
pub fn parse_id(text: &str, kind: RecordKind) -> Result<RecordId, ApiError> {
    text.parse::<RecordId>()
        .ok()
        .filter(|id| id.kind() == kind)
        .ok_or_else(|| ApiError::not_found(format!("`{text}`")))
}
