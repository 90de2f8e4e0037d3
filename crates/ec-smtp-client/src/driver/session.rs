//! One SMTP session as a tokio task: the thin loop that moves bytes between
//! the socket and the sans-I/O [`Client`], and reports to the scheduler.
//!
//! Every await has a deadline: connect and TLS handshake here, every reply
//! through the client's own timers, every write through the data-block
//! timeout, and the shutdown through the close deadline.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use ec_metrics::{TlsHandshakeResult, TlsVersion};
use ec_types::{
    CloseOutcome, ClosePlan, CloseReport, MessageId, OpenRequest, RecipientStatus, Reply,
    ReplyCode, SessionCapabilities, SessionCommand, SessionError, SessionEvent, SessionFailure,
    SharedMessage, Stage, TlsInfo, TlsPolicy, TlsVerify, TransactionOutcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::Instrument;

use super::connect::{connect, Connected};
use super::mx::MxResolver;
use super::shutdown::{shutdown, QuitStep, ShutdownPlan, StreamEnd};
use super::transport::Transport;
use crate::proto::client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientState, Timeouts, TlsUnavailable,
    Transaction, TransactionEnd,
};
use crate::proto::{Capabilities, ReplyParser, TransmitParts};
use crate::tls::{server_name, TlsConfigCache};

/// Where a session sends its events: the scheduler's inbox, bound to this
/// connection's handle.
pub trait EventSink: Send + 'static {
    /// Delivers one event. A closed inbox (the scheduler is gone) is ignored:
    /// the session then shuts down on its own.
    fn report(&self, event: SessionEvent);

    /// Counts `bytes` written to the server, before TLS encryption. The
    /// default ignores them.
    fn bytes_sent(&self, bytes: u64) {
        let _ = bytes;
    }
}

/// The client-side idle timer is not used: the scheduler owns idle
/// timeouts. This keeps the client's timer far away without overflowing
/// `Instant` arithmetic.
const CLIENT_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Read buffer size; a reply larger than this arrives in several reads.
/// Replies are short, so 4 KiB fits a whole pipelined group's replies.
/// Each open connection keeps one, and at 16 KiB it was most of an idle
/// connection's memory.
const READ_BUFFER: usize = 4 * 1024;

/// Runs one session from connect to socket close.
pub(crate) async fn run<E: EventSink>(
    request: OpenRequest,
    events: E,
    commands: mpsc::UnboundedReceiver<SessionCommand>,
    tls_configs: Arc<TlsConfigCache>,
    resolver: Arc<MxResolver>,
) {
    let span = tracing::debug_span!(
        "session",
        conn = %request.id,
        domain = %request.domain,
        binding = %request.binding_name,
        target = %request.target,
    );
    Session::new(request, events, commands, tls_configs, resolver)
        .run()
        .instrument(span)
        .await;
}

struct Session<E: EventSink> {
    request: OpenRequest,
    events: E,
    commands: mpsc::UnboundedReceiver<SessionCommand>,
    tls_configs: Arc<TlsConfigCache>,
    resolver: Arc<MxResolver>,
    /// The host name the connect reached, when the target named one: the
    /// MX host, whose name the TLS certificate must carry.
    connected_host: Option<String>,
    /// Messages of the current batch that have not started their transaction.
    queued: std::collections::VecDeque<SharedMessage>,
    /// The message in transaction, with the index of each transaction
    /// recipient among the message's recipients, and the RCPT replies.
    current: Option<InTransaction>,
    tls: Option<TlsInfo>,
    /// The end of the stream before the close began, if it ended.
    stream_end: Option<StreamEnd>,
    /// The current transaction's message data and final dot were written
    /// in full, and no reply to them has come.
    final_dot_sent: bool,
    /// A `Deliver` is being worked on; `BatchDone` is due when it ends.
    batch_open: bool,
    /// The batch is the connection's last: QUIT follows its last
    /// transaction.
    last_batch: bool,
    /// How far QUIT got before the close began.
    quit: QuitProgress,
    /// The QUIT timer of the client ran out.
    quit_timed_out: bool,
    /// The client's reply parser, taken when the close began while the
    /// reply to QUIT was due, with any part of that reply already read.
    quit_parser: Option<ReplyParser>,
    /// The scheduler's close that came during a TLS handshake and ended it:
    /// the session then reports no failure of its own.
    interrupted: Option<LoopEnd>,
    /// The buffers of the write under way; kept to reuse its allocation.
    writes: Vec<TransmitParts>,
    /// `Closed` was reported: the scheduler has the session's last event.
    closed_reported: bool,
}

