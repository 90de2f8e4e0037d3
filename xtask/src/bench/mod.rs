//! `cargo xtask bench`: measures ec against Postfix's smtp-source and
//! lettre on loopback, runs the scheduler's benchmark and the memory
//! probes, and writes `docs/BENCHMARKS.md`.
//!
//! The groups, each optional with `--only`:
//!
//! - `reuse`: throughput over reused connections to smtp-sink, 1 KB and
//!   100 KB messages over 8 and 32 connections;
//! - `churn`: one plain connection per message to smtp-sink;
//! - `tls`: one STARTTLS connection per message to the Postfix peer, with
//!   the bare handshake loop as the floor;
//! - `sched`: `ec-sched`'s `sched_bench` example;
//! - `memory`: resident memory per idle connection and per queued message.
//!
//! The load clients are in the `ec-bench` crate (`bench/`). This module
//! builds them, starts the servers, alternates the contenders, judges the
//! targets, profiles ec where it misses one, and renders the report.

mod cases;
mod machine;
mod measure;
mod memory;
mod options;
mod profile;
mod report;
mod sched;
mod server_cpu;
mod servers;
mod stats;
mod targets;
mod tools;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

use cases::{Case, CaseResult, Contender, Peer, TlsPeer};
use machine::Machine;
use options::{Group, Options};
use report::Report;
use servers::Server;
use targets::Verdict;
use tools::Tools;

pub(crate) use options::USAGE;

/// Title of the one-connection reuse case, which has no target.
const LATENCY_CASE: &str = "reuse, 1 KB, 1 connection";

/// How many times lettre + TCP_NODELAY's rate ec must reach in TLS churn.
const TLS_RATE_FACTOR: f64 = 1.5;

/// Connections at once in the churn and TLS cases.
const CHURN_CONNECTIONS: u32 = 8;
/// Idle connections held in the memory group.
const HELD_CONNECTIONS: u64 = 10_000;
/// Messages queued in the memory group.
const QUEUED_MESSAGES: u64 = 1_000_000;
/// Open files the servers and clients may need: 10,000 connections and
/// their sockets on both ends stay below this.
const OPEN_FILES: u64 = 65_536;

/// Runs `cargo xtask bench` with the words after `bench`.
pub(crate) fn run(root: &Path, args: &[&str]) -> Result<()> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    raise_open_files();
    let tools = tools::prepare(root, &options)?;
    let scratch = std::env::temp_dir().join(format!("ec-bench-{}", std::process::id()));
    fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create the scratch directory {}", scratch.display()))?;

    let mut report = Report::new(&options, Machine::describe(root));
    let outcome = measure_all(&options, &tools, &scratch, &mut report);
    let _ = fs::remove_dir_all(&scratch);
    outcome?;

    report.machine.finish();
    report.minutes = started.elapsed().as_secs_f64() / 60.0;
    let output = if options.output.is_absolute() {
        options.output.clone()
    } else {
        root.join(&options.output)
    };
    fs::write(&output, report.render())
        .with_context(|| format!("cannot write the report to {}", output.display()))?;
    print_summary(&report, &output);
    Ok(())
}

