//! The transport half of `closeconn`: QUIT, TLS close_notify, TCP FIN, read
//! to EOF, all under one close deadline, and the classification of how it
//! went.
//!
//! ```text
//! stream ended before the close? ──yes──► close_notify/FIN where still possible ──► drop
//!     │no
//!     ▼
//! QUIT step? ──Send──► QUIT, wait for 221 ≤ QUIT timeout ──┐
//!     │  └──AwaitReply──► wait for 221 ≤ QUIT timeout ───────┤
//!     │Skip                                                  │
//!     ▼                                                      ▼
//! TLS? ──yes──► close_notify + flush ──► TCP shutdown(write) ──► read to EOF (≤ 64 KiB) ──► drop
//! ```
//!
//! `AwaitReply` is for a session that sent QUIT with its last transaction
//! and had no reply yet. `Skip` also covers one whose QUIT got its reply
//! already. A missing 221 is normal and only shortens the wait. A peer that closes
//! TLS without close_notify after its 221 closed cleanly, because nothing
//! was due; one that does so while a reply is due truncated the session.

use std::io;
use std::time::Duration;

use ec_types::{CloseOutcome, CloseReport, Stage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::transport::Transport;
use crate::proto::reply_parser::ReplyParser;

/// The maximum number of octets a close reads while it waits for the
/// server's EOF. The socket of a server that sends more after our FIN (an
/// endless reply, say) is dropped, so a hostile peer cannot keep the close
/// reading until its deadline.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The QUIT step of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuitStep {
    /// Nothing: QUIT is not wanted, or it got its reply already.
    Skip,
    /// Send QUIT and wait for its reply.
    Send,
    /// QUIT went with the last transaction: wait for its reply.
    AwaitReply,
}

/// The steps of one transport shutdown and their deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShutdownPlan {
    /// QUIT and its reply.
    pub(crate) quit: QuitStep,
    /// How long to wait for the 221.
    pub(crate) quit_timeout: Duration,
    /// When the socket is dropped whatever the state.
    pub(crate) deadline: Instant,
    /// The end of the stream seen before the close began, if there was one.
    pub(crate) stream_end: Option<StreamEnd>,
}

/// The end of a session's stream before the close began, as its reads,
/// writes or TLS handshake saw it. Such a stream gets no QUIT and no read
/// to EOF, because there is nothing left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The server closed in order: EOF on TCP, close_notify on TLS, or a
    /// TLS EOF without close_notify while no reply was due.
    Closed,
    /// The server ended TLS without close_notify while a reply was due.
    Truncated,
    /// The server reset the connection.
    Reset,
    /// TLS failed: an alert, a bad record, or a failed handshake.
    TlsFailed,
}

impl StreamEnd {
    /// Classifies the end of a read that returned `result` on a stream
    /// (`tls` or not) while a reply was due or not. `None` means data came.
    pub(crate) fn of_read(result: &io::Result<usize>, tls: bool, reply_due: bool) -> Option<Self> {
        let end = match result {
            Ok(0) => Self::Closed,
            Ok(_) => return None,
            Err(error) => match classify_read_error(tls, error) {
                ReadEnd::Reset => Self::Reset,
                ReadEnd::TlsEofWithoutCloseNotify if reply_due => Self::Truncated,
                ReadEnd::TlsError => Self::TlsFailed,
                _ => Self::Closed,
            },
        };
        Some(end)
    }

    /// Classifies a failed write: only a reset says how the stream ended.
    pub(crate) fn of_write(error: &io::Error) -> Option<Self> {
        matches!(classify_read_error(false, error), ReadEnd::Reset).then_some(Self::Reset)
    }

    fn outcome(self) -> CloseOutcome {
        match self {
            Self::Closed => CloseOutcome::Clean,
            Self::Truncated => CloseOutcome::TlsTruncated,
            Self::Reset => CloseOutcome::Reset,
            Self::TlsFailed => CloseOutcome::TlsError,
        }
    }
}

