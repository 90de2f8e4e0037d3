//! Handling of session events and timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ec_types::{
    AddressKey, CloseOutcome, CloseReason, CloseReport, ConnectionHandle, ConnectionState, Event,
    MessageId, Reply, SessionCapabilities, SessionEvent, SharedMessage, TlsInfo,
    TransactionOutcome,
};
use tracing::{debug, error, trace, warn};

use crate::close::close_connection;
use crate::dispatch::exhausted_reason;
use crate::driver::SessionDriver;
use crate::fate::{Attempt, FateContext, LaneRef};
use crate::metrics::LaneMetrics;
use crate::scheduler::Scheduler;
use crate::timers::{Timer, TimerKey};
use crate::token::SchedulerToken;

impl Scheduler {
    /// Handles one event from a session. Events for a stale handle, and
    /// events after the connection began closing (other than `Closed`), are
    /// counted and dropped.
    pub fn handle_session_event(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        event: SessionEvent,
        now: Instant,
    ) {
        token.check(self.id);
        let Some(entry) = self.connections.get(handle) else {
            self.ledger.stale_events += 1;
            trace!(%handle, ?event, "event for a connection that is gone");
            return;
        };
        let closing = entry.connection.closing.is_some();
        if closing && !matches!(event, SessionEvent::Closed(_)) {
            self.ledger.stale_events += 1;
            trace!(%handle, ?event, "event for a closing connection");
            return;
        }

        match event {
            SessionEvent::Connected { local, peer } => self.on_connected(handle, local, peer, now),
            SessionEvent::Ready { tls, capabilities } => {
                self.on_ready(token, driver, handle, tls, capabilities, now);
            }
            SessionEvent::MailRejected { message, reply } => {
                self.on_mail_rejected(handle, message, reply);
            }
            SessionEvent::RecipientRejected {
                message,
                index,
                reply,
            } => self.on_recipient_rejected(handle, message, index, reply),
            SessionEvent::Transaction(outcome) => self.on_transaction(handle, outcome, now),
            SessionEvent::BatchDone => self.on_batch_done(token, driver, handle, now),
            SessionEvent::Failed(failure) => {
                if let Some(metrics) = self.lane_metrics(handle) {
                    metrics.session_failed(&failure.error);
                }
                let reason = failure.error.close_reason();
                let event = Event::Session {
                    handle,
                    event: SessionEvent::Failed(failure),
                };
                self.request_close(token, driver, handle, &event, reason, now);
            }
            SessionEvent::Closed(report) => self.on_closed(token, driver, handle, report, now),
            other => {
                self.protocol_violation(handle, "unknown session event");
                debug!(%handle, event = ?other, "ignoring a session event this scheduler does not know");
            }
        }
    }

    fn on_connected(
        &mut self,
        handle: ConnectionHandle,
        local: SocketAddr,
        peer: SocketAddr,
        now: Instant,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        let connection = &mut entry.connection;
        if connection.state != ConnectionState::Connecting || connection.connected_at.is_some() {
            self.protocol_violation(handle, "Connected after the connect completed");
            return;
        }
        connection.local = Some(local);
        connection.peer = Some(peer);
        connection.connected_at = Some(now);
        let lane = connection.lane;
        if let Some(lane) = self.domains[lane.domain.0 as usize].binding(lane.binding) {
            lane.metrics.connected();
        }

        let key = AddressKey {
            ip: peer.ip(),
            binding: connection.lane.binding,
        };
        let metrics = self.address_metrics.entry(key).or_default();
        metrics.live_connections = metrics.live_connections.saturating_add(1);
        metrics.connections_opened += 1;
        connection.address = Some(key);
    }

