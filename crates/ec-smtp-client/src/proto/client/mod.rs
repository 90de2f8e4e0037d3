//! The SMTP client session as a state machine without I/O.
//!
//! [`Client`] takes the server's bytes and the current time and hands out
//! bytes to write, events and its next deadline. It never touches a socket
//! or a clock, so a test can drive a whole conversation in virtual time.

mod event;
mod handshake;
mod mail;
mod state;
mod timer;
mod transaction;

use std::collections::VecDeque;
use std::mem;
use std::time::Instant;

use bytes::Bytes;
use ec_types::{LongLines, Reply, ReplyCode, Stage, TlsPolicy};

pub use self::event::{ClientError, ClientEvent, TlsUnavailable, TransactionEnd};
pub use self::state::ClientState;
pub use self::timer::{Timeouts, Timer};
pub use self::transaction::{RejectedTransaction, Transaction, TransactionError};

use self::state::State;
use super::capabilities::Capabilities;
use super::command::{Command, CommandError};
use super::reply_parser::{ReplyError, ReplyLimits, ReplyParser};

/// The settings of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The domain or address literal sent with EHLO and HELO.
    pub ehlo_domain: String,
    /// When to use STARTTLS. Under [`TlsPolicy::Implicit`] the transport
    /// is TLS from the start, so the session never sends STARTTLS.
    pub tls_policy: TlsPolicy,
    /// How long each wait may take.
    pub timeouts: Timeouts,
    /// Bounds on the server's replies.
    pub reply_limits: ReplyLimits,
    /// Send the message as one BDAT LAST chunk (RFC 3030 CHUNKING) when the
    /// server offers CHUNKING and PIPELINING, which saves a round trip per
    /// message. `false` always uses DATA.
    pub chunking: bool,
    /// The handling of a message with a line longer than RFC 5321 allows:
    /// [`LongLines::Reject`] refuses it with
    /// [`TransactionError::LongLine`].
    pub long_lines: LongLines,
}

impl ClientConfig {
    /// Settings with opportunistic TLS, default timeouts and reply limits.
    pub fn new(ehlo_domain: impl Into<String>) -> Self {
        Self {
            ehlo_domain: ehlo_domain.into(),
            tls_policy: TlsPolicy::Opportunistic,
            timeouts: Timeouts::default(),
            reply_limits: ReplyLimits::default(),
            chunking: true,
            long_lines: LongLines::Reject,
        }
    }
}

