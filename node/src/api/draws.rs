//! `POST /v1/draws`, `GET /v1/draws/{id}` and `GET /v1/keys`.

use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use geiger_control_plane::{Command, Outcome};
use geiger_protocol::{DrawRequest, ErrorBody, ErrorCode, KeySet};

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
        | ErrorCode::RequestTimeout => DrawOutcome::invalid,
        ErrorCode::Unauthorized => DrawOutcome::unauthorized,
        ErrorCode::Forbidden => DrawOutcome::forbidden,
        ErrorCode::NotFound => DrawOutcome::unknown_previous,
        ErrorCode::PreviousAlreadyUsed => DrawOutcome::previous_already_used,
        ErrorCode::RateLimited => DrawOutcome::rate_limited,
        ErrorCode::Unavailable | ErrorCode::EntropyExhausted => DrawOutcome::unavailable,
        _ => DrawOutcome::error,
    }
}

#[utoipa::path(post, path = "/v1/draws", tag = "draws",
    request_body = DrawRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "A new draw, or the idempotent replay of the same `request_id` (header `geiger-replayed: true`); kept byte for byte", body = geiger_protocol::DrawResponse),
        (status = 400, description = "Not JSON, or not the request's shape", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "`previous` is on another customer's chain", body = ErrorBody),
        (status = 404, description = "`previous` does not exist", body = ErrorBody),
        (status = 409, description = "`previous_already_used`: carries `existing_id`, the draw already issued after it", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "A limit is broken (docs/DERIVATION.md §5); names the field", body = ErrorBody),
        (status = 429, description = "Rate limited; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "No leader, overloaded, or the pool is empty; retry (safe with the same `request_id`)", body = ErrorBody),
    ))]
/// Draws on a chain. Counted in `geiger_draws_total` whatever the outcome.
pub async fn create(
    State(state): State<AppState>,
    customer: Result<AuthedCustomer, ApiError>,
    request: Request,
) -> Response {
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
    match draw(&state, customer, body).await {
        Ok((response, outcome)) => {
            state.metrics.draw(kind, outcome);
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
) -> Result<(Response, DrawOutcome), ApiError> {
    let JsonBody {
        value: request,
        raw,
    } = body?;
    request.validate().map_err(|e| ApiError::invalid(&e))?;
    let outcome = state
        .workers
        .submit(Command::Draw {
            customer: customer.id,
            request: raw.to_vec(),
        })
        .await?;
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
    Ok((response, outcome))
}

#[utoipa::path(get, path = "/v1/draws/{id}", tag = "draws",
    params(("id" = String, Path, description = "A draw ID (`dr_…`)")),
    responses(
        (status = 200, description = "`{\"request\": <original request>, \"response\": <the original 201 body, byte for byte>}`", body = geiger_protocol::DrawLookup),
        (status = 404, description = "No such draw", body = ErrorBody),
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
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "Every signing key ever used", body = KeySet)))]
pub async fn keys(State(state): State<AppState>) -> Result<Json<KeySet>, ApiError> {
    Ok(Json(state.ledger.keys()?))
}
