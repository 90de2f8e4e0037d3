//! The SMTP load cases: who sends, to what, how much; and running them
//! with contenders alternating.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use super::measure::{measure, Sample};
use super::servers::SMTP_SOURCE;
use super::stats::Summary;
use super::tools::Tools;

/// Envelope sender and EHLO name of every client that lets us choose.
const SENDER: &str = "sender@bench.ec.test";
const EHLO_NAME: &str = "bench.ec.test";

/// A client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    /// ec's whole engine, through `ec-load`.
    Ec,
    /// Postfix's smtp-source.
    SmtpSource,
    /// lettre as published (no `TCP_NODELAY`).
    Lettre,
    /// lettre with `TCP_NODELAY` set by the `LD_PRELOAD` shim.
    LettreNodelay,
    /// The bare STARTTLS handshake loop.
    TlsFloor,
}

impl Contender {
    /// Name in the report.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Contender::Ec => "ec",
            Contender::SmtpSource => "smtp-source",
            Contender::Lettre => "lettre",
            Contender::LettreNodelay => "lettre + TCP_NODELAY",
            Contender::TlsFloor => "handshake floor",
        }
    }
}

/// The server a case sends to.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) address: SocketAddr,
    /// The recipients' domain.
    pub(crate) domain: String,
    /// STARTTLS is required and verified when present.
    pub(crate) tls: Option<TlsPeer>,
    /// The server's process (Postfix's master for Postfix), whose tree's
    /// CPU each measured run reads; `None` when it is unknown.
    pub(crate) server_pid: Option<u32>,
}

/// How to verify a peer's certificate.
#[derive(Debug, Clone)]
pub(crate) struct TlsPeer {
    pub(crate) ca_file: PathBuf,
    pub(crate) server_name: String,
}

/// One benchmark case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// Short title, for the report and the progress output.
    pub(crate) title: String,
    /// Message size in octets.
    pub(crate) size: usize,
    /// Connections at once (and lettre's pool size).
    pub(crate) connections: u32,
    /// One connection per message.
    pub(crate) churn: bool,
    /// Messages per run for every contender but published lettre.
    pub(crate) messages: u64,
    /// Messages per run for published lettre, which waits for the
    /// server's delayed ACK on every message and would otherwise take
    /// minutes per run.
    pub(crate) slow_messages: u64,
    /// The contenders, in the order of the first repetition.
    pub(crate) contenders: Vec<Contender>,
}

impl Case {
    /// Messages per run for `contender`.
    pub(crate) fn messages_for(&self, contender: Contender) -> u64 {
        match contender {
            Contender::Lettre => self.slow_messages,
            _ => self.messages,
        }
    }
}

/// The measured runs of one contender in one case.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) contender: Contender,
    pub(crate) messages: u64,
    pub(crate) samples: Vec<Sample>,
    /// CPU seconds of a run with one message (median of
    /// [`STARTUP_RUNS`]): starting the process, its runtime and, for ec,
    /// installing the Prometheus recorder, which calibrates its clock.
    pub(crate) startup_cpu: Option<f64>,
}

impl Row {
    /// Messages per second over the samples.
    pub(crate) fn rate(&self) -> Option<Summary> {
        Summary::of(self.samples.iter().map(Sample::rate))
    }

    /// CPU microseconds per message over the samples.
    pub(crate) fn cpu(&self) -> Option<Summary> {
        Summary::of(self.samples.iter().map(Sample::cpu_micros_per_message))
    }

    /// Voluntary and involuntary context switches per message over the
    /// samples.
    pub(crate) fn switches(&self) -> Option<(Summary, Summary)> {
        let per_message: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(Sample::switches_per_message)
            .collect();
        Some((
            Summary::of(per_message.iter().map(|&(voluntary, _)| voluntary))?,
            Summary::of(per_message.iter().map(|&(_, involuntary)| involuntary))?,
        ))
    }

    /// Summarizes the server's CPU microseconds per message over the
    /// samples that measured it.
    pub(crate) fn server_cpu(&self) -> Option<Summary> {
        Summary::of(
            self.samples
                .iter()
                .filter_map(Sample::server_cpu_micros_per_message),
        )
    }

