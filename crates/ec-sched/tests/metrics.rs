//! What the scheduler records through `ec-metrics`, read back from a
//! private recorder: each scenario runs the harness inside
//! `LocalRecorder::scope` and compares the rendered series with the
//! scheduler's own counts.

use std::time::Duration;

mod common;

use common::{label_values, sum};
use ec_metrics::LocalRecorder;
use ec_sched::testing::Harness;
use ec_sched::SchedulerOptions;
use ec_types::{
    CloseOutcome, CloseReason, CloseReport, Config, Domain, ReplyCode, SessionError, SessionEvent,
    SessionFailure, Settings, Stage,
};

fn reply(code: u16) -> ReplyCode {
    ReplyCode::new(code).expect("a valid test reply code")
}

/// Returns a configuration that sends up to 10 messages per connection.
fn batching() -> Config {
    let mut config = Config::default();
    config.global.batch_size = Some(10);
    config
}

#[test]
fn connection_life_recorded() {
    let recorder = LocalRecorder::new();
    let mut harness = Harness::new(batching());
    let binding = harness.default_binding();

    recorder.scope(|| {
        harness.submit_to(binding, 1, &["a@one.example", "b@one.example"]);
        harness.submit_to(binding, 2, &["c@one.example"]);
        let connection = harness.opened()[0];
        harness.connected(connection);
        harness.ready(connection);
        assert!(harness.transaction(connection, ReplyCode::OK));
        assert!(harness.transaction(connection, reply(451)));
        harness.batch_done(connection);

        let _ = harness.close(connection, CloseReason::Requested);
        let duplicate = harness.close(connection, CloseReason::IdleTimeout);
        assert!(duplicate.is_some());
        harness.event(
            connection,
            SessionEvent::Closed(CloseReport {
                outcome: CloseOutcome::QuitTimedOut,
                close_notify_sent: true,
                close_notify_received: false,
            }),
        );
    });
    let text = recorder.render();
    let series = [("binding", "default"), ("domain", "one.example")];

    assert_eq!(sum(&text, "ec_connections_opened_total", &series), 1.0);
    assert_eq!(sum(&text, "ec_connections_live", &series), 0.0);
    assert_eq!(
        sum(
            &text,
            "ec_connections_closed_total",
            &[
                ("domain", "one.example"),
                ("reason", "requested"),
                ("outcome", "quit_timed_out")
            ]
        ),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_connection_duration_seconds_count", &series),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_connect_attempts_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_message_fates_total", &[("fate", "delivered")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_message_fates_total", &[("fate", "deferred")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_recipients_total", &[("result", "delivered")]),
        2.0
    );
    assert_eq!(
        sum(&text, "ec_recipients_total", &[("result", "deferred")]),
        1.0
    );
    assert_eq!(sum(&text, "ec_closeconn_duplicates_total", &[]), 1.0);
    assert_eq!(sum(&text, "ec_tls_close_notify_sent_total", &[]), 1.0);
    assert_eq!(sum(&text, "ec_tls_close_notify_received_total", &[]), 0.0);
    assert_eq!(
        sum(&text, "ec_smtp_timeouts_total", &[("stage", "quit")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_queue_messages", &[("queue", "delayed")]),
        1.0
    );
    assert_eq!(sum(&text, "ec_queue_messages", &[("queue", "active")]), 0.0);
    assert_eq!(sum(&text, "ec_connections_in_state", &[]), 0.0);
    harness.audit().expect("counts add up");
}

#[test]
fn failures_and_fates_recorded() {
    let recorder = LocalRecorder::new();
    let mut harness = Harness::new(batching());
    let binding = harness.default_binding();

    recorder.scope(|| {
        // A refused connect: the message goes back without an attempt.
        harness.submit_to(binding, 1, &["a@refused.example"]);
        let refused = harness.opened()[0];
        harness.connect_failed(refused);
        harness.closed(refused, CloseOutcome::NeverConnected);

        // A timeout waiting for the MAIL reply: the message is deferred.
        harness.submit_to(binding, 2, &["b@slow.example"]);
        let slow = *harness.opened().last().expect("a second connection");
        harness.connected(slow);
        harness.ready(slow);
        let message = harness.outstanding(slow)[0].id;
        harness.event(
            slow,
            SessionEvent::Failed(SessionFailure {
                error: SessionError::Timeout {
                    stage: Stage::Mail,
                    after: Duration::from_secs(300),
                },
                stage: Stage::Mail,
                in_transaction: Some(message),
                final_dot_sent: false,
            }),
        );
        harness.closed(slow, CloseOutcome::Aborted);

        // A 5xx rejection and a lost final dot on one connection.
        harness.submit_to(binding, 3, &["c@mixed.example"]);
        harness.submit_to(binding, 4, &["d@mixed.example", "e@mixed.example"]);
        let mixed = *harness.opened().last().expect("a third connection");
        harness.connected(mixed);
        harness.ready(mixed);
        assert!(harness.transaction(mixed, reply(550)));
        harness.lost(mixed, true);
        harness.closed(mixed, CloseOutcome::Reset);
    });
    let text = recorder.render();

    let refused = [("domain", "refused.example")];
    assert_eq!(
        sum(
            &text,
            "ec_connect_attempts_total",
            &[("domain", "refused.example"), ("result", "refused")]
        ),
        1.0
    );
    // A connection gets its batch when it is ready, so the message never
    // left the active queue and got no fate.
    assert_eq!(sum(&text, "ec_message_fates_total", &refused), 0.0);
    assert_eq!(sum(&text, "ec_connections_live", &refused), 0.0);

    assert_eq!(
        sum(&text, "ec_smtp_timeouts_total", &[("stage", "mail")]),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "ec_connections_closed_total",
            &[("domain", "slow.example"), ("reason", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "ec_message_fates_total",
            &[("domain", "slow.example"), ("fate", "deferred")]
        ),
        1.0
    );

    let mixed = |result: &'static str| {
        sum(
            &text,
            "ec_recipients_total",
            &[("domain", "mixed.example"), ("result", result)],
        )
    };
    assert_eq!(mixed("failed"), 1.0);
    assert_eq!(mixed("delivery_unknown"), 2.0);
    let mixed_fate = |fate: &'static str| {
        sum(
            &text,
            "ec_message_fates_total",
            &[("domain", "mixed.example"), ("fate", fate)],
        )
    };
    assert_eq!(mixed_fate("failed"), 1.0);
    assert_eq!(mixed_fate("delivery_unknown"), 1.0);
    assert_eq!(mixed_fate("requeued"), 0.0);

    let ledger = harness.scheduler().ledger();
    assert_eq!(
        sum(&text, "ec_queue_messages", &[("queue", "active")]),
        ledger.active as f64
    );
    assert_eq!(
        sum(&text, "ec_queue_messages", &[("queue", "delayed")]),
        ledger.delayed as f64
    );
    assert_eq!(
        sum(&text, "ec_connections_opened_total", &[])
            - sum(&text, "ec_connections_closed_total", &[]),
        sum(&text, "ec_connections_live", &[])
    );
    assert_eq!(
        sum(&text, "ec_connections_live", &[]),
        f64::from(harness.scheduler().engine_counts().live())
    );
    harness.audit().expect("counts add up");
}

#[test]
fn domain_labels_bounded() {
    let mut config = Config::default();
    config.domain.insert(
        Domain::new("named.example").expect("valid"),
        Settings::default(),
    );
    let options = SchedulerOptions {
        domain_label_limit: 3,
        ..SchedulerOptions::default()
    };
    let recorder = LocalRecorder::new();
    let mut harness = Harness::with_options(config, options);
    let binding = harness.default_binding();
    let outbound = harness.register_binding("outbound-1").expect("new binding");

    recorder.scope(|| {
        for index in 0..20 {
            let slot = if index % 2 == 0 { binding } else { outbound };
            harness.submit_to(slot, index, &[&format!("u@d{index}.example")]);
        }
        harness.submit_to(binding, 20, &["u@named.example"]);
        for connection in harness.opened().to_vec() {
            harness.connect_failed(connection);
            harness.closed(connection, CloseOutcome::NeverConnected);
        }
    });
    let text = recorder.render();

    let domains = label_values(&text, "ec_connections_opened_total", "domain");
    assert_eq!(
        domains,
        [
            "d0.example",
            "d1.example",
            "d2.example",
            "named.example",
            "other"
        ]
    );
    assert_eq!(sum(&text, "ec_connections_opened_total", &[]), 21.0);
    assert_eq!(
        sum(&text, "ec_connections_opened_total", &[("domain", "other")]),
        17.0
    );
    assert_eq!(
        label_values(&text, "ec_connections_opened_total", "binding"),
        ["default", "outbound-1"]
    );
}

#[test]
fn expired_message_counts_failed() {
    let mut config = Config::default();
    config.global.retry.max_age = Some(Duration::from_secs(60));
    let recorder = LocalRecorder::new();
    let mut harness = Harness::new(config);
    let binding = harness.default_binding();

    recorder.scope(|| {
        harness.submit_to(binding, 1, &["a@late.example"]);
        let connection = harness.opened()[0];
        harness.advance(Duration::from_secs(61));
        harness.connected(connection);
        harness.ready(connection);
        assert!(harness.transaction(connection, reply(451)));
    });
    let text = recorder.render();

    assert_eq!(
        sum(&text, "ec_message_fates_total", &[("fate", "failed")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_recipients_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        sum(&text, "ec_message_fates_total", &[("fate", "deferred")]),
        0.0
    );
}
