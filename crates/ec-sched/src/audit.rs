//! The accounting audit: recounts everything from the connection table and
//! the queues and compares it with the running counts.
//!
//! It is O(connections + messages + domains), so the loop runs it
//! periodically and tests run it after every step. A failed audit is
//! reported and counted, never "fixed": a count that disagrees is a bug to
//! find, and silently correcting it would hide the bug.

use std::collections::HashMap;
use std::fmt;

use ec_types::{
    AddressKey, BindingSlot, ConnectionId, ConnectionState, DeliveryConstruct, Domain, MessageId,
};
use foldhash::HashMap as IdMap;
use thiserror::Error;
use tracing::error;

use crate::connection::Connection;
use crate::domain::LaneKey;
use crate::limits::HostKey;
use crate::scheduler::Scheduler;
use crate::token::SchedulerToken;

/// The violations an audit found, one per broken invariant.
#[derive(Debug, Clone, Error)]
#[error("accounting audit found {} violation(s): {}", .violations.len(), summarize(.violations))]
pub struct AuditError {
    /// Every violation found.
    pub violations: Vec<Violation>,
}

fn summarize(violations: &[Violation]) -> String {
    let mut text = String::new();
    for (index, violation) in violations.iter().take(5).enumerate() {
        if index > 0 {
            text.push_str("; ");
        }
        text.push_str(&violation.to_string());
    }
    if violations.len() > 5 {
        text.push_str(&format!("; and {} more", violations.len() - 5));
    }
    text
}

/// The count a violation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// The whole engine.
    Engine,
    /// One binding across domains.
    Binding(BindingSlot),
    /// One domain across bindings.
    Domain(Domain),
    /// One binding × domain.
    BindingDomain(BindingSlot, Domain),
    /// One remote host from one binding.
    Host(HostKey),
    /// One remote address from one binding.
    Address(AddressKey),
    /// The engine's count of connections in one state.
    State(ConnectionState),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Engine => f.write_str("engine"),
            Self::Binding(slot) => write!(f, "binding {slot}"),
            Self::Domain(domain) => write!(f, "domain {domain}"),
            Self::BindingDomain(slot, domain) => write!(f, "binding {slot} x domain {domain}"),
            Self::Host(host) => write!(f, "host {} from binding {}", host.target, host.binding),
            Self::Address(key) => write!(f, "address {} from binding {}", key.ip, key.binding),
            Self::State(state) => write!(f, "{} connections", state.as_str()),
        }
    }
}

/// The place a message was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// An active queue.
    Active(BindingSlot, Domain),
    /// A delayed queue.
    Delayed(BindingSlot, Domain),
    /// A connection's batch.
    InFlight(ConnectionId),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Active(slot, domain) => write!(f, "active queue of {slot} x {domain}"),
            Self::Delayed(slot, domain) => write!(f, "delayed queue of {slot} x {domain}"),
            Self::InFlight(id) => write!(f, "batch of connection {id}"),
        }
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Violation {
    /// A live-connection count differs from the connections that are
    /// connecting, open or closing.
    #[error("{scope}: live count is {recorded}, but {actual} connections are live")]
    LiveCount {
        /// The count.
        scope: Scope,
        /// The value of the count.
        recorded: u64,
        /// The number of live connections in the connection table.
        actual: u64,
    },
    /// Opened minus closed differs from the live count, or is negative.
    #[error("{scope}: {opened} opened - {closed} closed does not equal {live} live")]
    OpenedClosed {
        /// The count.
        scope: Scope,
        /// Connections opened.
        opened: u64,
        /// Connections closed.
        closed: u64,
        /// Connections live.
        live: u64,
    },
    /// More connections than the limit allows.
    #[error("{scope}: {live} live connections exceed the limit of {limit}")]
    LimitExceeded {
        /// The limited scope.
        scope: Scope,
        /// Connections live.
        live: u64,
        /// The limit.
        limit: u64,
    },
    /// A message is in two places at once.
    #[error("message {message} is in the {first} and in the {second}")]
    MessageInTwoPlaces {
        /// The message.
        message: MessageId,
        /// One place.
        first: Place,
        /// Another place.
        second: Place,
    },
    /// A message is somewhere it cannot be: in another domain's queue, or
    /// queued with every recipient final.
    #[error("message {message} in the {place}: {problem}")]
    Misplaced {
        /// The message.
        message: MessageId,
        /// Its place.
        place: Place,
        /// The problem.
        problem: &'static str,
    },
    /// A running message total differs from a recount.
    #[error("{total}: the running total is {recorded}, a recount finds {actual}")]
    MessageTotal {
        /// Which total.
        total: &'static str,
        /// The running total.
        recorded: u64,
        /// The recount.
        actual: u64,
    },
    /// The scheduler's internal bookkeeping disagrees with itself (a wait
    /// or idle list, a timer, a session link).
    #[error("{0}")]
    Bookkeeping(String),
}

