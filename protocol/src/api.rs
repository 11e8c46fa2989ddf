//! Request bodies of the HTTP contract and its one error shape:
//! `{"error": {"code": "<snake_case>", "message": "<for humans>", ...}}`.

use serde::{Deserialize, Serialize};

use crate::id::RecordId;
use crate::spec::{Spec, SpecError};

/// Longest `tag`, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Longest client `request_id`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Response header (value `true`) on a 201 that replays the original answer
/// to an earlier identical request (same `request_id`, same body) instead of
/// writing anything new.
pub const REPLAY_HEADER: &str = "geiger-replayed";

/// `POST /v1/chains`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChainRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::tag))]
    pub tag: String,
    /// A client idempotency key: a retry by the same customer with the same
    /// `request_id` and `tag` gets the chain that request created (its
    /// original 201 body), not a second chain; another `tag` is 422
    /// `request_id_reused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::request_id))]
    pub request_id: Option<String>,
}

/// `POST /v1/draws`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawRequest {
    /// The chain's latest ID: its genesis (`ch_…`) or its newest draw (`dr_…`).
    pub previous: RecordId,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::tag))]
    pub tag: String,
    pub spec: Spec,
    /// A client idempotency key: a retry with the same `previous` and the
    /// same `request_id` gets the original 201 body back when `tag` and
    /// `spec` are the same too; otherwise it is 422 `request_id_reused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::request_id))]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("`tag` must be at most {MAX_TAG_BYTES} bytes without control, format (bidi, zero-width), separator or non-characters")]
    BadTag,
    #[error("`request_id` must be 1 to {MAX_REQUEST_ID_BYTES} characters of A-Z a-z 0-9 . _ : -")]
    BadRequestId,
}

impl RequestError {
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Spec(e) => e.field(),
            RequestError::BadTag => "tag",
            RequestError::BadRequestId => "request_id",
        }
    }
}

/// At most [`MAX_TAG_BYTES`] bytes, none of them a character that displays
/// differently from what is signed (docs/DERIVATION.md §5).
pub fn validate_tag(tag: &str) -> Result<(), RequestError> {
    if tag.len() > MAX_TAG_BYTES || tag.chars().any(is_hidden_in_tags) {
        return Err(RequestError::BadTag);
    }
    Ok(())
}

/// Unicode format characters (general category Cf, as of Unicode 15.1),
/// as inclusive ranges. They include the bidi overrides and isolates, the
/// zero-width characters and the byte-order mark: characters that change how
/// a tag is shown without showing themselves. Written out rather than taken
/// from a Unicode table crate so that an independent verifier can copy the
/// rule from docs/DERIVATION.md exactly.
pub(crate) const FORMAT_CHARACTERS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Control characters (Cc), format characters (Cf), the line and paragraph
/// separators (U+2028, U+2029) and the 66 non-characters.
pub(crate) fn is_hidden_in_tags(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || u == 0x2028
        || u == 0x2029
        || (0xFDD0..=0xFDEF).contains(&u)
        || u & 0xFFFE == 0xFFFE
        || FORMAT_CHARACTERS
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// 1 to [`MAX_REQUEST_ID_BYTES`] of `A-Z a-z 0-9 . _ : -`.
pub fn validate_request_id(id: &str) -> Result<(), RequestError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    if !ok {
        return Err(RequestError::BadRequestId);
    }
    Ok(())
}

impl CreateChainRequest {
    pub fn validate(&self) -> Result<(), RequestError> {
        validate_tag(&self.tag)?;
        self.request_id
            .as_deref()
            .map_or(Ok(()), validate_request_id)
    }
}

impl DrawRequest {
    /// Every check that can be made without the ledger.
    pub fn validate(&self) -> Result<(), RequestError> {
        validate_tag(&self.tag)?;
        if let Some(id) = &self.request_id {
            validate_request_id(id)?;
        }
        self.spec.validate()?;
        Ok(())
    }
}

/// Every error code the API returns. Stable: clients match on these.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not the expected shape.
    InvalidJson,
    /// The body is JSON of the right shape but breaks a documented limit.
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The request body did not arrive within the listener's body deadline.
    RequestTimeout,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PreviousAlreadyUsed,
    /// The thing to create exists already, or the request conflicts with
    /// the ledger's current state in another way.
    Conflict,
    RateLimited,
    /// The node is overloaded or cannot reach a leader right now; retry.
    Unavailable,
    /// The entropy pool is empty; retry after the reserve refills.
    EntropyExhausted,
    Internal,
    /// The `request_id` was used before with a request that differs from
    /// this one (`field` names the first difference); nothing was written.
    /// Added last: codes keep their positions in every encoding.
    RequestIdReused,
    /// The request target (path and query) is longer than the server reads.
    UriTooLong,
    /// The request's header section has more fields or bytes than the
    /// server reads.
    HeadersTooLarge,
    /// The chunk exists but some of its bytes may still be drawn: its bytes
    /// stay secret until every one is used (docs/DERIVATION.md §10).
    ChunkNotExhausted,
    /// The request head is not valid HTTP/1.1 (its request line, a header
    /// field or the version).
    MalformedRequest,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::MalformedRequest => 400,
            ErrorCode::InvalidRequest | ErrorCode::RequestIdReused => 422,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PreviousAlreadyUsed | ErrorCode::Conflict | ErrorCode::ChunkNotExhausted => {
                409
            }
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable | ErrorCode::EntropyExhausted => 503,
            ErrorCode::Internal => 500,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
        }
    }
}

