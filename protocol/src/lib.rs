//! geiger-protocol: everything two parties must agree on to exchange and check
//! draws, and nothing else. Pure: no I/O, no randomness of its own, and no
//! clock read by anything it decides (it only offers [`now_unix_ms`], the
//! one clock of the crates that stamp records), so third-party verifiers can
//! depend on it without pulling in a runtime.
//!
//! - [`id`]: content-hash IDs of chains and draws.
//! - [`spec`]: the four draw kinds and their hard limits.
//! - [`derive`]: `geiger-derive-v1`, entropy bytes → results (docs/DERIVATION.md).
//! - [`derive_v2`]: `geiger-derive-v2`, entropy bits → results near the information limit.
//! - [`derivation`]: the versions by name; which one new draws use.
//! - [`device`]: hardware device IDs, derived from their public keys.
//! - [`canonical`]: RFC 8785 canonical JSON, the bytes that are hashed and signed.
//! - [`record`]: chain and draw records, signed envelopes, keys.
//! - [`api`]: request bodies and the error shape of the HTTP contract.
//! - [`verify`]: offline verification of issued records.
//! - [`provenance`]: device-signed chunks, revealed once exhausted, checked against draws.
//! - `schema` (feature `openapi`): OpenAPI schemas carrying the request rules.

pub mod api;
pub mod canonical;
pub mod derivation;
pub mod derive;
pub mod derive_v2;
pub mod device;
pub mod id;
pub mod lease_proof;
pub mod provenance;
pub mod record;
pub mod sample;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod spec;
pub mod verify;

pub use api::{CreateChainRequest, DrawRequest, ErrorBody, ErrorCode, RequestError, REPLAY_HEADER};
pub use derivation::Derivation;
pub use derive::{derive, Derived, NeedMoreEntropy, DERIVATION_V1};
pub use derive_v2::{derive_v2, DERIVATION_V2};
pub use id::{IdError, RecordId, RecordKind};
pub use record::{
    now_unix_ms, ChainBody, ChainRecord, ChainResponse, ChainType, DrawBody, DrawLookup,
    DrawRecord, DrawResponse, DrawResult, DrawType, EntropySegment, EntropyUse, KeyInfo, KeySet,
    Signature, Signer,
};
pub use spec::{Spec, SpecError};
pub use verify::{verify_chain, verify_draw, VerifyError, VerifyReport};
