//! Deciding what to send where: batches for idle connections, and new
//! connections for backlogs they do not cover, within every limit.
//!
//! Only binding × domains in the wake queue, or waiting for room under a
//! limit that just gained some, are looked at. So the cost of an event
//! does not depend on how many domains exist.

use std::time::Instant;

use ec_types::{
    CloseReason, ConnectionId, ConnectionState, DeliveryConstruct, Event, OpenRequest, Route,
    SessionCommand, Target,
};
use tracing::debug;

use crate::connection::{Connection, ConnectionEntry};
use crate::domain::LaneKey;
use crate::driver::{EventSender, SessionDriver};
use crate::limits::{HostEntry, HostKey, Resource};
use crate::report::{ConnectionOpened, Report};
use crate::scheduler::Scheduler;
use crate::timers::Timer;
use crate::token::SchedulerToken;

/// The reason no connection was opened.
enum OpenBlocked {
    /// The binding × domain is at `max_outbound_connections`; it is woken
    /// when one of its own connections is released.
    LaneFull,
    /// A shared limit is full; the binding × domain waits for room there.
    Shared(Resource),
}

impl Scheduler {
    /// Looks at every binding × domain that has been woken, and at waiters
    /// of limits that gained room: hands batches to idle connections and
    /// opens connections. Call after each event or timer.
    pub fn run_pending(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        now: Instant,
    ) {
        token.check(self.id);
        loop {
            if let Some(key) = self.wake.pop() {
                self.dispatch_lane(token, driver, key, now);
                continue;
            }
            if let Some(resource) = self.recheck.pop() {
                while self.has_room(&resource) {
                    let Some(key) = self.pop_waiter(&resource) else {
                        break;
                    };
                    self.dispatch_lane(token, driver, key, now);
                }
                continue;
            }
            break;
        }
    }

    fn dispatch_lane(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        key: LaneKey,
        now: Instant,
    ) {
        let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) else {
            return;
        };
        lane.wake_pending = false;
        if self.shutdown.is_some() {
            return;
        }

        let worn_out = self.feed_idle(key, now);

        let domain = &self.domains[key.domain.0 as usize];
        if !domain.in_backoff(now) {
            let needed = domain
                .binding(key.binding)
                .map_or(0, |lane| lane.connections_needed());
            for _ in 0..needed {
                match self.try_open(token, driver, key, now) {
                    Ok(()) => {}
                    Err(OpenBlocked::LaneFull) => break,
                    Err(OpenBlocked::Shared(resource)) => {
                        self.wait_for(key, resource);
                        break;
                    }
                }
            }
        }

