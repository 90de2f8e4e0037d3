//! Scheduler benchmarks, in virtual time with the test harness's fake
//! driver (no sockets):
//!
//! - `open_release`: the scheduler-side cost of one connection's life
//!   (submit, open, connected, ready, one delivery, close, closed) with 10,
//!   10,000 and 100,000 domains × 4 bindings, each binding × domain holding
//!   a deferred message, so every table and the timer map are populated.
//!   The cost must not grow with the number of domains.
//! - `queued_memory`: resident memory per queued message with 1,000,000
//!   single-recipient messages queued over 1,000 domains.
//!
//! Each case prints one line of `key=value` pairs, medians over the
//! repetitions. Run in release mode:
//!
//! ```text
//! cargo run --release -p ec-sched --example sched_bench [--quick]
//! ```
//!
//! `--quick` runs smaller cases for a smoke test; `--domains N` runs only
//! the connection case with N domains, `--hot` or `--spread` only that
//! pattern, and `--cycles N` sets the connections per repetition.
//! `--metrics` installs the Prometheus recorder first, so every recording
//! call the scheduler makes lands in a real registry. Without it they go
//! to the `metrics` crate's no-op recorder. Each line names the recorder.

use std::fmt::{self, Write};
use std::time::{Duration, Instant};

use ec_sched::testing::Harness;
use ec_sched::SchedulerOptions;
use ec_types::{
    BindingSlot, CloseOutcome, CloseReason, Config, ConnectionHandle, EngineLimits, ReplyCode,
    Settings,
};

const BINDINGS: u16 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|index| args.get(index + 1))
            .map(|text| text.parse::<usize>().expect("a number after the option"))
    };
    let only_domains = value("--domains");
    let recorder = if args.iter().any(|arg| arg == "--metrics") {
        ec_metrics::Exporter::install(ec_metrics::ExporterConfig::without_listener())
            .expect("the benchmark installs the recorder once");
        "prometheus"
    } else {
        "none"
    };

    // First, while the process heap is fresh: freed memory of later cases
    // would be reused and hide the growth.
    if only_domains.is_none() {
        let queued = if quick { 100_000 } else { 1_000_000 };
        queued_memory(queued, 1_000, recorder);
    }

    let domain_counts: Vec<usize> = match only_domains {
        Some(domains) => vec![domains],
        None if quick => vec![10, 1_000],
        None => vec![10, 10_000, 100_000],
    };
    let cycles = value("--cycles").unwrap_or(if quick { 200 } else { 20_000 });
    let repetitions = if quick { 5 } else { 15 };
    let hot_only = args.iter().any(|arg| arg == "--hot");
    let spread_only = args.iter().any(|arg| arg == "--spread");
    for domains in domain_counts {
        for pattern in [Pattern::Spread, Pattern::Hot] {
            let skip = match pattern {
                Pattern::Spread => hot_only,
                Pattern::Hot => spread_only,
            };
            if skip {
                continue;
            }
            open_release(domains, pattern, cycles, repetitions, recorder);
        }
    }
}

/// The choice of domains for the measured connections.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// Every domain in turn (a large stride), so each connection touches a
    /// domain whose data is likely out of the CPU caches: this includes
    /// memory latency, which grows with the table.
    Spread,
    /// The same 10 domains, so the data stays in cache and only the
    /// algorithmic cost of the larger tables remains.
    Hot,
}

impl Pattern {
    fn domains_touched(self, domains: usize) -> usize {
        match self {
            Self::Spread => domains,
            Self::Hot => domains.min(10),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Hot => "hot10",
        }
    }
}

fn options() -> SchedulerOptions {
    SchedulerOptions {
        audit_interval: None,
        ..SchedulerOptions::default()
    }
}

fn config() -> Config {
    let mut config = Config {
        engine: EngineLimits {
            max_connections: 1_000_000,
            max_connections_per_binding: 1_000_000,
            max_connections_per_host: 64,
        },
        global: Settings {
            idle_timeout: Some(Duration::from_secs(3_600)),
            ..Settings::default()
        },
        ..Config::default()
    };
    config.global.retry.interval = Some(Duration::from_secs(3_600));
    config
}

/// The name of domain number `.0`. The number is zero-padded so that
/// every name has the same length in every case, and parsing a recipient
/// costs the same with 10 domains as with 100,000.
struct DomainName(usize);

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{:06}.example", self.0)
    }
}

/// Runs one connection through its whole life for a binding × domain
/// whose lane has a deferred message, delivering `code` to the new one.
/// The recipient address is written into `address`, whose buffer is
/// reused. Afterwards the harness drops the connection's records and
/// session log, as a real observer would consume them, so that nothing
/// per connection piles up during a repetition.
fn cycle(
    harness: &mut Harness,
    address: &mut String,
    binding: BindingSlot,
    domain_index: usize,
    tag: u64,
    code: ReplyCode,
) {
    address.clear();
    write!(address, "u{tag}@{}", DomainName(domain_index)).expect("writing to a String");
    harness.submit_to(binding, tag, &[address.as_str()]);
    let handle: ConnectionHandle = *harness.opened().last().expect("a connection opened");
    harness.connected(handle);
    harness.ready(handle);
    harness.deliver(handle, code);
    let _ = harness.close(handle, CloseReason::Requested);
    harness.closed(handle, CloseOutcome::Clean);
    harness.clear_reports();
    harness.forget(handle);
}