    /// CPU microseconds per message once started: each run's CPU less the
    /// startup CPU, over its messages. Falls back to [`Row::cpu`] when the
    /// startup was not measured.
    pub(crate) fn steady_cpu(&self) -> Option<Summary> {
        let Some(startup) = self.startup_cpu else {
            return self.cpu();
        };
        Summary::of(
            self.samples.iter().map(|sample| {
                (sample.cpu_seconds - startup).max(0.0) * 1e6 / sample.messages as f64
            }),
        )
    }
}

/// One-message runs per contender and case that measure its startup CPU.
pub(crate) const STARTUP_RUNS: usize = 3;

/// A case and what came of it.
#[derive(Debug, Clone)]
pub(crate) struct CaseResult {
    pub(crate) case: Case,
    pub(crate) peer: Peer,
    pub(crate) rows: Vec<Row>,
    /// The error that stopped the case early, if one did.
    pub(crate) error: Option<String>,
}

impl CaseResult {
    /// Returns the row of `contender`, when it ran.
    pub(crate) fn row(&self, contender: Contender) -> Option<&Row> {
        self.rows
            .iter()
            .find(|row| row.contender == contender && !row.samples.is_empty())
    }
}

/// Runs `case` against `peer`: one warm-up run of each contender with a
/// tenth of the messages, then `repetitions` rounds in which every
/// contender runs once, the order rotating by one each round so that no
/// contender always runs first or after the same neighbour.
pub(crate) fn run(case: &Case, peer: &Peer, tools: &Tools, repetitions: usize) -> CaseResult {
    let mut result = CaseResult {
        case: case.clone(),
        peer: peer.clone(),
        rows: case
            .contenders
            .iter()
            .map(|&contender| Row {
                contender,
                messages: case.messages_for(contender),
                samples: Vec::new(),
                startup_cpu: None,
            })
            .collect(),
        error: None,
    };
    println!("\n==> bench: {}", case.title);
    if let Err(error) = run_rounds(case, peer, tools, repetitions, &mut result.rows) {
        println!("bench: {} stopped: {error:#}", case.title);
        result.error = Some(format!("{error:#}"));
    }
    result
}

fn run_rounds(
    case: &Case,
    peer: &Peer,
    tools: &Tools,
    repetitions: usize,
    rows: &mut [Row],
) -> Result<()> {
    for row in rows.iter_mut() {
        let warm_up = (row.messages / 10).max(10);
        measure(
            &mut command(row.contender, case, peer, tools, warm_up),
            warm_up,
            None,
        )?;
        let mut startup = Vec::with_capacity(STARTUP_RUNS);
        for _ in 0..STARTUP_RUNS {
            let (sample, _) = measure(&mut command(row.contender, case, peer, tools, 1), 1, None)?;
            startup.push(sample.cpu_seconds);
        }
        row.startup_cpu = Summary::of(startup).map(|summary| summary.median);
    }
    for round in 0..repetitions {
        for offset in 0..rows.len() {
            let row = &mut rows[(round + offset) % rows.len()];
            let (sample, _) = measure(
                &mut command(row.contender, case, peer, tools, row.messages),
                row.messages,
                peer.server_pid,
            )?;
            let server_cpu = sample
                .server_cpu_micros_per_message()
                .map_or_else(String::new, |micros| {
                    format!(" {micros:>8.1} µs server CPU/msg")
                });
            println!(
                "bench:   round {}: {:<22} {:>9.0} msg/s {:>8.1} µs CPU/msg{server_cpu}",
                round + 1,
                row.contender.label(),
                sample.rate(),
                sample.cpu_micros_per_message()
            );
            row.samples.push(sample);
        }
    }
    Ok(())
}

