//! Implicit TLS against a fault peer that completes the TLS handshake and
//! then sends no 220 greeting: the failure text must not tell the user to
//! switch to the implicit policy, because the session already uses it.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, Until};
use ec_tests::fault_peer::{FaultPeer, Response, Scenario};
use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use ec_types::{CloseReason, TlsPolicy, TlsSettings, TlsVerify};

const DOMAIN: &str = "implicit-review.test";

#[test]
fn silent_banner_after_handshake_hint() {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    let scenario = Scenario::builder()
        .tls(leaf.server_config().expect("server TLS configuration"))
        .implicit_tls()
        .banner(Response::silence())
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Implicit,
        verify: Some(TlsVerify::None),
        ..TlsSettings::default()
    });
    config.global.timeouts.banner = Some(Duration::from_millis(300));
    let to = [format!("rcpt@{DOMAIN}")];
    let message = submission(1, "sender@ec.test", &to, b"Subject: x\r\n\r\nx\r\n");

    let result = Run::new(config)
        .submit(message)
        .domain_backoff(Duration::from_millis(200))
        .until(Until::EveryRecipientRecorded)
        .limit(Duration::from_secs(2))
        .run();

    let records = assert_settled(&result, &peer);
    assert!(
        records.iter().any(|record| record.tls().is_some()),
        "the handshake completes before the silence: {records:#?}"
    );
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    let timeouts: Vec<&str> = result
        .closes
        .iter()
        .filter(|close| close.reason == CloseReason::Timeout)
        .filter_map(|close| close.failure.as_deref())
        .collect();
    assert!(!timeouts.is_empty(), "{:#?}", result.closes);
    for failure in timeouts {
        assert!(failure.contains("banner"), "{failure}");
        assert!(
            !failure.contains("use the TLS policy implicit"),
            "the hint advises the policy already in use: {failure}"
        );
    }
}