/// What the read side saw last.
enum ReadEnd {
    /// A clean end: EOF on TCP, or close_notify on TLS.
    Eof,
    /// TLS ended without close_notify.
    TlsEofWithoutCloseNotify,
    /// Data arrived (returned in the buffer).
    Data(usize),
    /// The peer reset the connection.
    Reset,
    /// TLS failed.
    TlsError,
    /// Another I/O error.
    Other,
    /// The deadline passed.
    TimedOut,
}

async fn read_some(transport: &mut Transport, buffer: &mut [u8], deadline: Instant) -> ReadEnd {
    match timeout_at(deadline, transport.read(buffer)).await {
        Err(_) => ReadEnd::TimedOut,
        Ok(Ok(0)) => ReadEnd::Eof,
        Ok(Ok(n)) => ReadEnd::Data(n),
        Ok(Err(error)) => classify_read_error(transport.is_tls(), &error),
    }
}

fn classify_read_error(tls: bool, error: &io::Error) -> ReadEnd {
    match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => ReadEnd::Reset,
        io::ErrorKind::UnexpectedEof if tls => ReadEnd::TlsEofWithoutCloseNotify,
        io::ErrorKind::InvalidData if tls => ReadEnd::TlsError,
        _ => ReadEnd::Other,
    }
}

/// Shuts `transport` down by `plan` and reports the outcome. A `parser`
/// from the session contains the start of a reply to QUIT that the session
/// read before the close began.
pub(crate) async fn shutdown(
    transport: Transport,
    plan: ShutdownPlan,
    parser: Option<ReplyParser>,
) -> CloseReport {
    match plan.stream_end {
        Some(end) => close_ended(transport, end, plan.deadline).await,
        None => close_open(transport, plan, parser).await,
    }
}

/// Closes a stream the server already ended: no QUIT, no read to EOF.
/// close_notify goes out only on a TLS session that is still sound, and
/// FIN on anything but a reset socket.
async fn close_ended(mut transport: Transport, end: StreamEnd, deadline: Instant) -> CloseReport {
    let tls = transport.is_tls();
    let mut report = CloseReport {
        outcome: end.outcome(),
        close_notify_sent: false,
        close_notify_received: tls && end == StreamEnd::Closed,
    };
    let closing = match end {
        StreamEnd::Reset => return report,
        StreamEnd::TlsFailed => timeout_at(deadline, transport.shutdown_tcp()).await,
        StreamEnd::Closed | StreamEnd::Truncated => {
            timeout_at(deadline, transport.shutdown()).await
        }
    };
    match closing {
        Ok(Ok(())) => report.close_notify_sent = tls && end != StreamEnd::TlsFailed,
        // The server is gone already; the outcome says how it went.
        Ok(Err(_)) => {}
        Err(_) => report.outcome = CloseOutcome::Aborted,
    }
    report
}

