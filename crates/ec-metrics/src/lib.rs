//! Metrics of `ec`, an outbound SMTP delivery engine: the catalog of metric
//! names and descriptions, typed recording functions, bounded label sets
//! for bindings and domains, and a Prometheus exporter.
//!
//! - [`catalog`] names and describes every metric; it is the only place a
//!   metric name is spelled. `docs/metrics.md` is generated from it.
//! - The recording functions ([`connection_opened`], [`message_fate`],
//!   [`reply`], ...) take `ec-types` enums and the label handles below, so
//!   a caller cannot invent a label value.
//! - [`DomainLabels`] and [`BindingLabels`] hand out the only `domain` and
//!   `binding` label values: configured domains, the first
//!   [`DEFAULT_DOMAIN_LABEL_LIMIT`] others seen, then `other`.
//! - [`DomainSeries`] and [`EngineGauges`] register the series of one
//!   binding and domain (or the engine's gauges) once, for callers that
//!   record them per connection or per message; a recording is then an
//!   atomic operation.
//! - [`Exporter::install`] installs the process-wide recorder and an HTTP
//!   listener for Prometheus scrapes (loopback by default);
//!   [`LocalRecorder`] records into a private recorder for tests.
//!
//! Until a recorder is installed, recording functions record nothing. A
//! call still builds its series key, which costs about 60 ns (see the
//! README for measurements).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ec_metrics::{BindingLabels, DomainLabels, LocalRecorder};
//! use ec_types::{CloseOutcome, CloseReason, Domain, MessageFate};
//!
//! // Once, at start-up: labels for the configured bindings and domains.
//! let bindings = BindingLabels::new(["default"]);
//! let mut domains = DomainLabels::new([Domain::new("example.com")?], 100);
//! let binding = bindings.get("default").expect("configured above");
//! let domain = domains.label(&Domain::new("example.com")?);
//!
//! // A program calls Exporter::install once; a test uses a local recorder.
//! let recorder = LocalRecorder::new();
//! recorder.scope(|| {
//!     ec_metrics::connection_opened(&binding, &domain);
//!     ec_metrics::message_fate(&binding, &domain, MessageFate::Delivered);
//!     ec_metrics::connection_closed(
//!         &binding,
//!         &domain,
//!         CloseReason::IdleTimeout,
//!         CloseOutcome::Clean,
//!         Duration::from_secs(12),
//!     );
//! });
//!
//! let text = recorder.render();
//! assert!(text.contains(
//!     r#"ec_message_fates_total{binding="default",domain="example.com",fate="delivered"} 1"#
//! ));
//! assert!(text.contains(r#"ec_connections_live{binding="default",domain="example.com"} 0"#));
//! # Ok::<(), ec_types::AddressError>(())
//! ```
//!
//! # What this crate does not do
//!
//! It keeps no state of the engine: gauges that mirror scheduler counts
//! ([`queue_sizes`], [`connections_in_state`]) are set by the scheduler.
//! It has no push gateway and no OpenMetrics output; the exposition format
//! is Prometheus text 0.0.4.

#![warn(missing_docs)]

pub mod catalog;
mod error;
mod exporter;
pub mod labels;
mod local;
mod record;
pub mod reference;
mod series;
pub mod values;

pub use catalog::describe_all;
pub use error::MetricsError;
pub use exporter::{Exporter, ExporterConfig, ExporterHandle, DEFAULT_LISTEN_ADDRESS};
pub use labels::{
    BindingLabel, BindingLabels, DomainLabel, DomainLabels, DEFAULT_DOMAIN_LABEL_LIMIT,
    OTHER_DOMAIN,
};
pub use local::LocalRecorder;
pub use record::{
    audit_failure, bytes_sent, close_notify_received, close_notify_sent, connect_result,
    connection_closed, connection_opened, connections_in_state, duplicate_closeconn, message_fate,
    queue_sizes, recipients, reply, scheduler_loop_lag, timeout, tls_handshake,
};
pub use series::{DomainSeries, EngineGauges};
pub use values::{
    reply_class_str, tls_policy_str, ConnectResult, QueueKind, RecipientResult, TlsHandshakeResult,
    TlsVersion,
};
