//! STARTTLS under each TLS policy: offered, not offered, refused, and a
//! server that sends data after its 220. Under implicit TLS the session
//! starts on TLS and never sends STARTTLS.

mod proto_support;

use ec_smtp_client::proto::{ClientError, ClientEvent, ClientState, Stage, TlsUnavailable};
use ec_types::TlsPolicy;
use proto_support::{ehlo_reply, transaction, Session};

/// Banner and first EHLO, offering STARTTLS when `starttls` is set.
fn greeted(policy: TlsPolicy, starttls: bool) -> Session {
    let mut s = Session::new(policy);
    s.server("220 mx.example.com ESMTP\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    let keywords: &[&str] = if starttls {
        &["PIPELINING", "SIZE 1000", "STARTTLS"]
    } else {
        &["PIPELINING", "SIZE 1000"]
    };
    s.server(&ehlo_reply("mx.example.com", keywords));
    s
}

/// A session that just got the 220 to STARTTLS.
fn accepted(policy: TlsPolicy) -> Session {
    let mut s = greeted(policy, true);
    s.expect_sent("STARTTLS\r\n");
    s.server("220 2.0.0 ready to start TLS\r\n");
    s
}

#[test]
fn opportunistic_upgrades_when_offered() {
    let mut s = greeted(TlsPolicy::Opportunistic, true);
    s.expect_sent("STARTTLS\r\n");
    assert_eq!(s.client.stage(), Stage::StartTls);
    s.no_events();

    s.server("220 2.0.0 ready to start TLS\r\n");
    assert_eq!(s.next_event(), ClientEvent::StartTls);
    assert_eq!(s.client.state(), ClientState::ExpectTlsHandshake);
    assert_eq!(s.client.stage(), Stage::TlsHandshake);
    s.nothing_sent();

    s.client.tls_established(s.now).unwrap();
    assert!(s.client.is_tls());
    assert!(
        s.client.capabilities().is_none(),
        "pre-TLS capabilities kept"
    );
    s.expect_sent("EHLO client.example.org\r\n");
    assert_eq!(s.client.state(), ClientState::ExpectEhloAfterTls);

    // The server offers different things over TLS; only those count.
    s.server(&ehlo_reply("mx.example.com", &["8BITMIME", "AUTH PLAIN"]));
    match s.next_event() {
        ClientEvent::Ready { capabilities, tls } => {
            assert!(tls);
            assert!(!capabilities.pipelining);
            assert!(!capabilities.size);
            assert_eq!(capabilities.auth, ["PLAIN"]);
        }
        other => panic!("{other:?}"),
    }

    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org>\r\n");
}

#[test]
fn opportunistic_plain_when_not_offered() {
    let mut s = greeted(TlsPolicy::Opportunistic, false);
    match s.next_event() {
        ClientEvent::Ready { tls, capabilities } => {
            assert!(!tls);
            assert!(capabilities.pipelining);
        }
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
}

#[test]
fn opportunistic_continues_after_454() {
    let mut s = greeted(TlsPolicy::Opportunistic, true);
    s.expect_sent("STARTTLS\r\n");
    s.server("454 4.7.0 TLS not available\r\n");
    match s.next_event() {
        ClientEvent::Ready { tls, capabilities } => {
            assert!(!tls);
            assert_eq!(capabilities.max_message_size, Some(1000));
        }
        other => panic!("{other:?}"),
    }
    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org> SIZE=3\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
}

#[test]
fn disabled_ignores_starttls() {
    let mut s = greeted(TlsPolicy::Disabled, true);
    assert!(matches!(
        s.next_event(),
        ClientEvent::Ready { tls: false, .. }
    ));
    s.nothing_sent();
}

#[test]
fn required_upgrades_when_offered() {
    let mut s = accepted(TlsPolicy::Required);
    assert_eq!(s.next_event(), ClientEvent::StartTls);
    s.client.tls_established(s.now).unwrap();
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("250 mx.example.com\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Ready { tls: true, .. }
    ));
}

#[test]
fn implicit_never_sends_starttls() {
    let mut s = greeted(TlsPolicy::Implicit, true);
    assert!(s.client.is_tls());
    match s.next_event() {
        ClientEvent::Ready { tls, capabilities } => {
            assert!(tls);
            assert!(capabilities.starttls, "offered, and still not sent");
            assert!(capabilities.pipelining);
        }
        other => panic!("{other:?}"),
    }
    s.nothing_sent();

    s.start(transaction(&["a@example.com"], "x"));
    s.expect_sent("MAIL FROM:<sender@example.org> SIZE=3\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
}

#[test]
fn implicit_with_helo_server() {
    let mut s = Session::new(TlsPolicy::Implicit);
    s.server("220 old\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("500 unknown command\r\n");
    s.expect_sent("HELO client.example.org\r\n");
    s.server("250 old\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Ready { tls: true, .. }
    ));
    s.nothing_sent();
}

#[test]
fn implicit_refuses_tls_established() {
    let mut s = greeted(TlsPolicy::Implicit, true);
    assert!(s.client.tls_established(s.now).is_err());
}

#[test]
fn required_not_offered() {
    let mut s = greeted(TlsPolicy::Required, false);
    match s.next_event() {
        ClientEvent::Failed { stage, error } => {
            assert_eq!(stage, Stage::Ehlo);
            assert_eq!(
                error,
                ClientError::TlsUnavailable(TlsUnavailable::NotOffered)
            );
            assert!(
                error
                    .to_string()
                    .starts_with("TLS required but unavailable"),
                "{error}"
            );
            assert!(error.allows_quit());
        }
        other => panic!("{other:?}"),
    }
    s.no_events();
    s.nothing_sent();

    // No mail on this connection, but a polite QUIT.
    assert_eq!(s.client.state(), ClientState::Unusable);
    let rejected = s
        .client
        .start_transaction(transaction(&["a@example.com"], "x"), s.now)
        .unwrap_err();
    assert!(!rejected.error.is_permanent());
    s.nothing_sent();
    assert!(s.client.quit(s.now));
    s.expect_sent("QUIT\r\n");
}

#[test]
fn required_refused_with_454() {
    let mut s = greeted(TlsPolicy::Required, true);
    s.expect_sent("STARTTLS\r\n");
    s.server("454 4.7.0 TLS not available due to temporary reason\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            stage,
            error: ClientError::TlsUnavailable(TlsUnavailable::Rejected(reply)),
        } => {
            assert_eq!(stage, Stage::StartTls);
            assert_eq!(reply.code.as_u16(), 454);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.client.state(), ClientState::Unusable);
    s.nothing_sent();
}

#[test]
fn required_with_helo_server() {
    let mut s = Session::new(TlsPolicy::Required);
    s.server("220 old\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("500 unknown command\r\n");
    s.expect_sent("HELO client.example.org\r\n");
    s.server("250 old\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::TlsUnavailable(TlsUnavailable::NotOffered),
            ..
        }
    ));
}

