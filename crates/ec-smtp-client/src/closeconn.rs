//! `closeconn`: the one way a connection ends.

use std::time::Instant;

use ec_sched::{
    begin_close, default_send_quit, failure_of, CloseParts, CloseRequest, CloseTicket, Connection,
    SchedulerToken,
};
use ec_types::{CloseReason, ConnectionState, Event, ReplyCode, SessionError, SessionFailure};

/// Closes an SMTP connection, as Momentum's
/// `ec_smtp_closeconn(dc, e, conn, connh, domain, binding_slot, am, now, file, line)`
/// does.
///
/// Momentum's parameters arrive here as the fields of [`CloseParts`], which
/// [`Scheduler::close_parts`](ec_sched::Scheduler::close_parts) hands out as
/// split borrows of the scheduler's state: `dc` is
/// [`CloseParts::construct`], `conn` is [`CloseParts::connection`], `connh`
/// is [`CloseParts::handle`], `domain` is [`CloseParts::domain`],
/// `binding_slot` is [`CloseParts::binding`], and `am` is
/// [`CloseParts::address_metrics`]. `file` and `line` come from
/// `#[track_caller]`: the caller's location is logged as the close site.
/// `now` is read from the clock only when it is `None`.
///
/// What it does:
/// - decides whether QUIT may be sent. It is sent on a ready, idle
///   session, and on one whose greeting the server rejected in step with
///   it. It is never sent into a failed TLS stream, in the middle of a
///   transaction, after QUIT, or after a 421;
/// - runs [`begin_close`], which gives every message of the batch exactly
///   one fate (delivered ones are already recorded; "delivery unknown" for
///   a final dot without reply), cancels the connection's timers and sends
///   the session its shutdown plan: QUIT (only the wait for its 221 when
///   the session sent it with the connection's last transaction), TLS
///   close_notify, TCP shutdown of the write side, then reading to EOF,
///   all under the close deadline.
///
/// It is idempotent: a second call for the same connection changes nothing
/// and returns [`CloseTicket::AlreadyClosing`]. The connection keeps
/// counting against every limit until its socket is gone; the scheduler
/// releases it when the session reports `Closed`, and logs one line with
/// the reason, outcome and this close site.
///
/// It must run on the scheduler thread, which the token proves.
#[track_caller]
pub fn closeconn(
    token: &mut SchedulerToken,
    parts: CloseParts<'_>,
    event: &Event,
    now: Option<Instant>,
    reason: CloseReason,
) -> CloseTicket {
    let now = now.unwrap_or_else(Instant::now);
    let failure = failure_of(event, parts.handle);
    let send_quit = quit_allowed(parts.connection, failure);
    let request = CloseRequest {
        event,
        reason,
        send_quit,
    };
    begin_close(token, parts, request, now)
}

/// The engine's QUIT rule ([`default_send_quit`]: a ready, idle session
/// whose failure left the stream in step), with two refinements:
/// - after a 421 the server closes the channel itself (RFC 5321 section
///   3.8), so a QUIT would only meet a closed socket;
/// - a session that failed before it was ready, on a rejected banner,
///   EHLO and HELO, or STARTTLS under a `required` policy, is still in
///   step with the server, which waits for QUIT. After a 554 banner, RFC
///   5321 section 3.1 has the server wait for one before it closes.
fn quit_allowed(connection: &Connection, failure: Option<&SessionFailure>) -> bool {
    match failure {
        Some(failure) if service_closing(failure) => false,
        Some(failure) if connection.state() == ConnectionState::Connecting => {
            connection.ever_connected() && failure.error.transport_usable()
        }
        _ => default_send_quit(connection, failure),
    }
}

/// Returns whether the failure is a 421 reply.
fn service_closing(failure: &SessionFailure) -> bool {
    matches!(
        &failure.error,
        SessionError::Reply { reply, .. } if reply.code == ReplyCode::SERVICE_NOT_AVAILABLE
    )
}
