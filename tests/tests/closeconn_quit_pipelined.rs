//! QUIT with a connection's last transaction. When a batch brings a
//! connection to `max_deliveries_per_connection`, the session sends QUIT in
//! the group with the message data (RFC 2920 section 3.1), or right after
//! the final reply when the server does not pipeline. `closeconn` then only
//! waits for the 221 it has not seen yet.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, RunResult};
use std::sync::Arc;

use ec_tests::fault_peer::{
    After, Capabilities, Close, ConnectionRecord, Event, FaultPeer, Response, Scenario,
    ScenarioBuilder, Verb,
};
use ec_tests::pki::{crypto_provider, TestCa, DEFAULT_NAMES};
use ec_types::{CloseOutcome, CloseReason, Config, Submission, TlsPolicy, TlsSettings};

const DOMAIN: &str = "lastquit.test";

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, b"Subject: last\r\n\r\nbody\r\n")
}

/// Returns the fault configuration with at most `deliveries` transactions
/// per connection, one message per batch.
fn config(peer: &FaultPeer, deliveries: u32) -> Config {
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.max_deliveries_per_connection = Some(deliveries);
    config.global.batch_size = Some(1);
    config
}

fn run(config: Config, messages: u64) -> RunResult {
    let mut run = Run::new(config).limit(Duration::from_secs(20));
    for tag in 1..=messages {
        run = run.submit(message(tag));
    }
    run.run()
}

/// Checks that every message was delivered and every connection closed
/// for its delivery limit with `outcome`.
fn assert_delivered_and_closed(result: &RunResult, messages: u64, outcome: CloseOutcome) {
    for tag in 1..=messages {
        assert_eq!(
            result.outcomes_of(tag),
            ["delivered"],
            "{:#?}",
            result.records
        );
    }
    assert!(!result.closes.is_empty());
    for close in &result.closes {
        assert_eq!(
            (close.reason, close.outcome),
            (CloseReason::MaxDeliveries, outcome),
            "{close:?}"
        );
    }
}

/// Returns the number of the read that brought the first command with
/// `verb`.
fn read_of(record: &ConnectionRecord, verb: Verb) -> u64 {
    record
        .events
        .iter()
        .find_map(|timed| match &timed.event {
            Event::Command { line, read, .. } if Verb::of_line(line) == verb => Some(*read),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {verb:?} in {record:#?}"))
}

fn chunking_peer(builder: ScenarioBuilder) -> FaultPeer {
    FaultPeer::start_on_thread(builder.chunking().build()).expect("peer starts")
}

#[test]
fn quit_goes_with_bdat_chunk() {
    let peer = chunking_peer(Scenario::builder());

    let result = run(config(&peer, 1), 2);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 2, CloseOutcome::Clean);
    assert_eq!(records.len(), 2, "one connection per message");
    for record in &records {
        let groups = record.command_groups();
        let last = groups.last().expect("commands");
        let verbs: Vec<Verb> = last
            .iter()
            .map(|line| Verb::of_line(line.as_bytes()))
            .collect();
        assert_eq!(
            verbs,
            [Verb::Mail, Verb::Rcpt, Verb::Bdat, Verb::Quit],
            "{groups:#?}"
        );
    }
}

#[test]
fn quit_goes_with_final_dot() {
    let peer = FaultPeer::start_on_thread(Scenario::builder().build()).expect("peer starts");

    let result = run(config(&peer, 1), 1);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::Clean);
    // One read brings MAIL, RCPT and DATA, the next the message data with
    // its final dot, and QUIT must come in that same read: a QUIT sent
    // after the reply to the dot would need a read of its own.
    let record = &records[0];
    assert_eq!(
        read_of(record, Verb::Quit),
        read_of(record, Verb::Data) + 1,
        "{:#?}",
        record.command_groups()
    );
    assert_eq!(record.bodies().len(), 1);
}

#[test]
fn only_last_transaction_carries_quit() {
    let peer = chunking_peer(Scenario::builder());

    let mut config = config(&peer, 3);
    config.global.max_outbound_connections = Some(1);

    let result = run(config, 3);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 3, CloseOutcome::Clean);
    assert_eq!(records.len(), 1, "three deliveries on one connection");
    let groups = records[0].command_groups();
    let with_quit: Vec<&Vec<String>> = groups
        .iter()
        .filter(|group| group.iter().any(|line| line.starts_with("QUIT")))
        .collect();
    assert_eq!(with_quit.len(), 1, "{groups:#?}");
    assert_eq!(groups.last(), Some(with_quit[0]), "{groups:#?}");
    assert_eq!(
        records[0]
            .verbs()
            .iter()
            .filter(|v| **v == Verb::Bdat)
            .count(),
        3
    );
}

