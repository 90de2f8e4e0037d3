//! Proves the peer's CHUNKING (RFC 3030): a raw client sends `BDAT` lines and
//! chunks the way a test needs, checks the replies on the wire, and checks that
//! the record contains exactly the octets sent. A failure here is a bug in the peer.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Close, ConnectionRecord, Event, FaultPeer, MidData, Response, Scenario, Verb};

/// Every client step and every wait for the peer ends within this.
const STEP: Duration = Duration::from_secs(10);

/// A chunk with what DATA would treat specially: a line that is a lone dot, a
/// line starting with a dot, and a line that reads like a command.
const CHUNK: &[u8] = b"Subject: c\r\n\r\n.\r\n.dot\r\nQUIT\r\n";

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A raw client that reads whole replies.
struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects, reads the banner and sends `EHLO`; returns the `EHLO` reply.
    async fn greet(peer: &FaultPeer) -> Result<(Self, String), Box<dyn std::error::Error>> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(peer.addr())).await??;
        let mut client = Self {
            tcp,
            buf: Vec::new(),
        };
        let banner = client.reply().await?;
        assert!(banner.starts_with("220 "), "{banner}");
        client.send(b"EHLO client.ec.test\r\n").await?;
        let ehlo = client.reply().await?;
        Ok((client, ehlo))
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Reads one complete reply, every line up to the one with a space after its
    /// code.
    async fn reply(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(String::from_utf8(reply)?);
            }
            let mut more = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.tcp.read(&mut more)).await??;
            if n == 0 {
                return Err(format!("the peer closed before a whole reply: {:?}", self.buf).into());
            }
            self.buf.extend_from_slice(&more[..n]);
        }
    }

    /// Expects replies starting with each of `codes`, in order.
    async fn expect(&mut self, codes: &[&str]) -> TestResult {
        for code in codes {
            let reply = self.reply().await?;
            assert!(reply.starts_with(code), "{reply:?} is not {code}");
        }
        Ok(())
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

async fn only_connection(peer: &FaultPeer) -> Result<ConnectionRecord, Box<dyn std::error::Error>> {
    let mut records = peer.wait_for_connections(1, STEP).await?;
    assert_eq!(records.len(), 1, "{records:#?}");
    Ok(records.remove(0))
}

/// `MAIL`, `RCPT` and `BDAT <size of chunk> LAST` with the chunk, as one write.
fn transaction(chunk: &[u8]) -> Vec<u8> {
    let mut wire = format!(
        "MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nBDAT {} LAST\r\n",
        chunk.len()
    )
    .into_bytes();
    wire.extend_from_slice(chunk);
    wire
}

fn read_of_chunk(record: &ConnectionRecord) -> Option<u64> {
    record.events.iter().find_map(|timed| match timed.event {
        Event::Chunk { read, .. } => Some(read),
        _ => None,
    })
}

fn read_of_command(record: &ConnectionRecord, verb: &Verb) -> Option<u64> {
    record.events.iter().find_map(|timed| match &timed.event {
        Event::Command { line, read, .. } if Verb::of_line(line) == *verb => Some(*read),
        _ => None,
    })
}

fn partial_chunks(record: &ConnectionRecord) -> Vec<Bytes> {
    record
        .events
        .iter()
        .filter_map(|timed| match &timed.event {
            Event::PartialChunk { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn pipelined_chunk_recorded_exactly() -> TestResult {
    let peer = FaultPeer::start(Scenario::builder().chunking().build()).await?;
    let (mut client, ehlo) = Client::greet(&peer).await?;
    assert!(ehlo.lines().any(|line| &line[4..] == "CHUNKING"), "{ehlo}");

    let mut wire = transaction(CHUNK);
    wire.extend_from_slice(b"QUIT\r\n");
    client.send(&wire).await?;
    client
        .expect(&[
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0 Ok: queued as FP1",
            "221 ",
        ])
        .await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.command_groups()[1],
        [
            "MAIL FROM:<a@ec.test>",
            "RCPT TO:<b@ec.test>",
            &format!("BDAT {} LAST", CHUNK.len()),
            "QUIT"
        ]
    );
    assert_eq!(record.chunks(), [(Bytes::from_static(CHUNK), true)]);
    assert_eq!(record.bodies(), [CHUNK]);
    assert_eq!(
        read_of_chunk(&record),
        read_of_command(&record, &Verb::Bdat)
    );

    let tally = peer.tally();
    assert_eq!(tally.unknown_commands, 0, "chunk octets read as commands");
    assert_eq!(tally.bodies, 1);
    assert_eq!(tally.chunks, 1);
    assert_eq!(tally.body_bytes, CHUNK.len() as u64);
    assert_eq!(tally.unstuffed_dots, 0, "chunks are not dot-stuffed");
    assert_eq!(tally.bare_line_ends, 0);
    Ok(())
}

#[tokio::test]
async fn chunks_join_into_one_body() -> TestResult {
    let peer = FaultPeer::start(Scenario::builder().chunking().build()).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nBDAT 4\r\nab")
        .await?;
    client.expect(&["250 2.1.0", "250 2.1.5"]).await?;
    client.send(b"c\r").await?;
    client.expect(&["250 2.0.0 Ok: 4 octets received"]).await?;
    client.send(b"BDAT 0\r\n").await?;
    client.expect(&["250 2.0.0 Ok: 0 octets received"]).await?;
    client.send(b"bdat 4 last\r\n\nd\ne").await?;
    client.expect(&["250 2.0.0 Ok: queued as FP1"]).await?;

    client.send(&transaction(b"second")).await?;
    client
        .expect(&["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: queued as FP2"])
        .await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(
        record.chunks(),
        [
            (Bytes::from_static(b"abc\r"), false),
            (Bytes::new(), false),
            (Bytes::from_static(b"\nd\ne"), true),
            (Bytes::from_static(b"second"), true),
        ]
    );
    assert_eq!(record.bodies(), [&b"abc\r\nd\ne"[..], b"second"]);
    let tally = peer.tally();
    assert_eq!(tally.bodies, 2);
    assert_eq!(tally.chunks, 4);
    assert_eq!(
        tally.bare_line_ends, 1,
        "the CRLF split between chunks is a pair; the LF before e is bare"
    );
    Ok(())
}

#[tokio::test]
async fn rset_drops_unfinished_chunks() -> TestResult {
    let peer = FaultPeer::start(Scenario::builder().chunking().build()).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nBDAT 3\r\nold")
        .await?;
    client.expect(&["250", "250", "250"]).await?;
    client.send(b"RSET\r\n").await?;
    client.expect(&["250"]).await?;
    client.send(&transaction(b"new")).await?;
    client
        .expect(&["250", "250", "250 2.0.0 Ok: queued as FP2"])
        .await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.chunks().len(), 2);
    assert_eq!(record.bodies(), [&b"new"[..]]);
    Ok(())
}

#[tokio::test]
async fn bad_size_gets_501() -> TestResult {
    let peer = FaultPeer::start(Scenario::builder().chunking().build()).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client
        .send(b"BDAT x LAST\r\nBDAT 2 FIRST\r\nBDAT\r\nNOOP\r\n")
        .await?;
    client
        .expect(&["501 5.5.4", "501 5.5.4", "501 5.5.4", "250"])
        .await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert!(record.chunks().is_empty());
    assert_eq!(
        record.verbs(),
        [Verb::Ehlo, Verb::Bdat, Verb::Bdat, Verb::Bdat, Verb::Noop]
    );
    Ok(())
}

#[tokio::test]
async fn bdat_without_chunking_is_a_command() -> TestResult {
    let peer = FaultPeer::start(Scenario::default()).await?;
    let (mut client, ehlo) = Client::greet(&peer).await?;
    assert!(!ehlo.contains("CHUNKING"), "{ehlo}");

    client.send(b"BDAT 6 LAST\r\nNOOP\r\n").await?;
    client.expect(&["502 5.5.2", "250"]).await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert!(record.chunks().is_empty());
    assert_eq!(record.verbs(), [Verb::Ehlo, Verb::Bdat, Verb::Noop]);
    Ok(())
}

#[tokio::test]
async fn scripted_reply_comes_after_the_chunk() -> TestResult {
    let scenario = Scenario::builder()
        .chunking()
        .on_nth(Verb::Bdat, 2, Response::reply("452 4.3.1 out of space"))
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client.send(&transaction(b"one")).await?;
    client
        .expect(&["250", "250", "250 2.0.0 Ok: queued"])
        .await?;
    let mut rset = b"RSET\r\n".to_vec();
    rset.extend_from_slice(&transaction(b"two"));
    client.send(&rset).await?;
    client.expect(&["250", "250", "250", "452 4.3.1"]).await?;
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.bodies(), [&b"one"[..], b"two"]);
    let sent = record.sent();
    assert_eq!(
        sent.last().map(|b| &b[..]),
        Some(&b"452 4.3.1 out of space\r\n"[..])
    );
    Ok(())
}

#[tokio::test]
async fn reset_mid_chunk() -> TestResult {
    let scenario = Scenario::builder()
        .chunking()
        .mid_data(MidData {
            after_bytes: 4,
            close: Close::Reset,
        })
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client
        .send(b"MAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nBDAT 10 LAST\r\n012")
        .await?;
    client.expect(&["250", "250"]).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(b"345").await?;
    let mut rest = Vec::new();
    let error = tokio::time::timeout(STEP, client.tcp.read_to_end(&mut rest))
        .await?
        .expect_err("the peer resets");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    let record = only_connection(&peer).await?;
    assert_eq!(record.peer_close(), Some(Close::Reset));
    assert!(record.bodies().is_empty());
    assert_eq!(partial_chunks(&record), [&b"012345"[..]]);
    Ok(())
}

#[tokio::test]
async fn reset_after_whole_chunk_takes_no_more() -> TestResult {
    let scenario = Scenario::builder()
        .chunking()
        .mid_data(MidData {
            after_bytes: CHUNK.len(),
            close: Close::Reset,
        })
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    let mut wire = transaction(CHUNK);
    wire.extend_from_slice(b"QUIT\r\n");
    client.send(&wire).await?;
    // The replies to MAIL and RCPT went out before the reset, which may
    // discard them on the way. So only the absence of a BDAT reply counts.
    let _ = tokio::time::timeout(STEP, client.tcp.read_to_end(&mut client.buf)).await?;
    let replies = String::from_utf8_lossy(&client.buf);
    assert!(
        !replies.contains("queued"),
        "a reply to BDAT came: {replies}"
    );

    let record = only_connection(&peer).await?;
    assert_eq!(partial_chunks(&record), [CHUNK]);
    assert!(record.chunks().is_empty());
    assert_eq!(
        record.verbs().last(),
        Some(&Verb::Bdat),
        "the QUIT after the chunk was never read"
    );
    Ok(())
}

#[tokio::test]
async fn silence_after_chunk() -> TestResult {
    let scenario = Scenario::builder()
        .chunking()
        .on(Verb::Bdat, Response::silence())
        .build();
    let peer = FaultPeer::start(scenario).await?;
    let (mut client, _) = Client::greet(&peer).await?;

    client.send(&transaction(CHUNK)).await?;
    client.expect(&["250", "250"]).await?;
    let quiet = tokio::time::timeout(Duration::from_millis(300), client.reply()).await;
    assert!(quiet.is_err(), "the peer answered BDAT: {quiet:?}");
    drop(client);

    let record = only_connection(&peer).await?;
    assert_eq!(record.bodies(), [CHUNK]);
    assert_eq!(
        record.sent().len(),
        4,
        "banner, EHLO, MAIL and RCPT replies only"
    );
    Ok(())
}
