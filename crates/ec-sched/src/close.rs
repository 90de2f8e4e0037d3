//! The close mechanics that `closeconn` runs: one function, [`begin_close`],
//! that gives every message of the batch its fate, cancels the connection's
//! timers and starts the transport shutdown.
//!
//! Counts are not released here. A closing connection still counts against
//! every limit until its socket is gone (the `Closed` event) or its close
//! deadline passes, because the server counts it until then.

use std::panic::Location;
use std::time::{Duration, Instant};

use ec_types::{
    AddressMetrics, ClosePlan, CloseReason, ConnectionHandle, ConnectionState, DeliveryConstruct,
    Event, MessageFate, MessageId, Reply, SessionCommand, SessionEvent, SessionFailure,
    SharedMessage,
};
use tracing::debug;

use crate::connection::{Closing, Connection};
use crate::domain::DomainEntry;
use crate::fate::{Attempt, FateContext};
use crate::limits::BindingEntry;
use crate::scheduler::Scheduler;
use crate::settle::{settle_batch, Settling};
use crate::timers::Timer;
use crate::token::{SchedulerId, SchedulerToken};

/// Split mutable borrows of what `closeconn` works on, as Momentum's
/// `ec_smtp_closeconn(dc, e, conn, connh, domain, binding_slot, am, now)`
/// receives them. Get them with [`Scheduler::close_parts`].
///
/// `closeconn` may read these (for its log line and its QUIT decision) and
/// must leave the changes to [`begin_close`]: the audit reports any other
/// change to the batch or the counts.
#[derive(Debug)]
#[non_exhaustive]
pub struct CloseParts<'a> {
    /// The connection's handle.
    pub handle: ConnectionHandle,
    /// Its delivery construct, with the batch in flight.
    pub construct: &'a mut DeliveryConstruct,
    /// Its record.
    pub connection: &'a mut Connection,
    /// Its domain: record and queues.
    pub domain: &'a mut DomainEntry,
    /// Its binding.
    pub binding: &'a mut BindingEntry,
    /// The remote address's metrics, once the address is known.
    pub address_metrics: Option<&'a mut AddressMetrics>,
    pub(crate) scheduler: SchedulerId,
    pub(crate) backoff: DomainBackoff,
    pub(crate) context: FateContext<'a>,
}

/// How long new connections to a domain wait after failed connects: the
/// base doubles with each consecutive failure, up to the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainBackoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl DomainBackoff {
    pub(crate) fn after(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1 << doublings)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

/// The reason for a close and the QUIT decision for its transport.
#[derive(Debug, Clone, Copy)]
pub struct CloseRequest<'e> {
    /// The event that woke the scheduler. A `Failed` session event for this
    /// connection carries the failure that decides the batch's fates.
    pub event: &'e Event,
    /// The reason logged and reported.
    pub reason: CloseReason,
    /// Send QUIT before shutting the transport down. The SMTP layer
    /// decides; [`default_send_quit`] is the engine's rule.
    pub send_quit: bool,
}

/// The result of [`begin_close`].
#[derive(Debug)]
#[must_use = "a close ticket says whether the close started; ignoring it hides a duplicate close"]
#[non_exhaustive]
pub enum CloseTicket {
    /// The close began.
    Started {
        /// The plan sent to the session, or `None` for a connection that
        /// never connected (its link was dropped instead).
        plan: Option<ClosePlan>,
        /// Each message of the batch and where it went.
        fates: Vec<(MessageId, MessageFate)>,
    },
    /// The connection was already closing; nothing changed but the
    /// duplicate-close counter.
    AlreadyClosing {
        /// The first close's reason.
        reason: CloseReason,
        /// The source location of the first close.
        site: &'static Location<'static>,
    },
}

/// Returns the session failure that `event` carries for `handle`, if any.
pub fn failure_of(event: &Event, handle: ConnectionHandle) -> Option<&SessionFailure> {
    match event {
        Event::Session {
            handle: event_handle,
            event: SessionEvent::Failed(failure),
        } if *event_handle == handle => Some(failure),
        _ => None,
    }
}

