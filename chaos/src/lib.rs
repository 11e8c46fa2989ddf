//! geiger-chaos: the fault harness. It starts a local multi-zone cluster of
//! real `geiger` processes and `geiger-device` agents behind a fault proxy
//! ([`launcher`], [`proxy`]), drives a recorded workload through the client
//! SDK ([`workload`]), injects a seeded schedule of faults ([`nemesis`]),
//! checks the design's invariants once everything has healed ([`checker`])
//! and reports availability figures ([`report`], [`plot`]).

pub mod checker;
pub mod launcher;
pub mod nemesis;
pub mod plot;
pub mod proxy;
pub mod report;
pub mod workload;
