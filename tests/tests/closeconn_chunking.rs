//! The whole engine against a server that offers PIPELINING and CHUNKING:
//! each message goes as one `BDAT <size> LAST` chunk in the group with MAIL
//! and RCPT (RFC 3030), and faults around that chunk get the fate the client
//! can know. A connection lost once the chunk was written and before its
//! reply is "delivery unknown". A reply to BDAT is the message's final reply.
//! A reset while the chunk is still being written defers the message.

use std::time::Duration;

use bytes::Bytes;
use ec_sched::RecipientOutcome;
use ec_tests::delivery::{
    assert_settled, fault_config, retry_soon, submission, Run, RunResult, Until,
};
use ec_tests::fault_peer::{
    Close, ConnectionRecord, Event, FaultPeer, MidData, Response, Scenario, ScenarioBuilder, Verb,
};
use ec_types::{CloseOutcome, CloseReason, Config, Domain, Submission};

const DOMAIN: &str = "chunk.test";

/// A line that starts with a dot and a line that is a lone dot: DATA would
/// double both dots, a chunk carries them as they are.
const BODY: &[u8] = b"Subject: chunking\r\n\r\nfirst line\r\n.leading dot\r\n.\r\nlast line\r\n";

/// BODY as DATA sends it: dot-stuffed, the end-of-data mark not included.
const STUFFED_BODY: &[u8] =
    b"Subject: chunking\r\n\r\nfirst line\r\n..leading dot\r\n..\r\nlast line\r\n";

fn message(tag: u64, data: &[u8]) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, data)
}

/// Builds a message of at least `len` bytes, in CRLF lines that need no change.
fn large_message(tag: u64, len: usize) -> Submission {
    let mut data = b"Subject: large\r\n\r\n".to_vec();
    while data.len() < len {
        data.extend_from_slice(b"0123456789 abcdefghijklmnopqrstuvwxyz 0123456789 abcdefghij\r\n");
    }
    message(tag, &data)
}

/// Starts a scenario for a server that offers PIPELINING (by default) and
/// CHUNKING.
fn chunking() -> ScenarioBuilder {
    Scenario::builder().chunking()
}

/// Runs `message(1, BODY)` with `faulty` on the first connection and a plain
/// chunking server on the next, until the recipient's record is final.
/// `adjust` changes the fault configuration first.
fn run_then_retry(
    faulty: Scenario,
    adjust: impl FnOnce(&mut Config),
) -> (RunResult, Vec<ConnectionRecord>) {
    let peer =
        FaultPeer::start_sequence_on_thread(vec![faulty, chunking().build()]).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    retry_soon(&mut config);
    adjust(&mut config);
    let result = Run::new(config)
        .submit(message(1, BODY))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(15))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

fn attempts(result: &RunResult, tag: u64) -> Vec<u32> {
    result.records_of(tag).iter().map(|r| r.attempts).collect()
}

