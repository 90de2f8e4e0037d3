//! Running totals over a peer's finished connections, and how much of each
//! record the peer keeps.
//!
//! A peer that serves a soak run gets hundreds of thousands of messages, and
//! keeping every record would make its memory grow with the run and hide the
//! client's own memory use. With [`Retention::Tally`] the peer counts each
//! event as it happens and keeps only the few that say how a connection went
//! (and any that look wrong), then drops the record when the connection
//! finishes, so its memory stays flat. The tally is kept in either mode.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};

use super::command::Verb;
use super::record::{ClientEnd, ConnectionRecord, Event, TcpEnd};
use super::response::Close;

/// How many records of suspicious connections a tally keeps for diagnosis.
const KEPT_EXAMPLES: usize = 3;

/// What a peer keeps of a connection once it has finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// The whole record, for tests that read it (the default).
    #[default]
    All,
    /// Only its contribution to the [`Tally`]; the record is dropped.
    Tally,
}

/// Totals over every finished connection of a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    /// Connections finished.
    pub connections: u64,
    /// Connections on which a TLS handshake completed.
    pub tls: u64,
    /// Faults played, by name ([`Event::FaultInjected`]).
    pub faults: BTreeMap<&'static str, u64>,
    /// How the client's side ended, by [`client_end_name`].
    pub client_ends: BTreeMap<&'static str, u64>,
    /// Command lines received.
    pub commands: u64,
    /// Command lines whose verb the peer does not know. Message data that
    /// ended early on the wire (SMTP smuggling) shows up here, because the
    /// rest of the message is read as commands.
    pub unknown_commands: u64,
    /// Command lines ended by a bare LF rather than CRLF.
    pub bare_lf_commands: u64,
    /// Complete message bodies received: the data after each `DATA`, and each
    /// `LAST` chunk of `BDAT` (RFC 3030).
    pub bodies: u64,
    /// Bytes of the data after `DATA`, dot-stuffing included, and of every
    /// complete `BDAT` chunk.
    pub body_bytes: u64,
    /// Complete `BDAT` chunks received, `LAST` or not.
    pub chunks: u64,
    /// How often each content came as a message's complete data after `DATA`,
    /// by [`content_digest`] of the data as received: dot-stuffed, end-of-data
    /// mark excluded. A load run sends a few distinct bodies, so the map stays
    /// small unless the client alters what it sends.
    pub data_contents: BTreeMap<u64, u64>,
    /// How often each content came as a complete `BDAT` chunk, `LAST` or not,
    /// by [`content_digest`] of its octets.
    pub chunk_contents: BTreeMap<u64, u64>,
    /// Message data or chunks (complete or cut short) holding a CR or LF that is
    /// not part of a CRLF pair: a line ending RFC 5321 section 2.3.8 forbids. A
    /// chunk may end with the CR of a pair whose LF starts the next chunk, so a
    /// CR last in a chunk that is not `LAST` and an LF first in any chunk count
    /// as paired.
    pub bare_line_ends: u64,
    /// Message data after `DATA` holding a line that starts with one `.` only: a
    /// line the client failed to dot-stuff (RFC 5321 section 4.5.2). Chunks are
    /// never dot-stuffed, so they are not checked.
    pub unstuffed_dots: u64,
    /// Connections the client did not close before the peer gave up on
    /// them (drain or connection timeout), or that the peer's task lost.
    pub unclosed: u64,
    /// Records of the first few connections that were unclosed or held an
    /// unknown command, bare line end or unstuffed dot.
    pub examples: Vec<ConnectionRecord>,
}

impl Tally {
    /// Adds one finished connection whose events were not counted yet
    /// (under [`Retention::All`]).
    pub(crate) fn add(&mut self, record: &ConnectionRecord) {
        let mut suspicious = false;
        for timed in &record.events {
            suspicious |= self.count_event(&timed.event);
        }
        self.count_connection(record, suspicious);
    }

