//! Profiles of ec-load runs, for the cases where ec misses a target:
//!
//! - a CPU profile with `perf record -e cpu-clock` (a software event, so
//!   it works in virtual machines without hardware counters), reduced to
//!   the functions with the most samples;
//! - a count, from `strace`, of the `epoll_wait` calls made while a timer
//!   was due within 1 to 10 ms. ec's own timeouts are seconds to minutes,
//!   so such a timer is a short sleep on the path of a message. tokio's
//!   timers have a resolution of 1 ms, so even a zero timeout parks the
//!   thread until the next tick. That costs latency and no CPU, so a CPU
//!   profile cannot show it.

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

/// The profiles of one case.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    /// The case's title.
    pub(crate) case: String,
    pub(crate) command: String,
    /// The top functions by CPU samples.
    pub(crate) hotspots: Vec<Hotspot>,
    /// Short timer waits per message, when strace was available.
    pub(crate) timer_waits: Option<TimerWaits>,
}

/// Short timer waits seen by strace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TimerWaits {
    /// `epoll_wait` calls with a 1–10 ms timeout, per message.
    pub(crate) per_message: f64,
    /// Of those, the ones that returned 0 (woken by the timer, not by I/O).
    pub(crate) timed_out_per_message: f64,
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
    let timer_waits = match strace {
        Some(strace) => {
            let (waits, timed_out) = timer_waits(strace, command, scratch)?;
            Some(TimerWaits {
                per_message: waits as f64 / messages as f64,
                timed_out_per_message: timed_out as f64 / messages as f64,
            })
        }
        None => None,
    };
    Ok(Profile {
        case: case.to_owned(),
        command: process::describe(command),
        hotspots,
        timer_waits,
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
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "-i",
            ])
            .arg(&data),
    )
    .context("perf report failed")?;
    let _ = fs::remove_file(&data);
    Ok(parse_report(&report))
}

/// Reads `perf report --stdio --sort dso,symbol` lines such as
/// `  12.34%  ec-load  [.] ec_sched::dispatch::...  -  -`; the trailing
/// dashes are empty columns that perf adds.
fn parse_report(report: &str) -> Vec<Hotspot> {
    report
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
            let object = words.next()?.to_owned();
            let _kind = words.next()?;
            let mut rest: Vec<&str> = words.collect();
            while rest.last() == Some(&"-") {
                rest.pop();
            }
            let symbol = rest.join(" ");
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

/// Counts `epoll_wait` calls with a 1–10 ms timeout, and those of them
/// that timed out.
fn timer_waits(strace: &Path, command: &Command, scratch: &Path) -> Result<(u64, u64)> {
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

    let (mut waits, mut timed_out) = (0, 0);
    for entry in fs::read_dir(&directory)? {
        let text = fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            if let Some(expired) = short_wait(line) {
                waits += 1;
                timed_out += u64::from(expired);
            }
        }
    }
    let _ = fs::remove_dir_all(&directory);
    Ok((waits, timed_out))
}

/// For an strace line of an `epoll_wait` with a 1–10 ms timeout, such as
/// `epoll_wait(3, [], 1024, 1) = 0`, whether it timed out (returned 0);
/// `None` for any other line.
fn short_wait(line: &str) -> Option<bool> {
    let start = line
        .find("epoll_wait(")
        .or_else(|| line.find("epoll_pwait("))?;
    let (call, result) = line[start..].rsplit_once(" = ")?;
    let arguments = call.trim_end().strip_suffix(')')?;
    // The events array contains ", " when it is not empty, so count the
    // timeout from the end: epoll_pwait adds the signal mask and its size.
    let words: Vec<&str> = arguments.split(", ").collect();
    let from_end = if line[start..].starts_with("epoll_pwait(") {
        3
    } else {
        1
    };
    let timeout: i64 = words
        .get(words.len().checked_sub(from_end)?)?
        .trim()
        .parse()
        .ok()?;
    if !(1..=10).contains(&timeout) {
        return None;
    }
    Some(result.trim() == "0")
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
     7.25%  ec-load            [.] ec_sched::dispatch::<impl ec_sched::scheduler::Scheduler>::run_pending::h0123456789abcdef  -  -
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
    fn recognizes_short_waits() {
        assert_eq!(short_wait("epoll_wait(3, [], 1024, 1) = 0"), Some(true));
        assert_eq!(
            short_wait("epoll_pwait(3, [], 1024, 4, NULL, 8) = 0"),
            Some(true)
        );
        assert_eq!(
            short_wait("epoll_wait(3, [{events=EPOLLIN, data={u32=0, u64=0}}], 1024, 1) = 1"),
            Some(false)
        );
        assert_eq!(short_wait("epoll_wait(3, [], 1024, 0) = 0"), None);
        assert_eq!(short_wait("epoll_wait(3, [], 1024, -1) = 0"), None);
        assert_eq!(short_wait("epoll_wait(3, [], 1024, 118589) = 0"), None);
        assert_eq!(short_wait("write(4, \"x\", 1) = 1"), None);
    }
}
