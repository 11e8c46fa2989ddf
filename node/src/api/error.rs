//! `ApiError`: every failure a handler can answer with, rendered in the one
//! error shape `{"error": {"code", "message", ...}}` with its status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use geiger_protocol::{ErrorBody, ErrorCode, RecordId, RequestError};

#[derive(Debug)]
pub struct ApiError {
    body: ErrorBody,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            body: ErrorBody::new(code, message),
            retry_after_s: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.body.error.code
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn invalid(err: &RequestError) -> Self {
        ApiError {
            body: ErrorBody::invalid(err),
            retry_after_s: None,
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidJson, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or unknown credentials: send `Authorization: Bearer <key>`",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message).with_retry_after(1)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn request_id_reused(request_id: &str, field: &str) -> Self {
        ApiError {
            body: ErrorBody::request_id_reused(request_id, field),
            retry_after_s: None,
        }
    }

    pub fn previous_already_used(previous: &RecordId, existing: RecordId) -> Self {
        ApiError {
            body: ErrorBody::previous_already_used(previous, existing),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
