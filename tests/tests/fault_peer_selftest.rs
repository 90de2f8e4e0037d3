//! Proves the fault peer: a minimal client written here drives each fault, checks
//! that it really happens on the wire, and checks that the peer's record matches
//! what the client did. A failure here is a bug in the peer, not in ec.

use std::io::{self, Read as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use ec_tests::fault_peer::{
    tls, Capabilities, ClientEnd, Close, Event, FaultPeer, FaultPeerError, Response, Scenario,
    TcpEnd, Verb,
};
use ec_tests::pki::{LeafProfile, TestCa, DEFAULT_NAMES};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Every client step and every wait for the peer ends within this.
const STEP: Duration = Duration::from_secs(10);

/// How long a client waits to conclude that nothing is coming.
const QUIET: Duration = Duration::from_millis(300);

/// A minimal SMTP client: writes commands, reads whole replies, keeps what it read
/// past the last reply.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    async fn connect(peer: &FaultPeer) -> Result<Self> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(peer.addr())).await??;
        Ok(Self::new(tcp))
    }

    /// Starts TLS on the connection, as the client, for `mx.ec.test`.
    async fn start_tls(self, ca: &TestCa) -> Result<Client<TlsStream<TcpStream>>> {
        ensure!(self.buf.is_empty(), "bytes after the 220: {:?}", self.buf);
        let tls = handshake(ca, self.stream).await?;
        Ok(Client::new(tls))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(STEP, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await??;
        Ok(())
    }

    /// Reads one complete reply (every line up to the one with a space after its code).
    async fn reply(&mut self) -> Result<String> {
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply = self.buf.drain(..end).collect::<Vec<_>>();
                return Ok(String::from_utf8(reply)?);
            }
            let n = self.read_more(STEP).await?;
            ensure!(
                n > 0,
                "the peer closed before a whole reply: {:?}",
                self.buf
            );
        }
    }

    async fn command(&mut self, line: &str) -> Result<String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Reads once into the buffer; 0 means end of stream.
    async fn read_more(&mut self, limit: Duration) -> Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(limit, self.stream.read(&mut chunk))
            .await
            .context("the peer sent nothing in time")??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until end of stream; returns everything not yet taken as a reply.
    async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let read = tokio::time::timeout(STEP, self.stream.read_to_end(&mut self.buf)).await;
        read.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no end of stream"))??;
        Ok(std::mem::take(&mut self.buf))
    }

    /// Whether the peer stays silent for [`QUIET`].
    async fn stays_quiet(&mut self) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(QUIET, self.stream.read(&mut byte))
            .await
            .is_err()
    }

    /// The opening of a session: banner and `EHLO`; returns the `EHLO` reply.
    async fn greet(&mut self) -> Result<String> {
        let banner = self.reply().await?;
        ensure!(banner.starts_with("220 "), "banner: {banner}");
        self.command("EHLO client.ec.test").await
    }
}

fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(newline) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + newline + 1];
        start += newline + 1;
        if line.get(3) != Some(&b'-') {
            return Some(start);
        }
    }
    None
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    ca: &TestCa,
    stream: S,
) -> Result<TlsStream<S>> {
    let connector = TlsConnector::from(ca.client_config()?);
    let name = ServerName::try_from("mx.ec.test")?;
    let tls = tokio::time::timeout(STEP, connector.connect(name, stream)).await??;
    Ok(tls)
}

/// The rustls error inside an I/O error from tokio-rustls.
fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

fn tls_scenario() -> Result<(TestCa, ec_tests::fault_peer::ScenarioBuilder)> {
    let ca = TestCa::new()?;
    let config = ca.leaf(&DEFAULT_NAMES)?.server_config()?;
    Ok((ca, Scenario::builder().tls(config)))
}

async fn only_connection(peer: &FaultPeer) -> Result<ec_tests::fault_peer::ConnectionRecord> {
    let mut records = peer.wait_for_connections(1, STEP).await?;
    ensure!(
        records.len() == 1,
        "expected one connection, got {records:#?}"
    );
    Ok(records.remove(0))
}

const MESSAGE: &[u8] = b"Subject: t\r\n\r\n..a stuffed dot\r\nbare\nLF and bare\rCR\r\n";

