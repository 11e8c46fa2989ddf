//! Answers built from bytes the ledger stored: a write's 201 (the same
//! bytes on the first answer and on every replay) and stored JSON embedded
//! as it is, so what a client once received is what everyone reads back.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use geiger_protocol::REPLAY_HEADER;
use serde_json::value::RawValue;

use super::error::ApiError;

/// The 201 of a write that made (or, `replayed`, had already made) the
/// record at `location`: its stored bytes, `Location`, and on a replay
/// [`REPLAY_HEADER`].
pub fn created(location: &str, bytes: Vec<u8>, replayed: bool) -> Response {
    let mut reply = json_bytes(StatusCode::CREATED, bytes);
    let headers = reply.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert(REPLAY_HEADER, HeaderValue::from_static("true"));
    }
    reply
}

/// A response with `status` whose body is `bytes`, already JSON (a stored
/// response), sent as they are.
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Stored JSON bytes, to embed as they are in a larger answer.
pub fn stored_json(bytes: &[u8]) -> Result<&RawValue, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored record unreadable: {e}")))
}
