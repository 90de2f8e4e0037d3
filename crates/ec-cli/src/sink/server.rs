//! The sink's listener: it accepts connections, runs one task per
//! connection, counts what they received and shuts them all down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::certificate::SinkCertificate;
use super::{session, SinkConfig, SinkError, READ_BUFFER_SIZE};

/// A message the sink accepted, kept when [`SinkConfig::keep_messages`] is
/// set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The MAIL FROM path without brackets; empty for the null path.
    pub reverse_path: String,
    /// The RCPT TO paths without brackets, in order.
    pub recipients: Vec<String>,
    /// The message as received, after dot-unstuffing, including the CRLF
    /// before the final dot.
    pub data: Vec<u8>,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// Counts since the sink started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: u64,
    /// Messages accepted (250 after the final dot).
    pub messages: u64,
    /// Recipients of the accepted messages.
    pub recipients: u64,
    /// Octets of the accepted messages, after dot-unstuffing.
    pub message_octets: u64,
    /// Of the accepted messages, those that came as `BDAT` chunks.
    pub chunked_messages: u64,
    /// Messages rejected for their size.
    pub rejected_messages: u64,
    /// QUIT commands received.
    pub quits: u64,
    /// LF characters in message data not preceded by CR. A client that
    /// normalizes line endings, as RFC 5321 section 2.3.8 requires, sends
    /// none.
    pub bare_line_feeds: u64,
    /// Octets that clients sent after STARTTLS and before the handshake,
    /// which were discarded.
    pub starttls_injected_octets: u64,
}

/// The counters behind [`SinkStats`], updated by every connection.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    active_connections: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_failures: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    message_octets: AtomicU64,
    chunked_messages: AtomicU64,
    rejected_messages: AtomicU64,
    quits: AtomicU64,
    bare_line_feeds: AtomicU64,
    starttls_injected_octets: AtomicU64,
}

