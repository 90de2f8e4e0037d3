//! STARTTLS going wrong: a server that goes silent after its 220, one that
//! injects bytes after it, a TLS alert, and a `required` policy meeting a
//! server without TLS. No mail command may travel in clear text unless the
//! policy allows it.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, RunResult, Until};
use ec_tests::fault_peer::{
    tls, Capabilities, ConnectionRecord, FaultPeer, Response, Scenario, ScenarioBuilder, Verb,
};
use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use ec_types::{CloseOutcome, CloseReason, Config, Submission, TlsPolicy, TlsSettings};

const DOMAIN: &str = "tls.test";

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, b"Subject: tls\r\n\r\nbody\r\n")
}

/// Adds TLS with a certificate from a fresh test CA to `builder`, so the
/// peer offers STARTTLS.
fn with_tls(builder: ScenarioBuilder) -> ScenarioBuilder {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    builder.tls(leaf.server_config().expect("server TLS configuration"))
}

fn config(peer: &FaultPeer, policy: TlsPolicy) -> Config {
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy,
        verify: Some(ec_types::TlsVerify::None),
        ..TlsSettings::default()
    });
    config
}

/// Runs `faulty` on the first connection and a well-behaved TLS server on
/// the next, opportunistically, until the message is delivered.
fn run_then_tls(faulty: Scenario) -> (RunResult, Vec<ConnectionRecord>) {
    let good = with_tls(Scenario::builder()).build();
    let peer = FaultPeer::start_sequence_on_thread(vec![faulty, good]).expect("peer starts");
    let mut config = config(&peer, TlsPolicy::Opportunistic);
    config.global.timeouts.tls_handshake = Some(Duration::from_millis(500));
    let result = Run::new(config)
        .submit(message(1))
        .domain_backoff(Duration::from_millis(100))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

/// How the second connection, after the failed one, carries the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Over TLS again: the failure was not the handshake's.
    Tls,
    /// In clear text: the handshake failed, and the opportunistic policy
    /// falls back on the next connection.
    Plain,
}

/// Checks that the first connection closed for `reason` with `outcome`
/// after STARTTLS and before any mail, and that the message went out on
/// the second at its first attempt, as `then` expects.
fn assert_first_failed(
    result: &RunResult,
    records: &[ConnectionRecord],
    (reason, outcome): (CloseReason, CloseOutcome),
    then: Then,
) {
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(
        (first.reason, first.outcome),
        (reason, outcome),
        "{first:?}"
    );
    assert_eq!(
        records[0].verbs(),
        [Verb::Ehlo, Verb::StartTls],
        "{:#?}",
        records[0]
    );
    assert!(records[0].plaintext_after_starttls().is_empty());
    assert!(!records[0].mail_in_clear());

    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    let delivered = result.records_of(1)[0];
    assert_eq!(delivered.attempts, 1);
    assert_eq!(delivered.connection, Some(result.opens[1].id));
    match then {
        Then::Tls => {
            assert!(delivered.tls.is_some());
            assert!(!records[1].mail_in_clear());
        }
        Then::Plain => {
            assert!(delivered.tls.is_none());
            assert!(!records[1].verbs().contains(&Verb::StartTls));
        }
    }
}

#[test]
fn silent_after_220() {
    let faulty = with_tls(Scenario::builder())
        .starttls_then_silence()
        .build();

    let (result, records) = run_then_tls(faulty);

    assert_first_failed(
        &result,
        &records,
        (CloseReason::Timeout, CloseOutcome::TlsError),
        Then::Plain,
    );
    assert!(records[0].tls().is_none());
}

#[test]
fn plain_text_injected() {
    let faulty = with_tls(Scenario::builder())
        .starttls_with_injection(b"250 2.1.0 injected\r\n")
        .build();

    let (result, records) = run_then_tls(faulty);

    assert_first_failed(
        &result,
        &records,
        (CloseReason::StartTlsInjection, CloseOutcome::Clean),
        Then::Tls,
    );
    assert!(
        records[0].tls().is_none(),
        "no handshake after an injection"
    );
}

