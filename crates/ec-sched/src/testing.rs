//! A synchronous harness for driving a scheduler in virtual time, with a
//! fake session driver that records the scheduler's requests.
//!
//! The harness owns a [`Scheduler`] and its [`SchedulerToken`] on the
//! current thread. Time moves only with [`Harness::advance`]. Sessions are
//! played by the test: the harness records each [`OpenRequest`] and every
//! [`SessionCommand`] per connection, and methods such as
//! [`connected`](Harness::connected), [`ready`](Harness::ready) and
//! [`deliver`](Harness::deliver) inject the events a real session would
//! send. After each step the harness fires due timers and lets the
//! scheduler dispatch, as its thread would.
//!
//! ```
//! use std::time::Duration;
//! use ec_sched::testing::Harness;
//! use ec_types::{CloseOutcome, Config, ReplyCode};
//!
//! let mut harness = Harness::new(Config::default());
//! harness.submit_to(harness.default_binding(), 1, &["a@example.com"]);
//!
//! let connection = harness.opened()[0];
//! harness.connected(connection);
//! harness.ready(connection);
//! harness.deliver(connection, ReplyCode::OK);
//! assert_eq!(harness.scheduler().ledger().delivered, 1);
//!
//! harness.advance(Duration::from_secs(5)); // the idle timeout
//! harness.closed(connection, CloseOutcome::Clean);
//! harness.audit().expect("counts add up");
//! assert_eq!(harness.scheduler().engine_counts().live(), 0);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ec_types::{
    Address, Binding, BindingSlot, CloseOutcome, CloseReason, CloseReport, Config,
    ConnectionHandle, EnhancedStatusCode, Event, MessageId, OpenRequest, RecipientStatus, Reply,
    ReplyCode, ReversePath, SessionCapabilities, SessionCommand, SessionError, SessionEvent,
    SessionFailure, SharedMessage, Stage, Submission, Target, TransactionOutcome,
};

use crate::audit::AuditError;
use crate::close::{close_connection, CloseTicket};
use crate::driver::{EventSender, SessionDriver, SessionLink};
use crate::report::{RecipientOutcome, Report};
use crate::runtime::Inbox;
use crate::scheduler::{BindingError, Scheduler, SchedulerOptions, SubmitError};
use crate::stats::Stats;
use crate::token::SchedulerToken;

/// A session driver that connects nowhere: it records each open request
/// and hands out links that record commands. Its close is the engine's own
/// [`close_connection`].
#[derive(Debug)]
pub struct FakeDriver {
    opened: Vec<OpenRequest>,
    commands: CommandSink,
}

impl FakeDriver {
    /// A driver whose links send every command, tagged with its
    /// connection, to `commands`.
    pub fn new(commands: mpsc::Sender<(ConnectionHandle, SessionCommand)>) -> Self {
        Self {
            opened: Vec::new(),
            commands: CommandSink {
                ring: None,
                overflow: commands,
            },
        }
    }

    /// Takes the open requests received since the last call.
    pub fn take_opened(&mut self) -> Vec<OpenRequest> {
        std::mem::take(&mut self.opened)
    }
}

impl SessionDriver for FakeDriver {
    fn open(
        &mut self,
        _token: &SchedulerToken,
        request: OpenRequest,
        _events: EventSender,
    ) -> Box<dyn SessionLink> {
        let link = FakeLink {
            handle: request.handle,
            commands: self.commands.clone(),
        };
        self.opened.push(request);
        Box::new(link)
    }
}

/// A command sent to a fake link, with its connection.
type TaggedCommand = (ConnectionHandle, SessionCommand);

/// How many commands the harness's ring stores between two reads of it.
const COMMAND_RING: usize = 1_024;

