//! The messages between the scheduler and the SMTP sessions it runs.
//!
//! The scheduler requests a connection from a driver with an
//! [`OpenRequest`], then sends it [`SessionCommand`]s; the session reports
//! back with [`SessionEvent`]s. Everything here is plain data, so a test can
//! play the session's part without sockets.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::address::Domain;
use crate::binding::BindingSlot;
use crate::config::EffectiveSettings;
use crate::connection::{ConnectionHandle, ConnectionId, Stage};
use crate::event::{CloseOutcome, CloseReason};
use crate::message::{MessageId, RecipientStatus, SharedMessage};
use crate::reply::{EnhancedStatusCode, Reply, ReplyCode};

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A host name (or address literal) and port, resolved by the driver.
    Host {
        /// The name; also the default TLS server name.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A socket address.
    Address(SocketAddr),
    /// The MX hosts of a domain, looked up by the driver (RFC 5321 section
    /// 5.1), in order of preference, or the domain's own addresses when it
    /// has no MX record.
    Mx {
        /// The recipient domain.
        domain: String,
        /// TCP port on every MX host; 25 unless configured.
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host { host, port } => write!(f, "{host}:{port}"),
            Self::Address(address) => write!(f, "{address}"),
            Self::Mx { domain, port } => write!(f, "MX of {domain} (port {port})"),
        }
    }
}

/// The scheduler's request to open one connection.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// The scheduler's handle for it; every event must carry it.
    pub handle: ConnectionHandle,
    /// Its id for logs.
    pub id: ConnectionId,
    /// The binding it belongs to.
    pub binding: BindingSlot,
    /// That binding's name, for logs.
    pub binding_name: Arc<str>,
    /// The binding's source address, if it has one.
    pub source_ip: Option<IpAddr>,
    /// The destination domain.
    pub domain: Domain,
    /// Where to connect.
    pub target: Target,
    /// The settings in force for this binding × domain, EHLO name included.
    pub settings: Arc<EffectiveSettings>,
}

/// A request from the scheduler to an open session.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionCommand {
    /// Deliver these messages, one transaction each, in order. Before the
    /// first, the session checks without waiting that an idle connection
    /// has not been closed by the server.
    Deliver {
        /// The batch, in order.
        messages: Vec<SharedMessage>,
        /// This is the connection's last batch: it reaches
        /// `max_deliveries_per_connection`, and `closeconn` follows when it
        /// is done. The session may send QUIT right after the last
        /// transaction, so that the close needs no round trip of its own.
        /// With PIPELINING it may go in the transaction's group, because
        /// RFC 2920 section 3.1 allows QUIT as the last command of a
        /// group. The scheduler gives such a connection no more mail.
        last: bool,
    },
    /// Shut the transport down.
    Close(ClosePlan),
}

/// How `closeconn` wants the transport shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePlan {
    /// End with QUIT first: send it, or, when the session already sent it
    /// with its last transaction, wait for its reply. False for a broken
    /// session: never write a command into a failed stream or after QUIT.
    pub send_quit: bool,
    /// When the whole shutdown must be over; the socket is dropped then.
    pub deadline: Instant,
}

/// What a session reports to the scheduler.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The TCP connect completed.
    Connected {
        /// Our end.
        local: SocketAddr,
        /// The server's end.
        peer: SocketAddr,
    },
    /// Banner, EHLO and (when used) STARTTLS are done: the session takes
    /// mail.
    Ready {
        /// The TLS session, or `None` in clear text.
        tls: Option<TlsInfo>,
        /// What the server offered in its last EHLO reply.
        capabilities: SessionCapabilities,
    },
    /// The server rejected MAIL for the transaction under way, and so the
    /// whole transaction. Reported as the reply arrives, before the
    /// replies to the rest of a pipelined or chunked group. When the
    /// transaction never ends (the connection drops, times out or is shut
    /// down), a 5xx fails every recipient of the transaction with this
    /// reply, and a 4xx defers them with it. A transaction that ends
    /// reports its outcome as usual, which then decides.
    MailRejected {
        /// The message in transaction.
        message: MessageId,
        /// The server's reply to MAIL.
        reply: Reply,
    },
    /// The server rejected one recipient of the transaction under way with
    /// a 4xx or 5xx reply to RCPT. Reported as the reply arrives. When the
    /// transaction never ends, a 5xx fails the recipient with this reply,
    /// because a session failure or a close cannot undo a permanent
    /// rejection, and a 4xx defers it with this reply, because the server
    /// did not take the message for it.
    RecipientRejected {
        /// The message in transaction.
        message: MessageId,
        /// The recipient's index in the message's recipients.
        index: usize,
        /// The server's reply to its RCPT.
        reply: Reply,
    },
    /// One message's transaction ended.
    Transaction(TransactionOutcome),
    /// Every message of the last `Deliver` has its transaction outcome and
    /// the session is idle.
    BatchDone,
    /// The session cannot go on; the scheduler must close it.
    Failed(SessionFailure),
    /// The socket is gone. Only now are the connection's counts released.
    Closed(CloseReport),
}

