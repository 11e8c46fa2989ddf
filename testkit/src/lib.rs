//! geiger-testkit: what the tests, the benchmarks and the fault harness
//! share, kept out of the production crates (`publish = false`).
//!
//! - [`in_process`]: real [`geiger_control_plane::ControlPlane`] replicas in
//!   one process, on loopback (the control plane's tests and benchmarks).
//! - [`launcher`]: real `geiger node` and `geiger-device` processes: ports,
//!   config files, spawn, signals, stop and kill, log tails (the node's
//!   end-to-end tests, its memory benchmark, and `geiger-chaos`).
//! - [`cpu_quota`]: a process held to a fraction of a core (one machine
//!   standing in for one machine per member, in the benchmarks).
//! - [`measure`]: CPU time and resident memory of the running process.

pub mod cpu_quota;
pub mod in_process;
pub mod launcher;
pub mod measure;
