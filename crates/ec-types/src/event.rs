//! What wakes the scheduler, why connections close, how they ended, and
//! where messages go.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::connection::ConnectionHandle;
use crate::session::SessionEvent;

/// Id of one scheduled timer; ids are never reused, so a cancelled timer's
/// id never fires for another purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub u64);

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimerKind {
    /// An idle connection has waited its idle timeout.
    IdleTimeout(ConnectionHandle),
    /// A connection has reached its maximum age.
    MaxAge(ConnectionHandle),
    /// A closing connection has run past its close deadline and is
    /// considered gone.
    CloseDeadline(ConnectionHandle),
    /// The delayed queues may hold mail that is due.
    RetryDue,
    /// A domain's connection backoff has ended.
    BackoffOver,
    /// The periodic accounting audit.
    Audit,
}

impl TimerKind {
    /// The connection the timer belongs to, if any.
    pub fn connection(self) -> Option<ConnectionHandle> {
        match self {
            Self::IdleTimeout(handle) | Self::MaxAge(handle) | Self::CloseDeadline(handle) => {
                Some(handle)
            }
            Self::RetryDue | Self::BackoffOver | Self::Audit => None,
        }
    }
}

/// What woke the scheduler (Momentum's `Event`). `closeconn` receives the
/// event that led to the close, so that it can log it and so that a close
/// caused by a timer does not try to cancel that same timer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A timer fired.
    Timer {
        /// Its id.
        id: TimerId,
        /// What it was for.
        kind: TimerKind,
    },
    /// A session reported something.
    Session {
        /// The connection it runs.
        handle: ConnectionHandle,
        /// What happened.
        event: SessionEvent,
    },
    /// The engine is shutting down.
    Shutdown,
    /// A direct call from code running on the scheduler, such as a test.
    Direct,
}

/// Why `closeconn` was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// No more mail for the connection and its idle timeout passed.
    IdleTimeout,
    /// The connection reached its maximum number of deliveries.
    MaxDeliveries,
    /// The connection reached its maximum age.
    MaxAge,
    /// The TCP connect failed or timed out.
    ConnectFailed,
    /// The server sent 4xx or 5xx as its banner or to EHLO and HELO.
    Greeting,
    /// TLS was required and the server did not offer STARTTLS or refused it.
    TlsUnavailable,
    /// The TLS handshake or certificate verification failed.
    TlsFailed,
    /// The server sent bytes after its 220 to STARTTLS, before the handshake.
    StartTlsInjection,
    /// A reply did not come within its deadline.
    Timeout,
    /// The server closed the connection or reset it.
    PeerClosed,
    /// The server sent 421 (service closing).
    ServiceClosing,
    /// The server sent something that is not valid SMTP.
    ProtocolError,
    /// An idle connection was found closed or closing when it was about to
    /// be reused.
    StaleIdle,
    /// The engine is shutting down.
    Shutdown,
    /// A program or test asked for the close.
    Requested,
}

impl CloseReason {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::MaxDeliveries => "max_deliveries",
            Self::MaxAge => "max_age",
            Self::ConnectFailed => "connect_failed",
            Self::Greeting => "greeting",
            Self::TlsUnavailable => "tls_unavailable",
            Self::TlsFailed => "tls_failed",
            Self::StartTlsInjection => "starttls_injection",
            Self::Timeout => "timeout",
            Self::PeerClosed => "peer_closed",
            Self::ServiceClosing => "service_closing",
            Self::ProtocolError => "protocol_error",
            Self::StaleIdle => "stale_idle",
            Self::Shutdown => "shutdown",
            Self::Requested => "requested",
        }
    }

    /// Every reason, for metric label enumeration and tests.
    pub const ALL: [CloseReason; 15] = [
        Self::IdleTimeout,
        Self::MaxDeliveries,
        Self::MaxAge,
        Self::ConnectFailed,
        Self::Greeting,
        Self::TlsUnavailable,
        Self::TlsFailed,
        Self::StartTlsInjection,
        Self::Timeout,
        Self::PeerClosed,
        Self::ServiceClosing,
        Self::ProtocolError,
        Self::StaleIdle,
        Self::Shutdown,
        Self::Requested,
    ];
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the transport shutdown of a closed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseOutcome {
    /// QUIT got 221 (or was not due), TLS and TCP closed in order. A peer
    /// that closes TLS without close_notify after its 221 still counts as
    /// clean, because nothing was due.
    Clean,
    /// QUIT was sent and no 221 came within the QUIT timeout.
    QuitTimedOut,
    /// QUIT was sent and the peer closed without replying.
    NoQuitReply,
    /// The peer closed TLS without close_notify while a reply was due.
    TlsTruncated,
    /// The peer reset the connection.
    Reset,
    /// TLS failed (alert, bad record, or handshake failure).
    TlsError,
    /// The shutdown ran past the close deadline and the socket was dropped.
    Aborted,
    /// The connect never completed; there was only a socket to drop.
    NeverConnected,
}

impl CloseOutcome {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::QuitTimedOut => "quit_timed_out",
            Self::NoQuitReply => "no_quit_reply",
            Self::TlsTruncated => "tls_truncated",
            Self::Reset => "reset",
            Self::TlsError => "tls_error",
            Self::Aborted => "aborted",
            Self::NeverConnected => "never_connected",
        }
    }

    /// Every outcome, for metric label enumeration and tests.
    pub const ALL: [CloseOutcome; 8] = [
        Self::Clean,
        Self::QuitTimedOut,
        Self::NoQuitReply,
        Self::TlsTruncated,
        Self::Reset,
        Self::TlsError,
        Self::Aborted,
        Self::NeverConnected,
    ];
}

impl fmt::Display for CloseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one message of a batch goes when its connection closes or its
/// transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageFate {
    /// Every recipient has a final status, at least one delivered.
    Delivered,
    /// Back to the active queue without spending an attempt: the
    /// transaction never started (connect, banner or TLS failure, or the
    /// connection was lost before MAIL).
    Requeued,
    /// To the delayed queue with backoff: a transient failure.
    Deferred,
    /// Every pending recipient failed permanently.
    Failed,
    /// The final dot was sent and no reply came. Marked, and to the
    /// delayed queue with backoff, because a duplicate is better than a
    /// loss.
    DeliveryUnknown,
}

impl MessageFate {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Requeued => "requeued",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::DeliveryUnknown => "delivery_unknown",
        }
    }
}

impl fmt::Display for MessageFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
