//! The peer's end of a connection, plain or TLS, with reads that tell how the
//! client closed and closes that can leave out `close_notify` or reset.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::record::{ClientEnd, TcpEnd};

/// What one read brought.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// This many bytes were appended to the buffer.
    Data(usize),
    /// The client closed.
    Closed(ClientEnd),
    /// The read failed otherwise; the connection is unusable.
    Failed(String),
}

#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket is gone (reset, or taken for a handshake that failed).
    Gone,
}

impl Transport {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Takes the plain TCP stream out, leaving [`Transport::Gone`]; `None` on TLS.
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Self::Gone) {
            Self::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Reads once into `buf`. When a TLS client closes with `close_notify`, waits up
    /// to `tcp_wait` more to see how its TCP stream ends.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut, tcp_wait: Duration) -> ReadOutcome {
        match self {
            Self::Plain(tcp) => match tcp.read_buf(buf).await {
                Ok(0) => ReadOutcome::Closed(ClientEnd {
                    close_notify: None,
                    tcp: TcpEnd::Fin,
                }),
                Ok(n) => ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    ReadOutcome::Closed(ClientEnd {
                        close_notify: None,
                        tcp: TcpEnd::Reset,
                    })
                }
                Err(e) => ReadOutcome::Failed(e.to_string()),
            },
            Self::Tls(tls) => match tls.read_buf(buf).await {
                Ok(0) => {
                    let tcp = tcp_end(tls.get_mut().0, tcp_wait).await;
                    ReadOutcome::Closed(ClientEnd {
                        close_notify: Some(true),
                        tcp,
                    })
                }
                Ok(n) => ReadOutcome::Data(n),
                Err(e) => tls_read_error(e),
            },
            Self::Gone => ReadOutcome::Failed("the connection is already closed".to_owned()),
        }
    }

    /// Writes all of `bytes` and flushes them onto the socket.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.write_all(bytes).await,
            Self::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Self::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Shuts down the write side: on TLS after a `close_notify` when asked, then FIN.
    pub(crate) async fn shutdown(&mut self, close_notify: bool) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.shutdown().await,
            Self::Tls(tls) if close_notify => tls.shutdown().await,
            Self::Tls(tls) => tls.get_mut().0.shutdown().await,
            Self::Gone => Ok(()),
        }
    }

    /// Closes with a TCP reset: `SO_LINGER` zero, then close.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        let tcp = match std::mem::replace(self, Self::Gone) {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.into_inner().0,
            Self::Gone => return Ok(()),
        };
        tcp.set_zero_linger()
    }
}

/// Reads the raw TCP stream under a TLS session that ended with `close_notify`,
/// until it ends or `wait` passes. Bytes after `close_notify` are dropped.
async fn tcp_end(tcp: &mut TcpStream, wait: Duration) -> TcpEnd {
    let drain = async {
        let mut scratch = [0u8; 4096];
        loop {
            match tcp.read(&mut scratch).await {
                Ok(0) => return TcpEnd::Fin,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return TcpEnd::Reset,
                // Other errors leave the state unknown; a reset is the likeliest cause.
                Err(_) => return TcpEnd::Reset,
            }
        }
    };
    tokio::time::timeout(wait, drain)
        .await
        .unwrap_or(TcpEnd::StillOpen)
}

/// Sorts a failed TLS read: the TCP stream ended without `close_notify` (rustls
/// returns `UnexpectedEof`), was reset, or TLS itself failed.
fn tls_read_error(error: io::Error) -> ReadOutcome {
    let tcp = match error.kind() {
        io::ErrorKind::UnexpectedEof => TcpEnd::Fin,
        io::ErrorKind::ConnectionReset => TcpEnd::Reset,
        _ => return ReadOutcome::Failed(format!("TLS: {error}")),
    };
    ReadOutcome::Closed(ClientEnd {
        close_notify: Some(false),
        tcp,
    })
}