/// A session task that panics would otherwise end without `Closed`, and
/// the scheduler would wait for its connection forever. Its drop, while
/// the panic unwinds, reports the connection closed as aborted, so
/// `closeconn` gives its batch a fate.
impl<E: EventSink> Drop for Session<E> {
    fn drop(&mut self) {
        if self.closed_reported || !std::thread::panicking() {
            return;
        }
        tracing::error!("session task panicked; reporting its connection closed as aborted");
        self.report_closed(CloseReport {
            outcome: CloseOutcome::Aborted,
            close_notify_sent: false,
            close_notify_received: false,
        });
    }
}

struct InTransaction {
    message: SharedMessage,
    recipient_index: Vec<usize>,
    rcpt_replies: Vec<Option<Reply>>,
    started: std::time::Instant,
}

/// How far QUIT got in the conversation, before `closeconn`'s close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuitProgress {
    /// Not written.
    NotSent,
    /// Written; no reply yet.
    Sent,
    /// The server replied.
    Answered,
    /// The server closed, or the QUIT timeout passed, without a reply: the
    /// close outcome to report if nothing worse happens.
    Unanswered(CloseOutcome),
}

impl QuitProgress {
    /// Returns the QUIT step left for the transport shutdown, when
    /// `closeconn`'s plan requests QUIT (`send_quit`) or not.
    fn step(self, send_quit: bool) -> QuitStep {
        match self {
            _ if !send_quit => QuitStep::Skip,
            Self::NotSent => QuitStep::Send,
            Self::Sent => QuitStep::AwaitReply,
            Self::Answered | Self::Unanswered(_) => QuitStep::Skip,
        }
    }
}

/// What one pass over the client's events did.
struct Drained {
    /// The session failed.
    failed: bool,
    /// How many events were handled.
    handled: usize,
}

/// What ended the main loop.
enum LoopEnd {
    /// The scheduler asked for a close.
    Close(ClosePlan),
    /// The scheduler is gone.
    Abandoned,
}

impl<E: EventSink> Session<E> {
    fn new(
        request: OpenRequest,
        events: E,
        commands: mpsc::UnboundedReceiver<SessionCommand>,
        tls_configs: Arc<TlsConfigCache>,
        resolver: Arc<MxResolver>,
    ) -> Self {
        Self {
            request,
            events,
            commands,
            tls_configs,
            resolver,
            connected_host: None,
            queued: std::collections::VecDeque::new(),
            current: None,
            closed_reported: false,
            tls: None,
            stream_end: None,
            final_dot_sent: false,
            batch_open: false,
            last_batch: false,
            quit: QuitProgress::NotSent,
            quit_timed_out: false,
            quit_parser: None,
            interrupted: None,
            writes: Vec::new(),
        }
    }