/// Connections recounted per scope.
///
/// The maps keyed by the engine's own ids use foldhash, which is faster
/// than std's SipHash on small keys. Host and address keys come
/// from submitted domain names and their DNS answers, so those maps keep
/// SipHash, whose random key a sender cannot aim collisions at.
#[derive(Default)]
struct Recount {
    lanes: IdMap<LaneKey, u64>,
    lane_connecting: IdMap<LaneKey, u32>,
    lane_idle: IdMap<LaneKey, u32>,
    domains: IdMap<u32, u64>,
    bindings: IdMap<BindingSlot, u64>,
    hosts: HashMap<HostKey, u64>,
    addresses: HashMap<AddressKey, u64>,
    states: IdMap<ConnectionState, u64>,
    engine: u64,
}

impl Scheduler {
    /// Checks every accounting invariant.
    ///
    /// - For each binding × domain, domain, host, address, binding and the
    ///   engine, the live count equals the connections that are connecting,
    ///   open or closing. It also equals opened minus closed, and it is
    ///   within its limit.
    /// - Every message that entered is in exactly one place (an active
    ///   queue, a delayed queue, one connection's batch) or has left
    ///   (delivered, failed, unsent).
    /// - Every timer, idle list and session link agrees with the connection
    ///   it belongs to, and delayed mail always has a retry timer.
    /// - Every MAIL or RCPT rejection a connection keeps is for a message
    ///   in the batch of a busy connection.
    ///
    /// # Errors
    ///
    /// Returns every violation found.
    pub fn audit(&self, token: &SchedulerToken) -> Result<(), AuditError> {
        token.check(self.id);
        let mut violations = Vec::new();
        let recount = self.recount_connections(&mut violations);
        self.check_lanes_and_domains(&recount, &mut violations);
        self.check_shared_scopes(&recount, &mut violations);
        self.check_messages(&mut violations);
        self.check_timers(&mut violations);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(AuditError { violations })
        }
    }

    /// Runs the audit, logs and counts a failure.
    pub(crate) fn run_audit(&mut self, token: &SchedulerToken) -> Result<(), AuditError> {
        self.ledger.audits += 1;
        let result = self.audit(token);
        if let Err(failure) = &result {
            self.ledger.audit_failures += 1;
            ec_metrics::audit_failure();
            error!(%failure, "scheduler accounting audit failed");
        }
        result
    }

    fn recount_connections(&self, violations: &mut Vec<Violation>) -> Recount {
        let mut recount = Recount::default();
        for (handle, entry) in self.connections.iter() {
            let connection = &entry.connection;
            let key = connection.lane;
            *recount.lanes.entry(key).or_default() += 1;
            *recount.domains.entry(key.domain.0).or_default() += 1;
            *recount.bindings.entry(key.binding).or_default() += 1;
            *recount.hosts.entry(connection.host.clone()).or_default() += 1;
            if let Some(address) = connection.address {
                *recount.addresses.entry(address).or_default() += 1;
            }
            *recount.states.entry(connection.state).or_default() += 1;
            recount.engine += 1;
            match connection.state {
                ConnectionState::Connecting => {
                    *recount.lane_connecting.entry(key).or_default() += 1
                }
                ConnectionState::Idle => *recount.lane_idle.entry(key).or_default() += 1,
                _ => {}
            }

            if connection.handle != handle || entry.construct.handle != handle {
                violations.push(Violation::Bookkeeping(format!(
                    "connection {} in slot {handle} records handle {}",
                    connection.id, connection.handle
                )));
            }
            if connection.state != ConnectionState::Closing && connection.link.is_none() {
                violations.push(Violation::Bookkeeping(format!(
                    "connection {} is {} but has no session link",
                    connection.id,
                    connection.state.as_str()
                )));
            }
            if (connection.state == ConnectionState::Closing) != connection.closing.is_some() {
                violations.push(Violation::Bookkeeping(format!(
                    "connection {} is {} and its close record is {:?}",
                    connection.id,
                    connection.state.as_str(),
                    connection.closing
                )));
            }
            if connection.state != ConnectionState::Busy && !entry.construct.batch.is_empty() {
                violations.push(Violation::Bookkeeping(format!(
                    "connection {} is {} with {} messages in its batch",
                    connection.id,
                    connection.state.as_str(),
                    entry.construct.batch.len()
                )));
            }
            check_kept_rejections(connection, &entry.construct, violations);
        }
        recount
    }

    fn check_lanes_and_domains(&self, recount: &Recount, violations: &mut Vec<Violation>) {
        for domain in &self.domains {
            let name = &domain.record.name;
            let actual = recount.domains.get(&domain.index.0).copied().unwrap_or(0);
            let counters = &domain.record.counters;
            check_counts(
                violations,
                Scope::Domain(name.clone()),
                u64::from(domain.record.live_connections),
                counters.connections_opened,
                counters.connections_closed,
                actual,
                None,
            );

            for (slot, lane) in domain.bindings() {
                let key = domain.lane_key(slot);
                let scope = Scope::BindingDomain(slot, name.clone());
                check_counts(
                    violations,
                    scope.clone(),
                    u64::from(lane.counts.live()),
                    lane.counts.opened(),
                    lane.counts.closed(),
                    recount.lanes.get(&key).copied().unwrap_or(0),
                    Some(u64::from(lane.settings.max_outbound_connections)),
                );

                let connecting = recount.lane_connecting.get(&key).copied().unwrap_or(0);
                if lane.connecting != connecting {
                    violations.push(Violation::Bookkeeping(format!(
                        "{scope}: {} connections counted as connecting, {connecting} are",
                        lane.connecting
                    )));
                }
                let idle = recount.lane_idle.get(&key).copied().unwrap_or(0);
                let listed_idle = lane.idle.as_slice().iter().all(|handle| {
                    self.connections.get(*handle).is_some_and(|entry| {
                        entry.connection.state == ConnectionState::Idle
                            && entry.connection.lane == key
                    })
                });
                if !listed_idle || lane.idle.len() != idle as usize {
                    violations.push(Violation::Bookkeeping(format!(
                        "{scope}: idle list has {} entries for {idle} idle connections",
                        lane.idle.len()
                    )));
                }
            }
        }
    }

    fn check_shared_scopes(&self, recount: &Recount, violations: &mut Vec<Violation>) {
        let limits = &self.config.engine;
        for binding in &self.bindings {
            let counts = binding.counts;
            check_counts(
                violations,
                Scope::Binding(binding.slot),
                u64::from(counts.live()),
                counts.opened(),
                counts.closed(),
                recount.bindings.get(&binding.slot).copied().unwrap_or(0),
                Some(u64::from(limits.max_connections_per_binding)),
            );
        }

        for (key, host) in &self.hosts {
            check_counts(
                violations,
                Scope::Host(key.clone()),
                u64::from(host.counts.live()),
                host.counts.opened(),
                host.counts.closed(),
                recount.hosts.get(key).copied().unwrap_or(0),
                Some(u64::from(limits.max_connections_per_host)),
            );
        }
        for (key, actual) in &recount.hosts {
            if !self.hosts.contains_key(key) {
                violations.push(Violation::LiveCount {
                    scope: Scope::Host(key.clone()),
                    recorded: 0,
                    actual: *actual,
                });
            }
        }

        for (key, metrics) in &self.address_metrics {
            check_counts(
                violations,
                Scope::Address(*key),
                u64::from(metrics.live_connections),
                metrics.connections_opened,
                metrics.connections_closed,
                recount.addresses.get(key).copied().unwrap_or(0),
                None,
            );
        }

        check_counts(
            violations,
            Scope::Engine,
            u64::from(self.engine.live()),
            self.engine.opened(),
            self.engine.closed(),
            recount.engine,
            Some(u64::from(limits.max_connections)),
        );

        let ledger = &self.ledger;
        let states = [
            (ConnectionState::Connecting, ledger.connecting),
            (ConnectionState::Idle, ledger.idle),
            (ConnectionState::Busy, ledger.busy),
            (ConnectionState::Closing, ledger.closing),
        ];
        for (state, recorded) in states {
            let actual = recount.states.get(&state).copied().unwrap_or(0);
            if u64::from(recorded) != actual {
                violations.push(Violation::LiveCount {
                    scope: Scope::State(state),
                    recorded: u64::from(recorded),
                    actual,
                });
            }
        }
    }

    fn check_messages(&self, violations: &mut Vec<Violation>) {
        let mut places: IdMap<MessageId, Place> = IdMap::default();
        let mut place = |id: MessageId, at: Place, violations: &mut Vec<Violation>| {
            if let Some(first) = places.get(&id) {
                violations.push(Violation::MessageInTwoPlaces {
                    message: id,
                    first: first.clone(),
                    second: at,
                });
            } else {
                places.insert(id, at);
            }
        };

        let (mut active, mut delayed, mut in_flight) = (0u64, 0u64, 0u64);
        for domain in &self.domains {
            let name = &domain.record.name;
            for (slot, lane) in domain.bindings() {
                let queued = lane
                    .active
                    .iter()
                    .map(|m| (m, Place::Active(slot, name.clone())))
                    .chain(
                        lane.delayed
                            .iter()
                            .map(|(_, m)| (m, Place::Delayed(slot, name.clone()))),
                    );
                for (message, at) in queued {
                    if matches!(at, Place::Active(..)) {
                        active += 1;
                    } else {
                        delayed += 1;
                    }
                    if &message.domain != name {
                        violations.push(Violation::Misplaced {
                            message: message.id,
                            place: at.clone(),
                            problem: "the message is for another domain",
                        });
                    }
                    if message.is_done() {
                        violations.push(Violation::Misplaced {
                            message: message.id,
                            place: at.clone(),
                            problem: "every recipient is final, so it should have left",
                        });
                    }
                    place(message.id, at, violations);
                }
            }
        }
        for (_, entry) in self.connections.iter() {
            for message in &entry.construct.batch {
                in_flight += 1;
                place(message.id, Place::InFlight(entry.connection.id), violations);
            }
        }

        let ledger = &self.ledger;
        let totals = [
            ("messages in active queues", ledger.active, active),
            ("messages in delayed queues", ledger.delayed, delayed),
            ("messages in flight", ledger.in_flight, in_flight),
        ];
        for (total, recorded, actual) in totals {
            if recorded != actual {
                violations.push(Violation::MessageTotal {
                    total,
                    recorded,
                    actual,
                });
            }
        }
        let found = active + delayed + in_flight;
        match ledger.in_engine() {
            Some(in_engine) if in_engine == found => {}
            in_engine => violations.push(Violation::MessageTotal {
                total: "messages entered minus delivered, failed and unsent",
                recorded: in_engine.unwrap_or(0),
                actual: found,
            }),
        }
    }

    fn check_timers(&self, violations: &mut Vec<Violation>) {
        for (_, entry) in self.connections.iter() {
            let connection = &entry.connection;
            let timers = &connection.timers;
            for (name, key) in [
                ("idle", timers.idle),
                ("max age", timers.max_age),
                ("close deadline", timers.close_deadline),
            ] {
                if key.is_some_and(|key| !self.timers.contains(key)) {
                    violations.push(Violation::Bookkeeping(format!(
                        "connection {} has a {name} timer that is not scheduled",
                        connection.id
                    )));
                }
            }
            let closing = connection.state == ConnectionState::Closing;
            if closing != timers.close_deadline.is_some() {
                violations.push(Violation::Bookkeeping(format!(
                    "connection {} is {} and has{} a close deadline",
                    connection.id,
                    connection.state.as_str(),
                    if timers.close_deadline.is_some() {
                        ""
                    } else {
                        " no"
                    }
                )));
            }
            if connection.state == ConnectionState::Idle
                && timers.idle.is_none()
                && self.shutdown.is_none()
            {
                violations.push(Violation::Bookkeeping(format!(
                    "idle connection {} has no idle timer",
                    connection.id
                )));
            }
        }

        for (_, timer) in self.timers.iter() {
            if let Some(handle) = timer.connection() {
                if self.connections.get(handle).is_none() {
                    violations.push(Violation::Bookkeeping(format!(
                        "a {timer:?} timer outlived its connection"
                    )));
                }
            }
        }

        for domain in &self.domains {
            for (slot, lane) in domain.bindings() {
                let Some(due) = lane.delayed.next_due() else {
                    continue;
                };
                let armed = lane
                    .retry_timer
                    .is_some_and(|key| key.at <= due && self.timers.contains(key));
                if !armed {
                    violations.push(Violation::Bookkeeping(format!(
                        "binding {slot} x domain {}: delayed mail has no retry timer at or before its due time",
                        domain.record.name
                    )));
                }
            }
        }
    }
}

