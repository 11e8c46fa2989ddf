//! `GET /v1/chunks/{device}/{seq}`: a device-signed entropy chunk, public
//! once exhausted (docs/DERIVATION.md §10). Before that, 409
//! `chunk_not_exhausted` and no byte of it: its unused bytes are the
//! entropy of draws not yet made. Served from this replica (a replica a few
//! entries behind may still say 409 for a chunk the leader has used up).

use axum::extract::{Path, State};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use geiger_control_plane::state_machine::provenance::ChunkReveal;
use geiger_protocol::device::DeviceId;
use geiger_protocol::provenance::PublicChunk;
use geiger_protocol::ErrorCode;

use super::error::ApiError;
use super::AppState;

#[utoipa::path(get, path = "/v1/chunks/{device}/{seq}", tag = "keys", operation_id = "get_chunk",
    params(("device" = String, Path, description = "A device ID: `dev_` and 32 hex digits", pattern = r"^dev_[0-9a-f]{32}$"),
        ("seq" = u64, Path, description = "The chunk's sequence number", minimum = 0, maximum = 18446744073709551615_u64)),
    responses(
        (status = 200, description = "An exhausted chunk: its bytes, the device's signature and public key (docs/DERIVATION.md §10)", body = PublicChunk),
        (status = 404, description = "`not_found`: no signed chunk with that sequence number, or one used up before the ledger kept the bytes of exhausted chunks", body = geiger_protocol::ErrorBody),
        (status = 409, description = "`chunk_not_exhausted`: the chunk is in the ledger but some of its bytes are still unused; they stay secret until used", body = geiger_protocol::ErrorBody),
        (status = 500, description = "`internal`: the ledger could not be read", body = geiger_protocol::ErrorBody),
    ))]
/// An exhausted chunk's bytes and the device's signature of them.
pub async fn get(
    State(state): State<AppState>,
    Path((device, seq)): Path<(String, String)>,
) -> Result<Json<PublicChunk>, ApiError> {
    // Malformed IDs name no chunk: 404 in the JSON error shape, where
    // axum's own rejection would be a plain-text 400.
    let not_found = || ApiError::not_found(format!("signed chunk {seq:?} of {device:?}"));
    if device.parse::<DeviceId>().is_err() {
        return Err(not_found());
    }
    let Ok(number) = seq.parse::<u64>() else {
        return Err(not_found());
    };
    let (provenance, bytes, exhausted_at_ms) = match state.ledger.chunk_reveal(&device, number)? {
        ChunkReveal::Exhausted {
            provenance,
            bytes,
            exhausted_at_ms,
        } => (provenance, bytes, exhausted_at_ms),
        ChunkReveal::NotExhausted => {
            return Err(ApiError::new(
                ErrorCode::ChunkNotExhausted,
                format!(
                    "chunk {number} of {device} still has unused bytes; it is published once every byte is used"
                ),
            ))
        }
        ChunkReveal::NotKept => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "chunk {number} of {device} was used up before the ledger kept the bytes of exhausted chunks: they are gone"
                ),
            ))
        }
        ChunkReveal::Unknown => return Err(not_found()),
    };
    // The device ID is the hash of its key, so any entry for it holds the key.
    let key = state
        .ledger
        .device_keys()?
        .into_iter()
        .find(|k| k.device == device)
        .ok_or_else(|| ApiError::not_found(format!("the public key of {device}")))?;
    Ok(Json(PublicChunk {
        device,
        seq: number,
        public_key: BASE64.encode(key.public_key),
        timestamp_ms: provenance.timestamp_ms,
        length: provenance.length,
        sha256: hex::encode(provenance.sha256),
        signature: BASE64.encode(&provenance.signature),
        hex: hex::encode(bytes),
        exhausted_at: geiger_protocol::record::format_timestamp(exhausted_at_ms),
    }))
}
