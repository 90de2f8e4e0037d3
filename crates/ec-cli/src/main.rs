//! The `ec` binary: parses the command line and runs `ec deliver`, `ec demo`
//! or `ec sink`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use ec_cli::cli::{self, Cli, Command, DeliverArgs, DemoArgs, SinkArgs, Verbosity};
use ec_cli::delivery_log::{self, DeliveryLogWriter};
use ec_cli::input::{EnvelopeOverride, Input, Loaded};
use ec_cli::progress::{Progress, Visibility};
use ec_cli::run::{self, RunPlan};
use ec_cli::signals;
use ec_cli::sink::{Sink, SinkConfig, SinkStats};
use ec_cli::summary::{ExitStatus, SummaryTable};
use ec_metrics::{Exporter, ExporterConfig};
use ec_types::{Config, Route, TlsPolicy, TlsSettings, TlsVerify};
use tokio::signal::unix::SignalKind;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(cli::clap_exit_status(&error));
        }
    };
    init_tracing(cli.verbosity);

    let result = match cli.command {
        Command::Deliver(args) => deliver(args, cli.verbosity),
        Command::Demo(args) => demo(args, cli.verbosity),
        Command::Sink(args) => sink(args),
    };
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            ec_cli::errln!("ec: {}", error_message(&error));
            error_status(&error).into()
        }
    }
}

fn init_tracing(verbosity: Verbosity) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(verbosity.filter_directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // By default a failed write is reported with eprintln!, which
        // panics the logging thread when standard error is closed.
        .log_internal_errors(false)
        .init();
}

