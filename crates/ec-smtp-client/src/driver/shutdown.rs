//! The transport half of `closeconn`: QUIT, TLS close_notify, TCP FIN, read
//! to EOF, all under one close deadline, and the classification of how it
//! went.
//!
//! ```text
//! send_quit? ──yes──► QUIT, wait for 221 ≤ QUIT timeout ──┐
//!     │no                                                  │
//!     ▼                                                    ▼
//! TLS? ──yes──► close_notify + flush ──► TCP shutdown(write) ──► read to EOF ──► drop
//! ```
//!
//! A missing 221 is normal and only shortens the wait. A peer that closes
//! TLS without close_notify after its 221 closed cleanly, because nothing
//! was due; one that does so while the 221 is due truncated the session.

use std::io;
use std::time::Duration;

use ec_types::{CloseOutcome, CloseReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::transport::Transport;
use crate::proto::reply_parser::ReplyParser;

/// How the shutdown should go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShutdownPlan {
    /// Send QUIT and wait for its reply.
    pub(crate) send_quit: bool,
    /// How long to wait for the 221.
    pub(crate) quit_timeout: Duration,
    /// When the socket is dropped whatever the state.
    pub(crate) deadline: Instant,
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

/// Shuts `transport` down as `plan` says and reports how it went.
///
/// `pending` holds bytes the session had already read and not parsed; a
/// 221 may be among them when QUIT was pipelined.
pub(crate) async fn shutdown(
    mut transport: Transport,
    plan: ShutdownPlan,
    pending: &[u8],
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
    if plan.send_quit {
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
        let quit_deadline = (Instant::now() + plan.quit_timeout).min(plan.deadline);
        let mut parser = ReplyParser::default();
        let mut answered =
            parser.push(pending).is_ok() && matches!(parser.next_reply(), Ok(Some(_)));
        while !answered {
            match read_some(&mut transport, &mut buffer, quit_deadline).await {
                ReadEnd::Data(n) => {
                    if parser.push(&buffer[..n]).is_err() {
                        break;
                    }
                    match parser.next_reply() {
                        Ok(Some(_)) => answered = true,
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
    loop {
        match read_some(&mut transport, &mut buffer, plan.deadline).await {
            ReadEnd::Data(_) => continue,
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