#[tokio::test]
async fn pipelined_transaction_recorded_exactly() -> Result<()> {
    let peer = FaultPeer::start(Scenario::default()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nRCPT TO:<c@ec.test>\r\nDATA\r\n")
        .await?;
    for expected in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354 "] {
        let reply = client.reply().await?;
        ensure!(reply.starts_with(expected), "{reply} is not {expected}");
    }
    let mut data = MESSAGE.to_vec();
    data.extend_from_slice(b".\r\nQUIT\r\n");
    client.send(&data).await?;
    ensure!(client.reply().await?.starts_with("250 2.0.0 Ok: queued"));
    ensure!(client.reply().await?.starts_with("221 "));
    ensure!(client.read_to_end().await?.is_empty());
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.command_groups(),
        [
            vec!["EHLO client.ec.test"],
            vec![
                "MAIL FROM:<a@ec.test>",
                "RCPT TO:<b@ec.test>",
                "RCPT TO:<c@ec.test>",
                "DATA"
            ],
            vec!["QUIT"],
        ]
    );
    assert_eq!(record.bodies(), [MESSAGE]);
    assert_eq!(
        record.verbs(),
        [
            Verb::Ehlo,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Rcpt,
            Verb::Data,
            Verb::Quit
        ]
    );
    assert!(record.mail_in_clear());
    assert_eq!(record.peer_close(), Some(Close::Clean));
    assert_eq!(
        record.client_end(),
        Some(ClientEnd {
            close_notify: None,
            tcp: TcpEnd::Fin
        })
    );
    assert!(record.finished_at.is_some());
    Ok(())
}

#[tokio::test]
async fn client_reset_is_recorded() -> Result<()> {
    let peer = FaultPeer::start(Scenario::default()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.stream.set_zero_linger()?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.client_end(),
        Some(ClientEnd {
            close_notify: None,
            tcp: TcpEnd::Reset
        })
    );
    Ok(())
}

#[tokio::test]
async fn silence_after_quit() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().silence_after_quit().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"QUIT\r\n").await?;
    ensure!(client.stays_quiet().await, "the peer answered QUIT");
    client.stream.shutdown().await?;
    ensure!(client.read_to_end().await?.is_empty());

    let record = only_connection(&peer).await?;
    assert!(record.sent().iter().all(|bytes| !bytes.starts_with(b"221")));
    let closes: Vec<_> = record
        .events
        .iter()
        .filter(|timed| matches!(timed.event, Event::ClientClosed(_) | Event::PeerClosed(_)))
        .map(|timed| timed.event.clone())
        .collect();
    assert_eq!(
        closes,
        [
            Event::ClientClosed(ClientEnd {
                close_notify: None,
                tcp: TcpEnd::Fin
            }),
            Event::PeerClosed(Close::Clean),
        ],
        "the peer must not close first"
    );
    Ok(())
}

#[tokio::test]
async fn close_without_221() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().close_without_221().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"QUIT\r\n").await?;
    assert_eq!(client.read_to_end().await?, b"");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::Clean));
    assert_eq!(record.client_end().map(|end| end.tcp), Some(TcpEnd::Fin));
    Ok(())
}

#[tokio::test]
async fn reset_mid_data() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().reset_mid_data(10).build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    for command in ["MAIL FROM:<a@ec.test>", "RCPT TO:<b@ec.test>", "DATA"] {
        client.command(command).await?;
    }
    client.send(&[b'x'; 100]).await?;

    let error = client.read_to_end().await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");

    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::Reset));
    assert!(record.bodies().is_empty());
    assert!(record.events.iter().any(|timed| matches!(
        &timed.event,
        Event::PartialBody { data, tls: false } if data.len() >= 10
    )));
    Ok(())
}

#[tokio::test]
async fn no_reply_to_final_dot() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().no_reply_to_dot().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    for command in ["MAIL FROM:<a@ec.test>", "RCPT TO:<b@ec.test>", "DATA"] {
        client.command(command).await?;
    }
    client.send(b"hello\r\n.\r\n").await?;
    ensure!(client.stays_quiet().await, "the peer answered the dot");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.bodies(), [&b"hello\r\n"[..]]);
    assert_eq!(record.sent().last().map(|b| &b[..3]), Some(&b"354"[..]));
    assert_eq!(record.client_end().map(|end| end.tcp), Some(TcpEnd::Fin));
    Ok(())
}

