//! The session's reports to its driver: events, transaction ends and
//! errors.

use std::fmt;
use std::time::Duration;

use ec_types::{Reply, Stage};
use thiserror::Error;

use super::timer::Timer;
use crate::proto::capabilities::Capabilities;
use crate::proto::reply_parser::ReplyError;

/// Something the driver must act on or pass to the scheduler; returned by
/// [`Client::poll_event`](super::Client::poll_event) in the order it
/// happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The session takes transactions: banner, EHLO (or HELO) and, when
    /// used, STARTTLS and the second EHLO are done. Reported once.
    Ready {
        /// The extensions of the server's last EHLO reply.
        capabilities: Capabilities,
        /// Whether the session runs over TLS.
        tls: bool,
    },
    /// The server accepted STARTTLS and sent nothing after its 220. The
    /// driver must now run the TLS handshake on the same socket, then call
    /// [`Client::tls_established`](super::Client::tls_established).
    StartTls,
    /// The server rejected MAIL with a 4xx (other than 421) or 5xx reply.
    /// Reported as the reply arrives, before the replies to the rest of a
    /// pipelined group, so the driver has it even when the transaction is
    /// then aborted. A transaction that ends reports
    /// [`TransactionEnd::MailRejected`] with the same reply.
    MailRejected {
        /// The reply to MAIL.
        reply: Reply,
    },
    /// The server replied to the RCPT of one recipient. Not reported when
    /// MAIL was rejected, because the server then rejects every RCPT for
    /// that reason alone.
    RecipientReply {
        /// The recipient's index in [`Transaction::recipients`](super::Transaction::recipients).
        index: usize,
        /// The RCPT reply.
        reply: Reply,
    },
    /// A transaction ended. Every transaction that
    /// [`Client::start_transaction`](super::Client::start_transaction)
    /// accepted ends with exactly one of these, also when the session
    /// fails.
    TransactionFinished(TransactionEnd),
    /// The session was ready and idle for [`Timeouts::idle`](super::Timeouts::idle).
    /// The session stays ready; the driver decides whether to quit.
    IdleTimeout,
    /// The session cannot go on. When
    /// [`ClientError::allows_quit`] is true the session is still in step
    /// with the server and [`Client::quit`](super::Client::quit) sends QUIT;
    /// otherwise it is closed and the driver drops the transport.
    Failed {
        /// The stage the session was in when it failed.
        stage: Stage,
        /// The error.
        error: ClientError,
    },
    /// The session is over after QUIT: the server replied, closed the
    /// connection, or the QUIT timer expired (`reply` is `None` then, which
    /// is normal).
    Closed {
        /// The reply to QUIT, if one came.
        reply: Option<Reply>,
    },
}

/// The end of a transaction, which decides what happens to its recipients.
///
/// A recipient whose RCPT was rejected keeps the fate of its own RCPT reply
/// ([`ClientEvent::RecipientReply`]); this value decides for every other
/// recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionEnd {
    /// The server accepted the message after the final dot: every recipient
    /// whose RCPT got 2xx is delivered.
    Delivered {
        /// The reply to the final dot.
        reply: Reply,
    },
    /// The server rejected MAIL; the reply applies to every recipient.
    MailRejected {
        /// The reply to MAIL.
        reply: Reply,
    },
    /// The server rejected every RCPT; each recipient has its own reply. The
    /// message data was not sent.
    NoValidRecipients,
    /// The server rejected DATA; the reply applies to every accepted
    /// recipient.
    DataRejected {
        /// The reply to DATA.
        reply: Reply,
    },
    /// The server rejected the message after the final dot; the reply
    /// applies to every accepted recipient.
    MessageRejected {
        /// The reply to the final dot.
        reply: Reply,
    },
    /// The session failed or was aborted before the transaction's last
    /// reply. The recipients without a final RCPT reply get the fate of
    /// `error`.
    Aborted {
        /// The reason the session stopped.
        error: ClientError,
        /// The message data with its final dot was handed to the driver for
        /// writing and no reply came: the server may have accepted the
        /// message, so it must be retried and marked "delivery unknown".
        delivery_unknown: bool,
    },
}