/// Returns the chunk octets each mid-data fault found, in order.
fn partial_chunks(record: &ConnectionRecord) -> Vec<Bytes> {
    record
        .events
        .iter()
        .filter_map(|timed| match &timed.event {
            Event::PartialChunk { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// Returns the read that completed the first line with `verb`, and the read
/// that delivered the last octet of the first chunk.
fn reads_of(record: &ConnectionRecord, verb: &Verb) -> (Option<u64>, Option<u64>) {
    let line = record.events.iter().find_map(|timed| match &timed.event {
        Event::Command { line, read, .. } if Verb::of_line(line) == *verb => Some(*read),
        _ => None,
    });
    let chunk = record.events.iter().find_map(|timed| match timed.event {
        Event::Chunk { read, .. } => Some(read),
        _ => None,
    });
    (line, chunk)
}

/// Checks the common shape of a first attempt lost after the chunk went out
/// and a second attempt that delivered: outcomes, attempts, and a retry that
/// waited for the backoff rather than going out at once.
fn assert_unknown_then_delivered(result: &RunResult) {
    assert_eq!(
        result.outcomes_of(1),
        ["delivery_unknown", "delivered"],
        "{:#?}",
        result.records
    );
    assert_eq!(attempts(result, 1), [1, 2]);
    let records = result.records_of(1);
    let waited = records[1].at.duration_since(records[0].at);
    assert!(
        waited >= Duration::from_millis(50),
        "the retry came {waited:?} after delivery unknown, before the 50 ms backoff"
    );
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 1);
}

#[test]
fn clean_delivery_is_one_group() {
    let peer = FaultPeer::start_on_thread(chunking().build()).expect("peer starts");

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1, BODY))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    assert!(
        matches!(&result.records_of(1)[0].outcome,
            RecipientOutcome::Delivered(reply) if reply.to_string().contains("queued as FP1")),
        "the final reply is the one to BDAT: {:#?}",
        result.records
    );
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);

    let record = &records[0];
    assert_eq!(
        record.verbs(),
        [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Bdat, Verb::Quit]
    );
    assert_eq!(
        record.command_groups()[1],
        [
            "MAIL FROM:<sender@ec.test>".to_owned(),
            format!("RCPT TO:<rcpt1@{DOMAIN}>"),
            format!("BDAT {} LAST", BODY.len()),
        ]
    );
    let (bdat, chunk) = reads_of(record, &Verb::Bdat);
    assert!(chunk.is_some(), "no chunk arrived: {record:#?}");
    assert_eq!(chunk, bdat, "the chunk came apart from its BDAT line");
    assert_eq!(record.chunks(), [(Bytes::from_static(BODY), true)]);
    assert_eq!(
        record.bodies(),
        [BODY],
        "dots must arrive as sent, not doubled"
    );
}

#[test]
fn bare_lf_body_becomes_crlf_chunk() {
    let peer = FaultPeer::start_on_thread(chunking().build()).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.max_outbound_connections = Some(1);
    let bare = b"Subject: bare\n\n.dot\nend";

    let result = Run::new(config)
        .submit(message(1, BODY))
        .submit(message(2, bare))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.count("delivered"), 2, "{:#?}", result.records);
    assert_eq!(result.opens.len(), 1, "one connection for both");
    let wire: &[u8] = b"Subject: bare\r\n\r\n.dot\r\nend\r\n";
    assert_eq!(records[0].bodies(), [BODY, wire]);
    let groups = records[0].command_groups();
    let second: Vec<&str> = groups[2]
        .iter()
        .map(|line| line.split([' ', ':']).next().unwrap_or(""))
        .collect();
    assert_eq!(second, ["RSET", "MAIL", "RCPT", "BDAT"], "{groups:#?}");
    assert_eq!(groups[2][3], format!("BDAT {} LAST", wire.len()));
}

#[test]
fn reset_after_chunk_is_unknown() {
    let faulty = chunking()
        .mid_data(MidData {
            after_bytes: BODY.len(),
            close: Close::Reset,
        })
        .build();

    let (result, records) = run_then_retry(faulty, |_| {});

    assert_unknown_then_delivered(&result);
    assert_eq!(result.close_outcomes()[0], CloseOutcome::Reset);
    assert_eq!(
        partial_chunks(&records[0]),
        [BODY],
        "the whole chunk arrived"
    );
    assert!(records[0].bodies().is_empty());
    assert_eq!(
        records[1].bodies(),
        [BODY],
        "sent again on a fresh connection"
    );
}

#[test]
fn reset_before_any_reply_is_unknown() {
    // A server that keeps back its replies to a pipelined group until it has
    // read the whole group, then resets: the client gets no reply at all.
    let faulty = chunking()
        .on(Verb::Mail, Response::nothing())
        .on(Verb::Rcpt, Response::nothing())
        .mid_data(MidData {
            after_bytes: BODY.len(),
            close: Close::Reset,
        })
        .build();

    let (result, records) = run_then_retry(faulty, |_| {});

    assert_unknown_then_delivered(&result);
    assert_eq!(
        records[0].sent().len(),
        2,
        "only the banner and the EHLO reply went out: {:#?}",
        records[0]
    );
    assert_eq!(partial_chunks(&records[0]), [BODY]);
    assert_eq!(records[1].bodies(), [BODY]);
}

