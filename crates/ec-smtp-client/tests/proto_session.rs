//! Whole sessions against a scripted server, without TLS: greeting, plain
//! and pipelined transactions, rejections, reuse, QUIT and broken servers.

mod proto_support;

use ec_smtp_client::proto::{
    ClientConfig, ClientError, ClientEvent, ClientState, Stage, TransactionEnd, TransactionError,
};
use ec_types::{LongLines, TlsPolicy};
use proto_support::{ehlo_reply, transaction, Session};

const BODY: &str = "Subject: test\n\nHello.\n.leading dot\n";
const WIRE_BODY: &str = "Subject: test\r\n\r\nHello.\r\n..leading dot\r\n.\r\n";

#[test]
fn plain_delivery() {
    let mut s = Session::new(TlsPolicy::Disabled);
    assert_eq!(s.client.state(), ClientState::ExpectBanner);
    assert_eq!(s.client.stage(), Stage::Banner);
    s.nothing_sent();

    s.server("220 mx.example.com ESMTP\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    assert_eq!(s.client.stage(), Stage::Ehlo);
    s.server(&ehlo_reply("mx.example.com", &["SIZE 1000000", "8BITMIME"]));
    match s.next_event() {
        ClientEvent::Ready { capabilities, tls } => {
            assert!(!tls);
            assert_eq!(capabilities.max_message_size, Some(1_000_000));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.stage(), Stage::Idle);

    s.start(transaction(&["a@example.com", "b@example.com"], BODY));
    let size = WIRE_BODY.len() - 4; // without the stuffed dot and the final ".\r\n"
    s.expect_sent(&format!("MAIL FROM:<sender@example.org> SIZE={size}\r\n"));
    assert_eq!(s.client.stage(), Stage::Mail);
    s.server("250 2.1.0 ok\r\n");
    s.expect_sent("RCPT TO:<a@example.com>\r\n");
    assert_eq!(s.client.stage(), Stage::Rcpt);
    s.server("250 2.1.5 ok\r\n");
    assert!(s.recipient_reply(0).is_positive_completion());
    s.expect_sent("RCPT TO:<b@example.com>\r\n");
    s.server("250 2.1.5 ok\r\n");
    s.recipient_reply(1);
    s.expect_sent("DATA\r\n");
    assert_eq!(s.client.stage(), Stage::Data);
    s.server("354 go ahead\r\n");
    assert_eq!(s.client.stage(), Stage::Body);
    assert!(!s.client.delivery_unknown_pending());
    s.expect_sent(WIRE_BODY);
    assert!(s.client.delivery_unknown_pending());

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
fn pipelined_delivery_is_one_write() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");

    // All four replies in one read.
    s.server("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n");
    s.recipient_reply(0);
    assert!(s.recipient_reply(1).is_permanent());
    s.expect_sent("x\r\n.\r\n");
    s.server("250 queued\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
}

#[test]
fn wire_form_data_sent_without_copy() {
    let mut s = Session::ready(&["PIPELINING"]);
    let body = "Subject: x\r\n\r\nbody\r\n";
    let submitted = transaction(&["a@example.com"], body);
    let data = submitted.data.clone();
    s.start(submitted);
    s.client.poll_transmit_parts().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);

    let parts = s.client.poll_transmit_parts().unwrap();
    assert_eq!(parts.head.as_ptr(), data.as_ptr());
    assert_eq!(parts.head, body.as_bytes());
    assert_eq!(&parts.tail[..], b".\r\n");
}

#[test]
fn other_data_sent_encoded_in_one_part() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], BODY));
    s.client.poll_transmit_parts().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);

    let parts = s.client.poll_transmit_parts().unwrap();
    assert_eq!(parts.head, WIRE_BODY.as_bytes());
    assert!(parts.tail.is_empty());
}

#[test]
fn pipelined_replies_one_by_one() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n");
    assert_eq!(s.client.state(), ClientState::ExpectRcpt);
    s.nothing_sent();
    s.server("250 ok\r\n");
    assert_eq!(s.client.state(), ClientState::ExpectData);
    s.nothing_sent();
    s.server("354 go\r\n");
    s.expect_sent("x\r\n.\r\n");
}

