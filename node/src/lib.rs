//! geiger-node: everything a geiger node runs, wired together by the thin
//! `geiger` binary (src/main.rs).
//!
//! - [`config`]: settings (defaults, TOML, `GEIGER_*`).
//! - [`metrics`]: the Prometheus exposition promised in docs/METRICS.md.
//! - [`actors`]: the supervised ractor tree.
//! - [`rate_limit`]: per-customer token buckets.
//! - [`verify_command`]: `geiger verify`.

pub mod actors;
pub mod api;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod metrics;
pub mod node;
pub mod rate_limit;
pub mod restore;
pub mod verify_command;