#[test]
fn silent_bdat_is_unknown() {
    let silent = chunking().on(Verb::Bdat, Response::silence()).build();
    let (result, records) = run_then_retry(silent, |config| {
        config.global.timeouts.data_termination = Some(Duration::from_millis(500));
    });

    assert_unknown_then_delivered(&result);
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(first.reason, CloseReason::Timeout);
    assert_eq!(first.outcome, CloseOutcome::Clean);

    // The peer sends no reply after the chunk and records whatever comes as
    // unanswered bytes: a QUIT would show there, not as a command.
    let after_chunk: Vec<&Bytes> = records[0]
        .events
        .iter()
        .filter_map(|timed| match &timed.event {
            Event::Unanswered { bytes, .. } => Some(bytes),
            _ => None,
        })
        .collect();
    assert!(
        after_chunk.is_empty(),
        "nothing, QUIT included, may follow while the reply to BDAT is due: {after_chunk:?}"
    );

    // The wait was the final reply's (500 ms), not the 5 s of the others.
    let chunk_at = records[0]
        .time_of(|event| matches!(event, Event::Chunk { .. }))
        .expect("the chunk arrived");
    let closed_at = records[0]
        .time_of(|event| matches!(event, Event::ClientClosed(_)))
        .expect("the client closed");
    let waited = closed_at - chunk_at;
    assert!(
        waited >= Duration::from_millis(300),
        "the client closed {waited:?} after the chunk, before its reply was due"
    );
    assert!(
        waited < Duration::from_secs(3),
        "the client closed {waited:?} after the chunk, not after the final reply's timeout"
    );
    assert_eq!(
        records[0].bodies(),
        records[1].bodies(),
        "the same message twice"
    );
}

#[test]
fn reset_mid_chunk_is_unknown() {
    // The peer resets once half the chunk has arrived, without taking the
    // chunk as complete or replying, so the server does not have the
    // message. The client's one small write of the whole transaction had
    // completed before the reset, so it cannot tell this case from a reset
    // after the whole chunk (reset_after_chunk_is_unknown). ec records
    // delivery unknown because the chunk was handed to the socket and no
    // reply to BDAT came. That costs a second attempt, never a loss: only a
    // write that fails tells the client the chunk did not all leave
    // (reset_while_writing_chunk_defers).
    let faulty = chunking()
        .mid_data(MidData {
            after_bytes: BODY.len() / 2,
            close: Close::Reset,
        })
        .build();

    let (result, records) = run_then_retry(faulty, |_| {});

    assert_unknown_then_delivered(&result);
    assert_eq!(result.close_outcomes()[0], CloseOutcome::Reset);
    assert!(records[0].chunks().is_empty(), "the chunk was cut");
    assert_eq!(partial_chunks(&records[0]).len(), 1);
    assert_eq!(records[1].bodies(), [BODY]);
}

#[test]
fn reset_while_writing_chunk_defers() {
    // Larger than the socket buffers on both ends, so the reset reaches the
    // client while its write of the chunk is still going on: the client
    // knows the chunk did not all leave, and the message is deferred.
    let faulty = chunking().reset_mid_data(1000).build();
    let peer =
        FaultPeer::start_sequence_on_thread(vec![faulty, chunking().build()]).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    retry_soon(&mut config);
    let large = large_message(1, 32 << 20);
    let size = large.data.len();

    let result = Run::new(config)
        .submit(large)
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(20))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["deferred", "delivered"],
        "{:#?}",
        result.records
    );
    assert_eq!(attempts(&result, 1), [1, 2]);
    assert_eq!(result.close_outcomes()[0], CloseOutcome::Reset);
    let cut = partial_chunks(&records[0]);
    assert_eq!(cut.len(), 1);
    assert!(cut[0].len() < size, "the whole chunk had arrived");
    assert_eq!(records[1].chunks().len(), 1);
    assert_eq!(records[1].bodies()[0].len(), size);
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 0);
}