/// Applies the engine's QUIT rule: send QUIT only on a connection that is ready and
/// idle, and only when the failure (if any) left the transport usable.
/// Never write a command into a broken stream or in the middle of a
/// transaction.
pub fn default_send_quit(connection: &Connection, failure: Option<&SessionFailure>) -> bool {
    let idle = connection.state() == ConnectionState::Idle;
    let usable = failure.is_none_or(|failure| failure.error.transport_usable());
    idle && usable
}

/// Closes a connection with the engine's own mechanics: takes the
/// [`CloseParts`], applies [`default_send_quit`] and calls
/// [`begin_close`]. Returns `None` for a stale handle.
///
/// This is what [`SessionDriver::close`](crate::SessionDriver::close) does
/// by default; an SMTP layer with its own `closeconn` calls `begin_close`
/// itself.
#[track_caller]
pub fn close_connection(
    token: &mut SchedulerToken,
    scheduler: &mut Scheduler,
    handle: ConnectionHandle,
    event: &Event,
    reason: CloseReason,
    now: Instant,
) -> Option<CloseTicket> {
    let parts = scheduler.close_parts(token, handle)?;
    let send_quit = default_send_quit(parts.connection, failure_of(event, handle));
    let request = CloseRequest {
        event,
        reason,
        send_quit,
    };
    Some(begin_close(token, parts, request, now))
}

/// Begins closing a connection: the one place a connection's end is
/// decided.
///
/// It is idempotent: closing a connection that is already closing changes
/// nothing, counts a duplicate close and returns
/// [`CloseTicket::AlreadyClosing`]. Otherwise it
/// 1. cancels the connection's idle and maximum-age timers;
/// 2. gives every message of the batch exactly one fate:
///    - requeued without spending an attempt when its transaction never
///      started, or failed with the failure's reply when no retry can
///      change it ([`SessionError::permanent_reply`](ec_types::SessionError::permanent_reply)),
///    - delivery unknown (requeued and marked) when its final dot was sent
///      and no reply came,
///    - failed on a 5xx,
///    - deferred with backoff on any other failure during its transaction
///      (4xx, 421, lost connection, timeout);
/// 3. records a failure in the address metrics, and starts the domain's
///    connection backoff when the connection failed before it was ready,
///    unless the failure failed the batch outright (a null MX, a domain
///    that does not exist);
/// 4. marks the connection closing and arms its close deadline
///    (`Timeouts::close`), after which it counts as gone even without a
///    `Closed` event;
/// 5. sends `SessionCommand::Close` to a connection that connected, or
///    drops the link of one that never did.
///
/// A busy connection closed without a session failure (a shutdown's grace
/// period ran out) cannot tell whether its current transaction passed the
/// final dot, so the first message of its batch is treated as delivery
/// unknown. Either way, the rejections the session reported before the
/// close decide first. A rejection of MAIL
/// ([`SessionEvent::MailRejected`](ec_types::SessionEvent::MailRejected))
/// fails every recipient of the transaction with its reply when it is a
/// 5xx, and defers them with it when it is a 4xx. A recipient rejected at
/// RCPT ([`SessionEvent::RecipientRejected`](ec_types::SessionEvent::RecipientRejected))
/// fails with its reply on a 5xx and is deferred with it on a 4xx, and a
/// message with no other recipient left is settled at once.
///
/// The caller's source location is recorded as the close site.
#[track_caller]
pub fn begin_close(
    token: &mut SchedulerToken,
    parts: CloseParts<'_>,
    request: CloseRequest<'_>,
    now: Instant,
) -> CloseTicket {
    token.check(parts.scheduler);
    let site = Location::caller();
    let CloseParts {
        handle,
        construct,
        connection,
        domain,
        address_metrics,
        backoff,
        context: mut ctx,
        ..
    } = parts;

    if let Some(closing) = connection.closing {
        ctx.ledger.duplicate_closes += 1;
        ec_metrics::duplicate_closeconn();
        debug!(
            connection = %connection.id, reason = %request.reason, first_reason = %closing.reason,
            site = %site, first_site = %closing.site, "close of a connection that is already closing"
        );
        return CloseTicket::AlreadyClosing {
            reason: closing.reason,
            site: closing.site,
        };
    }

    ctx.timers.cancel_slot(&mut connection.timers.idle);
    ctx.timers.cancel_slot(&mut connection.timers.max_age);

    let prior = connection.state;
    let key = connection.lane;
    if let Some(lane) = domain.lane_mut(key.binding) {
        match prior {
            ConnectionState::Connecting => lane.connecting = lane.connecting.saturating_sub(1),
            ConnectionState::Idle => {
                lane.remove_idle(handle);
            }
            _ => {}
        }
    }
    ctx.ledger
        .change_state(Some(prior), Some(ConnectionState::Closing));
    connection.state = ConnectionState::Closing;

    let failure = failure_of(request.event, handle);
    connection.failure = failure.map(|failure| failure.error.to_string());
    let attempt = Attempt {
        connection: Some(connection.id),
        peer: connection.peer,
        tls: connection.tls.clone(),
    };
    // Drained rather than taken, so the buffer stays with the construct for
    // reuse after the release.
    let batch: Vec<SharedMessage> = construct.batch.drain(..).collect();
    let rejected: Vec<(MessageId, usize, Reply)> = construct.rejected.drain(..).collect();
    ctx.ledger.in_flight -= batch.len() as u64;
    let settling = Settling {
        batch,
        mail_rejected: construct.mail_rejected.take(),
        rejected,
        failure,
        prior,
    };
    let (fates, attempted) = settle_batch(&mut ctx, domain, key.binding, settling, &attempt, now);
    if attempted {
        connection.messages_attempted += 1;
    }

    if let Some(failure) = failure {
        if let Some(metrics) = address_metrics {
            metrics.record_failure(now);
        }
        // A failure that fails the mail outright needs no backoff: the
        // domain's next batch fails the same way at once.
        let permanent = failure.error.permanent_reply().is_some();
        if prior == ConnectionState::Connecting && !permanent {
            start_domain_backoff(&mut ctx, domain, backoff, now);
        }
    }

    connection.closing = Some(Closing {
        reason: request.reason,
        started: now,
        site,
    });
    let close_time = construct.settings.timeouts.close;
    let deadline = now + close_time;
    connection.timers.close_deadline = Some(ctx.timers.schedule(
        deadline + backstop_margin(close_time),
        Timer::CloseDeadline(handle),
    ));

    let plan = if connection.ever_connected() {
        let plan = ClosePlan {
            send_quit: request.send_quit,
            deadline,
        };
        if let Some(link) = connection.link.as_mut() {
            link.send(SessionCommand::Close(plan));
        }
        Some(plan)
    } else {
        // Dropping the link makes the session stop connecting and report
        // Closed(NeverConnected).
        connection.link = None;
        None
    };

    debug!(
        connection = %connection.id, domain = %domain.record.name,
        binding = %domain.binding(key.binding).map_or("", |lane| lane.metrics.binding().as_str()),
        peer = ?connection.peer, reason = %request.reason, state = prior.as_str(),
        messages = fates.len(), site = %site, "closing connection"
    );
    CloseTicket::Started { plan, fates }
}