/// Runs every chosen group into `report`. A group that fails is noted in
/// the report and the others still run.
fn measure_all(
    options: &Options,
    tools: &Tools,
    scratch: &Path,
    report: &mut Report,
) -> Result<()> {
    // One smtp-sink serves the reuse and churn groups and their profiles.
    let sink = if options.runs(Group::Reuse) || options.runs(Group::Churn) {
        match Server::smtp_sink(4_096) {
            Ok(sink) => Some(sink),
            Err(error) => {
                for group in [Group::Reuse, Group::Churn] {
                    if options.runs(group) {
                        report.failures.push((group, format!("{error:#}")));
                    }
                }
                None
            }
        }
    } else {
        None
    };
    if let Some(sink) = &sink {
        let peer = Peer {
            address: sink.address,
            domain: "bench.test".to_owned(),
            tls: None,
            server_pid: Some(sink.pid()),
        };
        if options.runs(Group::Reuse) {
            for case in reuse_cases(options) {
                report
                    .reuse
                    .push(cases::run(&case, &peer, tools, options.repetitions));
            }
        }
        if options.runs(Group::Churn) {
            let case = churn_case(options);
            report
                .churn
                .push(cases::run(&case, &peer, tools, options.repetitions));
        }
    }

    if options.runs(Group::Tls) {
        match servers::postfix() {
            Ok(postfix) => {
                report.postfix_version = postfix.version.clone();
                let peer = Peer {
                    address: postfix.address,
                    domain: postfix.discard_domain.clone(),
                    tls: Some(TlsPeer {
                        ca_file: postfix.ca_file.clone(),
                        server_name: postfix.server_name.clone(),
                    }),
                    server_pid: postfix.master_pid,
                };
                let case = tls_case(options);
                report
                    .tls
                    .push(cases::run(&case, &peer, tools, options.repetitions));
            }
            Err(error) => report.failures.push((Group::Tls, format!("{error:#}"))),
        }
    }
    if report.postfix_version.is_empty() {
        report.postfix_version = postfix_version();
    }

    if options.runs(Group::Sched) {
        // With the recorder as in production, then without, to show what
        // the metrics cost the scheduler.
        for metrics in [true, false] {
            match sched::run(tools, options.quick, metrics) {
                Ok(result) => report.sched.push(result),
                Err(error) => {
                    report.failures.push((Group::Sched, format!("{error:#}")));
                    break;
                }
            }
        }
    }
    if options.runs(Group::Memory) {
        let connections = options.count(HELD_CONNECTIONS);
        let messages = if options.quick {
            QUEUED_MESSAGES / 10
        } else {
            QUEUED_MESSAGES
        };
        match memory::run(tools, scratch, connections, messages) {
            Ok(result) => report.memory = Some(result),
            Err(error) => report.failures.push((Group::Memory, format!("{error:#}"))),
        }
    }

    report.verdicts = verdicts(report);
    if options.profile {
        report.profiles = profiles(report, tools, scratch);
    }
    drop(sink);
    Ok(())
}

fn reuse_cases(options: &Options) -> Vec<Case> {
    // One connection: no parallelism hides the time each message spends
    // in the client, so this case shows per-message latency. It has no
    // target of its own.
    let mut cases = vec![Case {
        title: LATENCY_CASE.to_owned(),
        size: 1_024,
        connections: 1,
        churn: false,
        messages: options.count(2_000),
        slow_messages: options.count(2_000),
        contenders: vec![
            Contender::Ec,
            Contender::SmtpSource,
            Contender::LettreNodelay,
        ],
    }];
    for (size, label, messages) in [(1_024, "1 KB", 20_000), (102_400, "100 KB", 3_000)] {
        for connections in [8, 32] {
            let messages = options.count(messages);
            // Published lettre is held to about 25 small messages per
            // second per connection by delayed ACKs; large ones are not.
            let slow_messages = if size == 1_024 {
                options.count(500 * u64::from(connections) / 8)
            } else {
                messages
            };
            cases.push(Case {
                title: format!("reuse, {label}, {connections} connections"),
                size,
                connections,
                churn: false,
                messages,
                slow_messages,
                contenders: vec![
                    Contender::Ec,
                    Contender::SmtpSource,
                    Contender::Lettre,
                    Contender::LettreNodelay,
                ],
            });
        }
    }
    cases
}

fn churn_case(options: &Options) -> Case {
    Case {
        title: format!("churn, 1 KB, {CHURN_CONNECTIONS} connections"),
        size: 1_024,
        connections: CHURN_CONNECTIONS,
        churn: true,
        messages: options.count(5_000),
        slow_messages: options.count(500),
        contenders: vec![
            Contender::Ec,
            Contender::SmtpSource,
            Contender::Lettre,
            Contender::LettreNodelay,
        ],
    }
}

fn tls_case(options: &Options) -> Case {
    let messages = options.count(1_000);
    Case {
        title: format!("TLS churn, 1 KB, {CHURN_CONNECTIONS} connections"),
        size: 1_024,
        connections: CHURN_CONNECTIONS,
        churn: true,
        messages,
        slow_messages: messages,
        contenders: vec![Contender::Ec, Contender::LettreNodelay, Contender::TlsFloor],
    }
}

/// Judges the targets ec is held to against what this run measured.
fn verdicts(report: &Report) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for result in report.reuse.iter().filter(|r| r.case.title != LATENCY_CASE) {
        verdicts.push(targets::against(
            result,
            Contender::SmtpSource,
            1.0,
            Some(1.0),
        ));
        verdicts.push(targets::against(
            result,
            Contender::LettreNodelay,
            1.0,
            Some(0.75),
        ));
    }
    for result in &report.churn {
        verdicts.push(targets::against(result, Contender::SmtpSource, 1.0, None));
        verdicts.push(targets::against(
            result,
            Contender::LettreNodelay,
            1.0,
            None,
        ));
    }
    for result in &report.tls {
        verdicts.push(targets::against(
            result,
            Contender::LettreNodelay,
            TLS_RATE_FACTOR,
            Some(0.7),
        ));
        verdicts.push(targets::near_floor(result, 1.5));
    }
    if let Some(sched) = report.sched.iter().find(|result| result.metrics) {
        verdicts.push(targets::flat(sched, "hot10"));
        verdicts.push(targets::flat(sched, "spread"));
    }
    verdicts
}