/// The TLS session of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, such as `TLSv1.3`.
    pub version: String,
    /// Cipher suite name.
    pub cipher_suite: String,
    /// Whether the certificate was verified (chain, and name under `host`).
    pub verified: bool,
}

/// The server capabilities a scheduler and a delivery log care about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCapabilities {
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 1870 SIZE limit in octets, when the server states one.
    pub size_limit: Option<u64>,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3207 STARTTLS (in the reply the session last saw).
    pub starttls: bool,
}

/// The end of one transaction.
#[derive(Debug, Clone)]
pub struct TransactionOutcome {
    /// The message.
    pub message: MessageId,
    /// The new status of each recipient, in the message's order. A
    /// recipient that already had a final status keeps it.
    pub recipients: Vec<RecipientStatus>,
    /// From MAIL to the last reply.
    pub elapsed: Duration,
}

/// Why a session stopped, and at which point of which transaction.
#[derive(Debug)]
pub struct SessionFailure {
    /// What went wrong.
    pub error: SessionError,
    /// The stage the session was in.
    pub stage: Stage,
    /// The message whose transaction was under way, if one was.
    pub in_transaction: Option<MessageId>,
    /// The final dot of that transaction was sent and its reply is missing:
    /// the message may have been accepted.
    pub final_dot_sent: bool,
}

/// How the transport shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReport {
    /// The classified outcome.
    pub outcome: CloseOutcome,
    /// We sent TLS close_notify.
    pub close_notify_sent: bool,
    /// The server sent TLS close_notify.
    pub close_notify_received: bool,
}

/// The cause of a session failure. Each variant decides which fate the
/// batch gets (see [`SessionError::close_reason`]).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The TCP connect failed.
    #[error("connect to {target} failed: {kind}{}", connect_hint(*kind))]
    Connect {
        /// Where we tried to connect.
        target: String,
        /// The operating system's error kind.
        kind: io::ErrorKind,
    },
    /// The target's host name could not be resolved to an address.
    #[error(
        "failed to resolve {host}: {message}; check the name and the DNS servers (the \
         system's, or for MX lookups [dns] nameservers when the configuration sets it)"
    )]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("{domain} accepts no mail: it publishes a null MX record (RFC 7505)")]
    NullMx {
        /// The recipient domain.
        domain: String,
    },
    /// The DNS answered that the domain does not exist (NXDOMAIN).
    #[error("{domain} does not exist: the DNS answered NXDOMAIN to its MX lookup")]
    DomainNotFound {
        /// The recipient domain.
        domain: String,
    },
    /// A step did not finish within its deadline.
    #[error("timed out at stage {stage} after {after:?}{}", timeout_hint(*stage))]
    Timeout {
        /// The stage.
        stage: Stage,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server replied with an error where the session cannot go on
    /// (banner, EHLO and HELO, STARTTLS, or 421 at any point).
    #[error("server replied \"{reply}\" at stage {stage}")]
    Reply {
        /// The stage.
        stage: Stage,
        /// The reply.
        reply: Reply,
    },
    /// TLS is required and the server's EHLO reply did not offer STARTTLS.
    #[error("TLS is required but the server does not offer STARTTLS")]
    TlsNotOffered,
    /// TLS is required and the server refused STARTTLS.
    #[error("TLS is required but the server refused STARTTLS with \"{0}\"")]
    StartTlsRefused(Reply),
    /// The TLS handshake or certificate verification failed.
    // NOTE: the cause is the TLS library's message, because this crate does
    // not depend on a TLS library; the session logs the typed error.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    /// The server sent bytes after its 220 to STARTTLS and before the
    /// handshake: a command-injection attack, never treated as a reply.
    #[error("server sent {len} bytes after its 220 to STARTTLS, before the TLS handshake")]
    StartTlsInjection {
        /// How many bytes were waiting.
        len: usize,
    },
    /// The server sent something that is not valid SMTP.
    #[error("protocol error at stage {stage}: {detail}")]
    Protocol {
        /// The stage.
        stage: Stage,
        /// What was wrong.
        detail: String,
    },
    /// The server closed the connection.
    #[error("connection closed by the server at stage {stage}{}", closed_hint(*stage))]
    PeerClosed {
        /// The stage.
        stage: Stage,
    },
    /// The server reset the connection.
    #[error("connection reset by the server at stage {stage}")]
    Reset {
        /// The stage.
        stage: Stage,
    },
    /// Another I/O error.
    #[error("I/O error at stage {stage}: {kind}")]
    Io {
        /// The stage.
        stage: Stage,
        /// The operating system's error kind.
        kind: io::ErrorKind,
    },
}