#[test]
fn reuse_starts_with_rset() {
    let mut s = Session::ready(&[]);
    for round in 0..3 {
        s.start(transaction(&["a@example.com"], "x"));
        if round > 0 {
            s.expect_sent("RSET\r\n");
            assert_eq!(s.client.stage(), Stage::Rset);
            s.server("250 2.0.0 ok\r\n");
        }
        s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
        s.server("250 ok\r\n");
        s.expect_sent("RCPT TO:<a@example.com>\r\n");
        s.server("250 ok\r\n");
        s.recipient_reply(0);
        s.expect_sent("DATA\r\n");
        s.server("354 go\r\n");
        s.expect_sent("x\r\n.\r\n");
        s.server("250 ok\r\n");
        assert!(
            matches!(s.transaction_end(), TransactionEnd::Delivered { .. }),
            "round {round}"
        );
    }
}

#[test]
fn pipelined_reuse_puts_rset_in_group() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.expect_sent("x\r\n.\r\n");
    s.server("250 ok\r\n");
    s.events();

    s.start(transaction(&["b@example.com"], "y"));
    s.expect_sent("RSET\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_sent("y\r\n.\r\n");
    s.server("250 ok\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
}

#[test]
fn rset_rejected_fails_session() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("451 try later\r\n");
    s.mail_rejected();
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::MailRejected { .. }
    ));

    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("RSET\r\n");
    s.server("500 what\r\n");
    match s.transaction_end() {
        TransactionEnd::Aborted {
            error: ClientError::RsetRejected(_),
            delivery_unknown,
        } => assert!(!delivery_unknown),
        other => panic!("{other:?}"),
    }
    match s.next_event() {
        ClientEvent::Failed { stage, error } => {
            assert_eq!(stage, Stage::Rset);
            assert!(!error.allows_quit());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn mail_rejected_without_pipelining() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("553 5.1.8 bad sender\r\n");
    assert_eq!(s.mail_rejected().code.as_u16(), 553);
    match s.transaction_end() {
        TransactionEnd::MailRejected { reply } => assert_eq!(reply.code.as_u16(), 553),
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
    s.no_events();
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn mail_rejected_with_pipelining_reads_group() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
    // The rejection is reported as it arrives, before the rest of the
    // group's replies.
    s.server("451 4.3.0 busy\r\n");
    assert_eq!(s.mail_rejected().code.as_u16(), 451);
    s.no_events();
    s.server("503 need MAIL\r\n503 need MAIL\r\n503 need RCPT\r\n");
    match s.transaction_end() {
        TransactionEnd::MailRejected { reply } => assert_eq!(reply.code.as_u16(), 451),
        other => panic!("{other:?}"),
    }
    // The 503s to RCPT are the MAIL failure's consequence, not the
    // recipients' own fate.
    s.no_events();
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn mail_rejection_reported_before_eof() {
    // The server rejects MAIL and closes before replying to the rest of
    // the group. The transaction is aborted, but the rejection came first,
    // so the driver can still fail the recipients with it.
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.client.poll_transmit().expect("a write");
    s.client.handle_transmitted(s.now);
    s.server("550 5.7.1 sender rejected\r\n");
    let reply = s.mail_rejected();
    assert_eq!(reply.to_string(), "550 5.7.1 sender rejected");
    s.no_events();

    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::ConnectionClosed { stage: Stage::Rcpt },
            delivery_unknown: false
        }
    ));
    assert!(matches!(s.next_event(), ClientEvent::Failed { .. }));
    s.no_events();
}

#[test]
fn all_rcpt_rejected_without_pipelining() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("250 ok\r\n");
    s.expect_sent("RCPT TO:<a@example.com>\r\n");
    s.server("550 no\r\n");
    s.recipient_reply(0);
    s.expect_sent("RCPT TO:<b@example.com>\r\n");
    s.server("450 later\r\n");
    assert!(s.recipient_reply(1).is_transient());
    assert_eq!(s.transaction_end(), TransactionEnd::NoValidRecipients);
    s.nothing_sent();
}

#[test]
fn all_rcpt_rejected_but_354_sends_lone_dot() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "secret body"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n550 no such user\r\n354 go ahead\r\n");
    s.recipient_reply(0);
    s.expect_sent(".\r\n");
    assert!(
        !s.client.delivery_unknown_pending(),
        "no message data went out"
    );
    s.server("554 5.5.1 no valid recipients\r\n");
    assert_eq!(s.transaction_end(), TransactionEnd::NoValidRecipients);
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn all_rcpt_rejected_and_data_rejected() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n550 no\r\n554 no valid recipients\r\n");
    s.recipient_reply(0);
    assert_eq!(s.transaction_end(), TransactionEnd::NoValidRecipients);
    s.nothing_sent();
}

