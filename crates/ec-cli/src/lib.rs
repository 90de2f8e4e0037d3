//! The parts of the `ec` command that do not depend on the delivery engine:
//! the command line, the input reader, the delivery log, the end-of-run
//! summary and exit status, the progress bar, the built-in SMTP sink and
//! the bundled sample messages.
//!
//! The binary (`src/main.rs`) joins these to the engine. Each module returns
//! typed errors, so tests and other tools can use them on their own; the
//! sink in particular is a small, fast SMTP server with STARTTLS for tests
//! and benchmarks.
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | `ec deliver`, `ec demo` and `ec sink` options, and the [`ec_types::Config`] they make |
//! | [`config_file`] | the key that a config file error points at |
//! | [`input`] | message files and directories to [`ec_types::Submission`]s, or invalid-input records |
//! | [`delivery_log`] | the JSON Lines delivery log and the `--resume` reader |
//! | [`summary`] | run totals, the summary table and the sysexits exit status |
//! | [`progress`] | the terminal progress bar |
//! | [`sink`] | the built-in SMTP sink with STARTTLS and a generated certificate |
//! | [`samples`] | real messages bundled for `ec demo` |

#![warn(missing_docs)]

pub mod cli;
pub mod config_file;
pub mod console;
pub mod delivery_log;
pub mod input;
pub mod progress;
pub mod run;
pub mod samples;
pub mod signals;
pub mod sink;
pub mod summary;
