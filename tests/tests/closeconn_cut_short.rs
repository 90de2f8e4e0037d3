//! Transactions cut short, with DATA and with CHUNKING (`BDAT <size> LAST`):
//! by a shutdown while the final reply is due, after a RCPT rejection; by a
//! server that holds back its replies to a chunked group; and by a server
//! too busy to reply to the close.
//!
//! A reply the server gave before the cut decides its recipients' records,
//! whatever happens to the connection after it. A 5xx to MAIL fails every
//! recipient of the transaction, and a 4xx to MAIL defers them with that
//! reply. A 4xx to RCPT defers its recipient with that reply. The cuts are
//! a shutdown, a connection the server closes, and a timeout.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ec_sched::{RecipientOutcome, RecipientRecord, Report};
use ec_smtp_client::{Engine, EngineOptions};
use ec_tests::delivery::{fault_config, submission, Run, RunResult};
use ec_tests::fault_peer::{Close, ConnectionRecord, FaultPeer, Response, Scenario, Verb};
use ec_types::Config;

const DOMAIN: &str = "cut-short.test";
const BODY: &[u8] = b"Subject: cut short\r\n\r\n.dot\r\nbody\r\n";

fn recipients(local_parts: &[&str]) -> Vec<String> {
    local_parts
        .iter()
        .map(|local| format!("{local}@{DOMAIN}"))
        .collect()
}

fn records_for<'a>(records: &'a [RecipientRecord], local: &str) -> Vec<&'a RecipientRecord> {
    let address = format!("{local}@{DOMAIN}");
    records
        .iter()
        .filter(|record| record.recipient.to_string() == address)
        .collect()
}

