//! The records the scheduler sends to the application: one record per recipient
//! outcome, and one per connection opened and closed.
//!
//! Every recipient of every message that enters the engine gets exactly one
//! record whose outcome [`is_final`](RecipientOutcome::is_final): delivered,
//! failed, or unsent at shutdown. Deferrals and unknown deliveries add
//! non-final records before it. The scheduler emits records only from the
//! code that changes a recipient's status or removes a message, so no path
//! can drop a message silently; the audit checks the totals.

use std::net::SocketAddr;
use std::panic::Location;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ec_types::{
    Address, BindingSlot, CloseOutcome, CloseReason, ConnectionHandle, ConnectionId, Domain,
    MessageId, Reply, Target, TlsInfo,
};

/// One record for the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Report {
    /// A recipient's status changed.
    Recipient(RecipientRecord),
    /// A connection's connect started.
    ConnectionOpened(ConnectionOpened),
    /// A connection's socket is gone and its counts are released.
    ConnectionClosed(ConnectionClosed),
}

/// A recipient's outcome, for the delivery log.
#[derive(Debug, Clone)]
pub struct RecipientRecord {
    /// The submission's tag.
    pub tag: u64,
    /// The message (one domain's share of the submission).
    pub message: MessageId,
    /// The recipient's domain.
    pub domain: Domain,
    /// The binding the message was queued on.
    pub binding: BindingSlot,
    /// The RCPT TO address.
    pub recipient: Address,
    /// What happened.
    pub outcome: RecipientOutcome,
    /// Delivery attempts spent on the message so far.
    pub attempts: u32,
    /// The connection of the attempt, if there was one.
    pub connection: Option<ConnectionId>,
    /// The server's address on that connection.
    pub peer: Option<SocketAddr>,
    /// The TLS session of that connection.
    pub tls: Option<TlsInfo>,
    /// When the outcome was decided.
    pub at: Instant,
}

/// The outcome of a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipientOutcome {
    /// Accepted by the server: final.
    Delivered(Reply),
    /// Rejected for good (5xx), or expired past the retry policy's maximum
    /// age with a 5.4.7 reply made by the engine: final.
    Failed(Reply),
    /// A transient failure; the message waits in the delayed queue.
    Deferred {
        /// The server's reply, when the failure was a reply (and not, for
        /// example, a lost connection).
        reply: Option<Reply>,
        /// When it will be tried again.
        next_attempt: Instant,
    },
    /// The final dot was sent and no reply came. The message waits in the
    /// delayed queue with the retry policy's backoff and is sent again,
    /// because a duplicate is better than a loss.
    DeliveryUnknown,
    /// The engine shut down with the recipient still queued: final for
    /// this engine. The caller still owns the message and may submit it
    /// again.
    Unsent,
}

impl RecipientOutcome {
    /// Whether this is the recipient's last record.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delivered(_) | Self::Failed(_) | Self::Unsent)
    }

    /// Lower-case name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered(_) => "delivered",
            Self::Failed(_) => "failed",
            Self::Deferred { .. } => "deferred",
            Self::DeliveryUnknown => "delivery_unknown",
            Self::Unsent => "unsent",
        }
    }
}

/// A connection's connect started.
#[derive(Debug, Clone)]
pub struct ConnectionOpened {
    /// Its id.
    pub id: ConnectionId,
    /// The scheduler's handle.
    pub handle: ConnectionHandle,
    /// Its binding.
    pub binding: BindingSlot,
    /// The destination domain.
    pub domain: Domain,
    /// Where it connects.
    pub target: Target,
    /// When.
    pub at: Instant,
}

/// A connection's socket is gone.
#[derive(Debug, Clone)]
pub struct ConnectionClosed {
    /// Its id.
    pub id: ConnectionId,
    /// Its binding.
    pub binding: BindingSlot,
    /// The destination domain.
    pub domain: Domain,
    /// Where it connected.
    pub target: Target,
    /// The server's address, if the connect completed.
    pub peer: Option<SocketAddr>,
    /// Why it was closed.
    pub reason: CloseReason,
    /// How the transport shutdown ended.
    pub outcome: CloseOutcome,
    /// Its TLS session, if it had one.
    pub tls: Option<TlsInfo>,
    /// Messages it delivered.
    pub messages_delivered: u32,
    /// Messages that spent a delivery attempt on it: each transaction it
    /// began, whatever the result. A connection that closes with none
    /// never got as far as sending mail, so its messages are still queued
    /// as they were.
    pub messages_attempted: u32,
    /// From the start of the connect to the release.
    pub duration: Duration,
    /// The session failure that ended it, as text, when one did: a refused
    /// connect, a failed TLS handshake, a dropped connection, a timeout.
    pub failure: Option<String>,
    /// The source location that asked for the close.
    pub close_site: &'static Location<'static>,
}

/// Receives the scheduler's records, on the scheduler thread: it must not
/// block for long.
pub trait Observer: Send + 'static {
    /// Takes one record.
    fn report(&mut self, report: Report);
}

/// A channel is an observer; records are dropped once the receiver is gone.
impl Observer for mpsc::Sender<Report> {
    fn report(&mut self, report: Report) {
        let _ = self.send(report);
    }
}

/// Any `FnMut(Report)` closure is an observer.
impl<F> Observer for F
where
    F: FnMut(Report) + Send + 'static,
{
    fn report(&mut self, report: Report) {
        self(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_outcomes() {
        let reply = Reply::new(ec_types::ReplyCode::OK, None, "ok");
        assert!(RecipientOutcome::Delivered(reply.clone()).is_final());
        assert!(RecipientOutcome::Failed(reply.clone()).is_final());
        assert!(RecipientOutcome::Unsent.is_final());
        assert!(!RecipientOutcome::DeliveryUnknown.is_final());
        let deferred = RecipientOutcome::Deferred {
            reply: Some(reply),
            next_attempt: Instant::now(),
        };
        assert!(!deferred.is_final());
        assert_eq!(deferred.as_str(), "deferred");
    }
}
