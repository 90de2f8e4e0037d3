//! `cargo xtask ci`: every check a change must pass, in the order CI runs
//! them, stopping at the first failure.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{peers, process};

/// One cargo invocation of the pipeline.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: [Step; 5] = [
    Step {
        name: "fmt",
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "test",
        args: &["test", "--workspace", "--no-fail-fast"],
        env: &[],
    },
    Step {
        name: "doc",
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    Step {
        name: "deny",
        args: &["deny", "check", "licenses", "bans", "sources"],
        env: &[],
    },
];

/// Brings the peers up, then runs every step; prints each step's duration.
pub(crate) fn run(root: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    ensure_cargo_deny(&cargo)?;

    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let total = Instant::now();

    let started = Instant::now();
    announce("peers", "cargo xtask peers up");
    if process::is_root() {
        peers::up().context("step `peers` failed")?;
    } else {
        peers::ensure_up().context("step `peers` failed")?;
    }
    finish("peers", started, &mut timings);

    for step in &STEPS {
        let started = Instant::now();
        let mut command = Command::new(&cargo);
        command.args(step.args).current_dir(root);
        for (key, value) in step.env {
            command.env(key, value);
        }
        announce(step.name, &process::describe(&command));

        if let Err(error) = process::run(&mut command) {
            print_timings(&timings);
            bail!(
                "step `{}` failed after {:.1}s: {error:#}",
                step.name,
                started.elapsed().as_secs_f64()
            );
        }
        finish(step.name, started, &mut timings);
    }

    print_timings(&timings);
    println!(
        "xtask ci: all steps passed in {:.1}s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fails before any build when cargo-deny is missing, so a long build does
/// not end in that error.
fn ensure_cargo_deny(cargo: &OsString) -> Result<()> {
    let probe = process::capture(Command::new(cargo).args(["deny", "--version"]));
    match probe {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!(
            "cargo-deny is not installed; the `deny` step needs it. Install it with:\n  \
             cargo install cargo-deny --locked"
        ),
    }
}

fn announce(name: &str, command_line: &str) {
    println!("\n==> xtask ci: {name}: {command_line}");
}

fn finish<'a>(name: &'a str, started: Instant, timings: &mut Vec<(&'a str, Duration)>) {
    let elapsed = started.elapsed();
    println!(
        "<== xtask ci: {name} passed in {:.1}s",
        elapsed.as_secs_f64()
    );
    timings.push((name, elapsed));
}

fn print_timings(timings: &[(&str, Duration)]) {
    println!("\nxtask ci: step durations");
    for (name, elapsed) in timings {
        println!("  {name:<8} {:>7.1}s", elapsed.as_secs_f64());
    }
}
