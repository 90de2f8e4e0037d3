//! The scheduler's own benchmark, `crates/ec-sched/examples/sched_bench.rs`:
//! closeconn's scheduler-side cost per connection with 10 to 100,000
//! domains, and memory per queued message. It runs in virtual time without
//! sockets; this module runs it with and without the Prometheus recorder
//! and reads its `key=value` lines.

use std::process::Command;

use anyhow::{bail, Result};

use super::measure::{number, parse_pairs, Fields};
use super::tools::Tools;
use crate::process;

/// One `open_release` line: a connection's life with `domains` domains.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpenRelease {
    pub(crate) domains: u64,
    /// `spread` (every domain in turn) or `hot10` (the same ten).
    pub(crate) pattern: String,
    pub(crate) median_ns: f64,
    pub(crate) min_ns: f64,
    pub(crate) max_ns: f64,
    pub(crate) repetitions: u64,
    pub(crate) cycles: u64,
}

/// The lines `sched_bench` printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SchedResult {
    pub(crate) open_release: Vec<OpenRelease>,
    /// Messages queued, resident bytes per message, and nanoseconds per
    /// submission.
    pub(crate) queued: Option<(u64, f64, f64)>,
    pub(crate) command: String,
    /// Whether the Prometheus recorder was installed (`--metrics`).
    pub(crate) metrics: bool,
}

/// Runs `sched_bench` (`--quick` when asked, `--metrics` to install the
/// Prometheus recorder) and parses its lines.
pub(crate) fn run(tools: &Tools, quick: bool, metrics: bool) -> Result<SchedResult> {
    let mut command = Command::new(&tools.sched_bench);
    let mut options = Vec::new();
    if quick {
        options.push("--quick");
    }
    if metrics {
        options.push("--metrics");
    }
    command.args(&options);
    println!("\n==> bench: scheduler: {}", process::describe(&command));
    let stdout = process::output(&mut command)?;
    print!("{stdout}");
    let mut result = parse(&stdout)?;
    result.metrics = metrics;
    result.command = "cargo run --release -p ec-sched --example sched_bench".to_owned();
    if !options.is_empty() {
        result.command = format!("{} -- {}", result.command, options.join(" "));
    }
    Ok(result)
}

fn parse(stdout: &str) -> Result<SchedResult> {
    let mut result = SchedResult::default();
    for line in stdout.lines() {
        let fields = parse_pairs(line);
        match fields.get("bench").map(String::as_str) {
            Some("open_release") => result.open_release.push(open_release(&fields)?),
            Some("queued_memory") => {
                result.queued = Some((
                    number(&fields, "messages")? as u64,
                    number(&fields, "bytes_per_message")?,
                    number(&fields, "submit_ns")?,
                ));
            }
            _ => {}
        }
    }
    if result.open_release.is_empty() {
        bail!("sched_bench printed no open_release line:\n{stdout}");
    }
    Ok(result)
}

fn open_release(fields: &Fields) -> Result<OpenRelease> {
    Ok(OpenRelease {
        domains: number(fields, "domains")? as u64,
        pattern: fields.get("pattern").cloned().unwrap_or_default(),
        median_ns: number(fields, "median_ns")?,
        min_ns: number(fields, "min_ns")?,
        max_ns: number(fields, "max_ns")?,
        repetitions: number(fields, "reps")? as u64,
        cycles: number(fields, "cycles")? as u64,
    })
}

impl SchedResult {
    /// Returns the `pattern` lines with the fewest and the most domains.
    pub(crate) fn extremes(&self, pattern: &str) -> Option<(&OpenRelease, &OpenRelease)> {
        let lines = self
            .open_release
            .iter()
            .filter(|line| line.pattern == pattern);
        let smallest = lines.clone().min_by_key(|line| line.domains)?;
        let largest = lines.max_by_key(|line| line.domains)?;
        Some((smallest, largest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sched_bench_output() {
        let stdout = "\
bench=queued_memory messages=1000000 domains=1000 bytes_per_message=392 submit_ns=850
bench=open_release domains=10 bindings=4 pattern=spread cycles=20000 reps=15 median_ns=3700 min_ns=3500 max_ns=4000 setup_s=0.01 pending_timers=40
bench=open_release domains=100000 bindings=4 pattern=spread cycles=20000 reps=15 median_ns=6700 min_ns=6000 max_ns=7000 setup_s=3.1 pending_timers=400000
";
        let result = parse(stdout).expect("parses");
        assert_eq!(result.queued, Some((1_000_000, 392.0, 850.0)));
        let (small, large) = result.extremes("spread").expect("two lines");
        assert_eq!((small.domains, large.domains), (10, 100_000));
        assert_eq!(large.median_ns, 6_700.0);
        assert!(result.extremes("hot10").is_none());
        assert!(parse("nothing\n").is_err());
    }
}