/// The reason a session failed.
///
/// The variants follow the scheduler's questions: was it the server's
/// reply (whose class tells whether it is transient), a broken or hostile
/// peer, a stall, or the TLS policy.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server's banner was not 2xx, such as `554 no SMTP service here`.
    #[error("server rejected the connection with banner \"{0}\"")]
    BannerRejected(Reply),
    /// The server rejected EHLO with 4xx, or with any error after STARTTLS
    /// (where no HELO fallback is tried).
    #[error("server rejected EHLO with \"{0}\"")]
    EhloRejected(Reply),
    /// The server rejected both EHLO and HELO.
    #[error("server rejected EHLO and HELO; HELO reply \"{0}\"")]
    HeloRejected(Reply),
    /// The TLS policy is `Required` and STARTTLS is not possible; no mail
    /// may be sent on this connection.
    #[error("TLS required but unavailable: {0}")]
    TlsUnavailable(TlsUnavailable),
    /// The server sent bytes after its 220 reply to STARTTLS, before the TLS
    /// handshake. Those bytes travelled in clear text. Reading them as
    /// replies inside the TLS session would let an attacker on the path
    /// inject responses, so the connection is dropped.
    #[error(
        "server sent {len} octets after its 220 reply to STARTTLS and before the TLS handshake; \
         dropping the connection as a possible command injection"
    )]
    StartTlsInjection {
        /// How many octets were waiting.
        len: usize,
    },
    /// The server replied 421: it is closing the connection.
    #[error("server is closing the connection: \"{0}\"")]
    ServiceClosing(Reply),
    /// The server rejected RSET, so it is out of step or broken.
    #[error("server rejected RSET with \"{0}\"")]
    RsetRejected(Reply),
    /// A wait took longer than its timeout.
    #[error("{timer} timed out after {after:?}")]
    Timeout {
        /// The wait that timed out.
        timer: Timer,
        /// Its duration.
        after: Duration,
    },
    /// The server sent bytes that are not a valid reply.
    #[error("invalid reply from the server: {0}")]
    InvalidReply(#[from] ReplyError),
    /// The server sent a reply where none was due, or of a class that makes
    /// no sense for the command (such as 354 to MAIL).
    #[error("unexpected reply \"{reply}\" at stage {stage}")]
    UnexpectedReply {
        /// The reply.
        reply: Reply,
        /// The stage the session was in.
        stage: Stage,
    },
    /// The connection ended while a reply was due or a transaction could
    /// follow.
    #[error("connection closed by the server at stage {stage}")]
    ConnectionClosed {
        /// The stage the session was in.
        stage: Stage,
    },
    /// The driver aborted the session with [`Client::abort`](super::Client::abort).
    #[error("session aborted by the driver")]
    Aborted,
}

impl ClientError {
    /// Returns whether the session is still in step with the server after
    /// this error, so that QUIT may be sent. True for rejections of the greeting
    /// steps and for an unavailable TLS, false for a broken, closing,
    /// stalled or hostile peer.
    pub fn allows_quit(&self) -> bool {
        matches!(
            self,
            Self::BannerRejected(_)
                | Self::EhloRejected(_)
                | Self::HeloRejected(_)
                | Self::TlsUnavailable(_)
        )
    }

    /// Returns the server's reply behind the error, if there was one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Self::BannerRejected(reply)
            | Self::EhloRejected(reply)
            | Self::HeloRejected(reply)
            | Self::ServiceClosing(reply)
            | Self::RsetRejected(reply)
            | Self::TlsUnavailable(TlsUnavailable::Rejected(reply))
            | Self::UnexpectedReply { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// The reason TLS could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsUnavailable {
    /// The EHLO reply did not offer STARTTLS, or the server only spoke HELO.
    NotOffered,
    /// The server rejected STARTTLS, usually with 454 (RFC 3207 section 4).
    Rejected(Reply),
}

impl fmt::Display for TlsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOffered => f.write_str("the server does not offer STARTTLS"),
            Self::Rejected(reply) => write!(f, "the server replied \"{reply}\" to STARTTLS"),
        }
    }
}