#[tokio::test]
async fn reply_421_at_banner_and_at_data() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().banner_421().build()).await?;
    let mut client = Client::connect(&peer).await?;
    ensure!(client.reply().await?.starts_with("421 "));
    assert_eq!(client.read_to_end().await?, b"");
    drop(client);
    assert!(only_connection(&peer).await?.commands().is_empty());

    let peer = FaultPeer::start(Scenario::builder().reply_421_at(Verb::Data).build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("MAIL FROM:<a@ec.test>").await?;
    client.command("RCPT TO:<b@ec.test>").await?;
    ensure!(client.command("DATA").await?.starts_with("421 "));
    assert_eq!(client.read_to_end().await?, b"");
    drop(client);
    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::Clean));
    assert!(record.bodies().is_empty());
    Ok(())
}

#[tokio::test]
async fn spontaneous_421_when_idle() -> Result<()> {
    let idle = Duration::from_millis(200);
    let peer = FaultPeer::start(Scenario::builder().idle_421_after(idle).build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    let waiting = Instant::now();
    let reply = client.reply().await?;
    let waited = waiting.elapsed();
    ensure!(reply.starts_with("421 4.4.2"), "{reply}");
    ensure!(waited >= idle, "421 came after {waited:?}");
    assert_eq!(client.read_to_end().await?, b"");
    Ok(())
}

#[tokio::test]
async fn delayed_reply_misses_a_deadline() -> Result<()> {
    let delay = Duration::from_millis(400);
    let scenario = Scenario::builder().delay_reply(Verb::Mail, delay).build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;

    let sent = Instant::now();
    client.send(b"MAIL FROM:<a@ec.test>\r\n").await?;
    ensure!(
        client.stays_quiet().await,
        "the reply came before the client's deadline"
    );
    ensure!(client.reply().await?.starts_with("250 2.1.0"));
    ensure!(sent.elapsed() >= delay);
    drop(client);

    let record = only_connection(&peer).await?;
    let mail_at = record
        .time_of(|e| matches!(e, Event::Command { line, .. } if line.starts_with(b"MAIL")))
        .context("no MAIL recorded")?;
    let reply_at = record
        .time_of(|e| matches!(e, Event::Sent { bytes, .. } if bytes.starts_with(b"250 2.1.0")))
        .context("no MAIL reply recorded")?;
    ensure!(reply_at - mail_at >= delay);
    Ok(())
}

#[tokio::test]
async fn rejected_ehlo_then_helo() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().reject_ehlo().build()).await?;
    let mut client = Client::connect(&peer).await?;
    ensure!(client.greet().await?.starts_with("502 "));
    ensure!(client
        .command("HELO client.ec.test")
        .await?
        .starts_with("250 "));
    ensure!(client.command("QUIT").await?.starts_with("221 "));
    Ok(())
}

#[tokio::test]
async fn endless_continuation_lines() -> Result<()> {
    let scenario = Scenario::builder()
        .on(
            Verb::Ehlo,
            Response::stream("250-fault-peer\r\n", "250-AND-ONE-MORE\r\n", 64 << 20),
        )
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.reply().await?;
    client.send(b"EHLO client.ec.test\r\n").await?;
    while client.buf.len() < 1 << 20 {
        ensure!(client.read_more(STEP).await? > 0);
    }
    ensure!(reply_end(&client.buf).is_none(), "the reply ended");
    drop(client);

    let record = only_connection(&peer).await?;
    let streamed = record.events.iter().find_map(|timed| match &timed.event {
        Event::Streamed { bytes, error, .. } => Some((*bytes, error.clone())),
        _ => None,
    });
    let (bytes, error) = streamed.context("no stream recorded")?;
    ensure!((1 << 20..64 << 20).contains(&bytes), "streamed {bytes}");
    ensure!(error.is_some(), "the stream must end on the client's close");
    Ok(())
}

#[tokio::test]
async fn garbage_reply_sent_verbatim() -> Result<()> {
    let garbage: &[u8] = b"2x0\xff\x00 not a reply\r\n\n\r250";
    let scenario = Scenario::builder()
        .on(Verb::Mail, Response::raw(garbage))
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"MAIL FROM:<a@ec.test>\r\n").await?;
    while client.buf.len() < garbage.len() {
        ensure!(client.read_more(STEP).await? > 0);
    }
    assert_eq!(client.buf, garbage);
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.sent().last().map(|bytes| &bytes[..]), Some(garbage));
    Ok(())
}

#[tokio::test]
async fn line_without_end() -> Result<()> {
    let scenario = Scenario::builder()
        .banner(Response::stream("220 ", "a", 10_000))
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    while client.buf.len() < 10_000 {
        ensure!(client.read_more(STEP).await? > 0);
    }
    assert_eq!(client.buf.len(), 10_000);
    ensure!(!client.buf.contains(&b'\n'));
    ensure!(client.stays_quiet().await);
    Ok(())
}

