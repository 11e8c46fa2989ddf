//! The node's supervised actor tree (ractor):
//!
//! ```text
//! NodeSupervisor
//!  ├─ request-workers   (a factory with a bounded queue: overload → 503)
//!  ├─ health            (readiness, self-checks, metrics from the ledger)
//!  ├─ link-controller  (on the leader: gives every link one owner; hardware_session.rs docs)
//!  ├─ link-watcher     (starts/stops link:<device> as this node's leases come and go)
//!  ├─ link:<device>     (HardwareSession, one per link this node owns)
//!  └─ alert-pusher      (on the leader: pushes control-plane alerts to Alertmanager)
//! ```

pub mod alert_pusher;
pub mod hardware_session;
pub mod health;
pub mod link_controller;
pub mod supervisor;
pub mod workers;