#[test]
fn data_rejected() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n451 4.3.0 local error\r\n");
    s.recipient_reply(0);
    match s.transaction_end() {
        TransactionEnd::DataRejected { reply } => assert!(reply.is_transient()),
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
}

#[test]
fn message_rejected_after_dot() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("250 ok\r\n");
    s.expect_sent("RCPT TO:<a@example.com>\r\n");
    s.server("250 ok\r\n");
    s.recipient_reply(0);
    s.expect_sent("DATA\r\n");
    s.server("354 go\r\n");
    s.expect_sent("x\r\n.\r\n");
    s.server("554 5.7.1 spam\r\n");
    match s.transaction_end() {
        TransactionEnd::MessageRejected { reply } => {
            assert_eq!(reply.enhanced.unwrap().to_string(), "5.7.1")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn helo_fallback() {
    let mut s = Session::new(TlsPolicy::Opportunistic);
    s.server("220 old.example.com\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("502 command not implemented\r\n");
    s.expect_sent("HELO client.example.org\r\n");
    assert_eq!(s.client.state(), ClientState::ExpectHelo);
    s.server("250 old.example.com\r\n");
    match s.next_event() {
        ClientEvent::Ready { capabilities, tls } => {
            assert!(!tls);
            assert!(!capabilities.pipelining);
            assert_eq!(capabilities.domain, "old.example.com");
        }
        other => panic!("{other:?}"),
    }

    // No SIZE parameter, no pipelining.
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
}

#[test]
fn helo_rejected_allows_quit() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.server("220 old.example.com\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("500 what\r\n");
    s.expect_sent("HELO client.example.org\r\n");
    s.server("550 go away\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            stage,
            error: ClientError::HeloRejected(reply),
        } => {
            assert_eq!(stage, Stage::Ehlo);
            assert_eq!(reply.code.as_u16(), 550);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Unusable);
    assert!(s.client.quit(s.now));
    s.expect_sent("QUIT\r\n");
}

#[test]
fn ehlo_transient_failure() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("451 not now\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            error: ClientError::EhloRejected(reply),
            ..
        } => assert!(reply.is_transient()),
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
}

#[test]
fn banner_554_allows_quit() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.server("554 5.7.1 no service for you\r\n");
    match s.next_event() {
        ClientEvent::Failed { stage, error } => {
            assert_eq!(stage, Stage::Banner);
            assert!(matches!(error, ClientError::BannerRejected(_)));
            assert!(error.allows_quit());
        }
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
    assert!(s.client.quit(s.now));
    s.expect_sent("QUIT\r\n");
    s.server("221 bye\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Closed { reply: Some(_) }
    ));
}

#[test]
fn banner_421_closes() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.server("421 4.3.2 too busy\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            stage,
            error: ClientError::ServiceClosing(reply),
        } => {
            assert_eq!(stage, Stage::Banner);
            assert_eq!(reply.code.as_u16(), 421);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
    assert!(!s.client.quit(s.now));
    s.nothing_sent();
    assert_eq!(s.client.next_timeout(), None);
}

#[test]
fn service_closing_at_rcpt() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("250 ok\r\n");
    s.expect_sent("RCPT TO:<a@example.com>\r\n");
    s.server("250 ok\r\n");
    s.recipient_reply(0);
    s.expect_sent("RCPT TO:<b@example.com>\r\n");
    s.server("421 4.7.0 closing\r\n");
    match s.transaction_end() {
        TransactionEnd::Aborted {
            error: ClientError::ServiceClosing(_),
            delivery_unknown,
        } => assert!(!delivery_unknown),
        other => panic!("{other:?}"),
    }
    match s.next_event() {
        ClientEvent::Failed { stage, .. } => assert_eq!(stage, Stage::Rcpt),
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn service_closing_in_pipelined_group() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    // The rest of the group's replies never come, and late bytes are
    // ignored.
    s.server("250 ok\r\n421 closing\r\n250 late\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted { .. }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Rcpt,
            ..
        }
    ));
    s.no_events();
}

#[test]
fn service_closing_at_data() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n421 shutting down\r\n");
    s.recipient_reply(0);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            delivery_unknown: false,
            ..
        }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Data,
            ..
        }
    ));
}

