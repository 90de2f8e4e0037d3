//! The built-in SMTP sink against a minimal SMTP client written here, over
//! plain TCP and over STARTTLS with the certificate verified against the
//! sink's generated CA.

use std::sync::Arc;
use std::time::Duration;

use ec_cli::sink::{Sink, SinkConfig};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A reply: its code and the text of each line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

/// Just enough of an SMTP client to drive the sink: it writes raw command
/// bytes and reads whole (multi-line) replies.
struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write to sink");
        self.stream.get_mut().flush().await.expect("flush to sink");
    }

    async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut line))
                    .await
                    .expect("reply within 10 s")
                    .expect("read reply");
            assert!(
                read > 0,
                "connection closed while a reply was due; got {lines:?}"
            );
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let last = line.as_bytes()[3] == b' ';
            lines.push(line[4..line.len() - 2].to_owned());
            if last {
                return Reply { code, lines };
            }
        }
    }

    async fn expect(&mut self, code: u16) -> Reply {
        let reply = self.reply().await;
        assert_eq!(reply.code, code, "{reply:?}");
        reply
    }

    /// Reads until the sink closes, then closes too; true when the sink
    /// closed cleanly (for TLS: with close_notify) with nothing unread.
    async fn closed_cleanly(mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest))
                .await
                .expect("close within 10 s");
        read.is_ok() && rest.is_empty()
    }
}

async fn start(config: SinkConfig) -> Sink {
    Sink::start(config).await.expect("sink starts")
}

async fn connect(sink: &Sink) -> Client<TcpStream> {
    let stream = TcpStream::connect(sink.local_addr())
        .await
        .expect("connect to sink");
    let mut client = Client::new(stream);
    let greeting = client.expect(220).await;
    assert!(
        greeting.lines[0].starts_with("localhost ESMTP"),
        "{greeting:?}"
    );
    client
}

fn tls_connector(sink: &Sink) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(sink.ca_der().clone()).expect("sink CA parses");
    let provider = ec_smtp_client::tls::crypto_provider();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// EHLO, STARTTLS and the handshake, verifying the certificate for `name`.
async fn starttls(
    sink: &Sink,
    mut client: Client<TcpStream>,
    name: &str,
) -> Result<Client<TlsStream<TcpStream>>, std::io::Error> {
    client.send(b"EHLO client.test\r\n").await;
    client.expect(250).await;
    client.send(b"STARTTLS\r\n").await;
    client.expect(220).await;
    assert!(
        client.stream.buffer().is_empty(),
        "bytes after 220 to STARTTLS"
    );

    let name = ServerName::try_from(name.to_owned()).expect("valid name");
    let tls = tls_connector(sink)
        .connect(name, client.stream.into_inner())
        .await?;
    Ok(Client::new(tls))
}

/// Sends EHLO, one message and QUIT over an established TLS session, and
/// checks that STARTTLS is not offered again and that the close is clean.
async fn send_one_over_tls(mut client: Client<TlsStream<TcpStream>>) {
    client.send(b"EHLO client.test\r\n").await;
    let ehlo = client.expect(250).await;
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@demo.test>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 354] {
        client.expect(code).await;
    }
    client.send(b"x\r\n.\r\nQUIT\r\n").await;
    client.expect(250).await;
    client.expect(221).await;
    assert!(
        client.closed_cleanly().await,
        "221 then close_notify and FIN"
    );
}

fn keep() -> SinkConfig {
    SinkConfig {
        keep_messages: true,
        ..SinkConfig::default()
    }
}

/// Polls the sink's counters until `done` holds, for counts that a
/// connection task updates after the client has seen its last reply.
async fn wait_for(sink: &Sink, done: impl Fn(&ec_cli::sink::SinkStats) -> bool) {
    for _ in 0..200 {
        if done(&sink.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "sink counters never reached the expected state: {:?}",
        sink.stats()
    );
}

#[tokio::test]
async fn plain_pipelined_transaction() {
    let sink = start(keep()).await;
    let mut client = connect(&sink).await;

    client.send(b"EHLO client.test\r\n").await;
    let ehlo = client.expect(250).await;
    for keyword in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"] {
        assert!(
            ehlo.lines.iter().any(|l| l == keyword),
            "{keyword} in {ehlo:?}"
        );
    }
    assert!(
        ehlo.lines.iter().any(|l| l.starts_with("SIZE ")),
        "{ehlo:?}"
    );

    client
        .send(
            b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@demo.test>\r\nRCPT TO:<c@demo.test>\r\nDATA\r\n",
        )
        .await;
    for code in [250, 250, 250, 354] {
        client.expect(code).await;
    }
    client
        .send(b"Subject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n")
        .await;
    client.expect(250).await;
    client.expect(221).await;
    assert!(client.closed_cleanly().await);

    let messages = sink.take_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].reverse_path, "a@ec.test");
    assert_eq!(messages[0].recipients, ["b@demo.test", "c@demo.test"]);
    assert_eq!(
        messages[0].data,
        b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n"
    );
    assert!(!messages[0].tls);

    let stats = sink.shutdown().await;
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.recipients, 2);
    assert_eq!(stats.quits, 1);
    assert_eq!(stats.active_connections, 0);
}

