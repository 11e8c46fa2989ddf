//! The node's supervised actor tree (ractor). The supervisor, the request
//! workers, Health and the AlertPusher live here; the cluster view in
//! [`crate::cluster_view`], the link actors in [`crate::links`]:
//!
//! ```text
//! NodeSupervisor
//!  ├─ request-workers   (a factory with a bounded queue: overload → 503)
//!  ├─ cluster-view      (who leads, which members answer; read by the three below)
//!  ├─ health            (readiness, self-checks, metrics from the ledger)
//!  ├─ link-controller   (on the leader: gives every link one owner)
//!  ├─ link-watcher      (starts/stops link:<device> as this node's leases come and go)
//!  ├─ link:<device>     (HardwareSession, one per link this node owns)
//!  └─ alert-pusher      (on the leader: pushes control-plane alerts to Alertmanager)
//! ```

pub mod alert_pusher;
pub mod health;
pub mod supervisor;
pub mod workers;