/// Returns how long after the close deadline the scheduler releases a
/// connection whose session has not reported its socket closed: a tenth
/// of the close time, from 100 ms to 1 s.
///
/// The session drops its socket at the deadline itself and reports how the
/// close went. The scheduler's timer is only the backstop for a session
/// that cannot report, so it must not race the session's own report.
pub(crate) fn backstop_margin(close_time: Duration) -> Duration {
    (close_time / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn start_domain_backoff(
    ctx: &mut FateContext<'_>,
    domain: &mut DomainEntry,
    backoff: DomainBackoff,
    now: Instant,
) {
    let record = &mut domain.record;
    record.consecutive_failures = record.consecutive_failures.saturating_add(1);
    let until = now + backoff.after(record.consecutive_failures);
    record.backoff_until = Some(until);

    ctx.timers.cancel_slot(&mut domain.backoff_timer);
    domain.backoff_timer = Some(ctx.timers.schedule(until, Timer::Backoff(domain.index)));
    debug!(
        domain = %record.name, failures = record.consecutive_failures,
        until_secs = (until - now).as_secs_f64(), "domain connection backoff"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_backoff_doubles_to_cap() {
        let backoff = DomainBackoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
        };
        assert_eq!(backoff.after(1), Duration::from_secs(10));
        assert_eq!(backoff.after(2), Duration::from_secs(20));
        assert_eq!(backoff.after(3), Duration::from_secs(40));
        assert_eq!(backoff.after(4), Duration::from_secs(60));
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(60));
    }
}
