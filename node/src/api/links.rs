//! The link registry, for operators (admin token): register a device's link,
//! list links with their owner, epoch, lease and pool depth, remove one.
//!
//! - `POST /v1/admin/links` `{"device", "address", "public_key"}` (key as 64
//!   hex digits or base64) → 201 (new) or 200 (address changed), the link.
//! - `GET /v1/admin/links` → 200 `{"links": [...]}`.
//! - `DELETE /v1/admin/links/{device}` → 200; the lease ends at once.
//! - `GET /v1/admin/links/{device}/chunks/{seq}` → 200: the device's
//!   timestamp and signature of an appended chunk, the statement they sign,
//!   the registered key, and whether the signature verifies; 404 if none.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use geiger_control_plane::{Command, LinkView, Outcome};
use geiger_protocol::device::DeviceId;
use geiger_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Admin, JsonBody};
use super::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    /// `dev_` + 32 hex digits, as `geiger-device --print-key` prints it.
    pub device: String,
    /// `host:port` of the device agent, reachable from every node.
    pub address: String,
    /// The device's Ed25519 public key: 64 hex digits or base64.
    pub public_key: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisteredLink {
    pub device: String,
    pub address: String,
    pub public_key: String,
}

/// A link as `GET /v1/admin/links` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkStatus {
    #[serde(flatten)]
    pub link: LinkView,
    /// The lease runs now (by this node's clock).
    pub lease_active: bool,
    /// Milliseconds the lease has left (0 when expired or none).
    pub lease_remaining_ms: u64,
    /// Pool bytes from this device, and the whole pool.
    pub pool_depth_bytes: u64,
    /// This node runs the link's session and it is connected and healthy.
    pub up_here: bool,
    /// The device's latest report on its source, from the node that runs
    /// the link's session.
    pub source: Option<crate::metrics::SourceView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LinkList {
    pub answered_by: u64,
    pub pool_bytes: u64,
    pub links: Vec<LinkStatus>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// 64 hex digits, or standard/URL-safe base64 (padded or not) of 32 bytes.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ApiError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines.iter().find_map(|e| e.decode(text).ok())
    };
    let key: [u8; 32] = bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("`public_key` must be 32 bytes as 64 hex digits or base64"))?;
    VerifyingKey::from_bytes(&key)
        .map_err(|_| invalid("`public_key` is not a valid Ed25519 public key"))?;
    Ok(key)
}

