//! `ec-load`: drives ec's whole engine (scheduler thread, tokio sessions,
//! `closeconn`) against one SMTP server on loopback and prints one result
//! line.
//!
//! The Prometheus recorder is installed first, as `ec deliver` does, so
//! every metric the engine records costs what it costs in production.
//!
//! Modes:
//!
//! - `deliver`: submit `--messages` messages at once, wait until every
//!   recipient has a final outcome, shut the engine down (QUIT on every
//!   open connection). Prints messages, seconds and CPU seconds.
//! - `hold`: submit one message per connection (`--connections` of them)
//!   with a long idle timeout, wait until all are delivered and the
//!   connections idle, and print the growth of resident memory per open
//!   connection.
//! - `queue`: allow no connection, submit `--messages` messages, wait until
//!   the scheduler has queued them all, and print the growth of resident memory
//!   per queued message. Every message shares one body, so the figure is
//!   the engine's own cost per message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use ec_bench::{
    cpu_time, message, raise_open_files, recipient, resident_bytes, ResultLine, EHLO_NAME, SENDER,
};
use ec_metrics::{Exporter, ExporterConfig};
use ec_sched::{Report, SchedulerHandle};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{
    Address, Config, Domain, EngineLimits, ReversePath, Route, Submission, TlsPolicy, TlsSettings,
    TlsVerify,
};

/// Command line of `ec-load`.
#[derive(Debug, Parser)]
#[command(about = "Drive ec's delivery engine against a loopback SMTP server")]
struct Args {
    /// The measurement to run.
    #[arg(long, value_enum, default_value = "deliver")]
    mode: Mode,

    /// The SMTP server, a loopback address and port.
    #[arg(long, value_name = "ADDR:PORT")]
    server: SocketAddr,

    /// Messages to send (deliver) or to queue (queue); one recipient each.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    messages: u64,

    /// Size of each message in octets.
    #[arg(long, value_name = "OCTETS", default_value_t = 1_024)]
    size: usize,

    /// `max_outbound_connections` for the domain; in `hold` mode, also the
    /// number of connections held open.
    #[arg(long, value_name = "N", default_value_t = 8)]
    connections: u32,

    /// `max_deliveries_per_connection`: transactions before a connection
    /// is closed; 1 opens a connection per message.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    deliveries_per_connection: u32,

    /// Recipient domain.
    #[arg(long, value_name = "DOMAIN", default_value = "bench.test")]
    domain: String,

    /// Require STARTTLS and verify the server's certificate against
    /// `--ca-file` and `--server-name`.
    #[arg(long, requires_all = ["ca_file", "server_name"])]
    starttls: bool,

    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Name the server's certificate must carry.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,

    /// Worker threads of a session runtime apart from the scheduler's
    /// thread; 0 (the engine's default) runs the sessions on the
    /// scheduler's thread.
    #[arg(long, value_name = "N", default_value_t = 0)]
    io_threads: usize,

    /// Give up when the run takes longer than this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    time_limit: u64,
}

/// The measurements `ec-load` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Throughput: send every message, then shut down.
    Deliver,
    /// Resident memory per idle open connection.
    Hold,
    /// Resident memory per queued message.
    Queue,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.server.ip().is_loopback() {
        bail!(
            "--server {} is not a loopback address; ec-load only sends to this machine",
            args.server
        );
    }
    let _exporter = Exporter::install(ExporterConfig::without_listener())
        .context("installing the Prometheus recorder failed")?;
    match args.mode {
        Mode::Deliver => deliver(&args),
        Mode::Hold => hold(&args),
        Mode::Queue => queue(&args),
    }
}

/// Counts of what the observer saw, shared with the main thread.
#[derive(Debug, Default)]
struct Progress {
    delivered: AtomicU64,
    failed: AtomicU64,
    unsent: AtomicU64,
    deferred: AtomicU64,
    delivery_unknown: AtomicU64,
    opened: AtomicU32,
    closed: AtomicU32,
}

impl Progress {
    fn finals(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.unsent.load(Ordering::Relaxed)
    }

    fn open_connections(&self) -> u32 {
        self.opened.load(Ordering::Relaxed) - self.closed.load(Ordering::Relaxed)
    }
}

