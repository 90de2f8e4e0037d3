//! One scripted response: what the peer writes, after how long, and what it does next.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::command::Verb;

/// What the peer writes in response to a command, the connection, the end of
/// message data or the idle timer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// The reply the peer gives when nothing is scripted (see [`Response::standard`]).
    Standard,
    /// Nothing.
    Nothing,
    /// Exactly these bytes, in one write.
    Bytes(Bytes),
    /// `prefix`, then `unit` over and over, until `limit` bytes in all were written
    /// or a write fails (the client closed). For endless multi-line replies and lines
    /// that never end.
    Stream {
        /// Written first.
        prefix: Bytes,
        /// Repeated after the prefix; must not be empty.
        unit: Bytes,
        /// Total bytes to write, prefix included.
        limit: usize,
    },
}

/// How the peer closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Close {
    /// On TLS, send `close_notify`; then shut down the TCP write side (FIN) and read
    /// until the client closes or the drain timeout passes.
    Clean,
    /// Shut down the TCP write side (FIN) without `close_notify`, then read as
    /// `Clean` does. On a plain connection the same as `Clean`. A TLS client that
    /// still expects a reply gets an unexpected EOF, the sign of a truncation attack.
    WithoutCloseNotify,
    /// Set `SO_LINGER` to zero and close the socket: the kernel sends a TCP RST and
    /// discards anything unsent.
    Reset,
}

/// What the peer does after writing a response's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum After {
    /// Read the next command (after a `354` to `DATA`: the message data).
    Continue,
    /// Never write again; record whatever arrives until the client closes.
    Silence,
    /// Close the connection.
    Close(Close),
    /// Start the TLS handshake as the server (after a `220` to `STARTTLS`).
    Handshake,
    /// Read the client's first TLS record, reply with a fatal alert carrying
    /// this description code (RFC 8446 section 6), and close.
    RejectHandshake {
        /// The alert description, e.g. 40 for `handshake_failure`.
        alert: u8,
    },
}

/// One scripted answer: an optional delay, a payload and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    payload: Payload,
    delay: Duration,
    after: Option<After>,
    fault: Option<&'static str>,
    rejects_transaction: bool,
}

impl Response {
    /// The reply a plain server would send when nothing is scripted.
    ///
    /// | occasion | reply |
    /// |---|---|
    /// | banner | `220` |
    /// | `HELO` | `250` |
    /// | `EHLO` | `250` with the capabilities in force |
    /// | `MAIL`, `RCPT`, `RSET`, `NOOP` | `250` |
    /// | `DATA` | `354` |
    /// | end of message data | `250` |
    /// | `BDAT`, once its chunk arrived | `250` |
    /// | `BDAT` without CHUNKING advertised | `502`, like any unknown command |
    /// | `QUIT` | `221` |
    /// | `STARTTLS` | `220`; `454` without TLS configured; `503` inside TLS |
    /// | `VRFY` | `252` |
    /// | any other command | `502` |
    /// | idle timer | `421` |
    ///
    /// A reply marked with [`Response::rejects_transaction`] changes three
    /// rows until the next `MAIL`, `RSET`, `HELO` or `EHLO`. `RCPT` then gets
    /// `503 5.5.1 Error: need MAIL command`, and `DATA` and `BDAT` (once its
    /// chunk arrived) get `503 5.5.1 Error: need RCPT command`. These are
    /// Postfix 3.7's replies to commands out of sequence.
    pub fn standard() -> Self {
        Self::with(Payload::Standard)
    }

    /// A reply written as `text`, with CRLF appended unless it already ends in one;
    /// lines of a multi-line reply are separated by CRLF in `text`.
    pub fn reply(text: &str) -> Self {
        let mut bytes = BytesMut::from(text);
        if !text.ends_with("\r\n") {
            bytes.put_slice(b"\r\n");
        }
        Self::with(Payload::Bytes(bytes.freeze()))
    }