        for (handle, reason) in worn_out {
            self.request_close(token, driver, handle, &Event::Direct, reason, now);
        }
    }

    /// Hands batches from the active queue to idle connections, most
    /// recently idle first. Returns the idle connections that may take no
    /// more mail (maximum deliveries or age), to be closed.
    fn feed_idle(
        &mut self,
        key: LaneKey,
        now: Instant,
    ) -> Vec<(ec_types::ConnectionHandle, CloseReason)> {
        let mut worn_out = Vec::new();
        let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) else {
            return worn_out;
        };
        while !lane.active.is_empty() {
            let Some(handle) = lane.idle.pop() else {
                break;
            };
            let Some(entry) = self.connections.get_mut(handle) else {
                continue;
            };
            if !entry.construct.reusable(now) {
                worn_out.push((handle, exhausted_reason(&entry.construct, now)));
                continue;
            }

            let size = batch_limit(&entry.construct, lane.settings.batch_size);
            let batch = lane.active.take_batch(size);
            let count = batch.len() as u64;
            self.ledger.active -= count;
            self.ledger.in_flight += count;
            entry.construct.batch.clone_from(&batch);
            let last = is_last_batch(&entry.construct, batch.len());
            entry.construct.last_batch_sent = last;

            let connection = &mut entry.connection;
            self.timers.cancel_slot(&mut connection.timers.idle);
            self.ledger
                .change_state(Some(connection.state), Some(ConnectionState::Busy));
            connection.state = ConnectionState::Busy;
            if let Some(link) = connection.link.as_mut() {
                link.send(SessionCommand::Deliver {
                    messages: batch,
                    last,
                });
            }
        }
        worn_out
    }

    fn try_open(
        &mut self,
        token: &SchedulerToken,
        driver: &mut dyn SessionDriver,
        key: LaneKey,
        now: Instant,
    ) -> Result<(), OpenBlocked> {
        let limits = &self.config.engine;
        let domain = &self.domains[key.domain.0 as usize];
        let lane = domain.binding(key.binding).ok_or(OpenBlocked::LaneFull)?;
        if !lane.counts.has_room(lane.settings.max_outbound_connections) {
            return Err(OpenBlocked::LaneFull);
        }

        let host = HostKey {
            target: self.choose_target(key),
            binding: key.binding,
        };
        let host_room = self
            .hosts
            .get(&host)
            .is_none_or(|entry| entry.counts.has_room(limits.max_connections_per_host));
        if !host_room {
            return Err(OpenBlocked::Shared(Resource::Host(host)));
        }
        let binding = &self.bindings[key.binding.index()];
        if !binding.counts.has_room(limits.max_connections_per_binding) {
            return Err(OpenBlocked::Shared(Resource::Binding(key.binding)));
        }
        if !self.engine.has_room(limits.max_connections) {
            return Err(OpenBlocked::Shared(Resource::Engine));
        }

        self.open(token, driver, key, host, now);
        Ok(())
    }

    /// Opens one connection: counts it everywhere, then calls the driver's
    /// `open`.
    fn open(
        &mut self,
        token: &SchedulerToken,
        driver: &mut dyn SessionDriver,
        key: LaneKey,
        host: HostKey,
        now: Instant,
    ) {
        self.next_connection += 1;
        let id = ConnectionId(self.next_connection);
        let domain = &mut self.domains[key.domain.0 as usize];
        let name = domain.record.name.clone();
        let lane = domain
            .lane_mut(key.binding)
            .expect("try_open checked the lane");
        let settings = lane.settings.clone();
        let batch_buffer = self.batch_buffers.pop().unwrap_or_default();

        let handle = self.connections.insert_with(|handle| {
            let mut construct = DeliveryConstruct::new(
                handle,
                id,
                key.binding,
                name.clone(),
                settings.clone(),
                now,
            );
            construct.batch = batch_buffer;
            let connection = Connection::new(&construct, key, host.clone(), now);
            ConnectionEntry {
                connection,
                construct,
            }
        });

        lane.counts.open();
        lane.connecting += 1;
        lane.metrics.connection_opened();
        let binding_label = lane.metrics.binding().clone();
        domain.record.live_connections = domain.record.live_connections.saturating_add(1);
        domain.record.counters.connections_opened += 1;
        let binding = &mut self.bindings[key.binding.index()];
        binding.counts.open();
        match self.hosts.get_mut(&host) {
            Some(entry) => entry.counts.open(),
            None => {
                let mut entry = HostEntry::default();
                entry.counts.open();
                self.hosts.insert(host.clone(), entry);
            }
        }
        self.engine.open();
        self.ledger
            .change_state(None, Some(ConnectionState::Connecting));

        let max_age = self
            .timers
            .schedule(now + settings.max_connection_age, Timer::MaxAge(handle));
        let entry = self.connections.get_mut(handle).expect("just inserted");
        entry.connection.timers.max_age = Some(max_age);

        self.reports
            .push_back(Report::ConnectionOpened(ConnectionOpened {
                id,
                handle,
                binding: key.binding,
                domain: name.clone(),
                target: host.target.clone(),
                at: now,
            }));
        debug!(connection = %id, domain = %name, binding = %binding.name, target = %host.target, "opening connection");

        let request = OpenRequest {
            handle,
            id,
            binding: key.binding,
            binding_name: binding.name.clone(),
            source_ip: binding.binding.source_ip,
            domain: name,
            target: host.target,
            settings,
        };
        let events = EventSender::new(self.inbox.clone(), handle, binding_label);
        let link = driver.open(token, request, events);
        entry.connection.link = Some(link);
    }

    /// Where the next connection of a binding × domain goes. For a list of
    /// addresses, the first one in order that has room and no failure
    /// streak, else the first with room, else the first.
    fn choose_target(&self, key: LaneKey) -> Target {
        let domain = &self.domains[key.domain.0 as usize];
        match &domain.record.route {
            Route::Relay { host, port } => Target::Host {
                host: host.clone(),
                port: *port,
            },
            Route::Addresses(addresses) if !addresses.is_empty() => {
                let limit = self.config.engine.max_connections_per_host;
                let has_room = |address: &&std::net::SocketAddr| {
                    let host = HostKey {
                        target: Target::Address(**address),
                        binding: key.binding,
                    };
                    self.hosts
                        .get(&host)
                        .is_none_or(|entry| entry.counts.has_room(limit))
                };
                let healthy = |address: &&std::net::SocketAddr| {
                    let metrics_key = ec_types::AddressKey {
                        ip: address.ip(),
                        binding: key.binding,
                    };
                    self.address_metrics
                        .get(&metrics_key)
                        .is_none_or(|metrics| metrics.consecutive_failures == 0)
                };
                let chosen = addresses
                    .iter()
                    .find(|a| has_room(a) && healthy(a))
                    .or_else(|| addresses.iter().find(has_room))
                    .unwrap_or(&addresses[0]);
                Target::Address(*chosen)
            }
            // MX routing, and the degenerate empty address list: the driver
            // looks up the domain's MX hosts.
            _ => {
                let port = domain
                    .binding(key.binding)
                    .map_or(25, |lane| lane.settings.mx_port);
                Target::Mx {
                    domain: domain.record.name.as_str().to_owned(),
                    port,
                }
            }
        }
    }

    /// Puts a binding × domain in the wait list of the limit that blocks
    /// it. A lane already waiting there keeps its entry, so a flood of
    /// submissions to a blocked lane adds no entries. A lane waiting under
    /// another limit moves, and its old entry goes stale.
    fn wait_for(&mut self, key: LaneKey, resource: Resource) {
        let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) else {
            return;
        };
        if lane.waiting_on.as_ref() == Some(&resource) {
            return;
        }
        lane.wait_ticket += 1;
        lane.waiting_on = Some(resource.clone());
        let ticket = lane.wait_ticket;
        match resource {
            Resource::Engine => self.engine_waiters.push(key, ticket),
            Resource::Binding(slot) => self.bindings[slot.index()].waiters.push(key, ticket),
            Resource::Host(host) => {
                self.hosts
                    .entry(host)
                    .or_default()
                    .waiters
                    .push(key, ticket);
            }
        }
    }

    fn has_room(&self, resource: &Resource) -> bool {
        let limits = &self.config.engine;
        match resource {
            Resource::Engine => self.engine.has_room(limits.max_connections),
            Resource::Binding(slot) => self.bindings[slot.index()]
                .counts
                .has_room(limits.max_connections_per_binding),
            Resource::Host(host) => self
                .hosts
                .get(host)
                .is_none_or(|entry| entry.counts.has_room(limits.max_connections_per_host)),
        }
    }

    fn pop_waiter(&mut self, resource: &Resource) -> Option<LaneKey> {
        let domains = &mut self.domains;
        let mut is_current = |key: LaneKey, ticket: u64| {
            domains[key.domain.0 as usize]
                .lane_mut(key.binding)
                .is_some_and(|lane| lane.waiting_on.is_some() && lane.wait_ticket == ticket)
        };
        let key = match resource {
            Resource::Engine => self.engine_waiters.pop_valid(&mut is_current),
            Resource::Binding(slot) => self.bindings[slot.index()]
                .waiters
                .pop_valid(&mut is_current),
            Resource::Host(host) => {
                let entry = self.hosts.get_mut(host)?;
                let key = entry.waiters.pop_valid(&mut is_current);
                if entry.counts.live() == 0 && entry.waiters.is_empty() {
                    self.hosts.remove(host);
                }
                key
            }
        }?;
        if let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) {
            lane.waiting_on = None;
        }
        Some(key)
    }
}