/// The body of every error response.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// With `previous_already_used`: the draw already issued after `previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<RecordId>,
    /// With `invalid_request`: the offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                existing_id: None,
                field: None,
            },
        }
    }

    pub fn invalid(err: &RequestError) -> Self {
        let mut body = ErrorBody::new(ErrorCode::InvalidRequest, err.to_string());
        body.error.field = Some(err.field().to_string());
        body
    }

    /// `request_id` names an earlier request that differs from this one in
    /// `field`.
    pub fn request_id_reused(request_id: &str, field: &str) -> Self {
        let mut body = ErrorBody::new(
            ErrorCode::RequestIdReused,
            format!(
                "request_id `{request_id}` was used before for a request with another `{field}`; \
                 a retry must repeat the request exactly, a new request needs a new request_id"
            ),
        );
        body.error.field = Some(field.to_string());
        body
    }

    pub fn previous_already_used(previous: &RecordId, existing: RecordId) -> Self {
        let mut body = ErrorBody::new(
            ErrorCode::PreviousAlreadyUsed,
            format!("{previous} already has a successor, {existing}; draws cannot be re-rolled"),
        );
        body.error.existing_id = Some(existing);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tag: &str, request_id: Option<&str>) -> DrawRequest {
        DrawRequest {
            previous: RecordId::for_body(crate::RecordKind::Chain, b"g"),
            tag: tag.into(),
            spec: Spec::Bytes { count: 4 },
            request_id: request_id.map(str::to_string),
        }
    }

    #[test]
    fn tags_and_request_ids_are_checked() {
        assert!(request("round 7", Some("r-1:a.b_c")).validate().is_ok());
        assert_eq!(request("a\nb", None).validate(), Err(RequestError::BadTag));
        assert_eq!(
            request(&"x".repeat(MAX_TAG_BYTES + 1), None).validate(),
            Err(RequestError::BadTag)
        );
        assert!(request("Runde 7 · 六合彩 🎲 é", None).validate().is_ok());
        for hidden in [
            "\u{202E}", // right-to-left override
            "\u{2067}", // right-to-left isolate
            "\u{200B}", // zero-width space
            "\u{200D}", // zero-width joiner
            "\u{FEFF}", // byte-order mark
            "\u{00AD}", // soft hyphen
            "\u{2028}", // line separator
            "\u{2029}", // paragraph separator
            "\u{FDD0}", // non-character
            "\u{FFFE}",
            "\u{10FFFF}",
            "\u{E0041}", // tag character
            "\u{0085}",  // next line (a C1 control)
        ] {
            assert_eq!(
                request(&format!("round{hidden}7"), None).validate(),
                Err(RequestError::BadTag),
                "{hidden:?} was accepted"
            );
        }
        assert_eq!(
            request("t", Some("")).validate(),
            Err(RequestError::BadRequestId)
        );
        assert_eq!(
            request("t", Some("has space")).validate(),
            Err(RequestError::BadRequestId)
        );
    }

    #[test]
    fn a_chain_request_id_is_checked_like_a_draws() {
        let chain = |id: Option<&str>| CreateChainRequest {
            tag: "t".into(),
            request_id: id.map(str::to_string),
        };
        assert!(chain(None).validate().is_ok());
        assert!(chain(Some("retry-1")).validate().is_ok());
        assert_eq!(
            chain(Some("has space")).validate(),
            Err(RequestError::BadRequestId)
        );
        assert_eq!(
            chain(Some(&"x".repeat(MAX_REQUEST_ID_BYTES + 1))).validate(),
            Err(RequestError::BadRequestId)
        );
    }

    #[test]
    fn the_conflict_error_names_the_existing_successor() {
        let prev = RecordId::for_body(crate::RecordKind::Chain, b"g");
        let next = RecordId::for_body(crate::RecordKind::Draw, b"d");
        let body = serde_json::to_value(ErrorBody::previous_already_used(&prev, next)).unwrap();
        assert_eq!(body["error"]["code"], "previous_already_used");
        assert_eq!(body["error"]["existing_id"], next.to_string());
        assert_eq!(ErrorCode::PreviousAlreadyUsed.http_status(), 409);
    }

    #[test]
    fn a_reused_request_id_is_a_422_naming_the_field_that_differs() {
        let body = serde_json::to_value(ErrorBody::request_id_reused("r-1", "spec")).unwrap();
        assert_eq!(body["error"]["code"], "request_id_reused");
        assert_eq!(body["error"]["field"], "spec");
        assert!(body["error"]["message"].as_str().unwrap().contains("r-1"));
        assert_eq!(ErrorCode::RequestIdReused.http_status(), 422);
    }
}