/// Closes a stream that is still open: QUIT when the plan says so, then
/// close_notify and FIN, then reading until the server closes too.
async fn close_open(
    mut transport: Transport,
    plan: ShutdownPlan,
    parser: Option<ReplyParser>,
) -> CloseReport {
    let tls = transport.is_tls();
    let mut report = CloseReport {
        outcome: CloseOutcome::Clean,
        close_notify_sent: false,
        close_notify_received: false,
    };
    let mut buffer = vec![0u8; 4096];

    // Step 1: QUIT and its reply.
    let mut reply_due = false;
    if plan.quit == QuitStep::Send {
        match timeout_at(plan.deadline, write_quit(&mut transport)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                report.outcome = match classify_read_error(tls, &error) {
                    ReadEnd::Reset => CloseOutcome::Reset,
                    ReadEnd::TlsError => CloseOutcome::TlsError,
                    _ => CloseOutcome::NoQuitReply,
                };
                return report;
            }
            Err(_) => {
                report.outcome = CloseOutcome::Aborted;
                return report;
            }
        }
    }
    if plan.quit != QuitStep::Skip {
        let quit_deadline = (Instant::now() + plan.quit_timeout).min(plan.deadline);
        let mut parser = parser.unwrap_or_default();
        let mut answered = false;
        while !answered {
            match read_some(&mut transport, &mut buffer, quit_deadline).await {
                ReadEnd::Data(n) => {
                    if parser.push(&buffer[..n]).is_err() {
                        break;
                    }
                    match parser.next_reply() {
                        Ok(Some(reply)) => {
                            ec_metrics::reply(Stage::Quit, reply.class());
                            answered = true;
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                ReadEnd::Eof => {
                    report.close_notify_received = tls;
                    report.outcome = CloseOutcome::NoQuitReply;
                    break;
                }
                ReadEnd::TlsEofWithoutCloseNotify => {
                    report.outcome = CloseOutcome::TlsTruncated;
                    break;
                }
                ReadEnd::Reset => {
                    report.outcome = CloseOutcome::Reset;
                    return report;
                }
                ReadEnd::TlsError => {
                    report.outcome = CloseOutcome::TlsError;
                    return report;
                }
                ReadEnd::Other => {
                    report.outcome = CloseOutcome::NoQuitReply;
                    break;
                }
                ReadEnd::TimedOut => {
                    report.outcome = if Instant::now() >= plan.deadline {
                        CloseOutcome::Aborted
                    } else {
                        CloseOutcome::QuitTimedOut
                    };
                    break;
                }
            }
        }
        reply_due = !answered;
        if report.outcome == CloseOutcome::Aborted {
            return report;
        }
    }

    // Step 2 and 3: close_notify (on TLS) and FIN, then read to EOF.
    match timeout_at(plan.deadline, transport.shutdown()).await {
        Ok(Ok(())) => report.close_notify_sent = tls,
        Ok(Err(error)) => {
            let reset = matches!(classify_read_error(tls, &error), ReadEnd::Reset);
            if reset && report.outcome == CloseOutcome::Clean {
                report.outcome = CloseOutcome::Reset;
            }
            return report;
        }
        Err(_) => {
            report.outcome = CloseOutcome::Aborted;
            return report;
        }
    }
    if report.close_notify_received {
        return report;
    }
    let mut drained = 0;
    loop {
        match read_some(&mut transport, &mut buffer, plan.deadline).await {
            ReadEnd::Data(n) if drained + n <= DRAIN_LIMIT => drained += n,
            ReadEnd::Data(_) => {
                tracing::debug!(
                    limit = DRAIN_LIMIT,
                    "server kept sending after our FIN; dropping the socket"
                );
                // NOTE: `Aborted` is documented as a close past its
                // deadline; no outcome names a drain cut short, so this
                // one is reported as `Aborted` too.
                report.outcome = CloseOutcome::Aborted;
                return report;
            }
            ReadEnd::Eof => {
                report.close_notify_received = tls;
                return report;
            }
            ReadEnd::TlsEofWithoutCloseNotify => {
                if reply_due && report.outcome == CloseOutcome::Clean {
                    report.outcome = CloseOutcome::TlsTruncated;
                }
                return report;
            }
            ReadEnd::Reset => {
                if report.outcome == CloseOutcome::Clean {
                    report.outcome = CloseOutcome::Reset;
                }
                return report;
            }
            ReadEnd::TlsError => {
                if report.outcome == CloseOutcome::Clean {
                    report.outcome = CloseOutcome::TlsError;
                }
                return report;
            }
            ReadEnd::Other => return report,
            ReadEnd::TimedOut => {
                report.outcome = CloseOutcome::Aborted;
                return report;
            }
        }
    }
}

async fn write_quit(transport: &mut Transport) -> io::Result<()> {
    transport.write_all(b"QUIT\r\n").await?;
    transport.flush().await
}
