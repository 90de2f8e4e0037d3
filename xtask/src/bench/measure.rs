//! Running one load client and measuring it from outside: wall time from
//! spawn to exit, and the CPU time it used, from `getrusage(RUSAGE_CHILDREN)`
//! before and after it is reaped.
//!
//! Every contender is measured the same way, so smtp-source (which prints
//! nothing) and our own clients are comparable. Only the client's CPU is
//! counted: the peers are other processes that this one does not reap
//! while a client runs.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

use crate::process;

/// First word of the result line that our load clients print.
const RESULT_PREFIX: &str = "ec-bench-result";

/// One measured run of a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Messages (or sessions) the run completed.
    pub(crate) messages: u64,
    /// Wall time from spawn to exit, in seconds.
    pub(crate) seconds: f64,
    /// User plus system CPU time of the client, in seconds.
    pub(crate) cpu_seconds: f64,
}

impl Sample {
    /// Messages per second.
    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// CPU microseconds per message.
    pub(crate) fn cpu_micros_per_message(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.messages as f64
    }
}

/// The `key=value` pairs of a client's result line.
pub(crate) type Fields = BTreeMap<String, String>;

/// Runs `command` to completion and measures it. It must exit 0; when it
/// prints a result line, the line must report `messages` delivered and
/// nothing failed.
pub(crate) fn measure(command: &mut Command, messages: u64) -> Result<(Sample, Fields)> {
    let before = children_cpu()?;
    let started = Instant::now();
    let output = process::capture(command)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (children_cpu()? - before).as_secs_f64();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{stderr}{stdout}",
            process::describe(command),
            output.status
        );
    }
    let fields = result_fields(&stdout).unwrap_or_default();
    if let Some(delivered) = fields.get("delivered") {
        if delivered != &messages.to_string() {
            bail!(
                "`{}` delivered {delivered} of {messages} messages:\n{stdout}{stderr}",
                process::describe(command)
            );
        }
    }
    Ok((
        Sample {
            messages,
            seconds,
            cpu_seconds,
        },
        fields,
    ))
}

/// Runs `command`, which must print a result line, and returns its fields.
pub(crate) fn result_of(command: &mut Command) -> Result<Fields> {
    let stdout = process::output(command)?;
    result_fields(&stdout).with_context(|| {
        format!(
            "`{}` printed no `{RESULT_PREFIX}` line:\n{stdout}",
            process::describe(command)
        )
    })
}

/// Parses the fields of the last result line in `stdout`.
pub(crate) fn result_fields(stdout: &str) -> Option<Fields> {
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with(RESULT_PREFIX))?;
    Some(parse_pairs(line))
}

/// `key=value` words of a line; words without `=` are skipped.
pub(crate) fn parse_pairs(line: &str) -> Fields {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Reads a numeric field, with an error that names the key.
pub(crate) fn number(fields: &Fields, key: &str) -> Result<f64> {
    let text = fields
        .get(key)
        .with_context(|| format!("the result line has no `{key}` field"))?;
    text.parse()
        .with_context(|| format!("the result field {key}={text} is not a number"))
}

/// CPU time of every child this process has reaped so far.
fn children_cpu() -> Result<Duration> {
    let usage =
        getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN) failed")?;
    let to_duration = |time: nix::sys::time::TimeVal| {
        let micros = time.tv_sec() as i128 * 1_000_000 + time.tv_usec() as i128;
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    };
    Ok(to_duration(usage.user_time()) + to_duration(usage.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_last_result_line() {
        let stdout = "noise\nec-bench-result client=ec messages=5 seconds=1.5\n\
                      ec-bench-result client=ec messages=7 delivered=7\n";
        let fields = result_fields(stdout).expect("a result line");
        assert_eq!(fields["messages"], "7");
        assert_eq!(number(&fields, "delivered").expect("number"), 7.0);
        assert!(number(&fields, "seconds").is_err());
        assert!(result_fields("no result\n").is_none());
    }

    #[test]
    fn measures_child_cpu() {
        // A child that burns a little CPU: its time must show up.
        let mut command = Command::new("sh");
        command.args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]);
        let (sample, fields) = measure(&mut command, 1).expect("sh runs");
        assert!(fields.is_empty());
        assert!(sample.seconds > 0.0);
        assert!(sample.cpu_seconds > 0.0, "{sample:?}");
        assert!(
            sample.cpu_seconds <= sample.seconds * 2.0 + 0.05,
            "{sample:?}"
        );
    }

    #[test]
    fn checks_delivered_count() {
        let mut command = Command::new("echo");
        command.arg("ec-bench-result client=x delivered=3");
        assert!(measure(&mut command, 4).is_err());
        assert!(measure(&mut command, 3).is_ok());
    }
}
