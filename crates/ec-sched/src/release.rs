//! Releasing a closed connection: the only place counts go down.

use std::collections::hash_map::Entry;
use std::time::Instant;

use ec_types::{
    AddressKey, CloseOutcome, CloseReason, ConnectionHandle, ConnectionId, ConnectionState, Domain,
};
use tracing::{debug, error};

use crate::connection::{Connection, ConnectionEntry};
use crate::counts::CountUnderflow;
use crate::domain::LaneKey;
use crate::limits::{HostKey, Resource};
use crate::report::{ConnectionClosed, Report};
use crate::scheduler::Scheduler;

impl Scheduler {
    /// Releases a connection whose socket is gone (a `Closed` event) or
    /// whose close deadline passed. Every count goes down by one and the
    /// slot is freed under a new generation. The connection's binding ×
    /// domain and any binding × domains waiting for room are woken.
    pub(crate) fn release(
        &mut self,
        handle: ConnectionHandle,
        outcome: CloseOutcome,
        now: Instant,
    ) {
        let Some(entry) = self.connections.remove(handle) else {
            return;
        };
        let ConnectionEntry {
            mut connection,
            construct,
        } = entry;
        debug_assert!(
            connection.state == ConnectionState::Closing,
            "released a connection that was not closing"
        );
        self.timers
            .cancel_slot(&mut connection.timers.close_deadline);
        self.timers.cancel_slot(&mut connection.timers.idle);
        self.timers.cancel_slot(&mut connection.timers.max_age);
        self.ledger.change_state(Some(connection.state), None);
        self.recycle_batch(construct.batch);

        let Connection {
            id,
            lane: key,
            host,
            address,
            peer,
            tls,
            opened_at,
            closing,
            messages_delivered,
            messages_attempted,
            failure,
            ..
        } = connection;
        // The report takes the construct's copy of the domain name, which
        // is dropped here anyway, rather than a new copy of the record's.
        let domain = construct.domain;
        let (host, host_waiters) = self.release_counts(id, &domain, key, host, address);
        let target = if host_waiters {
            let target = host.target.clone();
            self.recheck.push(Resource::Host(host));
            target
        } else {
            host.target
        };

        let closed = ConnectionClosed {
            id,
            binding: key.binding,
            domain,
            target,
            peer,
            reason: closing.map_or(CloseReason::Requested, |c| c.reason),
            outcome,
            tls,
            messages_delivered,
            messages_attempted,
            duration: now.saturating_duration_since(opened_at),
            failure,
            close_site: closing.map_or(std::panic::Location::caller(), |c| c.site),
        };
        self.record_closed(key, closed);

        if let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) {
            if !lane.active.is_empty() {
                self.wake.wake(key, lane);
            }
        }
        // Only the limits that someone waits for need a look: a binding ×
        // domain that finds a limit full later waits for the next release.
        if !self.engine_waiters.is_empty() {
            self.recheck.push(Resource::Engine);
        }
        if !self.bindings[key.binding.index()].waiters.is_empty() {
            self.recheck.push(Resource::Binding(key.binding));
        }
    }

    /// Counts the connection out of every scope: binding × domain, domain,
    /// binding, host, engine and remote address. A host entry that no
    /// connection uses and no binding × domain waits for is removed.
    /// Returns the host key and whether binding × domains wait for room
    /// under that host's limit.
    fn release_counts(
        &mut self,
        id: ConnectionId,
        domain_name: &Domain,
        key: LaneKey,
        host: HostKey,
        address: Option<AddressKey>,
    ) -> (HostKey, bool) {
        let mut underflows: Vec<(&'static str, CountUnderflow)> = Vec::new();
        let domain = &mut self.domains[key.domain.0 as usize];
        if let Some(lane) = domain.lane_mut(key.binding) {
            if let Err(underflow) = lane.counts.release() {
                underflows.push(("binding x domain", underflow));
            }
        }
        match domain.record.live_connections.checked_sub(1) {
            Some(live) => {
                domain.record.live_connections = live;
                domain.record.counters.connections_closed += 1;
            }
            None => underflows.push((
                "domain",
                CountUnderflow {
                    opened: domain.record.counters.connections_opened,
                    closed: domain.record.counters.connections_closed,
                },
            )),
        }
        if let Err(underflow) = self.bindings[key.binding.index()].counts.release() {
            underflows.push(("binding", underflow));
        }

        // One lookup through the entry, which hands the key back either way.
        let (host, host_waiters) = match self.hosts.entry(host) {
            Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                if let Err(underflow) = entry.counts.release() {
                    underflows.push(("host", underflow));
                }
                let waiters = !entry.waiters.is_empty();
                // Hosts come and go with MX lookups, so only those in use stay.
                if entry.counts.live() == 0 && !waiters {
                    (occupied.remove_entry().0, false)
                } else {
                    (occupied.key().clone(), waiters)
                }
            }
            Entry::Vacant(vacant) => (vacant.into_key(), false),
        };

        if let Err(underflow) = self.engine.release() {
            underflows.push(("engine", underflow));
        }
        if let Some(metrics) = address.and_then(|k| self.address_metrics.get_mut(&k)) {
            match metrics.live_connections.checked_sub(1) {
                Some(live) => {
                    metrics.live_connections = live;
                    metrics.connections_closed += 1;
                }
                None => underflows.push((
                    "address",
                    CountUnderflow {
                        opened: metrics.connections_opened,
                        closed: metrics.connections_closed,
                    },
                )),
            }
        }

        for (scope, underflow) in underflows {
            self.ledger.count_underflows += 1;
            error!(connection = %id, domain = %domain_name, scope, %underflow, "connection count underflow");
        }
        (host, host_waiters)
    }

    /// Records a released connection: its metrics, its log line and its
    /// report.
    fn record_closed(&mut self, key: LaneKey, closed: ConnectionClosed) {
        let binding = &self.bindings[key.binding.index()].name;
        if let Some(lane) = self.domains[key.domain.0 as usize].binding(key.binding) {
            lane.metrics
                .connection_closed(closed.reason, closed.outcome, closed.duration);
        }
        debug!(
            connection = %closed.id, domain = %closed.domain, binding = %binding,
            peer = ?closed.peer, reason = %closed.reason, outcome = %closed.outcome,
            tls = closed.tls.is_some(), delivered = closed.messages_delivered,
            duration_ms = closed.duration.as_millis() as u64, site = %closed.close_site,
            "connection closed"
        );
        self.reports.push_back(Report::ConnectionClosed(closed));
    }
}
