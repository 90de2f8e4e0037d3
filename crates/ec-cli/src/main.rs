//! The `ec` binary: parses the command line and runs `ec deliver`, `ec demo`
//! or `ec sink`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use ec_cli::cli::{self, Cli, Command, DeliverArgs, DemoArgs, SinkArgs, Verbosity};
use ec_cli::input::{EnvelopeOverride, Input};
use ec_cli::sink::{Sink, SinkConfig};
use ec_cli::summary::ExitStatus;

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
        Command::Deliver(args) => deliver(args),
        Command::Demo(args) => demo(args),
        Command::Sink(args) => sink(args),
    };
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("ec: {}", error_message(&error));
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
    });
    if usage {
        ExitStatus::Usage
    } else {
        ExitStatus::Software
    }
}

fn deliver(args: DeliverArgs) -> anyhow::Result<ExitStatus> {
    let config = args.config()?;
    let envelope = EnvelopeOverride {
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let input = Input::open(&args.paths, envelope)?;
    tracing::info!(messages = input.len(), "input listed");

    // NOTE: the delivery engine (ec-sched and ec-smtp-client) is not wired in
    // yet; until it is, `ec deliver` checks its options and input and stops.
    let _ = config;
    anyhow::bail!("delivery is not available in this build: the engine is not wired in yet")
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitStatus> {
    let messages = ec_cli::samples::demo_messages(args.messages);
    tracing::info!(messages = messages.len(), "demo messages ready");

    // NOTE: as for `deliver`, the engine is not wired in yet.
    anyhow::bail!("the demo is not available in this build: the engine is not wired in yet")
}

fn sink(args: SinkArgs) -> anyhow::Result<ExitStatus> {
    args.validate()?;
    let config = SinkConfig {
        listen: args.listen,
        allow_non_loopback: args.allow_non_loopback,
        hostname: args.hostname.clone(),
        require_tls: args.require_tls,
        max_message_size: args.max_message_size,
        ..SinkConfig::default()
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let sink = Sink::start(config).await?;
        let _ca_temp_file;
        let ca_path = match &args.ca_out {
            Some(path) => {
                sink.write_ca_file(path)?;
                path.clone()
            }
            None => {
                let temp = sink.write_ca_temp_file()?;
                let path = temp.to_path_buf();
                _ca_temp_file = temp;
                path
            }
        };
        println!(
            "ec sink: SMTP on {}, CA certificate in {}; press Ctrl-C to stop",
            sink.local_addr(),
            ca_path.display()
        );

        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        let stats = sink.shutdown().await;
        println!(
            "ec sink: {} connections ({} TLS), {} messages, {} recipients, {} octets",
            stats.connections,
            stats.tls_handshakes,
            stats.messages,
            stats.recipients,
            stats.message_octets
        );
        Ok(ExitStatus::Success)
    })
}
