//! How a connection ends after its last transaction: QUIT, the 221, TLS
//! close_notify and the TCP close, and the close outcome `closeconn`
//! reports for each way a server can get that wrong.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, run, submission};
use ec_tests::fault_peer::{
    Close, ConnectionRecord, Event, FaultPeer, Scenario, ScenarioBuilder, Verb,
};
use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use ec_types::{CloseOutcome, CloseReason, Config, Submission, TlsPolicy, TlsSettings};

const DOMAIN: &str = "quit.test";

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, b"Subject: quit\r\n\r\nbody\r\n")
}

/// Adds TLS with a certificate from a fresh test CA to `builder`, so the
/// peer offers STARTTLS.
fn with_tls(builder: ScenarioBuilder) -> ScenarioBuilder {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    builder.tls(leaf.server_config().expect("server TLS configuration"))
}

/// Opportunistic STARTTLS without certificate checks: these tests are
/// about the close, not the certificate.
fn tls_config(peer: &FaultPeer) -> Config {
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Opportunistic,
        ..TlsSettings::default()
    });
    config
}

fn is_quit(event: &Event) -> bool {
    matches!(event, Event::Command { line, .. } if line.starts_with(b"QUIT"))
}

fn is_client_close(event: &Event) -> bool {
    matches!(event, Event::ClientClosed(_))
}

/// From the QUIT's arrival to the client's close, as the peer saw them.
fn quit_to_close(record: &ConnectionRecord) -> Duration {
    let quit = record.time_of(is_quit).expect("QUIT on the wire");
    let closed = record.time_of(is_client_close).expect("the client closed");
    closed.saturating_sub(quit)
}

fn assert_delivered_then_closed(result: &ec_tests::delivery::RunResult) {
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    for close in &result.closes {
        assert!(
            matches!(
                close.reason,
                CloseReason::Shutdown | CloseReason::IdleTimeout
            ),
            "{close:?}"
        );
    }
}

#[test]
fn silent_quit_times_out() {
    let peer = FaultPeer::start_on_thread(Scenario::builder().silence_after_quit().build())
        .expect("peer starts");

    let result = run(
        fault_config(DOMAIN, peer.addr()),
        vec![message(1)],
        Duration::from_secs(20),
    );

    let records = assert_settled(&result, &peer);
    assert_delivered_then_closed(&result);
    assert_eq!(result.close_outcomes(), [CloseOutcome::QuitTimedOut]);
    let waited = quit_to_close(&records[0]);
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(1500),
        "the client waited {waited:?} after QUIT; the QUIT timeout is 500 ms"
    );
}

#[test]
fn close_without_221() {
    let peer = FaultPeer::start_on_thread(Scenario::builder().close_without_221().build())
        .expect("peer starts");

    let result = run(
        fault_config(DOMAIN, peer.addr()),
        vec![message(1)],
        Duration::from_secs(20),
    );

    let records = assert_settled(&result, &peer);
    assert_delivered_then_closed(&result);
    assert_eq!(result.close_outcomes(), [CloseOutcome::NoQuitReply]);
    assert!(quit_to_close(&records[0]) < Duration::from_millis(450));
}

#[test]
fn clean_quit_over_tls() {
    let peer =
        FaultPeer::start_on_thread(with_tls(Scenario::builder()).build()).expect("peer starts");

    let result = run(tls_config(&peer), vec![message(1)], Duration::from_secs(20));

    let records = assert_settled(&result, &peer);
    assert_delivered_then_closed(&result);
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    assert!(records[0].tls().is_some());
    assert!(!records[0].mail_in_clear());
    assert!(records[0].client_sent_close_notify(), "{:#?}", records[0]);
}

#[test]
fn no_close_notify_after_221() {
    let scenario = with_tls(Scenario::builder())
        .quit_without_close_notify()
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = run(tls_config(&peer), vec![message(1)], Duration::from_secs(20));

    let records = assert_settled(&result, &peer);
    assert_delivered_then_closed(&result);
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    assert_eq!(records[0].peer_close(), Some(Close::WithoutCloseNotify));
    assert!(records[0].client_sent_close_notify(), "{:#?}", records[0]);
}

#[test]
fn no_close_notify_at_quit() {
    let scenario = with_tls(Scenario::builder())
        .truncate_at(Verb::Quit)
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = run(tls_config(&peer), vec![message(1)], Duration::from_secs(20));

    assert_settled(&result, &peer);
    assert_delivered_then_closed(&result);
    assert_eq!(result.close_outcomes(), [CloseOutcome::TlsTruncated]);
}

#[test]
fn no_close_notify_at_mail() {
    let scenario = with_tls(Scenario::builder())
        .truncate_at(Verb::Mail)
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = run(tls_config(&peer), vec![message(1)], Duration::from_secs(20));

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["deferred", "unsent"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.records_of(1)[0].attempts, 1);
    assert_eq!(result.closes.len(), 1);
    assert_eq!(result.closes[0].reason, CloseReason::PeerClosed);
    assert_eq!(result.close_outcomes(), [CloseOutcome::TlsTruncated]);
    assert!(
        !records[0].verbs().contains(&Verb::Quit),
        "no QUIT into a broken stream"
    );
}

/// Runs one message against `scenario` on every connection for a second:
/// the greeting fails every time, in step with the server.
fn run_refused(scenario: Scenario) -> (ec_tests::delivery::RunResult, Vec<ConnectionRecord>) {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let result = ec_tests::delivery::Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1))
        .domain_backoff(Duration::from_millis(300))
        .limit(Duration::from_secs(1))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

/// Checks that every connection ended with QUIT, got its 221, and closed
/// for a refused greeting, and that the message never went out.
fn assert_quit_after_refusal(result: &ec_tests::delivery::RunResult, records: &[ConnectionRecord]) {
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    for close in &result.closes {
        assert_eq!(
            (close.reason, close.outcome),
            (CloseReason::Greeting, CloseOutcome::Clean),
            "{close:?}"
        );
    }
    for record in records {
        assert_eq!(record.verbs().last(), Some(&Verb::Quit), "{record:#?}");
        assert!(record.bodies().is_empty());
    }
}

#[test]
fn quit_after_554_banner() {
    let scenario = Scenario::builder()
        .banner(ec_tests::fault_peer::Response::reply(
            "554 5.3.2 no service for you",
        ))
        .build();

    let (result, records) = run_refused(scenario);

    assert_quit_after_refusal(&result, &records);
    for record in &records {
        assert_eq!(record.verbs(), [Verb::Quit]);
    }
}

#[test]
fn quit_after_helo_refused() {
    let scenario = Scenario::builder()
        .reject_ehlo()
        .on(
            Verb::Helo,
            ec_tests::fault_peer::Response::reply("550 5.7.1 go away"),
        )
        .build();

    let (result, records) = run_refused(scenario);

    assert_quit_after_refusal(&result, &records);
    for record in &records {
        assert_eq!(record.verbs(), [Verb::Ehlo, Verb::Helo, Verb::Quit]);
    }
}