// Relaxed ordering is enough: each counter is read on its own, and a
// snapshot taken while connections run is approximate by nature.
impl Counters {
    pub(crate) fn count_message(&self, octets: u64, recipients: u32) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.message_octets.fetch_add(octets, Ordering::Relaxed);
        self.recipients
            .fetch_add(u64::from(recipients), Ordering::Relaxed);
    }

    pub(crate) fn count_chunked(&self) {
        self.chunked_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rejected(&self) {
        self.rejected_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_quit(&self) {
        self.quits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_bare_line_feeds(&self, count: u64) {
        if count > 0 {
            self.bare_line_feeds.fetch_add(count, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_tls(&self, ok: bool) {
        let counter = if ok {
            &self.tls_handshakes
        } else {
            &self.tls_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_injected(&self, octets: u64) {
        self.starttls_injected_octets
            .fetch_add(octets, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SinkStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SinkStats {
            connections: load(&self.connections),
            active_connections: load(&self.active_connections),
            tls_handshakes: load(&self.tls_handshakes),
            tls_failures: load(&self.tls_failures),
            messages: load(&self.messages),
            recipients: load(&self.recipients),
            message_octets: load(&self.message_octets),
            chunked_messages: load(&self.chunked_messages),
            rejected_messages: load(&self.rejected_messages),
            quits: load(&self.quits),
            bare_line_feeds: load(&self.bare_line_feeds),
            starttls_injected_octets: load(&self.starttls_injected_octets),
        }
    }
}

/// Counts a connection as active while it lives, including when its task
/// is aborted.
pub(crate) struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared
            .stats
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .stats
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Replies that depend on the configuration, built once.
#[derive(Debug)]
pub(crate) struct Replies {
    pub(crate) greeting: Vec<u8>,
    pub(crate) ehlo_plain: Vec<u8>,
    pub(crate) ehlo_tls: Vec<u8>,
    pub(crate) helo: Vec<u8>,
    pub(crate) shutting_down: Vec<u8>,
    pub(crate) timeout: Vec<u8>,
}

impl Replies {
    fn new(config: &SinkConfig) -> Self {
        let host = &config.hostname;
        let ehlo = |starttls: bool| {
            let mut reply = format!(
                "250-{host}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n",
                config.max_message_size
            );
            if starttls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if config.chunking {
                reply.push_str("250-CHUNKING\r\n");
            }
            reply.push_str("250 ENHANCEDSTATUSCODES\r\n");
            reply.into_bytes()
        };
        Self {
            greeting: format!("220 {host} ESMTP ec sink\r\n").into_bytes(),
            ehlo_plain: ehlo(true),
            ehlo_tls: ehlo(false),
            helo: format!("250 {host}\r\n").into_bytes(),
            shutting_down: format!("421 4.3.2 {host} Service shutting down\r\n").into_bytes(),
            timeout: format!("421 4.4.2 {host} Error: timeout exceeded\r\n").into_bytes(),
        }
    }
}

/// State shared by every connection of one sink.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SinkConfig,
    pub(crate) replies: Replies,
    pub(crate) stats: Counters,
    messages: Mutex<Vec<ReceivedMessage>>,
}

impl Shared {
    pub(crate) fn new(config: SinkConfig) -> Self {
        Self {
            replies: Replies::new(&config),
            config,
            stats: Counters::default(),
            messages: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn keep(&self, message: ReceivedMessage) {
        self.lock_messages().push(message);
    }

    pub(crate) fn take_messages(&self) -> Vec<ReceivedMessage> {
        std::mem::take(&mut *self.lock_messages())
    }

    /// The kept messages. A connection task that panicked while holding
    /// the lock leaves a list that is still whole, because `push` either
    /// happened or did not, so poisoning is ignored.
    fn lock_messages(&self) -> std::sync::MutexGuard<'_, Vec<ReceivedMessage>> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running sink. Dropping it stops the listener and signals every
/// connection to close; [`Sink::shutdown`] also waits for them.
#[derive(Debug)]
pub struct Sink {
    local_addr: SocketAddr,
    certificate: SinkCertificate,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    listener_task: Option<JoinHandle<()>>,
}

impl Sink {
    /// Generates the certificates, binds the listening socket and starts
    /// accepting connections on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`SinkError`] when the address is not loopback and that is not
    /// allowed, the host name is not a valid domain name, the line length
    /// limit does not fit the read buffer, the certificate cannot be made,
    /// or the socket cannot be bound.
    pub async fn start(config: SinkConfig) -> Result<Self, SinkError> {
        if !config.allow_non_loopback && !config.listen.ip().is_loopback() {
            return Err(SinkError::NotLoopback(config.listen));
        }
        if config.max_line_length == 0 || config.max_line_length > READ_BUFFER_SIZE / 2 {
            return Err(SinkError::Config(format!(
                "max_line_length {} must be between 1 and {} octets",
                config.max_line_length,
                READ_BUFFER_SIZE / 2
            )));
        }

        if let Err(error) = ec_types::Domain::new(&config.hostname) {
            return Err(SinkError::Config(format!("hostname: {error}")));
        }

        let certificate = SinkCertificate::generate(&config.hostname)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SinkError::Bind {
                    address: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| SinkError::Bind {
            address: config.listen,
            source,
        })?;

        let shared = Arc::new(Shared::new(config));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(certificate.server_config.clone());
        let listener_task =
            tokio::spawn(accept_loop(listener, acceptor, shared.clone(), shutdown_rx));
        tracing::info!(%local_addr, "SMTP sink listening");

        Ok(Self {
            local_addr,
            certificate,
            shared,
            shutdown,
            listener_task: Some(listener_task),
        })
    }

    /// The address the sink listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA certificate that signed the server certificate, in PEM form.
    pub fn ca_pem(&self) -> &str {
        &self.certificate.ca_pem
    }

    /// The CA certificate in DER form, for a rustls root store.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.certificate.ca_der
    }

    /// Writes the CA certificate (PEM) to `path`, for a client's
    /// `--ca-file`.
    ///
    /// # Errors
    ///
    /// [`SinkError::WriteCa`] when the file cannot be written.
    pub fn write_ca_file(&self, path: &Path) -> Result<(), SinkError> {
        std::fs::write(path, self.ca_pem()).map_err(|source| SinkError::WriteCa {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the CA certificate (PEM) to a new temporary file, deleted when
    /// the returned path is dropped.
    ///
    /// # Errors
    ///
    /// [`SinkError::WriteCa`] when the file cannot be created or written.
    pub fn write_ca_temp_file(&self) -> Result<tempfile::TempPath, SinkError> {
        let write_error = |source| SinkError::WriteCa {
            path: std::env::temp_dir(),
            source,
        };
        let file = tempfile::Builder::new()
            .prefix("ec-sink-ca-")
            .suffix(".pem")
            .tempfile()
            .map_err(write_error)?;
        let path = file.into_temp_path();
        self.write_ca_file(&path)?;
        Ok(path)
    }

    /// The counts so far.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats.snapshot()
    }

    /// Removes and returns the messages kept so far (none unless
    /// [`SinkConfig::keep_messages`] is set).
    pub fn take_messages(&self) -> Vec<ReceivedMessage> {
        self.shared.take_messages()
    }

    /// Stops accepting, sends 421 to every open connection, waits up to
    /// [`SinkConfig::shutdown_grace`] for them to close, aborts the rest,
    /// and returns the final counts. No task of the sink runs afterwards.
    pub async fn shutdown(mut self) -> SinkStats {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.listener_task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "SMTP sink listener task failed");
            }
        }
        self.stats()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Accepts connections until shutdown, then drains them.
async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let guard = ActiveGuard::new(shared.clone());
                    let acceptor = acceptor.clone();
                    let shutdown = shutdown.clone();
                    sessions.spawn(async move {
                        session::run(stream, peer, acceptor, guard.0.clone(), shutdown).await;
                        drop(guard);
                    });
                }
                Err(error) => {
                    // Usually EMFILE or ENFILE: wait before trying again so
                    // the loop does not spin while the process is out of
                    // file descriptors.
                    tracing::warn!(%error, "SMTP sink cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                report_session_end(joined);
            }
        }
    }

    drop(listener);
    let grace = shared.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = sessions.join_next().await {
            report_session_end(joined);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = sessions.len(),
            ?grace,
            "SMTP sink connections still open after the shutdown grace period; aborting them"
        );
        sessions.shutdown().await;
    }
}

fn report_session_end(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        if error.is_panic() {
            tracing::error!(%error, "SMTP sink connection task panicked");
        }
    }
}
