//! `cargo xtask soak`: the full soak run of the engine against the chaos
//! fault peer, and its report in the Soak section of `docs/ROBUSTNESS.md`.
//!
//! The run itself is the ignored test `soak_full` of `tests/robust_soak.rs`,
//! built in release mode: this command passes the size through environment
//! variables, reads the Markdown report the test writes, and puts it
//! between two markers in the document. The test fails when the run broke a
//! rule; the report is written either way, listing what broke.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process;

/// The usage lines of this command, for `cargo xtask help`.
pub(crate) const USAGE: &str = "
  soak [--messages N] [--seconds S] [--seed X]
                        run N messages (default 100000) through the engine to
                        a fault peer that injects faults at random, for at most
                        S seconds (default 900), check that nothing leaked or
                        was lost, and write the report into docs/ROBUSTNESS.md";

const DEFAULT_MESSAGES: u64 = 100_000;
const DEFAULT_SECONDS: u64 = 900;

/// The document that gets the report, relative to the workspace root.
const REPORT_PATH: &str = "docs/ROBUSTNESS.md";

const BEGIN: &str = "<!-- soak-results:begin (written by cargo xtask soak) -->";
const END: &str = "<!-- soak-results:end -->";

#[derive(Debug, PartialEq, Eq)]
struct Options {
    messages: u64,
    seconds: u64,
    seed: Option<u64>,
}

/// Runs the soak and records its report.
pub(crate) fn run(root: &Path, args: &[&str]) -> Result<()> {
    let options = parse_args(args)?;
    let report_file = std::env::temp_dir().join(format!("ec-soak-{}.md", std::process::id()));
    let _ = fs::remove_file(&report_file);

    let mut command = soak_command(root, &options, &report_file);
    println!("xtask soak: {}", process::describe(&command));
    let status = command
        .status()
        .with_context(|| format!("failed to start `{}`", process::describe(&command)))?;

    let report = fs::read_to_string(&report_file).with_context(|| {
        format!(
            "the soak wrote no report to {} ({status}); its output above says why",
            report_file.display()
        )
    })?;
    let _ = fs::remove_file(&report_file);
    let heading = heading(&options, &command_line(&options))?;
    let path = root.join(REPORT_PATH);
    update(&path, &format!("{heading}\n\n{report}"))?;
    println!("xtask soak: report written to {REPORT_PATH}");

    if !status.success() {
        bail!("the soak broke rules ({status}); {REPORT_PATH} and the output above list them");
    }
    Ok(())
}

fn parse_args(args: &[&str]) -> Result<Options> {
    let mut options = Options {
        messages: DEFAULT_MESSAGES,
        seconds: DEFAULT_SECONDS,
        seed: None,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = |name: &str| -> Result<u64> {
            let text = rest
                .next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?;
            text.parse()
                .with_context(|| format!("{name} {text:?} is not a whole number"))
        };
        match *flag {
            "--messages" => options.messages = value("--messages")?,
            "--seconds" => options.seconds = value("--seconds")?,
            "--seed" => options.seed = Some(value("--seed")?),
            other => bail!("unknown option `{other}` for soak\n{USAGE}"),
        }
    }
    if options.messages == 0 || options.seconds == 0 {
        bail!("--messages and --seconds must be at least 1");
    }
    Ok(options)
}

/// `cargo test` of the full soak, in release mode, with its size in the
/// environment variables the test reads.
fn soak_command(root: &Path, options: &Options, report_file: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "test",
            "-p",
            "ec-tests",
            "--release",
            "--test",
            "robust_soak",
        ])
        .args(["--", "--ignored", "--exact", "soak_full", "--nocapture"])
        .env("EC_SOAK_MESSAGES", options.messages.to_string())
        .env("EC_SOAK_SECONDS", options.seconds.to_string())
        .env("EC_SOAK_REPORT", report_file);
    if let Some(seed) = options.seed {
        command.env("EC_SOAK_SEED", seed.to_string());
    }
    command
}

fn command_line(options: &Options) -> String {
    let mut line = format!("cargo xtask soak --messages {}", options.messages);
    if options.seconds != DEFAULT_SECONDS {
        line.push_str(&format!(" --seconds {}", options.seconds));
    }
    if let Some(seed) = options.seed {
        line.push_str(&format!(" --seed {seed}"));
    }
    line
}

/// Writes the line above the tables: the command, the date and the machine.
fn heading(options: &Options, command_line: &str) -> Result<String> {
    let date = process::output(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    Ok(format!(
        "Last run: `{command_line}` on {} (UTC), release build, time cap {} s, on {}.",
        date.trim(),
        options.seconds,
        machine()
    ))
}

/// Describes the CPU count and model, from the scheduler and `/proc/cpuinfo`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    format!("{cpus} CPUs ({model})")
}

/// Replaces the text between the markers of the document at `path`.
fn update(path: &Path, section: &str) -> Result<()> {
    let text =
        fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let updated =
        rewrite(&text, section).with_context(|| format!("failed to update {}", path.display()))?;
    fs::write(path, updated).with_context(|| format!("failed to write {}", path.display()))
}

fn rewrite(text: &str, section: &str) -> Result<String> {
    let (before, rest) = text
        .split_once(BEGIN)
        .with_context(|| format!("the line {BEGIN} is missing; put it in the Soak section"))?;
    let (_, after) = rest
        .split_once(END)
        .with_context(|| format!("the line {END} is missing after {BEGIN}"))?;
    Ok(format!(
        "{before}{BEGIN}\n{}\n{END}{after}",
        section.trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_parse() {
        assert_eq!(
            parse_args(&[]).unwrap(),
            Options {
                messages: 100_000,
                seconds: 900,
                seed: None
            }
        );
        let options = parse_args(&["--messages", "5", "--seed", "7"]).unwrap();
        assert_eq!((options.messages, options.seed), (5, Some(7)));
        assert!(parse_args(&["--messages"]).is_err());
        assert!(parse_args(&["--messages", "many"]).is_err());
        assert!(parse_args(&["--fast"]).is_err());
        assert_eq!(
            command_line(&options),
            "cargo xtask soak --messages 5 --seed 7"
        );
    }

    #[test]
    fn rewrite_replaces_only_between_markers() {
        let text = format!("# Doc\n\nintro\n{BEGIN}\nold table\n{END}\n\nafter\n");
        let new = rewrite(&text, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# Doc\n\nintro\n{BEGIN}\nnew table\n{END}\n\nafter\n")
        );
        assert!(rewrite("no markers", "x").is_err());
    }
}