/// Returns what to check after a failed connect of a common error kind.
fn connect_hint(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::ConnectionRefused => {
            "; nothing accepts connections there: check that the server runs, and the \
             host and port of the route (or the MX records and mx_port)"
        }
        io::ErrorKind::TimedOut
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => {
            "; check the address of the route (or the MX records) and that no firewall \
             drops the connection"
        }
        _ => "",
    }
}

/// Returns the likeliest cause of a close by the server at `stage`, when
/// one is worth naming.
fn closed_hint(stage: Stage) -> &'static str {
    match stage {
        Stage::Banner => {
            "; a port that expects TLS from the first byte, such as 465, closes a client \
             that sends no TLS handshake, which only the TLS policy `implicit` starts"
        }
        _ => "",
    }
}

/// Returns the likeliest cause of a timeout at `stage`, when one is worth
/// naming.
fn timeout_hint(stage: Stage) -> &'static str {
    match stage {
        Stage::Banner => {
            "; the server sent no 220 greeting (a port that expects TLS from \
             the first byte, such as 465, sends none before a TLS handshake, which only \
             the TLS policy `implicit` starts)"
        }
        _ => "",
    }
}

impl SessionError {
    /// The close reason that `closeconn` records for this error.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            Self::Connect { .. }
            | Self::Resolve { .. }
            | Self::NullMx { .. }
            | Self::DomainNotFound { .. } => CloseReason::ConnectFailed,
            Self::Timeout { .. } => CloseReason::Timeout,
            Self::Reply { reply, .. } if reply.code.as_u16() == 421 => CloseReason::ServiceClosing,
            Self::Reply { .. } => CloseReason::Greeting,
            Self::TlsNotOffered | Self::StartTlsRefused(_) => CloseReason::TlsUnavailable,
            Self::TlsHandshake(_) => CloseReason::TlsFailed,
            Self::StartTlsInjection { .. } => CloseReason::StartTlsInjection,
            Self::Protocol { .. } => CloseReason::ProtocolError,
            Self::PeerClosed { .. } | Self::Reset { .. } | Self::Io { .. } => {
                CloseReason::PeerClosed
            }
        }
    }

    /// Returns the reply that fails every message of the domain at once, for
    /// an error that no later attempt can change: a null MX (RFC 7505, with
    /// the 556 code of RFC 7504 and status 5.1.10) or a domain that does not
    /// exist (550 5.1.2). Returns `None` for every other error, which defers
    /// the mail.
    pub fn permanent_reply(&self) -> Option<Reply> {
        let (code, enhanced, text) = match self {
            Self::NullMx { domain } => (
                ReplyCode::DOMAIN_ACCEPTS_NO_MAIL,
                EnhancedStatusCode::new(5, 1, 10),
                format!("{domain} accepts no mail: it publishes a null MX (reply made by ec)"),
            ),
            Self::DomainNotFound { domain } => (
                ReplyCode::MAILBOX_UNAVAILABLE,
                EnhancedStatusCode::new(5, 1, 2),
                format!("{domain} does not exist: the DNS answered NXDOMAIN (reply made by ec)"),
            ),
            _ => return None,
        };
        Some(Reply::made_locally(code, enhanced.ok(), &text))
    }

    /// Whether the transport is still usable for a QUIT. A session that
    /// failed on I/O, TLS, a timeout or garbage is not.
    pub fn transport_usable(&self) -> bool {
        matches!(
            self,
            Self::Reply { .. } | Self::TlsNotOffered | Self::StartTlsRefused(_)
        )
    }
}