#[test]
fn service_closing_after_dot_is_an_answer() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_sent("x\r\n.\r\n");
    s.server("421 4.3.0 shutting down\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::ServiceClosing(_),
            delivery_unknown: false
        }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Body,
            ..
        }
    ));
}

#[test]
fn service_closing_when_idle() {
    let mut s = Session::ready(&[]);
    s.server("421 4.4.2 idle timeout\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Idle,
            error: ClientError::ServiceClosing(_)
        }
    ));
}

#[test]
fn eof_after_dot_is_delivery_unknown() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_sent("x\r\n.\r\n");
    assert!(s.client.delivery_unknown_pending());

    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::ConnectionClosed { stage: Stage::Body },
            delivery_unknown: true
        }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Body,
            ..
        }
    ));
    assert!(!s.client.delivery_unknown_pending());
    assert_eq!(s.client.stage(), Stage::Body);
}

#[test]
fn eof_before_data_written_is_not_unknown() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    // The driver has not taken the message data yet.
    assert!(!s.client.delivery_unknown_pending());
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
fn garbage_reply_is_protocol_error() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("HTTP/1.1 400 Bad Request\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::InvalidReply(_),
            ..
        }
    ));
    match s.next_event() {
        ClientEvent::Failed { stage, error } => {
            assert_eq!(stage, Stage::Mail);
            assert!(!error.allows_quit());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn reply_when_idle_is_protocol_error() {
    let mut s = Session::ready(&[]);
    s.server("250 surprise\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            stage: Stage::Idle,
            error: ClientError::UnexpectedReply { .. }
        }
    ));
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn wrong_class_reply_is_protocol_error() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("354 go ahead\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::UnexpectedReply { .. },
            ..
        }
    ));
}

#[test]
fn extra_reply_in_pipelined_group_is_protocol_error() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_sent("x\r\n.\r\n");
    s.server("250 ok\r\n250 one reply too many\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::UnexpectedReply { .. },
            ..
        }
    ));
}

#[test]
fn quit_after_transaction() {
    let mut s = Session::ready(&[]);
    assert!(s.client.quit(s.now));
    assert_eq!(s.client.stage(), Stage::Quit);
    s.expect_sent("QUIT\r\n");
    assert!(!s.client.quit(s.now), "QUIT twice");
    s.server("221 2.0.0 bye\r\n");
    match s.next_event() {
        ClientEvent::Closed { reply: Some(reply) } => assert_eq!(reply.code.as_u16(), 221),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
    assert_eq!(s.client.next_timeout(), None);
}

#[test]
fn quit_answered_by_eof() {
    let mut s = Session::ready(&[]);
    s.client.quit(s.now);
    s.expect_sent("QUIT\r\n");
    s.client.handle_eof(s.now);
    assert_eq!(s.next_event(), ClientEvent::Closed { reply: None });
    s.no_events();
}

#[test]
fn quit_refused_mid_transaction() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    assert!(!s.client.quit(s.now));
    assert_eq!(s.client.state(), ClientState::ExpectMail);
}

#[test]
fn abort_mid_transaction() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.client.poll_transmit().unwrap();
    s.client.abort();
    assert_eq!(
        s.transaction_end(),
        TransactionEnd::Aborted {
            error: ClientError::Aborted,
            delivery_unknown: true
        }
    );
    s.no_events();
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn start_refused_when_not_ready() {
    let mut s = Session::new(TlsPolicy::Disabled);
    let rejected = s
        .client
        .start_transaction(transaction(&["a@example.com"], "x"), s.now)
        .unwrap_err();
    assert_eq!(
        rejected.error,
        TransactionError::NotReady(ClientState::ExpectBanner)
    );
    assert!(!rejected.error.is_permanent());
    assert_eq!(rejected.transaction.recipients, ["a@example.com"]);
    s.nothing_sent();
}

#[test]
fn start_refused_when_busy() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    let rejected = s
        .client
        .start_transaction(transaction(&["b@example.com"], "y"), s.now)
        .unwrap_err();
    assert_eq!(
        rejected.error,
        TransactionError::NotReady(ClientState::ExpectMail)
    );
}