    /// Exactly these bytes, in one write: several replies, a reply and injected
    /// bytes, garbage, a line without its CRLF.
    pub fn raw(bytes: impl Into<Bytes>) -> Self {
        Self::with(Payload::Bytes(bytes.into()))
    }

    /// `prefix`, then `unit` repeated up to `limit` bytes in all (see
    /// [`Payload::Stream`]).
    ///
    /// # Panics
    ///
    /// When `unit` is empty.
    pub fn stream(prefix: impl Into<Bytes>, unit: impl Into<Bytes>, limit: usize) -> Self {
        let unit = unit.into();
        assert!(!unit.is_empty(), "a streamed reply needs a non-empty unit");
        Self::with(Payload::Stream {
            prefix: prefix.into(),
            unit,
            limit,
        })
    }

    /// No reply; then what a reply would have been followed by.
    pub fn nothing() -> Self {
        Self::with(Payload::Nothing)
    }

    /// No reply, and nothing ever again ([`After::Silence`]).
    pub fn silence() -> Self {
        Self::nothing().then(After::Silence)
    }

    /// No reply; close the connection the way `how` names.
    pub fn close(how: Close) -> Self {
        Self::nothing().then(After::Close(how))
    }

    /// Waits `delay` before writing the payload, reading nothing meanwhile.
    #[must_use]
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Does `after` once the payload is written, instead of the natural follow-up
    /// (see [`Response::after`]).
    #[must_use]
    pub fn then(mut self, after: After) -> Self {
        self.after = Some(after);
        self
    }

    /// Names this response as the injection of a fault: each time the peer
    /// plays it, the record gets [`Event::FaultInjected`](super::Event::FaultInjected)
    /// with `name` before anything is written, so a test counts the faults
    /// a client actually met rather than those scripted.
    #[must_use]
    pub fn fault(mut self, name: &'static str) -> Self {
        self.fault = Some(name);
        self
    }

    /// Marks a reply that leaves the session without a mail transaction, as a
    /// rejected `MAIL` does: the rest of a pipelined group then gets the
    /// replies of a real server without a transaction (see
    /// [`Response::standard`]), unless the script sets others.
    #[must_use]
    pub fn rejects_transaction(mut self) -> Self {
        self.rejects_transaction = true;
        self
    }

    /// Returns whether the reply was marked with
    /// [`Response::rejects_transaction`].
    pub fn is_transaction_rejection(&self) -> bool {
        self.rejects_transaction
    }

    /// The fault name set with [`Response::fault`].
    pub fn fault_name(&self) -> Option<&'static str> {
        self.fault
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The delay before the payload.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The follow-up set with [`Response::then`]. When unset, the peer closes
    /// cleanly after a payload starting with `421` or after anything to `QUIT`,
    /// starts the handshake after a payload starting with `220` to `STARTTLS`, and
    /// otherwise continues.
    pub fn after(&self) -> Option<After> {
        self.after
    }

    fn with(payload: Payload) -> Self {
        Self {
            payload,
            delay: Duration::ZERO,
            after: None,
            fault: None,
            rejects_transaction: false,
        }
    }
}

/// What the peer is replying to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Occasion {
    Banner,
    Command(Verb),
    EndOfData(u32),
    /// The `BDAT` chunk of `size` octets of the `message`-th message arrived.
    Chunk {
        message: u32,
        last: bool,
        size: usize,
    },
    Idle,
}

impl Response {
    /// What follows this response once `written` (the payload, or its prefix for a
    /// stream) went out on `occasion`.
    pub(crate) fn resolved_after(&self, occasion: &Occasion, written: &[u8]) -> After {
        if let Some(after) = self.after {
            return after;
        }
        if written.starts_with(b"421") {
            return After::Close(Close::Clean);
        }
        match occasion {
            Occasion::Command(Verb::Quit) => After::Close(Close::Clean),
            Occasion::Command(Verb::StartTls) if written.starts_with(b"220") => After::Handshake,
            _ => After::Continue,
        }
    }
}