#[utoipa::path(post, path = "/v1/admin/links", tag = "operators", operation_id = "register_link",
    security(("admin_token" = [])),
    request_body(content = NewLink, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = RegisteredLink),
        (status = 200, description = "Already registered; address updated", body = RegisteredLink),
        (status = 400, description = "`invalid_json`: not JSON, or not the request's shape (unknown field, wrong type)", body = geiger_protocol::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = geiger_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = geiger_protocol::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/json`", body = geiger_protocol::ErrorBody),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the ledger refused the registration", body = geiger_protocol::ErrorBody),
        (status = 422, description = "`invalid_request`: the device ID does not belong to the key, or the key is not an Ed25519 public key; `field` names it", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Registers the link to a device (or changes its address).
pub async fn register(
    _: Admin,
    State(state): State<AppState>,
    JsonBody { value: new, .. }: JsonBody<NewLink>,
) -> Result<Response, ApiError> {
    let key = parse_public_key(&new.public_key)?;
    let derived = DeviceId::of_key_bytes(&key).to_string();
    if derived != new.device {
        return Err(invalid(format!(
            "device {} does not belong to that public key (its id is {derived})",
            new.device
        )));
    }
    // After a barrier, so a registration made through another node counts.
    state.ledger.linearizable_barrier().await?;
    let existed = state.ledger.link(&new.device)?.is_some();
    let outcome = state
        .workers
        .submit(Command::RegisterLink {
            device: new.device.clone(),
            address: new.address.clone(),
            public_key: key,
        })
        .await?;
    match outcome {
        Outcome::Done => {
            tracing::info!(device = %new.device, address = %new.address, "link registered");
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(RegisteredLink {
                    device: new.device,
                    address: new.address,
                    public_key: hex::encode(key),
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

#[utoipa::path(get, path = "/v1/admin/links", tag = "operators", operation_id = "list_links",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every registered link with its owner, epoch, lease and pool depth", body = super::openapi::views::LinkList),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
    ))]
/// Every registered link with its owner, epoch, lease and pool depth.
pub async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<LinkList>, ApiError> {
    let now = geiger_protocol::now_unix_ms();
    let (pool_bytes, _) = state.ledger.pool()?;
    let links = state
        .ledger
        .links()?
        .into_iter()
        .map(|link| {
            let expires = link.lease_expires_at_ms.unwrap_or(0);
            let up_here = link.owner == Some(state.config.node_id)
                && state
                    .metrics
                    .link_up
                    .get_or_create(&crate::metrics::DeviceLabels {
                        device: link.device.clone(),
                    })
                    .get()
                    == 1;
            LinkStatus {
                lease_active: link.owner.is_some() && now <= expires,
                lease_remaining_ms: expires.saturating_sub(now),
                pool_depth_bytes: link.pooled_bytes,
                up_here,
                source: state.metrics.sources.view(&link.device),
                link,
            }
        })
        .collect();
    Ok(Json(LinkList {
        answered_by: state.config.node_id,
        pool_bytes,
        links,
    }))
}

#[utoipa::path(delete, path = "/v1/admin/links/{device}", tag = "operators", operation_id = "remove_link",
    security(("admin_token" = [])),
    params(("device" = String, Path, description = "A device ID: `dev_` and 32 hex digits")),
    responses(
        (status = 200, description = "Removed; the lease ends at once", body = super::openapi::views::RemovedLink),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 404, description = "`not_found`: no such link", body = geiger_protocol::ErrorBody),
        (status = 503, description = "`unavailable`: no leader reachable or overloaded; retry", body = geiger_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
/// Removes a link; a later registration continues with a higher epoch.
pub async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .workers
        .submit(Command::RemoveLink {
            device: device.clone(),
        })
        .await?
    {
        Outcome::Done => {
            tracing::info!(%device, "link removed");
            Ok(Json(serde_json::json!({ "removed": device })))
        }
        Outcome::Rejected(r) => Err(r.into()),
        other => Err(ApiError::internal(format!(
            "unexpected ledger outcome {other:?}"
        ))),
    }
}

/// What the ledger holds to prove a chunk came from its device.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkProof {
    pub device: String,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub length: u32,
    /// Hex: SHA-256 of the chunk's bytes, the signed 80-byte statement
    /// (docs/LINK.md), the Ed25519 signature, the registered public key.
    pub sha256: String,
    pub statement: String,
    pub signature: String,
    pub public_key: String,
    /// Strict Ed25519 verification of `signature` over `statement`.
    pub verified: bool,
}

#[utoipa::path(get, path = "/v1/admin/links/{device}/chunks/{seq}", tag = "operators", operation_id = "get_chunk_proof",
    security(("admin_token" = [])),
    params(("device" = String, Path, description = "A device ID: `dev_` and 32 hex digits"),
        ("seq" = u64, Path, description = "The chunk's sequence number", minimum = 0, maximum = 18446744073709551615_u64)),
    responses(
        (status = 200, description = "The device's timestamp and signature of an appended chunk, and whether it verifies", body = ChunkProof),
        (status = 401, description = "`unauthorized`: no or unknown credentials", body = geiger_protocol::ErrorBody),
        (status = 404, description = "`not_found`: no such link, or no signed chunk with that sequence number", body = geiger_protocol::ErrorBody),
    ))]
/// The device's signature of an appended chunk, and whether it verifies.
pub async fn chunk(
    _: Admin,
    State(state): State<AppState>,
    Path((device, seq)): Path<(String, String)>,
) -> Result<Json<ChunkProof>, ApiError> {
    // A sequence number that is not a u64 names no chunk: 404 in the JSON
    // error shape, where axum's own rejection would be a plain-text 400.
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::not_found(format!("signed chunk {seq:?} of {device}")))?;
    let link = state
        .ledger
        .link(&device)?
        .ok_or_else(|| ApiError::not_found(format!("link {device}")))?;
    let p = state
        .ledger
        .chunk_provenance(&device, seq)?
        .ok_or_else(|| ApiError::not_found(format!("signed chunk {seq} of {device}")))?;
    let key = VerifyingKey::from_bytes(&link.public_key)
        .map_err(|_| ApiError::internal("the registered key is not a curve point"))?;
    let id = geiger_hardware::DeviceId::of(&key);
    let statement = geiger_hardware::chunk::signed_statement(&id, seq, &p.sha256, p.timestamp_ms);
    let verified = <[u8; 64]>::try_from(p.signature.as_slice())
        .map(|sig| {
            key.verify_strict(&statement, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_ok()
        })
        .unwrap_or(false);
    Ok(Json(ChunkProof {
        device,
        seq,
        timestamp_ms: p.timestamp_ms,
        length: p.length,
        sha256: hex::encode(p.sha256),
        statement: hex::encode(statement),
        signature: hex::encode(&p.signature),
        public_key: hex::encode(link.public_key),
        verified,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_is_accepted_in_hex_or_base64_and_must_be_a_curve_point() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        let bytes = key.to_bytes();
        assert_eq!(parse_public_key(&hex::encode(bytes)).unwrap(), bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(parse_public_key(&b64).unwrap(), bytes);
        assert!(parse_public_key("00").is_err());
        assert!(parse_public_key(&"zz".repeat(32)).is_err());
    }
}
