//! Replies a client must cope with: EHLO rejected (HELO fallback), garbage
//! where a reply is due, and replies too large to hold. Garbage and
//! oversized replies end the session as a protocol error after a bounded
//! read, never an unbounded buffer.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, RunResult, Until};
use ec_tests::fault_peer::{ConnectionRecord, Event, FaultPeer, Response, Scenario, Verb};
use ec_types::{CloseOutcome, CloseReason, Submission};

const DOMAIN: &str = "replies.test";

/// What an endless reply may write in all: far more than any buffer on the
/// way, so its write fails only because the client closed.
const ENDLESS: usize = 256 << 20;

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(
        tag,
        "sender@ec.test",
        &to,
        b"Subject: replies\r\n\r\nbody\r\n",
    )
}

/// Runs `faulty` on the first connection and a plain server on the next.
fn run_after(faulty: Scenario, until: Until) -> (RunResult, Vec<ConnectionRecord>) {
    let peer = FaultPeer::start_sequence_on_thread(vec![faulty, Scenario::default()])
        .expect("peer starts");
    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1))
        .domain_backoff(Duration::from_millis(100))
        .until(until)
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

/// Checks that the first connection closed as a protocol error, without
/// QUIT.
fn assert_protocol_error(result: &RunResult, records: &[ConnectionRecord]) {
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(first.reason, CloseReason::ProtocolError, "{first:?}");
    assert!(
        !records[0].verbs().contains(&Verb::Quit),
        "{:#?}",
        records[0]
    );
}

/// Checks that message `tag` went out at its first attempt on the second
/// connection.
fn assert_delivered_on_fresh(result: &RunResult, tag: u64) {
    assert_eq!(
        result.outcomes_of(tag),
        ["delivered"],
        "{:#?}",
        result.records
    );
    let delivered = result.records_of(tag)[0];
    assert_eq!(delivered.attempts, 1);
    assert_eq!(delivered.connection, Some(result.opens[1].id));
}

/// Checks that the close stopped reading the endless reply after a
/// bounded drain and dropped the socket.
fn assert_drain_cut(result: &RunResult) {
    assert_eq!(
        result.close_outcomes()[0],
        CloseOutcome::Aborted,
        "{:#?}",
        result.closes
    );
}

/// Returns how many octets of an endless reply the peer wrote before its
/// write failed.
fn streamed_until_closed(record: &ConnectionRecord) -> usize {
    record
        .events
        .iter()
        .find_map(|timed| match &timed.event {
            Event::Streamed { bytes, error, .. } => {
                assert!(error.is_some(), "the client read all {bytes} bytes");
                Some(*bytes)
            }
            _ => None,
        })
        .expect("the peer streamed a reply")
}

#[test]
fn ehlo_502_falls_back() {
    let peer =
        FaultPeer::start_on_thread(Scenario::builder().reject_ehlo().build()).expect("peer starts");

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    assert_eq!(
        records[0].verbs(),
        [
            Verb::Ehlo,
            Verb::Helo,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Data,
            Verb::Quit
        ]
    );
    // HELO offers no PIPELINING: every command waits for its reply.
    assert!(records[0]
        .command_groups()
        .iter()
        .all(|group| group.len() == 1));
}

#[test]
fn garbage_banner() {
    let faulty = Scenario::builder()
        .banner(Response::raw(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]))
        .build();

    let (result, records) = run_after(faulty, Until::EveryRecipientFinal);

    assert_protocol_error(&result, &records);
    assert_delivered_on_fresh(&result, 1);
    assert!(records[0].verbs().is_empty());
}

#[test]
fn garbage_at_mail() {
    let faulty = Scenario::builder()
        .on(Verb::Mail, Response::raw(&b"250\x00\xff garbage\r\n"[..]))
        .build();

    let (result, records) = run_after(faulty, Until::EveryRecipientRecorded);

    assert_protocol_error(&result, &records);
    assert_eq!(
        result.outcomes_of(1),
        ["deferred", "unsent"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.records_of(1)[0].attempts, 1);
    assert!(records[0].bodies().is_empty());
}

#[test]
fn endless_banner_line() {
    let faulty = Scenario::builder()
        .banner(Response::stream(&b"220 "[..], &b"x"[..], ENDLESS))
        .build();

    let (result, records) = run_after(faulty, Until::EveryRecipientFinal);

    assert_protocol_error(&result, &records);
    assert_delivered_on_fresh(&result, 1);
    assert!(streamed_until_closed(&records[0]) < ENDLESS);
    assert_drain_cut(&result);
}

#[test]
fn endless_ehlo_reply() {
    let faulty = Scenario::builder()
        .on(
            Verb::Ehlo,
            Response::stream(
                &b"250-fault-peer\r\n"[..],
                &b"250-X-FILLER\r\n"[..],
                ENDLESS,
            ),
        )
        .build();

    let (result, records) = run_after(faulty, Until::EveryRecipientFinal);

    assert_protocol_error(&result, &records);
    assert_delivered_on_fresh(&result, 1);
    assert!(streamed_until_closed(&records[0]) < ENDLESS);
    assert_drain_cut(&result);
    assert_eq!(records[0].verbs(), [Verb::Ehlo]);
}

#[test]
fn rset_refused_defers() {
    let faulty = Scenario::builder()
        .on(
            Verb::Rset,
            Response::reply("502 5.5.2 RSET not implemented"),
        )
        .build();
    let peer = FaultPeer::start_on_thread(faulty).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.max_outbound_connections = Some(1);

    let result = Run::new(config)
        .submit(message(1))
        .submit(message(2))
        .limit(Duration::from_secs(10))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["delivered"]);
    // The refusal is the server's, not the message's: deferred, not failed.
    assert_eq!(
        result.outcomes_of(2),
        ["deferred", "unsent"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.records_of(2)[0].attempts, 1);
    assert_protocol_error(&result, &records);
    assert_eq!(records[0].bodies().len(), 1);
}

#[test]
fn idle_junk_blocks_reuse() {
    // Half a reply line while the connection idles: the next transaction
    // must not start on it, or the junk would prefix the MAIL reply.
    let faulty = Scenario::builder()
        .idle(
            Duration::from_millis(300),
            Response::raw(&b"250-half a line"[..]),
        )
        .build();
    let peer = FaultPeer::start_sequence_on_thread(vec![faulty, Scenario::default()])
        .expect("peer starts");

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1))
        .submit_after(Duration::from_millis(1200), message(2))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();

    let records = assert_settled(&result, &peer);
    assert_protocol_error(&result, &records);
    assert_eq!(result.outcomes_of(1), ["delivered"]);
    assert_delivered_on_fresh(&result, 2);
    assert_eq!(records[0].bodies().len(), 1, "only the first message");
}
