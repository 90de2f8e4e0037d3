//! A server whose EHLO reply over TLS differs from the one in clear text:
//! the client forgets the clear-text capabilities (RFC 3207 section 4.2) and
//! goes by the new ones, without a second STARTTLS.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run};
use ec_tests::fault_peer::{Capabilities, FaultPeer, Scenario, Verb};
use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use ec_types::{Submission, TlsPolicy, TlsSettings, TlsVerify};

const DOMAIN: &str = "downgrade.test";

fn message(tag: u64, body_len: usize) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    let mut body = b"Subject: downgrade\r\n\r\n".to_vec();
    body.resize(body.len() + body_len, b'x');
    body.extend_from_slice(b"\r\n");
    submission(tag, "sender@ec.test", &to, &body)
}

fn tls_scenario(after_tls: Capabilities) -> Scenario {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    Scenario::builder()
        .tls(leaf.server_config().expect("server TLS configuration"))
        .capabilities(Capabilities::new().starttls(true).size(Some(10_000_000)))
        .capabilities_after_tls(after_tls)
        .build()
}

fn required_tls(peer: &FaultPeer) -> ec_types::Config {
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(TlsVerify::None),
        ..TlsSettings::default()
    });
    config
}

#[test]
fn starttls_offered_again_ignored() {
    let scenario = tls_scenario(Capabilities::new().starttls(true));
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(required_tls(&peer))
        .submit(message(1, 100))
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);

    assert_eq!(result.outcomes_of(1)[0], "delivered");
    let starttls_count = records[0]
        .verbs()
        .into_iter()
        .filter(|verb| *verb == Verb::StartTls)
        .count();
    assert_eq!(starttls_count, 1, "verbs: {:?}", records[0].verbs());
    assert!(records[0].tls().is_some());
}

#[test]
fn size_shrunk_after_tls_fails_before_mail() {
    let scenario = tls_scenario(Capabilities::new().size(Some(100)));
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(required_tls(&peer))
        .submit(message(1, 1_000))
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);

    let record = &result.records_of(1)[0];
    let ec_sched::RecipientOutcome::Failed(reply) = &record.outcome else {
        panic!("expected a permanent failure for a message over SIZE, got {record:?}");
    };
    assert!(reply.code.is_permanent(), "{reply}");
    assert!(
        !records[0].verbs().contains(&Verb::Mail),
        "no MAIL for a message over the SIZE offered over TLS: {:?}",
        records[0].verbs()
    );
}

#[test]
fn opportunistic_verification_failure_never_clear() {
    // Opportunistic TLS with a host check against roots that do not trust
    // the server's CA: the check fails on every connection, and the mail
    // waits rather than going out in clear text.
    let scenario = tls_scenario(Capabilities::new().starttls(true));
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Opportunistic,
        verify: Some(TlsVerify::Host),
        ..TlsSettings::default()
    });

    let result = Run::new(config)
        .submit(message(1, 100))
        .domain_backoff(Duration::from_millis(100))
        .limit(Duration::from_secs(2))
        .run();
    let records = assert_settled(&result, &peer);

    assert!(
        records.len() >= 2,
        "the engine tried more than once: {}",
        records.len()
    );
    for record in &records {
        assert!(!record.mail_in_clear(), "{:?}", record.verbs());
        assert!(
            !record.verbs().contains(&Verb::Mail),
            "{:?}",
            record.verbs()
        );
    }
    assert_eq!(result.count("delivered"), 0);
}
