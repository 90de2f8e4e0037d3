//! End-to-end test support.

pub mod delivery;
pub mod fault_peer;
pub mod peers;
pub mod pki;
pub mod soak;
