//! Load and endurance runs of the whole engine.
//!
//! [`run`] is the soak: a long stream of messages through several bindings
//! to many domains, all routed to a [`Chaos`](crate::fault_peer::Chaos)
//! fault peer that drops, resets, stalls and refuses at random, with
//! retries on, until every message is final. Its [`SoakReport`] checks that
//! no recipient was lost or reported twice, that each `550` to `MAIL` failed
//! its message's recipients once with that reply, that the accounting audit
//! never failed, that no connection, socket or thread outlived the run, and that
//! resident memory did not grow with the number of messages.
//! `cargo xtask soak` runs it at full size and writes the report into
//! `docs/ROBUSTNESS.md`.
//!
//! [`SilentSink`] is the other end of a connection storm: it accepts
//! thousands of connections and never sends a byte.
//!
//! [`bodies`] holds the SMTP smuggling patterns and the wire form ec must
//! give them.

pub mod bodies;
mod collect;
mod options;
mod process;
mod report;
mod run;
mod silent;

pub use options::{SoakOptions, ENV_MESSAGES, ENV_SECONDS, ENV_SEED};
pub use process::{raise_open_file_limit, ProcessSample};
pub use report::{Audits, RssSample, SoakReport};
pub use run::{run, soak_config, soak_scheduler_options, MAX_CONNECTIONS};
pub use silent::SilentSink;