/// Starts an engine on `scenario` with a 300 ms shutdown grace and submits
/// one message to `a` and `b`. Shuts the engine down once `arrived` holds
/// for a connection of the peer, while the reply to the message data is
/// still due. Returns every recipient record.
fn shut_down_mid_transaction(
    scenario: Scenario,
    adjust: impl FnOnce(&mut Config),
    arrived: impl Fn(&ConnectionRecord) -> bool,
) -> Vec<RecipientRecord> {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.timeouts.data_termination = Some(Duration::from_secs(60));
    adjust(&mut config);
    let mut options = EngineOptions::default();
    options.scheduler.shutdown_grace = Duration::from_millis(300);
    let (sender, receiver) = mpsc::channel::<Report>();
    let engine = Engine::start(config, options, sender).expect("engine starts");
    engine
        .handle()
        .submit(submission(1, "s@ec.test", &recipients(&["a", "b"]), BODY))
        .expect("submission accepted");

    let give_up = Instant::now() + Duration::from_secs(10);
    while !peer.connections().iter().any(&arrived) {
        assert!(
            Instant::now() < give_up,
            "the message data never reached the peer: {:#?}",
            peer.connections()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the session read the RCPT replies that went out before the data.
    std::thread::sleep(Duration::from_millis(500));
    engine.shutdown();

    let mut records = Vec::new();
    while let Ok(report) = receiver.try_recv() {
        if let Report::Recipient(record) = report {
            records.push(record);
        }
    }
    records
}

/// Checks that `a`, rejected with 550 at RCPT, has exactly one record: a
/// failure with that reply. The server cannot have taken the message for
/// `a`, so neither "delivery unknown" nor "unsent" is true for it.
fn assert_rejection_kept(records: &[RecipientRecord]) {
    let a = records_for(records, "a");
    let outcomes: Vec<&str> = a.iter().map(|record| record.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed"], "records of a: {a:#?}");
    let RecipientOutcome::Failed(reply) = &a[0].outcome else {
        unreachable!("checked above");
    };
    assert_eq!(reply.code.as_u16(), 550, "the RCPT's own reply");
    assert!(
        records_for(records, "b")
            .last()
            .is_some_and(|r| r.outcome.is_final()),
        "b ends with a final record: {records:#?}"
    );
}

#[test]
fn rejected_rcpt_kept_at_shutdown_chunked() {
    // The shutdown grace ends while the reply to BDAT is due, and the
    // scheduler closes the busy connection without a session failure. The
    // session reported the RCPT rejection when it came, so `a` still fails
    // with it, rather than getting "delivery_unknown" and "unsent", which
    // `ec deliver --resume` would send to again.
    let scenario = Scenario::builder()
        .chunking()
        .on_nth(Verb::Rcpt, 1, Response::reply("550 5.1.1 No such user"))
        .on(Verb::Bdat, Response::silence())
        .build();

    let records = shut_down_mid_transaction(scenario, |_| {}, |record| !record.chunks().is_empty());

    assert_rejection_kept(&records);
}

#[test]
fn rejected_rcpt_kept_at_shutdown_data() {
    // The same as rejected_rcpt_kept_at_shutdown_chunked, with DATA.
    let scenario = Scenario::builder()
        .on_nth(Verb::Rcpt, 1, Response::reply("550 5.1.1 No such user"))
        .on_end_of_data(Response::silence())
        .build();

    let records = shut_down_mid_transaction(
        scenario,
        |config| config.global.chunking = Some(false),
        |record| !record.bodies().is_empty(),
    );

    assert_rejection_kept(&records);
}

#[test]
fn held_back_replies_wait_for_chunk() {
    // RFC 2920 lets a server hold back its replies to a pipelined group. A
    // server that does so replies to MAIL, RCPT and BDAT together once it
    // has taken the chunk. With DATA the group ends before the data, but a
    // chunk goes with the commands, so every reply of the group may take
    // as long as the final reply (`data_termination`, 5 s here), not the
    // MAIL timeout (500 ms here).
    let held_back = Scenario::builder()
        .chunking()
        .on(Verb::Mail, Response::nothing())
        .on(Verb::Rcpt, Response::nothing())
        .on(
            Verb::Bdat,
            Response::raw(&b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued\r\n"[..])
                .delayed(Duration::from_secs(1)),
        )
        .build();
    let peer = FaultPeer::start_sequence_on_thread(vec![held_back.clone(), held_back])
        .expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.timeouts.mail = Some(Duration::from_millis(500));

    let result = Run::new(config)
        .submit(submission(1, "s@ec.test", &recipients(&["a"]), BODY))
        .limit(Duration::from_secs(5))
        .run();

    assert_eq!(
        result.outcomes_of(1),
        ["delivered"],
        "{:#?}",
        result.records
    );
}

/// Runs one message against `scenario`, whose reply to the message data
/// comes 6 s late, with a final-reply timeout of 300 ms and a close
/// deadline of 1 s.
fn run_against_busy_server(scenario: Scenario, chunking: bool) -> RunResult {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.chunking = Some(chunking);
    config.global.timeouts.data_termination = Some(Duration::from_millis(300));
    config.global.timeouts.close = Some(Duration::from_secs(1));
    Run::new(config)
        .submit(submission(1, "s@ec.test", &recipients(&["a"]), BODY))
        .limit(Duration::from_secs(5))
        .run()
}

#[test]
fn busy_server_close_ends_before_deadline() {
    // A server busy with the message (the fault peer sleeps before its
    // reply, as a server process blocked elsewhere would) does not read the
    // client's FIN after the final-reply timeout. The session's read to EOF
    // ends at the close deadline, and the session reports the close itself:
    // the scheduler's backstop, which releases a connection whose session
    // never reports, must not fire first.
    let late = Response::reply("250 2.0.0 Ok: late").delayed(Duration::from_secs(6));
    let chunked = Scenario::builder()
        .chunking()
        .on(Verb::Bdat, late.clone())
        .build();
    let with_data = Scenario::builder().on_end_of_data(late).build();

    for (scenario, chunking) in [(chunked, true), (with_data, false)] {
        let result = run_against_busy_server(scenario, chunking);

        assert_eq!(
            result.check_accounting(),
            Ok(()),
            "chunking {chunking}, closes: {:#?}",
            result.closes
        );
    }
}

/// Describes each record of `local`, in order: its outcome and the reply it
/// carries, such as `"failed: 550 5.7.1 no"`, `"deferred: -"` for a
/// deferral without a reply, or `"unsent"`.
fn described(records: &[RecipientRecord], local: &str) -> Vec<String> {
    records_for(records, local)
        .iter()
        .map(|record| {
            let name = record.outcome.as_str();
            match &record.outcome {
                RecipientOutcome::Delivered(reply) | RecipientOutcome::Failed(reply) => {
                    format!("{name}: {reply}")
                }
                RecipientOutcome::Deferred {
                    reply: Some(reply), ..
                } => format!("{name}: {reply}"),
                RecipientOutcome::Deferred { reply: None, .. } => format!("{name}: -"),
                _ => name.to_owned(),
            }
        })
        .collect()
}

/// Runs one message to `a` and `b` against `scenario` until both have a
/// record, then shuts the engine down. Every reply wait is 5 s unless
/// `adjust` changes it.
fn run_to_a_and_b(scenario: Scenario, adjust: impl FnOnce(&mut Config)) -> RunResult {
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    adjust(&mut config);
    let result = Run::new(config)
        .submit(submission(1, "s@ec.test", &recipients(&["a", "b"]), BODY))
        .limit(Duration::from_secs(10))
        .run();
    assert_eq!(result.check_accounting(), Ok(()), "{:#?}", result.closes);
    result
}

const MAIL_550: &str = "550 5.7.1 sender rejected";
const MAIL_451: &str = "451 4.3.0 sender check failed, try later";
const RCPT_451: &str = "451 4.7.1 greylisted, try later";

#[test]
fn mail_rejection_kept_at_shutdown_chunked() {
    // The server rejects MAIL for good, and its replies to the rest of the
    // group never come. The shutdown cuts the transaction, but the server
    // had rejected all of it, so a and b fail with the MAIL reply, once each.
    let scenario = Scenario::builder()
        .chunking()
        .on(Verb::Mail, Response::reply(MAIL_550))
        .on(Verb::Bdat, Response::silence())
        .build();

    let records = shut_down_mid_transaction(scenario, |_| {}, |record| !record.chunks().is_empty());

    let failed = vec![format!("failed: {MAIL_550}")];
    assert_eq!(described(&records, "a"), failed);
    assert_eq!(described(&records, "b"), failed);
}

#[test]
fn mail_rejection_kept_when_peer_closes() {
    // A pipelined DATA group: 550 to MAIL, then the server closes instead
    // of replying to the first RCPT.
    let scenario = Scenario::builder()
        .on(Verb::Mail, Response::reply(MAIL_550))
        .on_nth(Verb::Rcpt, 1, Response::close(Close::Clean))
        .build();

    let result = run_to_a_and_b(scenario, |_| {});

    let failed = vec![format!("failed: {MAIL_550}")];
    assert_eq!(described(&result.records, "a"), failed);
    assert_eq!(described(&result.records, "b"), failed);
}

#[test]
fn mail_rejection_kept_when_chunk_times_out() {
    // A chunked group: 550 to MAIL, and no reply to BDAT until the final
    // reply's timeout ends the session.
    let scenario = Scenario::builder()
        .chunking()
        .on(Verb::Mail, Response::reply(MAIL_550))
        .on(Verb::Bdat, Response::silence())
        .build();

    let result = run_to_a_and_b(scenario, |config| {
        config.global.timeouts.data_termination = Some(Duration::from_millis(300));
    });

    let failed = vec![format!("failed: {MAIL_550}")];
    assert_eq!(described(&result.records, "a"), failed);
    assert_eq!(described(&result.records, "b"), failed);
}

#[test]
fn mail_451_defers_when_peer_closes() {
    // A transient MAIL rejection still defers the message, and the
    // deferral carries the server's reply.
    let scenario = Scenario::builder()
        .on(Verb::Mail, Response::reply(MAIL_451))
        .on_nth(Verb::Rcpt, 1, Response::close(Close::Clean))
        .build();

    let result = run_to_a_and_b(scenario, |_| {});

    let deferred = vec![format!("deferred: {MAIL_451}"), "unsent".to_owned()];
    assert_eq!(described(&result.records, "a"), deferred);
    assert_eq!(described(&result.records, "b"), deferred);
}

#[test]
fn mail_451_defers_at_shutdown_chunked() {
    // The server rejected the transaction, so the chunk sent with it cannot
    // have been delivered: a deferral with the reply, not "delivery
    // unknown".
    let scenario = Scenario::builder()
        .chunking()
        .on(Verb::Mail, Response::reply(MAIL_451))
        .on(Verb::Bdat, Response::silence())
        .build();

    let records = shut_down_mid_transaction(scenario, |_| {}, |record| !record.chunks().is_empty());

    let deferred = vec![format!("deferred: {MAIL_451}"), "unsent".to_owned()];
    assert_eq!(described(&records, "a"), deferred);
    assert_eq!(described(&records, "b"), deferred);
}

#[test]
fn rcpt_451_kept_when_dot_unanswered() {
    // The server closes instead of replying to the final dot. The message
    // may have reached b, but not a, whose RCPT got 451.
    let scenario = Scenario::builder()
        .on_nth(Verb::Rcpt, 1, Response::reply(RCPT_451))
        .on_end_of_data(Response::close(Close::Clean))
        .build();

    let result = run_to_a_and_b(scenario, |_| {});

    assert_eq!(
        described(&result.records, "a"),
        [format!("deferred: {RCPT_451}"), "unsent".to_owned()]
    );
    assert_eq!(
        described(&result.records, "b"),
        ["delivery_unknown", "unsent"]
    );
}

#[test]
fn rcpt_451_kept_when_chunk_unanswered() {
    // The same as rcpt_451_kept_when_dot_unanswered, with BDAT.
    let scenario = Scenario::builder()
        .chunking()
        .on_nth(Verb::Rcpt, 1, Response::reply(RCPT_451))
        .on(Verb::Bdat, Response::close(Close::Clean))
        .build();

    let result = run_to_a_and_b(scenario, |_| {});

    assert_eq!(
        described(&result.records, "a"),
        [format!("deferred: {RCPT_451}"), "unsent".to_owned()]
    );
    assert_eq!(
        described(&result.records, "b"),
        ["delivery_unknown", "unsent"]
    );
}

#[test]
fn rcpt_451_kept_when_next_rcpt_stalls() {
    // No reply to the second RCPT until the RCPT timeout ends the session:
    // b is deferred without a reply, and a keeps the 451 its RCPT got.
    let scenario = Scenario::builder()
        .on_nth(Verb::Rcpt, 1, Response::reply(RCPT_451))
        .on_nth(Verb::Rcpt, 2, Response::silence())
        .build();

    let result = run_to_a_and_b(scenario, |config| {
        config.global.timeouts.rcpt = Some(Duration::from_millis(300));
    });

    assert_eq!(
        described(&result.records, "a"),
        [format!("deferred: {RCPT_451}"), "unsent".to_owned()]
    );
    assert_eq!(described(&result.records, "b"), ["deferred: -", "unsent"]);
}

#[test]
fn rcpt_451_outranks_later_421() {
    // A 421 to the final dot closes the connection and defers b with it. a
    // keeps its own reply, as it would had the dot got a 451.
    let dot_421 = "421 4.3.2 shutting down";
    let scenario = Scenario::builder()
        .on_nth(Verb::Rcpt, 1, Response::reply(RCPT_451))
        .on_end_of_data(Response::reply(dot_421))
        .build();

    let result = run_to_a_and_b(scenario, |_| {});

    assert_eq!(
        described(&result.records, "a"),
        [format!("deferred: {RCPT_451}"), "unsent".to_owned()]
    );
    assert_eq!(
        described(&result.records, "b"),
        [format!("deferred: {dot_421}"), "unsent".to_owned()]
    );
}

#[test]
fn rcpt_451_kept_at_shutdown_chunked() {
    let scenario = Scenario::builder()
        .chunking()
        .on_nth(Verb::Rcpt, 1, Response::reply(RCPT_451))
        .on(Verb::Bdat, Response::silence())
        .build();

    let records = shut_down_mid_transaction(scenario, |_| {}, |record| !record.chunks().is_empty());

    assert_eq!(
        described(&records, "a"),
        [format!("deferred: {RCPT_451}"), "unsent".to_owned()]
    );
    assert_eq!(described(&records, "b"), ["delivery_unknown", "unsent"]);
}