#[test]
fn tls_bytes_injected() {
    let faulty = with_tls(Scenario::builder())
        .starttls_with_injection(tls::FAKE_SERVER_HELLO)
        .build();

    let (result, records) = run_then_tls(faulty);

    assert_first_failed(
        &result,
        &records,
        (CloseReason::StartTlsInjection, CloseOutcome::Clean),
        Then::Tls,
    );
}

#[test]
fn tls_alert() {
    let faulty = with_tls(Scenario::builder())
        .starttls_alert(tls::ALERT_HANDSHAKE_FAILURE)
        .build();

    let (result, records) = run_then_tls(faulty);

    assert_first_failed(
        &result,
        &records,
        (CloseReason::TlsFailed, CloseOutcome::TlsError),
        Then::Plain,
    );
}

/// Runs `scenario` on every connection under `required` for two seconds:
/// the message must never go out.
fn run_required(scenario: Scenario) -> (RunResult, Vec<ConnectionRecord>) {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let result = Run::new(config(&peer, TlsPolicy::Required))
        .submit(message(1))
        .domain_backoff(Duration::from_millis(300))
        .limit(Duration::from_secs(2))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

fn assert_never_sent(result: &RunResult, records: &[ConnectionRecord]) {
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert_eq!(result.records_of(1)[0].attempts, 0);
    assert!(result.opens.len() >= 2, "retried on fresh connections");
    for close in &result.closes {
        assert_eq!(
            (close.reason, close.outcome),
            (CloseReason::TlsUnavailable, CloseOutcome::Clean),
            "{close:?}"
        );
    }
    for record in records {
        assert!(!record.mail_in_clear(), "{record:#?}");
        assert!(record.bodies().is_empty());
        let verbs = record.verbs();
        assert!(
            verbs
                .iter()
                .all(|verb| matches!(verb, Verb::Ehlo | Verb::StartTls | Verb::Quit)),
            "{verbs:?}"
        );
        // The session is in step with the server: it says goodbye.
        assert_eq!(verbs.last(), Some(&Verb::Quit), "{verbs:?}");
    }
}

#[test]
fn required_not_offered() {
    let (result, records) = run_required(Scenario::default());

    assert_never_sent(&result, &records);
    assert!(records.iter().all(|r| !r.verbs().contains(&Verb::StartTls)));
}

#[test]
fn required_454() {
    let scenario = with_tls(Scenario::builder())
        .on(
            Verb::StartTls,
            Response::reply("454 4.7.0 TLS not available"),
        )
        .build();

    let (result, records) = run_required(scenario);

    assert_never_sent(&result, &records);
    assert!(records.iter().all(|r| r.verbs().contains(&Verb::StartTls)));
}

#[test]
fn opportunistic_454_goes_plain() {
    let scenario = Scenario::builder()
        .capabilities(Capabilities::new().starttls(true))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(config(&peer, TlsPolicy::Opportunistic))
        .submit(message(1))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["delivered"]);
    assert!(result.records_of(1)[0].tls.is_none());
    assert_eq!(
        records[0].verbs(),
        [
            Verb::Ehlo,
            Verb::StartTls,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Data,
            Verb::Quit
        ]
    );
}

#[test]
fn opportunistic_falls_back_plain() {
    // Every handshake fails: the opportunistic policy lets the next
    // connection send in clear text rather than fail the same way forever.
    let scenario = with_tls(Scenario::builder())
        .starttls_alert(tls::ALERT_HANDSHAKE_FAILURE)
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(config(&peer, TlsPolicy::Opportunistic))
        .submit(message(1))
        .domain_backoff(Duration::from_millis(100))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    let delivered = result.records_of(1)[0];
    assert_eq!(delivered.attempts, 1);
    assert!(delivered.tls.is_none());
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0].verbs(), [Verb::Ehlo, Verb::StartTls]);
    assert_eq!(
        records[1].verbs(),
        [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Data, Verb::Quit]
    );
}
