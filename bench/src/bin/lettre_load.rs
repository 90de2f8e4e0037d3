//! `lettre-load`: sends messages through lettre's async SMTP transport on
//! tokio, as an application using lettre would, and prints one result
//! line.
//!
//! `--pool N` runs N tasks that share one transport whose pool keeps up to
//! N connections, so at most N connections are open, as with ec's
//! `max_outbound_connections`. lettre checks a pooled connection with NOOP
//! before reusing it, and it sends each command only after the previous
//! reply. Both are lettre's published behaviour, so they stay.
//! `--churn` sets the pool's size to 0: every message gets its own
//! connection, which lettre ends with QUIT after the message.
//!
//! lettre does not set `TCP_NODELAY`; `cargo xtask bench` measures it
//! with and without an `LD_PRELOAD` shim that sets it at `connect`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ec_bench::{cpu_time, message, recipient, ResultLine, EHLO_NAME, SENDER};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// Command line of `lettre-load`.
#[derive(Debug, Parser)]
#[command(about = "Send messages through lettre's pooled async SMTP transport")]
struct Args {
    /// The SMTP server, a loopback address and port.
    #[arg(long, value_name = "ADDR:PORT")]
    server: SocketAddr,

    /// Messages to send, one recipient each.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    messages: u64,

    /// Size of each message in octets.
    #[arg(long, value_name = "OCTETS", default_value_t = 1_024)]
    size: usize,

    /// Concurrent senders, and the pool's maximum size.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pool: u32,

    /// One connection per message: the pool keeps no connection.
    #[arg(long)]
    churn: bool,

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

    /// Worker threads of the tokio runtime; 0 takes tokio's default (one
    /// per core), as `#[tokio::main]` does.
    #[arg(long, value_name = "N", default_value_t = 0)]
    worker_threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.server.ip().is_loopback() {
        bail!(
            "--server {} is not a loopback address; lettre-load only sends to this machine",
            args.server
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        builder.worker_threads(args.worker_threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(&args))
}

fn transport(args: &Args) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = if args.starttls {
        let (Some(ca_file), Some(name)) = (&args.ca_file, &args.server_name) else {
            bail!("--starttls needs --ca-file and --server-name");
        };
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("cannot read the CA file {}", ca_file.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("{} holds no usable certificate", ca_file.display()))?;
        let parameters = TlsParameters::builder(name.clone())
            .add_root_certificate(certificate)
            .build_rustls()
            .context("lettre rejected the TLS parameters")?;
        Tls::Required(parameters)
    } else {
        Tls::None
    };
    let pool_size = if args.churn { 0 } else { args.pool };
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(args.server.ip().to_string())
            .port(args.server.port())
            .hello_name(ClientId::Domain(EHLO_NAME.to_owned()))
            .tls(tls)
            .timeout(Some(Duration::from_secs(60)))
            .pool_config(PoolConfig::new().max_size(pool_size))
            .build(),
    )
}

async fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let cpu_before = cpu_time()?;
    let transport = Arc::new(transport(args)?);
    let body: Arc<[u8]> = message(args.size).into();
    let sender: Address = SENDER.parse().context("the benchmark sender is invalid")?;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::OnceLock::new());

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.pool.max(1) {
        let transport = Arc::clone(&transport);
        let body = Arc::clone(&body);
        let sender = sender.clone();
        let next = Arc::clone(&next);
        let failed = Arc::clone(&failed);
        let first_error = Arc::clone(&first_error);
        let domain = args.domain.clone();
        let total = args.messages;
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let to: Address = match recipient(index, &domain).parse() {
                    Ok(to) => to,
                    Err(error) => {
                        let _ = first_error.set(format!("invalid recipient: {error}"));
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let result = match Envelope::new(Some(sender.clone()), vec![to]) {
                    Ok(envelope) => transport
                        .send_raw(&envelope, &body)
                        .await
                        .map(|_| ())
                        .map_err(|error| error.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = result {
                    let _ = first_error.set(error);
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a sending task panicked")?;
    }
    let sent_after = started.elapsed();
    transport.shutdown().await;
    let total = started.elapsed();
    let cpu = cpu_time()? - cpu_before;

    let failed = failed.load(Ordering::Relaxed);
    if let Some(error) = first_error.get() {
        eprintln!("lettre-load: {failed} messages failed; first error: {error}");
    }
    ResultLine::new("lettre")
        .field("messages", args.messages)
        .field("delivered", args.messages - failed)
        .field("failed", failed)
        .field("churn", args.churn)
        .seconds("seconds", sent_after)
        .seconds("total_seconds", total)
        .seconds("cpu_seconds", cpu)
        .print();
    if failed > 0 {
        bail!("{failed} of {} messages failed", args.messages);
    }
    Ok(())
}
