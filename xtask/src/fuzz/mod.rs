//! `cargo xtask fuzz`: runs each libFuzzer target of `ec-smtp-client` for a
//! bounded time, saves every crashing input as a regression test, and
//! records the figures in the Fuzzing section of `docs/ROBUSTNESS.md`.
//!
//! The targets live in `crates/ec-smtp-client/fuzz`, a cargo-fuzz project
//! outside the workspace. Each run reads and grows the local corpus in
//! `fuzz/corpus/<target>` (not committed) and also reads the saved inputs in
//! `tests/fuzz_regressions/<target>`, which seed it.

mod libfuzzer;
mod report;
mod toolchain;

use std::path::Path;

use anyhow::{bail, Context, Result};

use libfuzzer::{Outcome, TargetRun};

/// Seconds each target runs when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// The crate whose `fuzz/` directory contains the cargo-fuzz project,
/// relative to the workspace root.
const CRATE_DIR: &str = "crates/ec-smtp-client";

/// The saved inputs that `tests/fuzz_regressions.rs` replays, relative to
/// the crate.
const REGRESSIONS_DIR: &str = "tests/fuzz_regressions";

/// The document whose Fuzzing section gets the results, relative to the
/// workspace root.
const REPORT_PATH: &str = "docs/ROBUSTNESS.md";

/// The command-line options.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    target: Option<String>,
}

/// Runs the targets, prints and records the summary, and fails when any
/// target found a crash.
pub(crate) fn run(root: &Path, args: &[&str]) -> Result<()> {
    let options = parse_args(args)?;
    let crate_dir = root.join(CRATE_DIR);

    let tools = toolchain::ensure()?;
    let targets = select_targets(libfuzzer::list_targets(&crate_dir)?, options.target)?;
    libfuzzer::build(&crate_dir)?;

    let mut runs = Vec::new();
    for target in &targets {
        let regressions = crate_dir.join(REGRESSIONS_DIR).join(target);
        let run = libfuzzer::run_target(&crate_dir, target, &regressions, options.seconds)?;
        runs.push(run);
    }

    print_summary(&runs);
    let command_line = command_line(options.seconds, targets.len() == 1, &targets);
    report::update(&root.join(REPORT_PATH), &runs, &command_line, &tools)?;
    println!("xtask fuzz: results written to {REPORT_PATH}");

    let saved: Vec<&Path> = runs
        .iter()
        .filter_map(|run| match &run.outcome {
            Outcome::Crashed { saved } => Some(saved.as_path()),
            Outcome::Passed => None,
        })
        .collect();
    if !saved.is_empty() {
        let list: Vec<String> = saved
            .iter()
            .map(|path| format!("  {}", relative(root, path).display()))
            .collect();
        bail!(
            "{} target(s) found a crash; the inputs were saved as regression tests:\n{}\n\
             Reproduce one with `cargo test -p ec-smtp-client --test fuzz_regressions`, fix the \
             bug, and commit the input with the fix.",
            saved.len(),
            list.join("\n")
        );
    }
    Ok(())
}

/// Parses `[--seconds N] [--target NAME]`.
fn parse_args(args: &[&str]) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        target: None,
    };
    let mut words = args.iter();
    while let Some(&word) = words.next() {
        let mut value = || {
            words
                .next()
                .copied()
                .with_context(|| format!("{word} needs a value"))
        };
        match word {
            "--seconds" => {
                let text = value()?;
                options.seconds = text
                    .parse()
                    .ok()
                    .filter(|&seconds| seconds > 0)
                    .with_context(|| {
                        format!("invalid --seconds {text:?}: expected a whole number above 0")
                    })?;
            }
            "--target" => options.target = Some(value()?.to_owned()),
            _ => bail!("unknown argument {word:?} to `cargo xtask fuzz`; expected --seconds N or --target NAME"),
        }
    }
    Ok(options)
}

/// Keeps every target, or only the one asked for when it exists.
fn select_targets(available: Vec<String>, requested: Option<String>) -> Result<Vec<String>> {
    let Some(requested) = requested else {
        return Ok(available);
    };
    if !available.contains(&requested) {
        bail!(
            "unknown fuzz target {requested:?}; the targets are: {}",
            available.join(", ")
        );
    }
    Ok(vec![requested])
}

fn command_line(seconds: u64, single: bool, targets: &[String]) -> String {
    let mut line = format!("cargo xtask fuzz --seconds {seconds}");
    if single {
        line.push_str(&format!(" --target {}", targets[0]));
    }
    line
}

fn print_summary(runs: &[TargetRun]) {
    println!("\nxtask fuzz: summary");
    println!(
        "  {:<16} {:>7} {:>7} {:>12} {:>9} {:>9} {:>9} {:>7}  result",
        "target", "fuzzed", "wall", "executions", "execs/s", "coverage", "features", "corpus"
    );
    for run in runs {
        let stats = &run.stats;
        let fuzzed = run.fuzzed.map_or_else(
            || "?".to_owned(),
            |time| format!("{:.1}s", time.as_secs_f64()),
        );
        println!(
            "  {:<16} {:>7} {:>6.1}s {:>12} {:>9} {:>9} {:>9} {:>7}  {}",
            run.target,
            fuzzed,
            run.elapsed.as_secs_f64(),
            figure(stats.executions),
            figure(stats.execs_per_second),
            figure(stats.coverage),
            figure(stats.features),
            figure(stats.corpus),
            run.outcome,
        );
    }
}

/// Formats a statistic for the summary, or `?` when libFuzzer did not print
/// it.
fn figure(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |value| value.to_string())
}

fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_default() {
        let options = parse_args(&[]).unwrap();
        assert_eq!(options.seconds, 60);
        assert_eq!(options.target, None);
    }

    #[test]
    fn args_seconds_and_target() {
        let options = parse_args(&["--seconds", "5", "--target", "ehlo"]).unwrap();
        assert_eq!(options.seconds, 5);
        assert_eq!(options.target.as_deref(), Some("ehlo"));
    }

    #[test]
    fn args_rejected() {
        assert!(parse_args(&["--seconds"]).is_err());
        assert!(parse_args(&["--seconds", "0"]).is_err());
        assert!(parse_args(&["--seconds", "x"]).is_err());
        assert!(parse_args(&["--jobs", "2"]).is_err());
    }

    #[test]
    fn unknown_target_rejected() {
        let available = vec!["ehlo".to_owned(), "data_encoder".to_owned()];
        let error = select_targets(available.clone(), Some("nope".into())).unwrap_err();
        assert!(error.to_string().contains("ehlo, data_encoder"));
        assert_eq!(select_targets(available.clone(), None).unwrap(), available);
    }
}
