//! The public HTTP API (axum). Handlers are small: authentication, bodies,
//! path IDs and errors live in extractors ([`extract`]) and
//! [`error::ApiError`], answers made of stored bytes in [`stored`]; writes
//! go through the request workers; reads are served from this replica,
//! falling back to a linearizable read for IDs not applied here yet.

pub mod admin;
pub mod chains;
pub mod chunks;
pub mod draws;
pub mod error;
pub mod extract;
pub mod health;
pub mod links;
pub mod openapi;
pub mod stored;
pub mod verify_page;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use geiger_control_plane::{ControlPlane, Error as LedgerError, Rejection};
use geiger_protocol::ErrorCode;

use crate::actors::health::Readiness;
use crate::actors::workers::{RequestWorkers, SubmitError};
use crate::config::NodeConfig;
use crate::metrics::{HttpLabels, HttpLatencyLabels, NodeMetrics, RouteLabels};
use crate::rate_limit::RateLimiter;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ledger: ControlPlane,
    pub config: Arc<NodeConfig>,
    pub metrics: Arc<NodeMetrics>,
    pub limiter: Arc<RateLimiter>,
    /// Requests without a valid credential, per source address.
    pub source_limiter: Arc<RateLimiter>,
    pub auth: Arc<crate::auth::Authenticator>,
    pub workers: RequestWorkers,
    pub readiness: Arc<Readiness>,
    /// This node's device-link public key (devices list it; docs/LINK.md).
    pub link_public_key: ed25519_dalek::VerifyingKey,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.api.body_limit_bytes;
    Router::new()
        .route("/v1/chains", post(chains::create))
        .route("/v1/chains/{id}", get(chains::get))
        .route("/v1/chains/{id}/draws", get(chains::draws))
        .route("/v1/customers/{id}/chains", get(chains::of_customer))
        .route("/v1/draws", post(draws::create))
        .route("/v1/draws/{id}", get(draws::get))
        .route("/v1/keys", get(draws::keys))
        .route("/v1/chunks/{device}/{seq}", get(chunks::get))
        .route("/v1/cluster/status", get(admin::cluster_status))
        .route("/v1/admin/customers", post(admin::create_customer))
        .route("/v1/admin/members", post(admin::change_member))
        .route("/v1/admin/keys/rotate", post(admin::rotate_key))
        .route("/v1/admin/backup", get(admin::backup))
        .route("/v1/admin/links", post(links::register).get(links::list))
        .route("/v1/admin/links/{device}", delete(links::remove))
        .route("/v1/admin/links/{device}/chunks/{seq}", get(links::chunk))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(verify_page::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(limit_request_head))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_anonymous_sources,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// The longest request target (path and query) served. The API's longest
/// is a draw lookup with a key: about 100 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header fields, and header bytes, a request may carry.
pub const MAX_HEADER_FIELDS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses an oversized request head with the usual JSON error (414
/// `uri_too_long`, 431 `headers_too_large`). The listener lets hyper read
/// heads up to a few times these bounds, so that only heads far past them
/// meet hyper's own bodiless 414/431.
async fn limit_request_head(request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is {uri_bytes} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_FIELDS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "{} header fields, {header_bytes} bytes; at most {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Requests that carry no credential at all take from their source
/// address's share (`api.anonymous_rate_*`); health checks are exempt, so a
/// load balancer's probes never see 429.
async fn limit_anonymous_sources(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let exempt = matches!(request.uri().path(), "/healthz" | "/readyz");
    if !exempt
        && !request
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
    {
        let (parts, body) = request.into_parts();
        if let Err(e) = extract::charge_source(&parts, &state) {
            return e.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

async fn unknown_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method; see /v1/openapi.json",
    )
}

/// Counts and times every request under its route template.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let in_flight = state
        .metrics
        .http_in_flight
        .get_or_create_owned(&RouteLabels {
            route: route.clone(),
        });
    in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    in_flight.dec();
    let status = response.status();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method: method.clone(),
            status: status.as_str().to_string(),
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&HttpLatencyLabels {
            route,
            method,
            status_class: format!("{}xx", status.as_u16() / 100),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Unavailable(why) => {
                ApiError::unavailable(format!("no leader reachable now: {why}"))
            }
            LedgerError::Shutdown => ApiError::unavailable("the node is shutting down"),
            LedgerError::MemberUnreachable(why) => ApiError::unavailable(why),
            LedgerError::Rejected(r) => r.into(),
            other => {
                tracing::error!(error = %other, "ledger error");
                ApiError::internal("the ledger failed; the request may be retried")
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::NotFound(_) => ApiError::new(ErrorCode::NotFound, message),
            Rejection::Forbidden(_) => ApiError::forbidden(message),
            Rejection::Invalid(_) => ApiError::new(ErrorCode::InvalidRequest, message),
            Rejection::EntropyExhausted { .. } => {
                ApiError::new(ErrorCode::EntropyExhausted, message).with_retry_after(1)
            }
            Rejection::NoSigningKey => ApiError::unavailable(message),
            Rejection::RequestIdReused { request_id, field } => {
                ApiError::request_id_reused(&request_id, &field)
            }
            Rejection::AlreadyExists(_)
            | Rejection::StaleEpoch { .. }
            | Rejection::LeaseExpired(_)
            | Rejection::SequenceGap { .. } => ApiError::new(ErrorCode::Conflict, message),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => ApiError::unavailable(e.to_string()),
            SubmitError::TimedOut(_) => ApiError::unavailable(format!(
                "{e}; retry with the same request_id to get the original answer"
            )),
            SubmitError::Ledger(l) => l.into(),
        }
    }
}
