//! A reply slower than its deadline, for every deadline of a session:
//! the session gives up at the deadline, never sends QUIT into a stream
//! that is out of step, and the message gets the fate of the step it was
//! in (requeued before its transaction, deferred during it, delivery
//! unknown after its final dot).

use std::time::Duration;

use ec_tests::delivery::{
    assert_settled, fault_config, retry_soon, submission, Run, RunResult, Until,
};
use ec_tests::fault_peer::{
    ConnectionRecord, FaultPeer, Response, Scenario, ScenarioBuilder, Verb,
};
use ec_types::config::TimeoutSettings;
use ec_types::{CloseOutcome, CloseReason, Config, Submission};

const DOMAIN: &str = "slow.test";

/// The deadline under test.
const DEADLINE: Duration = Duration::from_millis(300);

/// How late the slow reply comes.
const LATE: Duration = Duration::from_millis(1500);

fn message(tag: u64) -> Submission {
    let to = vec![format!("rcpt{tag}@{DOMAIN}")];
    submission(tag, "sender@ec.test", &to, b"Subject: slow\r\n\r\nbody\r\n")
}

/// Runs `slow` on the first connection and a plain server after it, with
/// `set` shortening one timeout to [`DEADLINE`].
fn run_slow(
    slow: ScenarioBuilder,
    set: fn(&mut TimeoutSettings),
    until: Until,
    messages: Vec<Submission>,
) -> (RunResult, Vec<ConnectionRecord>) {
    let peer = FaultPeer::start_sequence_on_thread(vec![slow.build(), Scenario::default()])
        .expect("peer starts");
    let mut config: Config = fault_config(DOMAIN, peer.addr());
    set(&mut config.global.timeouts);
    if matches!(until, Until::EveryRecipientFinal) {
        // A message left "delivery unknown" is final only after its retry.
        retry_soon(&mut config);
    }
    if messages.len() > 1 {
        // One connection, so the second message reuses it.
        config.global.max_outbound_connections = Some(1);
    }
    let result = messages
        .into_iter()
        .fold(Run::new(config), Run::submit)
        .domain_backoff(Duration::from_millis(100))
        .until(until)
        .limit(Duration::from_secs(10))
        .run();
    let records = assert_settled(&result, &peer);
    (result, records)
}

/// Checks that the first connection closed for the timeout, without QUIT.
fn assert_timed_out(result: &RunResult, records: &[ConnectionRecord]) {
    let first = result
        .closes
        .iter()
        .find(|c| c.id == result.opens[0].id)
        .expect("first connection closed");
    assert_eq!(first.reason, CloseReason::Timeout, "{first:?}");
    assert_eq!(first.outcome, CloseOutcome::Clean, "{first:?}");
    assert!(
        !records[0].verbs().contains(&Verb::Quit),
        "QUIT into a stream out of step: {:#?}",
        records[0]
    );
}

/// Checks that message 1 was delivered on the second connection at its
/// first attempt: the timeout came before its transaction.
fn assert_requeued(result: &RunResult) {
    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
    let delivered = result.records_of(1)[0];
    assert_eq!(delivered.attempts, 1);
    assert_eq!(delivered.connection, Some(result.opens[1].id));
}

/// Checks that message `tag` was deferred at its first attempt.
fn assert_deferred(result: &RunResult, tag: u64) {
    assert_eq!(
        result.outcomes_of(tag),
        ["deferred", "unsent"],
        "{:#?}",
        result.records
    );
    assert_eq!(result.records_of(tag)[0].attempts, 1);
    assert_eq!(
        result.records_of(tag)[0].connection,
        Some(result.opens[0].id)
    );
    assert_gave_up_in_time(result, tag);
}

/// Checks that the first record of `tag` came after the deadline and well
/// before the late reply: the session waited exactly as long as it should.
fn assert_gave_up_in_time(result: &RunResult, tag: u64) {
    let waited = result.records_of(tag)[0]
        .at
        .duration_since(result.opens[0].at);
    assert!(
        waited >= DEADLINE && waited < LATE,
        "gave up after {waited:?}; deadline {DEADLINE:?}, reply after {LATE:?}"
    );
}

#[test]
fn slow_banner() {
    let slow = Scenario::builder().banner(Response::standard().delayed(LATE));

    let (result, records) = run_slow(
        slow,
        |t| t.banner = Some(DEADLINE),
        Until::EveryRecipientFinal,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_requeued(&result);
    assert!(records[0].verbs().is_empty(), "EHLO before the banner");
}

#[test]
fn slow_ehlo() {
    let slow = Scenario::builder().delay_reply(Verb::Ehlo, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.ehlo = Some(DEADLINE),
        Until::EveryRecipientFinal,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_requeued(&result);
    assert_eq!(records[0].verbs(), [Verb::Ehlo]);
}

#[test]
fn slow_mail() {
    let slow = Scenario::builder().delay_reply(Verb::Mail, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.mail = Some(DEADLINE),
        Until::EveryRecipientRecorded,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_deferred(&result, 1);
    assert!(records[0].bodies().is_empty());
}

#[test]
fn slow_rcpt() {
    let slow = Scenario::builder().delay_reply(Verb::Rcpt, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.rcpt = Some(DEADLINE),
        Until::EveryRecipientRecorded,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_deferred(&result, 1);
    assert!(records[0].bodies().is_empty());
}

#[test]
fn slow_data() {
    let slow = Scenario::builder().delay_reply(Verb::Data, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.data = Some(DEADLINE),
        Until::EveryRecipientRecorded,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_deferred(&result, 1);
    assert!(records[0].bodies().is_empty());
}

#[test]
fn slow_final_dot() {
    let slow = Scenario::builder().on_end_of_data(Response::standard().delayed(LATE));

    let (result, records) = run_slow(
        slow,
        |t| t.data_termination = Some(DEADLINE),
        Until::EveryRecipientFinal,
        vec![message(1)],
    );

    assert_timed_out(&result, &records);
    assert_eq!(
        result.outcomes_of(1),
        ["delivery_unknown", "delivered"],
        "{:#?}",
        result.records
    );
    let attempts: Vec<u32> = result.records_of(1).iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [1, 2]);
    assert_gave_up_in_time(&result, 1);
    assert_eq!(records[0].bodies().len(), 1);
    assert_eq!(records[1].bodies(), records[0].bodies());
}

#[test]
fn slow_rset() {
    let slow = Scenario::builder().delay_reply(Verb::Rset, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.rset = Some(DEADLINE),
        Until::EveryRecipientRecorded,
        vec![message(1), message(2)],
    );

    assert_timed_out(&result, &records);
    assert_eq!(result.outcomes_of(1), ["delivered"]);
    assert_deferred(&result, 2);
    assert_eq!(records[0].bodies().len(), 1, "only the first message");
    let verbs = records[0].verbs();
    assert_eq!(verbs.iter().filter(|v| **v == Verb::Rset).count(), 1);
}

#[test]
fn slow_quit() {
    let slow = Scenario::builder().delay_reply(Verb::Quit, LATE);

    let (result, records) = run_slow(
        slow,
        |t| t.quit = Some(DEADLINE),
        Until::EveryRecipientFinal,
        vec![message(1)],
    );

    assert_eq!(result.outcomes_of(1), ["delivered"]);
    assert_eq!(result.close_outcomes(), [CloseOutcome::QuitTimedOut]);
    assert_eq!(records.len(), 1);
    assert!(records[0].verbs().contains(&Verb::Quit));
}