#[test]
fn bytes_after_220_in_same_read() {
    let mut s = greeted(TlsPolicy::Opportunistic, true);
    s.expect_sent("STARTTLS\r\n");
    s.server("220 2.0.0 go ahead\r\n250-injected\r\n250 PIPELINING\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            stage,
            error: ClientError::StartTlsInjection { len },
        } => {
            assert_eq!(stage, Stage::TlsHandshake);
            assert_eq!(len, "250-injected\r\n250 PIPELINING\r\n".len());
        }
        other => panic!("{other:?}"),
    }
    s.no_events();
    s.nothing_sent();
    assert_eq!(s.client.state(), ClientState::Closed);
    assert!(!s.client.quit(s.now));
    assert!(s.client.tls_established(s.now).is_err());
}

#[test]
fn partial_line_after_220() {
    let mut s = greeted(TlsPolicy::Required, true);
    s.expect_sent("STARTTLS\r\n");
    s.server("220 go ahead\r\n2");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::StartTlsInjection { len: 1 },
            ..
        }
    ));
}

#[test]
fn bytes_after_220_in_later_read() {
    let mut s = accepted(TlsPolicy::Opportunistic);
    assert_eq!(s.next_event(), ClientEvent::StartTls);
    // The driver read more clear text before it started the handshake.
    s.server("250 injected\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::StartTlsInjection { len: 14 },
            ..
        }
    ));
    assert_eq!(s.client.state(), ClientState::Closed);
}

#[test]
fn bytes_after_220_in_large_read() {
    // A read larger than the parser's buffer is fed in pieces; the bytes
    // not yet fed still count as sent after the 220.
    let mut config = ec_smtp_client::proto::ClientConfig::new(proto_support::EHLO_DOMAIN);
    config.reply_limits.max_buffered = 64;
    let mut s = Session::with_config(config);
    s.server("220 mx\r\n");
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("250-mx\r\n250 STARTTLS\r\n");
    s.expect_sent("STARTTLS\r\n");

    let mut read = b"220 go ahead\r\n".to_vec();
    read.extend_from_slice(&[b'x'; 200]);
    s.server_bytes(&read);
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::StartTlsInjection { len: 200 },
            ..
        }
    ));
}

#[test]
fn ehlo_after_tls_rejected() {
    let mut s = accepted(TlsPolicy::Opportunistic);
    s.next_event();
    s.client.tls_established(s.now).unwrap();
    s.expect_sent("EHLO client.example.org\r\n");
    s.server("554 no\r\n");
    match s.next_event() {
        ClientEvent::Failed {
            error: ClientError::EhloRejected(_),
            stage,
        } => assert_eq!(stage, Stage::Ehlo),
        other => panic!("{other:?}"),
    }
    s.nothing_sent();
}

#[test]
fn tls_established_out_of_order() {
    let mut s = greeted(TlsPolicy::Opportunistic, true);
    let error = s.client.tls_established(s.now).unwrap_err();
    assert_eq!(error.state, ClientState::ExpectStartTls);
    s.expect_sent("STARTTLS\r\n");
}

#[test]
fn reply_during_handshake_wait_is_injection() {
    let mut s = accepted(TlsPolicy::Required);
    s.next_event();
    s.server("\r\n");
    assert!(matches!(
        s.next_event(),
        ClientEvent::Failed {
            error: ClientError::StartTlsInjection { len: 2 },
            ..
        }
    ));
}

#[test]
fn ehlo_with_handshake_not_resent() {
    let mut s = accepted(TlsPolicy::Opportunistic);
    assert_eq!(s.next_event(), ClientEvent::StartTls);
    assert_eq!(
        &s.client.ehlo_after_tls()[..],
        b"EHLO client.example.org\r\n"
    );

    s.client.tls_established_with_ehlo(s.now).unwrap();
    assert!(s.client.is_tls());
    assert!(s.client.capabilities().is_none());
    assert_eq!(s.client.state(), ClientState::ExpectEhloAfterTls);
    s.nothing_sent();

    s.server(&ehlo_reply("mx.example.com", &["PIPELINING"]));
    assert!(matches!(
        s.next_event(),
        ClientEvent::Ready { tls: true, .. }
    ));
    assert!(s.client.tls_established_with_ehlo(s.now).is_err());
}