#[test]
fn oversized_message_fails_before_sending() {
    let mut s = Session::ready(&["SIZE 10"]);
    let rejected = s
        .client
        .start_transaction(transaction(&["a@example.com"], "0123456789"), s.now)
        .unwrap_err();
    assert!(rejected.error.is_permanent());
    assert!(
        rejected
            .error
            .to_string()
            .contains("SIZE maximum of 10 octets"),
        "{}",
        rejected.error
    );
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Ready);

    // The session still takes a message that fits, and it is still the
    // first transaction: no RSET.
    s.start(transaction(&["a@example.com"], "01234567"));
    s.expect_sent("MAIL FROM:<sender@example.org> SIZE=10\r\n");
}

#[test]
fn bad_recipient_fails_before_sending() {
    let mut s = Session::ready(&["PIPELINING"]);
    let rejected = s
        .client
        .start_transaction(
            transaction(&["a@example.com", "b@example.com>\r\nDATA"], "x"),
            s.now,
        )
        .unwrap_err();
    assert!(rejected.error.is_permanent());
    s.nothing_sent();
}

#[test]
fn utf8_recipient_without_smtputf8() {
    let mut s = Session::ready(&["8BITMIME"]);
    let rejected = s
        .client
        .start_transaction(transaction(&["jörg@example.com"], "x"), s.now)
        .unwrap_err();
    assert!(rejected.error.is_permanent());
    assert!(
        rejected.error.to_string().contains("SMTPUTF8"),
        "{}",
        rejected.error
    );
}

#[test]
fn utf8_recipient_with_smtputf8() {
    let mut s = Session::ready(&["8BITMIME", "SMTPUTF8", "PIPELINING"]);
    s.start(transaction(&["jörg@example.com"], "x"));
    s.expect_sent(
        "MAIL FROM:<sender@example.org> SMTPUTF8\r\nRCPT TO:<jörg@example.com>\r\nDATA\r\n",
    );
}

#[test]
fn eight_bit_body_gets_body_parameter() {
    let mut s = Session::ready(&["8BITMIME"]);
    s.start(transaction(&["a@example.com"], "Subject: x\n\ncaf\u{e9}\n"));
    s.expect_sent("MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n");
}

#[test]
fn long_line_fails_before_sending() {
    let body = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(999));
    let mut s = Session::ready(&["PIPELINING"]);
    let rejected = s
        .client
        .start_transaction(transaction(&["a@example.com"], &body), s.now)
        .unwrap_err();
    assert!(rejected.error.is_permanent());
    assert_eq!(rejected.error.status_code().to_string(), "5.6.3");
    let text = rejected.error.to_string();
    assert!(
        text.starts_with("line 3 of the message is 999 octets long"),
        "{text}"
    );
    assert!(text.contains("long_lines = \"send\""), "{text}");
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn long_line_sent_as_it_is_when_allowed() {
    let body = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(999));
    let mut config = ClientConfig::new("client.example.org");
    config.tls_policy = TlsPolicy::Disabled;
    config.long_lines = LongLines::Send;
    let mut s = Session::ready_with(config, &["PIPELINING"]);
    s.start(transaction(&["a@example.com"], &body));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n354 go on\r\n");
    s.expect_sent(&format!("{body}.\r\n"));
}

#[test]
fn no_recipients_rejected() {
    let mut s = Session::ready(&[]);
    let rejected = s
        .client
        .start_transaction(transaction(&[], "x"), s.now)
        .unwrap_err();
    assert_eq!(rejected.error, TransactionError::NoRecipients);
}

#[test]
fn replies_split_across_reads() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    let replies = b"250 ok\r\n250-multi\r\n250 line\r\n354 go\r\n";
    for byte in replies {
        s.server_bytes(std::slice::from_ref(byte));
    }
    assert_eq!(s.recipient_reply(0).lines, ["multi", "line"]);
    s.expect_sent("x\r\n.\r\n");
}

#[test]
fn large_read_is_parsed_in_pieces() {
    // More reply bytes in one read than the parser may buffer at once.
    let mut s = Session::ready(&["PIPELINING"]);
    let recipients: Vec<String> = (0..2000).map(|i| format!("r{i}@example.com")).collect();
    let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
    s.start(transaction(&refs, "x"));
    s.client.poll_transmit().unwrap();

    let mut replies = String::from("250 ok\r\n");
    for _ in 0..2000 {
        replies.push_str("250 2.1.5 recipient ok, with a long text to fill the buffer\r\n");
    }
    replies.push_str("354 go\r\n");
    assert!(replies.len() > 64 * 1024);
    s.server(&replies);

    for index in 0..2000 {
        s.recipient_reply(index);
    }
    s.expect_sent("x\r\n.\r\n");
}
