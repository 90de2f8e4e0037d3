//! `tls-floor`: the least work a client can do per TLS session against an
//! SMTP server with STARTTLS, in a loop, and one result line.
//!
//! Each session: TCP connect (with `TCP_NODELAY`), read the banner, EHLO,
//! STARTTLS, a rustls handshake that verifies the server's certificate,
//! `close_notify` and FIN, then read until the server closes. No message
//! and no QUIT: a client that sends mail over TLS does all of this and
//! more, so its rate cannot be higher nor its CPU per session lower.
//!
//! It runs on one tokio worker thread (ec's engine also drives its
//! sessions on one), uses ec's crypto provider and cipher suite order, and
//! shares one rustls `ClientConfig`, so TLS session resumption works as it
//! does for ec and lettre.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ec_bench::{cpu_time, ResultLine, EHLO_NAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Command line of `tls-floor`.
#[derive(Debug, Parser)]
#[command(about = "Loop STARTTLS handshakes against a loopback SMTP server")]
struct Args {
    /// The SMTP server, a loopback address and port; it must offer
    /// STARTTLS.
    #[arg(long, value_name = "ADDR:PORT")]
    server: SocketAddr,

    /// Sessions to run.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    sessions: u64,

    /// Sessions at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: u32,

    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,

    /// Name the server's certificate must carry.
    #[arg(long, value_name = "NAME")]
    server_name: String,
}

/// Maximum time one step of a session may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.server.ip().is_loopback() {
        bail!(
            "--server {} is not a loopback address; tls-floor only connects to this machine",
            args.server
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(&args))
}

fn connector(args: &Args) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&args.ca_file)
        .with_context(|| format!("cannot read the CA file {}", args.ca_file.display()))?
    {
        let certificate = certificate
            .with_context(|| format!("{} holds a malformed certificate", args.ca_file.display()))?;
        roots
            .add(certificate)
            .context("the CA certificate is not a usable trust anchor")?;
    }
    // ec's own provider, so the floor's handshake is the one ec does.
    let provider = ec_smtp_client::tls::crypto_provider();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls rejected the protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let cpu_before = cpu_time()?;
    let connector = connector(args)?;
    let name = ServerName::try_from(args.server_name.clone())
        .with_context(|| format!("--server-name {:?} is not a valid name", args.server_name))?;
    let next = Arc::new(AtomicU64::new(0));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let connector = connector.clone();
        let name = name.clone();
        let next = Arc::clone(&next);
        let server = args.server;
        let total = args.sessions;
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                tokio::time::timeout(STEP_TIMEOUT * 4, session(server, &connector, name.clone()))
                    .await
                    .map_err(|_| anyhow::anyhow!("a session to {server} took over 2 minutes"))??;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a session task panicked")??;
    }
    let seconds = started.elapsed();
    let cpu = cpu_time()? - cpu_before;

    ResultLine::new("tls-floor")
        .field("messages", args.sessions)
        .field("delivered", args.sessions)
        .seconds("seconds", seconds)
        .seconds("total_seconds", seconds)
        .seconds("cpu_seconds", cpu)
        .print();
    Ok(())
}

async fn session(
    server: SocketAddr,
    connector: &TlsConnector,
    name: ServerName<'static>,
) -> Result<()> {
    let stream = TcpStream::connect(server)
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);

    expect(&mut reader, "220", "banner").await?;
    reader
        .get_mut()
        .write_all(format!("EHLO {EHLO_NAME}\r\n").as_bytes())
        .await?;
    let ehlo = expect(&mut reader, "250", "EHLO").await?;
    if !ehlo.to_ascii_uppercase().contains("STARTTLS") {
        bail!("{server} does not offer STARTTLS in its EHLO reply");
    }
    reader.get_mut().write_all(b"STARTTLS\r\n").await?;
    expect(&mut reader, "220", "STARTTLS").await?;
    if !reader.buffer().is_empty() {
        bail!("{server} sent data after its 220 to STARTTLS, before the handshake");
    }

    let mut tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, reader.into_inner()))
        .await
        .context("the TLS handshake timed out")?
        .context("the TLS handshake failed")?;
    tls.shutdown()
        .await
        .context("sending close_notify failed")?;
    let mut rest = Vec::new();
    // The server's own close_notify and FIN end the session; a reset after
    // our close_notify is the server's choice and costs us nothing.
    let _ = tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut rest)).await;
    Ok(())
}

/// Reads one reply (all its lines) and checks its code.
async fn expect(reader: &mut BufReader<TcpStream>, code: &str, what: &str) -> Result<String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line))
            .await
            .with_context(|| format!("no reply to {what} within {}s", STEP_TIMEOUT.as_secs()))??;
        if read == 0 {
            bail!("the server closed the connection before replying to {what}");
        }
        if !line.starts_with(code) {
            bail!("expected {code} to {what}, got {:?}", line.trim_end());
        }
        reply.push_str(&line);
        // The last line of a reply has a space (or nothing) after the code.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(reply);
        }
    }
}
