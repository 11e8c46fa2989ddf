//! geiger-node: everything a geiger node runs, wired together by the thin
//! `geiger` binary (src/main.rs).
//!
//! - [`config`]: settings (defaults, TOML, `GEIGER_*`).
//! - [`metrics`]: the Prometheus exposition promised in docs/METRICS.md.
//! - [`listener`]: the public accept loop that bounds every connection, and TLS.
//! - [`peer_api`]: how a node reaches other members' public API for its probes.
//! - [`private_files`]: secret files and data directories, owner-only.
//! - [`actors`]: the supervised ractor tree.
//! - [`rate_limit`]: token buckets, per customer and per source address.
//! - [`auth`]: customer keys, cached, with shared catch-ups for unknown ones.
//! - [`verify_command`]: `geiger verify`.

pub mod actors;
pub mod api;
pub mod auth;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod peer_api;
pub mod private_files;
pub mod rate_limit;
pub mod verify_command;