#[tokio::test]
async fn starttls_session_with_clean_close() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let scenario = builder
        .capabilities(
            Capabilities::new()
                .starttls(true)
                .size(Some(1000))
                .without_extras(),
        )
        .capabilities_after_tls(
            Capabilities::new()
                .pipelining(false)
                .size(Some(10))
                .without_extras(),
        )
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    assert_eq!(
        client.greet().await?,
        "250-fault-peer.ec.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
    );
    ensure!(client.command("STARTTLS").await?.starts_with("220 "));

    let mut client = client.start_tls(&ca).await?;
    assert_eq!(
        client.command("EHLO client.ec.test").await?,
        "250-fault-peer.ec.test\r\n250 SIZE 10\r\n"
    );
    client.command("MAIL FROM:<a@ec.test>").await?;
    client.command("RCPT TO:<b@ec.test>").await?;
    client.command("DATA").await?;
    client.send(b"inside TLS\r\n.\r\n").await?;
    client.reply().await?;
    ensure!(client.command("QUIT").await?.starts_with("221 "));
    assert_eq!(client.read_to_end().await?, b"", "the peer's close_notify");
    client.stream.shutdown().await?;
    drop(client);

    let record = only_connection(&peer).await?;
    let tls = record.tls().context("no TLS recorded")?;
    assert_eq!(tls.sni.as_deref(), Some("mx.ec.test"));
    assert!(!record.mail_in_clear());
    assert!(record.plaintext_after_starttls().is_empty());
    assert_eq!(record.bodies(), [&b"inside TLS\r\n"[..]]);
    assert!(record.client_sent_close_notify());
    assert_eq!(
        record.client_end(),
        Some(ClientEnd {
            close_notify: Some(true),
            tcp: TcpEnd::Fin
        })
    );
    Ok(())
}

#[tokio::test]
async fn client_closing_tls_without_close_notify() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    let mut client = client.start_tls(&ca).await?;
    client.command("EHLO client.ec.test").await?;
    let (mut tcp, _) = client.stream.into_inner();
    tcp.shutdown().await?;
    drop(tcp);

    let record = only_connection(&peer).await?;
    assert!(!record.client_sent_close_notify());
    assert_eq!(
        record.client_end(),
        Some(ClientEnd {
            close_notify: Some(false),
            tcp: TcpEnd::Fin
        })
    );
    Ok(())
}

#[tokio::test]
async fn peer_skips_close_notify_after_221() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.quit_without_close_notify().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    let mut client = client.start_tls(&ca).await?;
    client.command("EHLO client.ec.test").await?;
    ensure!(client.command("QUIT").await?.starts_with("221 "));

    let error = client.read_to_end().await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::WithoutCloseNotify));
    Ok(())
}

#[tokio::test]
async fn truncation_while_reply_due() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.truncate_at(Verb::Mail).build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    let mut client = client.start_tls(&ca).await?;
    client.command("EHLO client.ec.test").await?;
    client.send(b"MAIL FROM:<a@ec.test>\r\n").await?;

    let error = client.read_to_end().await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::WithoutCloseNotify));
    assert!(record
        .sent()
        .iter()
        .all(|bytes| !bytes.starts_with(b"250 2.1.0")));
    Ok(())
}

#[tokio::test]
async fn injected_bytes_share_the_220_write() -> Result<()> {
    let (_ca, builder) = tls_scenario()?;
    let scenario = builder.starttls_with_injection(b"250 fake\r\n").build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"STARTTLS\r\n").await?;

    client.read_more(STEP).await?;
    assert_eq!(client.buf, b"220 2.0.0 Ready to start TLS\r\n250 fake\r\n");
    drop(client);

    let record = only_connection(&peer).await?;
    assert!(record.sent().contains(&bytes::Bytes::from_static(
        b"220 2.0.0 Ready to start TLS\r\n250 fake\r\n"
    )));
    Ok(())
}

#[tokio::test]
async fn fake_tls_record_breaks_the_handshake() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let scenario = builder
        .starttls_with_injection(tls::FAKE_SERVER_HELLO)
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"STARTTLS\r\n").await?;

    // Read the 220 a byte at a time so the fake record stays in the socket for rustls.
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        line.push(client.stream.read_u8().await?);
    }
    ensure!(line.starts_with(b"220 "));
    let error = match handshake(&ca, client.stream).await {
        Ok(_) => bail!("the handshake survived a fake ServerHello"),
        Err(error) => error.downcast::<io::Error>()?,
    };
    assert!(
        matches!(rustls_error(&error), Some(rustls::Error::InvalidMessage(_))),
        "{error:?}"
    );

    let record = only_connection(&peer).await?;
    assert!(record.handshake_error().is_some(), "{record:#?}");
    Ok(())
}

