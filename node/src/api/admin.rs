//! Operator calls, behind the admin token: cluster status, customers,
//! membership, key rotation.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use geiger_control_plane::{Command, Member, Outcome, Status};
use geiger_protocol::ErrorCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Admin, JsonBody};
use super::AppState;

#[derive(Serialize)]
pub struct ClusterStatus {
    /// The node that answered, and whether it can serve draws now.
    pub answered_by: u64,
    pub ready: bool,
    pub not_ready_because: Option<String>,
    /// Device → seconds of current demand its pool bytes cover; `null` when
    /// there is no demand (the reserve lasts indefinitely).
    pub pool_seconds_of_demand: std::collections::BTreeMap<String, Option<f64>>,
    /// The answering node's device-link public key, hex: what each device's
    /// trusted-nodes file lists (`geiger ctl link trusted-nodes`).
    pub link_key: String,
    /// Device → its source, as its latest report says, for the devices
    /// whose link sessions run on this node.
    pub sources: std::collections::BTreeMap<String, crate::metrics::SourceView>,
    #[serde(flatten)]
    pub ledger: Status,
}

/// Members, zones, clouds, roles, leader, term, indexes, lag, links and
/// owners, pool depth, and what failures the placement survives.
#[utoipa::path(get, path = "/v1/cluster/status", tag = "operators", operation_id = "get_cluster_status",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "This node's view of the cluster", body = super::openapi::views::ClusterStatus),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
    ))]
pub async fn cluster_status(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let (ready, why) = state.readiness.get();
    Ok(Json(ClusterStatus {
        answered_by: state.config.node_id,
        ready,
        not_ready_because: why,
        pool_seconds_of_demand: state
            .readiness
            .pool_seconds()
            .into_iter()
            .map(|(d, s)| (d, s.is_finite().then_some(s)))
            .collect(),
        link_key: hex::encode(state.link_public_key.as_bytes()),
        sources: state.metrics.sources.views(),
        ledger: state.ledger.status()?,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// 1 to 128 bytes of UTF-8 without control characters (`maxLength`
    /// counts characters, so it is the whole rule only for ASCII).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedCustomer {
    pub id: String,
    pub name: String,
    /// Shown once; only its SHA-256 is stored.
    pub api_key: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[utoipa::path(post, path = "/v1/admin/customers", tag = "operators", operation_id = "create_customer",
    security(("admin_token" = [])),
    request_body(content = NewCustomer, content_type = "application/json"),
    responses(
        (status = 201, description = "The customer and its API key, shown only here", body = CreatedCustomer),
        (status = 400, description = "`invalid_json`: not JSON, or not the request's shape (unknown field, wrong type)", body = geiger_protocol::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = geiger_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = geiger_protocol::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/json`", body = geiger_protocol::ErrorBody),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: `name` breaks its rule; `field` names it", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Creates a customer and returns its API key, which is never shown again.
pub async fn create_customer(
    _: Admin,
    State(state): State<AppState>,
    JsonBody { value: new, .. }: JsonBody<NewCustomer>,
) -> Result<Response, ApiError> {
    if new.name.is_empty() || new.name.len() > 128 || new.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "`name` must be 1 to 128 bytes without control characters",
        ));
    }
    let id = format!("cu_{}", random_hex(8));
    let api_key = format!("gk_{}", random_hex(32));
    let outcome = state
        .workers
        .submit(Command::CreateCustomer {
            id: id.clone(),
            name: new.name.clone(),
            key_sha256: geiger_control_plane::api_key_hash(&api_key),
        })
        .await?;
    match outcome {
        Outcome::CustomerCreated { id } => {
            tracing::info!(customer = %id, name = %new.name, "customer created");
            Ok((
                StatusCode::CREATED,
                Json(CreatedCustomer {
                    id,
                    name: new.name,
                    api_key,
                }),
            )
                .into_response())
        }
        Outcome::Rejected(r) => Err(r.into()),
        other => Err(ApiError::internal(format!(
            "unexpected ledger outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MemberAction {
    AddLearner,
    Promote,
    Remove,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberChange {
    pub action: MemberAction,
    pub id: u64,
    /// Required with `add_learner`.
    #[schema(value_type = Option<super::openapi::views::Member>)]
    pub member: Option<Member>,
}

#[utoipa::path(post, path = "/v1/admin/members", tag = "operators", operation_id = "change_member",
    security(("admin_token" = [])),
    request_body(content = MemberChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The placement after the change", body = super::openapi::views::PlacementAfterChange),
        (status = 400, description = "`invalid_json`: not JSON, or not the request's shape (unknown field, wrong type)", body = geiger_protocol::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = geiger_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = geiger_protocol::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/json`", body = geiger_protocol::ErrorBody),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the change conflicts with the membership", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: `add_learner` without `member`, a node that refuses the cluster's secret or whose build supports less than the cluster's feature level, or a change the cluster refuses; `field` names it", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable, the node to add does not answer, or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Adds a learner, promotes a learner to voter, or removes a node.
pub async fn change_member(
    _: Admin,
    State(state): State<AppState>,
    JsonBody { value: change, .. }: JsonBody<MemberChange>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match change.action {
        MemberAction::AddLearner => {
            let member = change.member.ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, "`add_learner` needs `member`")
            })?;
            state.ledger.add_learner(change.id, member).await?;
        }
        MemberAction::Promote => state.ledger.promote(change.id).await?,
        MemberAction::Remove => state.ledger.remove(change.id).await?,
    }
    tracing::info!(node = change.id, action = ?change.action, "membership changed");
    Ok(Json(
        serde_json::json!({ "placement": state.ledger.placement()? }),
    ))
}

#[utoipa::path(post, path = "/v1/admin/keys/rotate", tag = "operators", operation_id = "rotate_signing_key",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The new current key", body = super::openapi::views::RotatedKey),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Retires the current signing key and starts a new one.
pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key_id = state.ledger.rotate_key().await?;
    tracing::info!(%key_id, "signing key rotated");
    Ok(Json(serde_json::json!({ "key_id": key_id })))
}

/// A consistent copy of this node's applied ledger (the snapshot format),
/// streamed from disk: `geiger ctl backup FILE` saves it. The header
/// `geiger-backup-index` names the last log index it covers.
#[utoipa::path(get, path = "/v1/admin/backup", tag = "operators", operation_id = "get_backup",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The backup (the snapshot format); header `geiger-backup-index` names the last log index it covers", content_type = "application/octet-stream", body = String, headers(("geiger-backup-index" = u64, description = "The last log index the backup covers"))),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 500, description = "`internal`: the backup could not be written", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn backup(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let dir = state.config.data_dir.join("backups");
    let ledger = state.ledger.clone();
    let (file, index) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
        let path = dir.join(format!("backup-{}.snap", random_hex(8)));
        let index = ledger.backup_to(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
        // The open handle keeps the data; the name goes now, so an
        // interrupted download leaves nothing behind.
        std::fs::remove_file(&path).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((file, index))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(index, "backup streamed");
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (
                axum::http::header::HeaderName::from_static("geiger-backup-index"),
                index.to_string(),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