    async fn run(mut self) {
        let settings = self.request.settings.clone();
        let resolver = Arc::clone(&self.resolver);
        let connecting = connect(
            &self.request.target,
            self.request.source_ip,
            settings.timeouts.connect,
            &resolver,
        );
        let stream = tokio::select! {
            result = connecting => result,
            () = link_dropped(&mut self.commands) => {
                tracing::debug!("connect abandoned: the scheduler closed the connection");
                self.report_never_connected();
                return;
            }
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, stage = Stage::NotConnected.as_str(), "connect failed");
                self.fail(error, Stage::NotConnected);
                // The scheduler handles the failure by dropping the link,
                // and the close deadline bounds the wait.
                let _ = timeout(settings.timeouts.close, link_dropped(&mut self.commands)).await;
                self.report_never_connected();
                return;
            }
        };
        let Connected { stream, host } = stream;
        self.connected_host = host;
        if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
            self.events.report(SessionEvent::Connected { local, peer });
        }

        let mut transport = Transport::Plain(stream);
        let implicit_tls = if settings.tls.policy == TlsPolicy::Implicit {
            self.implicit_tls(&mut transport).await
        } else {
            Ok(())
        };
        let end = match implicit_tls {
            Ok(()) => self.converse(&mut transport).await,
            Err(error) => {
                if self.interrupted.is_none() {
                    self.fail(error, Stage::TlsHandshake);
                }
                self.wait_for_close().await
            }
        };
        let plan = match end {
            LoopEnd::Close(plan) => plan,
            LoopEnd::Abandoned => ClosePlan {
                send_quit: false,
                deadline: (Instant::now() + settings.timeouts.close).into_std(),
            },
        };
        let mut report = shutdown(
            transport,
            ShutdownPlan {
                quit: self.quit.step(plan.send_quit),
                quit_timeout: settings.timeouts.quit,
                deadline: Instant::from_std(plan.deadline),
                stream_end: self.stream_end,
            },
            self.quit_parser.take(),
        )
        .await;
        if let (QuitProgress::Unanswered(outcome), CloseOutcome::Clean) =
            (self.quit, report.outcome)
        {
            report.outcome = outcome;
        }
        tracing::debug!(outcome = %report.outcome, "socket closed");
        self.report_closed(report);
    }

    fn report_never_connected(&mut self) {
        self.report_closed(CloseReport {
            outcome: CloseOutcome::NeverConnected,
            close_notify_sent: false,
            close_notify_received: false,
        });
    }

    fn report_closed(&mut self, report: CloseReport) {
        self.closed_reported = true;
        self.events.report(SessionEvent::Closed(report));
    }

    /// Runs the SMTP conversation until the scheduler requests a close.
    async fn converse(&mut self, transport: &mut Transport) -> LoopEnd {
        let settings = self.request.settings.clone();
        let ehlo = settings.ehlo_name.clone();
        let config = ClientConfig {
            ehlo_domain: ehlo,
            tls_policy: settings.tls.policy,
            timeouts: Timeouts::from_config(&settings.timeouts, CLIENT_IDLE),
            reply_limits: Default::default(),
            chunking: settings.chunking,
            long_lines: settings.long_lines,
        };
        let mut client = match Client::new(config, std::time::Instant::now()) {
            Ok(client) => client,
            Err(error) => {
                let failure = SessionError::Protocol {
                    stage: Stage::Ehlo,
                    detail: format!("invalid EHLO name: {error}"),
                };
                self.fail(failure, Stage::Ehlo);
                return self.wait_for_close().await;
            }
        };

        let mut buffer = vec![0u8; READ_BUFFER];
        loop {
            // Step 1: write what the client queued.
            if let Err(error) = self.transmit(&mut client, transport).await {
                // The transaction under way ends with the write's failure,
                // which is reported once.
                client.abort();
                let _ = self.drain_events(&mut client, transport).await;
                self.fail(error, client.stage());
                return self.wait_for_close().await;
            }

            // Step 2: hand the client's events over.
            let drained = self.drain_events(&mut client, transport).await;
            if drained.failed {
                return self.wait_for_close().await;
            }
            if client.state() == ClientState::Closed {
                // QUIT went with the last transaction and got its reply, so
                // nothing is left to read before closeconn's close.
                return self.wait_for_close().await;
            }
            if drained.handled > 0 {
                // Handling events (a handshake, the next transaction) may
                // have queued more to write: write it before waiting.
                continue;
            }

            // Step 3: wait for the server, the scheduler or the next deadline.
            let deadline = client.next_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                read = transport.read(&mut buffer) => {
                    self.handle_read(&mut client, read, transport.is_tls(), &buffer);
                }
                command = self.commands.recv() => match command {
                    Some(SessionCommand::Deliver { messages, last }) => {
                        self.batch_open = true;
                        self.last_batch = last;
                        self.queued.extend(messages);
                        if !self.still_idle(&mut client, transport, &mut buffer).await {
                            return self.wait_for_close().await;
                        }
                        self.start_next(&mut client);
                    }
                    Some(SessionCommand::Close(plan)) => {
                        if client.state() == ClientState::ExpectQuit {
                            self.quit_parser = Some(client.take_reply_parser());
                        }
                        return LoopEnd::Close(plan);
                    }
                    Some(_) => {}
                    None => return LoopEnd::Abandoned,
                },
                () = sleep_until_opt(deadline) => {
                    let quitting = client.state() == ClientState::ExpectQuit;
                    client.handle_timeout(std::time::Instant::now());
                    self.quit_timed_out = quitting && client.state() == ClientState::Closed;
                }
            }
        }
    }

    /// Checks, without waiting, that an idle connection can take a
    /// transaction: the server has not closed it, and sent nothing while
    /// it idled (a 421, or junk). Returns false after reporting the
    /// failure; the batch then goes back whole, since none of it started.
    async fn still_idle(
        &mut self,
        client: &mut Client,
        transport: &mut Transport,
        buffer: &mut [u8],
    ) -> bool {
        if let Some(read) = read_now(transport, buffer).await {
            self.handle_read(client, read, transport.is_tls(), buffer);
        }
        let drained = self.drain_events(client, transport).await;
        if drained.failed {
            return false;
        }
        // Part of a line that no reply completed: it would prefix the
        // reply to MAIL and put every later reply out of step.
        let unsolicited = client.buffered_len();
        if unsolicited > 0 {
            client.abort();
            let failure = SessionError::Protocol {
                stage: Stage::Idle,
                detail: format!("server sent {unsolicited} octets while the connection was idle"),
            };
            tracing::debug!(%failure, "idle connection unusable");
            self.fail(failure, Stage::Idle);
            return false;
        }
        true
    }

    /// Hands what a read brought to the client, and notes how the stream
    /// ended if it did.
    fn handle_read(
        &mut self,
        client: &mut Client,
        read: std::io::Result<usize>,
        tls: bool,
        buffer: &[u8],
    ) {
        let now = std::time::Instant::now();
        let reply_due = !matches!(
            client.state(),
            ClientState::Ready | ClientState::Unusable | ClientState::Closed
        );
        self.stream_end = StreamEnd::of_read(&read, tls, reply_due);
        match read {
            Ok(n) if n > 0 => client.handle_input(&buffer[..n], now),
            _ => client.handle_eof(now),
        }
    }

    async fn transmit(
        &mut self,
        client: &mut Client,
        transport: &mut Transport,
    ) -> Result<(), SessionError> {
        let mut writes = std::mem::take(&mut self.writes);
        writes.extend(std::iter::from_fn(|| client.poll_transmit_parts()));
        let result = self.write_all(client, transport, &writes).await;
        writes.clear();
        self.writes = writes;
        result
    }

    /// Writes every buffer the client queued, in order, as one vectored
    /// write with one flush: a pipelined group's commands, message data
    /// and a QUIT after it leave together.
    async fn write_all(
        &mut self,
        client: &mut Client,
        transport: &mut Transport,
        writes: &[TransmitParts],
    ) -> Result<(), SessionError> {
        if writes.is_empty() {
            return Ok(());
        }
        let block = self.request.settings.timeouts.data_block;
        let stage = client.stage();
        match timeout(block, write_flush(transport, writes)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.stream_end = StreamEnd::of_write(&error);
                let kind = error.kind();
                return Err(match kind {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                        SessionError::Reset { stage }
                    }
                    _ => SessionError::Io { stage, kind },
                });
            }
            Err(_) => {
                return Err(SessionError::Timeout {
                    stage,
                    after: block,
                })
            }
        }
        let len: usize = writes.iter().map(TransmitParts::len).sum();
        self.events.bytes_sent(len as u64);

        if client.quit_handed_out() && self.quit == QuitProgress::NotSent {
            self.quit = QuitProgress::Sent;
        }
        client.handle_transmitted(std::time::Instant::now());
        // The data and its final dot are the last write of a
        // transaction, so only a write that completed can have
        // delivered the dot.
        self.final_dot_sent |= client.delivery_unknown_pending();
        Ok(())
    }

    /// Handles every pending client event.
    async fn drain_events(&mut self, client: &mut Client, transport: &mut Transport) -> Drained {
        let mut failed = false;
        let mut handled = 0;
        while let Some(event) = client.poll_event() {
            handled += 1;
            match event {
                ClientEvent::Ready { capabilities, tls } => {
                    self.events.report(SessionEvent::Ready {
                        tls: if tls { self.tls.clone() } else { None },
                        capabilities: session_capabilities(&capabilities),
                    });
                    self.start_next(client);
                }
                ClientEvent::StartTls => {
                    if let Err(error) = self.handshake(client, transport).await {
                        if self.interrupted.is_none() {
                            record_handshake(self.request.settings.tls.policy, None);
                            self.fail(error, Stage::TlsHandshake);
                        }
                        failed = true;
                    }
                }
                ClientEvent::MailRejected { reply } => {
                    // Reported at once, like a RCPT rejection, so that it
                    // is kept even if the transaction never ends.
                    if let Some(current) = self.current.as_ref() {
                        self.events.report(SessionEvent::MailRejected {
                            message: current.message.id,
                            reply,
                        });
                    }
                }
                ClientEvent::RecipientReply { index, reply } => {
                    if let Some(current) = self.current.as_mut() {
                        // A rejection, 4xx or 5xx, is reported at once, so
                        // that it is kept even if the transaction never ends.
                        let message_index = current.recipient_index.get(index).copied();
                        let rejected = message_index.filter(|_| !reply.is_positive_completion());
                        if let Some(message_index) = rejected {
                            self.events.report(SessionEvent::RecipientRejected {
                                message: current.message.id,
                                index: message_index,
                                reply: reply.clone(),
                            });
                        }
                        if let Some(slot) = current.rcpt_replies.get_mut(index) {
                            *slot = Some(reply);
                        }
                    }
                }
                ClientEvent::TransactionFinished(end) => {
                    if let Some(outcome) = self.finish_transaction(end) {
                        self.events.report(SessionEvent::Transaction(outcome));
                        self.start_next(client);
                    }
                }
                ClientEvent::Failed { stage, error } => {
                    let error = self.session_error(error, stage);
                    tracing::debug!(%error, stage = stage.as_str(), "session failed");
                    self.fail(error, stage);
                    failed = true;
                }
                ClientEvent::Closed { reply } => {
                    // Only QUIT closes the client without a failure. An
                    // invalid reply to it ends the wait as a reply does.
                    self.quit = match reply {
                        None if self.stream_end.is_some() => {
                            QuitProgress::Unanswered(CloseOutcome::NoQuitReply)
                        }
                        None if self.quit_timed_out => {
                            QuitProgress::Unanswered(CloseOutcome::QuitTimedOut)
                        }
                        _ => QuitProgress::Answered,
                    };
                }
                ClientEvent::IdleTimeout => {}
            }
        }
        Drained { failed, handled }
    }

    /// Runs the TLS handshake after the server's 220 to STARTTLS.
    async fn handshake(
        &mut self,
        client: &mut Client,
        transport: &mut Transport,
    ) -> Result<(), SessionError> {
        // EHLO waits in rustls until the handshake is done, and then leaves
        // in the same write as the client's Finished (TLS 1.3).
        let ehlo = client.ehlo_after_tls();
        let ehlo_queued = self.tls_handshake(transport, &ehlo).await?;
        let now = std::time::Instant::now();
        let established = match ehlo_queued {
            0 => client.tls_established(now),
            queued if queued == ehlo.len() => {
                self.events.bytes_sent(queued as u64);
                client.tls_established_with_ehlo(now)
            }
            queued => {
                // rustls buffers up to 64 KiB of plaintext by default
                // before the handshake ends, far more than an EHLO line.
                return Err(SessionError::Protocol {
                    stage: Stage::TlsHandshake,
                    detail: format!("TLS took {queued} of the EHLO's {} octets", ehlo.len()),
                });
            }
        };
        established.map_err(|error| SessionError::Protocol {
            stage: Stage::TlsHandshake,
            detail: error.to_string(),
        })
    }

    /// Runs the TLS handshake of implicit TLS, right after the connect and
    /// before the server's greeting, and records its result.
    async fn implicit_tls(&mut self, transport: &mut Transport) -> Result<(), SessionError> {
        let result = self.tls_handshake(transport, &[]).await;
        if result.is_err() && self.interrupted.is_none() {
            record_handshake(self.request.settings.tls.policy, None);
        }
        result.map(drop)
    }

    /// Turns the clear-text TCP stream in `transport` into a TLS stream,
    /// with the certificate checks of the session's TLS settings, and
    /// records a successful handshake. `early` is handed to TLS before the
    /// handshake, so that it leaves with the client's last flight. Returns
    /// how many octets of `early` TLS took.
    async fn tls_handshake(
        &mut self,
        transport: &mut Transport,
        early: &[u8],
    ) -> Result<usize, SessionError> {
        let settings = self.request.settings.clone();
        let config = self
            .tls_configs
            .get(&settings.tls)
            .map_err(|error| SessionError::TlsHandshake(error.to_string()))?;
        let name = settings
            .tls
            .server_name
            .clone()
            .or_else(|| self.connected_host.clone())
            .unwrap_or_else(|| match &self.request.target {
                ec_types::Target::Host { host, .. } => host.clone(),
                other => other
                    .to_string()
                    .rsplit_once(':')
                    .map_or_else(String::new, |(host, _)| host.to_owned()),
            });
        let name =
            server_name(&name).map_err(|error| SessionError::TlsHandshake(error.to_string()))?;

        let Transport::Plain(tcp) = std::mem::replace(transport, Transport::Detached) else {
            return Err(SessionError::Protocol {
                stage: Stage::TlsHandshake,
                detail: "TLS handshake on a stream that is not clear-text TCP".to_owned(),
            });
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let after = settings.timeouts.tls_handshake;
        let mut early_queued = 0;
        let handshake = connector
            .connect_with(name, tcp, |connection| {
                if !early.is_empty() {
                    early_queued =
                        std::io::Write::write(&mut connection.writer(), early).unwrap_or(0);
                }
            })
            .into_fallible();
        // The scheduler may close the connection (a shutdown, say) while
        // the handshake runs: the close then ends it at once.
        let result = tokio::select! {
            result = timeout(after, handshake) => result,
            end = next_close(&mut self.commands) => {
                tracing::debug!("TLS handshake abandoned: the scheduler closed the connection");
                self.interrupted = Some(end);
                self.stream_end = Some(StreamEnd::TlsFailed);
                return Err(SessionError::Protocol {
                    stage: Stage::TlsHandshake,
                    detail: "the scheduler closed the connection during the TLS handshake"
                        .to_owned(),
                });
            }
        };
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err((error, tcp))) => {
                tracing::warn!(%error, stage = Stage::TlsHandshake.as_str(), "TLS handshake failed");
                // The TCP stream comes back, so the close can still send
                // FIN and wait for the server's.
                *transport = Transport::Plain(tcp);
                self.stream_end = Some(StreamEnd::TlsFailed);
                return Err(SessionError::TlsHandshake(error.to_string()));
            }
            Err(_) => {
                self.stream_end = Some(StreamEnd::TlsFailed);
                return Err(SessionError::Timeout {
                    stage: Stage::TlsHandshake,
                    after,
                });
            }
        };

        let connection = stream.get_ref().1;
        self.tls = Some(TlsInfo {
            version: connection
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .replace('_', "."),
            cipher_suite: connection
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown")
                .to_owned(),
            verified: settings.tls.effective_verify() != TlsVerify::None,
        });
        record_handshake(settings.tls.policy, self.tls.as_ref());
        *transport = Transport::Tls(Box::new(stream));
        Ok(early_queued)
    }

    /// Starts the next queued message's transaction, if the client is ready
    /// and none is under way. Messages the server cannot take (too large,
    /// needs SMTPUTF8) fail at once without touching the connection.
    fn start_next(&mut self, client: &mut Client) {
        while self.current.is_none() {
            if self.queued.is_empty() {
                self.end_batch(client);
                return;
            }
            if client.state() != ClientState::Ready {
                return;
            }
            let Some(message) = self.queued.pop_front() else {
                return;
            };
            let recipient_index: Vec<usize> =
                message.pending_recipients().map(|(i, _)| i).collect();
            let transaction = Transaction {
                reverse_path: message.reverse_path.as_str().to_owned(),
                recipients: recipient_index
                    .iter()
                    .map(|&i| message.recipients[i].address.as_str().to_owned())
                    .collect(),
                data: message.data.clone(),
            };
            match client.start_transaction(transaction, std::time::Instant::now()) {
                Ok(()) => {
                    if self.last_batch && self.queued.is_empty() {
                        // Cannot fail: a transaction was just started.
                        let _ = client.quit_after_transaction();
                    }
                    self.current = Some(InTransaction {
                        rcpt_replies: vec![None; recipient_index.len()],
                        message,
                        recipient_index,
                        started: std::time::Instant::now(),
                    });
                }
                Err(rejected) if rejected.error.is_permanent() => {
                    let reply = Reply::made_locally(
                        ReplyCode::TRANSACTION_FAILED,
                        Some(rejected.error.status_code()),
                        &format!("not sent: {}", rejected.error),
                    );
                    tracing::info!(message = %message.id, error = %rejected.error, "message cannot be sent to this server");
                    let recipients = message
                        .recipients
                        .iter()
                        .map(|r| {
                            if r.status.is_final() {
                                r.status.clone()
                            } else {
                                RecipientStatus::Failed(reply.clone())
                            }
                        })
                        .collect();
                    self.events
                        .report(SessionEvent::Transaction(TransactionOutcome {
                            message: message.id,
                            recipients,
                            elapsed: Duration::ZERO,
                        }));
                }
                Err(rejected) => {
                    tracing::debug!(error = %rejected.error, "transaction not started");
                    self.queued.push_front(message);
                    return;
                }
            }
        }
    }

    /// Reports the batch done once every message in it has an outcome.
    /// After the connection's last batch, QUIT goes now if it did not go
    /// with the last transaction (when no transaction started for the
    /// last message).
    fn end_batch(&mut self, client: &mut Client) {
        if !self.batch_open {
            return;
        }
        self.batch_open = false;
        self.events.report(SessionEvent::BatchDone);
        if self.last_batch {
            client.quit(std::time::Instant::now());
        }
    }

    /// Turns a transaction's end into per-recipient statuses. An aborted
    /// transaction returns `None`: the failure event that follows carries
    /// it, and `closeconn` gives it its fate.
    fn finish_transaction(&mut self, end: TransactionEnd) -> Option<TransactionOutcome> {
        let current = self.current.take()?;
        let final_dot_sent = std::mem::take(&mut self.final_dot_sent);
        let overall: Option<RecipientStatus> = match &end {
            TransactionEnd::Delivered { reply } => Some(RecipientStatus::Delivered(reply.clone())),
            TransactionEnd::MailRejected { reply }
            | TransactionEnd::DataRejected { reply }
            | TransactionEnd::MessageRejected { reply } => Some(status_for(reply)),
            TransactionEnd::NoValidRecipients => None,
            TransactionEnd::Aborted {
                delivery_unknown, ..
            } => {
                // The client tracks whether a reply to the dot came, and the
                // driver tracks whether the dot was written at all.
                self.final_dot_sent = final_dot_sent && *delivery_unknown;
                self.current = Some(current);
                return None;
            }
        };
        let mail_rejected = matches!(end, TransactionEnd::MailRejected { .. });

        let mut recipients: Vec<RecipientStatus> = current
            .message
            .recipients
            .iter()
            .map(|r| r.status.clone())
            .collect();
        for (position, &index) in current.recipient_index.iter().enumerate() {
            let rcpt = current.rcpt_replies[position].as_ref();
            recipients[index] = match (rcpt, &overall) {
                (_, Some(status)) if mail_rejected => status.clone(),
                (Some(reply), _) if !reply.code.is_positive_completion() => status_for(reply),
                (_, Some(status)) => status.clone(),
                (_, None) => RecipientStatus::Deferred(Reply::made_locally(
                    ReplyCode::new(451).unwrap_or(ReplyCode::SERVICE_NOT_AVAILABLE),
                    None,
                    "no reply for this recipient",
                )),
            };
        }
        Some(TransactionOutcome {
            message: current.message.id,
            recipients,
            elapsed: current.started.elapsed(),
        })
    }

    /// Reports a failure, with the message in transaction and whether its
    /// final dot went out unanswered.
    fn fail(&mut self, error: SessionError, stage: Stage) {
        let in_transaction: Option<MessageId> = self.current.as_ref().map(|c| c.message.id);
        let final_dot_sent = in_transaction.is_some() && self.final_dot_sent;
        self.events.report(SessionEvent::Failed(SessionFailure {
            error,
            stage,
            in_transaction,
            final_dot_sent,
        }));
    }

    fn session_error(&self, error: ClientError, stage: Stage) -> SessionError {
        match error {
            ClientError::BannerRejected(reply)
            | ClientError::EhloRejected(reply)
            | ClientError::HeloRejected(reply)
            | ClientError::ServiceClosing(reply) => SessionError::Reply { stage, reply },
            // A server that rejects RSET is out of step. The rejection is
            // not about the message, so the message must not fail for it.
            ClientError::RsetRejected(reply) => SessionError::Protocol {
                stage,
                detail: format!("server refused RSET with \"{reply}\""),
            },
            ClientError::TlsUnavailable(TlsUnavailable::Rejected(reply)) => {
                SessionError::StartTlsRefused(reply)
            }
            ClientError::TlsUnavailable(_) => SessionError::TlsNotOffered,
            ClientError::StartTlsInjection { len } => SessionError::StartTlsInjection { len },
            ClientError::Timeout { after, .. } => SessionError::Timeout { stage, after },
            ClientError::ConnectionClosed { stage }
                if self.stream_end == Some(StreamEnd::Reset) =>
            {
                SessionError::Reset { stage }
            }
            ClientError::ConnectionClosed { stage } => SessionError::PeerClosed { stage },
            other => SessionError::Protocol {
                stage,
                detail: other.to_string(),
            },
        }
    }

    /// After a failure: keeps reading nothing, waits for `closeconn`'s plan.
    async fn wait_for_close(&mut self) -> LoopEnd {
        if let Some(end) = self.interrupted.take() {
            return end;
        }
        loop {
            match self.commands.recv().await {
                Some(SessionCommand::Close(plan)) => return LoopEnd::Close(plan),
                Some(SessionCommand::Deliver { messages, .. }) => {
                    // A batch sent before the scheduler saw the failure: it is
                    // still in the scheduler's construct, which requeues it.
                    tracing::debug!(messages = messages.len(), "batch for a failed session");
                }
                Some(_) => {}
                None => return LoopEnd::Abandoned,
            }
        }
    }
}