#[tokio::test]
async fn starttls_220_then_silence() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.starttls_then_silence().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    let connector = TlsConnector::from(ca.client_config()?);
    let handshake = connector.connect(ServerName::try_from("mx.ec.test")?, client.stream);
    ensure!(
        tokio::time::timeout(QUIET, handshake).await.is_err(),
        "the handshake finished against a silent peer"
    );

    let record = only_connection(&peer).await?;
    assert!(record.tls().is_none());
    let unanswered = record.events.iter().find_map(|timed| match &timed.event {
        Event::Unanswered { bytes, tls: false } => Some(bytes.clone()),
        _ => None,
    });
    let client_hello = unanswered.context("the ClientHello was not recorded")?;
    assert_eq!(client_hello[0], tls::HANDSHAKE_RECORD);
    assert!(record.plaintext_after_starttls().is_empty());
    Ok(())
}

#[tokio::test]
async fn alert_instead_of_server_hello() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let scenario = builder.starttls_alert(tls::ALERT_HANDSHAKE_FAILURE).build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    let error = match handshake(&ca, client.stream).await {
        Ok(_) => bail!("the handshake survived an alert"),
        Err(error) => error.downcast::<io::Error>()?,
    };
    assert_eq!(
        rustls_error(&error),
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
        ))
    );

    let record = only_connection(&peer).await?;
    let alert = tls::alert_record(tls::ALERT_HANDSHAKE_FAILURE);
    assert!(record.sent().iter().any(|bytes| bytes[..] == alert[..]));
    Ok(())
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client
        .send(b"STARTTLS\r\nMAIL FROM:<a@ec.test>\r\n")
        .await?;
    ensure!(client.reply().await?.starts_with("220 "));
    let mut client = client.start_tls(&ca).await?;
    client.command("EHLO client.ec.test").await?;
    client.stream.shutdown().await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.plaintext_after_starttls(),
        b"MAIL FROM:<a@ec.test>\r\n"
    );
    assert!(record.mail_in_clear());
    assert!(
        record.tls().is_some(),
        "the peer drops the plain text and goes on"
    );
    Ok(())
}

#[tokio::test]
async fn plaintext_instead_of_client_hello() -> Result<()> {
    let (_ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.command("STARTTLS").await?;
    client.send(b"MAIL FROM:<a@ec.test>\r\n").await?;
    assert_eq!(client.read_to_end().await?, b"");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.plaintext_after_starttls(),
        b"MAIL FROM:<a@ec.test>\r\n"
    );
    assert!(record.mail_in_clear());
    assert!(record.handshake_error().is_some());
    Ok(())
}

#[tokio::test]
async fn implicit_tls_banner_inside_tls() -> Result<()> {
    let (ca, builder) = tls_scenario()?;
    let peer = FaultPeer::start(builder.implicit_tls().build()).await?;
    let tcp = TcpStream::connect(peer.addr()).await?;
    let mut client = Client::new(handshake(&ca, tcp).await?);
    client.greet().await?;
    client.command("QUIT").await?;
    client.read_to_end().await?;
    client.stream.shutdown().await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert!(record.tls().is_some());
    assert!(record
        .events
        .iter()
        .all(|timed| !matches!(timed.event, Event::Sent { tls: false, .. })));
    assert!(record.client_sent_close_notify());
    Ok(())
}

