//! A built-in SMTP sink: an SMTP server that accepts every valid message
//! and discards it (or keeps it in memory for tests), with STARTTLS over a
//! certificate generated at start-up.
//!
//! `ec demo` delivers to it, `ec sink` runs it in the foreground, and tests
//! and benchmarks use it as a fast, predictable peer. It speaks RFC 5321
//! with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
//! ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207) and CHUNKING
//! (RFC 3030).
//!
//! - It listens on loopback only unless
//!   [`SinkConfig::allow_non_loopback`] is set.
//! - At start it makes a CA and a server certificate signed by it
//!   (`localhost`, `127.0.0.1`, `::1`, and the configured host name; the
//!   leaf is `CA:FALSE` with extendedKeyUsage serverAuth). A client
//!   verifies the server against [`Sink::ca_pem`], or the file that
//!   [`Sink::write_ca_file`] writes.
//! - The replies to a pipelined command group go out in one write.
//!   Commands are parsed in the read buffer, and a message is counted as it
//!   streams through, so the sink's own code allocates nothing per command
//!   or per message unless [`SinkConfig::keep_messages`] is set.
//! - Message data ends only at CRLF "." CRLF. Bare LF characters in the
//!   data are counted in [`SinkStats::bare_line_feeds`], so a test can check
//!   that a client normalizes line endings.
//! - A `BDAT` chunk's octets are always read, even when the command is
//!   rejected, and never taken for commands.
//! - Input that a client sends after STARTTLS and before the TLS handshake
//!   is discarded and counted, never read as commands.
//! - QUIT gets 221, then TLS `close_notify` (on TLS) and a TCP FIN, and
//!   the socket is read until the client closes, so that the client's own
//!   `close_notify` does not meet a reset.
//!
//! ```no_run
//! # async fn example() -> Result<(), ec_cli::sink::SinkError> {
//! use ec_cli::sink::{Sink, SinkConfig};
//!
//! let sink = Sink::start(SinkConfig::default()).await?;
//! let ca_file = sink.write_ca_temp_file()?;
//! println!("SMTP on {}, CA in {}", sink.local_addr(), ca_file.display());
//! // ... deliver to sink.local_addr() ...
//! let stats = sink.shutdown().await;
//! println!("{} messages, {} octets", stats.messages, stats.message_octets);
//! # Ok(())
//! # }
//! ```

mod certificate;
mod chunk;
mod data;
mod protocol;
mod server;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use server::{ReceivedMessage, Sink, SinkStats};

/// Default largest message, in octets: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 * 1024 * 1024;

/// Read buffer per connection, in octets. A command line must fit in half
/// of it (see [`SinkConfig::max_line_length`]).
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Settings of the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Address and port to listen on; port 0 picks a free one. Default
    /// `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Accept a non-loopback `listen` address. Default false.
    pub allow_non_loopback: bool,
    /// Host name in the greeting, the EHLO reply and the certificate.
    /// Default `localhost`.
    pub hostname: String,
    /// Reject every command but EHLO, HELO, STARTTLS and QUIT before TLS,
    /// with 530 5.7.0. Default false.
    pub require_tls: bool,
    /// Run the TLS handshake right after the connect, before the greeting
    /// (implicit TLS, RFC 8314), as a relay on port 465 does. STARTTLS is
    /// then not offered. Default false.
    pub implicit_tls: bool,
    /// Longest command line accepted, in octets with CRLF; a longer one is
    /// rejected with 500 5.5.2 and discarded. Default 2,048, four times the
    /// 512 octets of RFC 5321 section 4.5.3.1.4, for the parameters of
    /// SMTP extensions (Postfix 3.7's default `line_length_limit` is also
    /// 2,048).
    pub max_line_length: usize,
    /// Largest message accepted, in octets after dot-unstuffing; it is
    /// announced in the SIZE keyword. A larger one is read to its end and
    /// rejected with 552 5.3.4. Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub max_message_size: u64,
    /// Recipients accepted in one transaction; more get 452 4.5.3. Default
    /// 1,000.
    pub max_recipients: u32,
    /// Keep every accepted message in memory, for [`Sink::take_messages`].
    /// Default false.
    pub keep_messages: bool,
    /// Offer CHUNKING and take `BDAT` (RFC 3030). Without it, `BDAT` gets
    /// 502 5.5.1. Default true.
    pub chunking: bool,
    /// How long a connection may send nothing before it gets 421 4.4.2 and
    /// is closed. Default 5 minutes, the server timeout of RFC 5321 section
    /// 4.5.3.2.7.
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take. Default 30 s.
    pub handshake_timeout: Duration,
    /// How long [`Sink::shutdown`] waits for connections to close after
    /// sending them 421 before it aborts them. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            hostname: "localhost".to_owned(),
            require_tls: false,
            implicit_tls: false,
            max_line_length: 2_048,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: 1_000,
            keep_messages: false,
            chunking: true,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// An error starting the sink or writing its CA file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The listen address is not loopback and that was not allowed.
    #[error(
        "listen address {0} is not a loopback address; use 127.0.0.1 or [::1], \
         or allow non-loopback addresses explicitly"
    )]
    NotLoopback(SocketAddr),
    /// The configuration is inconsistent.
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// Binding the listening socket failed.
    #[error("cannot listen on {address}: {source}; choose another address or port")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// rcgen failed to make the CA or the server certificate.
    #[error("generating the sink's {what} failed: {source}")]
    Certificate {
        /// The item that failed ("CA key", "server certificate", ...).
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// rustls rejected the generated certificate or key.
    #[error("building the sink's TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Writing the CA certificate failed.
    #[error("cannot write the sink's CA certificate to {path}: {source}")]
    WriteCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