/// Runs one message against a server that replies to BDAT with `reply`.
fn run_with_bdat_reply(reply: &str) -> (RunResult, Vec<ConnectionRecord>) {
    let peer =
        FaultPeer::start_on_thread(chunking().on(Verb::Bdat, Response::reply(reply)).build())
            .expect("peer starts");
    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1, BODY))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

#[test]
fn bdat_452_defers() {
    let (result, records) = run_with_bdat_reply("452 4.3.1 Insufficient system storage");

    let first = result.records_of(1)[0];
    assert!(
        matches!(&first.outcome,
            RecipientOutcome::Deferred { reply: Some(reply), .. } if reply.code.as_u16() == 452),
        "{:#?}",
        result.records
    );
    assert_eq!(first.attempts, 1);
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    assert_eq!(records[0].verbs().last(), Some(&Verb::Quit));
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 0);
}

#[test]
fn bdat_554_fails() {
    let (result, records) = run_with_bdat_reply("554 5.6.0 Message content rejected");

    assert_eq!(result.outcomes_of(1), ["failed"], "{:#?}", result.records);
    assert!(
        matches!(&result.records_of(1)[0].outcome,
            RecipientOutcome::Failed(reply) if reply.code.as_u16() == 554),
        "{:#?}",
        result.records
    );
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    assert_eq!(records[0].bodies(), [BODY]);
}

#[test]
fn refused_rcpt_fails_with_its_reply() {
    let scenario = chunking()
        .on(Verb::Rcpt, Response::reply("550 5.1.1 No such user"))
        .on(Verb::Bdat, Response::reply("554 5.5.1 No valid recipients"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    retry_soon(&mut config);

    let result = Run::new(config)
        .submit(message(1, BODY))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.outcomes_of(1), ["failed"], "{:#?}", result.records);
    let RecipientOutcome::Failed(reply) = &result.records_of(1)[0].outcome else {
        panic!("not failed: {:#?}", result.records);
    };
    assert_eq!(reply.code.as_u16(), 550, "the RCPT's reply, not BDAT's");
    assert!(reply.to_string().contains("No such user"), "{reply}");
    assert_eq!(result.opens.len(), 1, "no second attempt");
    let mails = records[0]
        .verbs()
        .iter()
        .filter(|v| **v == Verb::Mail)
        .count();
    assert_eq!(mails, 1, "no second transaction");
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 0);
    assert_eq!(stats.ledger.deferred, 0);
}

#[test]
fn chunking_off_uses_data() {
    let peer = FaultPeer::start_on_thread(chunking().build()).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config
        .domain
        .get_mut(&Domain::new(DOMAIN).expect("valid domain"))
        .expect("fault_config made the domain's settings")
        .chunking = Some(false);

    let result = Run::new(config).submit(message(1, BODY)).run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    assert_eq!(
        records[0].verbs(),
        [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Data, Verb::Quit]
    );
    assert!(records[0].chunks().is_empty());
    assert_eq!(records[0].bodies(), [STUFFED_BODY]);
}

#[test]
fn rejected_rcpt_then_reset_fails() {
    // The only RCPT is refused, then the peer resets once the chunk is in:
    // the server cannot have the message, so it is not "delivery unknown",
    // and the recipient fails with the RCPT's reply without a retry.
    let scenario = chunking()
        .on(Verb::Rcpt, Response::reply("550 5.1.1 No such user"))
        .mid_data(MidData {
            after_bytes: BODY.len(),
            close: Close::Reset,
        })
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1, BODY))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();

    assert_eq!(result.outcomes_of(1), ["failed"], "{:#?}", result.records);
    let RecipientOutcome::Failed(reply) = &result.records_of(1)[0].outcome else {
        panic!("not failed: {:#?}", result.records);
    };
    assert_eq!(reply.code.as_u16(), 550);
    assert_eq!(result.opens.len(), 1, "no second attempt");
    let stats = result.stats.as_ref().expect("stats");
    assert_eq!(stats.ledger.delivery_unknown, 0);
}
