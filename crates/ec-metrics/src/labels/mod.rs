//! Bounded label values for bindings and destination domains.
//!
//! Every series of a metric lives in the exporter's memory and in
//! Prometheus's storage for as long as the process runs, so a label whose
//! values come from traffic (a recipient domain) must be bounded. The
//! registries here hand out label values once; callers keep the returned
//! [`DomainLabel`] or [`BindingLabel`] (in the domain record, the binding
//! slot, the session) and pass it to every recording call. A label is an
//! interned `Arc<str>`, so passing it costs a reference-count increment and
//! no allocation.
//!
//! - [`DomainLabels`]: configured domains, then the first N other domains
//!   seen, then `other`.
//! - [`BindingLabels`]: one label per configured binding.

mod binding;
mod domain;

pub use binding::{BindingLabel, BindingLabels};
pub use domain::{DomainLabel, DomainLabels, DEFAULT_DOMAIN_LABEL_LIMIT, OTHER_DOMAIN};