/// Returns how many messages a connection's next batch may take: the batch
/// size, capped by the deliveries the connection has left, so no batch
/// carries it past `max_deliveries_per_connection`. Only a reusable
/// connection gets a batch, and it has at least one delivery left.
fn batch_limit(construct: &DeliveryConstruct, batch_size: u32) -> usize {
    let size = batch_size.max(1);
    let max = construct.settings.max_deliveries_per_connection;
    let limit = if max == 0 {
        size
    } else {
        size.min(max.saturating_sub(construct.deliveries).max(1))
    };
    limit as usize
}

/// Returns whether a batch of `len` messages brings the connection to
/// `max_deliveries_per_connection`, so that it closes when the batch is
/// done.
fn is_last_batch(construct: &DeliveryConstruct, len: usize) -> bool {
    let max = construct.settings.max_deliveries_per_connection;
    let after = u64::from(construct.deliveries).saturating_add(len as u64);
    max != 0 && after >= u64::from(max)
}

/// Why an idle connection may take no more mail.
pub(crate) fn exhausted_reason(construct: &DeliveryConstruct, now: Instant) -> CloseReason {
    let max = construct.settings.max_deliveries_per_connection;
    if max != 0 && (construct.deliveries >= max || construct.last_batch_sent) {
        CloseReason::MaxDeliveries
    } else {
        debug_assert!(!construct.reusable(now));
        CloseReason::MaxAge
    }
}