fn populate(harness: &mut Harness, domains: usize) {
    let bindings: Vec<BindingSlot> = (0..BINDINGS).map(BindingSlot).collect();
    let deferred = ReplyCode::new(451).expect("valid code");
    let mut address = String::new();
    let mut tag = 0;
    for index in 0..domains {
        for binding in &bindings {
            tag += 1;
            cycle(harness, &mut address, *binding, index, tag, deferred);
        }
        if index % 1_000 == 999 {
            harness.clear_reports();
            harness.forget_released();
        }
    }
    harness.clear_reports();
    harness.forget_released();
}

/// The position of the measured connections in their sequence.
struct Cursor {
    tag: u64,
    next: usize,
    address: String,
}

/// Runs the timed connections of one repetition. Kept out of line so a
/// profiler can select the measured part by this name, e.g. callgrind's
/// `--toggle-collect='*measured_cycles*'`.
#[inline(never)]
fn measured_cycles(
    harness: &mut Harness,
    domains: usize,
    pattern: Pattern,
    cycles: usize,
    cursor: &mut Cursor,
) {
    for _ in 0..cycles {
        cursor.tag += 1;
        cursor.next = (cursor.next + 7_919) % pattern.domains_touched(domains);
        let binding = BindingSlot((cursor.tag % u64::from(BINDINGS)) as u16);
        let (tag, next) = (cursor.tag, cursor.next);
        cycle(
            harness,
            &mut cursor.address,
            binding,
            next,
            tag,
            ReplyCode::OK,
        );
    }
}

fn open_release(
    domains: usize,
    pattern: Pattern,
    cycles: usize,
    repetitions: usize,
    recorder: &str,
) {
    let mut harness = Harness::with_options(config(), options());
    for index in 1..BINDINGS {
        harness
            .register_binding(&format!("b{index}"))
            .expect("new binding");
    }
    let setup = Instant::now();
    populate(&mut harness, domains);
    let setup = setup.elapsed();
    let delayed = harness.scheduler().ledger().delayed;
    assert_eq!(delayed, (domains * BINDINGS as usize) as u64);

    let mut samples = Vec::with_capacity(repetitions);
    let mut cursor = Cursor {
        tag: 1_000_000_000,
        next: 0,
        address: String::new(),
    };
    for _ in 0..repetitions {
        let start = Instant::now();
        measured_cycles(&mut harness, domains, pattern, cycles, &mut cursor);
        samples.push(start.elapsed().as_nanos() as f64 / cycles as f64);
        harness.clear_reports();
        harness.forget_released();
    }
    harness
        .audit()
        .expect("accounting holds after the benchmark");

    samples.sort_by(f64::total_cmp);
    println!(
        "bench=open_release recorder={recorder} domains={domains} bindings={BINDINGS} pattern={} \
         cycles={cycles} reps={repetitions} median_ns={:.0} min_ns={:.0} max_ns={:.0} setup_s={:.2} pending_timers={}",
        pattern.name(),
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        setup.as_secs_f64(),
        harness.stats().pending_timers,
    );
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on the x86-64 and most aarch64 Linux systems
    // this runs on.
    Some(pages * 4_096)
}

fn queued_memory(messages: usize, domains: usize, recorder: &str) {
    let mut config = config();
    // No connection ever opens, so every message stays queued.
    config.global.max_outbound_connections = Some(0);
    let mut harness = Harness::with_options(config, options());
    // Warm up the domain table so it is not counted per message.
    for index in 0..domains {
        harness.submit_to(BindingSlot(0), 0, &[&format!("warm@{}", DomainName(index))]);
    }

    let before = resident_bytes();
    let start = Instant::now();
    for tag in 0..messages as u64 {
        let index = tag as usize % domains;
        harness.submit_to(
            BindingSlot(0),
            tag,
            &[&format!("user{tag}@{}", DomainName(index))],
        );
    }
    let elapsed = start.elapsed();
    let after = resident_bytes();
    assert_eq!(
        harness.scheduler().ledger().active,
        (messages + domains) as u64
    );

    let per_message = match (before, after) {
        (Some(before), Some(after)) => format!(
            "{:.0}",
            after.saturating_sub(before) as f64 / messages as f64
        ),
        _ => "unavailable".to_owned(),
    };
    println!(
        "bench=queued_memory recorder={recorder} messages={messages} domains={domains} bytes_per_message={per_message} \
         submit_ns={:.0}",
        elapsed.as_nanos() as f64 / messages as f64,
    );
}
