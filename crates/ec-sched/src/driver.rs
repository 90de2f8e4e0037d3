//! The interface between the scheduler and the code that runs SMTP
//! sessions; the contract is on [`SessionDriver`].

use std::fmt;
use std::sync::mpsc;
use std::time::Instant;

use ec_metrics::BindingLabel;
use ec_types::{CloseReason, ConnectionHandle, Event, OpenRequest, SessionCommand, SessionEvent};

use crate::close::close_connection;
use crate::runtime::Inbox;
use crate::scheduler::Scheduler;
use crate::token::SchedulerToken;

/// Starts and closes SMTP sessions for the scheduler. Implemented by the
/// SMTP client crate; tests use [`testing::FakeDriver`](crate::testing::FakeDriver).
///
/// The scheduler calls [`SessionDriver::open`] to start a connection and
/// talks to it through the returned [`SessionLink`]; the session reports
/// back through its [`EventSender`]. The contract, for each connection:
///
/// 1. Report `Connected` when the TCP connect completes, then `Ready` when
///    the session takes mail (banner, EHLO and STARTTLS done), or `Failed`.
/// 2. For each `SessionCommand::Deliver`, report one `Transaction` per
///    message, in order, then `BatchDone`. On a failure, report `Failed`
///    instead, naming the message whose transaction was under way and
///    whether its final dot was sent. Report `MailRejected` for a 4xx or
///    5xx reply to MAIL and `RecipientRejected` for each 4xx or 5xx reply
///    to RCPT as it comes, before the transaction's end. When the
///    transaction never ends, a 5xx fails the recipients it names and a
///    4xx defers them with its reply. A `Deliver` with `last` set is the
///    connection's last batch: the scheduler closes the connection after
///    its `BatchDone`, so the session may send QUIT with the batch's last
///    transaction, and its close then only waits for the 221.
/// 3. After `Failed`, do nothing until the scheduler closes the connection.
/// 4. On `SessionCommand::Close(plan)`, shut the transport down by
///    `plan.deadline` and report `Closed` once the socket is gone.
/// 5. A connection that never reported `Connected` gets no close command:
///    the scheduler drops its link instead. The session then stops
///    connecting (if it still is), drops the socket and reports
///    `Closed(NeverConnected)`.
///
/// Until `Closed` arrives (or the close deadline passes) the connection
/// counts against every limit.
pub trait SessionDriver: Send + 'static {
    /// Starts connecting as `request` specifies, and returns the link the
    /// scheduler sends commands through. Events go through `events`, which
    /// is bound to `request.handle`.
    ///
    /// Called on the scheduler thread: it must not block.
    fn open(
        &mut self,
        token: &SchedulerToken,
        request: OpenRequest,
        events: EventSender,
    ) -> Box<dyn SessionLink>;

    /// Closes a connection the scheduler decided to end (idle timeout,
    /// maximum age, shutdown, or a `Failed` event in `event`).
    ///
    /// An implementation calls its `closeconn`, which must call
    /// [`begin_close`](crate::begin_close) exactly once for `handle`. The
    /// default calls [`close_connection`], the engine's own mechanics with
    /// its default QUIT decision.
    fn close(
        &mut self,
        token: &mut SchedulerToken,
        scheduler: &mut Scheduler,
        handle: ConnectionHandle,
        event: &Event,
        reason: CloseReason,
        now: Instant,
    ) {
        let _ = close_connection(token, scheduler, handle, event, reason, now);
    }
}

/// The scheduler's end of one session's command channel. Dropping it tells
/// the session to stop, as the [`SessionDriver`] contract describes.
pub trait SessionLink: Send {
    /// Sends a command to the session without blocking. A session that is
    /// already gone ignores it.
    fn send(&mut self, command: SessionCommand);
}

/// A `std::sync::mpsc` sender is a link, for drivers that run each session
/// on a thread or task reading such a channel.
impl SessionLink for mpsc::Sender<SessionCommand> {
    fn send(&mut self, command: SessionCommand) {
        // A send error means the session has ended; its `Closed` event (or
        // the close deadline) settles the connection.
        let _ = mpsc::Sender::send(self, command);
    }
}

/// Sends one connection's events to its scheduler. Cloneable and `Send`,
/// so a session task can keep a copy; every event carries the connection's
/// handle.
#[derive(Clone)]
pub struct EventSender {
    inbox: mpsc::Sender<Inbox>,
    handle: ConnectionHandle,
    binding: BindingLabel,
}

impl EventSender {
    pub(crate) fn new(
        inbox: mpsc::Sender<Inbox>,
        handle: ConnectionHandle,
        binding: BindingLabel,
    ) -> Self {
        Self {
            inbox,
            handle,
            binding,
        }
    }

    /// The connection these events are about.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }

    /// Counts `bytes` written to the connection's server (commands and
    /// message data, before TLS encryption) in
    /// `ec_smtp_sent_bytes_total`, under the connection's binding.
    ///
    /// Sessions call it from their own threads; it does not go through
    /// the scheduler.
    pub fn bytes_sent(&self, bytes: u64) {
        ec_metrics::bytes_sent(&self.binding, bytes);
    }

    /// Sends an event to the scheduler.
    ///
    /// # Errors
    ///
    /// Returns the event when the scheduler has stopped; the session should
    /// then close its socket and end.
    pub fn send(&self, event: SessionEvent) -> Result<(), SessionEvent> {
        self.inbox
            .send(Inbox::Session(self.handle, event))
            .map_err(|error| match error.0 {
                Inbox::Session(_, event) => event,
                _ => unreachable!("an event sender only sends one session event"),
            })
    }

    /// Returns a sender for batches of events from many connections of the
    /// same scheduler.
    pub fn batch_sender(&self) -> BatchSender {
        BatchSender {
            inbox: self.inbox.clone(),
        }
    }
}

/// Sends the events of many connections to their scheduler in one inbox
/// message, so the scheduler thread wakes once for the whole batch instead
/// of once per event. Get one from [`EventSender::batch_sender`].
///
/// A driver that runs many sessions on one thread can gather their events
/// while it works through its ready sockets and send them when it is about
/// to wait again. Each connection's events must stay in the order its
/// session produced them, and must all take the same path: a connection
/// whose events go partly through a batch and partly through
/// [`EventSender::send`] could have them handled out of order.
#[derive(Clone)]
pub struct BatchSender {
    inbox: mpsc::Sender<Inbox>,
}

impl BatchSender {
    /// Sends `events`, handled by the scheduler in this order.
    ///
    /// # Errors
    ///
    /// Returns the events when the scheduler has stopped.
    pub fn send(
        &self,
        events: Vec<(ConnectionHandle, SessionEvent)>,
    ) -> Result<(), Vec<(ConnectionHandle, SessionEvent)>> {
        if events.is_empty() {
            return Ok(());
        }
        self.inbox
            .send(Inbox::Sessions(events))
            .map_err(|error| match error.0 {
                Inbox::Sessions(events) => events,
                _ => unreachable!("a batch sender only sends batches of session events"),
            })
    }
}

impl fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSender").finish_non_exhaustive()
    }
}

impl fmt::Debug for EventSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSender")
            .field("handle", &self.handle)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}
