//! Why a test peer is not usable.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a test peer could not be reached or started. Each message names
/// what is missing and the command that fixes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeersError {
    /// `cargo xtask peers up` has not run, or `peers down` removed its
    /// status file.
    #[error(
        "the test peers are not up: {path} does not exist; start them with \
         `cargo xtask peers up` (as root)"
    )]
    NotStarted {
        /// The status file looked for.
        path: PathBuf,
    },

    /// The status file exists but lacks a key or has a value of the wrong
    /// form.
    #[error(
        "the test peers' status file {path} has an invalid {key}: {reason}; \
         rewrite it with `cargo xtask peers up`"
    )]
    InvalidStatus {
        /// The status file.
        path: PathBuf,
        /// The key that is missing or invalid.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A listener named in the status file does not accept connections.
    #[error(
        "Postfix does not answer on {address} ({listener}): {source}; its log is {log}; \
         restart it with `cargo xtask peers up` (as root)"
    )]
    NotAnswering {
        /// Which listener ("plain + STARTTLS", ...).
        listener: &'static str,
        /// Where it should listen.
        address: SocketAddr,
        /// Postfix's log file.
        log: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },

    /// A file of the peers could not be read or written.
    #[error("failed to access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// `smtp-sink` is not installed.
    #[error(
        "{path} not found; smtp-sink comes with Debian's postfix package \
         (`cargo xtask peers up` prints the install command)"
    )]
    SmtpSinkMissing {
        /// Where smtp-sink was looked for.
        path: PathBuf,
    },

    /// `smtp-sink` exited or did not answer after it was started.
    #[error("smtp-sink {args} failed to start: {reason}; its output was:\n{output}")]
    SmtpSinkStart {
        /// The command line.
        args: String,
        /// What went wrong.
        reason: String,
        /// What it wrote to stdout and stderr.
        output: String,
    },

    /// NSD (`nsd` or `nsd-checkzone`) is not installed.
    #[error(
        "{path} not found; the DNS test peer needs NSD: install it with \
         `apt-get install -y nsd` (as root; .ci/run installs it in CI)"
    )]
    NsdMissing {
        /// Where the program was looked for.
        path: PathBuf,
    },

    /// The origin passed to the DNS test peer cannot be a zone name.
    #[error(
        "invalid DNS zone origin {origin:?}: {reason}; pass a domain name such as \"dns.test.\""
    )]
    DnsOriginInvalid {
        /// The origin as passed.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `nsd-checkzone` rejected the zone text.
    #[error("the zone for {origin} is invalid; nsd-checkzone reported:\n{output}")]
    DnsZoneInvalid {
        /// The zone's origin.
        origin: String,
        /// What nsd-checkzone wrote to stdout and stderr.
        output: String,
    },

    /// `nsd` exited or did not respond to a query after it was started.
    #[error("nsd for zone {origin} failed to start: {reason}; its output was:\n{output}")]
    NsdStart {
        /// The zone's origin.
        origin: String,
        /// What went wrong.
        reason: String,
        /// What nsd wrote to stderr and its log file.
        output: String,
    },
}