/// The error and its causes on one line. The typed errors of `ec_cli` put
/// their cause into their own message, before the advice on what to do, so
/// a cause whose text is already there is not repeated.
fn error_message(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// Usage errors exit with 64; anything else that stops a run before its
/// outcomes are known is a software error (70).
fn error_status(error: &anyhow::Error) -> ExitStatus {
    let usage = error.chain().any(|cause| {
        cause.is::<cli::UsageError>()
            || cause.is::<ec_cli::input::InputError>()
            || cause.is::<ec_cli::delivery_log::LogError>()
            || cause.is::<ec_metrics::MetricsError>()
            || cause.is::<ec_types::ConfigError>()
            || cause
                .downcast_ref::<ec_cli::sink::SinkError>()
                .is_some_and(sink_usage_error)
    });
    if usage {
        ExitStatus::Usage
    } else {
        ExitStatus::Software
    }
}

/// Returns whether a sink error comes from the options given: a listen address
/// that is not loopback or cannot be bound, or an inconsistent setting.
fn sink_usage_error(error: &ec_cli::sink::SinkError) -> bool {
    use ec_cli::sink::SinkError;
    matches!(
        error,
        SinkError::NotLoopback(_) | SinkError::Config(_) | SinkError::Bind { .. }
    )
}

fn deliver(args: DeliverArgs, verbosity: Verbosity) -> anyhow::Result<ExitStatus> {
    let mut config = args.config()?;
    config.validate()?;
    run::check_can_send(&config, args.config.as_deref())?;
    if let Some(window) = args.retry_for {
        run::retry_defaults(&mut config, window);
    }
    let resume = match (&args.log, args.resume) {
        (Some(path), true) => Some(delivery_log::read_resume_set(path)?),
        _ => None,
    };

    let envelope = EnvelopeOverride {
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let input = Input::open(&args.paths, envelope)?;
    let (mut messages, mut invalid) = (Vec::new(), Vec::new());
    for loaded in input {
        match loaded {
            Loaded::Message(message) => messages.push(message),
            Loaded::Invalid(bad) => invalid.push(bad),
        }
    }
    warn_direct_domains(&run::direct_domains(&config, &messages));
    if let Some(resume) = &resume {
        run::check_resume_matches(resume, &messages, &invalid)?;
        let before = messages.len();
        run::skip_final(&mut messages, &mut invalid, resume);
        tracing::info!(
            skipped = before - messages.len(),
            "resuming from the delivery log"
        );
    }

    let _exporter = match args.metrics_listen {
        Some(address) => Some(Exporter::install(ExporterConfig::listen_on(address))?),
        None => None,
    };
    let log = args
        .log
        .as_deref()
        .map(DeliveryLogWriter::open)
        .transpose()?;
    let stop = signals::stop_flag()?;
    let progress = Progress::new(messages.len() as u64, Visibility::detect(verbosity.quiet));

    let plan = RunPlan {
        config,
        messages,
        invalid,
        retry_for: args.retry_for,
        stop: stop.clone(),
    };
    let outcome = run::run(plan, log, &progress)?;
    progress.finish();
    if let Some(failure) = &outcome.log_failure {
        print_log_failure(failure);
    }
    ec_cli::out!("{}", SummaryTable(&outcome.totals));

    if outcome.log_failure.is_some() {
        return Ok(ExitStatus::LogWriteFailed);
    }
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(ExitStatus::TempFail);
    }
    Ok(outcome.totals.exit_status())
}

fn demo(args: DemoArgs, verbosity: Verbosity) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    let sink_config = SinkConfig {
        listen: "127.0.0.1:0".parse()?,
        hostname: "localhost".to_owned(),
        require_tls: true,
        ..SinkConfig::default()
    };
    let sink = runtime.block_on(Sink::start(sink_config))?;
    let ca_file = sink.write_ca_temp_file()?;
    let address = sink.local_addr();
    // With `--quiet` only errors and the summary table are printed: no
    // banner, sink figures, metrics or log record.
    let chatty = !verbosity.quiet;
    if chatty {
        ec_cli::outln!("ec demo: built-in SMTP sink on {address} (STARTTLS required, certificate from a CA made at start-up)");
    }

    let messages = ec_cli::samples::demo_messages(args.messages);
    let mut config = Config::default();
    config.global.route = Some(Route::Relay {
        host: address.ip().to_string(),
        port: address.port(),
    });
    config.global.max_outbound_connections = Some(args.connections);
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(TlsVerify::Host),
        ca_file: Some(ca_file.to_path_buf()),
        server_name: Some("localhost".to_owned()),
    });

    let keep_log = args.log.is_some();
    let log_path = args.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ec-demo-{}.jsonl", std::process::id()))
    });
    let log = DeliveryLogWriter::open(&log_path)?;
    let exporter = Exporter::install(ExporterConfig::without_listener())?;
    let stop = signals::stop_flag()?;
    let progress = Progress::new(messages.len() as u64, Visibility::detect(verbosity.quiet));
    if chatty {
        ec_cli::outln!(
            "ec demo: delivering {} messages to {} recipients each, TLS required, verified against the sink's CA",
            messages.len(),
            ec_cli::samples::DEMO_RECIPIENTS.len()
        );
    }

    let plan = RunPlan {
        config,
        messages,
        invalid: Vec::new(),
        retry_for: None,
        stop,
    };
    let outcome = run::run(plan, Some(log), &progress)?;
    progress.finish();
    if let Some(failure) = &outcome.log_failure {
        print_log_failure(failure);
    }
    let totals = outcome.totals;
    let sink_stats = runtime.block_on(sink.shutdown());

    ec_cli::out!("{}", SummaryTable(&totals));
    if chatty {
        print_demo_details(&sink_stats, &exporter.render());
        if keep_log {
            ec_cli::outln!("delivery log: {}", log_path.display());
        } else {
            print_sample_record(&log_path);
        }
    }
    if !keep_log {
        if let Err(error) = std::fs::remove_file(&log_path) {
            ec_cli::errln!(
                "ec demo: failed to remove the temporary delivery log {}: {error}",
                log_path.display()
            );
        }
    }
    if outcome.log_failure.is_some() {
        return Ok(ExitStatus::LogWriteFailed);
    }
    Ok(totals.exit_status())
}

/// Prints, after a failed delivery log write, what the log lacks: the
/// final outcomes as log lines to append to it, so that `--resume` does
/// not send those recipients again, and the count of the others.
fn print_log_failure(failure: &run::LogFailure) {
    let finals = failure.unrecorded_final.len();
    ec_cli::errln!(
        "ec: {finals} final outcomes (delivered, failed, invalid input) and {} others are not \
         in the delivery log, because the run stopped at its first failed write",
        failure.unrecorded_other
    );
    if finals == 0 {
        return;
    }
    ec_cli::errln!(
        "ec: append these {finals} lines to the log once it can be written, or --resume sends \
         those recipients again:"
    );
    for record in &failure.unrecorded_final {
        match serde_json::to_string(record) {
            Ok(line) => ec_cli::errln!("{line}"),
            Err(error) => ec_cli::errln!("ec: cannot print a log record: {error}"),
        }
    }
}