#[tokio::test]
async fn starttls_verifies_against_ca() {
    let sink = start(keep()).await;
    for name in ["localhost", "127.0.0.1"] {
        let client = connect(&sink).await;
        let client = starttls(&sink, client, name)
            .await
            .expect("handshake verifies");

        send_one_over_tls(client).await;
    }

    let messages = sink.take_messages();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.tls));
    let stats = sink.shutdown().await;
    assert_eq!(stats.tls_handshakes, 2);
    assert_eq!(stats.tls_failures, 0);
}

#[tokio::test]
async fn implicit_tls_greets_inside_tls() {
    let sink = start(SinkConfig {
        implicit_tls: true,
        ..keep()
    })
    .await;
    let tcp = TcpStream::connect(sink.local_addr())
        .await
        .expect("connect to sink");
    let name = ServerName::try_from("localhost".to_owned()).expect("valid name");
    let tls = tls_connector(&sink)
        .connect(name, tcp)
        .await
        .expect("handshake before the greeting verifies");
    let mut client = Client::new(tls);
    client.expect(220).await;

    send_one_over_tls(client).await;

    let messages = sink.take_messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
    let stats = sink.shutdown().await;
    assert_eq!(stats.tls_handshakes, 1);
}

#[tokio::test]
async fn implicit_tls_fails_clear_text_client() {
    let sink = start(SinkConfig {
        implicit_tls: true,
        ..SinkConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(sink.local_addr())
        .await
        .expect("connect to sink");
    tcp.write_all(b"EHLO client.test\r\n")
        .await
        .expect("write EHLO");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the sink closes the connection");
    assert!(
        !rest.starts_with(b"220"),
        "no clear-text greeting: {rest:?}"
    );

    wait_for(&sink, |stats| stats.tls_failures == 1).await;
    assert!(sink.take_messages().is_empty());
}

#[tokio::test]
async fn wrong_name_fails_verification() {
    let sink = start(SinkConfig::default()).await;
    let client = connect(&sink).await;
    let error = match starttls(&sink, client, "mx.other.test").await {
        Ok(_) => panic!("a certificate for localhost must not verify as mx.other.test"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("certificate"), "{error}");
    wait_for(&sink, |stats| stats.tls_failures == 1).await;
    sink.shutdown().await;
}

#[tokio::test]
async fn required_tls_rejects_plain_mail() {
    let config = SinkConfig {
        require_tls: true,
        ..SinkConfig::default()
    };
    let sink = start(config).await;
    let mut client = connect(&sink).await;
    client
        .send(b"EHLO client.test\r\nMAIL FROM:<a@ec.test>\r\nNOOP\r\n")
        .await;
    client.expect(250).await;
    let reply = client.expect(530).await;
    assert!(reply.lines[0].starts_with("5.7.0"), "{reply:?}");
    client.expect(530).await;

    let mut client = starttls(&sink, client, "localhost")
        .await
        .expect("handshake");
    client
        .send(b"EHLO client.test\r\nMAIL FROM:<a@ec.test>\r\n")
        .await;
    client.expect(250).await;
    client.expect(250).await;
    drop(client);
    sink.shutdown().await;
}

#[tokio::test]
async fn input_before_handshake_is_discarded() {
    let sink = start(SinkConfig::default()).await;
    let mut client = connect(&sink).await;
    client.send(b"EHLO client.test\r\n").await;
    client.expect(250).await;

    let injected = b"MAIL FROM:<evil@ec.test>\r\n";
    let mut both = b"STARTTLS\r\n".to_vec();
    both.extend_from_slice(injected);
    client.send(&both).await;
    client.expect(220).await;

    let name = ServerName::try_from("localhost").expect("valid name");
    let tls = tls_connector(&sink)
        .connect(name, client.stream.into_inner())
        .await
        .expect("handshake after discarded input");
    let mut client = Client::new(tls);
    client
        .send(b"EHLO client.test\r\nRCPT TO:<b@demo.test>\r\n")
        .await;
    client.expect(250).await;
    client.expect(503).await;
    drop(client);

    let stats = sink.shutdown().await;
    assert_eq!(stats.starttls_injected_octets, injected.len() as u64);
}

#[tokio::test]
async fn oversized_message_and_bare_lf() {
    let config = SinkConfig {
        max_message_size: 32,
        ..SinkConfig::default()
    };
    let sink = start(config).await;
    let mut client = connect(&sink).await;
    client
        .send(b"EHLO c.test\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@demo.test>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 354] {
        client.expect(code).await;
    }
    let mut body = vec![b'x'; 100];
    body.extend_from_slice(b"\r\n.\r\n");
    client.send(&body).await;
    let reply = client.expect(552).await;
    assert!(reply.lines[0].starts_with("5.3.4"), "{reply:?}");

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@demo.test>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 354] {
        client.expect(code).await;
    }
    client.send(b"a\nb\n\r\n.\r\n").await;
    client.expect(250).await;
    drop(client);

    let stats = sink.shutdown().await;
    assert_eq!(stats.rejected_messages, 1);
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.bare_line_feeds, 2);
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let sink = start(SinkConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&sink).await;
        client.send(b"EHLO client.test\r\n").await;
        client.expect(250).await;
        clients.push(client);
    }
    wait_for(&sink, |stats| stats.active_connections == 3).await;

    // Each client reads the 421 and then closes, as a client should, so
    // the sink's orderly close does not wait out its timeout.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let reply = client.expect(421).await;
                assert!(reply.lines[0].starts_with("4.3.2"), "{reply:?}");
                assert!(client.closed_cleanly().await);
            })
        })
        .collect();

    let stats = sink.shutdown().await;
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.connections, 3);
    for reader in readers {
        reader.await.expect("client saw 421 and the close");
    }
}

