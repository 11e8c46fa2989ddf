//! geiger-hardware: the device agent, the link protocol and the entropy
//! health tests.
//!
//! - [`chunk`]: the signed chunk statement (device ids are
//!   `geiger_protocol::device::DeviceId`, re-exported here).
//! - [`frame`]: the link protocol's frames (docs/LINK.md).
//! - [`channel`]: the link's TLS 1.3 channel with pinned Ed25519 keys.
//! - [`device_store`]: the device's key, sequence and epoch on disk.
//! - [`source`]: the simulator, character devices, and fault modes.
//! - [`decay`]: the simulated decay counter, raw-bit extraction, raw health
//!   tests and the SHA-256 conditioner.
//! - [`agent`]: the device side of a link (`geiger-device`).
//! - [`client`]: the node side of a link: verified, health-tested chunks.
//! - [`health`]: NIST SP 800-90B continuous health tests (docs/HEALTH.md).
//! - [`backoff`]: reconnect delays with jitter.

pub mod agent;
pub mod backoff;
pub mod channel;
pub mod chunk;
pub mod client;
pub mod decay;
pub mod device_store;
pub mod frame;
pub mod health;
pub mod source;
mod task;

pub use agent::{Agent, AgentConfig, AgentError, AgentStats, Refusal};
pub use backoff::Backoff;
pub use channel::TrustedNodes;
pub use chunk::{DeviceId, SignedChunk};
pub use client::{
    ChunkOutcome, CloseReason, LinkConfig, LinkError, LinkEvent, LinkSession, LinkState,
    QuarantineReason, SessionInfo, VerifiedChunk,
};
pub use frame::{ErrorCode, SourceReport, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
pub use health::{Cutoffs, HealthConfig, HealthFailure, HealthTests};
pub use source::{Faults, SourceConfig, SourceKind, SourceSnapshot, SourceStats};
