//! One sink connection: the read buffer and the I/O around
//! [`Protocol`], over TCP and then, after STARTTLS, over TLS, or over TLS
//! from the connect on under implicit TLS.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::protocol::{Protocol, Step};
use super::server::Shared;
use super::READ_BUFFER_SIZE;

/// How long the close after QUIT or 421 may take: the TLS close_notify and
/// FIN, then reading until the client closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why [`Connection::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// STARTTLS was accepted with 220.
    StartTls,
    /// QUIT got its 221 reply.
    Quit,
    /// The client closed its side.
    PeerClosed,
    /// The sink is shutting down.
    Shutdown,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
}

struct Connection {
    protocol: Protocol,
    shared: Arc<Shared>,
    buffer: Box<[u8]>,
    /// Unconsumed input is `buffer[start..end]`.
    start: usize,
    end: usize,
    out: Vec<u8>,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn run(
    mut tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Replies to a pipelined group go out in one write; without
    // TCP_NODELAY a client waiting for them could sit out a delayed ACK.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY on a sink connection");
    }

    let mut connection = Connection::new(shared.clone());
    if shared.config.implicit_tls {
        let Some(mut tls) = handshake(tcp, peer, &acceptor, &shared).await else {
            return;
        };
        connection.protocol.tls_started();
        connection.out.extend_from_slice(&shared.replies.greeting);
        let exit = connection.serve(&mut tls, &mut shutdown).await;
        connection.finish(&mut tls, peer, exit).await;
        return;
    }

    connection.out.extend_from_slice(&shared.replies.greeting);

    let exit = connection.serve(&mut tcp, &mut shutdown).await;
    if exit.as_ref().ok() != Some(&Exit::StartTls) {
        connection.finish(&mut tcp, peer, exit).await;
        return;
    }

    let injected = connection.discard_input();
    if injected > 0 {
        shared.stats.count_injected(injected as u64);
        tracing::warn!(%peer, octets = injected, "client sent data after STARTTLS before the TLS handshake; discarded");
    }

    let Some(mut tls) = handshake(tcp, peer, &acceptor, &shared).await else {
        return;
    };
    connection.protocol.tls_started();

    let exit = connection.serve(&mut tls, &mut shutdown).await;
    connection.finish(&mut tls, peer, exit).await;
}

/// Runs the server side of a TLS handshake within the handshake timeout
/// and counts its result. Returns `None` when it failed, after logging why.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(tcp));
    match handshake.await {
        Ok(Ok(tls)) => {
            shared.stats.count_tls(true);
            Some(tls)
        }
        Ok(Err(error)) => {
            shared.stats.count_tls(false);
            tracing::debug!(%peer, %error, "TLS handshake with a sink client failed");
            None
        }
        Err(_) => {
            shared.stats.count_tls(false);
            tracing::debug!(%peer, "TLS handshake with a sink client timed out");
            None
        }
    }
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            protocol: Protocol::new(shared.clone()),
            shared,
            buffer: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(1024),
        }
    }

    /// Handles buffered input, sends the replies, and reads more, until the
    /// protocol or the stream ends the connection.
    async fn serve<S>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> io::Result<Exit>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let (consumed, step) = self
                .protocol
                .receive(&self.buffer[self.start..self.end], &mut self.out);
            self.start += consumed;

            if !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                stream.flush().await?;
                self.out.clear();
            }
            match step {
                Step::StartTls => return Ok(Exit::StartTls),
                Step::Quit => return Ok(Exit::Quit),
                Step::NeedInput => {}
            }

            if *shutdown.borrow() {
                return Ok(Exit::Shutdown);
            }
            self.make_room();
            let idle = self.shared.config.idle_timeout;
            let read = tokio::select! {
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                read = tokio::time::timeout(idle, stream.read(&mut self.buffer[self.end..])) => read,
            };
            match read {
                Err(_) => return Ok(Exit::IdleTimeout),
                Ok(Ok(0)) => return Ok(Exit::PeerClosed),
                Ok(Ok(count)) => self.end += count,
                Ok(Err(error)) => return Err(error),
            }
        }
    }

    /// Moves unconsumed input to the front of the buffer so a read has room.
    /// The protocol consumes every complete line and all but two bytes of
    /// message data, and a command line may fill at most half the buffer,
    /// so there is always room afterwards.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        debug_assert!(self.end < self.buffer.len(), "sink read buffer is full");
    }

    /// Drops buffered input and returns how many octets it was.
    fn discard_input(&mut self) -> usize {
        let discarded = self.end - self.start;
        self.start = 0;
        self.end = 0;
        discarded
    }

    /// Ends the connection after `serve` returned.
    async fn finish<S>(&mut self, stream: &mut S, peer: SocketAddr, exit: io::Result<Exit>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let farewell = match exit {
            Ok(Exit::Quit | Exit::PeerClosed | Exit::StartTls) => None,
            Ok(Exit::Shutdown) => Some(&self.shared.replies.shutting_down),
            Ok(Exit::IdleTimeout) => Some(&self.shared.replies.timeout),
            Err(error) => {
                tracing::debug!(%peer, %error, "sink connection failed");
                return;
            }
        };
        if let Some(reply) = farewell {
            let write = tokio::time::timeout(CLOSE_TIMEOUT, stream.write_all(reply));
            if !matches!(write.await, Ok(Ok(()))) {
                return;
            }
        }
        close(stream).await;
    }
}

/// Closes the stream in order: TLS close_notify (on TLS) and FIN, then
/// reads until the client closes its side, so that a client's own
/// close_notify arriving after our FIN does not meet a socket that is
/// already gone and get a reset.
async fn close<S>(stream: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let orderly = async {
        stream.shutdown().await?;
        let mut scratch = [0u8; 512];
        while stream.read(&mut scratch).await? > 0 {}
        io::Result::Ok(())
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, orderly).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::trace!(%error, "sink connection close was not clean"),
        Err(_) => tracing::trace!("client did not close within the close timeout"),
    }
}
