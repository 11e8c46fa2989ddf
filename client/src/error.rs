//! Typed client errors: the API's own errors by code, transport failures
//! after every endpoint was tried, and records that fail verification.

use geiger_protocol::{ErrorBody, ErrorCode, RecordId, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `previous` already has a successor that is not this request's replay.
    #[error("previous already used; the draw after it is {existing}")]
    PreviousAlreadyUsed { existing: RecordId },
    /// Any other answer in the error shape (4xx, or 5xx after retries).
    #[error("{status} {}: {}", .body.error.code_str(), .body.error.message)]
    Api { status: u16, body: ErrorBody },
    /// No endpoint answered in time, after every retry.
    #[error("no node answered after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    /// The answer was not what the contract says.
    #[error("unexpected answer from {endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    /// A record the cluster sent does not verify. Never ignore this one.
    #[error("a record failed verification: {0}")]
    Verification(#[from] VerifyError),
    /// A CA given to [`crate::ClientBuilder::trust_ca_pem`] is not PEM certificates.
    #[error("the CA to trust cannot be read: {0}")]
    InvalidCa(String),
}

/// `code_str` gives the snake_case code for messages.
trait CodeStr {
    fn code_str(&self) -> String;
}

impl CodeStr for geiger_protocol::api::ErrorDetail {
    fn code_str(&self) -> String {
        serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl ClientError {
    /// The API error code, when the node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::PreviousAlreadyUsed { .. } => Some(ErrorCode::PreviousAlreadyUsed),
            ClientError::Api { body, .. } => Some(body.error.code),
            _ => None,
        }
    }
}
