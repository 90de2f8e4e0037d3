//! Profiles of ec-load runs, for the cases where ec misses a target:
//!
//! - a CPU profile with `perf record -e cpu-clock` (a software event, so
//!   it works in virtual machines without hardware counters), reduced to
//!   the functions with the most samples;
//! - a count of the I/O waits that ended by timeout rather than by I/O,
//!   from `strace`: the runtime went to sleep for a timer although the
//!   work was ready, which costs latency and no CPU, so a CPU profile
//!   cannot show it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process;

/// One line of a flat CPU profile.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hotspot {
    /// Share of all samples, in percent.
    pub(crate) percent: f64,
    /// The binary or library (`[kernel.kallsyms]` for the kernel).
    pub(crate) object: String,
    pub(crate) symbol: String,
}

/// What the profiles of one case found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    /// The case's title.
    pub(crate) case: String,
    pub(crate) command: String,
    /// The top functions by CPU samples.
    pub(crate) hotspots: Vec<Hotspot>,
    /// Timed-out `epoll_wait` calls with a timeout of 1 to 10 ms, per
    /// message, when strace was available.
    pub(crate) timer_waits_per_message: Option<f64>,
}

/// Functions listed per profile.
const TOP: usize = 12;

/// Profiles `command` (an ec-load run of `messages` messages).
pub(crate) fn profile(
    case: &str,
    command: &Command,
    messages: u64,
    perf: Option<&Path>,
    strace: Option<&Path>,
    scratch: &Path,
) -> Result<Profile> {
    println!("bench: profiling ec in `{case}`");
    let hotspots = match perf {
        Some(perf) => cpu_profile(perf, command, scratch)?,
        None => Vec::new(),
    };
    let timer_waits_per_message = match strace {
        Some(strace) => Some(timer_waits(strace, command, scratch)? as f64 / messages as f64),
        None => None,
    };
    Ok(Profile {
        case: case.to_owned(),
        command: process::describe(command),
        hotspots,
        timer_waits_per_message,
    })
}

fn cpu_profile(perf: &Path, command: &Command, scratch: &Path) -> Result<Vec<Hotspot>> {
    let data = scratch.join("perf.data");
    let mut record = Command::new(perf);
    record
        .args(["record", "-e", "cpu-clock", "-F", "1999", "-q", "-o"])
        .arg(&data)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    process::output(&mut record).context("perf record failed")?;

    let report = process::output(
        Command::new(perf)
            .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol", "-i"])
            .arg(&data),
    )
    .context("perf report failed")?;
    let _ = fs::remove_file(&data);
    Ok(parse_report(&report))
}

/// Reads `perf report --stdio --sort dso,symbol` lines such as
/// `  12.34%  ec-load  [.] ec_sched::dispatch::...`.
fn parse_report(report: &str) -> Vec<Hotspot> {
    report
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
            let object = words.next()?.to_owned();
            let _kind = words.next()?;
            let symbol = words.collect::<Vec<_>>().join(" ");
            Some(Hotspot {
                percent,
                object,
                symbol: shorten(&symbol),
            })
        })
        .take(TOP)
        .collect()
}

/// Drops the hash suffix of a legacy-mangled Rust symbol.
fn shorten(symbol: &str) -> String {
    match symbol.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            path.to_owned()
        }
        _ => symbol.to_owned(),
    }
}

fn timer_waits(strace: &Path, command: &Command, scratch: &Path) -> Result<u64> {
    // One file per thread (`-ff`), so no call is split into "unfinished"
    // and "resumed" halves by another thread's calls.
    let directory: PathBuf = scratch.join("strace");
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let mut traced = Command::new(strace);
    traced
        .args(["-ff", "-qq", "-e", "trace=epoll_wait,epoll_pwait", "-o"])
        .arg(directory.join("trace"))
        .arg(command.get_program())
        .args(command.get_args());
    process::output(&mut traced).context("strace failed")?;

    let mut count = 0;
    for entry in fs::read_dir(&directory)? {
        let text = fs::read_to_string(entry?.path())?;
        count += text.lines().filter(|line| is_timer_wait(line)).count() as u64;
    }
    let _ = fs::remove_dir_all(&directory);
    Ok(count)
}

/// Whether an strace line is an `epoll_wait` with a 1–10 ms timeout that
/// returned 0 (nothing ready), such as
/// `epoll_wait(3, [], 1024, 1) = 0`.
fn is_timer_wait(line: &str) -> bool {
    if !line.contains("epoll_wait(") && !line.contains("epoll_pwait(") {
        return false;
    }
    let Some((call, result)) = line.rsplit_once(" = ") else {
        return false;
    };
    if result.trim() != "0" {
        return false;
    }
    let Some(arguments) = call.trim_end().strip_suffix(')') else {
        return false;
    };
    // epoll_pwait has a signal mask after the timeout.
    let timeout = arguments
        .split(", ")
        .nth(3)
        .and_then(|text| text.trim().parse::<i64>().ok());
    matches!(timeout, Some(1..=10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_report() {
        let report = "\
# Overhead  Shared Object      Symbol
# ........  .................  ......
#
    20.50%  [kernel.kallsyms]  [k] do_syscall_64
     7.25%  ec-load            [.] ec_sched::dispatch::<impl ec_sched::scheduler::Scheduler>::run_pending::h0123456789abcdef
";
        let hotspots = parse_report(report);
        assert_eq!(hotspots.len(), 2);
        assert_eq!(hotspots[0].percent, 20.5);
        assert_eq!(hotspots[0].object, "[kernel.kallsyms]");
        assert_eq!(
            hotspots[1].symbol,
            "ec_sched::dispatch::<impl ec_sched::scheduler::Scheduler>::run_pending"
        );
    }

    #[test]
    fn recognizes_timer_waits() {
        assert!(is_timer_wait("812 epoll_wait(3, [], 1024, 1) = 0"));
        assert!(is_timer_wait("812 epoll_pwait(3, [], 1024, 4, NULL, 8) = 0"));
        assert!(!is_timer_wait("812 epoll_wait(3, [{events=EPOLLIN}], 1024, 1) = 1"));
        assert!(!is_timer_wait("812 epoll_wait(3, [], 1024, 0) = 0"));
        assert!(!is_timer_wait("812 epoll_wait(3, [], 1024, -1) = 0"));
        assert!(!is_timer_wait("812 epoll_wait(3, [], 1024, 1000) = 0"));
    }
}
