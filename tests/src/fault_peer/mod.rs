//! A scripted SMTP server for faults real servers cannot be made to produce.
//!
//! A test writes a [`Scenario`] as data (the banner, the reply to each command by
//! verb and occurrence, faults during message data, an idle timer), starts a
//! [`FaultPeer`] on 127.0.0.1, points the client at [`FaultPeer::addr`], and then
//! checks the [`ConnectionRecord`]s: what arrived on the wire (raw command lines, which
//! of them came in one read, message data byte for byte, plain text after
//! `STARTTLS`) and how the client closed (TLS `close_notify` or not, FIN or RST).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ec_tests::fault_peer::{FaultPeer, Scenario, Verb};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let peer = FaultPeer::start(Scenario::builder().reply_421_at(Verb::Rcpt).build()).await?;
//!
//! let mut client = tokio::net::TcpStream::connect(peer.addr()).await?;
//! client.write_all(b"EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\n").await?;
//! let mut replies = Vec::new();
//! client.read_to_end(&mut replies).await?; // the peer closes after its 421
//! assert!(replies.ends_with(b"421 4.3.2 Service shutting down, closing transmission channel\r\n"));
//! drop(client);
//!
//! let records = peer.wait_for_connections(1, Duration::from_secs(5)).await?;
//! assert_eq!(records[0].command_lines(), ["EHLO c", "MAIL FROM:<a@ec.test>", "RCPT TO:<b@ec.test>"]);
//! assert_eq!(records[0].command_groups().len(), 1, "all three came in one segment");
//! # Ok(())
//! # }
//! ```
//!
//! For long runs, [`Chaos`] draws each connection's faults at random from a
//! seed, and [`Retention::Tally`] makes the peer keep running counts
//! ([`Tally`]) instead of every record, so its memory stays flat:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ec_tests::fault_peer::{Chaos, FaultPeer, Retention};
//!
//! let peer = FaultPeer::start_source_on_thread(Arc::new(Chaos::new(7)), Retention::Tally)?;
//! // ... point a client at peer.addr() and send a few thousand messages ...
//! let tally = peer.tally();
//! assert_eq!(tally.unknown_commands, 0, "no message data was read as a command");
//! # Ok::<(), ec_tests::fault_peer::FaultPeerError>(())
//! ```
//!
//! A scenario built with [`ScenarioBuilder::chunking`] advertises CHUNKING and
//! takes message data in `BDAT` chunks (RFC 3030) as well as after `DATA`: it reads
//! the octets each `BDAT` line announces, records them ([`Event::Chunk`],
//! [`ConnectionRecord::bodies`]), and then replies to the line as scripted.
//! Faults scripted for [`Verb::Bdat`] strike once the chunk has arrived, and a
//! [`MidData`] fault counts chunk octets. Without that option a `BDAT` line gets
//! the reply to an unknown command, and what follows it is read as commands.
//!
//! The peer does not check command order or syntax (a `BDAT` line's size aside,
//! which it needs to find the next command), never relays, and knows nothing of
//! `AUTH` beyond answering it from the script. The one exception to the order:
//! after a reply marked with [`Response::rejects_transaction`], such as a `550` to
//! `MAIL`, it replies `503` to the rest of a pipelined group, as a real server
//! without a transaction does.

#![warn(missing_docs)]

mod capabilities;
mod chaos;
#[cfg(test)]
mod chunking_selftest;
mod command;
mod faults;
mod peer;
mod record;
mod response;
mod scenario;
mod server;
mod session;
mod source;
mod tally;
pub mod tls;
mod transport;

use std::time::Duration;

pub use capabilities::Capabilities;
pub use chaos::{Chaos, Fault, Plan, PlannedFault};
pub use command::Verb;
pub use peer::FaultPeer;
pub use record::{ClientEnd, ConnectionRecord, Event, TcpEnd, TimedEvent, TlsInfo};
pub use response::{After, Close, Payload, Response};
pub use scenario::{MidData, Scenario, ScenarioBuilder, Transfer};
pub use source::ScenarioSource;
pub use tally::{
    bare_line_end, client_closed, client_end_name, content_digest, unstuffed_dot, Retention, Tally,
};

/// Why a fault peer could not start, or a wait for its connections failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultPeerError {
    /// Binding or preparing the listening socket on 127.0.0.1 failed.
    #[error("binding the fault peer to 127.0.0.1 on an ephemeral port failed: {0}")]
    Bind(#[source] std::io::Error),

    /// The peer's own runtime or thread could not be started.
    #[error("starting the fault peer's runtime thread failed: {0}")]
    Runtime(#[source] std::io::Error),

    /// A peer was started with an empty list of scenarios.
    #[error(
        "a fault peer needs at least one scenario; pass Scenario::default() for a plain server"
    )]
    NoScenario,

    /// Fewer connections finished than a test waited for.
    #[error(
        "waited {waited:?} for {wanted} finished connections to the fault peer, \
         but only {finished} of {accepted} accepted had finished; \
         check that the client connected and closed, or raise the timeout"
    )]
    WaitTimedOut {
        /// Finished connections waited for.
        wanted: usize,
        /// How long the test waited.
        waited: Duration,
        /// Connections finished by then.
        finished: usize,
        /// Connections accepted by then.
        accepted: usize,
    },
}
