//! Implicit TLS (RFC 8314) against the fault peer: a delivery whose every
//! command travels inside TLS, a server that greets in clear text, and one
//! that stays silent during the handshake. No message may go out in clear text,
//! and every connection must close with its accounting settled.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, Until};
use ec_tests::fault_peer::{Capabilities, FaultPeer, Response, Scenario, ScenarioBuilder, Verb};
use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use ec_types::{CloseOutcome, CloseReason, Config, Submission, TlsPolicy, TlsSettings, TlsVerify};

const DOMAIN: &str = "implicit.test";

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(
        tag,
        "sender@ec.test",
        &to,
        b"Subject: implicit\r\n\r\nbody\r\n",
    )
}

/// Adds a certificate from a fresh test CA and TLS from the first byte.
fn implicit(builder: ScenarioBuilder) -> ScenarioBuilder {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    builder
        .tls(leaf.server_config().expect("server TLS configuration"))
        .implicit_tls()
}

fn config(peer: &FaultPeer) -> Config {
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Implicit,
        verify: Some(TlsVerify::None),
        ..TlsSettings::default()
    });
    config.global.timeouts.tls_handshake = Some(Duration::from_millis(500));
    config
}

#[test]
fn every_command_inside_tls() {
    // The server offers STARTTLS inside TLS; the client must not take it.
    let scenario = implicit(Scenario::builder())
        .capabilities_after_tls(Capabilities::new().starttls(true))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(config(&peer)).submit(message(1)).run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    assert!(result.records_of(1)[0].tls.is_some());
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert!(record.tls().is_some());
    assert!(!record.mail_in_clear());
    assert_eq!(
        record.verbs(),
        [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Data, Verb::Quit]
    );
    assert!(record.client_sent_close_notify());
    let close = &result.closes[0];
    assert_eq!(close.outcome, CloseOutcome::Clean, "{close:?}");
    assert!(close.tls.is_some(), "{close:?}");
}

/// Runs `scenario` on every connection for two seconds and checks that the
/// message never went out and that every connection closed for `reason`.
fn assert_never_sent(scenario: Scenario, reason: CloseReason) {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(config(&peer))
        .submit(message(1))
        .domain_backoff(Duration::from_millis(300))
        .until(Until::EveryRecipientRecorded)
        .limit(Duration::from_secs(2))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert_eq!(result.records_of(1)[0].attempts, 0);
    // The run's end may close the last connection mid-handshake.
    let failed: Vec<_> = result
        .closes
        .iter()
        .filter(|close| close.reason != CloseReason::Shutdown)
        .collect();
    assert!(!failed.is_empty(), "{:#?}", result.closes);
    for close in failed {
        assert_eq!(close.reason, reason, "{close:?}");
    }
    for close in &result.closes {
        assert!(close.tls.is_none(), "{close:?}");
    }
    for record in &records {
        assert!(record.bodies().is_empty(), "{record:#?}");
        assert!(!record.verbs().contains(&Verb::Mail), "{record:#?}");
    }
}

#[test]
fn clear_text_greeting_fails_handshake() {
    assert_never_sent(Scenario::default(), CloseReason::TlsFailed);
}

#[test]
fn silent_server_times_out_handshake() {
    let scenario = Scenario::builder().banner(Response::silence()).build();
    assert_never_sent(scenario, CloseReason::Timeout);
}

/// A close that comes while the handshake runs ends it at once: the run's
/// end (an engine shutdown) does not wait for the 30 s handshake timeout or
/// the close deadline, and the session reports no failure of its own.
#[test]
fn shutdown_ends_a_pending_handshake() {
    let scenario = Scenario::builder().banner(Response::silence()).build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = config(&peer);
    config.global.timeouts.tls_handshake = Some(Duration::from_secs(30));

    let result = Run::new(config)
        .submit(message(1))
        .limit(Duration::from_millis(500))
        .run();

    assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert_eq!(result.closes.len(), 1, "{:#?}", result.closes);
    let close = &result.closes[0];
    assert_eq!(close.reason, CloseReason::Shutdown, "{close:?}");
    assert!(close.failure.is_none(), "no failure reported: {close:?}");
    assert!(
        close.duration < Duration::from_secs(2),
        "the close waited for the handshake: {close:?}"
    );
}
