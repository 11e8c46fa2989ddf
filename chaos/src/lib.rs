//! geiger-chaos: the fault harness: a local multi-zone cluster, faults, workload and invariant checks.
//!
//! Not built yet: this crate holds no functionality so far. Its issue in the
//! tracker describes what it will hold; nothing here pretends to work.