/// Where fake links put their commands.
///
/// The harness's sink is a preallocated ring, so recording a command
/// allocates nothing, and an unbounded channel for the step that sends
/// more commands than the ring has room for (a shutdown of many
/// connections). An
/// unbounded channel alone allocates a block per 31 commands. With glibc's
/// allocator (2.36), a request of that size (about 1.5 KiB) also makes
/// `malloc` consolidate its free lists, which costs more as the heap
/// grows, and the scheduler's benchmark would measure that.
///
/// Commands keep their order: a command goes to the overflow channel only
/// while the ring is full, and the harness reads the whole ring before the
/// overflow channel.
#[derive(Debug, Clone)]
struct CommandSink {
    ring: Option<mpsc::SyncSender<TaggedCommand>>,
    overflow: mpsc::Sender<TaggedCommand>,
}

impl CommandSink {
    fn send(&self, command: TaggedCommand) {
        let command = match &self.ring {
            Some(ring) => match ring.try_send(command) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(command)) => command,
                // The harness is gone, and with it the overflow channel.
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            },
            None => command,
        };
        let _ = self.overflow.send(command);
    }
}

/// A link that forwards each command with its connection's handle.
#[derive(Debug)]
struct FakeLink {
    handle: ConnectionHandle,
    commands: CommandSink,
}

impl SessionLink for FakeLink {
    fn send(&mut self, command: SessionCommand) {
        self.commands.send((self.handle, command));
    }
}

/// The harness's record of one connection: the scheduler's side of
/// the conversation, and the messages the fake session holds.
#[derive(Debug)]
pub struct SessionLog {
    /// The open request.
    pub request: OpenRequest,
    /// Every command, in order.
    pub commands: Vec<SessionCommand>,
    /// Messages handed over by `Deliver` that have no transaction outcome
    /// yet, in order.
    pub outstanding: VecDeque<SharedMessage>,
    /// A `Close` command came. A connection that never connected gets
    /// none: its link is dropped instead.
    pub close_requested: bool,
}

/// A scheduler on the current thread in virtual time, with a
/// [`FakeDriver`]. See the [module docs](self).
pub struct Harness {
    token: SchedulerToken,
    scheduler: Scheduler,
    driver: FakeDriver,
    inbox: mpsc::Receiver<Inbox>,
    command_ring: mpsc::Receiver<TaggedCommand>,
    command_overflow: mpsc::Receiver<TaggedCommand>,
    start: Instant,
    now: Instant,
    /// Keyed by the scheduler's own handles, which no sender chooses, so
    /// the faster foldhash replaces std's SipHash.
    sessions: foldhash::HashMap<ConnectionHandle, SessionLog>,
    opened: Vec<ConnectionHandle>,
    reports: Vec<Report>,
    next_tag: u64,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("elapsed", &self.elapsed())
            .field("stats", &self.scheduler.stats())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness with default options.
    pub fn new(config: Config) -> Self {
        Self::with_options(config, SchedulerOptions::default())
    }

    /// A harness with the given options.
    pub fn with_options(config: Config, options: SchedulerOptions) -> Self {
        let (inbox_sender, inbox) = mpsc::channel();
        let (ring, command_ring) = mpsc::sync_channel(COMMAND_RING);
        let (overflow, command_overflow) = mpsc::channel();
        let start = Instant::now();
        let (scheduler, token) = Scheduler::new(config, options, inbox_sender, start);
        let driver = FakeDriver {
            opened: Vec::new(),
            commands: CommandSink {
                ring: Some(ring),
                overflow,
            },
        };
        Self {
            token,
            scheduler,
            driver,
            inbox,
            command_ring,
            command_overflow,
            start,
            now: start,
            sessions: foldhash::HashMap::default(),
            opened: Vec::new(),
            reports: Vec::new(),
            next_tag: 0,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves virtual time forward, firing every timer due on the way in
    /// deadline order, each at its own deadline.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(deadline) = self.scheduler.next_deadline().filter(|d| *d <= end) {
            self.now = self.now.max(deadline);
            self.settle();
        }
        self.now = end;
        self.settle();
    }

    /// The scheduler, for reading.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The token and the scheduler, for calling token-gated APIs directly
    /// (such as [`begin_close`](crate::begin_close)). Call
    /// [`settle`](Self::settle) afterwards.
    pub fn parts(&mut self) -> (&mut SchedulerToken, &mut Scheduler) {
        (&mut self.token, &mut self.scheduler)
    }