/// A started engine and the observer's counts.
struct Run {
    engine: Engine,
    progress: Arc<Progress>,
    done: mpsc::Receiver<()>,
}

/// Starts the engine with an observer that counts outcomes and signals
/// `done` when `expected` recipients have a final outcome.
fn start(config: Config, io_threads: usize, expected: u64) -> Result<Run> {
    let progress = Arc::new(Progress::default());
    let (signal, done) = mpsc::sync_channel(1);
    let counts = Arc::clone(&progress);
    let observer = move |report: Report| {
        let counter = match &report {
            Report::Recipient(record) => match record.outcome.as_str() {
                "delivered" => &counts.delivered,
                "failed" => &counts.failed,
                "unsent" => &counts.unsent,
                "deferred" => &counts.deferred,
                _ => &counts.delivery_unknown,
            },
            Report::ConnectionOpened(_) => {
                counts.opened.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Report::ConnectionClosed(_) => {
                counts.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if counts.finals() == expected {
            let _ = signal.try_send(());
        }
    };
    let mut options = EngineOptions::default();
    options.io_threads = io_threads;
    let engine = Engine::start(config, options, observer).context("starting the engine failed")?;
    Ok(Run {
        engine,
        progress,
        done,
    })
}

/// Builds the configuration for one domain routed to `--server`.
fn config(args: &Args) -> Result<Config> {
    let domain = Domain::new(&args.domain)
        .with_context(|| format!("--domain {:?} is not a valid domain", args.domain))?;
    let mut config = Config {
        engine: EngineLimits {
            max_connections: args.connections.max(1),
            max_connections_per_binding: args.connections.max(1),
            max_connections_per_host: args.connections.max(1),
        },
        ..Config::default()
    };
    let settings = config.domain.entry(domain).or_default();
    settings.route = Some(Route::Addresses(vec![args.server]));
    settings.max_outbound_connections = Some(args.connections);
    settings.max_deliveries_per_connection = Some(args.deliveries_per_connection);
    settings.ehlo_name = Some(EHLO_NAME.to_owned());
    settings.tls = Some(if args.starttls {
        TlsSettings {
            policy: TlsPolicy::Required,
            verify: Some(TlsVerify::Host),
            ca_file: args.ca_file.clone(),
            server_name: args.server_name.clone(),
        }
    } else {
        TlsSettings {
            policy: TlsPolicy::Disabled,
            ..TlsSettings::default()
        }
    });
    Ok(config)
}

/// `count` single-recipient submissions sharing one body.
fn submissions(args: &Args, count: u64) -> Result<Vec<Submission>> {
    let body = Bytes::from(message(args.size));
    let sender = ReversePath::new(SENDER).context("the benchmark sender is invalid")?;
    (0..count)
        .map(|tag| {
            let to = recipient(tag, &args.domain);
            let address =
                Address::new(&to).with_context(|| format!("recipient {to:?} is invalid"))?;
            Ok(Submission {
                tag,
                reverse_path: sender.clone(),
                recipients: vec![address],
                data: body.clone(),
            })
        })
        .collect()
}

fn submit_all(handle: &SchedulerHandle, submissions: Vec<Submission>) -> Result<()> {
    for submission in submissions {
        handle
            .submit(submission)
            .map_err(|error| anyhow::anyhow!("the engine rejected a submission: {error}"))?;
    }
    Ok(())
}

/// Waits for the observer's signal, failing after the time limit.
fn wait_done(run: &Run, args: &Args, what: &str) -> Result<()> {
    let limit = Duration::from_secs(args.time_limit);
    if run.done.recv_timeout(limit).is_err() {
        let progress = &run.progress;
        bail!(
            "{what}: only {} of the recipients had a final outcome after {}s \
             (delivered {}, failed {}, deferred {}); is the server at {} up?",
            progress.finals(),
            limit.as_secs(),
            progress.delivered.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
            progress.deferred.load(Ordering::Relaxed),
            args.server,
        );
    }
    Ok(())
}

fn deliver(args: &Args) -> Result<()> {
    let started = Instant::now();
    let cpu_before = cpu_time()?;
    let run = start(config(args)?, args.io_threads, args.messages)?;
    let batch = submissions(args, args.messages)?;

    let sending = Instant::now();
    submit_all(run.engine.handle(), batch)?;
    wait_done(&run, args, "deliver")?;
    let delivered_after = sending.elapsed();

    let stats = run.engine.shutdown();
    let total = started.elapsed();
    let cpu = cpu_time()? - cpu_before;
    let progress = &run.progress;
    if stats.is_none() {
        bail!("the scheduler thread panicked during the run");
    }
    ResultLine::new("ec")
        .field("mode", "deliver")
        .field("messages", args.messages)
        .field("delivered", progress.delivered.load(Ordering::Relaxed))
        .field("failed", progress.failed.load(Ordering::Relaxed))
        .field("deferred", progress.deferred.load(Ordering::Relaxed))
        .field(
            "delivery_unknown",
            progress.delivery_unknown.load(Ordering::Relaxed),
        )
        .field("connections", progress.opened.load(Ordering::Relaxed))
        .seconds("seconds", delivered_after)
        .seconds("total_seconds", total)
        .seconds("cpu_seconds", cpu)
        .print();
    Ok(())
}

fn hold(args: &Args) -> Result<()> {
    // One descriptor per connection, and some for the runtime, the
    // standard streams and the files read on the way.
    raise_open_files(u64::from(args.connections) + 256)?;
    let mut config = config(args)?;
    config.global.idle_timeout = Some(Duration::from_secs(3_600));
    let count = u64::from(args.connections);
    let run = start(config, args.io_threads, count)?;
    let batch = submissions(args, count)?;

    let before = resident_bytes()?;
    submit_all(run.engine.handle(), batch)?;
    wait_done(&run, args, "hold")?;
    // Let the last sessions return to idle and the runtime settle.
    std::thread::sleep(Duration::from_secs(1));
    let after = resident_bytes()?;

    let open = run.progress.open_connections();
    let idle = run
        .engine
        .handle()
        .stats()
        .map(|stats| stats.ledger.idle)
        .unwrap_or(0);
    let delivered = run.progress.delivered.load(Ordering::Relaxed);
    let _ = run.engine.shutdown();
    if open == 0 {
        bail!("no connection stayed open; cannot measure memory per connection");
    }
    ResultLine::new("ec")
        .field("mode", "hold")
        .field("tls", args.starttls)
        .field("delivered", delivered)
        .field("open", open)
        .field("idle", idle)
        .field("rss_before", before)
        .field("rss_after", after)
        .field(
            "bytes_per_connection",
            after.saturating_sub(before) / u64::from(open),
        )
        .print();
    Ok(())
}

fn queue(args: &Args) -> Result<()> {
    let mut config = config(args)?;
    for settings in config.domain.values_mut() {
        settings.max_outbound_connections = Some(0);
    }
    let run = start(config, args.io_threads, u64::MAX)?;
    let handle = run.engine.handle();
    let sender = ReversePath::new(SENDER).context("the benchmark sender is invalid")?;
    let body = Bytes::from(message(args.size));

    let before = resident_bytes()?;
    let started = Instant::now();
    for tag in 0..args.messages {
        let address = Address::new(&recipient(tag, &args.domain)).context("invalid recipient")?;
        let submission = Submission {
            tag,
            reverse_path: sender.clone(),
            recipients: vec![address],
            data: body.clone(),
        };
        handle
            .submit(submission)
            .map_err(|error| anyhow::anyhow!("the engine rejected a submission: {error}"))?;
    }
    let deadline = started + Duration::from_secs(args.time_limit);
    let queued = loop {
        let stats = handle
            .stats()
            .map_err(|error| anyhow::anyhow!("cannot read the scheduler's stats: {error}"))?;
        if stats.ledger.active >= args.messages || Instant::now() > deadline {
            break stats.ledger.active;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let after = resident_bytes()?;
    let _ = run.engine.shutdown();
    if queued < args.messages {
        bail!(
            "only {queued} of {} messages were queued after {}s",
            args.messages,
            args.time_limit
        );
    }
    ResultLine::new("ec")
        .field("mode", "queue")
        .field("queued", queued)
        .field("rss_before", before)
        .field("rss_after", after)
        .field(
            "bytes_per_message",
            after.saturating_sub(before) / args.messages.max(1),
        )
        .seconds("seconds", elapsed)
        .print();
    Ok(())
}
