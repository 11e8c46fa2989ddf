//! geiger-client: the Rust SDK for geiger.
//!
//! A [`Client`] takes several node endpoints, or one public hostname that
//! it resolves to every address, spreads requests over them and fails over
//! on connection errors, timeouts and 5xx answers. Draws are
//! retried safely: every draw carries a `request_id` (one is generated when
//! the caller gives none), so a retry of a draw that was in fact committed is
//! recognised by the ledger and answered with the original 201 body. Every
//! chain and draw received is verified (signature, ID, re-derivation)
//! against the cluster's published keys before it is returned.

mod admin;
mod builder;
mod client;
mod error;
mod targets;

pub use builder::ClientBuilder;
pub use client::{Client, Issued, IssuedChain, Lookup};
pub use error::ClientError;

/// The header a node sets on a 201 that replays an earlier identical draw.
pub use geiger_protocol::REPLAY_HEADER;
