//! Real servers for end-to-end tests: the Postfix instance that
//! `cargo xtask peers up` starts, private `smtp-sink` processes, and
//! private NSD DNS servers ([`DnsServer`], with the shared [`TEST_ZONE`]).
//!
//! [`Postfix::get`] reads the status file that `peers up` writes
//! (`/var/lib/ec-peers/peers.env`, or `$EC_PEERS_DIR/peers.env`), checks
//! that every listener answers, and panics with the command to run when the
//! peer is not there. Postfix serves three test domains on loopback:
//!
//! | domain | what happens to a recipient |
//! |---|---|
//! | [`MAILDIR_DOMAIN`] | delivered into `<maildir root>/maildir.test/<local part>/` |
//! | [`DISCARD_DOMAIN`] | accepted and dropped (for load tests) |
//! | [`REPLY_DOMAIN`] | `defer*` gets 451 4.7.1 at RCPT, `reject*` gets 550 5.1.1, others are delivered like the Maildir domain |
//!
//! Any other domain is rejected at RCPT with 550 5.1.2, and Postfix never
//! relays off this machine.
//!
//! ```no_run
//! use std::time::Duration;
//! use ec_tests::peers::Postfix;
//!
//! let postfix = Postfix::get();
//! let mailbox = postfix.unique_local_part("doc");
//! // ... send a message to <mailbox>@maildir.test via postfix.plain_addr() ...
//! let messages = postfix.wait_for_messages(&mailbox, 1, Duration::from_secs(10));
//! assert!(messages[0].starts_with(b"Return-Path:"));
//! ```

#![warn(missing_docs)]

mod dns;
mod error;
mod maildir;
mod postfix;
mod smtp_sink;
mod status;

pub use dns::{DnsServer, TEST_ORIGIN, TEST_ZONE};
pub use error::PeersError;
pub use postfix::{Postfix, PostfixPorts};
pub use smtp_sink::SmtpSink;

/// Domain whose recipients each get a Maildir.
pub const MAILDIR_DOMAIN: &str = "maildir.test";
/// Domain whose mail is accepted and dropped.
pub const DISCARD_DOMAIN: &str = "discard.test";
/// Domain with scripted RCPT replies chosen by the local part's prefix.
pub const REPLY_DOMAIN: &str = "reply.test";

/// The command that starts the peers, for error messages.
pub const START_COMMAND: &str = "cargo xtask peers up";
