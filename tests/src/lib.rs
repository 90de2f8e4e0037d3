//! End-to-end test support.

pub mod fault_peer;
pub mod pki;