#[tokio::test]
async fn broken_certificates_fail_the_client_handshake() -> Result<()> {
    let ca = TestCa::new()?;
    let cases = [
        (LeafProfile::Expired, "ExpiredContext"),
        (LeafProfile::NotYetValid, "NotValidYetContext"),
        (LeafProfile::SelfSigned, "UnknownIssuer"),
        (LeafProfile::ClientAuthOnly, "InvalidPurposeContext"),
        (LeafProfile::CaAsEndEntity, "CaUsedAsEndEntity"),
    ];
    for (profile, expected) in cases {
        let config = ca.issue(profile, &DEFAULT_NAMES)?.server_config()?;
        let peer = FaultPeer::start(Scenario::builder().tls(config).build()).await?;
        let mut client = Client::connect(&peer).await?;
        client.greet().await?;
        client.command("STARTTLS").await?;
        let error = match handshake(&ca, client.stream).await {
            Ok(_) => bail!("{profile:?}: the client accepted the certificate"),
            Err(error) => error.downcast::<io::Error>()?,
        };
        let inner = rustls_error(&error).context("not a rustls error")?;
        ensure!(
            format!("{inner:?}").contains(expected),
            "{profile:?}: {inner:?} is not {expected}"
        );

        let record = only_connection(&peer).await?;
        ensure!(
            record.handshake_error().is_some(),
            "{profile:?}: the peer saw no failed handshake"
        );
    }
    Ok(())
}

#[tokio::test]
async fn per_occurrence_overrides() -> Result<()> {
    let scenario = Scenario::builder()
        .on(Verb::Rcpt, Response::reply("550 5.1.1 no such user"))
        .on_nth(Verb::Rcpt, 2, Response::reply("250 2.1.5 second is fine"))
        .on_end_of_data_nth(2, Response::reply("452 4.3.1 full"))
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    for expected in ["550 5.1.1", "250 2.1.5 second", "550 5.1.1"] {
        ensure!(client
            .command("RCPT TO:<b@ec.test>")
            .await?
            .starts_with(expected));
    }
    for expected in ["250 2.0.0", "452 4.3.1", "250 2.0.0"] {
        client.command("DATA").await?;
        ensure!(client.command(".").await?.starts_with(expected));
    }
    drop(client);
    assert_eq!(only_connection(&peer).await?.bodies(), [&b""[..]; 3]);
    Ok(())
}

#[tokio::test]
async fn wait_reports_what_it_saw() -> Result<()> {
    let peer = FaultPeer::start(Scenario::default()).await?;
    let error = peer
        .wait_for_connections(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        FaultPeerError::WaitTimedOut {
            wanted: 1,
            finished: 0,
            accepted: 0,
            ..
        }
    ));
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_open_connections() -> Result<()> {
    let peer = FaultPeer::start(Scenario::builder().silence_after_quit().build()).await?;
    let mut client = Client::connect(&peer).await?;
    client.greet().await?;
    client.send(b"QUIT\r\n").await?;
    peer.shutdown().await;
    // Closed with unread input, the peer's socket sends FIN or RST; either ends it.
    let _ = client.read_to_end().await;
    ensure!(client.buf.is_empty());
    Ok(())
}

/// The peer on a thread of its own serves a client that blocks its thread, and
/// plays a sequence of scenarios over successive connections.
#[test]
fn thread_peer_serves_blocking_clients() -> Result<()> {
    let peer = FaultPeer::start_sequence_on_thread(vec![
        Scenario::builder().banner_421().build(),
        Scenario::default(),
    ])?;

    let mut replies = Vec::new();
    for _ in 0..3 {
        let mut tcp = std::net::TcpStream::connect(peer.addr())?;
        tcp.set_read_timeout(Some(STEP))?;
        tcp.write_all(b"QUIT\r\n")?;
        let mut reply = String::new();
        tcp.read_to_string(&mut reply)?;
        replies.push(reply);
    }
    assert!(replies[0].starts_with("421 "), "{replies:?}");
    assert!(
        replies[1].starts_with("220 ") && replies[1].contains("221 "),
        "{replies:?}"
    );
    assert!(replies[2].starts_with("220 "), "{replies:?}");

    let records = peer.wait_for_connections_blocking(3, STEP)?;
    assert_eq!(records.len(), 3);
    assert!(records[0].commands().is_empty(), "{:?}", records[0]);
    assert_eq!(records[1].command_lines(), ["QUIT"]);

    let started = Instant::now();
    drop(peer);
    ensure!(started.elapsed() < STEP, "dropping the peer hung");
    Ok(())
}

/// The thread peer ends its open connections before `drop` returns.
#[test]
fn thread_peer_drop_closes_connections() -> Result<()> {
    let peer = FaultPeer::start_on_thread(Scenario::default())?;
    let mut tcp = std::net::TcpStream::connect(peer.addr())?;
    tcp.set_read_timeout(Some(STEP))?;
    let mut banner = [0u8; 4];
    tcp.read_exact(&mut banner)?;
    drop(peer);

    let mut rest = Vec::new();
    match tcp.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
        Err(error) => bail!("the connection outlived the peer: {error}"),
    }
    Ok(())
}