/// Waits for the scheduler's close, or for the scheduler to go away.
/// Nothing else can come before the session is ready, and a batch that
/// came anyway stays with the scheduler, which requeues it.
async fn next_close(commands: &mut mpsc::UnboundedReceiver<SessionCommand>) -> LoopEnd {
    loop {
        match commands.recv().await {
            Some(SessionCommand::Close(plan)) => return LoopEnd::Close(plan),
            Some(_) => {}
            None => return LoopEnd::Abandoned,
        }
    }
}

/// Polls one read without waiting: `None` when nothing is ready. A
/// zero-length tokio timeout would not do, because the timer wheel's 1 ms
/// resolution makes it wait for the next tick when the read is pending.
async fn read_now(transport: &mut Transport, buffer: &mut [u8]) -> Option<std::io::Result<usize>> {
    let mut read_buf = tokio::io::ReadBuf::new(buffer);
    let polled = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(tokio::io::AsyncRead::poll_read(
            std::pin::Pin::new(&mut *transport),
            cx,
            &mut read_buf,
        ))
    })
    .await;
    match polled {
        std::task::Poll::Pending => None,
        std::task::Poll::Ready(Ok(())) => Some(Ok(read_buf.filled().len())),
        std::task::Poll::Ready(Err(error)) => Some(Err(error)),
    }
}

