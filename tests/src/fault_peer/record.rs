//! What a fault peer saw and did on each connection, as the wire showed it.
//!
//! A [`ConnectionRecord`] is a timed list of [`Event`]s, appended as they happen, so
//! a test can read a record while its connection is still open. The accessors answer
//! the usual questions (which commands, which bodies, did the client send
//! `close_notify`, did mail travel in clear text) from that list. Message data
//! sent with `DATA` and with `BDAT` chunks (RFC 3030) both show in
//! [`ConnectionRecord::bodies`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::{CipherSuite, ProtocolVersion};
use tokio::sync::watch;

use super::command::{has_transaction_line, Verb};
use super::response::Close;
use super::tally::{is_bulk, Retention, Tally};
use super::FaultPeerError;

/// How the client's side of the TCP stream ended, as the peer's reads saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcpEnd {
    /// A read returned 0: the client sent FIN.
    Fin,
    /// A read failed with `ECONNRESET`: the client sent RST.
    Reset,
    /// The client had not closed when the peer stopped waiting (drain timeout).
    StillOpen,
}

/// How the client closed its side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientEnd {
    /// On a TLS connection: whether a `close_notify` alert came before the TCP end
    /// (rustls reported a clean end of stream rather than `UnexpectedEof`). `None`
    /// on a plain connection.
    pub close_notify: Option<bool>,
    /// How the TCP stream ended.
    pub tcp: TcpEnd,
}

/// The TLS session a handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), if any.
    pub sni: Option<String>,
    /// The negotiated protocol version.
    pub version: Option<ProtocolVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<CipherSuite>,
}

/// One thing that happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command line as received, line ending included. `read` numbers the read
    /// that completed it (1-based, per connection). Lines completed by different
    /// reads came in different segments. Lines sharing a read came in one segment,
    /// or in several that all arrived before the peer read.
    Command {
        /// The raw line.
        line: Bytes,
        /// Whether it came inside TLS.
        tls: bool,
        /// The read that completed it.
        read: u64,
    },
    /// A message's data, as received between the `354` and the end-of-data mark:
    /// still dot-stuffed, ending with the CRLF of its last line, mark excluded.
    Body {
        /// The raw data.
        data: Bytes,
        /// Whether it came inside TLS.
        tls: bool,
    },
    /// The part of a message's data that had arrived when a mid-data fault struck.
    PartialBody {
        /// The raw data (may include an end-of-data mark that arrived with it).
        data: Bytes,
        /// Whether it came inside TLS.
        tls: bool,
    },
    /// The octets of one `BDAT` chunk (RFC 3030), exactly as many as its command
    /// line gave: not dot-stuffed, with no end-of-data mark. Recorded once all of
    /// them arrived, before the peer replies to the `BDAT`.
    Chunk {
        /// The raw octets.
        data: Bytes,
        /// Whether the `BDAT` line carried `LAST`.
        last: bool,
        /// Whether it came inside TLS.
        tls: bool,
        /// The read that delivered its last octet, as in [`Event::Command`]; for
        /// an empty chunk, the read that completed its `BDAT` line.
        read: u64,
    },
    /// The octets of a `BDAT` chunk that had arrived when a mid-data fault
    /// struck; never more than the chunk's size.
    PartialChunk {
        /// The raw octets.
        data: Bytes,
        /// Whether they came inside TLS.
        tls: bool,
    },
    /// Bytes the peer wrote, one event per write.
    Sent {
        /// What was written.
        bytes: Bytes,
        /// Whether it went inside TLS.
        tls: bool,
    },
    /// A streamed payload the peer wrote.
    Streamed {
        /// Bytes written.
        bytes: usize,
        /// Whether it went inside TLS.
        tls: bool,
        /// The write error that ended it early, if any.
        error: Option<String>,
    },
    /// Plain-text bytes that arrived after `STARTTLS` and before the handshake:
    /// either pipelined after the `STARTTLS` line, or sent instead of a
    /// ClientHello. The peer discards them, as a careful server must.
    PlaintextAfterStartTls(Bytes),
    /// A TLS handshake completed.
    TlsEstablished(TlsInfo),
    /// A TLS handshake failed; rustls's reason.
    TlsHandshakeFailed(String),
    /// A read inside TLS failed for a reason other than the stream ending.
    TlsError(String),
    /// Bytes that arrived while the peer sent no replies (silence, draining after
    /// its close, the client's first TLS record before an alert).
    Unanswered {
        /// The bytes (decrypted inside TLS).
        bytes: Bytes,
        /// Whether they came inside TLS.
        tls: bool,
    },
    /// A line grew past the peer's limit without ending; the peer closed.
    LineTooLong {
        /// Bytes held when the peer gave up.
        bytes: usize,
    },
    /// The client closed its side.
    ClientClosed(ClientEnd),
    /// The peer closed the connection this way.
    PeerClosed(Close),
    /// A write failed (usually because the client had closed or reset).
    WriteFailed(String),
    /// A read failed for a reason other than FIN or RST.
    ReadFailed(String),
    /// The peer stopped waiting for the client to close after its own close.
    DrainTimedOut,
    /// The connection outlived the scenario's connection timeout; the peer dropped it.
    ConnectionTimedOut,
    /// The session task panicked; a bug in the peer.
    PeerPanicked,
    /// The peer played a response or mid-data fault named as a fault
    /// ([`Response::fault`](super::Response::fault)), just before it acted.
    FaultInjected(&'static str),
}

