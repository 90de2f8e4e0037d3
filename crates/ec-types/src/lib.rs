//! The data model of `ec`, an outbound SMTP delivery engine built the way
//! Momentum builds its SMTP client.
//!
//! This crate has no async runtime and does no I/O. It names the things the
//! other crates pass around:
//!
//! | Momentum | here | what it is |
//! |---|---|---|
//! | `domain_record` | [`DomainRecord`] | one destination domain: route, counters, backoff |
//! | binding / `ec_binding_slot` | [`Binding`], [`BindingSlot`] | a named egress identity and its small integer id |
//! | `connection_handle` | [`ConnectionHandle`] | slot plus generation, so a stale handle never reaches a reused slot |
//! | `delivery_construct` | [`DeliveryConstruct`] | a connection's batch and settings snapshot |
//! | `address_metrics` | [`AddressMetrics`] | per remote IP and binding: live connections, failures, timings |
//! | `Event` | [`Event`] | what woke the scheduler |
//!
//! Messages ([`Message`]) share their bytes through [`bytes::Bytes`], so a
//! submission to many domains is stored once. [`Config`] resolves settings
//! over four scopes: global, binding, domain, and binding × domain.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use ec_types::{Address, Config, Domain, Message, MessageId, ReversePath, Submission};
//!
//! let submission = Submission {
//!     tag: 1,
//!     reverse_path: ReversePath::new("sender@example.org")?,
//!     recipients: vec![Address::new("a@example.com")?, Address::new("b@example.net")?],
//!     data: Bytes::from_static(b"Subject: test\r\n\r\nHello.\r\n"),
//! };
//! let mut next = 0;
//! let messages = Message::split(submission, Instant::now(), || { next += 1; MessageId(next) });
//! assert_eq!(messages.len(), 2);
//!
//! let settings = Config::default().resolve("default", &Domain::new("example.com")?);
//! assert_eq!(settings.max_outbound_connections, 32);
//! # Ok::<(), ec_types::AddressError>(())
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod address_metrics;
pub mod binding;
pub mod config;
pub mod connection;
pub mod construct;
pub mod domain;
pub mod event;
pub mod message;
pub mod reply;
pub mod session;

pub use address::{Address, AddressError, Domain, ReversePath};
pub use address_metrics::{AddressKey, AddressMetrics};
pub use binding::{Binding, BindingSlot};
pub use config::{
    validate_ehlo_name, BindingScope, Config, ConfigError, DnsSettings, EffectiveSettings,
    EngineLimits, LongLines, RetryPolicy, Route, Settings, Timeouts, TlsPolicy, TlsSettings,
    TlsVerify,
};
pub use connection::{ConnectionHandle, ConnectionId, ConnectionState, Stage};
pub use construct::DeliveryConstruct;
pub use domain::{DomainCounters, DomainRecord};
pub use event::{CloseOutcome, CloseReason, Event, MessageFate, TimerId, TimerKind};
pub use message::{Message, MessageId, Recipient, RecipientStatus, SharedMessage, Submission};
pub use reply::{
    EnhancedStatusCode, InvalidEnhancedStatusCode, InvalidReplyCode, Reply, ReplyClass, ReplyCode,
};
pub use session::{
    ClosePlan, CloseReport, OpenRequest, SessionCapabilities, SessionCommand, SessionError,
    SessionEvent, SessionFailure, Target, TlsInfo, TransactionOutcome,
};
