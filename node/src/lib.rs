//! geiger-node: everything a geiger node runs, wired together by the thin
//! `geiger` binary (src/main.rs).
//!
//! - [`config`]: settings (defaults, TOML, `GEIGER_*`).
//! - [`node`]: `Node::start`, which opens the ledger, serves both listeners
//!   and starts the actor tree.
//! - [`api`]: the public HTTP API (axum).
//! - [`actors`]: the supervised ractor tree: supervisor, request workers,
//!   Health, AlertPusher.
//! - [`cluster_view`]: the one view of who leads and which members answer.
//! - [`links`]: the hardware links: ownership, sessions, lease renewal,
//!   ingestion.
//! - [`metrics`]: the Prometheus exposition promised in docs/METRICS.md.
//! - [`listener`]: the accept loop that bounds every connection (public
//!   and internal listeners), and TLS on the public API.
//! - [`cluster_tls`]: mutual TLS between members and who a peer is;
//!   [`cluster_certs`]: making the cluster CA and node certificates.
//! - [`peer_api`]: how a node reaches other members' public API for its probes.
//! - [`auth`]: customer keys, cached, with shared catch-ups for unknown ones.
//! - [`rate_limit`]: token buckets, per customer and per source address.
//! - [`private_files`]: secret files and data directories, owner-only.
//! - [`dev`]: `geiger dev`, a one-node cluster with a simulated device.
//! - [`ctl`]: `geiger ctl`, the operator's commands.
//! - [`verify_command`]: `geiger verify`.

pub mod actors;
pub mod api;
pub mod auth;
pub mod cluster_certs;
pub mod cluster_tls;
pub mod cluster_view;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod links;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod peer_api;
pub mod private_files;
pub mod rate_limit;
pub mod restore;
pub mod verify_command;
