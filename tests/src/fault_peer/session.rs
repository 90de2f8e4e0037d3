//! One connection: a scenario played against a client, every step recorded.
//!
//! The session sends the banner, then reads commands one line at a time from
//! the bytes the client sent, so pipelined commands get their replies in order. For
//! each command it looks up the response in the scenario, writes it and does what
//! follows it. After a `354` to `DATA` it reads message data up to the end-of-data
//! mark. While it advertises CHUNKING, it reads the octets a `BDAT` line announces
//! before it replies to that line (RFC 3030). Whatever it does, the connection ends
//! within the scenario's connection timeout.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::command::{Bdat, Input, Verb};
use super::record::{ends_chunked_message, ClientEnd, ConnectionLog, Event, TcpEnd};
use super::response::{After, Close, Occasion, Payload, Response};
use super::scenario::{Scenario, Transfer};
use super::tls;
use super::transport::{ReadOutcome, Transport};

/// The maximum command line length the peer waits for. Past it, the peer records
/// the line and closes. RFC 5321 section 4.5.3.1.4 allows 512 bytes.
const MAX_LINE: usize = 64 * 1024;

/// How much of a streamed payload goes into one write.
const STREAM_CHUNK: usize = 64 * 1024;

/// Free space the input buffer has before each read, so one read takes everything
/// queued on the socket (a loopback segment is at most 64 KiB) and the read numbers in
/// the record follow segments, not the buffer's growth.
const READ_SPACE: usize = 64 * 1024;

/// The reply to a `BDAT` line whose arguments do not parse. The peer cannot know
/// how many octets follow, so it reads on for commands.
const BAD_BDAT: &str = "501 5.5.4 Syntax: BDAT <chunk-size> [LAST]";

/// Plays `scenario` on `tcp` and marks the record finished when done.
pub(crate) async fn run(tcp: TcpStream, scenario: Arc<Scenario>, mut log: ConnectionLog) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::warn!(connection = log.id(), %error, "fault peer could not set TCP_NODELAY");
    }

    let limit = scenario.connection_timeout;
    let mut session = Session {
        transport: Transport::Plain(tcp),
        input: Input::default(),
        scenario,
        log: &log,
        occurrences: HashMap::new(),
        messages: 0,
        chunked: None,
        idle_fired: false,
        without_transaction: false,
    };
    if tokio::time::timeout(limit, session.play()).await.is_err() {
        log.push(Event::ConnectionTimedOut);
    }
    drop(session);
    log.finish();
}

/// Whether the session goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// A `354` went out: message data comes next.
    ReadMessage,
    Stop,
}

/// What waiting for a command brought.
#[derive(Debug)]
enum Next {
    Command(Bytes, u64),
    Idle(Response),
    Stop,
}

/// A message whose data is arriving in `BDAT` chunks, until its `LAST` one.
#[derive(Debug, Clone, Copy)]
struct ChunkedMessage {
    /// Its number among the messages on the connection (1-based).
    number: u32,
    /// Octets of its chunks received so far.
    octets: usize,
}

/// What the first byte after a `220` to `STARTTLS` shows.
#[derive(Debug)]
enum FirstByte {
    Handshake,
    PlainText,
    Closed(ReadOutcome),
}

struct Session<'a> {
    transport: Transport,
    input: Input,
    scenario: Arc<Scenario>,
    log: &'a ConnectionLog,
    /// Commands seen so far on this connection, by verb.
    occurrences: HashMap<Verb, u32>,
    /// Messages whose data started so far on this connection, after `DATA` or in
    /// `BDAT` chunks.
    messages: u32,
    /// The message whose chunks came without `LAST` so far, if any.
    chunked: Option<ChunkedMessage>,
    idle_fired: bool,
    /// A reply marked with [`Response::rejects_transaction`] went out, and no
    /// `MAIL`, `RSET`, `HELO` or `EHLO` came since.
    without_transaction: bool,
}