/// Profiles ec in every case where it missed a target, once per case, and
/// the scheduler benchmark when closeconn's cost was not flat.
fn profiles(report: &Report, tools: &Tools, scratch: &Path) -> Vec<profile::Profile> {
    if tools.perf.is_none() && tools.strace.is_none() {
        return Vec::new();
    }
    let mut missed_cases: Vec<&str> = Vec::new();
    for verdict in &report.verdicts {
        if let (Some(false), Some(case)) = (verdict.met, &verdict.case) {
            if !missed_cases.contains(&case.as_str()) {
                missed_cases.push(case);
            }
        }
    }

    let mut profiles = Vec::new();
    let all_cases = report.reuse.iter().chain(&report.churn).chain(&report.tls);
    for result in all_cases.filter(|r| missed_cases.contains(&r.case.title.as_str())) {
        match profile_case(result, tools, scratch) {
            Ok(found) => profiles.push(found),
            Err(error) => println!("bench: profiling `{}` failed: {error:#}", result.case.title),
        }
    }

    let missed_patterns: Vec<&str> = report
        .verdicts
        .iter()
        .filter(|verdict| verdict.met == Some(false))
        .filter_map(|verdict| targets::flat_pattern(&verdict.target))
        .collect();
    let Some(sched) = report.sched.iter().find(|result| result.metrics) else {
        return profiles;
    };
    for pattern in missed_patterns {
        let domains = sched
            .open_release
            .iter()
            .map(|line| line.domains)
            .max()
            .unwrap_or(100_000);
        // Three times the usual connections per repetition, so that the
        // measured loop outweighs filling the tables and the final audit.
        let cycles = 3 * sched
            .open_release
            .first()
            .map_or(20_000, |line| line.cycles);
        let flag = if pattern == "spread" {
            "--spread"
        } else {
            "--hot"
        };
        let mut command = Command::new(&tools.sched_bench);
        command.args(["--metrics", flag, "--domains", &domains.to_string()]);
        command.args(["--cycles", &cycles.to_string()]);
        let case = format!(
            "scheduler, {} domains, pattern {pattern}",
            report::thousands(domains as f64)
        );
        match profile::profile(
            &case,
            &command,
            cycles,
            tools.perf.as_deref(),
            None,
            scratch,
        ) {
            Ok(found) => profiles.push(found),
            Err(error) => println!("bench: profiling the scheduler failed: {error:#}"),
        }
    }
    profiles
}

fn profile_case(result: &CaseResult, tools: &Tools, scratch: &Path) -> Result<profile::Profile> {
    let messages = result.case.messages;
    let command = cases::command(Contender::Ec, &result.case, &result.peer, tools, messages);
    profile::profile(
        &result.case.title,
        &command,
        messages,
        tools.perf.as_deref(),
        tools.strace.as_deref(),
        scratch,
    )
}

fn postfix_version() -> String {
    crate::process::output(Command::new("/usr/sbin/postconf").args(["-d", "-h", "mail_version"]))
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Raises this process's open-file limit, which the servers and clients
/// inherit, as far as it may go up to [`OPEN_FILES`].
fn raise_open_files() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = OPEN_FILES.max(soft);
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted)).is_ok() {
        return;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE, which a container's
    // root may lack; the soft limit can still go up to the hard one.
    let reachable = hard.min(OPEN_FILES).max(soft);
    if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, reachable, hard) {
        eprintln!("bench: warning: cannot raise the open-file limit to {reachable}: {error}");
    } else if reachable < wanted {
        eprintln!(
            "bench: note: the open-file limit is {reachable}, the hard limit; each \
             process must keep its connections below that"
        );
    }
}

fn print_summary(report: &Report, output: &Path) {
    println!("\nbench: targets");
    for verdict in &report.verdicts {
        let result = match verdict.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        println!("  {result} {}\n         {}", verdict.target, verdict.detail);
    }
    for (group, error) in &report.failures {
        println!("  group `{}` failed: {error}", group.name());
    }
    println!(
        "bench: wrote {} after {:.1} minutes",
        output.display(),
        report.minutes
    );
}
