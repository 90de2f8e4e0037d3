//! The sans-I/O SMTP client protocol core.
//!
//! Nothing here opens a socket, spawns a task or reads a clock: bytes and
//! the current time come in as arguments, and bytes to write, events and
//! deadlines go out. A driver (the tokio session in this crate, or a test)
//! moves the bytes.
//!
//! | module | what it does |
//! |---|---|
//! | [`reply_parser`] | splits the server's byte stream into [`Reply`](ec_types::Reply) values |
//! | [`capabilities`] | reads an EHLO reply into [`Capabilities`] |
//! | [`command`] | encodes commands, rejecting arguments that could inject a command |
//! | [`data`] | turns a message into dot-stuffed CRLF mail data with its final dot |
//! | [`client`] | the session state machine, [`Client`] |
//! | [`stage`] | the Momentum stage codes |

pub mod capabilities;
pub mod client;
pub mod command;
pub mod data;
pub mod reply_parser;
pub mod stage;

pub use capabilities::{Capabilities, Extension};
pub use client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientState, RejectedTransaction, StateError,
    Timeouts, Timer, TlsUnavailable, Transaction, TransactionEnd, TransactionError, TransmitParts,
};
pub use command::{Command, CommandError, Field, MailParameters};
pub use data::MessageInfo;
pub use reply_parser::{ReplyError, ReplyLimits, ReplyParser};
pub use stage::Stage;
