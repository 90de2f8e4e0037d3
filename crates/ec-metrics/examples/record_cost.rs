//! Measures what a recording call costs, in nanoseconds per call, with no
//! recorder and then with the exporter's recorder installed.
//!
//! Run it optimized: `cargo run --release -p ec-metrics --example record_cost`.
//! The calls run on one thread, so the figures leave out contention between
//! threads that record the same series at once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ec_metrics::{BindingLabels, DomainLabels, Exporter, ExporterConfig};
use ec_types::{CloseOutcome, CloseReason, Domain, MessageFate, ReplyClass, Stage};

const CALLS: u32 = 2_000_000;

/// Runs `call` [`CALLS`] times after a warm-up and prints the mean cost.
fn measure(name: &str, mut call: impl FnMut()) {
    for _ in 0..CALLS / 10 {
        call();
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        call();
    }
    let per_call = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
    println!("{name:<58} {per_call:>7.1} ns");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bindings = BindingLabels::new(["default"]);
    let binding = bindings.get("default").ok_or("binding not configured")?;
    let mut domains = DomainLabels::new([], 100);
    let domain = domains.label(&Domain::new("example.com")?);
    let example_com = Domain::new("example.com")?;

    println!("no recorder installed:");
    measure("  message_fate (binding, domain, fate)", || {
        ec_metrics::message_fate(
            black_box(&binding),
            black_box(&domain),
            MessageFate::Delivered,
        )
    });

    let exporter = Exporter::install(ExporterConfig::without_listener())?;
    println!("Prometheus recorder installed:");
    measure("  close_notify_sent (counter, no labels)", || {
        ec_metrics::close_notify_sent()
    });
    measure("  reply (counter, 2 static labels)", || {
        ec_metrics::reply(black_box(Stage::Rcpt), ReplyClass::PositiveCompletion)
    });
    measure("  message_fate (counter, binding + domain + fate)", || {
        ec_metrics::message_fate(
            black_box(&binding),
            black_box(&domain),
            MessageFate::Delivered,
        )
    });
    measure("  recipients (counter, binding + domain + result)", || {
        ec_metrics::recipients(
            black_box(&binding),
            black_box(&domain),
            ec_metrics::RecipientResult::Delivered,
            1,
        )
    });
    measure("  connection_opened + connection_closed (5 series)", || {
        ec_metrics::connection_opened(black_box(&binding), black_box(&domain));
        ec_metrics::connection_closed(
            black_box(&binding),
            black_box(&domain),
            CloseReason::IdleTimeout,
            CloseOutcome::Clean,
            Duration::from_millis(250),
        );
    });
    let series = ec_metrics::DomainSeries::new(&binding, &domain);
    measure("  DomainSeries::message_fate (registered handle)", || {
        black_box(&series).message_fate(MessageFate::Delivered)
    });
    measure("  DomainSeries::connection_opened + _closed", || {
        black_box(&series).connection_opened();
        series.connection_closed(
            CloseReason::IdleTimeout,
            CloseOutcome::Clean,
            Duration::from_millis(250),
        );
    });
    measure("  scheduler_loop_lag (histogram, no labels)", || {
        ec_metrics::scheduler_loop_lag(black_box(Duration::from_micros(7)))
    });
    measure("  DomainLabels::label (admitted domain)", || {
        black_box(domains.label(black_box(&example_com)));
    });

    let rendered = exporter.render();
    println!(
        "rendered {} bytes in {} lines",
        rendered.len(),
        rendered.lines().count()
    );
    Ok(())
}