/// Warns about recipient domains whose mail goes to their MX hosts, so that
/// a run meant for a relay or a test server does not reach the Internet
/// unnoticed.
fn warn_direct_domains(direct: &[ec_types::Domain]) {
    const SHOWN: usize = 3;
    if direct.is_empty() {
        return;
    }
    let mut names: Vec<&str> = direct.iter().take(SHOWN).map(|d| d.as_str()).collect();
    if direct.len() > SHOWN {
        names.push("...");
    }
    tracing::warn!(
        domains = direct.len(),
        "no --relay or route covers {} recipient domain(s) ({}): ec delivers their mail to \
         their MX hosts directly; give --relay or a route in --config to send it elsewhere",
        direct.len(),
        names.join(", ")
    );
}

/// Prints what the sink received and a few of the Prometheus series.
fn print_demo_details(sink_stats: &SinkStats, rendered: &str) {
    ec_cli::outln!(
        "sink         received {} messages for {} recipients over {} connections ({} with TLS), \
         {} of them as BDAT chunks",
        sink_stats.messages,
        sink_stats.recipients,
        sink_stats.connections,
        sink_stats.tls_handshakes,
        sink_stats.chunked_messages
    );
    ec_cli::outln!(
        "metrics (a few of the Prometheus series; `ec deliver --metrics-listen` serves them all):"
    );
    let lines = demo_metric_lines(rendered);
    if lines.is_empty() {
        ec_cli::outln!("  (none of these series was recorded)");
    }
    for line in lines {
        ec_cli::outln!("  {line}");
    }
}

/// Prints the first record of the demo's temporary delivery log, and how to
/// keep the whole log.
fn print_sample_record(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let records = text.lines().count();
    ec_cli::outln!("delivery log: {records} records, one per recipient (`ec demo --log FILE` keeps them); the first:");
    if let Some(first) = text.lines().next() {
        ec_cli::outln!("  {first}");
    }
}

/// The exposition lines the demo prints: totals of connections and message
/// fates, without comments, sorted so that every run prints them in the
/// same order.
fn demo_metric_lines(text: &str) -> Vec<&str> {
    const SHOWN: [&str; 4] = [
        "ec_connections_opened_total",
        "ec_connections_closed_total",
        "ec_message_fates_total",
        "ec_tls_handshakes_total",
    ];
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| SHOWN.iter().any(|name| line.starts_with(name)))
        .collect();
    lines.sort_unstable();
    lines.truncate(12);
    lines
}

fn sink(args: SinkArgs) -> anyhow::Result<ExitStatus> {
    args.validate()?;
    let config = SinkConfig {
        listen: args.listen,
        allow_non_loopback: args.allow_non_loopback,
        hostname: args.hostname.clone(),
        require_tls: args.require_tls,
        implicit_tls: args.implicit_tls,
        max_message_size: args.max_message_size,
        chunking: !args.no_chunking,
        ..SinkConfig::default()
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let sink = Sink::start(config).await?;
        let _ca_temp_file;
        let ca_path = match &args.ca_out {
            Some(path) => {
                sink.write_ca_file(path).map_err(|error| {
                    anyhow::anyhow!(
                        "{error}; check that the directory of --ca-out exists and is writable"
                    )
                })?;
                path.clone()
            }
            None => {
                let temp = sink.write_ca_temp_file()?;
                let path = temp.to_path_buf();
                _ca_temp_file = temp;
                path
            }
        };
        ec_cli::outln!(
            "ec sink: SMTP on {}, CA certificate in {}; press Ctrl-C to stop",
            sink.local_addr(),
            ca_path.display()
        );

        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot wait for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
        let stats = sink.shutdown().await;
        ec_cli::outln!(
            "ec sink: {} connections ({} TLS), {} messages ({} as BDAT chunks), {} recipients, {} octets",
            stats.connections,
            stats.tls_handshakes,
            stats.messages,
            stats.chunked_messages,
            stats.recipients,
            stats.message_octets
        );
        Ok(ExitStatus::Success)
    })
}