    fn on_ready(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        tls: Option<TlsInfo>,
        capabilities: SessionCapabilities,
        now: Instant,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        let connection = &mut entry.connection;
        if connection.state != ConnectionState::Connecting {
            self.protocol_violation(handle, "Ready when not connecting");
            return;
        }
        connection.tls = tls;
        connection.capabilities = Some(capabilities);
        connection.ready_at = Some(now);
        self.ledger.change_state(
            Some(ConnectionState::Connecting),
            Some(ConnectionState::Idle),
        );
        connection.state = ConnectionState::Idle;
        if let Some(metrics) = connection
            .address
            .and_then(|k| self.address_metrics.get_mut(&k))
        {
            metrics.record_connect_time(now.saturating_duration_since(connection.opened_at));
        }

        let key = connection.lane;
        let domain = &mut self.domains[key.domain.0 as usize];
        if let Some(lane) = domain.lane_mut(key.binding) {
            lane.connecting = lane.connecting.saturating_sub(1);
        }
        // The domain accepts connections again, so its backoff is over.
        domain.record.consecutive_failures = 0;
        if domain.record.backoff_until.take().is_some() {
            self.timers.cancel_slot(&mut domain.backoff_timer);
            let slots: Vec<_> = domain.bindings().map(|(slot, _)| slot).collect();
            for slot in slots {
                let lane_key = domain.lane_key(slot);
                if let Some(lane) = domain.lane_mut(slot).filter(|l| !l.active.is_empty()) {
                    self.wake.wake(lane_key, lane);
                }
            }
        }

        self.after_idle(token, driver, handle, now);
    }

    /// Decides what happens to a connection that just became idle: closed
    /// on shutdown or when worn out, otherwise offered to its binding ×
    /// domain with an idle timer running.
    fn after_idle(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        now: Instant,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        if self.shutdown.is_some() {
            self.request_close(
                token,
                driver,
                handle,
                &Event::Direct,
                CloseReason::Shutdown,
                now,
            );
            return;
        }
        if !entry.construct.reusable(now) {
            let reason = exhausted_reason(&entry.construct, now);
            self.request_close(token, driver, handle, &Event::Direct, reason, now);
            return;
        }

        let idle_timeout = entry.construct.settings.idle_timeout;
        let connection = &mut entry.connection;
        self.timers.cancel_slot(&mut connection.timers.idle);
        connection.timers.idle = Some(
            self.timers
                .schedule(now + idle_timeout, Timer::IdleTimeout(handle)),
        );
        let key = connection.lane;
        if let Some(lane) = self.domains[key.domain.0 as usize].lane_mut(key.binding) {
            lane.idle.push(handle);
            self.wake.wake(key, lane);
        }
    }