/// One SMTP client session (RFC 5321), from the banner to QUIT, without
/// I/O.
///
/// # The flow
///
/// Each state is named after what it waits for. `C:` is what the session
/// sends, `S:` the reply that moves it on.
///
/// ```text
///  (TCP connected: Client::new)
///  ExpectBanner ──S: 2xx / C: EHLO──► ExpectEhlo ──S: 5xx / C: HELO──► ExpectHelo
///                                        │ S: 2xx                        │ S: 2xx
///           STARTTLS offered and policy ─┤                               │
///           not Disabled / C: STARTTLS   │                               │
///                                        ▼                               │
///  ExpectStartTls ──S: 220──► ExpectTlsHandshake ──tls_established()     │
///       │ S: 4xx/5xx              (driver's        / C: EHLO             │
///       │ (Opportunistic)          handshake)          ▼                 │
///       │                                      ExpectEhloAfterTls        │
///       │                                          │ S: 2xx              │
///       ▼                                          ▼                     ▼
///  Ready ◄──────────────────────────────────────────────────────────────┘
///    │ start_transaction()
///    │ C: [RSET] MAIL RCPT… DATA (one write with PIPELINING, else one by one)
///    ▼
///  ExpectRset ──► ExpectMail ──► ExpectRcpt (× recipients) ──► ExpectData
///                                                                │ S: 354 / C: data + "."
///                                                                ▼
///  Ready ◄──S: final reply── ExpectDataReply
///    │ quit() / C: QUIT
///    ▼
///  ExpectQuit ──S: any reply, EOF or timeout──► Closed
/// ```
///
/// After [`quit_after_transaction`](Self::quit_after_transaction), QUIT
/// goes with the message data (or right after the final reply without
/// PIPELINING), and the end of the transaction leads to `ExpectQuit`
/// instead of `Ready`.
///
/// A transaction on a reused connection starts with RSET; the first on a
/// connection does not, because some servers count a needless RSET against
/// the client. Any failure moves the session to
/// [`ClientState::Closed`], or to [`ClientState::Unusable`] when the
/// session is still in step with the server and may send QUIT
/// ([`ClientError::allows_quit`]).
///
/// # Driving it
///
/// The driver loops:
///
/// 1. write every buffer from [`poll_transmit`](Self::poll_transmit) in
///    order, then call [`handle_transmitted`](Self::handle_transmitted);
/// 2. handle every event from [`poll_event`](Self::poll_event);
/// 3. wait for input or [`next_timeout`](Self::next_timeout), whichever
///    comes first, and pass it to [`handle_input`](Self::handle_input),
///    [`handle_eof`](Self::handle_eof) or
///    [`handle_timeout`](Self::handle_timeout).
///
/// After [`ClientEvent::StartTls`] the driver runs the TLS handshake on
/// the same connection and then calls
/// [`tls_established`](Self::tls_established); bytes read from then on are
/// the decrypted stream. A driver whose TLS library can send data with the
/// handshake's last flight hands it [`ehlo_after_tls`](Self::ehlo_after_tls)
/// first and calls [`tls_established_with_ehlo`](Self::tls_established_with_ehlo)
/// instead.
///
/// Under [`TlsPolicy::Implicit`] the driver runs the handshake before it
/// creates the client, which then reads the banner from the decrypted
/// stream, reports [`ClientEvent::Ready`] with `tls: true` and never sends
/// STARTTLS, even when the EHLO reply offers it (RFC 8314 section 3).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: State,
    /// The stage of the current state, or the last one before `Closed`.
    stage: Stage,
    parser: ReplyParser,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    deadline: Option<(Timer, Instant)>,
    /// The capabilities in force: from the last EHLO (or HELO), and none
    /// between STARTTLS and the EHLO over TLS.
    capabilities: Option<Capabilities>,
    tls: bool,
    /// Transactions started on this connection.
    transactions: u64,
    /// The message data of the current transaction has been handed to the
    /// driver, so it may have reached the server.
    data_handed_out: bool,
    /// No recipient of the current transaction can get the message: MAIL
    /// or every RCPT was rejected. Data already handed out (a BDAT chunk
    /// goes with the commands) then cannot have been delivered.
    undeliverable: bool,
    /// QUIT follows the current transaction
    /// ([`quit_after_transaction`](Self::quit_after_transaction)).
    quit_after: bool,
    /// QUIT was queued for [`poll_transmit`](Self::poll_transmit).
    quit_queued: bool,
    /// QUIT was handed to the driver.
    quit_handed_out: bool,
}

/// One buffer to write.
#[derive(Debug)]
struct Transmit {
    parts: TransmitParts,
    kind: TransmitKind,
}

/// The content of a buffer to write, as far as the session tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransmitKind {
    /// Message data with its final dot, or a BDAT group with its chunk.
    Data,
    /// QUIT.
    Quit,
    /// Any other command or group of commands.
    Command,
}

/// One write in two parts: `head`, then `tail`, which a driver writes with
/// one vectored write. Message data that is already in wire form goes out
/// as the submitted buffer itself, without a copy: for DATA it is the head
/// and the end-of-data line the tail; for BDAT the commands up to the BDAT
/// line are the head and the data the tail. Every other write has an empty
/// tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransmitParts {
    /// The bytes to write first.
    pub head: Bytes,
    /// The bytes to write right after `head`, often empty.
    pub tail: Bytes,
}

