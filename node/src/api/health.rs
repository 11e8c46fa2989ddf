//! `/healthz` (the process answers), `/readyz` (it can serve draws now) and
//! `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::MetricsReader;
use super::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "get_liveness",
    responses(
        (status = 200, description = "The process answers", body = super::openapi::views::Alive),
    ))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: this node can serve draws now (leader known, quorum reachable, pool not empty).
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "get_readiness",
    responses(
        (status = 200, description = "This node can serve draws now", body = super::openapi::views::Readiness),
        (status = 503, description = "Not ready, and why", body = super::openapi::views::Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.get() {
        (true, _) => Json(json!({ "ready": true })).into_response(),
        (false, why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "because": why })),
        )
            .into_response(),
    }
}

/// Prometheus metrics (OpenMetrics text), as docs/METRICS.md describes.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "get_metrics",
    responses(
        (status = 200, description = "Prometheus metrics (docs/METRICS.md)", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "no metrics token or admin token, from an address other than loopback", body = geiger_protocol::ErrorBody),
        (status = 429, description = "too many requests without a valid credential from this address", body = geiger_protocol::ErrorBody),
    ),
    security(("metrics_token" = []), ("admin_token" = []), ()))]
pub async fn metrics(_: MetricsReader, State(state): State<AppState>) -> Response {
    state
        .metrics
        .auth_catch_ups
        .set_total(state.auth.catch_ups());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
