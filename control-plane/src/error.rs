//! The crate's error type, [`Error`]: what a caller of [`crate::ControlPlane`]
//! can get back. Storage failures inside `apply` are not here: they stop the
//! replica (see `state_machine::tx::ApplyError`).

use crate::state_machine::reads::ReadError;
use crate::types::Rejection;

/// Errors at the crate's edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    /// No leader could be reached within the write timeout (an election that
    /// does not finish, or no quorum). Safe to retry.
    #[error("no leader available: {0}")]
    Unavailable(String),
    /// The command was refused by the ledger; nothing changed.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("raft: {0}")]
    Raft(String),
    /// The leader refused a forwarded call for want of a credential (the
    /// cluster secret, or the admin credential an operator command needs);
    /// nothing was proposed.
    #[error("refused by the leader: {0}")]
    Refused(String),
    /// A node to be added to the cluster did not answer; nothing changed.
    /// Safe to retry once it runs.
    #[error("{0}")]
    MemberUnreachable(String),
    #[error("the control plane is shutting down")]
    Shutdown,
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        Error::Storage(e.to_string())
    }
}
