//! Connection identity, lifecycle state and the stage codes that logs carry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The scheduler's reference to a connection: a slot in its connection
/// table plus that slot's generation when the connection was opened.
///
/// A slot is reused after its connection is gone, with a new generation, so
/// a stale handle (from a late event or a timer) never reaches the next
/// connection in the same slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionHandle {
    /// Index in the connection table.
    pub slot: u32,
    /// Generation of the slot.
    pub generation: u32,
}

impl fmt::Display for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionHandle({}.{})", self.slot, self.generation)
    }
}

/// Engine-wide unique, never reused id of a connection, for logs and the
/// delivery log. Unlike a [`ConnectionHandle`] it says nothing about slots.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Where a connection is in its life, as the scheduler sees it.
///
/// ```text
/// Connecting ──► Idle ◄──► Busy
///     │           │         │
///     └───────────┴────┬────┘
///                      ▼
///                   Closing ──► (slot freed when the socket is gone)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConnectionState {
    /// From the start of the TCP connect until the session is ready for a
    /// transaction (banner, EHLO and STARTTLS done).
    Connecting,
    /// Ready, with no batch.
    Idle,
    /// Delivering a batch.
    Busy,
    /// `closeconn` has run; the transport is shutting down. The connection
    /// still counts against every limit, because the server still counts it.
    Closing,
}

impl ConnectionState {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Closing => "closing",
        }
    }
}

/// The SMTP stage a connection was in, with the numeric codes Momentum
/// writes in its logs: 0 for not connected and 1 for idle, then one code for
/// each command or step that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
#[non_exhaustive]
pub enum Stage {
    /// No connection, or the TCP connect has not completed.
    NotConnected = 0,
    /// Connected and between transactions.
    Idle = 1,
    /// MAIL FROM sent, reply due.
    Mail = 2,
    /// RCPT TO sent, reply due.
    Rcpt = 3,
    /// DATA sent, 354 due.
    Data = 4,
    /// Sending the message body, or the final dot sent and its reply due.
    Body = 5,
    /// EHLO or HELO sent, reply due.
    Ehlo = 6,
    /// Connected, 220 banner due.
    Banner = 7,
    /// RSET sent, reply due.
    Rset = 8,
    /// STARTTLS sent, 220 due.
    StartTls = 9,
    /// TLS handshake under way.
    TlsHandshake = 10,
    /// QUIT sent, 221 due.
    Quit = 11,
}

impl Stage {
    /// The numeric code that logs carry.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Idle => "idle",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::Body => "body",
            Self::Ehlo => "ehlo",
            Self::Banner => "banner",
            Self::Rset => "rset",
            Self::StartTls => "starttls",
            Self::TlsHandshake => "tls_handshake",
            Self::Quit => "quit",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_codes_are_stable() {
        assert_eq!(Stage::NotConnected.code(), 0);
        assert_eq!(Stage::Idle.code(), 1);
        assert_eq!(Stage::Body.code(), 5);
        assert_eq!(Stage::TlsHandshake.code(), 10);
        assert_eq!(Stage::Rcpt.to_string(), "3 (rcpt)");
    }

    #[test]
    fn handle_display() {
        let handle = ConnectionHandle {
            slot: 4,
            generation: 9,
        };
        assert_eq!(handle.to_string(), "4.9");
    }
}
