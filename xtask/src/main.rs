//! Contributor tasks for the ec workspace, run as `cargo xtask <command>`.
//!
//! Each command lives in its own module; `main` only parses the command line
//! and dispatches.

mod bench;
mod ci;
mod fuzz;
mod peers;
mod process;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

const USAGE_COMMANDS: &str = "\
usage: cargo xtask <command>

commands:
  ci                    bring the test peers up, then run fmt, clippy, tests,
                        docs and cargo-deny, stopping at the first failure
  peers up              configure and start the local test peers (needs root)
  peers down            stop the local test peers
  peers status          show where the test peers listen and whether they answer
  fuzz [--seconds N] [--target NAME]
                        run each fuzz target of ec-smtp-client for N seconds
                        (default 60), save crashing inputs as regression
                        tests, and record the results in docs/ROBUSTNESS.md
";

const USAGE_HELP: &str = "  help                  show this text\n";

/// The usage text: every command, `bench` with its options.
fn usage() -> String {
    format!(
        "{USAGE_COMMANDS}{}{}\n{USAGE_HELP}",
        bench::USAGE,
        soak::USAGE
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["ci"] => ci::run(&workspace_root()).map(|()| ExitCode::SUCCESS),
        ["peers", "up"] => peers::up().map(|()| ExitCode::SUCCESS),
        ["peers", "down"] => peers::down().map(|()| ExitCode::SUCCESS),
        ["peers", "status"] => peers::status(),
        ["fuzz", rest @ ..] => fuzz::run(&workspace_root(), rest).map(|()| ExitCode::SUCCESS),
        ["bench", rest @ ..] => bench::run(&workspace_root(), rest).map(|()| ExitCode::SUCCESS),
        ["soak", rest @ ..] => soak::run(&workspace_root(), rest).map(|()| ExitCode::SUCCESS),
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{}", usage());
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("unknown command `{}`\n\n{}", words.join(" "), usage()),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
