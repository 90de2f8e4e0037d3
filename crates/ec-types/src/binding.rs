//! Bindings: named egress identities.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The small integer id of a [`Binding`], used as an index in the
/// scheduler's tables (Momentum's `ec_binding_slot`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingSlot(pub u16);

impl BindingSlot {
    /// The slot as a table index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for BindingSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

impl fmt::Debug for BindingSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A named egress identity: the source address that connections bind to
/// and the name they give in EHLO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The name configuration and logs use for it.
    pub name: String,
    /// The local address to bind before connecting; `None` lets the kernel
    /// choose.
    pub source_ip: Option<IpAddr>,
    /// The name to send in EHLO or HELO; `None` uses the global setting.
    pub ehlo_name: Option<String>,
}

impl Binding {
    /// The name of the binding that exists in every engine.
    pub const DEFAULT_NAME: &'static str = "default";

    /// A binding with no source address and the global EHLO name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source_ip: None,
            ehlo_name: None,
        }
    }
}
