//! Direct delivery through MX records served by a real DNS server (NSD).
//! Delivered: to the MX host, to the next MX when the first refuses, to
//! the implicit MX, and with the MX host's name checked against its
//! certificate. Failed at once: a null MX and NXDOMAIN. Deferred: an MX
//! host without an address, and a REFUSED query.

use std::time::Duration;

use ec_sched::RecipientOutcome;
use ec_tests::delivery::{self, assert_settled, submission, Run, RunResult, Until};
use ec_tests::fault_peer::{FaultPeer, Scenario};
use ec_tests::peers::{DnsServer, TEST_ORIGIN, TEST_ZONE};
use ec_tests::pki::TestCa;
use ec_types::{Config, TlsPolicy, TlsSettings, TlsVerify};

fn dns() -> DnsServer {
    DnsServer::start(TEST_ZONE, TEST_ORIGIN).expect("NSD serves the test zone")
}

/// Routes `domain` to its MX hosts, asking `dns`, on the port of `peer`.
fn mx_config(dns: &DnsServer, domain: &str, peer: &FaultPeer) -> Config {
    delivery::mx_config(
        domain,
        dns.addr(),
        peer.addr().port(),
        Duration::from_secs(5),
    )
}

/// Sends one message to `rcpt@domain` until every recipient has a record.
fn send(config: Config, domain: &str, limit: Duration) -> RunResult {
    let to = [format!("rcpt@{domain}")];
    Run::new(config)
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: mx\r\n\r\nx\r\n",
        ))
        .domain_backoff(Duration::from_millis(200))
        .until(Until::EveryRecipientRecorded)
        .limit(limit)
        .run()
}

fn assert_delivered(domain: &str) {
    let dns = dns();
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");

    let result = send(
        mx_config(&dns, domain, &peer),
        domain,
        Duration::from_secs(10),
    );

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    assert_eq!(records.len(), 1, "one connection reached the peer");
    assert_eq!(result.opens.len(), 1, "{:#?}", result.opens);
}

#[test]
fn delivers_to_the_mx_host() {
    assert_delivered("mx.dns.test");
}

#[test]
fn next_mx_when_the_first_refuses() {
    // MX 10 down.dns.test (127.0.0.2, nothing listens), MX 20 good.
    assert_delivered("walk.dns.test");
}

#[test]
fn implicit_mx_without_mx_records() {
    assert_delivered("implicit.dns.test");
}

/// The MX host's name, not the recipient domain, is the TLS server name:
/// a certificate for `good.dns.test` alone verifies.
#[test]
fn tls_checks_the_mx_host_name() {
    let dns = dns();
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&["good.dns.test"]).expect("test certificate");
    let scenario = Scenario::builder()
        .tls(leaf.server_config().expect("server TLS configuration"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let ca_file = ca.write_pem_file().expect("write the CA");
    let mut config = mx_config(&dns, "mx.dns.test", &peer);
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(TlsVerify::Host),
        ca_file: Some(ca_file.to_path_buf()),
        server_name: None,
    });

    let result = send(config, "mx.dns.test", Duration::from_secs(10));

    assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["delivered"], "{:#?}", result.closes);
    let tls = result.records_of(1)[0].tls.as_ref().expect("over TLS");
    assert!(tls.verified);
}

/// Checks the run's accounting and that no connection reached `peer`:
/// every connection of the run ended before its TCP connect.
fn assert_no_smtp(result: &RunResult, peer: &FaultPeer) {
    if let Err(broken) = result.check_accounting() {
        panic!("accounting broken:\n{broken}\ncloses: {:#?}", result.closes);
    }
    assert!(peer.connections().is_empty(), "no SMTP connection");
    for close in &result.closes {
        assert!(close.peer.is_none(), "{close:?}");
    }
}

/// Checks that the message failed at once with `code` and `enhanced`,
/// without a connection to any SMTP server.
fn assert_failed_at_once(domain: &str, code: u16, enhanced: &str) {
    let dns = dns();
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");

    let result = send(
        mx_config(&dns, domain, &peer),
        domain,
        Duration::from_secs(10),
    );

    assert_no_smtp(&result, &peer);
    let outcomes = result.records_of(1);
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    let RecipientOutcome::Failed(reply) = &outcomes[0].outcome else {
        panic!("{outcomes:#?}");
    };
    assert_eq!(reply.code.as_u16(), code, "{reply}");
    let got = reply.enhanced.map(|status| status.to_string());
    assert_eq!(got.as_deref(), Some(enhanced), "{reply}");
    assert!(reply.to_string().contains(domain), "{reply}");
    assert_eq!(result.opens.len(), 1, "no retry: {:#?}", result.opens);
}

#[test]
fn null_mx_fails_at_once() {
    assert_failed_at_once("nullmx.dns.test", 556, "5.1.10");
}

#[test]
fn missing_domain_fails_at_once() {
    assert_failed_at_once("no-such-name.dns.test", 550, "5.1.2");
}

/// Checks that the message is still queued after two seconds of retries,
/// with every close a failed connect and no SMTP connection.
fn assert_deferred(domain: &str) {
    let dns = dns();
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
    let mut config = mx_config(&dns, domain, &peer);
    config.global.timeouts.connect = Some(Duration::from_secs(1));

    let to = [format!("rcpt@{domain}")];
    let result = Run::new(config)
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: mx\r\n\r\nx\r\n",
        ))
        .domain_backoff(Duration::from_millis(200))
        .limit(Duration::from_secs(2))
        .run();

    assert_no_smtp(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert!(result.opens.len() >= 2, "retried: {:#?}", result.opens);
    for close in &result.closes {
        assert_eq!(
            close.reason,
            ec_types::CloseReason::ConnectFailed,
            "{close:?}"
        );
    }
}

#[test]
fn mx_host_without_address_defers() {
    assert_deferred("noaddr.dns.test");
}

#[test]
fn refused_query_defers() {
    // Outside the zone: NSD responds REFUSED, which tells nothing about
    // the domain.
    assert_deferred("elsewhere.example");
}
