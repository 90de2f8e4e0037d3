//! Every wait of a session times out on its own timer, in virtual time, and
//! a stall ends the session like a failure.

mod proto_support;

use std::time::Duration;

use ec_smtp_client::proto::{
    ClientError, ClientEvent, ClientState, Stage, Timeouts, Timer, TransactionEnd,
};
use ec_types::TlsPolicy;
use proto_support::{ehlo_reply, transaction, Session};

const SECOND: Duration = Duration::from_secs(1);

/// Checks that the running timer is `timer` with `duration` left, that it
/// does not fire a second early, and that it fires on time with a timeout
/// failure at `stage`.
#[track_caller]
fn times_out(s: &mut Session, timer: Timer, duration: Duration, stage: Stage) -> Vec<ClientEvent> {
    let (running, _) = s.client.running_timer().expect("no timer runs");
    assert_eq!(running, timer);
    assert_eq!(s.time_left(), duration);

    s.advance(duration - SECOND);
    s.no_events();
    s.advance(SECOND);

    let mut events = s.events();
    match events.pop() {
        Some(ClientEvent::Failed {
            stage: got,
            error:
                ClientError::Timeout {
                    timer: got_timer,
                    after,
                },
        }) => {
            assert_eq!(got, stage);
            assert_eq!(got_timer, timer);
            assert_eq!(after, duration);
        }
        other => panic!("expected a timeout failure, got {other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Closed);
    assert_eq!(s.client.next_timeout(), None);
    s.nothing_sent();
    events
}

#[test]
fn default_timeouts() {
    let t = Timeouts::default();
    assert_eq!(t.banner, 300 * SECOND);
    assert_eq!(t.ehlo, 300 * SECOND);
    assert_eq!(t.starttls, 120 * SECOND);
    assert_eq!(t.mail, 300 * SECOND);
    assert_eq!(t.rcpt, 300 * SECOND);
    assert_eq!(t.data_initiation, 120 * SECOND);
    assert_eq!(t.data_block, 180 * SECOND);
    assert_eq!(t.data_termination, 600 * SECOND);
    assert_eq!(t.rset, 120 * SECOND);
    assert_eq!(t.quit, 10 * SECOND);
    assert_eq!(t.idle, 5 * SECOND);
}

#[test]
fn banner_timeout() {
    let mut s = Session::new(TlsPolicy::Disabled);
    times_out(&mut s, Timer::Banner, 300 * SECOND, Stage::Banner);
}

#[test]
fn ehlo_timeout() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.advance(10 * SECOND);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    times_out(&mut s, Timer::Ehlo, 300 * SECOND, Stage::Ehlo);
}

#[test]
fn helo_timeout() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("502 no\r\n");
    s.expect_sent("HELO client.example.org\r\n");
    times_out(&mut s, Timer::Ehlo, 300 * SECOND, Stage::Ehlo);
}

#[test]
fn starttls_timeout() {
    let mut s = Session::new(TlsPolicy::Opportunistic);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server(&ehlo_reply("mx", &["STARTTLS"]));
    s.expect_sent("STARTTLS\r\n");
    times_out(&mut s, Timer::StartTls, 120 * SECOND, Stage::StartTls);
}

#[test]
fn tls_handshake_timeout() {
    let mut s = Session::new(TlsPolicy::Required);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server(&ehlo_reply("mx", &["STARTTLS"]));
    s.expect_sent("STARTTLS\r\n");
    s.server("220 go\r\n");
    assert_eq!(s.next_event(), ClientEvent::StartTls);
    times_out(
        &mut s,
        Timer::TlsHandshake,
        60 * SECOND,
        Stage::TlsHandshake,
    );
}

#[test]
fn ehlo_after_tls_timeout() {
    let mut s = Session::new(TlsPolicy::Required);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server(&ehlo_reply("mx", &["STARTTLS"]));
    s.expect_sent("STARTTLS\r\n");
    s.server("220 go\r\n");
    s.next_event();
    s.advance(30 * SECOND);
    s.client.tls_established(s.now).unwrap();
    s.expect_sent("EHLO client.example.org\r\n");
    times_out(&mut s, Timer::Ehlo, 300 * SECOND, Stage::Ehlo);
}

#[test]
fn mail_timeout() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    let events = times_out(&mut s, Timer::Mail, 300 * SECOND, Stage::Mail);
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::TransactionFinished(TransactionEnd::Aborted {
                error: ClientError::Timeout {
                    timer: Timer::Mail,
                    ..
                },
                delivery_unknown: false
            })]
        ),
        "{events:?}"
    );
}

#[test]
fn rset_timeout() {
    let mut s = Session::ready(&[]);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("550 no\r\n");
    s.events();
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("RSET\r\n");
    times_out(&mut s, Timer::Rset, 120 * SECOND, Stage::Rset);
}

