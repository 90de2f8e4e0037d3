//! QUIT after the last transaction of a connection
//! (`Client::quit_after_transaction`): in the group with the message data
//! when the server offers PIPELINING, right after the final reply when it
//! does not, and what a failure leaves to the driver.

mod proto_support;

use ec_smtp_client::proto::{ClientError, ClientEvent, ClientState, Stage, Timer, TransactionEnd};
use proto_support::{transaction, Session};

const GROUP: &str = "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n";

/// Returns a session with PIPELINING whose one transaction, marked to end
/// with QUIT, has written its message data and QUIT after the 354.
fn data_sent_with_quit() -> Session {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.quit_after_transaction().unwrap();
    s.expect_sent(GROUP);
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_writes(&["x\r\n.\r\n", "QUIT\r\n"]);
    s
}

#[test]
fn quit_after_refused_when_idle() {
    let mut s = Session::ready(&["PIPELINING"]);
    let error = s.client.quit_after_transaction().unwrap_err();
    assert_eq!(error.state, ClientState::Ready);
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Ready);
}

#[test]
fn pipelined_quit_follows_final_dot() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.quit_after_transaction().unwrap();
    s.expect_sent(GROUP);
    assert!(!s.client.quit_handed_out());

    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_writes(&["x\r\n.\r\n", "QUIT\r\n"]);
    assert!(s.client.quit_handed_out());
    assert_eq!(s.client.state(), ClientState::ExpectDataReply);

    // The final reply and the reply to QUIT, in one read.
    s.server("250 2.0.0 queued\r\n221 2.0.0 bye\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
    match s.next_event() {
        ClientEvent::Closed { reply: Some(reply) } => assert_eq!(reply.code.as_u16(), 221),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
    s.no_events();
}

#[test]
fn quit_reply_wait_uses_quit_timer() {
    let mut s = data_sent_with_quit();

    s.server("250 2.0.0 queued\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
    assert_eq!(s.client.state(), ClientState::ExpectQuit);
    assert_eq!(s.client.stage(), Stage::Quit);
    assert!(matches!(s.client.running_timer(), Some((Timer::Quit, _))));
    s.nothing_sent();

    let left = s.time_left();
    s.advance(left);
    assert_eq!(s.next_event(), ClientEvent::Closed { reply: None });
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn pipelined_quit_follows_bdat_chunk() {
    let mut s = Session::ready(&["PIPELINING", "CHUNKING"]);
    s.start(transaction(&["a@example.com"], "x\r\n"));
    s.client.quit_after_transaction().unwrap();
    s.expect_writes(&[
        "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 3 LAST\r\nx\r\n",
        "QUIT\r\n",
    ]);
    s.server("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n221 bye\r\n");
    s.recipient_reply(0);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Closed { reply: Some(_) }
    ));
}

#[test]
fn unpipelined_quit_follows_final_reply() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.quit_after_transaction().unwrap();
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("250 ok\r\n");
    s.expect_sent("RCPT TO:<a@example.com>\r\n");
    s.server("250 ok\r\n");
    s.recipient_reply(0);
    s.expect_sent("DATA\r\n");
    s.server("354 go\r\n");
    s.expect_sent("x\r\n.\r\n");
    assert!(!s.client.quit_handed_out());

    s.server("250 queued\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
    s.expect_sent("QUIT\r\n");
    assert!(s.client.quit_handed_out());
    assert_eq!(s.client.state(), ClientState::ExpectQuit);
    s.server("221 bye\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Closed { reply: Some(_) }
    ));
}

#[test]
fn quit_follows_transaction_without_data() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.quit_after_transaction().unwrap();
    s.expect_sent(GROUP);
    s.server("250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n");
    assert!(s.recipient_reply(0).is_permanent());
    assert_eq!(s.transaction_end(), TransactionEnd::NoValidRecipients);
    s.expect_sent("QUIT\r\n");
    assert_eq!(s.client.state(), ClientState::ExpectQuit);
}

#[test]
fn rejected_message_still_ends_with_quit() {
    let mut s = data_sent_with_quit();
    s.server("554 5.7.1 spam\r\n221 bye\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::MessageRejected { .. }
    ));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Closed { reply: Some(_) }
    ));
}

#[test]
fn final_dot_421_fails_session() {
    let mut s = data_sent_with_quit();
    s.server("421 4.3.0 shutting down\r\n");
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
            error: ClientError::ServiceClosing(_),
            ..
        }
    ));
    assert!(
        s.client.quit_handed_out(),
        "the driver must not send QUIT again"
    );
    assert!(!s.client.quit(s.now));
}

#[test]
fn failure_before_data_leaves_quit_unsent() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.quit_after_transaction().unwrap();
    s.expect_sent(GROUP);
    s.client.handle_eof(s.now);
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Aborted { .. }
    ));
    assert!(!s.client.quit_handed_out());
}

#[test]
fn invalid_reply_to_quit_ends_session() {
    let mut s = Session::ready(&["PIPELINING"]);
    assert!(s.client.quit(s.now));
    s.expect_sent("QUIT\r\n");
    s.server("bye\r\n");
    assert_eq!(s.next_event(), ClientEvent::Closed { reply: None });
    assert_eq!(s.client.state(), ClientState::Closed);
    s.no_events();
}

#[test]
fn taken_parser_keeps_partial_quit_reply() {
    let mut s = Session::ready(&["PIPELINING", "CHUNKING"]);
    s.start(transaction(&["a@example.com"], "x\r\n"));
    s.client.quit_after_transaction().unwrap();
    s.client.poll_transmit().unwrap();
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n250 queued\r\n221 2.0.0 B");
    s.recipient_reply(0);
    s.transaction_end();
    assert_eq!(s.client.state(), ClientState::ExpectQuit);

    let mut parser = s.client.take_reply_parser();
    assert_eq!(s.client.buffered_len(), 0);
    assert_eq!(parser.next_reply().unwrap(), None);
    parser.push(b"ye\r\n").unwrap();
    let reply = parser.next_reply().unwrap().expect("the whole 221");
    assert_eq!(reply.to_string(), "221 2.0.0 Bye");
}
