//! `POST /v1/draws`, `GET /v1/draws/{id}` and `GET /v1/keys`.

use std::time::Instant;

use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use geiger_control_plane::stage_timing::{record, Stage};
use geiger_control_plane::{Command, Outcome};
use geiger_protocol::{Derivation, DrawRequest, ErrorCode, KeySet};

use super::error::ApiError;
use super::extract::{parse_id, AuthedCustomer, JsonBody};
use super::stored::{created, stored_json};
use super::AppState;
use crate::metrics::DrawOutcome;

fn outcome_of(error: &ApiError) -> DrawOutcome {
    match error.code() {
        ErrorCode::InvalidJson
        | ErrorCode::InvalidRequest
        | ErrorCode::UnsupportedMediaType
        | ErrorCode::PayloadTooLarge
        | ErrorCode::RequestTimeout
        | ErrorCode::RequestIdReused => DrawOutcome::invalid,
        ErrorCode::Unauthorized => DrawOutcome::unauthorized,
        ErrorCode::Forbidden => DrawOutcome::forbidden,
        ErrorCode::NotFound => DrawOutcome::unknown_previous,
        ErrorCode::PreviousAlreadyUsed => DrawOutcome::previous_already_used,
        ErrorCode::RateLimited => DrawOutcome::rate_limited,
        ErrorCode::Unavailable | ErrorCode::EntropyExhausted => DrawOutcome::unavailable,
        _ => DrawOutcome::error,
    }
}

#[utoipa::path(post, path = "/v1/draws", tag = "draws", operation_id = "create_draw",
    security(("api_key" = [])),
    request_body(content = geiger_protocol::DrawRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "A new draw, or the idempotent replay of an identical earlier request (same `previous`, `request_id`, `tag` and `spec`; header `geiger-replayed: true`); kept byte for byte", body = geiger_protocol::DrawResponse, headers(("Location" = String, description = "Where the record is read back"), ("geiger-replayed" = String, description = "`true` when this is the replay of an earlier identical request"))),
        (status = 400, description = "`invalid_json`: not JSON, or not the request's shape (unknown field, wrong type)", body = geiger_protocol::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = geiger_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = geiger_protocol::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/json`", body = geiger_protocol::ErrorBody),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 403, description = "`forbidden`: `previous` is on another customer's chain", body = geiger_protocol::ErrorBody),
        (status = 404, description = "`not_found`: `previous` does not exist", body = geiger_protocol::ErrorBody),
        (status = 409, description = "`previous_already_used`: `existing_id` is the draw already issued after `previous`; nothing was drawn", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: a limit of docs/DERIVATION.md §5 is broken; `field` names it. `request_id_reused`: this `previous` and `request_id` were used before for a request with another `tag` or `spec` (`field` names it); nothing was drawn. A retry must repeat the request exactly", body = geiger_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: this customer's rate limit is spent", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`unavailable` (no leader, overloaded) or `entropy_exhausted`; retry, safely with the same `request_id`", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Draws on a chain. Counted in `geiger_draws_total` whatever the outcome.
pub async fn create(
    State(state): State<AppState>,
    customer: Result<AuthedCustomer, ApiError>,
    request: Request,
) -> Response {
    let started = Instant::now();
    // The credential and the customer's rate are checked from the head
    // alone, before a byte of the body is read.
    let customer = match customer.and_then(|c| c.check_rate(&state).map(|()| c)) {
        Ok(customer) => customer,
        Err(error) => {
            state.metrics.draw("unknown", outcome_of(&error));
            return error.into_response();
        }
    };
    let body = JsonBody::<DrawRequest>::from_request(request, &state).await;
    let kind = body
        .as_ref()
        .map_or("unknown", |b| b.value.spec.kind_name());
    match draw(&state, customer, body, started).await {
        Ok((response, outcome)) => {
            state.metrics.draw(kind, outcome);
            record(Stage::Handler, started.elapsed(), 1);
            response
        }
        Err(error) => {
            state.metrics.draw(kind, outcome_of(&error));
            error.into_response()
        }
    }
}

async fn draw(
    state: &AppState,
    customer: AuthedCustomer,
    body: Result<JsonBody<DrawRequest>, ApiError>,
    started: Instant,
) -> Result<(Response, DrawOutcome), ApiError> {
    let JsonBody {
        value: request,
        raw,
    } = body?;
    request.validate().map_err(|e| ApiError::invalid(&e))?;
    record(Stage::HttpIn, started.elapsed(), 1);
    let outcome = state
        .workers
        .submit(Command::DrawWith {
            customer: customer.id,
            request: raw.to_vec(),
            derivation: Derivation::CURRENT,
        })
        .await?;
    let answering = Instant::now();
    let (id, bytes, replayed) = match outcome {
        Outcome::Drawn { id, response } => (id, response, false),
        Outcome::Replayed { id, response } => (id, response, true),
        Outcome::PreviousAlreadyUsed { existing } => {
            return Err(ApiError::previous_already_used(&request.previous, existing))
        }
        Outcome::Rejected(r) => return Err(r.into()),
        other => {
            return Err(ApiError::internal(format!(
                "unexpected ledger outcome {other:?}"
            )))
        }
    };
    let response = created(&format!("/v1/draws/{id}"), bytes, replayed);
    let outcome = if replayed {
        DrawOutcome::replayed
    } else {
        DrawOutcome::created
    };
    record(Stage::HttpOut, answering.elapsed(), 1);
    Ok((response, outcome))
}

#[utoipa::path(get, path = "/v1/draws/{id}", tag = "draws", operation_id = "get_draw",
    params(("id" = String, Path, description = "A draw ID: `dr_` and 40 base32 characters", pattern = r"^dr_[a-z2-7]{40}$")),
    responses(
        (status = 200, description = "The original request and the original 201 body, byte for byte", body = geiger_protocol::DrawLookup),
        (status = 404, description = "`not_found`: no such draw", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// The original request and the original 201 body, as first sent.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, geiger_protocol::RecordKind::Draw)?;
    let stored = state
        .ledger
        .draw_linearizable(&id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("draw {id}")))?;
    #[derive(serde::Serialize)]
    struct Lookup<'a> {
        request: &'a serde_json::value::RawValue,
        response: &'a serde_json::value::RawValue,
    }
    let lookup = Lookup {
        request: stored_json(&stored.request)?,
        response: stored_json(&stored.response)?,
    };
    Ok(Json(lookup).into_response())
}

/// Signing public keys with their validity periods.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "list_keys",
    responses(
        (status = 200, description = "Every signing key ever used, with its validity period; and every device key, with the period its link was registered (`devices`, absent when none)", body = geiger_protocol::KeySet),
        (status = 500, description = "`internal`: the ledger could not be read", body = geiger_protocol::ErrorBody),
    ))]
pub async fn keys(State(state): State<AppState>) -> Result<Json<KeySet>, ApiError> {
    let mut keys = state.ledger.keys()?;
    keys.devices = state
        .ledger
        .device_keys()?
        .into_iter()
        .map(|k| geiger_protocol::provenance::DeviceKeyInfo {
            device: k.device,
            alg: geiger_protocol::record::ALG_ED25519.to_string(),
            public_key: base64::engine::general_purpose::STANDARD.encode(k.public_key),
            valid_from: geiger_protocol::record::format_timestamp(k.valid_from_ms),
            valid_until: k
                .valid_until_ms
                .map(geiger_protocol::record::format_timestamp),
        })
        .collect();
    Ok(Json(keys))
}
