//! 421 "service not available" at each point of a session. The server is
//! closing, which is no verdict on the message, so the mail goes on a
//! fresh connection without spending an attempt, and no QUIT follows the
//! 421.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, submission, Run, RunResult, Until};
use ec_tests::fault_peer::{ConnectionRecord, FaultPeer, Scenario, Verb};
use ec_types::{CloseOutcome, CloseReason, Submission};

const DOMAIN: &str = "busy.test";

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, b"Subject: 421\r\n\r\nbody\r\n")
}

/// Runs `faulty` on the first connection and a plain server on the next,
/// until `until` holds.
fn run_after(
    faulty: Scenario,
    submissions: Vec<(Duration, Submission)>,
    until: Until,
) -> (RunResult, Vec<ConnectionRecord>) {
    let peer = FaultPeer::start_sequence_on_thread(vec![faulty, Scenario::default()])
        .expect("peer starts");
    let run = submissions.into_iter().fold(
        Run::new(fault_config(DOMAIN, peer.addr())),
        |run, (delay, submission)| run.submit_after(delay, submission),
    );
    let result = run
        .domain_backoff(Duration::from_millis(100))
        .until(until)
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

/// Checks that the first connection closed for the 421, cleanly and
/// without QUIT.
fn assert_closed_for_421(result: &RunResult, records: &[ConnectionRecord]) {
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(first.reason, CloseReason::ServiceClosing);
    assert_eq!(first.outcome, CloseOutcome::Clean);
    assert!(
        !records[0].verbs().contains(&Verb::Quit),
        "QUIT after 421: {:#?}",
        records[0]
    );
}

/// Checks that `tag` was delivered at its first attempt, on the second
/// connection.
fn assert_delivered_on_fresh(result: &RunResult, records: &[ConnectionRecord], tag: u64) {
    let outcomes = result.outcomes_of(tag);
    assert_eq!(outcomes, ["delivered"], "{:#?}", result.records);
    let delivered = result.records_of(tag)[0];
    assert_eq!(
        delivered.attempts, 1,
        "the 421 spent an attempt: {delivered:?}"
    );
    assert_eq!(delivered.connection, Some(result.opens[1].id));
    assert_eq!(records.len(), 2);
}

#[test]
fn banner_421_retries_fresh() {
    let faulty = Scenario::builder().banner_421().build();

    let (result, records) = run_after(
        faulty,
        vec![(Duration::ZERO, message(1))],
        Until::EveryRecipientFinal,
    );

    assert_closed_for_421(&result, &records);
    assert_delivered_on_fresh(&result, &records, 1);
    assert!(records[0].verbs().is_empty(), "nothing after a 421 banner");
}

#[test]
fn rcpt_421_closes_cleanly() {
    let faulty = Scenario::builder().reply_421_at(Verb::Rcpt).build();

    let (result, records) = run_after(
        faulty,
        vec![(Duration::ZERO, message(1))],
        Until::EveryRecipientRecorded,
    );

    assert_closed_for_421(&result, &records);
    assert_eq!(records[0].verbs(), [Verb::Ehlo, Verb::Mail, Verb::Rcpt]);
    assert!(records[0].bodies().is_empty());
    assert_eq!(result.records_of(1)[0].connection, Some(result.opens[0].id));
}

#[test]
fn data_421_closes_cleanly() {
    let faulty = Scenario::builder().reply_421_at(Verb::Data).build();

    let (result, records) = run_after(
        faulty,
        vec![(Duration::ZERO, message(1))],
        Until::EveryRecipientRecorded,
    );

    assert_closed_for_421(&result, &records);
    assert_eq!(
        records[0].verbs(),
        [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Data]
    );
    assert!(records[0].bodies().is_empty());
    assert_eq!(result.records_of(1)[0].connection, Some(result.opens[0].id));
}

#[test]
fn transaction_421_defers_with_attempt() {
    // A 421 inside a transaction is a transient failure of that transaction:
    // the message goes to the delayed queue with backoff and the attempt
    // counts, as for any other 4xx.
    for verb in [Verb::Rcpt, Verb::Data] {
        let faulty = Scenario::builder().reply_421_at(verb.clone()).build();

        let (result, _records) = run_after(
            faulty,
            vec![(Duration::ZERO, message(1))],
            Until::EveryRecipientRecorded,
        );

        // The shutdown at the end of the run reports the deferred message as
        // unsent: its final record.
        assert_eq!(
            result.outcomes_of(1),
            ["deferred", "unsent"],
            "421 at {verb:?}"
        );
        let record = &result.records_of(1)[0];
        assert_eq!(record.attempts, 1, "421 at {verb:?}");
        let ec_sched::RecipientOutcome::Deferred {
            reply: Some(reply), ..
        } = &record.outcome
        else {
            panic!("421 at {verb:?}: expected a deferral with the 421 reply, got {record:?}");
        };
        assert_eq!(reply.code.as_u16(), 421, "421 at {verb:?}");
    }
}

#[test]
fn idle_421_retries_fresh() {
    // The first message goes out, the connection idles, the server sends
    // 421 and closes. The second message must take a new connection.
    let faulty = Scenario::builder()
        .idle_421_after(Duration::from_millis(300))
        .build();
    let submissions = vec![
        (Duration::ZERO, message(1)),
        (Duration::from_millis(1200), message(2)),
    ];

    let (result, records) = run_after(faulty, submissions, Until::EveryRecipientFinal);

    assert_closed_for_421(&result, &records);
    assert_eq!(result.outcomes_of(1), ["delivered"]);
    assert_eq!(result.records_of(1)[0].connection, Some(result.opens[0].id));
    assert_delivered_on_fresh(&result, &records, 2);
    assert_eq!(records[0].bodies().len(), 1, "only the first message");
}