impl Session<'_> {
    async fn play(&mut self) {
        if self.scenario.implicit_tls && self.handshake().await == Flow::Stop {
            return;
        }
        let banner = self.scenario.banner.clone();
        let mut flow = self.answer(&banner, &Occasion::Banner).await;

        while flow != Flow::Stop {
            flow = match self.next_command().await {
                Next::Command(line, read) => self.command(line, read).await,
                Next::Idle(response) => self.answer(&response, &Occasion::Idle).await,
                Next::Stop => Flow::Stop,
            };
            if flow == Flow::ReadMessage {
                flow = self.message_data().await;
            }
        }
    }

    /// Waits for the next complete command line, or for the idle timer.
    async fn next_command(&mut self) -> Next {
        let idle = match (&self.scenario.idle, self.idle_fired) {
            (Some((after, response)), false) => Some((Instant::now() + *after, response.clone())),
            _ => None,
        };

        loop {
            if let Some((line, read)) = self.input.take_line() {
                return Next::Command(line, read);
            }
            if self.input.len() > MAX_LINE {
                self.log.push(Event::LineTooLong {
                    bytes: self.input.len(),
                });
                self.close(Close::Clean).await;
                return Next::Stop;
            }

            let outcome = match &idle {
                Some((deadline, response)) => {
                    match tokio::time::timeout_at(*deadline, self.read()).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            self.idle_fired = true;
                            return Next::Idle(response.clone());
                        }
                    }
                }
                None => self.read().await,
            };
            if !matches!(outcome, ReadOutcome::Data(_)) {
                self.client_left(outcome).await;
                return Next::Stop;
            }
        }
    }

    async fn command(&mut self, line: Bytes, read: u64) -> Flow {
        let verb = Verb::of_line(&line);
        let tls = self.transport.is_tls();
        if ends_chunked_message(&line) {
            self.chunked = None;
        }
        self.log.push(Event::Command {
            line: line.clone(),
            tls,
            read,
        });

        if matches!(verb, Verb::Mail | Verb::Rset | Verb::Helo | Verb::Ehlo) {
            self.without_transaction = false;
        }
        let occurrence = self.occurrences.entry(verb.clone()).or_default();
        *occurrence += 1;
        let occurrence = *occurrence;
        if verb == Verb::Bdat && self.scenario.offers_chunking(tls) {
            return self.bdat(&line, read, occurrence).await;
        }
        let response = self.scenario.response_to(&verb, occurrence);
        self.answer(&response, &Occasion::Command(verb)).await
    }

    /// Reads the chunk a `BDAT` line announced, then replies with the script's
    /// response to the `occurrence`-th `BDAT`. `read` is the read that completed
    /// the line.
    async fn bdat(&mut self, line: &[u8], read: u64, occurrence: u32) -> Flow {
        let Some(Bdat { size, last }) = Bdat::parse(line) else {
            let response = Response::reply(BAD_BDAT);
            return self.answer(&response, &Occasion::Command(Verb::Bdat)).await;
        };
        let message = self.chunked.unwrap_or_else(|| {
            self.messages += 1;
            ChunkedMessage {
                number: self.messages,
                octets: 0,
            }
        });
        if !self.chunk_data(message, size, last, read).await {
            return Flow::Stop;
        }

        self.chunked = (!last).then_some(ChunkedMessage {
            number: message.number,
            octets: message.octets + size,
        });
        let response = self.scenario.response_to(&Verb::Bdat, occurrence);
        let occasion = Occasion::Chunk {
            message: message.number,
            last,
            size,
        };
        self.answer(&response, &occasion).await
    }

    /// Waits for the `size` octets of a chunk of `message` and records them,
    /// applying the message's mid-data fault. `line_read` is the read that
    /// completed the `BDAT` line. Returns `false` when the fault struck or the
    /// client left first.
    async fn chunk_data(
        &mut self,
        message: ChunkedMessage,
        size: usize,
        last: bool,
        line_read: u64,
    ) -> bool {
        let fault = self.scenario.mid_data(message.number, Transfer::Chunks);

        loop {
            let arrived = self.input.len().min(size);
            let struck = fault.filter(|fault| message.octets + arrived >= fault.after_bytes);
            if let Some(fault) = struck {
                if let Some(name) = self
                    .scenario
                    .mid_data_fault_name(message.number, Transfer::Chunks)
                {
                    self.log.push(Event::FaultInjected(name));
                }
                let (data, _) = self.input.take_up_to(size);
                self.log.push(Event::PartialChunk {
                    data,
                    tls: self.transport.is_tls(),
                });
                self.close(fault.close).await;
                return false;
            }
            if arrived == size {
                let (data, read) = self.input.take_up_to(size);
                self.log.push(Event::Chunk {
                    data,
                    last,
                    tls: self.transport.is_tls(),
                    read: read.unwrap_or(line_read),
                });
                return true;
            }

            let outcome = self.read().await;
            if !matches!(outcome, ReadOutcome::Data(_)) {
                self.client_left(outcome).await;
                return false;
            }
        }
    }

    /// Reads one message's data (applying a mid-data fault) and replies to its end.
    async fn message_data(&mut self) -> Flow {
        self.messages += 1;
        let message = self.messages;
        let fault = self.scenario.mid_data(message, Transfer::Data);

        loop {
            if let Some(fault) = fault.filter(|fault| self.input.len() >= fault.after_bytes) {
                if let Some(name) = self.scenario.mid_data_fault_name(message, Transfer::Data) {
                    self.log.push(Event::FaultInjected(name));
                }
                self.log.push(Event::PartialBody {
                    data: self.input.take_all(),
                    tls: self.transport.is_tls(),
                });
                self.close(fault.close).await;
                return Flow::Stop;
            }
            if let Some(data) = self.input.take_body() {
                self.log.push(Event::Body {
                    data,
                    tls: self.transport.is_tls(),
                });
                break;
            }
            let outcome = self.read().await;
            if !matches!(outcome, ReadOutcome::Data(_)) {
                self.client_left(outcome).await;
                return Flow::Stop;
            }
        }

        let response = self.scenario.response_to_end_of_data(message);
        self.answer(&response, &Occasion::EndOfData(message)).await
    }

    /// Writes `response` and does what follows it.
    async fn answer(&mut self, response: &Response, occasion: &Occasion) -> Flow {
        if let Some(name) = response.fault_name() {
            self.log.push(Event::FaultInjected(name));
        }
        if response.is_transaction_rejection() {
            self.without_transaction = true;
        }
        let Some(written) = self.send(response, occasion).await else {
            return Flow::Stop;
        };
        let after = response.resolved_after(occasion, &written);

        let data_accepted =
            *occasion == Occasion::Command(Verb::Data) && written.starts_with(b"354");
        match after {
            After::Continue if data_accepted => Flow::ReadMessage,
            After::Continue => Flow::Continue,
            After::Silence => {
                self.silence().await;
                Flow::Stop
            }
            After::Close(how) => {
                self.close(how).await;
                Flow::Stop
            }
            After::Handshake => self.handshake().await,
            After::RejectHandshake { alert } => {
                self.reject_handshake(alert).await;
                Flow::Stop
            }
        }
    }

    /// Waits the response's delay and writes its payload. Returns what was written
    /// (a stream's prefix), or `None` when a write failed.
    async fn send(&mut self, response: &Response, occasion: &Occasion) -> Option<Bytes> {
        if !response.delay().is_zero() {
            tokio::time::sleep(response.delay()).await;
        }
        match response.payload() {
            Payload::Nothing => Some(Bytes::new()),
            Payload::Standard => {
                let out_of_sequence = self
                    .without_transaction
                    .then(|| Scenario::reply_without_transaction(occasion))
                    .flatten();
                let reply = out_of_sequence.unwrap_or_else(|| {
                    self.scenario
                        .standard_reply(occasion, self.transport.is_tls())
                });
                self.write(reply).await
            }
            Payload::Bytes(bytes) => self.write(bytes.clone()).await,
            Payload::Stream {
                prefix,
                unit,
                limit,
            } => self.stream(prefix, unit, *limit).await,
        }
    }

    async fn write(&mut self, bytes: Bytes) -> Option<Bytes> {
        let tls = self.transport.is_tls();
        match self.transport.write(&bytes).await {
            Ok(()) => {
                self.log.push(Event::Sent {
                    bytes: bytes.clone(),
                    tls,
                });
                Some(bytes)
            }
            Err(error) => {
                self.log.push(Event::WriteFailed(format!(
                    "writing {} bytes: {error}",
                    bytes.len()
                )));
                None
            }
        }
    }

    async fn stream(&mut self, prefix: &Bytes, unit: &Bytes, limit: usize) -> Option<Bytes> {
        let mut units = BytesMut::with_capacity(STREAM_CHUNK + unit.len());
        while units.len() < STREAM_CHUNK {
            units.extend_from_slice(unit);
        }
        let mut first = BytesMut::from(&prefix[..]);
        first.extend_from_slice(&units);

        let tls = self.transport.is_tls();
        let mut written = 0;
        let mut error = None;
        while written < limit {
            let chunk = if written == 0 { &first[..] } else { &units[..] };
            let chunk = &chunk[..chunk.len().min(limit - written)];
            if let Err(e) = self.transport.write(chunk).await {
                error = Some(e.to_string());
                break;
            }
            written += chunk.len();
        }

        let failed = error.is_some();
        self.log.push(Event::Streamed {
            bytes: written,
            tls,
            error,
        });
        (!failed).then(|| prefix.clone())
    }

    /// Sends nothing more; records what arrives until the client closes.
    async fn silence(&mut self) {
        loop {
            self.record_unanswered();
            let outcome = self.read().await;
            if !matches!(outcome, ReadOutcome::Data(_)) {
                self.client_left(outcome).await;
                return;
            }
        }
    }

    /// Closes the way `how` names, then reads until the client closes or the drain
    /// timeout passes.
    async fn close(&mut self, how: Close) {
        self.log.push(Event::PeerClosed(how));
        if how == Close::Reset {
            if let Err(error) = self.transport.reset() {
                self.log.push(Event::WriteFailed(format!(
                    "setting SO_LINGER to 0: {error}"
                )));
            }
            return;
        }

        if let Err(error) = self.transport.shutdown(how == Close::Clean).await {
            self.log
                .push(Event::WriteFailed(format!("shutting down: {error}")));
            return;
        }
        self.drain().await;
    }

    async fn drain(&mut self) {
        let limit = self.scenario.drain_timeout;
        let drained = tokio::time::timeout(limit, async {
            loop {
                self.record_unanswered();
                let outcome = self.read().await;
                if !matches!(outcome, ReadOutcome::Data(_)) {
                    self.record_end(outcome);
                    return;
                }
            }
        })
        .await;
        if drained.is_err() {
            self.log.push(Event::DrainTimedOut);
        }
    }

    /// Starts TLS as the server on the plain connection.
    async fn handshake(&mut self) -> Flow {
        let held = self.input.take_all();
        if !held.is_empty() {
            self.log.push(Event::PlaintextAfterStartTls(held));
        }

        let Some(config) = self.scenario.tls.clone() else {
            return self
                .fail_handshake("the scenario has no TLS configuration")
                .await;
        };
        match self.first_byte().await {
            FirstByte::Handshake => {}
            FirstByte::PlainText => {
                if let ReadOutcome::Data(_) = self.read().await {
                    let plain = self.input.take_all();
                    self.log.push(Event::PlaintextAfterStartTls(plain));
                }
                return self
                    .fail_handshake("the client sent plain text where a TLS ClientHello was due")
                    .await;
            }
            FirstByte::Closed(outcome) => {
                self.client_left(outcome).await;
                return Flow::Stop;
            }
        }

        let Some(tcp) = self.transport.take_plain() else {
            return self
                .fail_handshake("a handshake was scripted on a connection already inside TLS")
                .await;
        };
        match TlsAcceptor::from(config).accept(tcp).into_fallible().await {
            Ok(stream) => {
                self.log
                    .push(Event::TlsEstablished(tls::tls_info(stream.get_ref().1)));
                self.transport = Transport::Tls(Box::new(stream));
                Flow::Continue
            }
            Err((error, tcp)) => {
                self.transport = Transport::Plain(tcp);
                self.fail_handshake(&error.to_string()).await
            }
        }
    }

    async fn fail_handshake(&mut self, reason: &str) -> Flow {
        self.log.push(Event::TlsHandshakeFailed(reason.to_owned()));
        self.close(Close::Clean).await;
        Flow::Stop
    }

    /// Peeks at the first byte the client sends on the plain connection.
    async fn first_byte(&mut self) -> FirstByte {
        let Transport::Plain(tcp) = &self.transport else {
            return FirstByte::Handshake;
        };
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => FirstByte::Closed(ReadOutcome::Closed(ClientEnd {
                close_notify: None,
                tcp: TcpEnd::Fin,
            })),
            Ok(_) if first[0] == tls::HANDSHAKE_RECORD => FirstByte::Handshake,
            Ok(_) => FirstByte::PlainText,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                FirstByte::Closed(ReadOutcome::Closed(ClientEnd {
                    close_notify: None,
                    tcp: TcpEnd::Reset,
                }))
            }
            Err(error) => FirstByte::Closed(ReadOutcome::Failed(error.to_string())),
        }
    }

    /// Reads the client's first TLS record, answers it with a fatal alert, closes.
    async fn reject_handshake(&mut self, alert: u8) {
        let held = self.input.take_all();
        if !held.is_empty() {
            self.log.push(Event::PlaintextAfterStartTls(held));
        }

        let limit = self.scenario.drain_timeout;
        if let Ok(outcome) = tokio::time::timeout(limit, self.read()).await {
            if !matches!(outcome, ReadOutcome::Data(_)) {
                self.client_left(outcome).await;
                return;
            }
            self.record_unanswered();
        }

        let record = Bytes::copy_from_slice(&tls::alert_record(alert));
        if self.write(record).await.is_some() {
            self.close(Close::Clean).await;
        }
    }

    /// Reads once into the input buffer.
    async fn read(&mut self) -> ReadOutcome {
        let tcp_wait = self.scenario.drain_timeout;
        self.input.buf_mut().reserve(READ_SPACE);
        let outcome = self.transport.read(self.input.buf_mut(), tcp_wait).await;
        if let ReadOutcome::Data(n) = outcome {
            self.input.note_read(n);
        }
        outcome
    }

    /// Records a read that did not bring data; when the client closed its side,
    /// closes the peer's side as a well-behaved server would.
    async fn client_left(&mut self, outcome: ReadOutcome) {
        let closed_cleanly = matches!(
            outcome,
            ReadOutcome::Closed(ClientEnd {
                tcp: TcpEnd::Fin | TcpEnd::StillOpen,
                ..
            })
        );
        self.record_end(outcome);
        if closed_cleanly {
            self.log.push(Event::PeerClosed(Close::Clean));
            // The client may be gone already; there is nothing left to learn.
            let _ = self.transport.shutdown(true).await;
        }
    }

    fn record_end(&self, outcome: ReadOutcome) {
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Closed(end) => self.log.push(Event::ClientClosed(end)),
            ReadOutcome::Failed(reason) if self.transport.is_tls() => {
                self.log.push(Event::TlsError(reason));
            }
            ReadOutcome::Failed(reason) => self.log.push(Event::ReadFailed(reason)),
        }
    }

    fn record_unanswered(&mut self) {
        if self.input.len() > 0 {
            self.log.push(Event::Unanswered {
                bytes: self.input.take_all(),
                tls: self.transport.is_tls(),
            });
        }
    }
}