impl TransmitParts {
    /// Makes parts with an empty tail.
    pub fn whole(head: Bytes) -> Self {
        Self {
            head,
            tail: Bytes::new(),
        }
    }

    /// Returns the number of octets in both parts.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Returns whether both parts are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the parts into one buffer, copying only when the tail is not
    /// empty.
    pub fn into_bytes(self) -> Bytes {
        if self.tail.is_empty() {
            return self.head;
        }
        let mut joined = Vec::with_capacity(self.len());
        joined.extend_from_slice(&self.head);
        joined.extend_from_slice(&self.tail);
        Bytes::from(joined)
    }
}

/// Logs each command line in `commands` at debug level as it is queued, so
/// that a debug log shows both sides of the conversation. Message data is
/// never passed here.
fn log_commands(commands: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for line in commands.split_inclusive(|&octet| octet == b'\n') {
        let line = String::from_utf8_lossy(line);
        tracing::debug!(command = %line.trim_end(), "command");
    }
}

/// An API call came in a state that does not allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{operation} is not allowed in state {state:?}")]
pub struct StateError {
    /// The method called.
    pub operation: &'static str,
    /// The state the session was in.
    pub state: ClientState,
}

impl Client {
    /// Starts a session on a freshly connected transport: the banner is due
    /// by `now` plus [`Timeouts::banner`]. Under [`TlsPolicy::Implicit`]
    /// the transport must be TLS already.
    ///
    /// # Errors
    ///
    /// Returns a [`CommandError`] when `config.ehlo_domain` cannot be sent
    /// in EHLO.
    pub fn new(config: ClientConfig, now: Instant) -> Result<Self, CommandError> {
        Command::Ehlo(&config.ehlo_domain).to_bytes()?;

        let implicit_tls = config.tls_policy == TlsPolicy::Implicit;
        let mut client = Self {
            parser: ReplyParser::new(config.reply_limits),
            config,
            state: State::Closed,
            stage: Stage::Banner,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            deadline: None,
            capabilities: None,
            tls: implicit_tls,
            transactions: 0,
            data_handed_out: false,
            undeliverable: false,
            quit_after: false,
            quit_queued: false,
            quit_handed_out: false,
        };
        client.enter(State::ExpectBanner, now);
        Ok(client)
    }

