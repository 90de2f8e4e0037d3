//! Invariant checks for fuzzing the protocol core, behind the `fuzzing`
//! feature.
//!
//! Each check takes one fuzz input, drives a part of [`proto`](crate::proto)
//! with it, and panics when an invariant breaks. The libFuzzer targets in
//! this crate's `fuzz/` directory call them on generated inputs, and
//! `tests/fuzz_regressions.rs` calls them on every saved input on stable
//! Rust, so a crash found once stays covered by `cargo test`.
//!
//! Every byte string is a valid input. Where a check needs more than a byte
//! stream (limits, chunk sizes, an order of events), it reads the input as
//! a small script, described on the function. A script that runs out of
//! bytes reads zeros.

mod client_session;
mod data_encoder;
mod ehlo;
mod reply_parser;
mod script;

pub use client_session::check_client_session;
pub use data_encoder::check_data_encoder;
pub use ehlo::check_ehlo;
pub use reply_parser::check_reply_parser;

/// A fuzz target: its name (the cargo-fuzz target and the directory of its
/// saved inputs) and its check.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The check it runs on each input; panics on a broken invariant.
    pub check: fn(&[u8]),
}

/// Every fuzz target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: [Target; 4] = [
    Target {
        name: "reply_parser",
        check: check_reply_parser,
    },
    Target {
        name: "ehlo",
        check: check_ehlo,
    },
    Target {
        name: "data_encoder",
        check: check_data_encoder,
    },
    Target {
        name: "client_session",
        check: check_client_session,
    },
];
