//! geiger-client: the Rust SDK: failover, safe retries, verification.
//!
//! Not built yet: this crate holds no functionality so far. Its issue in the
//! tracker describes what it will hold; nothing here pretends to work.