/// The maximum number of buffers in one vectored write call; more go in
/// further calls before the one flush.
const WRITE_SLICES: usize = 8;

/// Writes every part of `writes` in order, with vectored writes so that
/// they leave in one segment when they fit, and flushes once, so a TLS
/// record goes out at once.
async fn write_flush(transport: &mut Transport, writes: &[TransmitParts]) -> std::io::Result<()> {
    // Part `2 * i` is the head of write `i`, and part `2 * i + 1` its tail.
    let parts = 2 * writes.len();
    let mut next = 0;
    while next < parts {
        let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
        let mut count = 0;
        while next < parts && count < WRITE_SLICES {
            let write = &writes[next / 2];
            let part = if next % 2 == 0 {
                &write.head
            } else {
                &write.tail
            };
            next += 1;
            if !part.is_empty() {
                slices[count] = IoSlice::new(part);
                count += 1;
            }
        }

        let mut pending = &mut slices[..count];
        while !pending.is_empty() {
            let written = transport.write_vectored(pending).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut pending, written);
        }
    }
    transport.flush().await
}

/// Completes when the scheduler drops the session's link. No command is
/// due before the session is ready, so any that arrives is dropped.
async fn link_dropped(commands: &mut mpsc::UnboundedReceiver<SessionCommand>) {
    while commands.recv().await.is_some() {}
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn status_for(reply: &Reply) -> RecipientStatus {
    if reply.code.is_permanent() {
        RecipientStatus::Failed(reply.clone())
    } else {
        RecipientStatus::Deferred(reply.clone())
    }
}

fn session_capabilities(capabilities: &Capabilities) -> SessionCapabilities {
    SessionCapabilities {
        pipelining: capabilities.pipelining,
        size_limit: capabilities.max_message_size,
        eight_bit_mime: capabilities.eight_bit_mime,
        smtputf8: capabilities.smtputf8,
        starttls: capabilities.starttls,
    }
}

/// Counts a TLS handshake under `policy`: established with the version of
/// `tls`, or failed when there is no TLS session.
fn record_handshake(policy: ec_types::TlsPolicy, tls: Option<&TlsInfo>) {
    let result = match tls {
        Some(tls) => TlsHandshakeResult::Established(TlsVersion::from_name(&tls.version)),
        None => TlsHandshakeResult::Failed,
    };
    ec_metrics::tls_handshake(policy, result);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ec_types::{
        BindingSlot, ConnectionHandle, ConnectionId, Domain, EffectiveSettings, Target,
    };

    use super::*;

    /// Records every event, and panics on `Connected`, as a bug inside a
    /// session would.
    struct PanicOnConnected(Arc<Mutex<Vec<SessionEvent>>>);

    impl EventSink for PanicOnConnected {
        fn report(&self, event: SessionEvent) {
            let connected = matches!(event, SessionEvent::Connected { .. });
            self.0.lock().expect("events").push(event);
            assert!(!connected, "a bug in the session");
        }
    }

    #[tokio::test]
    async fn panicking_session_reports_closed() {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a loopback port");
        let mut settings = EffectiveSettings::default();
        settings.tls.policy = TlsPolicy::Disabled;
        let request = OpenRequest {
            handle: ConnectionHandle {
                slot: 0,
                generation: 0,
            },
            id: ConnectionId(1),
            binding: BindingSlot(0),
            binding_name: Arc::from("default"),
            source_ip: None,
            domain: Domain::new("example.test").expect("a domain"),
            target: Target::Address(listener.local_addr().expect("local address")),
            settings: Arc::new(settings),
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let (_commands, receiver) = mpsc::unbounded_channel();

        let task = tokio::spawn(run(
            request,
            PanicOnConnected(Arc::clone(&events)),
            receiver,
            Arc::new(TlsConfigCache::default()),
            Arc::new(MxResolver::new(ec_types::DnsSettings::default())),
        ));
        let joined = task.await;

        assert!(joined.is_err_and(|error| error.is_panic()));
        let events = events.lock().expect("events");
        assert!(
            matches!(
                events.last(),
                Some(SessionEvent::Closed(CloseReport {
                    outcome: CloseOutcome::Aborted,
                    ..
                }))
            ),
            "{events:?}"
        );
    }
}
