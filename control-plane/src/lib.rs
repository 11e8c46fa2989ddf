//! geiger-control-plane: the replicated ledger: openraft on redb, Raft RPC, snapshots, link ownership.
//!
//! Not built yet: this crate holds no functionality so far. Its issue in the
//! tracker describes what it will hold; nothing here pretends to work.
