//! geiger-hardware: the device agent, the link protocol and the entropy health tests.
//!
//! Not built yet: this crate holds no functionality so far. Its issue in the
//! tracker describes what it will hold; nothing here pretends to work.
