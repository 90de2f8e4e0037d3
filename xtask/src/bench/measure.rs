//! Running one load client and measuring it from outside: wall time from
//! spawn to exit, and the CPU time and context switches it used, from
//! `getrusage(RUSAGE_CHILDREN)` before and after it is reaped.
//!
//! Every contender is measured the same way, so smtp-source (which prints
//! nothing) and our own clients are comparable. The client's CPU excludes
//! the server's: the peers are other processes that this one does not
//! reap while a client runs. The server's CPU over the same span is read
//! separately from `/proc` when its pid is known (see [`server_cpu`]).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

use super::server_cpu;
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
    /// Context switches of the client: voluntary (it waited, usually for
    /// the network) and involuntary (the kernel preempted it).
    pub(crate) switches: Switches,
    /// User plus system CPU time of the server's processes from just
    /// before the client started to just after it exited, in seconds.
    /// `None` when the server's pid is unknown.
    pub(crate) server_cpu_seconds: Option<f64>,
}

/// Context switches counted by `getrusage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Switches {
    /// The process gave up the CPU: it waited.
    pub(crate) voluntary: u64,
    /// The kernel took the CPU away.
    pub(crate) involuntary: u64,
}

impl Sample {
    /// Voluntary and involuntary context switches per message.
    pub(crate) fn switches_per_message(&self) -> (f64, f64) {
        let messages = self.messages as f64;
        (
            self.switches.voluntary as f64 / messages,
            self.switches.involuntary as f64 / messages,
        )
    }

    /// Messages per second.
    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// CPU microseconds per message.
    pub(crate) fn cpu_micros_per_message(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.messages as f64
    }

    /// Returns the server's CPU microseconds per message, or `None` when
    /// it was not measured.
    pub(crate) fn server_cpu_micros_per_message(&self) -> Option<f64> {
        Some(self.server_cpu_seconds? * 1e6 / self.messages as f64)
    }
}

/// The `key=value` pairs of a client's result line.
pub(crate) type Fields = BTreeMap<String, String>;

/// Runs `command` to completion and measures it, and the CPU of the
/// server process tree rooted at `server_pid` over the same span. It must
/// exit 0; when it prints a result line, the line must report `messages`
/// delivered and nothing failed.
pub(crate) fn measure(
    command: &mut Command,
    messages: u64,
    server_pid: Option<u32>,
) -> Result<(Sample, Fields)> {
    let server_before = match server_pid {
        Some(pid) => Some((pid, read_server(pid)?)),
        None => None,
    };
    let before = children_usage()?;
    let started = Instant::now();
    let output = process::capture(command)?;
    let seconds = started.elapsed().as_secs_f64();
    let after = children_usage()?;
    let cpu_seconds = (after.cpu - before.cpu).as_secs_f64();
    let switches = Switches {
        voluntary: after.switches.voluntary - before.switches.voluntary,
        involuntary: after.switches.involuntary - before.switches.involuntary,
    };
    // NOTE: work the server does after the client exits, such as
    // Postfix's queue manager handing the last messages to discard, falls
    // into the next run's reading. It is at most the work for the
    // messages in flight at the end, a small share of a run of hundreds.
    let server_cpu_seconds = match server_before {
        Some((pid, before)) => {
            let after = read_server(pid)?;
            Some(after.seconds_since(&before, server_cpu::ticks_per_second()?))
        }
        None => None,
    };

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
            switches,
            server_cpu_seconds,
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

fn read_server(pid: u32) -> Result<server_cpu::TreeCpu> {
    server_cpu::read_tree(pid)
        .with_context(|| format!("reading the CPU time of the server (pid {pid}) failed"))
}

/// The total resource use of the children this process has reaped so far.
struct ChildrenUsage {
    cpu: Duration,
    switches: Switches,
}

fn children_usage() -> Result<ChildrenUsage> {
    let usage =
        getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN) failed")?;
    let to_duration = |time: nix::sys::time::TimeVal| {
        let micros = time.tv_sec() as i128 * 1_000_000 + time.tv_usec() as i128;
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    };
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(ChildrenUsage {
        cpu: to_duration(usage.user_time()) + to_duration(usage.system_time()),
        switches: Switches {
            voluntary: count(usage.voluntary_context_switches()),
            involuntary: count(usage.involuntary_context_switches()),
        },
    })
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
        let (sample, fields) = measure(&mut command, 1, None).expect("sh runs");
        assert!(fields.is_empty());
        assert!(sample.seconds > 0.0);
        assert!(sample.cpu_seconds > 0.0, "{sample:?}");
        assert_eq!(sample.server_cpu_seconds, None);
        // The shell waits for nothing, but the kernel switches to it at
        // least once to run it.
        let switches = sample.switches;
        assert!(switches.voluntary + switches.involuntary >= 1, "{sample:?}");
        assert!(
            sample.cpu_seconds <= sample.seconds * 2.0 + 0.05,
            "{sample:?}"
        );
    }

    #[test]
    fn measures_server_cpu() {
        // A "server" that spins for the whole run, beside a client that
        // sleeps: the server's time must show up.
        let mut server = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh starts");
        let mut client = Command::new("sleep");
        client.arg("0.5");
        let measured = measure(&mut client, 10, Some(server.id()));
        let _ = server.kill();
        let _ = server.wait();

        let (sample, _) = measured.expect("sleep runs");
        assert!(sample.switches.voluntary >= 1, "sleep waits: {sample:?}");
        let server_cpu = sample.server_cpu_seconds.expect("server pid given");
        assert!(server_cpu >= 0.1, "{sample:?}");
        assert!(server_cpu <= sample.seconds + 0.05, "{sample:?}");
        let per_message = sample.server_cpu_micros_per_message().expect("measured");
        assert!((per_message - server_cpu * 1e5).abs() < 1e-6, "{sample:?}");
    }

    #[test]
    fn missing_server_is_an_error() {
        let mut exited = Command::new("true").spawn().expect("true starts");
        let pid = exited.id();
        exited.wait().expect("true exits");
        let error = measure(&mut Command::new("true"), 1, Some(pid)).expect_err("pid is gone");
        assert!(
            format!("{error:#}").contains(&format!("pid {pid}")),
            "{error:#}"
        );
    }

    #[test]
    fn checks_delivered_count() {
        let mut command = Command::new("echo");
        command.arg("ec-bench-result client=x delivered=3");
        assert!(measure(&mut command, 4, None).is_err());
        assert!(measure(&mut command, 3, None).is_ok());
    }
}
