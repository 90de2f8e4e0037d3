//! Faults around the message data: a reset while it is written, a reset
//! right after its final dot, and a final dot that gets no reply.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, retry_soon, submission, Run, Until};
use ec_tests::fault_peer::{Close, Event, FaultPeer, MidData, Scenario};
use ec_types::{CloseOutcome, CloseReason, Submission};

const DOMAIN: &str = "data.test";

fn message(tag: u64, body_len: usize) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    let mut data = b"Subject: data\r\n\r\n".to_vec();
    while data.len() < body_len {
        data.extend_from_slice(b"0123456789 abcdefghijklmnopqrstuvwxyz 0123456789 abcdefghij\r\n");
    }
    submission(tag, "sender@ec.test", &to, &data)
}

fn partial_bodies(record: &ec_tests::fault_peer::ConnectionRecord) -> Vec<usize> {
    record
        .events
        .iter()
        .filter_map(|timed| match &timed.event {
            Event::PartialBody { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn reset_mid_data_defers() {
    let peer = FaultPeer::start_on_thread(Scenario::builder().reset_mid_data(1000).build())
        .expect("peer starts");
    // Larger than the socket buffers on both ends, so the reset reaches the
    // client while it is still writing and the final dot never goes out.
    let big = message(1, 32 << 20);

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(big)
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["deferred", "unsent"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.records_of(1)[0].attempts, 1);
    assert_eq!(result.closes[0].reason, CloseReason::PeerClosed);
    assert_eq!(result.close_outcomes(), [CloseOutcome::Reset]);
    assert_eq!(records[0].peer_close(), Some(Close::Reset));
    assert!(records[0].bodies().is_empty());
    assert_eq!(partial_bodies(&records[0]).len(), 1);
}

#[test]
fn reset_after_dot_is_unknown() {
    let small = message(1, 200);
    let whole = small.data.len() + 3;
    let scenario = Scenario::builder()
        .mid_data(MidData {
            after_bytes: whole,
            close: Close::Reset,
        })
        .build();
    let peer = FaultPeer::start_sequence_on_thread(vec![scenario, Scenario::default()])
        .expect("peer starts");

    let mut config = fault_config(DOMAIN, peer.addr());
    retry_soon(&mut config);
    let result = Run::new(config)
        .submit(small)
        .until(Until::EveryRecipientFinal)
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivery_unknown", "delivered"],
        "{:#?}",
        result.records
    );
    let attempts: Vec<u32> = result.records_of(1).iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(result.close_outcomes()[0], CloseOutcome::Reset);
    assert_eq!(partial_bodies(&records[0]).len(), 1);
    assert_eq!(
        records[1].bodies().len(),
        1,
        "sent again on a fresh connection"
    );
}

#[test]
fn silent_dot_is_unknown() {
    let silent = Scenario::builder().no_reply_to_dot().build();
    let peer = FaultPeer::start_sequence_on_thread(vec![silent, Scenario::default()])
        .expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.timeouts.data_termination = Some(Duration::from_millis(500));
    retry_soon(&mut config);

    let result = Run::new(config)
        .submit(message(1, 200))
        .until(Until::EveryRecipientFinal)
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivery_unknown", "delivered"],
        "{:#?}",
        result.records
    );
    let attempts: Vec<u32> = result.records_of(1).iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(result.closes.len(), 2);
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(first.reason, CloseReason::Timeout);
    assert_eq!(first.outcome, CloseOutcome::Clean);
    assert_eq!(
        records[0].bodies(),
        records[1].bodies(),
        "the same message twice"
    );
    // The peer sends no reply after the dot and records whatever comes as
    // unanswered bytes: a QUIT would show there, not as a command.
    let after_dot: Vec<String> = records[0]
        .events
        .iter()
        .filter_map(|timed| match &timed.event {
            Event::Unanswered { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect();
    assert!(
        after_dot.is_empty(),
        "nothing, QUIT included, may follow while the reply to the dot is due: {after_dot:?}"
    );
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 1);
}
