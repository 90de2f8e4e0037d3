//! A peer that sends endless continuation lines, or a reply line that never
//! ends, costs the client a protocol error, not memory. Each test feeds
//! megabytes of such input into a `proto::Client` in chunks, checks the
//! buffered octets after every chunk, and checks the error at the end.

mod proto_support;

use ec_smtp_client::proto::{
    ClientConfig, ClientError, ClientEvent, ClientState, ReplyError, ReplyLimits, TransactionEnd,
};
use ec_types::{Stage, TlsPolicy};
use proto_support::{transaction, Session, EHLO_DOMAIN};

/// Input sent by each test, far beyond every limit.
const STREAM_LEN: usize = 4 * 1024 * 1024;

/// Chunk size of the reads. It is no multiple of the line lengths used, so
/// chunk boundaries fall at varying offsets inside lines.
const CHUNK_LEN: usize = 1000;

/// `pattern` repeated up to `STREAM_LEN` octets after `prefix`.
fn endless(prefix: &[u8], pattern: &[u8]) -> Vec<u8> {
    let mut stream = prefix.to_vec();
    while stream.len() < STREAM_LEN {
        stream.extend_from_slice(pattern);
    }
    stream
}

/// Starts a session and brings it to the wait for the EHLO reply.
fn session_after_banner(limits: ReplyLimits) -> Session {
    let mut config = ClientConfig::new(EHLO_DOMAIN);
    config.tls_policy = TlsPolicy::Disabled;
    config.reply_limits = limits;
    let mut session = Session::with_config(config);
    session.server("220 mx.example.com ESMTP\r\n");
    session.expect_sent("EHLO client.example.org\r\n");
    session
}

/// Feeds `stream` in chunks of `chunk_len`, checks the buffer bound after
/// every chunk, and returns the maximum octets buffered after any chunk.
#[track_caller]
fn feed(session: &mut Session, stream: &[u8], chunk_len: usize) -> usize {
    let max = session.client.config().reply_limits.max_buffered;
    let mut peak = 0;
    for chunk in stream.chunks(chunk_len) {
        session.server_bytes(chunk);
        let buffered = session.client.buffered_len();
        assert!(buffered <= max, "{buffered} octets buffered, over {max}");
        peak = peak.max(buffered);
    }
    peak
}

/// The next event, which must be the session's failure; returns its error.
#[track_caller]
fn failure(session: &mut Session) -> ClientError {
    match session.next_event() {
        ClientEvent::Failed { error, .. } => error,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn endless_continuation_lines_fail() {
    let mut session = session_after_banner(ReplyLimits::default());
    let stream = endless(b"", b"250-x\r\n");

    let peak = feed(&mut session, &stream, CHUNK_LEN);

    // The parser holds only the raw lines of the reply so far: at most
    // 100 lines of 7 octets plus one chunk.
    assert!(peak <= 100 * 7 + CHUNK_LEN, "peak {peak} octets");
    assert!(matches!(
        failure(&mut session),
        ClientError::InvalidReply(ReplyError::TooManyLines { max: 100, .. })
    ));
    session.no_events();
    assert_eq!(session.client.state(), ClientState::Closed);
    assert_eq!(session.client.buffered_len(), 0);
}

#[test]
fn long_continuation_lines_fill_buffer() {
    let mut session = session_after_banner(ReplyLimits::default());
    let mut line = b"250-".to_vec();
    line.resize(4000, b'x');
    line.extend_from_slice(b"\r\n");
    let stream = endless(b"", &line);

    feed(&mut session, &stream, CHUNK_LEN);

    assert!(matches!(
        failure(&mut session),
        ClientError::InvalidReply(ReplyError::BufferFull { max: 65_536, .. })
    ));
    assert_eq!(session.client.state(), ClientState::Closed);
}

#[test]
fn reply_line_never_ends() {
    let mut session = session_after_banner(ReplyLimits::default());
    let stream = endless(b"250 ", b"x");

    let peak = feed(&mut session, &stream, CHUNK_LEN);

    assert!(peak <= 4096, "peak {peak} octets, over the line limit");
    assert!(matches!(
        failure(&mut session),
        ClientError::InvalidReply(ReplyError::LineTooLong { max: 4096, .. })
    ));
    assert_eq!(session.client.state(), ClientState::Closed);
}

#[test]
fn large_reads_with_small_limits() {
    let limits = ReplyLimits {
        max_line_len: 512,
        max_lines: 10,
        max_buffered: 2048,
    };
    let mut session = session_after_banner(limits);
    let stream = endless(b"", b"250-PIPELINING\r\n");

    // One read of 1 MiB is far more than the buffer; the client feeds its
    // parser only what fits.
    feed(&mut session, &stream, 1024 * 1024);

    assert!(matches!(
        failure(&mut session),
        ClientError::InvalidReply(ReplyError::TooManyLines { max: 10, .. })
    ));
}

#[test]
fn endless_final_reply_aborts_transaction() {
    let mut session = Session::ready(&["PIPELINING"]);
    session.start(transaction(
        &["rcpt@example.com"],
        "Subject: x\r\n\r\nbody\r\n",
    ));
    session.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n");
    session.server("250 ok\r\n250 ok\r\n354 go ahead\r\n");
    session.expect_sent("Subject: x\r\n\r\nbody\r\n.\r\n");
    assert!(matches!(
        session.next_event(),
        ClientEvent::RecipientReply { index: 0, .. }
    ));

    let stream = endless(b"", b"250-still going\r\n");
    feed(&mut session, &stream, CHUNK_LEN);

    // The data went out and no final reply came, so the message may have
    // been accepted.
    match session.transaction_end() {
        TransactionEnd::Aborted {
            error: ClientError::InvalidReply(ReplyError::TooManyLines { .. }),
            delivery_unknown: true,
        } => {}
        other => panic!("expected an abort with delivery unknown, got {other:?}"),
    }
    match session.next_event() {
        ClientEvent::Failed { stage, .. } => assert_eq!(stage, Stage::Body),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(session.client.state(), ClientState::Closed);
}