    /// Keeps a MAIL rejection of the transaction under way until the
    /// transaction ends, so that a close in the middle of it still gives
    /// every recipient of the transaction the reply's fate.
    fn on_mail_rejected(&mut self, handle: ConnectionHandle, message: MessageId, reply: Reply) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        let known = entry.construct.batch.iter().any(|m| m.id == message);
        if entry.connection.state != ConnectionState::Busy || !known {
            self.protocol_violation(handle, "MailRejected for no message in transaction");
            return;
        }
        if !(reply.is_transient() || reply.is_permanent()) {
            self.protocol_violation(handle, "MailRejected with a reply that is not 4xx or 5xx");
            return;
        }
        entry.construct.mail_rejected = Some((message, reply));
    }

    /// Keeps a RCPT rejection of the transaction under way until the
    /// transaction ends, so that a close in the middle of it still fails
    /// the recipient with its 5xx, or defers it with its 4xx.
    fn on_recipient_rejected(
        &mut self,
        handle: ConnectionHandle,
        message: MessageId,
        index: usize,
        reply: Reply,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        let known = entry
            .construct
            .batch
            .iter()
            .any(|m| m.id == message && index < m.recipients.len());
        if entry.connection.state != ConnectionState::Busy || !known {
            self.protocol_violation(handle, "RecipientRejected for no recipient in transaction");
            return;
        }
        if !(reply.is_transient() || reply.is_permanent()) {
            self.protocol_violation(
                handle,
                "RecipientRejected with a reply that is not 4xx or 5xx",
            );
            return;
        }
        entry.construct.rejected.push((message, index, reply));
    }

    fn on_transaction(
        &mut self,
        handle: ConnectionHandle,
        outcome: TransactionOutcome,
        now: Instant,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        if entry.connection.state != ConnectionState::Busy {
            self.protocol_violation(handle, "Transaction on a connection that is not busy");
            return;
        }
        let Some(position) = entry
            .construct
            .batch
            .iter()
            .position(|m| m.id == outcome.message)
        else {
            self.protocol_violation(handle, "Transaction for a message not in the batch");
            return;
        };

        let mut message = entry.construct.batch.remove(position);
        // The outcome carries every recipient's status, rejections included.
        entry.construct.rejected.clear();
        entry.construct.mail_rejected = None;
        self.ledger.in_flight -= 1;
        self.ledger.transactions += 1;
        entry.construct.deliveries += 1;
        let connection = &mut entry.connection;
        if let Some(metrics) = connection
            .address
            .and_then(|k| self.address_metrics.get_mut(&k))
        {
            metrics.record_delivery_time(outcome.elapsed);
        }

        let key = connection.lane;
        let attempt = Attempt {
            connection: Some(connection.id),
            peer: connection.peer,
            tls: connection.tls.clone(),
        };
        let mut context = FateContext {
            timers: &mut self.timers,
            ledger: &mut self.ledger,
            reports: &mut self.reports,
            wake: &mut self.wake,
        };
        let Some((record, lane)) = self.domains[key.domain.0 as usize].split_mut(key.binding)
        else {
            return;
        };
        let owned = Arc::make_mut(&mut message);
        owned.attempts = owned.attempts.saturating_add(1);
        let missing = context.apply_statuses(
            owned,
            outcome.recipients,
            (key.binding, &lane.metrics),
            &attempt,
            now,
        );
        let fate = context.settle(message, LaneRef { key, record, lane }, &attempt, now);
        connection.messages_attempted += 1;
        if fate == ec_types::MessageFate::Delivered {
            connection.messages_delivered += 1;
        }
        if missing > 0 {
            self.protocol_violation(handle, "Transaction without a status for every recipient");
        }
    }

    fn on_batch_done(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        now: Instant,
    ) {
        let Some(entry) = self.connections.get_mut(handle) else {
            return;
        };
        if entry.connection.state != ConnectionState::Busy {
            self.protocol_violation(handle, "BatchDone on a connection that is not busy");
            return;
        }

        let left: Vec<SharedMessage> = entry.construct.batch.drain(..).collect();
        // Rejections of a transaction that got no outcome (a protocol
        // violation below) would otherwise apply to a later transaction.
        entry.construct.rejected.clear();
        entry.construct.mail_rejected = None;
        let connection = &mut entry.connection;
        self.ledger
            .change_state(Some(ConnectionState::Busy), Some(ConnectionState::Idle));
        connection.state = ConnectionState::Idle;
        if !left.is_empty() {
            // The session skipped these: no transaction started for them.
            self.ledger.in_flight -= left.len() as u64;
            let key = connection.lane;
            let attempt = Attempt {
                connection: Some(connection.id),
                peer: connection.peer,
                tls: connection.tls.clone(),
            };
            if let Some((record, lane)) = self.domains[key.domain.0 as usize].split_mut(key.binding)
            {
                let mut context = FateContext {
                    timers: &mut self.timers,
                    ledger: &mut self.ledger,
                    reports: &mut self.reports,
                    wake: &mut self.wake,
                };
                let _ = context.requeue(left, LaneRef { key, record, lane }, &attempt, now);
            }
            self.protocol_violation(handle, "BatchDone with messages that got no transaction");
        }

        self.after_idle(token, driver, handle, now);
    }

    fn on_closed(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        report: CloseReport,
        now: Instant,
    ) {
        crate::metrics::close_report(&report);
        let closing = self
            .connection(handle)
            .is_some_and(|connection| connection.closing.is_some());
        if !closing {
            // The socket went away without a close from us (the peer
            // closed it, or the session gave up): close first, so the batch
            // gets its fates, then release.
            let event = Event::Session {
                handle,
                event: SessionEvent::Closed(report),
            };
            self.request_close(token, driver, handle, &event, CloseReason::PeerClosed, now);
        }
        self.release(handle, report.outcome, now);
    }

    /// Asks the driver to close a connection. If the driver's close did not
    /// reach [`begin_close`](crate::begin_close), the engine's own
    /// mechanics close it, so no connection is left half-closed.
    pub(crate) fn request_close(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        handle: ConnectionHandle,
        event: &Event,
        reason: CloseReason,
        now: Instant,
    ) {
        driver.close(token, self, handle, event, reason, now);
        let still_open = self
            .connection(handle)
            .is_some_and(|connection| connection.closing.is_none());
        if still_open {
            self.ledger.protocol_violations += 1;
            error!(%handle, %reason, "the session driver's close did not call begin_close; closing with the engine's mechanics");
            let _ = close_connection(token, self, handle, event, reason, now);
        }
    }

    /// Fires every timer due at `now`.
    pub fn fire_due_timers(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        now: Instant,
    ) {
        token.check(self.id);
        while let Some((key, timer)) = self.timers.pop_due(now) {
            let lag = now.saturating_duration_since(key.at);
            self.timer_lag.last = lag;
            self.timer_lag.max = self.timer_lag.max.max(lag);
            ec_metrics::scheduler_loop_lag(lag);
            self.fire(token, driver, key, timer, now);
        }
    }

    fn fire(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        key: TimerKey,
        timer: Timer,
        now: Instant,
    ) {
        if let Some(handle) = timer.connection() {
            if !self.take_connection_timer(handle, timer, key) {
                return;
            }
        }
        match timer {
            Timer::IdleTimeout(handle) => {
                let event = timer.event(key.id);
                self.request_close(token, driver, handle, &event, CloseReason::IdleTimeout, now);
            }
            Timer::MaxAge(handle) => {
                // A busy or connecting connection is closed when it next
                // becomes idle, because `reusable` is then false.
                let idle = self
                    .connection(handle)
                    .is_some_and(|c| c.state == ConnectionState::Idle);
                if idle {
                    let event = timer.event(key.id);
                    self.request_close(token, driver, handle, &event, CloseReason::MaxAge, now);
                }
            }
            Timer::CloseDeadline(handle) => {
                self.ledger.close_deadlines += 1;
                warn!(%handle, "connection passed its close deadline without reporting its socket closed; releasing it");
                self.release(handle, CloseOutcome::Aborted, now);
            }
            Timer::Retry(lane_key) => {
                let Some(lane) =
                    self.domains[lane_key.domain.0 as usize].lane_mut(lane_key.binding)
                else {
                    return;
                };
                if lane.retry_timer != Some(key) {
                    return;
                }
                lane.retry_timer = None;
                let mut context = FateContext {
                    timers: &mut self.timers,
                    ledger: &mut self.ledger,
                    reports: &mut self.reports,
                    wake: &mut self.wake,
                };
                context.promote_due(lane_key, lane, now);
            }
            Timer::Backoff(index) => {
                let domain = &mut self.domains[index.0 as usize];
                if domain.backoff_timer != Some(key) {
                    return;
                }
                domain.backoff_timer = None;
                let slots: Vec<_> = domain.bindings().map(|(slot, _)| slot).collect();
                for slot in slots {
                    let lane_key = domain.lane_key(slot);
                    if let Some(lane) = domain.lane_mut(slot).filter(|l| !l.active.is_empty()) {
                        self.wake.wake(lane_key, lane);
                    }
                }
            }
            Timer::ShutdownGrace => self.close_busy_for_shutdown(token, driver, now),
            Timer::Audit => {
                // A failure is logged and counted inside; the loop goes on.
                let _ = self.run_audit(token);
                if let Some(interval) = self.options.audit_interval {
                    self.timers.schedule(now + interval, Timer::Audit);
                }
            }
        }
    }

    /// Clears the connection's record of a timer that fired. Returns false
    /// when the timer no longer belongs to a live connection.
    fn take_connection_timer(
        &mut self,
        handle: ConnectionHandle,
        timer: Timer,
        key: TimerKey,
    ) -> bool {
        let Some(entry) = self.connections.get_mut(handle) else {
            return false;
        };
        let timers = &mut entry.connection.timers;
        let slot = match timer {
            Timer::IdleTimeout(_) => &mut timers.idle,
            Timer::MaxAge(_) => &mut timers.max_age,
            Timer::CloseDeadline(_) => &mut timers.close_deadline,
            _ => return true,
        };
        if *slot != Some(key) {
            return false;
        }
        *slot = None;
        true
    }

    /// Returns the metric series of a live connection's binding × domain.
    fn lane_metrics(&self, handle: ConnectionHandle) -> Option<&LaneMetrics> {
        let key = self.connections.get(handle)?.connection.lane;
        let lane = self.domains[key.domain.0 as usize].binding(key.binding)?;
        Some(&lane.metrics)
    }

    pub(crate) fn protocol_violation(&mut self, handle: ConnectionHandle, what: &'static str) {
        self.ledger.protocol_violations += 1;
        warn!(%handle, violation = what, "session broke the scheduler contract");
    }
}