#[cfg(test)]
mod tests {
    use ec_types::{BindingSlot, Config, EngineLimits};

    use crate::testing::Harness;

    #[test]
    fn blocked_lane_waits_once() {
        let config = Config {
            engine: EngineLimits {
                max_connections: 1,
                ..EngineLimits::default()
            },
            ..Config::default()
        };
        let mut harness = Harness::new(config);
        harness.submit_to(BindingSlot(0), 0, &["a@one.example"]);
        for tag in 1..=100 {
            harness.submit_to(BindingSlot(0), tag, &[&format!("u{tag}@two.example")]);
        }
        assert_eq!(harness.opened().len(), 1);
        assert_eq!(harness.scheduler().engine_waiters.len(), 1);

        let first = harness.opened()[0];
        harness.connect_failed(first);
        harness.closed(first, ec_types::CloseOutcome::NeverConnected);
        assert_eq!(
            harness.opened().len(),
            2,
            "the waiting lane opens when room frees"
        );
        // It still has a backlog beyond the one connection, so it waits
        // again, with one entry.
        assert_eq!(harness.scheduler().engine_waiters.len(), 1);
        harness.audit().expect("accounting holds");
    }

    #[test]
    fn batch_capped_by_deliveries_left() {
        let mut config = Config::default();
        config.global.batch_size = Some(4);
        config.global.max_deliveries_per_connection = Some(3);
        let mut harness = Harness::new(config);
        for tag in 1..=8 {
            harness.submit_to(BindingSlot(0), tag, &[&format!("u{tag}@one.example")]);
        }
        let first = harness.opened()[0];
        harness.connected(first);
        harness.ready(first);

        let entry = harness.scheduler().connections.get(first).expect("live");
        assert_eq!(entry.construct.batch.len(), 3);
        harness.audit().expect("accounting holds");
    }

    #[test]
    fn batch_buffer_reused_after_release() {
        let mut harness = Harness::new(Config::default());
        harness.submit_to(BindingSlot(0), 1, &["a@one.example"]);
        let first = harness.opened()[0];
        harness.connected(first);
        harness.ready(first);
        harness.deliver(first, ec_types::ReplyCode::OK);
        let _ = harness.close(first, ec_types::CloseReason::Requested);
        assert!(harness.scheduler().batch_buffers.is_empty());
        harness.closed(first, ec_types::CloseOutcome::Clean);
        assert_eq!(harness.scheduler().batch_buffers.len(), 1);

        harness.submit_to(BindingSlot(0), 2, &["b@two.example"]);
        let second = harness.opened()[1];
        assert!(harness.scheduler().batch_buffers.is_empty());
        let entry = harness.scheduler().connections.get(second).expect("live");
        assert!(entry.construct.batch.is_empty());
        assert!(entry.construct.batch.capacity() > 0);
        harness.audit().expect("accounting holds");
    }
}
