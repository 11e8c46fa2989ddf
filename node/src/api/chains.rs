//! `POST /v1/chains`, `GET /v1/chains/{id}` and `GET /v1/chains/{id}/draws`.

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use geiger_control_plane::{Command, Outcome};
use geiger_protocol::{CreateChainRequest, ErrorCode, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{parse_id, AuthedCustomer, JsonBody};
use super::stored::{created, stored_json};
use super::AppState;

/// A chain as of now. A chain's head and length change with every draw, so
/// unlike immutable draws they are read after a linearizable barrier: a
/// client that just drew through one node sees its draw through any other.
async fn current_chain(
    state: &AppState,
    id: &geiger_protocol::RecordId,
) -> Result<geiger_control_plane::ChainInfo, ApiError> {
    state.ledger.linearizable_barrier().await?;
    state
        .ledger
        .chain(&id.to_string())?
        .ok_or_else(|| ApiError::not_found(format!("chain {id}")))
}

/// Most draws one page of `GET /v1/chains/{id}/draws` returns.
pub const MAX_PAGE: usize = 100;

/// Opens a chain; the answer's `id` is its genesis, the first `previous`.
#[utoipa::path(post, path = "/v1/chains", tag = "chains", operation_id = "create_chain",
    security(("api_key" = [])),
    request_body(content = geiger_protocol::CreateChainRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The signed genesis record; its `id` is the first `previous`. For a `request_id` this customer used before with the same `tag`: that request's chain, byte for byte", body = geiger_protocol::ChainResponse, headers(("Location" = String, description = "Where the record is read back"), ("geiger-replayed" = String, description = "`true` when this is the replay of an earlier identical request"))),
        (status = 400, description = "`invalid_json`: not JSON, or not the request's shape (unknown field, wrong type)", body = geiger_protocol::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = geiger_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = geiger_protocol::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/json`", body = geiger_protocol::ErrorBody),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: `tag` or `request_id` breaks its rule; `field` names it. `request_id_reused`: this customer used this `request_id` before for a chain with another `tag` (`field` is `tag`); nothing was created. A retry must repeat the request exactly", body = geiger_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: this customer's rate limit is spent", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    State(state): State<AppState>,
    customer: AuthedCustomer,
    JsonBody { value: request, .. }: JsonBody<CreateChainRequest>,
) -> Result<Response, ApiError> {
    customer.check_rate(&state)?;
    request.validate().map_err(|e| ApiError::invalid(&e))?;
    let outcome = state
        .workers
        .submit(match request.request_id {
            None => Command::CreateChain {
                customer: customer.id,
                tag: request.tag,
            },
            Some(request_id) => Command::CreateChainOnce {
                customer: customer.id,
                tag: request.tag,
                request_id,
            },
        })
        .await?;
    let (id, response, replayed) = match outcome {
        Outcome::ChainCreated { id, response } => {
            state.metrics.chains_created.inc();
            (id, response, false)
        }
        Outcome::Replayed { id, response } => (id, response, true),
        Outcome::Rejected(r) => return Err(r.into()),
        other => {
            return Err(ApiError::internal(format!(
                "unexpected ledger outcome {other:?}"
            )))
        }
    };
    Ok(created(&format!("/v1/chains/{id}"), response, replayed))
}

#[utoipa::path(get, path = "/v1/chains/{id}", tag = "chains", operation_id = "get_chain",
    params(("id" = String, Path, description = "A chain ID: `ch_` and 40 base32 characters", pattern = r"^ch_[a-z2-7]{40}$")),
    responses(
        (status = 200, description = "The genesis record as first sent, and where the chain stands: `head` is the `previous` for the next draw", body = super::openapi::views::ChainView),
        (status = 404, description = "`not_found`: no such chain", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// The genesis record as first sent, and where the chain stands.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, RecordKind::Chain)?;
    let chain = current_chain(&state, &id).await?;
    #[derive(Serialize)]
    struct ChainView<'a> {
        genesis: &'a RawValue,
        length: u64,
        head: &'a str,
        customer: &'a str,
    }
    let view = ChainView {
        genesis: stored_json(&chain.response)?,
        length: chain.length,
        head: &chain.head,
        customer: &chain.customer,
    };
    Ok(Json(view).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Return draws at positions after this one (0: from the start).
    #[serde(default)]
    pub after: u64,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

impl Page {
    /// The query, parsed and within the page limit.
    fn checked(
        query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Page, ApiError> {
        let Query(page) =
            query.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
        if page.limit == 0 || page.limit > MAX_PAGE {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            ));
        }
        Ok(page)
    }
}

fn default_limit() -> usize {
    MAX_PAGE
}

#[utoipa::path(get, path = "/v1/chains/{id}/draws", tag = "chains", operation_id = "list_chain_draws",
    params(("id" = String, Path, description = "A chain ID: `ch_` and 40 base32 characters", pattern = r"^ch_[a-z2-7]{40}$"),
        ("after" = Option<u64>, Query, description = "Positions after this one (default 0)", minimum = 0, maximum = 18446744073709551615_u64),
        ("limit" = Option<u64>, Query, description = "How many at most, 1 to 100 (default 100)", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The chain's draws in order, each its original 201 body", body = super::openapi::views::DrawPage),
        (status = 404, description = "`not_found`: no such chain", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: `after` or `limit` out of range, or an unknown query parameter; `field` names it", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// A chain's draws in order, each the original 201 body; `next_after` is
/// the `after` of the next page, absent on the last page.
pub async fn draws(
    State(state): State<AppState>,
    Path(id): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, RecordKind::Chain)?;
    let page = Page::checked(page)?;
    let chain = current_chain(&state, &id).await?;
    let draws = state
        .ledger
        .chain_draws(&chain.id, page.after, page.limit)?;
    #[derive(Serialize)]
    struct DrawPage<'a> {
        chain: &'a str,
        draws: Vec<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_after: Option<u64>,
    }
    let page = DrawPage {
        chain: &chain.id,
        draws: draws
            .iter()
            .map(|d| stored_json(&d.response))
            .collect::<Result<_, _>>()?,
        next_after: draws
            .last()
            .map(|d| d.position)
            .filter(|&p| p < chain.length),
    };
    Ok(Json(page).into_response())
}

/// Every chain a customer has opened, in creation order, so players can
/// see all of an operator's chains (none can be hidden). `after` is the
/// `ledger_index` of the last chain of the previous page.
#[utoipa::path(get, path = "/v1/customers/{id}/chains", tag = "chains", operation_id = "list_customer_chains",
    params(("id" = String, Path, description = "A customer ID (`cu_…`)"),
        ("after" = Option<u64>, Query, description = "Ledger index of the last chain already seen (default 0)", minimum = 0, maximum = 18446744073709551615_u64),
        ("limit" = Option<u64>, Query, description = "How many at most, 1 to 100 (default 100)", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The customer's chains in creation order (empty for an unknown customer)", body = super::openapi::views::CustomerChains),
        (status = 422, description = "`invalid_request`: `after` or `limit` out of range, or an unknown query parameter; `field` names it", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn of_customer(
    State(state): State<AppState>,
    Path(customer): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let page = Page::checked(page)?;
    state.ledger.linearizable_barrier().await?;
    // One more than asked, to know whether another page follows.
    let mut chains = state
        .ledger
        .customer_chains(&customer, page.after, page.limit + 1)?;
    let more = chains.len() > page.limit;
    chains.truncate(page.limit);
    #[derive(Serialize)]
    struct Entry {
        id: String,
        ledger_index: u64,
    }
    #[derive(Serialize)]
    struct CustomerChains {
        customer: String,
        chains: Vec<Entry>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_after: Option<u64>,
    }
    let next_after = if more {
        chains.last().map(|c| c.0)
    } else {
        None
    };
    Ok(Json(CustomerChains {
        customer,
        chains: chains
            .into_iter()
            .map(|(ledger_index, id)| Entry { id, ledger_index })
            .collect(),
        next_after,
    })
    .into_response())
}