/// Builds the command line that makes `contender` send `messages`
/// messages of `case` to `peer`.
pub(crate) fn command(
    contender: Contender,
    case: &Case,
    peer: &Peer,
    tools: &Tools,
    messages: u64,
) -> Command {
    let server = peer.address.to_string();
    let connections = case.connections.to_string();
    let count = messages.to_string();
    let size = case.size.to_string();
    match contender {
        Contender::Ec => {
            let mut command = Command::new(&tools.ec_load);
            command.args(["--server", &server, "--messages", &count, "--size", &size]);
            command.args(["--connections", &connections, "--domain", &peer.domain]);
            if case.churn {
                command.args(["--deliveries-per-connection", "1"]);
            }
            add_tls(&mut command, peer);
            command
        }
        Contender::SmtpSource => {
            let mut command = Command::new(SMTP_SOURCE);
            if !case.churn {
                // Keep each session's connection for its next message.
                command.arg("-d");
            }
            command.args(["-s", &connections, "-m", &count, "-l", &size]);
            command.args(["-f", SENDER, "-t", &format!("user@{}", peer.domain)]);
            command.args(["-M", EHLO_NAME, &server]);
            command
        }
        Contender::Lettre | Contender::LettreNodelay => {
            let mut command = Command::new(&tools.lettre_load);
            command.args(["--server", &server, "--messages", &count, "--size", &size]);
            command.args(["--pool", &connections, "--domain", &peer.domain]);
            if case.churn {
                command.arg("--churn");
            }
            add_tls(&mut command, peer);
            if contender == Contender::LettreNodelay {
                command.env("LD_PRELOAD", &tools.nodelay_shim);
            }
            command
        }
        Contender::TlsFloor => {
            let mut command = Command::new(&tools.tls_floor);
            command.args(["--server", &server, "--sessions", &count]);
            command.args(["--concurrency", &connections]);
            if let Some(tls) = &peer.tls {
                command.arg("--ca-file").arg(&tls.ca_file);
                command.args(["--server-name", &tls.server_name]);
            }
            command
        }
    }
}

fn add_tls(command: &mut Command, peer: &Peer) {
    if let Some(tls) = &peer.tls {
        command.arg("--starttls").arg("--ca-file").arg(&tls.ca_file);
        command.args(["--server-name", &tls.server_name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::describe;

    fn tools() -> Tools {
        Tools {
            ec_load: PathBuf::from("/b/ec-load"),
            lettre_load: PathBuf::from("/b/lettre-load"),
            tls_floor: PathBuf::from("/b/tls-floor"),
            ec: PathBuf::from("/b/ec"),
            sched_bench: PathBuf::from("/b/sched_bench"),
            nodelay_shim: PathBuf::from("/b/libnodelay.so"),
            perf: None,
            strace: None,
        }
    }

    fn case(churn: bool) -> Case {
        Case {
            title: "t".to_owned(),
            size: 1_024,
            connections: 8,
            churn,
            messages: 100,
            slow_messages: 10,
            contenders: vec![Contender::Ec, Contender::SmtpSource, Contender::Lettre],
        }
    }

    fn peer(tls: bool) -> Peer {
        Peer {
            address: "127.0.0.1:2525".parse().expect("address"),
            domain: "d.test".to_owned(),
            tls: tls.then(|| TlsPeer {
                ca_file: PathBuf::from("/ca.pem"),
                server_name: "mx.test".to_owned(),
            }),
            server_pid: None,
        }
    }

    #[test]
    fn smtp_source_reuses_unless_churn() {
        let reuse = command(
            Contender::SmtpSource,
            &case(false),
            &peer(false),
            &tools(),
            100,
        );
        assert_eq!(
            describe(&reuse),
            "/usr/sbin/smtp-source -d -s 8 -m 100 -l 1024 -f sender@bench.ec.test \
             -t user@d.test -M bench.ec.test 127.0.0.1:2525"
        );
        let churn = command(
            Contender::SmtpSource,
            &case(true),
            &peer(false),
            &tools(),
            100,
        );
        assert!(!describe(&churn).contains(" -d "));
    }

    #[test]
    fn ec_churn_and_tls_flags() {
        let line = describe(&command(
            Contender::Ec,
            &case(true),
            &peer(true),
            &tools(),
            100,
        ));
        assert!(line.contains("--deliveries-per-connection 1"), "{line}");
        assert!(
            line.contains("--starttls --ca-file /ca.pem --server-name mx.test"),
            "{line}"
        );
    }

    #[test]
    fn only_nodelay_lettre_gets_the_shim() {
        let plain = command(Contender::Lettre, &case(false), &peer(false), &tools(), 10);
        assert!(plain.get_envs().next().is_none());
        let shimmed = command(
            Contender::LettreNodelay,
            &case(false),
            &peer(false),
            &tools(),
            10,
        );
        let envs: Vec<_> = shimmed.get_envs().collect();
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].0, "LD_PRELOAD");
    }

    #[test]
    fn published_lettre_sends_fewer() {
        let case = case(false);
        assert_eq!(case.messages_for(Contender::Lettre), 10);
        assert_eq!(case.messages_for(Contender::LettreNodelay), 100);
        assert_eq!(case.messages_for(Contender::Ec), 100);
    }
}
