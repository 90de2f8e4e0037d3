//! Certificate verdicts under each verification mode, with the test CA as
//! the `ca_file`:
//!
//! | certificate             | none    | ca      | host    |
//! |-------------------------|---------|---------|---------|
//! | signed by the CA        | accept  | accept  | accept  |
//! | expired                 | accept  | reject  | reject  |
//! | wrong name              | accept  | accept  | reject  |
//! | self-signed (not by CA) | accept  | reject  | reject  |
//! | EKU clientAuth only     | accept  | reject  | reject  |
//!
//! An accepted certificate delivers over TLS; a rejected one ends the
//! connection with a TLS failure before any mail, under the `required`
//! policy the message is never sent in clear text.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run};
use ec_tests::fault_peer::{FaultPeer, Scenario};
use ec_tests::pki::{LeafProfile, TestCa, DEFAULT_NAMES};
use ec_types::{CloseOutcome, CloseReason, TlsPolicy, TlsSettings, TlsVerify};

const DOMAIN: &str = "certs.test";

/// The certificates of the table, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cert {
    Valid,
    Expired,
    WrongName,
    SelfSigned,
    ClientAuthOnly,
}

const CERTS: [Cert; 5] = [
    Cert::Valid,
    Cert::Expired,
    Cert::WrongName,
    Cert::SelfSigned,
    Cert::ClientAuthOnly,
];

/// What one run under one mode showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Delivered over TLS; `verified` as the session reported it.
    Accepted { verified: bool },
    /// Closed for a TLS failure, never sent.
    Rejected,
}

/// Runs one message under `verify` against a peer presenting `cert`, and
/// checks what must hold either way.
fn verdict(verify: TlsVerify, cert: Cert) -> Verdict {
    let ca = TestCa::new().expect("test CA");
    let leaf = match cert {
        Cert::Valid => ca.leaf(&DEFAULT_NAMES),
        Cert::Expired => ca.issue(LeafProfile::Expired, &DEFAULT_NAMES),
        Cert::WrongName => ca.leaf(&["other.example", "192.0.2.1"]),
        Cert::SelfSigned => ca.issue(LeafProfile::SelfSigned, &DEFAULT_NAMES),
        Cert::ClientAuthOnly => ca.issue(LeafProfile::ClientAuthOnly, &DEFAULT_NAMES),
    }
    .expect("test certificate");
    let ca_file = ca.write_pem_file().expect("CA file");
    let scenario = Scenario::builder()
        .tls(leaf.server_config().expect("server TLS configuration"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(verify),
        ca_file: Some(ca_file.to_path_buf()),
        server_name: Some("mx.ec.test".to_owned()),
    });
    let to = vec![format!("rcpt@{DOMAIN}")];
    let result = Run::new(config)
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: cert\r\n\r\nbody\r\n",
        ))
        .domain_backoff(Duration::from_millis(300))
        .limit(Duration::from_millis(1500))
        .run();

    let records = assert_settled(&result, &peer);
    for record in &records {
        assert!(!record.mail_in_clear(), "{record:#?}");
    }
    match result.outcomes_of(1).as_slice() {
        ["delivered"] => {
            let delivered = result.records_of(1)[0];
            let tls = delivered.tls.as_ref().expect("delivered over TLS");
            assert!(records[0].tls().is_some());
            Verdict::Accepted {
                verified: tls.verified,
            }
        }
        ["unsent"] => {
            for close in &result.closes {
                assert_eq!(
                    (close.reason, close.outcome),
                    (CloseReason::TlsFailed, CloseOutcome::TlsError),
                    "{close:?}"
                );
            }
            for record in &records {
                assert!(record.tls().is_none());
                assert!(record.handshake_error().is_some(), "{record:#?}");
            }
            Verdict::Rejected
        }
        other => panic!("unexpected outcomes {other:?}: {:#?}", result.records),
    }
}

/// Runs every certificate under `verify` and compares with `expected`, all
/// at once, so a failure shows the whole row.
fn assert_row(verify: TlsVerify, expected: [Verdict; 5]) {
    let runs: Vec<_> = CERTS
        .iter()
        .map(|&cert| std::thread::spawn(move || (cert, verdict(verify, cert))))
        .collect();
    let got: Vec<(Cert, Verdict)> = runs
        .into_iter()
        .map(|run| run.join().expect("verdict run"))
        .collect();
    let expected_row: Vec<(Cert, Verdict)> = CERTS.iter().copied().zip(expected).collect();
    assert_eq!(got, expected_row, "verification mode {verify:?}");
}

const ACCEPT_UNVERIFIED: Verdict = Verdict::Accepted { verified: false };
const ACCEPT_VERIFIED: Verdict = Verdict::Accepted { verified: true };
const REJECT: Verdict = Verdict::Rejected;

#[test]
fn mode_none_accepts_any() {
    assert_row(TlsVerify::None, [ACCEPT_UNVERIFIED; 5]);
}

#[test]
fn mode_ca_checks_chain() {
    assert_row(
        TlsVerify::Ca,
        [ACCEPT_VERIFIED, REJECT, ACCEPT_VERIFIED, REJECT, REJECT],
    );
}

#[test]
fn mode_host_checks_name() {
    assert_row(
        TlsVerify::Host,
        [ACCEPT_VERIFIED, REJECT, REJECT, REJECT, REJECT],
    );
}
