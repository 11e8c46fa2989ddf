//! Links and their leases, in one place: the registry of device links
//! ([`registry`]), lease enforcement in the ledger ([`lease`]: assign,
//! renew, and the fencing check every chunk command passes), and the lease
//! plan the leader's link controller proposes from ([`plan`], pure).
//!
//! The chunks a link delivers are accounted by [`super::pool`]; this module
//! decides who may deliver them and under which epoch.

pub(crate) mod lease;
pub mod plan;
pub(crate) mod registry;