    /// The default binding's slot.
    pub fn default_binding(&self) -> BindingSlot {
        BindingSlot(0)
    }

    /// Registers a binding with no source address.
    ///
    /// # Errors
    ///
    /// Returns an error when the name is taken.
    pub fn register_binding(&mut self, name: &str) -> Result<BindingSlot, BindingError> {
        self.scheduler
            .register_binding(&self.token, Binding::named(name))
    }

    /// Submits a message and lets the scheduler dispatch.
    ///
    /// # Errors
    ///
    /// Returns the scheduler's error, with the submission.
    pub fn submit(
        &mut self,
        binding: BindingSlot,
        submission: Submission,
    ) -> Result<Vec<MessageId>, SubmitError> {
        let ids = self
            .scheduler
            .submit(&self.token, binding, submission, self.now)?;
        self.settle();
        Ok(ids)
    }

    /// Submits a small message to the given recipients with `tag`.
    ///
    /// # Panics
    ///
    /// Panics when an address is invalid or the submission is rejected.
    pub fn submit_to(
        &mut self,
        binding: BindingSlot,
        tag: u64,
        recipients: &[&str],
    ) -> Vec<MessageId> {
        let recipients = recipients
            .iter()
            .map(|r| Address::new(r).expect("valid recipient address in a test"))
            .collect();
        let submission = Submission {
            tag,
            reverse_path: ReversePath::Null,
            recipients,
            data: Bytes::from_static(b"Subject: test\r\n\r\ntest\r\n"),
        };
        self.submit(binding, submission)
            .expect("submission accepted")
    }

    /// A tag not used before by this harness, for tests that need unique
    /// tags.
    pub fn next_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Every connection the scheduler opened, in order, including those
    /// since released.
    pub fn opened(&self) -> &[ConnectionHandle] {
        &self.opened
    }

    /// Connections that are live now, in slot order.
    pub fn live(&self) -> Vec<ConnectionHandle> {
        self.scheduler.connections().map(|c| c.handle()).collect()
    }

    /// What the harness recorded for a connection.
    pub fn session(&self, handle: ConnectionHandle) -> Option<&SessionLog> {
        self.sessions.get(&handle)
    }

    /// The commands sent to a connection.
    pub fn commands(&self, handle: ConnectionHandle) -> &[SessionCommand] {
        self.sessions
            .get(&handle)
            .map_or(&[], |session| session.commands.as_slice())
    }

    /// Messages that the fake session of a connection has without an
    /// outcome.
    pub fn outstanding(&self, handle: ConnectionHandle) -> Vec<SharedMessage> {
        self.sessions.get(&handle).map_or_else(Vec::new, |session| {
            session.outstanding.iter().cloned().collect()
        })
    }

    /// Injects any session event, then settles.
    pub fn event(&mut self, handle: ConnectionHandle, event: SessionEvent) {
        if let Some(session) = self.sessions.get_mut(&handle) {
            if matches!(event, SessionEvent::Failed(_) | SessionEvent::Closed(_)) {
                session.outstanding.clear();
            }
        }
        self.scheduler.handle_session_event(
            &mut self.token,
            &mut self.driver,
            handle,
            event,
            self.now,
        );
        self.settle();
    }