    /// Counts what one event shows (faults, commands, message data) and
    /// returns whether it is suspicious: an unknown command, a bare line
    /// ending, an unstuffed dot.
    pub(crate) fn count_event(&mut self, event: &Event) -> bool {
        match event {
            Event::FaultInjected(name) => {
                *self.faults.entry(name).or_default() += 1;
                false
            }
            Event::Command { line, .. } => {
                self.commands += 1;
                let unknown = matches!(Verb::of_line(line), Verb::Other(_));
                let bare_lf = !line.ends_with(b"\r\n");
                self.unknown_commands += u64::from(unknown);
                self.bare_lf_commands += u64::from(bare_lf);
                unknown || bare_lf
            }
            Event::Body { data, .. } => {
                self.bodies += 1;
                self.body_bytes += data.len() as u64;
                *self.data_contents.entry(content_digest(data)).or_default() += 1;
                self.check_data(data, true)
            }
            Event::PartialBody { data, .. } => self.check_data(before_end_mark(data), false),
            Event::Chunk { data, last, .. } => {
                self.chunks += 1;
                self.bodies += u64::from(*last);
                self.body_bytes += data.len() as u64;
                *self.chunk_contents.entry(content_digest(data)).or_default() += 1;
                self.check_chunk(data, *last)
            }
            Event::PartialChunk { data, .. } => self.check_chunk(data, false),
            _ => false,
        }
    }

    /// Counts a finished connection whose events were counted already:
    /// TLS, how it ended, and whether the client closed it. A suspicious
    /// or unclosed connection's record is kept as an example.
    pub(crate) fn count_connection(&mut self, record: &ConnectionRecord, suspicious: bool) {
        self.connections += 1;
        if record.tls().is_some() {
            self.tls += 1;
        }
        *self.client_ends.entry(client_end_name(record)).or_default() += 1;
        let unclosed = !client_closed(record);
        self.unclosed += u64::from(unclosed);
        if (suspicious || unclosed) && self.examples.len() < KEPT_EXAMPLES {
            self.examples.push(record.clone());
        }
    }

    /// Counts forbidden line endings and unstuffed dots in message data;
    /// returns whether there were any. Data cut short may end between the
    /// CR and LF of a pair, so a last CR is allowed there.
    fn check_data(&mut self, data: &[u8], complete: bool) -> bool {
        let bare = bare_line_end(data, complete);
        let unstuffed = unstuffed_dot(data);
        self.bare_line_ends += u64::from(bare);
        self.unstuffed_dots += u64::from(unstuffed);
        bare || unstuffed
    }

    /// Counts forbidden line endings in chunk octets; returns whether there
    /// were any. A line may end across two chunks (see
    /// [`Tally::bare_line_ends`]); `complete` is false for a chunk followed by
    /// more.
    fn check_chunk(&mut self, data: &[u8], complete: bool) -> bool {
        let data = data.strip_prefix(b"\n").unwrap_or(data);
        let bare = bare_line_end(data, complete);
        self.bare_line_ends += u64::from(bare);
        bare
    }
}

/// Whether a [`Retention::Tally`] record can drop `event` once it is
/// counted: it carries bytes (commands, data, replies) or only a count.
/// Events that show how the connection went (TLS, closes, timeouts) stay.
pub(crate) fn is_bulk(event: &Event) -> bool {
    matches!(
        event,
        Event::Command { .. }
            | Event::Body { .. }
            | Event::PartialBody { .. }
            | Event::Chunk { .. }
            | Event::PartialChunk { .. }
            | Event::Sent { .. }
            | Event::Streamed { .. }
            | Event::Unanswered { .. }
            | Event::FaultInjected(_)
    )
}

/// Returns the part of data cut short that comes before an end-of-data mark that
/// arrived with it (the mark's leading CRLF stays, as in a complete body).
fn before_end_mark(data: &[u8]) -> &[u8] {
    if data.starts_with(b".\r\n") {
        return &[];
    }
    match data.windows(5).position(|window| window == b"\r\n.\r\n") {
        Some(at) => &data[..at + 2],
        None => data,
    }
}

/// Names how the client's side of a connection ended: `fin`,
/// `reset`, `close_notify_fin` (TLS closed properly), `fin_without_close_notify`,
/// `reset_without_close_notify`, `close_notify_reset`, `still_open` (the
/// peer stopped waiting), `after_peer_reset` (the peer reset first and read
/// no more), or `not_seen`.
pub fn client_end_name(record: &ConnectionRecord) -> &'static str {
    match record.client_end() {
        Some(ClientEnd {
            tcp: TcpEnd::StillOpen,
            ..
        }) => "still_open",
        Some(ClientEnd {
            close_notify: None,
            tcp,
        }) => match tcp {
            TcpEnd::Reset => "reset",
            _ => "fin",
        },
        Some(ClientEnd {
            close_notify: Some(true),
            tcp,
        }) => match tcp {
            TcpEnd::Reset => "close_notify_reset",
            _ => "close_notify_fin",
        },
        Some(ClientEnd {
            close_notify: Some(false),
            tcp,
        }) => match tcp {
            TcpEnd::Reset => "reset_without_close_notify",
            _ => "fin_without_close_notify",
        },
        None if record.peer_close() == Some(Close::Reset) => "after_peer_reset",
        None => "not_seen",
    }
}

