//! The node's supervised actor tree (ractor):
//!
//! ```text
//! NodeSupervisor
//!  ├─ request-workers   (a factory with a bounded queue: overload → 503)
//!  ├─ health            (readiness, self-checks, metrics from the ledger)
//!  ├─ link:<device>     (HardwareSession, one per link this node owns)
//!  └─ alert-pusher      (slot for the monitoring issue)
//! ```

pub mod health;
pub mod supervisor;
pub mod workers;
