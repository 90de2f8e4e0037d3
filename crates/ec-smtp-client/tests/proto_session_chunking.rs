//! Transactions sent with BDAT (RFC 3030 CHUNKING) against a scripted
//! server: the whole transaction in one write, the replies that end it, and
//! what a lost connection means once the chunk is out.

mod proto_support;

use std::time::Duration;

use ec_smtp_client::proto::{ClientConfig, ClientError, ClientState, Stage, Timer, TransactionEnd};
use ec_types::TlsPolicy;
use proto_support::{ehlo_reply, transaction, Session};

/// Bare LF line ends and a line that starts with a dot.
const BODY: &str = "Subject: test\n\nHello.\n.leading dot\n";
/// BODY as a chunk: CRLF line ends, and the dot is not doubled.
const CHUNK: &str = "Subject: test\r\n\r\nHello.\r\n.leading dot\r\n";

const CHUNKING: &[&str] = &["PIPELINING", "CHUNKING"];

#[test]
fn whole_transaction_is_one_write() {
    let mut s = Session::ready(&["PIPELINING", "SIZE 100000", "CHUNKING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], BODY));
    let size = CHUNK.len();
    s.expect_sent(&format!(
        "MAIL FROM:<sender@example.org> SIZE={size}\r\n\
         RCPT TO:<a@example.com>\r\n\
         RCPT TO:<b@example.com>\r\n\
         BDAT {size} LAST\r\n{CHUNK}"
    ));
    assert_eq!(s.client.stage(), Stage::Mail);
    assert!(
        s.client.delivery_unknown_pending(),
        "the chunk left with the commands"
    );

    s.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n");
    assert!(s.recipient_reply(0).is_positive_completion());
    s.server("550 5.1.1 unknown\r\n");
    assert!(s.recipient_reply(1).is_permanent());
    assert_eq!(s.client.state(), ClientState::ExpectDataReply);
    assert_eq!(s.client.stage(), Stage::Body);
    assert!(matches!(
        s.client.running_timer(),
        Some((Timer::DataTermination, _))
    ));
    s.nothing_sent();

    s.server("250 2.0.0 queued as ABC\r\n");
    match s.transaction_end() {
        TransactionEnd::Delivered { reply } => {
            assert_eq!(reply.to_string(), "250 2.0.0 queued as ABC")
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.client.delivery_unknown_pending());
    assert_eq!(s.client.state(), ClientState::Ready);
    s.no_events();
}

#[test]
fn wire_form_chunk_sent_without_copy() {
    let mut s = Session::ready(CHUNKING);
    let body = "Subject: x\r\n\r\n.body\r\n";
    let submitted = transaction(&["a@example.com"], body);
    let data = submitted.data.clone();
    s.start(submitted);

    let parts = s.client.poll_transmit_parts().expect("a write");
    let head = String::from_utf8_lossy(&parts.head);
    assert!(
        head.ends_with(&format!("BDAT {} LAST\r\n", body.len())),
        "{head}"
    );
    assert_eq!(parts.tail.as_ptr(), data.as_ptr());
    assert_eq!(parts.tail, body.as_bytes());
}

#[test]
fn empty_message_is_empty_chunk() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], ""));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 0 LAST\r\n");
}

#[test]
fn reuse_puts_rset_in_the_group() {
    let mut s = Session::ready(CHUNKING);
    for round in 0..2 {
        s.start(transaction(&["a@example.com"], "x"));
        let rset = if round > 0 { "RSET\r\n" } else { "" };
        s.expect_sent(&format!(
            "{rset}MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 3 LAST\r\nx\r\n"
        ));
        if round > 0 {
            s.server("250 2.0.0 ok\r\n");
        }
        s.server("250 ok\r\n250 ok\r\n250 queued\r\n");
        s.recipient_reply(0);
        assert!(matches!(
            s.transaction_end(),
            TransactionEnd::Delivered { .. }
        ));
    }
}

