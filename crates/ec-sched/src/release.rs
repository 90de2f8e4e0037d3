//! Releasing a closed connection: the only place counts go down.

use std::time::Instant;

use ec_types::{CloseOutcome, CloseReason, ConnectionHandle, ConnectionState};
use tracing::{debug, error};

use crate::connection::ConnectionEntry;
use crate::counts::CountUnderflow;
use crate::limits::Resource;
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

        let key = connection.lane;
        let domain = &mut self.domains[key.domain.0 as usize];
        let domain_name = domain.record.name.clone();
        let mut underflows: Vec<(&'static str, CountUnderflow)> = Vec::new();
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
        if let Some(host) = self.hosts.get_mut(&connection.host) {
            if let Err(underflow) = host.counts.release() {
                underflows.push(("host", underflow));
            }
            // Hosts come and go with MX lookups, so only those in use stay.
            if host.counts.live() == 0 && host.waiters.is_empty() {
                self.hosts.remove(&connection.host);
            }
        }
        if let Err(underflow) = self.engine.release() {
            underflows.push(("engine", underflow));
        }
        if let Some(metrics) = connection
            .address
            .and_then(|k| self.address_metrics.get_mut(&k))
        {
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
            error!(connection = %connection.id, domain = %domain_name, scope, %underflow, "connection count underflow");
        }

        let closing = connection.closing;
        let reason = closing.map_or(CloseReason::Requested, |c| c.reason);
        let site = closing.map_or(std::panic::Location::caller(), |c| c.site);
        let duration = now.saturating_duration_since(connection.opened_at);
        if let Some(lane) = self.domains[key.domain.0 as usize].binding(key.binding) {
            lane.metrics.connection_closed(reason, outcome, duration);
        }
        debug!(
            connection = %connection.id, domain = %domain_name, binding = %key.binding,
            peer = ?connection.peer, %reason, %outcome, tls = connection.tls.is_some(),
            delivered = connection.messages_delivered, duration_ms = duration.as_millis() as u64,
            site = %site, "connection closed"
        );
        self.reports
            .push_back(Report::ConnectionClosed(ConnectionClosed {
                id: connection.id,
                binding: key.binding,
                domain: domain_name,
                target: connection.host.target.clone(),
                peer: connection.peer,
                reason,
                outcome,
                tls: connection.tls.clone(),
                messages_delivered: connection.messages_delivered,
                duration,
                close_site: site,
            }));
        drop(construct);

        if let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) {
            if !lane.active.is_empty() {
                self.wake.wake(key, lane);
            }
        }
        self.recheck.push(Resource::Engine);
        self.recheck.push(Resource::Binding(key.binding));
        self.recheck.push(Resource::Host(connection.host));
    }
}