    /// Takes bytes read from the server.
    ///
    /// Every complete reply is handled at once; a partial one waits for
    /// more input. In [`ClientState::Closed`] input is ignored.
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) {
        match self.state {
            State::Closed => {
                tracing::trace!(len = input.len(), "ignoring input after close");
                return;
            }
            State::ExpectTlsHandshake if !input.is_empty() => {
                let len = input.len();
                self.fail(ClientError::StartTlsInjection { len }, now);
                return;
            }
            _ => {}
        }

        while !input.is_empty() {
            // Feed only what fits, then drain, so a large read never trips
            // the buffer limit while complete replies wait to be parsed.
            let room =
                (self.parser.limits().max_buffered).saturating_sub(self.parser.buffered_len());
            let (chunk, rest) = input.split_at(input.len().min(room.max(1)));
            input = rest;

            if let Err(error) = self.parser.push(chunk) {
                self.reply_error(error, now);
                return;
            }
            if !self.drain_replies(input.len(), now) {
                return;
            }
        }
    }

    /// Tells the session that the server closed the connection (or the
    /// transport failed). After QUIT this ends the session normally;
    /// anywhere else it is a failure.
    pub fn handle_eof(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::ExpectQuit => self.close(None),
            _ => {
                let stage = self.stage;
                self.fail(ClientError::ConnectionClosed { stage }, now);
            }
        }
    }

    /// Handles the expiry of the running timer, if it is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((timer, deadline)) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;

        match timer {
            Timer::Idle => self.events.push_back(ClientEvent::IdleTimeout),
            Timer::Quit => self.close(None),
            _ => {
                let after = self.config.timeouts.get(timer);
                tracing::debug!(%timer, ?after, stage = %self.stage, "timed out");
                self.fail(ClientError::Timeout { timer, after }, now);
            }
        }
    }

    /// Tells the session that every buffer from
    /// [`poll_transmit`](Self::poll_transmit) has been written.
    ///
    /// After the message data this starts the wait for the final reply
    /// ([`Timeouts::data_termination`]); until then the write is bounded by
    /// [`Timeouts::data_block`].
    pub fn handle_transmitted(&mut self, now: Instant) {
        let data_written = (matches!(self.state, State::ExpectDataReply(_))
            || self.state.chunked())
            && self.transmits.is_empty()
            && matches!(self.deadline, Some((Timer::DataBlock, _)));
        if data_written {
            self.arm(Timer::DataTermination, now);
        }
    }

    /// Reports that the driver finished the TLS handshake after
    /// [`ClientEvent::StartTls`]. The session sends EHLO again and drops
    /// the capabilities it learned in clear text (RFC 3207 section 4.2).
    ///
    /// # Errors
    ///
    /// Returns a [`StateError`] outside [`ClientState::ExpectTlsHandshake`].
    pub fn tls_established(&mut self, now: Instant) -> Result<(), StateError> {
        if !matches!(self.state, State::ExpectTlsHandshake) {
            return Err(StateError {
                operation: "tls_established",
                state: self.state(),
            });
        }

        self.tls = true;
        self.capabilities = None;
        self.send_greeting(false);
        self.enter(State::ExpectEhloAfterTls, now);
        Ok(())
    }

    /// Returns the EHLO that follows the TLS handshake (RFC 3207 section
    /// 4.2), for a driver that hands it to its TLS library before the
    /// handshake. A TLS 1.3 client then sends it with its Finished message
    /// in one write, and the server reads both at once. The library sends
    /// nothing of it if the handshake fails. Such a driver reports the handshake
    /// with [`tls_established_with_ehlo`](Self::tls_established_with_ehlo).
    pub fn ehlo_after_tls(&self) -> Bytes {
        let encoded = Command::Ehlo(&self.config.ehlo_domain).to_bytes();
        // `new` checked that the EHLO domain encodes.
        Bytes::from(encoded.unwrap_or_default())
    }

    /// Like [`tls_established`](Self::tls_established), for a driver that
    /// sent [`ehlo_after_tls`](Self::ehlo_after_tls) with the handshake: the
    /// session queues nothing and waits for the reply to that EHLO.
    ///
    /// # Errors
    ///
    /// Returns a [`StateError`] outside [`ClientState::ExpectTlsHandshake`].
    pub fn tls_established_with_ehlo(&mut self, now: Instant) -> Result<(), StateError> {
        if !matches!(self.state, State::ExpectTlsHandshake) {
            return Err(StateError {
                operation: "tls_established_with_ehlo",
                state: self.state(),
            });
        }

        if tracing::enabled!(tracing::Level::DEBUG) {
            log_commands(&self.ehlo_after_tls());
        }
        self.tls = true;
        self.capabilities = None;
        self.enter(State::ExpectEhloAfterTls, now);
        Ok(())
    }

    /// Starts a mail transaction. The commands are queued for
    /// [`poll_transmit`](Self::poll_transmit); the outcome arrives as
    /// [`ClientEvent::RecipientReply`] events and one
    /// [`ClientEvent::TransactionFinished`].
    ///
    /// # Errors
    ///
    /// Hands the transaction back when the session is not
    /// [`ClientState::Ready`], or when a command cannot be encoded or the
    /// server cannot take the message (see
    /// [`TransactionError::is_permanent`]). Nothing is sent then and the
    /// session stays ready.
    pub fn start_transaction(
        &mut self,
        transaction: Transaction,
        now: Instant,
    ) -> Result<(), Box<RejectedTransaction>> {
        let capabilities = match (&self.state, &self.capabilities) {
            (State::Ready, Some(capabilities)) => capabilities,
            _ => {
                return Err(Box::new(RejectedTransaction {
                    error: TransactionError::NotReady(self.state()),
                    transaction,
                }))
            }
        };

        let rset = self.transactions > 0;
        let prepared = match transaction::prepare(&transaction, capabilities, rset, &self.config) {
            Ok(prepared) => prepared,
            Err(error) => return Err(Box::new(RejectedTransaction { error, transaction })),
        };

        self.transactions += 1;
        self.data_handed_out = false;
        self.undeliverable = false;
        // The head contains the commands, and a BDAT chunk is the tail.
        log_commands(&prepared.first_transmit.head);
        self.queue_parts(prepared.first_transmit, prepared.first_is_data);
        let in_flight = Box::new(prepared.in_flight);
        let next = if rset {
            State::ExpectRset(in_flight)
        } else {
            State::ExpectMail(in_flight)
        };
        self.enter(next, now);
        Ok(())
    }

    /// Sends QUIT, if the session is idle and in step with the server
    /// ([`ClientState::Ready`] or [`ClientState::Unusable`]). Returns
    /// whether it did; if not, the driver just closes the transport (and
    /// calls [`abort`](Self::abort) when a transaction is under way).
    pub fn quit(&mut self, now: Instant) -> bool {
        if !matches!(self.state, State::Ready | State::Unusable) {
            return false;
        }
        self.queue_quit();
        self.enter(State::ExpectQuit, now);
        true
    }

    /// Ends the session after the transaction under way, for a connection
    /// that closes after it anyway: the close then needs no round trip of
    /// its own. When the server offers PIPELINING, QUIT goes right after
    /// the message data, in the same write, because RFC 2920 section 3.1
    /// allows QUIT as the last command of a group. Otherwise it goes as
    /// soon as the final reply arrives. When the transaction ends, however it
    /// ends, the session waits for the reply to QUIT
    /// ([`ClientState::ExpectQuit`]) instead of becoming ready.
    ///
    /// A failure of the session before then leaves it as any failure does.
    /// [`quit_handed_out`](Self::quit_handed_out) returns whether QUIT may
    /// have reached the server.
    ///
    /// # Errors
    ///
    /// Returns a [`StateError`] when no transaction is under way.
    pub fn quit_after_transaction(&mut self) -> Result<(), StateError> {
        if !self.state().in_transaction() {
            return Err(StateError {
                operation: "quit_after_transaction",
                state: self.state(),
            });
        }
        self.quit_after = true;
        if self.state.chunked() || matches!(self.state, State::ExpectDataReply(_)) {
            // The message data is queued already.
            self.pipeline_quit();
        }
        Ok(())
    }

    /// Takes the reply parser, with the input that is not yet part of a
    /// complete reply, and leaves a fresh one. A driver that stops using
    /// the session while the reply to QUIT is due reads that reply with
    /// this parser, so that a reply split across reads is not lost.
    pub fn take_reply_parser(&mut self) -> ReplyParser {
        let fresh = ReplyParser::new(self.config.reply_limits);
        mem::replace(&mut self.parser, fresh)
    }

    /// Returns whether [`poll_transmit`](Self::poll_transmit) handed out
    /// QUIT, from [`quit`](Self::quit) or after a transaction. A driver
    /// that wrote it must not send QUIT again when it closes the
    /// connection.
    pub fn quit_handed_out(&self) -> bool {
        self.quit_handed_out
    }

    /// Ends the session without QUIT, as when the driver must drop the
    /// connection. A transaction under way ends with
    /// [`TransactionEnd::Aborted`]; no other event is reported.
    pub fn abort(&mut self) {
        let before = self.state();
        if before.in_transaction() {
            let end = TransactionEnd::Aborted {
                error: ClientError::Aborted,
                delivery_unknown: self.delivery_unknown_pending(),
            };
            self.events.push_back(ClientEvent::TransactionFinished(end));
        }
        self.shut();
    }

    /// Returns the next buffer to write, in order. With PIPELINING a transaction's
    /// commands up to DATA come as one buffer, and the message data with its
    /// final dot always comes as one buffer.
    ///
    /// This joins [`poll_transmit_parts`](Self::poll_transmit_parts)'s two
    /// parts, which copies message data; a driver that can write vectored
    /// should call that instead.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit_parts().map(TransmitParts::into_bytes)
    }

    /// Returns the next write, in order, as two parts to write together:
    /// the same bytes as [`poll_transmit`](Self::poll_transmit), without
    /// copying message data that is already in wire form.
    pub fn poll_transmit_parts(&mut self) -> Option<TransmitParts> {
        let transmit = self.transmits.pop_front()?;
        match transmit.kind {
            TransmitKind::Data => self.data_handed_out = true,
            TransmitKind::Quit => self.quit_handed_out = true,
            TransmitKind::Command => {}
        }
        Some(transmit.parts)
    }

    /// Returns the next event, in order.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next,
    /// if a timer runs.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadline.map(|(_, deadline)| deadline)
    }

    /// Returns the running timer and its deadline.
    pub fn running_timer(&self) -> Option<(Timer, Instant)> {
        self.deadline
    }

    /// Returns the current state.
    pub fn state(&self) -> ClientState {
        self.state.kind()
    }

    /// Returns the Momentum stage of the current state. After a close it is
    /// the stage the session was in when it closed.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Returns whether the message data and final dot (or BDAT LAST chunk)
    /// of the current transaction were handed to the driver and its final
    /// reply has not come yet. If the connection ends now, the message may
    /// or may not have been accepted: `closeconn` gives it the "delivery
    /// unknown" fate. A chunk goes with the commands, so this is true from
    /// the start of a chunked transaction.
    pub fn delivery_unknown_pending(&self) -> bool {
        // A lone dot is queued as a command, so it never sets the flag.
        self.state().in_transaction() && self.data_may_be_delivered()
    }

    /// Returns whether the current transaction's data reached the driver
    /// while a recipient could still take it.
    fn data_may_be_delivered(&self) -> bool {
        self.data_handed_out && !self.undeliverable
    }

    /// Returns the capabilities from the last EHLO or HELO reply. They are
    /// `None` before it, and between STARTTLS and the EHLO over TLS.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// Returns whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Returns the number of octets read and not yet part of a handled
    /// reply.
    pub fn buffered_len(&self) -> usize {
        self.parser.buffered_len()
    }

    /// Returns the session's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Handles every complete reply in the parser. Returns `false` when the
    /// session stopped reading: closed, failed, or waiting for the TLS
    /// handshake. `unpushed` is the input not yet given to the parser.
    fn drain_replies(&mut self, unpushed: usize, now: Instant) -> bool {
        loop {
            let reply = match self.parser.next_reply() {
                Ok(Some(reply)) => reply,
                Ok(None) => return true,
                Err(error) => {
                    self.reply_error(error, now);
                    return false;
                }
            };

            self.handle_reply(reply, now);
            match self.state {
                State::Closed => return false,
                State::ExpectTlsHandshake => {
                    self.check_after_starttls(unpushed, now);
                    return false;
                }
                _ => {}
            }
        }
    }

    /// Handles input that is no valid reply. After QUIT it ends the session
    /// as a reply would, because nothing more is expected from the server.
    /// Anywhere else the session fails.
    fn reply_error(&mut self, error: ReplyError, now: Instant) {
        if matches!(self.state, State::ExpectQuit) {
            tracing::debug!(%error, "invalid reply to QUIT");
            self.close(None);
        } else {
            self.fail(error.into(), now);
        }
    }

    /// Right after the 220 to STARTTLS nothing else may have arrived.
    fn check_after_starttls(&mut self, unpushed: usize, now: Instant) {
        let len = self.parser.buffered_len() + unpushed;
        if len > 0 {
            tracing::warn!(len, "server sent data after its 220 reply to STARTTLS");
            self.fail(ClientError::StartTlsInjection { len }, now);
            return;
        }
        self.events.push_back(ClientEvent::StartTls);
    }

    fn handle_reply(&mut self, reply: Reply, now: Instant) {
        tracing::debug!(%reply, stage = %self.stage, "reply");
        ec_metrics::reply(self.stage, reply.class());

        // RFC 5321 section 3.8: a server may reply 421 to any command and
        // then close. After QUIT any reply ends the session anyway.
        let closing = reply.code == ReplyCode::SERVICE_NOT_AVAILABLE;
        if closing && !matches!(self.state, State::ExpectQuit) {
            self.fail(ClientError::ServiceClosing(reply), now);
            return;
        }

        let before = self.state();
        let result = match mem::replace(&mut self.state, State::Closed) {
            State::ExpectBanner => self.on_banner(reply),
            State::ExpectEhlo => self.on_ehlo(reply),
            State::ExpectHelo => self.on_helo(reply),
            State::ExpectStartTls => self.on_starttls(reply),
            State::ExpectEhloAfterTls => self.on_ehlo_after_tls(reply),
            State::ExpectRset(in_flight) => self.on_rset(in_flight, reply),
            State::ExpectMail(in_flight) => self.on_mail(in_flight, reply),
            State::ExpectRcpt(in_flight) => self.on_rcpt(in_flight, reply),
            State::ExpectData(in_flight) => self.on_data(in_flight, reply),
            State::ExpectDataReply(in_flight) => self.on_data_reply(in_flight, reply),
            State::ExpectQuit => {
                self.close(Some(reply));
                return;
            }
            State::Ready | State::Unusable | State::ExpectTlsHandshake | State::Closed => {
                Err(self.unexpected(reply))
            }
        };

        match result {
            Ok(next) => self.enter(next, now),
            Err(error) => self.fail_from(before, error, now),
        }
    }

    /// Builds the error for a reply that the current state has no use for.
    fn unexpected(&self, reply: Reply) -> ClientError {
        ClientError::UnexpectedReply {
            reply,
            stage: self.stage,
        }
    }

    /// Fails the session from its current state.
    fn fail(&mut self, error: ClientError, now: Instant) {
        let before = self.state();
        self.state = State::Closed;
        self.fail_from(before, error, now);
    }

    /// Fails the session, which was in `before`: ends a transaction under
    /// way, reports the error, and moves to `Unusable` or `Closed`.
    fn fail_from(&mut self, before: ClientState, error: ClientError, now: Instant) {
        if before.in_transaction() {
            // A 421 in reply to the final dot is a final reply: the server
            // did not take the message.
            let answered = matches!(error, ClientError::ServiceClosing(_));
            let delivery_unknown = self.data_may_be_delivered() && !answered;
            let end = TransactionEnd::Aborted {
                error: error.clone(),
                delivery_unknown,
            };
            self.events.push_back(ClientEvent::TransactionFinished(end));
        }

        tracing::debug!(%error, stage = %self.stage, "session failed");
        let stage = self.stage;
        if error.allows_quit() {
            self.enter(State::Unusable, now);
        } else {
            self.shut();
        }
        self.events.push_back(ClientEvent::Failed { stage, error });
    }

    /// Ends the session after QUIT.
    fn close(&mut self, reply: Option<Reply>) {
        if let Some(reply) = &reply {
            if reply.code != ReplyCode::CLOSING {
                tracing::debug!(%reply, "unusual reply to QUIT");
            }
        }
        self.shut();
        self.events.push_back(ClientEvent::Closed { reply });
    }

    /// Moves to `Closed`: nothing more is written, no timer runs.
    fn shut(&mut self) {
        self.state = State::Closed;
        self.deadline = None;
        self.transmits.clear();
        self.data_handed_out = false;
        self.undeliverable = false;
    }

    /// Moves to `state` and starts its timer.
    fn enter(&mut self, state: State, now: Instant) {
        let kind = state.kind();
        self.state = state;
        if let Some(stage) = kind.stage() {
            self.stage = stage;
        }
        match kind.timer() {
            // A BDAT chunk goes in the group with the commands, and RFC 2920
            // lets a server hold back its replies to a group until the
            // group ends, which is after the chunk. So every reply of a
            // chunked group may take as long as the final reply, counted
            // from when the group is written. Until then the write is
            // bounded as message data is.
            Some(_) if self.state.chunked() => {
                if self.data_handed_out && self.transmits.is_empty() {
                    self.arm(Timer::DataTermination, now);
                } else {
                    self.arm(Timer::DataBlock, now);
                }
            }
            Some(Timer::DataBlock) if self.data_handed_out && self.transmits.is_empty() => {
                self.arm(Timer::DataTermination, now);
            }
            Some(timer) => self.arm(timer, now),
            None => self.deadline = None,
        }
    }

    fn arm(&mut self, timer: Timer, now: Instant) {
        self.deadline = Some((timer, now + self.config.timeouts.get(timer)));
    }

    /// Queues EHLO, or HELO when `helo` is set.
    fn send_greeting(&mut self, helo: bool) {
        let domain = self.config.ehlo_domain.as_str();
        let command = if helo {
            Command::Helo(domain)
        } else {
            Command::Ehlo(domain)
        };
        let encoded = command.to_bytes();
        self.queue_command(command.verb(), encoded);
    }

    /// Queues QUIT after the message data just queued, when QUIT is due
    /// after this transaction and the server allows it in the group.
    fn pipeline_quit(&mut self) {
        let pipelining = self
            .capabilities
            .as_ref()
            .is_some_and(|capabilities| capabilities.pipelining);
        if self.quit_after && pipelining {
            self.queue_quit();
        }
    }

    /// Queues QUIT once.
    fn queue_quit(&mut self) {
        if !self.quit_queued {
            self.quit_queued = true;
            self.send_command(Command::Quit);
            if let Some(quit) = self.transmits.back_mut() {
                quit.kind = TransmitKind::Quit;
            }
        }
    }

    /// Queues a command without arguments.
    fn send_command(&mut self, command: Command<'static>) {
        self.queue_command(command.verb(), command.to_bytes());
    }

    /// Queues a command the session built itself. Encoding cannot fail for
    /// those: their only argument, the EHLO domain, was checked in `new`.
    fn queue_command(&mut self, verb: &str, encoded: Result<Vec<u8>, CommandError>) {
        match encoded {
            Ok(bytes) => {
                log_commands(&bytes);
                self.queue(Bytes::from(bytes), false);
            }
            Err(error) => {
                unreachable!("{verb} failed to encode after Client::new checked it: {error}")
            }
        }
    }

    fn queue(&mut self, bytes: Bytes, is_data: bool) {
        self.queue_parts(TransmitParts::whole(bytes), is_data);
    }

    fn queue_parts(&mut self, parts: TransmitParts, is_data: bool) {
        let kind = if is_data {
            TransmitKind::Data
        } else {
            TransmitKind::Command
        };
        self.transmits.push_back(Transmit { parts, kind });
    }

    /// Reports that the session takes transactions.
    fn ready(&mut self, capabilities: Capabilities) -> State {
        self.events.push_back(ClientEvent::Ready {
            capabilities: capabilities.clone(),
            tls: self.tls,
        });
        self.capabilities = Some(capabilities);
        State::Ready
    }
}