/// Whether the client ended the connection before the peer gave up: the
/// peer saw its FIN or RST, or reset the connection itself, and never timed
/// out waiting. The same rule as the engine tests' close check.
pub fn client_closed(record: &ConnectionRecord) -> bool {
    let gave_up = record.events.iter().any(|timed| {
        matches!(
            timed.event,
            Event::DrainTimedOut | Event::ConnectionTimedOut | Event::PeerPanicked
        )
    });
    let ended = match record.client_end() {
        Some(end) => end.tcp != TcpEnd::StillOpen,
        None => record.peer_close() == Some(Close::Reset),
    };
    !gave_up && ended
}

/// Returns the digest [`Tally::data_contents`] and [`Tally::chunk_contents`]
/// key contents by: SipHash with fixed keys, the same for the same bytes
/// throughout a process, so a test compares it with the digests of what it
/// sent. Not a cryptographic commitment, and not stable across Rust releases.
pub fn content_digest(data: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

/// Whether `data` contains a CR not followed by LF, or an LF not preceded by
/// CR. With `complete` false, a CR as the very last byte is allowed.
pub fn bare_line_end(data: &[u8], complete: bool) -> bool {
    data.iter().enumerate().any(|(i, &byte)| match byte {
        b'\r' => match data.get(i + 1) {
            Some(&next) => next != b'\n',
            None => complete,
        },
        b'\n' => i == 0 || data[i - 1] != b'\r',
        _ => false,
    })
}

/// Whether a line of `data` starts with `.` but not `..`.
pub fn unstuffed_dot(data: &[u8]) -> bool {
    data.split(|&byte| byte == b'\n')
        .any(|line| line.first() == Some(&b'.') && line.get(1) != Some(&b'.'))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn bare_endings_are_found() {
        assert!(!bare_line_end(b"a\r\nb\r\n", true));
        assert!(bare_line_end(b"a\nb\r\n", true));
        assert!(bare_line_end(b"a\rb\r\n", true));
        assert!(bare_line_end(b"\n", true));
        assert!(bare_line_end(b"a\r", true));
        assert!(!bare_line_end(b"a\r", false));
    }

    #[test]
    fn partial_data_stops_at_the_mark() {
        assert_eq!(before_end_mark(b"a\r\n.\r\n"), b"a\r\n");
        assert_eq!(before_end_mark(b".\r\n"), b"");
        assert_eq!(before_end_mark(b"a\r\n.."), b"a\r\n..");
    }

    #[test]
    fn contents_are_counted_per_transfer() {
        let mut tally = Tally::default();
        let body = Bytes::from_static(b"..a\r\n");
        let chunk = Bytes::from_static(b".a\r\n");
        for _ in 0..2 {
            tally.count_event(&Event::Body {
                data: body.clone(),
                tls: false,
            });
        }
        tally.count_event(&Event::Chunk {
            data: chunk.clone(),
            last: true,
            tls: false,
            read: 1,
        });
        tally.count_event(&Event::PartialChunk {
            data: chunk.clone(),
            tls: false,
        });

        assert_eq!(
            tally.data_contents,
            BTreeMap::from([(content_digest(&body), 2)])
        );
        assert_eq!(
            tally.chunk_contents,
            BTreeMap::from([(content_digest(&chunk), 1)]),
            "a chunk cut short is no content"
        );
        assert_ne!(content_digest(&body), content_digest(&chunk));
        assert_eq!((tally.bodies, tally.chunks), (3, 1));
    }

    #[test]
    fn stuffed_dots_pass() {
        assert!(!unstuffed_dot(b"..a\r\n..\r\nb.c\r\n"));
        assert!(unstuffed_dot(b".a\r\n"));
        assert!(unstuffed_dot(b"x\r\n.\r\n"));
        assert!(!unstuffed_dot(b"x\r\n...\r\n"));
    }
}