#[test]
fn rcpt_timeout_per_reply() {
    // Each RCPT reply gets the full timeout, also inside a pipelined group.
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com", "b@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n");
    s.advance(299 * SECOND);
    s.server("250 ok\r\n");
    s.recipient_reply(0);
    let events = times_out(&mut s, Timer::Rcpt, 300 * SECOND, Stage::Rcpt);
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn data_initiation_timeout() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n");
    s.recipient_reply(0);
    times_out(&mut s, Timer::DataInitiation, 120 * SECOND, Stage::Data);
}

/// A pipelined session that just got 354.
fn at_354() -> Session {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.recipient_reply(0);
    s
}

#[test]
fn data_block_timeout() {
    // The driver took the data but never finished writing it.
    let mut s = at_354();
    assert_eq!(s.client.poll_transmit().unwrap(), "x\r\n.\r\n");
    let events = times_out(&mut s, Timer::DataBlock, 180 * SECOND, Stage::Body);
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::TransactionFinished(TransactionEnd::Aborted {
                delivery_unknown: true,
                ..
            })]
        ),
        "{events:?}"
    );
}

#[test]
fn data_termination_timeout() {
    let mut s = at_354();
    s.advance(100 * SECOND);
    // The write took 100 s; the 10 minutes start when it is done.
    s.expect_sent("x\r\n.\r\n");
    let events = times_out(&mut s, Timer::DataTermination, 600 * SECOND, Stage::Body);
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::TransactionFinished(TransactionEnd::Aborted {
                error: ClientError::Timeout {
                    timer: Timer::DataTermination,
                    ..
                },
                delivery_unknown: true
            })]
        ),
        "{events:?}"
    );
}

#[test]
fn slow_final_reply_within_timeout() {
    let mut s = at_354();
    s.expect_sent("x\r\n.\r\n");
    s.advance(599 * SECOND);
    s.server("250 ok, finally\r\n");
    assert!(matches!(
        s.transaction_end(),
        TransactionEnd::Delivered { .. }
    ));
}

#[test]
fn lone_dot_timeout_is_not_delivery_unknown() {
    let mut s = Session::ready(&["PIPELINING"]);
    s.start(transaction(&["a@example.com"], "x"));
    s.client.poll_transmit().unwrap();
    s.server("250 ok\r\n550 no\r\n354 go\r\n");
    s.recipient_reply(0);
    s.expect_sent(".\r\n");
    let events = times_out(&mut s, Timer::DataTermination, 600 * SECOND, Stage::Body);
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::TransactionFinished(TransactionEnd::Aborted {
                delivery_unknown: false,
                ..
            })]
        ),
        "{events:?}"
    );
}

#[test]
fn quit_timeout_is_a_normal_close() {
    let mut s = Session::ready(&[]);
    s.client.quit(s.now);
    s.expect_sent("QUIT\r\n");
    assert_eq!(s.time_left(), 10 * SECOND);
    s.advance(10 * SECOND);
    assert_eq!(s.next_event(), ClientEvent::Closed { reply: None });
    s.no_events();
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn idle_timeout_keeps_session() {
    let mut s = Session::ready(&[]);
    assert_eq!(s.client.running_timer().unwrap().0, Timer::Idle);
    s.advance(4 * SECOND);
    s.no_events();
    s.advance(SECOND);
    assert_eq!(s.next_event(), ClientEvent::IdleTimeout);
    assert_eq!(s.client.next_timeout(), None);
    assert_eq!(s.client.state(), ClientState::Ready);
    assert!(s.client.quit(s.now));
    s.expect_sent("QUIT\r\n");
}

#[test]
fn idle_timer_restarts_after_transaction() {
    let mut s = Session::ready(&[]);
    s.advance(4 * SECOND);
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
    s.server("550 no\r\n");
    s.events();
    assert_eq!(s.client.running_timer().unwrap().0, Timer::Idle);
    assert_eq!(s.time_left(), 5 * SECOND);
}

#[test]
fn early_timeout_call_does_nothing() {
    let mut s = Session::new(TlsPolicy::Disabled);
    s.client.handle_timeout(s.now);
    s.no_events();
    assert_eq!(s.client.state(), ClientState::ExpectBanner);
}

#[test]
fn configured_timeouts_used() {
    let mut config = ec_smtp_client::proto::ClientConfig::new(proto_support::EHLO_DOMAIN);
    config.timeouts.banner = 7 * SECOND;
    let mut s = Session::with_config(config);
    times_out(&mut s, Timer::Banner, 7 * SECOND, Stage::Banner);
}

#[test]
fn timeouts_from_engine_config() {
    let engine = ec_types::Timeouts::default();
    let timeouts = Timeouts::from_config(&engine, 3 * SECOND);
    assert_eq!(timeouts.data_initiation, engine.data);
    assert_eq!(timeouts.data_termination, engine.data_termination);
    assert_eq!(timeouts.idle, 3 * SECOND);
}
