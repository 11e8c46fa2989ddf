//! The node's supervised actor tree (ractor):
//!
//! ```text
//! NodeSupervisor
//!  ├─ request workers   (a factory with a bounded queue: overload → 503)
//!  ├─ Health            (readiness, self-checks, metrics from the ledger)
//!  ├─ HardwareSession×N (one per link this node owns)
//!  └─ AlertPusher       (slot for the monitoring issue)
//! ```

pub mod supervisor;