#[tokio::test]
async fn idle_client_gets_timeout() {
    let config = SinkConfig {
        idle_timeout: Duration::from_millis(200),
        ..SinkConfig::default()
    };
    let sink = start(config).await;
    let mut client = connect(&sink).await;
    let reply = client.expect(421).await;
    assert!(reply.lines[0].starts_with("4.4.2"), "{reply:?}");
    assert!(client.closed_cleanly().await);
    wait_for(&sink, |stats| stats.active_connections == 0).await;
    sink.shutdown().await;
}

#[tokio::test]
async fn concurrent_clients_are_counted() {
    const CLIENTS: usize = 8;
    const MESSAGES: usize = 50;
    let sink = Arc::new(start(SinkConfig::default()).await);

    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&sink).await;
            let mut client = starttls(&sink, client, "localhost")
                .await
                .expect("handshake");
            client.send(b"EHLO client.test\r\n").await;
            client.expect(250).await;
            for message in 0..MESSAGES {
                let transaction = format!(
                    "MAIL FROM:<c{index}@ec.test>\r\nRCPT TO:<m{message}@demo.test>\r\nDATA\r\n"
                );
                client.send(transaction.as_bytes()).await;
                for code in [250, 250, 354] {
                    client.expect(code).await;
                }
                client
                    .send(b"Subject: load\r\n\r\n0123456789\r\n.\r\n")
                    .await;
                client.expect(250).await;
            }
            client.send(b"QUIT\r\n").await;
            client.expect(221).await;
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }

    let sink = Arc::into_inner(sink).expect("clients are done");
    let stats = sink.shutdown().await;
    assert_eq!(stats.messages, (CLIENTS * MESSAGES) as u64);
    assert_eq!(stats.message_octets, (CLIENTS * MESSAGES * 29) as u64);
    assert_eq!(stats.tls_handshakes, CLIENTS as u64);
    assert_eq!(stats.active_connections, 0);
}

#[tokio::test]
async fn non_loopback_needs_consent() {
    let config = SinkConfig {
        listen: "0.0.0.0:0".parse().expect("address"),
        ..SinkConfig::default()
    };
    let error = Sink::start(config).await.expect_err("not loopback");
    assert!(error.to_string().contains("0.0.0.0"), "{error}");
}

#[tokio::test]
async fn ca_file_holds_the_ca() {
    let sink = start(SinkConfig::default()).await;
    let path = sink.write_ca_temp_file().expect("CA file");
    let text = std::fs::read_to_string(&path).expect("read CA file");
    assert_eq!(text, sink.ca_pem());
    sink.shutdown().await;
}

#[tokio::test]
async fn invalid_hostname_is_rejected() {
    let config = SinkConfig {
        hostname: "mx.ec.test\r\n250 fake".into(),
        ..SinkConfig::default()
    };
    let error = Sink::start(config)
        .await
        .expect_err("CR LF in the host name");
    assert!(error.to_string().contains("hostname"), "{error}");
}

#[tokio::test]
async fn chunks_split_across_writes() {
    let sink = start(keep()).await;
    let mut client = connect(&sink).await;

    client.send(b"EHLO client.test\r\n").await;
    let ehlo = client.expect(250).await;
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"), "{ehlo:?}");

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@demo.test>\r\nBDAT 12\r\n.dot\r\nQU")
        .await;
    client.expect(250).await;
    client.expect(250).await;
    // The chunk's last octets, then a LAST chunk in two writes.
    client.send(b"IT\r\nBDAT 8 LAST\r\nend").await;
    client.expect(250).await;
    client.send(b"\r\n.\r\n").await;
    client.expect(250).await;
    client.send(b"QUIT\r\n").await;
    client.expect(221).await;
    assert!(client.closed_cleanly().await);

    let messages = sink.take_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].data, b".dot\r\nQUIT\r\nend\r\n.\r\n",
        "chunk octets are kept as sent, commands inside included"
    );
    let stats = sink.stats();
    assert_eq!((stats.chunked_messages, stats.quits), (1, 1));
}
