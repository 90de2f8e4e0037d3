//! The whole engine against Postfix's smtp-sink: pipelining, connection
//! reuse, and smtp-sink's fault options.

use std::time::Duration;

use ec_tests::delivery::{config_for, run, submission, Run};
use ec_tests::peers::SmtpSink;
use ec_types::{CloseOutcome, Route};

fn route_to(sink: &SmtpSink) -> Route {
    Route::Addresses(vec![sink.addr()])
}

fn messages(count: u64, domain: &str) -> Vec<ec_types::Submission> {
    (0..count)
        .map(|tag| {
            let to = vec![format!("user{tag}@{domain}")];
            let body = format!("Subject: test {tag}\r\n\r\nbody {tag}\r\n.leading dot\r\n");
            submission(tag, "sender@ec.test", &to, body.as_bytes())
        })
        .collect()
}

#[test]
fn sink_delivers_with_reuse() {
    let sink = SmtpSink::start(["-c"]);
    let mut config = config_for("sink.test", route_to(&sink));
    config.global.max_outbound_connections = Some(4);

    let result = run(config, messages(200, "sink.test"), Duration::from_secs(60));

    assert_eq!(result.audit, Ok(()));
    let undelivered: Vec<_> = result
        .records
        .iter()
        .filter(|r| r.outcome.as_str() != "delivered")
        .collect();
    assert_eq!(
        result.count("delivered"),
        200,
        "not delivered: {undelivered:?}"
    );
    assert!(
        result.opened <= 4,
        "opened {} connections, limit 4",
        result.opened
    );
    assert_eq!(result.closes.len(), result.opened);
    for close in &result.closes {
        assert_eq!(close.outcome, CloseOutcome::Clean, "{close:?}");
    }
    let stats = result.stats.expect("scheduler stopped cleanly");
    assert_eq!(stats.connections.live(), 0);
}

#[test]
fn sink_delivers_with_session_threads() {
    let sink = SmtpSink::start(["-c"]);
    let mut config = config_for("threads.test", route_to(&sink));
    config.global.max_outbound_connections = Some(4);
    let run = messages(200, "threads.test")
        .into_iter()
        .fold(Run::new(config), Run::submit)
        .io_threads(2)
        .limit(Duration::from_secs(60));

    let result = run.run();

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 200);
    assert!(result.opened <= 4, "opened {} connections", result.opened);
    assert_eq!(result.closes.len(), result.opened);
    let stats = result.stats.expect("scheduler stopped cleanly");
    assert_eq!(stats.connections.live(), 0);
}

#[test]
fn sink_421_at_mail_defers() {
    let sink = SmtpSink::start(["-Q", "mail"]);
    let config = config_for("sink.test", route_to(&sink));

    let result = run(config, messages(3, "sink.test"), Duration::from_secs(60));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 0);
    let last = result.last_by_recipient();
    assert_eq!(last.len(), 3);
    for record in last.values() {
        assert!(
            matches!(record.outcome.as_str(), "deferred" | "unsent"),
            "{record:?}"
        );
    }
}

#[test]
fn sink_disconnect_at_rcpt_defers() {
    let sink = SmtpSink::start(["-q", "rcpt"]);
    let config = config_for("sink.test", route_to(&sink));

    let result = run(config, messages(2, "sink.test"), Duration::from_secs(60));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 0);
    assert!(result
        .closes
        .iter()
        .all(|c| c.reason == ec_types::CloseReason::PeerClosed));
}

#[test]
fn sink_slow_quit_still_closes() {
    let sink = SmtpSink::start(["-W", "quit:2"]);
    let config = config_for("sink.test", route_to(&sink));

    let result = run(config, messages(2, "sink.test"), Duration::from_secs(60));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 2);
    assert!(!result.closes.is_empty());
}

#[test]
fn sink_abort_after_data_fails_message() {
    // smtp-sink -A 0 answers DATA with 354, then at once with 550, and
    // reads nothing more.
    let sink = SmtpSink::start(["-A", "0"]);
    let mut config = config_for("sink.test", route_to(&sink));
    config.global.timeouts.data_termination = Some(Duration::from_secs(2));
    config.global.timeouts.quit = Some(Duration::from_millis(500));
    config.global.timeouts.close = Some(Duration::from_secs(2));

    let result = run(config, messages(1, "sink.test"), Duration::from_secs(20));

    assert_eq!(result.audit, Ok(()));
    let last = result.last_by_recipient();
    let record = last.values().next().expect("one record");
    let ec_sched::RecipientOutcome::Failed(reply) = &record.outcome else {
        panic!("expected the 550 after DATA to fail the message, got {record:?}");
    };
    assert_eq!(reply.code.as_u16(), 550);
    assert_eq!(result.closes.len(), result.opened);
}