    /// The TCP connect completed, to 127.0.0.1:25 or the target address.
    pub fn connected(&mut self, handle: ConnectionHandle) {
        let peer = match self.sessions.get(&handle).map(|s| &s.request.target) {
            Some(Target::Address(address)) => *address,
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 25),
        };
        let local = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            40_000 + (handle.slot % 20_000) as u16,
        );
        self.event(handle, SessionEvent::Connected { local, peer });
    }

    /// The session is ready for mail, in clear text.
    pub fn ready(&mut self, handle: ConnectionHandle) {
        let capabilities = SessionCapabilities {
            pipelining: true,
            ..SessionCapabilities::default()
        };
        self.event(
            handle,
            SessionEvent::Ready {
                tls: None,
                capabilities,
            },
        );
    }

    /// The TCP connect was refused.
    pub fn connect_failed(&mut self, handle: ConnectionHandle) {
        let failure = SessionFailure {
            error: SessionError::Connect {
                target: "test".to_owned(),
                kind: io::ErrorKind::ConnectionRefused,
            },
            stage: Stage::NotConnected,
            in_transaction: None,
            final_dot_sent: false,
        };
        self.event(handle, SessionEvent::Failed(failure));
    }

    /// Reports that the MX lookup found a null MX (RFC 7505): the domain
    /// accepts no mail.
    pub fn null_mx(&mut self, handle: ConnectionHandle, domain: &str) {
        let failure = SessionFailure {
            error: SessionError::NullMx {
                domain: domain.to_owned(),
            },
            stage: Stage::NotConnected,
            in_transaction: None,
            final_dot_sent: false,
        };
        self.event(handle, SessionEvent::Failed(failure));
    }

    /// Reports the next outstanding message's transaction with every
    /// recipient given `code`'s status. Returns false when the session
    /// has no message.
    pub fn transaction(&mut self, handle: ConnectionHandle, code: ReplyCode) -> bool {
        let Some(message) = self
            .sessions
            .get_mut(&handle)
            .and_then(|session| session.outstanding.pop_front())
        else {
            return false;
        };
        let status = status_for(code);
        let outcome = TransactionOutcome {
            message: message.id,
            recipients: vec![status; message.recipients.len()],
            elapsed: Duration::from_millis(10),
        };
        self.event(handle, SessionEvent::Transaction(outcome));
        true
    }

    /// Reports a transaction with one status per recipient.
    pub fn transaction_with(
        &mut self,
        handle: ConnectionHandle,
        statuses: Vec<RecipientStatus>,
    ) -> bool {
        let Some(message) = self
            .sessions
            .get_mut(&handle)
            .and_then(|session| session.outstanding.pop_front())
        else {
            return false;
        };
        let outcome = TransactionOutcome {
            message: message.id,
            recipients: statuses,
            elapsed: Duration::from_millis(10),
        };
        self.event(handle, SessionEvent::Transaction(outcome));
        true
    }

    /// Reports every outstanding message's transaction with `code`, then
    /// `BatchDone`.
    pub fn deliver(&mut self, handle: ConnectionHandle, code: ReplyCode) {
        while self.transaction(handle, code) {}
        self.event(handle, SessionEvent::BatchDone);
    }

    /// Reports `BatchDone`.
    pub fn batch_done(&mut self, handle: ConnectionHandle) {
        self.event(handle, SessionEvent::BatchDone);
    }

    /// The connection was lost during the next outstanding message's
    /// transaction, before or after its final dot; without an outstanding
    /// message, while idle.
    pub fn lost(&mut self, handle: ConnectionHandle, final_dot_sent: bool) {
        let in_transaction = self
            .sessions
            .get(&handle)
            .and_then(|session| session.outstanding.front())
            .map(|message| message.id);
        let stage = if in_transaction.is_some() {
            Stage::Body
        } else {
            Stage::Idle
        };
        let failure = SessionFailure {
            error: SessionError::PeerClosed { stage },
            stage,
            in_transaction,
            final_dot_sent: final_dot_sent && in_transaction.is_some(),
        };
        self.event(handle, SessionEvent::Failed(failure));
    }

    /// The server sent `reply` where the session cannot go on, during the
    /// next outstanding message's transaction if there is one.
    pub fn failed_with_reply(&mut self, handle: ConnectionHandle, reply: Reply) {
        let in_transaction = self
            .sessions
            .get(&handle)
            .and_then(|session| session.outstanding.front())
            .map(|message| message.id);
        let stage = if in_transaction.is_some() {
            Stage::Rcpt
        } else {
            Stage::Banner
        };
        let failure = SessionFailure {
            error: SessionError::Reply { stage, reply },
            stage,
            in_transaction,
            final_dot_sent: false,
        };
        self.event(handle, SessionEvent::Failed(failure));
    }

    /// The socket is gone.
    pub fn closed(&mut self, handle: ConnectionHandle, outcome: CloseOutcome) {
        let report = CloseReport {
            outcome,
            close_notify_sent: false,
            close_notify_received: false,
        };
        self.event(handle, SessionEvent::Closed(report));
    }

    /// Closes a connection through the engine's close mechanics, as a
    /// program would. Returns `None` for a stale handle.
    #[track_caller]
    pub fn close(&mut self, handle: ConnectionHandle, reason: CloseReason) -> Option<CloseTicket> {
        let ticket = close_connection(
            &mut self.token,
            &mut self.scheduler,
            handle,
            &Event::Direct,
            reason,
            self.now,
        );
        self.settle();
        ticket
    }

    /// Begins a shutdown.
    pub fn shutdown(&mut self) {
        self.scheduler
            .begin_shutdown(&mut self.token, &mut self.driver, self.now);
        self.settle();
    }

    /// Whether the shutdown has finished (every connection gone, every
    /// queued message reported unsent).
    pub fn is_shut_down(&self) -> bool {
        self.scheduler.stats().shut_down
    }

    /// Runs the accounting audit.
    ///
    /// # Errors
    ///
    /// Returns every violation found.
    pub fn audit(&self) -> Result<(), AuditError> {
        self.scheduler.audit(&self.token)
    }

    /// The scheduler's counts.
    pub fn stats(&self) -> Stats {
        self.scheduler.stats()
    }

    /// Every record the scheduler produced, oldest first.
    pub fn reports(&self) -> &[Report] {
        &self.reports
    }

    /// Takes the records produced so far.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// Drops the records produced so far, keeping the buffer for the next
    /// ones (for long runs, such as benchmarks).
    pub fn clear_reports(&mut self) {
        self.reports.clear();
    }

    /// The recipient records with a final outcome, as (tag, recipient,
    /// outcome).
    pub fn final_outcomes(&self) -> Vec<(u64, Address, RecipientOutcome)> {
        self.reports
            .iter()
            .filter_map(|report| match report {
                Report::Recipient(record) if record.outcome.is_final() => {
                    Some((record.tag, record.recipient.clone(), record.outcome.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Forgets the log of one connection that is gone, so that a long run
    /// that forgets each connection after its release keeps no log of it.
    /// The log of a live connection is kept. Returns whether a log was
    /// dropped. The handle stays in [`opened`](Self::opened) until
    /// [`forget_released`](Self::forget_released).
    pub fn forget(&mut self, handle: ConnectionHandle) -> bool {
        if self.scheduler.connection(handle).is_some() {
            return false;
        }
        self.sessions.remove(&handle).is_some()
    }

    /// Forgets the logs of connections that are gone, to bound memory in
    /// long runs.
    pub fn forget_released(&mut self) {
        let scheduler = &self.scheduler;
        self.sessions
            .retain(|handle, _| scheduler.connection(*handle).is_some());
        self.opened
            .retain(|handle| scheduler.connection(*handle).is_some());
    }

    /// Lets the scheduler catch up as its loop would: session events sent
    /// through event senders, due timers, dispatch, the shutdown's end,
    /// recording what the fake driver saw, and publishing the metrics
    /// gauges.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Ok(message) = self.inbox.try_recv() {
                progressed = true;
                let events = match message {
                    Inbox::Session(handle, event) => vec![(handle, event)],
                    Inbox::Sessions(events) => events,
                    Inbox::Command(_) => Vec::new(),
                };
                for (handle, event) in events {
                    self.scheduler.handle_session_event(
                        &mut self.token,
                        &mut self.driver,
                        handle,
                        event,
                        self.now,
                    );
                }
            }
            self.scheduler
                .fire_due_timers(&mut self.token, &mut self.driver, self.now);
            self.scheduler
                .run_pending(&mut self.token, &mut self.driver, self.now);
            self.scheduler.poll_shutdown(&self.token, self.now);
            progressed |= self.record_driver();
            self.reports
                .extend(self.scheduler.drain_reports(&self.token));
            if !progressed {
                break;
            }
        }
        self.scheduler.publish_gauges(&self.token);
    }

    fn record_driver(&mut self) -> bool {
        let mut progressed = false;
        for request in self.driver.opened.drain(..) {
            progressed = true;
            self.opened.push(request.handle);
            self.sessions.insert(
                request.handle,
                SessionLog {
                    request,
                    commands: Vec::new(),
                    outstanding: VecDeque::new(),
                    close_requested: false,
                },
            );
        }
        let ring = self.command_ring.try_iter();
        for (handle, command) in ring.chain(self.command_overflow.try_iter()) {
            progressed = true;
            let Some(session) = self.sessions.get_mut(&handle) else {
                continue;
            };
            match &command {
                SessionCommand::Deliver { messages, .. } => {
                    session.outstanding.extend(messages.iter().cloned());
                }
                SessionCommand::Close(_) => {
                    session.outstanding.clear();
                    session.close_requested = true;
                }
                _ => {}
            }
            session.commands.push(command);
        }
        progressed
    }
}

/// The recipient status a session reports for a reply to the final dot.
pub fn status_for(code: ReplyCode) -> RecipientStatus {
    let class = u8::try_from(code.as_u16() / 100).unwrap_or(5);
    let enhanced = EnhancedStatusCode::new(class, 0, 0).ok();
    let reply = Reply::new(code, enhanced, "test reply");
    if code.is_positive_completion() {
        RecipientStatus::Delivered(reply)
    } else if code.is_transient() {
        RecipientStatus::Deferred(reply)
    } else {
        RecipientStatus::Failed(reply)
    }
}

#[cfg(test)]
mod tests {
    use ec_types::{ClosePlan, EngineLimits};

    use super::*;

    fn close_command(seconds: u64) -> SessionCommand {
        SessionCommand::Close(ClosePlan {
            send_quit: false,
            deadline: Instant::now() + Duration::from_secs(seconds),
        })
    }

    #[test]
    fn full_ring_spills_in_order() {
        let (ring, ring_receiver) = mpsc::sync_channel(2);
        let (overflow, overflow_receiver) = mpsc::channel();
        let sink = CommandSink {
            ring: Some(ring),
            overflow,
        };
        let handle = ConnectionHandle {
            slot: 1,
            generation: 0,
        };
        for seconds in 1..=5 {
            sink.send((handle, close_command(seconds)));
        }

        let deadlines: Vec<Instant> = ring_receiver
            .try_iter()
            .chain(overflow_receiver.try_iter())
            .map(|(_, command)| match command {
                SessionCommand::Close(plan) => plan.deadline,
                other => panic!("unexpected command {other:?}"),
            })
            .collect();
        assert_eq!(deadlines.len(), 5);
        assert!(deadlines.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn shutdown_beyond_ring_closes_all() {
        let connections = COMMAND_RING + 100;
        let config = Config {
            engine: EngineLimits {
                max_connections: u32::try_from(connections).expect("fits"),
                max_connections_per_binding: u32::try_from(connections).expect("fits"),
                ..EngineLimits::default()
            },
            ..Config::default()
        };
        let mut harness = Harness::new(config);
        let binding = harness.default_binding();
        for index in 0..connections {
            let tag = harness.next_tag();
            harness.submit_to(binding, tag, &[&format!("user@d{index}.example")]);
        }
        let opened = harness.opened().to_vec();
        assert_eq!(opened.len(), connections);
        for handle in &opened {
            harness.connected(*handle);
        }

        // One step closes every connection: more commands than the ring holds.
        harness.shutdown();
        for handle in &opened {
            let session = harness.session(*handle).expect("logged");
            assert!(session.close_requested, "{handle} got no close");
        }
        harness.audit().expect("accounting holds");
    }
}
