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
}
