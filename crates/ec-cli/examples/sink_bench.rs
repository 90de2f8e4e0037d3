//! Measures the built-in SMTP sink's throughput with a simple pipelined
//! client over loopback, in clear text or over STARTTLS.
//!
//! ```text
//! cargo run --release -p ec-cli --example sink_bench -- --connections 8 --messages 40000 --tls
//! ```
//!
//! Each connection sends its share of the messages, one transaction each:
//! MAIL, RCPT and DATA in one write, then the body and the final dot in one
//! write, so every message costs two round trips, as with Postfix's
//! smtp-source. It prints one line of `key=value` pairs. Client and sink
//! share the machine's cores, so the figure is the pair's, not the sink's
//! alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ec_cli::sink::{Sink, SinkConfig};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
struct Options {
    /// Client connections, each on its own task.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 40_000)]
    messages: usize,
    /// Message size in octets.
    #[arg(long, default_value_t = 1_024)]
    size: usize,
    /// Use STARTTLS, verifying the sink's certificate.
    #[arg(long)]
    tls: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let sink = Sink::start(SinkConfig::default()).await?;
    let connector = tls_connector(&sink)?;
    let body = Arc::new(message_body(options.size));

    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..options.connections {
        let share = options.messages / options.connections
            + usize::from(index < options.messages % options.connections);
        let address = sink.local_addr();
        let connector = options.tls.then(|| connector.clone());
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let mut client = BufReader::new(tcp);
            expect(&mut client, b'2').await?;
            client.write_all(b"EHLO bench.ec.test\r\n").await?;
            expect(&mut client, b'2').await?;
            match connector {
                Some(connector) => {
                    client.write_all(b"STARTTLS\r\n").await?;
                    expect(&mut client, b'2').await?;
                    let name = ServerName::try_from("localhost")?;
                    let tls = connector.connect(name, client.into_inner()).await?;
                    let mut client = BufReader::new(tls);
                    client.write_all(b"EHLO bench.ec.test\r\n").await?;
                    expect(&mut client, b'2').await?;
                    send_messages(&mut client, share, &body).await
                }
                None => send_messages(&mut client, share, &body).await,
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();

    let stats = sink.shutdown().await;
    anyhow::ensure!(
        stats.messages == options.messages as u64,
        "the sink counted {} messages, expected {}",
        stats.messages,
        options.messages
    );
    print_result(&options, elapsed);
    Ok(())
}

async fn send_messages<S>(
    client: &mut BufReader<S>,
    count: usize,
    body: &[u8],
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for _ in 0..count {
        client
            .write_all(b"MAIL FROM:<bench@ec.test>\r\nRCPT TO:<sink@demo.test>\r\nDATA\r\n")
            .await?;
        client.flush().await?;
        for _ in 0..2 {
            expect(client, b'2').await?;
        }
        expect(client, b'3').await?;
        client.write_all(body).await?;
        client.flush().await?;
        expect(client, b'2').await?;
    }
    client.write_all(b"QUIT\r\n").await?;
    client.flush().await?;
    expect(client, b'2').await
}

/// Reads one whole reply and checks its first digit.
async fn expect<S>(client: &mut BufReader<S>, class: u8) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(
            client.read_line(&mut line).await? > 0,
            "sink closed the connection"
        );
        anyhow::ensure!(line.as_bytes()[0] == class, "unexpected reply {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            return Ok(());
        }
    }
}

/// A message of `size` octets in 76-octet lines, ending with CRLF "." CRLF.
fn message_body(size: usize) -> Vec<u8> {
    let mut body = b"Subject: bench\r\n\r\n".to_vec();
    while body.len() + 78 <= size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

fn tls_connector(sink: &Sink) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.add(sink.ca_der().clone())?;
    let provider = ec_smtp_client::tls::crypto_provider();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn print_result(options: &Options, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "sink_bench tls={} connections={} messages={} size={} seconds={:.3} messages_per_second={:.0}",
        u8::from(options.tls),
        options.connections,
        options.messages,
        options.size,
        seconds,
        options.messages as f64 / seconds
    );
}