/// An event and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedEvent {
    /// When the peer recorded the event. For received bytes that is when the peer
    /// took them from its buffer, which comes after their arrival when they were
    /// pipelined behind a delayed reply.
    pub at: Instant,
    /// What happened.
    pub event: Event,
}

/// Everything recorded about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionRecord {
    /// The connection's number on this peer, from 0 in the order of acceptance.
    pub id: usize,
    /// The client's address.
    pub client: SocketAddr,
    /// When the peer accepted the connection.
    pub accepted_at: Instant,
    /// When the peer was done with it; `None` while it is open.
    pub finished_at: Option<Instant>,
    /// What happened, in order.
    pub events: Vec<TimedEvent>,
}

impl ConnectionRecord {
    /// The command lines received, raw, line endings included, in order.
    pub fn commands(&self) -> Vec<Bytes> {
        self.events()
            .filter_map(|event| match event {
                Event::Command { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// The command lines as text (lossy UTF-8), without their line endings.
    pub fn command_lines(&self) -> Vec<String> {
        self.commands().iter().map(|line| text_line(line)).collect()
    }

    /// The command lines grouped by the read that completed them: a group of more
    /// than one was pipelined.
    pub fn command_groups(&self) -> Vec<Vec<String>> {
        let mut groups: Vec<(u64, Vec<String>)> = Vec::new();
        for event in self.events() {
            let Event::Command { line, read, .. } = event else {
                continue;
            };
            match groups.last_mut() {
                Some((last, group)) if last == read => group.push(text_line(line)),
                _ => groups.push((*read, vec![text_line(line)])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// The verbs of the commands received, in order.
    pub fn verbs(&self) -> Vec<Verb> {
        self.commands()
            .iter()
            .map(|line| Verb::of_line(line))
            .collect()
    }

    /// Returns each complete message's data, as received, in order. After `DATA`
    /// that is the dot-stuffed data before the end-of-data mark ([`Event::Body`]).
    /// With `BDAT` it is the message's chunks joined up to and including the `LAST`
    /// one ([`Event::Chunk`]), never dot-stuffed. Chunks followed by `RSET` or
    /// `MAIL` before a `LAST` one belong to no message.
    pub fn bodies(&self) -> Vec<Bytes> {
        let mut bodies = Vec::new();
        let mut chunked = BytesMut::new();
        for event in self.events() {
            match event {
                Event::Body { data, .. } => bodies.push(data.clone()),
                Event::Chunk { data, last, .. } => {
                    if !last {
                        chunked.extend_from_slice(data);
                    } else if chunked.is_empty() {
                        bodies.push(data.clone());
                    } else {
                        chunked.extend_from_slice(data);
                        bodies.push(chunked.split().freeze());
                    }
                }
                Event::Command { line, .. } if ends_chunked_message(line) => chunked.clear(),
                _ => {}
            }
        }
        bodies
    }

    /// Returns each complete `BDAT` chunk's octets and whether it was the `LAST`
    /// one, in order.
    pub fn chunks(&self) -> Vec<(Bytes, bool)> {
        self.events()
            .filter_map(|event| match event {
                Event::Chunk { data, last, .. } => Some((data.clone(), *last)),
                _ => None,
            })
            .collect()
    }

    /// Every write of the peer, in order.
    pub fn sent(&self) -> Vec<Bytes> {
        self.events()
            .filter_map(|event| match event {
                Event::Sent { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    /// The TLS session, if a handshake completed.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.events().find_map(|event| match event {
            Event::TlsEstablished(info) => Some(info),
            _ => None,
        })
    }

    /// rustls's reason, if a TLS handshake failed.
    pub fn handshake_error(&self) -> Option<&str> {
        self.events().find_map(|event| match event {
            Event::TlsHandshakeFailed(reason) => Some(reason.as_str()),
            _ => None,
        })
    }

    /// All plain-text bytes that arrived after `STARTTLS` and before the handshake.
    pub fn plaintext_after_starttls(&self) -> Vec<u8> {
        self.events()
            .filter_map(|event| match event {
                Event::PlaintextAfterStartTls(bytes) => Some(&bytes[..]),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// Whether any part of a mail transaction (a `MAIL`, `RCPT`, `DATA` or `BDAT`
    /// line, message data or a chunk) arrived outside TLS, including lines sent after
    /// `STARTTLS` before the handshake and lines the peer left unanswered.
    pub fn mail_in_clear(&self) -> bool {
        self.events().any(|event| match event {
            Event::Command { line, tls, .. } => !tls && Verb::of_line(line).is_transaction(),
            Event::Body { tls, .. }
            | Event::PartialBody { tls, .. }
            | Event::Chunk { tls, .. }
            | Event::PartialChunk { tls, .. } => !tls,
            Event::PlaintextAfterStartTls(bytes) => has_transaction_line(bytes),
            Event::Unanswered { bytes, tls } => !tls && has_transaction_line(bytes),
            _ => false,
        })
    }

    /// How the client closed, if it did while the peer was reading.
    pub fn client_end(&self) -> Option<ClientEnd> {
        self.events().find_map(|event| match event {
            Event::ClientClosed(end) => Some(*end),
            _ => None,
        })
    }

    /// Whether the client sent TLS `close_notify` before closing.
    pub fn client_sent_close_notify(&self) -> bool {
        self.client_end()
            .is_some_and(|end| end.close_notify == Some(true))
    }

    /// How the peer closed, if it did.
    pub fn peer_close(&self) -> Option<Close> {
        self.events().find_map(|event| match event {
            Event::PeerClosed(close) => Some(*close),
            _ => None,
        })
    }

    /// When the first event matching `predicate` was recorded, as time since accept.
    pub fn time_of(&self, predicate: impl Fn(&Event) -> bool) -> Option<Duration> {
        self.events
            .iter()
            .find(|timed| predicate(&timed.event))
            .map(|timed| timed.at.duration_since(self.accepted_at))
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().map(|timed| &timed.event)
    }
}

/// Returns whether a command line abandons a message whose chunks came without
/// `LAST`: `RSET` clears the transaction (RFC 3030 section 2), and `MAIL` starts
/// a new one.
pub(crate) fn ends_chunked_message(line: &[u8]) -> bool {
    matches!(Verb::of_line(line), Verb::Rset | Verb::Mail)
}

fn text_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches(['\r', '\n']).to_owned()
}

/// The records of all connections of one peer, shared by its sessions and its handle.
#[derive(Debug)]
pub(crate) struct Recorder {
    state: Mutex<RecorderState>,
    finished_changed: Condvar,
    finished_tx: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct RecorderState {
    /// Records by connection id: every record under [`Retention::All`],
    /// only the open ones under [`Retention::Tally`].
    records: BTreeMap<usize, ConnectionRecord>,
    accepted: usize,
    finished: usize,
    retention: Retention,
    tally: Tally,
}

impl Recorder {
    pub(crate) fn new(retention: Retention) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(RecorderState {
                retention,
                ..RecorderState::default()
            }),
            finished_changed: Condvar::new(),
            finished_tx: watch::channel(0).0,
        })
    }

    /// Starts the record of a newly accepted connection.
    pub(crate) fn open(self: &Arc<Self>, client: SocketAddr) -> ConnectionLog {
        let mut state = self.lock();
        let id = state.accepted;
        state.accepted += 1;
        state.records.insert(
            id,
            ConnectionRecord {
                id,
                client,
                accepted_at: Instant::now(),
                finished_at: None,
                events: Vec::new(),
            },
        );
        ConnectionLog {
            recorder: Arc::clone(self),
            id,
            finished: false,
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<ConnectionRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// The totals over finished connections.
    pub(crate) fn tally(&self) -> Tally {
        self.lock().tally.clone()
    }

    /// Connections accepted and finished so far.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.accepted, state.finished)
    }

    /// Waits until `wanted` connections have finished, then returns all records.
    pub(crate) async fn wait_finished(
        &self,
        wanted: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionRecord>, FaultPeerError> {
        let mut finished = self.finished_tx.subscribe();
        let waited = tokio::time::timeout(timeout, finished.wait_for(|&n| n >= wanted)).await;
        match waited {
            Ok(Ok(_)) => Ok(self.snapshot()),
            // The sender lives in `self`, so it cannot be dropped while we wait.
            Ok(Err(_)) | Err(_) => Err(self.timeout_error(wanted, timeout)),
        }
    }

    /// As [`Recorder::wait_finished`], blocking the calling thread.
    pub(crate) fn wait_finished_blocking(
        &self,
        wanted: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionRecord>, FaultPeerError> {
        let state = self.lock();
        let (state, _) = self
            .finished_changed
            .wait_timeout_while(state, timeout, |state| state.finished < wanted)
            .unwrap_or_else(PoisonError::into_inner);
        if state.finished >= wanted {
            return Ok(state.records.values().cloned().collect());
        }
        drop(state);
        Err(self.timeout_error(wanted, timeout))
    }

    fn timeout_error(&self, wanted: usize, waited: Duration) -> FaultPeerError {
        let state = self.lock();
        FaultPeerError::WaitTimedOut {
            wanted,
            waited,
            finished: state.finished,
            accepted: state.accepted,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        // A panic while holding the lock leaves whole events behind, never half ones.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A session's handle on its connection's record. Dropping it marks the
/// connection finished.
#[derive(Debug)]
pub(crate) struct ConnectionLog {
    recorder: Arc<Recorder>,
    id: usize,
    finished: bool,
}

impl ConnectionLog {
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn push(&self, event: Event) {
        tracing::debug!(connection = self.id, ?event, "fault peer");
        let timed = TimedEvent {
            at: Instant::now(),
            event,
        };
        let mut guard = self.recorder.lock();
        let state = &mut *guard;
        if state.retention == Retention::Tally {
            let suspicious = state.tally.count_event(&timed.event);
            if is_bulk(&timed.event) && !suspicious {
                return;
            }
        }
        if let Some(record) = state.records.get_mut(&self.id) {
            record.events.push(timed);
        }
    }

    /// Marks the connection finished and wakes the tasks and threads waiting for it.
    pub(crate) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;

        let finished = {
            let mut guard = self.recorder.lock();
            let state = &mut *guard;
            let now = Instant::now();
            match state.retention {
                Retention::All => {
                    if let Some(record) = state.records.get_mut(&self.id) {
                        record.finished_at = Some(now);
                        state.tally.add(record);
                    }
                }
                Retention::Tally => {
                    if let Some(mut record) = state.records.remove(&self.id) {
                        record.finished_at = Some(now);
                        // Only suspicious bulk events were kept.
                        let suspicious = record.events.iter().any(|timed| is_bulk(&timed.event));
                        state.tally.count_connection(&record, suspicious);
                    }
                }
            }
            state.finished += 1;
            state.finished
        };
        self.recorder.finished_changed.notify_all();
        self.recorder.finished_tx.send_replace(finished);
    }
}

impl Drop for ConnectionLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.push(Event::PeerPanicked);
        }
        self.finish();
    }
}