/// Checks that the MAIL and RCPT rejections a connection keeps belong to a
/// message in its batch. A close or a transaction outcome consumes them, so
/// only a busy connection may keep any.
fn check_kept_rejections(
    connection: &Connection,
    construct: &DeliveryConstruct,
    violations: &mut Vec<Violation>,
) {
    let mail = construct.mail_rejected.iter().map(|(message, _)| *message);
    let rcpt = construct.rejected.iter().map(|(message, ..)| *message);
    for message in mail.chain(rcpt) {
        let in_batch = connection.state == ConnectionState::Busy
            && construct.batch.iter().any(|m| m.id == message);
        if !in_batch {
            violations.push(Violation::Bookkeeping(format!(
                "connection {} is {} and keeps a rejection for message {message}, which is not in its batch",
                connection.id,
                connection.state.as_str(),
            )));
        }
    }
}

fn check_counts(
    violations: &mut Vec<Violation>,
    scope: Scope,
    live: u64,
    opened: u64,
    closed: u64,
    actual: u64,
    limit: Option<u64>,
) {
    if live != actual {
        violations.push(Violation::LiveCount {
            scope: scope.clone(),
            recorded: live,
            actual,
        });
    }
    if opened.checked_sub(closed) != Some(live) {
        violations.push(Violation::OpenedClosed {
            scope: scope.clone(),
            opened,
            closed,
            live,
        });
    }
    if let Some(limit) = limit {
        if actual > limit {
            violations.push(Violation::LimitExceeded {
                scope,
                live: actual,
                limit,
            });
        }
    }
}