#[test]
fn no_accepted_recipient_ends_without_recipients() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.server("250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n");
    s.recipient_reply(0);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::NoValidRecipients
    ));
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn rejected_mail_ends_with_its_reply() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.server("451 4.3.0 try later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no RCPT\r\n");
    assert_eq!(s.mail_rejected().code.as_u16(), 451);
    match s.transaction_end() {
        TransactionEnd::MailRejected { reply } => assert_eq!(reply.code.as_u16(), 451),
        other => panic!("{other:?}"),
    }
    s.no_events();
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn rejected_chunk_rejects_the_message() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.server("250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n");
    s.recipient_reply(0);
    match s.transaction_end() {
        TransactionEnd::MessageRejected { reply } => assert_eq!(reply.code.as_u16(), 552),
        other => panic!("{other:?}"),
    }
}

#[test]
fn eof_before_any_reply_is_delivery_unknown() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.client.handle_transmitted(s.now);

    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::ConnectionClosed { stage: Stage::Mail },
            delivery_unknown: true
        }
    ));
}

#[test]
fn service_closing_at_mail_is_not_unknown() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.server("421 4.3.2 shutting down\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::ServiceClosing(_),
            delivery_unknown: false
        }
    ));
}

#[test]
fn unsent_transaction_is_not_unknown() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    assert!(
        !s.client.delivery_unknown_pending(),
        "nothing handed out yet"
    );
    s.client.abort();
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            delivery_unknown: false,
            ..
        }
    ));
}

#[test]
fn data_without_pipelining() {
    let mut s = Session::ready(&["CHUNKING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
}

#[test]
fn data_when_chunking_is_off() {
    let mut config = ClientConfig::new("client.example.org");
    config.tls_policy = TlsPolicy::Disabled;
    config.chunking = false;
    let mut s = Session::with_config(config);
    s.server("220 mx.example.com ESMTP\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server(&ehlo_reply("mx.example.com", CHUNKING));
    s.next_event();

    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
}

#[test]
fn eof_after_every_rcpt_refused_is_known() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.client.handle_transmitted(s.now);
    s.server("250 ok\r\n550 5.1.1 unknown\r\n");
    s.recipient_reply(0);
    assert!(
        !s.client.delivery_unknown_pending(),
        "no recipient can take the chunk"
    );

    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            delivery_unknown: false,
            ..
        }
    ));
}

#[test]
fn eof_after_mail_refused_is_known() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.client.handle_transmitted(s.now);
    s.server("550 5.7.1 sender refused\r\n");
    // Reported before the group's other replies, which never come.
    assert_eq!(s.mail_rejected().code.as_u16(), 550);
    s.no_events();

    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            delivery_unknown: false,
            ..
        }
    ));
}

/// RFC 2920 lets a server hold back its replies to a group until the group
/// ends, which for a chunked transaction is after the chunk. So the MAIL
/// reply may take as long as the final reply, counted from when the whole
/// group is written. The write itself is bounded as message data is.
#[test]
fn chunked_group_waits_final_reply_time() {
    let mut s = Session::ready(CHUNKING);
    s.start(transaction(&["a@example.com"], BODY));
    assert!(matches!(
        s.client.running_timer(),
        Some((Timer::DataBlock, _))
    ));

    s.advance(Duration::from_secs(100));
    let size = CHUNK.len();
    s.expect_sent(&format!(
        "MAIL FROM:<sender@example.org>\r\n\
         RCPT TO:<a@example.com>\r\n\
         BDAT {size} LAST\r\n{CHUNK}"
    ));
    let data_termination = ClientConfig::new("client.example.org")
        .timeouts
        .data_termination;
    assert_eq!(s.client.state(), ClientState::ExpectMail);
    assert!(matches!(
        s.client.running_timer(),
        Some((Timer::DataTermination, _))
    ));
    assert_eq!(s.time_left(), data_termination);

    s.advance(data_termination - Duration::from_secs(1));
    s.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 queued\r\n");
    assert!(s.recipient_reply(0).is_positive_completion());
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
}