#[test]
fn unpipelined_quit_follows_final_reply() {
    let scenario = Scenario::builder()
        .capabilities(Capabilities::new().pipelining(false))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = run(config(&peer, 1), 1);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::Clean);
    for group in records[0].command_groups() {
        assert_eq!(group.len(), 1, "nothing pipelined: {group:?}");
    }
    assert_eq!(records[0].verbs().last(), Some(&Verb::Quit));
    assert_eq!(
        records[0]
            .verbs()
            .iter()
            .filter(|v| **v == Verb::Quit)
            .count(),
        1
    );
}

#[test]
fn tls_quit_ends_with_close_notify() {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    let builder = Scenario::builder().tls(leaf.server_config().expect("server TLS"));
    let peer = chunking_peer(builder);
    let mut config = config(&peer, 1);
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Opportunistic,
        ..TlsSettings::default()
    });

    let result = run(config, 1);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::Clean);
    assert!(records[0].tls().is_some());
    assert!(records[0].client_sent_close_notify(), "{:#?}", records[0]);
    let groups = records[0].command_groups();
    assert_eq!(
        groups
            .last()
            .and_then(|group| group.last())
            .map(String::as_str),
        Some("QUIT"),
        "{groups:#?}"
    );
}

#[test]
fn close_without_221_is_no_quit_reply() {
    let peer = chunking_peer(Scenario::builder().close_without_221());

    let result = run(config(&peer, 1), 1);

    assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::NoQuitReply);
}

#[test]
fn silence_after_quit_times_out() {
    let peer = chunking_peer(Scenario::builder().silence_after_quit());

    let result = run(config(&peer, 1), 1);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::QuitTimedOut);
    let record = &records[0];
    let quit = record
        .time_of(|event| matches!(event, Event::Command { line, .. } if line.starts_with(b"QUIT")))
        .expect("QUIT on the wire");
    let closed = record
        .time_of(|event| matches!(event, Event::ClientClosed(_)))
        .expect("the client closed");
    let waited = closed.saturating_sub(quit);
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(1500),
        "the client waited {waited:?} after QUIT; the QUIT timeout is 500 ms"
    );
}

/// Returns the fault configuration with one delivery per connection and
/// opportunistic STARTTLS without certificate checks.
fn tls_config(peer: &FaultPeer) -> Config {
    let mut config = config(peer, 1);
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Opportunistic,
        ..TlsSettings::default()
    });
    config
}

/// The 221 arrives in two parts, the first with the reply to the final
/// dot. The session has read that part when the close begins, and the
/// close must still see one whole 221 (then TLS ends without close_notify,
/// which is clean only after the reply).
#[test]
fn split_221_is_read_whole() {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    let builder = Scenario::builder()
        .tls(leaf.server_config().expect("server TLS"))
        .on_end_of_data(Response::raw(&b"250 2.0.0 Ok\r\n221 2.0.0 B"[..]))
        .on(
            Verb::Quit,
            Response::raw(&b"ye\r\n"[..])
                .delayed(Duration::from_millis(200))
                .then(After::Close(Close::WithoutCloseNotify)),
        );
    let peer = FaultPeer::start_on_thread(builder.build()).expect("peer starts");

    let result = run(tls_config(&peer), 1);

    assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::Clean);
}

/// A reply to QUIT that does not parse ends the wait as a reply would, as
/// it does when `closeconn` sends QUIT itself: no session failure.
#[test]
fn invalid_quit_reply_closes_clean() {
    let quit = Response::raw(&b"garbage\r\n"[..]).then(After::Close(Close::Clean));
    let peer = chunking_peer(Scenario::builder().on(Verb::Quit, quit));

    let result = run(config(&peer, 1), 1);

    assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 1, CloseOutcome::Clean);
    assert_eq!(result.audit, Ok(()));
}

#[test]
fn final_dot_421_defers_message() {
    let scenario = Scenario::builder()
        .on_end_of_data(Response::reply("421 4.3.2 shutting down"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = run(config(&peer, 1), 1);

    assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1)[0],
        "deferred",
        "{:#?}",
        result.records
    );
    assert_eq!(result.closes.len(), 1, "{:#?}", result.closes);
    assert_eq!(result.closes[0].reason, CloseReason::ServiceClosing);
    assert_eq!(result.audit, Ok(()));
}

/// In TLS 1.2 rustls sends no application data before the server's
/// Finished, so the EHLO handed to it before the handshake goes in a later
/// write. It must still go, and only once.
#[test]
fn tls12_server_gets_one_ehlo() {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.key_der())
        .expect("server TLS");
    let peer = chunking_peer(Scenario::builder().tls(Arc::new(server)));

    let result = run(tls_config(&peer), 2);

    let records = assert_settled(&result, &peer);
    assert_delivered_and_closed(&result, 2, CloseOutcome::Clean);
    for record in &records {
        let version = record.tls().and_then(|tls| tls.version);
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
        let ehlos = record.verbs().iter().filter(|v| **v == Verb::Ehlo).count();
        assert_eq!(ehlos, 2, "{:#?}", record.command_groups());
    }
}
