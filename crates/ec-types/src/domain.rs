//! Destination domains: counters and backoff (Momentum's `domain_record`).
//!
//! The queues of a domain live in the scheduler, which owns them; this
//! record holds what every layer may read about the domain.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::address::Domain;
use crate::config::Route;

/// Engine-side state of one destination domain.
#[derive(Debug, Clone)]
pub struct DomainRecord {
    /// The domain.
    pub name: Domain,
    /// Where its mail goes.
    pub route: Route,
    /// Connections to the domain from every binding that are connecting,
    /// open or closing.
    pub live_connections: u32,
    /// Totals since the domain was created.
    pub counters: DomainCounters,
    /// Set after a connection to the domain failed: new connections wait
    /// until then, so a dead domain is not hammered.
    pub backoff_until: Option<Instant>,
    /// Consecutive failed connection attempts, for the backoff's doubling.
    pub consecutive_failures: u32,
}

impl DomainRecord {
    /// A record with no connections and zeroed counters.
    pub fn new(name: Domain, route: Route) -> Self {
        Self {
            name,
            route,
            live_connections: 0,
            counters: DomainCounters::default(),
            backoff_until: None,
            consecutive_failures: 0,
        }
    }
}

/// Totals kept per domain; each only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCounters {
    /// Connections opened (connect started).
    pub connections_opened: u64,
    /// Connections whose socket is gone.
    pub connections_closed: u64,
    /// Messages delivered to every recipient or finished with some failed.
    pub messages_delivered: u64,
    /// Messages put in the delayed queue.
    pub messages_deferred: u64,
    /// Messages failed permanently for at least one recipient.
    pub messages_failed: u64,
    /// Messages whose final dot got no reply.
    pub messages_delivery_unknown: u64,
}
