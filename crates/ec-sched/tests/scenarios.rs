//! Scheduler scenarios in virtual time: limits, batches, reuse, timers,
//! fates, backoff, close and shutdown. Each test audits the accounting
//! after every step that changes it.

use std::net::SocketAddr;
use std::time::Duration;

use ec_sched::testing::Harness;
use ec_sched::{
    begin_close, default_send_quit, CloseRequest, CloseTicket, ConnectionClosed, RecipientOutcome,
    Report, SchedulerOptions, SubmitError,
};
use ec_types::{
    BindingSlot, CloseOutcome, ClosePlan, CloseReason, Config, ConnectionHandle, ConnectionState,
    Domain, EngineLimits, Event, MessageFate, MessageId, RecipientStatus, Reply, ReplyCode, Route,
    SessionCommand, SessionError, SessionEvent, SessionFailure, Settings, Stage, Submission,
};

fn config(adjust: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    adjust(&mut config);
    config
}

fn global(adjust: impl FnOnce(&mut Settings)) -> Config {
    config(|config| adjust(&mut config.global))
}

fn code(value: u16) -> ReplyCode {
    ReplyCode::new(value).expect("valid reply code")
}

fn audit(harness: &Harness) {
    if let Err(error) = harness.audit() {
        panic!("audit failed: {error}");
    }
}

fn close_plans(harness: &Harness, handle: ConnectionHandle) -> Vec<ClosePlan> {
    harness
        .commands(handle)
        .iter()
        .filter_map(|command| match command {
            SessionCommand::Close(plan) => Some(*plan),
            _ => None,
        })
        .collect()
}

fn deliver_commands(harness: &Harness, handle: ConnectionHandle) -> Vec<usize> {
    harness
        .commands(handle)
        .iter()
        .filter_map(|command| match command {
            SessionCommand::Deliver { messages, .. } => Some(messages.len()),
            _ => None,
        })
        .collect()
}

fn closed_reports(harness: &Harness) -> Vec<ConnectionClosed> {
    harness
        .reports()
        .iter()
        .filter_map(|report| match report {
            Report::ConnectionClosed(closed) => Some(closed.clone()),
            _ => None,
        })
        .collect()
}

fn outcomes_for(harness: &Harness, recipient: &str) -> Vec<RecipientOutcome> {
    harness
        .reports()
        .iter()
        .filter_map(|report| match report {
            Report::Recipient(record) if record.recipient.as_str() == recipient => {
                Some(record.outcome.clone())
            }
            _ => None,
        })
        .collect()
}

fn submit_many(harness: &mut Harness, binding: BindingSlot, domain: &str, count: usize) {
    for index in 0..count {
        let tag = harness.next_tag();
        harness.submit_to(binding, tag, &[&format!("user{index}@{domain}")]);
    }
}

fn make_ready(harness: &mut Harness, handle: ConnectionHandle) {
    harness.connected(handle);
    harness.ready(handle);
}

#[test]
fn opens_one_connection_per_batch() {
    let mut harness = Harness::new(global(|s| s.batch_size = Some(2)));
    submit_many(&mut harness, BindingSlot(0), "example.com", 5);
    assert_eq!(harness.opened().len(), 3);
    audit(&harness);

    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    assert_eq!(deliver_commands(&harness, first), vec![2]);
    audit(&harness);
}

#[test]
fn lane_limit_caps_connections() {
    let mut harness = Harness::new(global(|s| s.max_outbound_connections = Some(2)));
    submit_many(&mut harness, BindingSlot(0), "example.com", 5);
    assert_eq!(harness.opened().len(), 2);

    let (a, b) = (harness.opened()[0], harness.opened()[1]);
    make_ready(&mut harness, a);
    make_ready(&mut harness, b);
    harness.deliver(a, ReplyCode::OK);
    harness.deliver(b, ReplyCode::OK);
    harness.deliver(a, ReplyCode::OK);
    audit(&harness);
    assert_eq!(
        harness.opened().len(),
        2,
        "idle connections take the backlog"
    );
    assert_eq!(harness.scheduler().ledger().delivered, 3);

    // Closing the busy one leaves its message "delivery unknown" in the
    // delayed queue. New mail waits for a place, which is free only once
    // the closing connection's socket is gone.
    let _ = harness.close(b, CloseReason::Requested);
    assert_eq!(harness.scheduler().ledger().delayed, 1);
    submit_many(&mut harness, BindingSlot(0), "example.com", 1);
    assert_eq!(harness.scheduler().ledger().active, 1);
    assert_eq!(
        harness.opened().len(),
        2,
        "a closing connection still counts"
    );
    harness.closed(b, CloseOutcome::Clean);
    assert_eq!(harness.opened().len(), 3);
    audit(&harness);
}

#[test]
fn idle_connection_is_reused() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);
    assert_eq!(
        harness
            .scheduler()
            .connection(connection)
            .map(|c| c.state()),
        Some(ConnectionState::Idle)
    );

    harness.submit_to(BindingSlot(0), 2, &["b@example.com"]);
    assert_eq!(harness.opened().len(), 1);
    assert_eq!(deliver_commands(&harness, connection), vec![1, 1]);
    audit(&harness);
}

#[test]
fn idle_timeout_closes_with_quit() {
    let mut harness = Harness::new(global(|s| s.idle_timeout = Some(Duration::from_secs(7))));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);

    harness.advance(Duration::from_secs(6));
    assert!(close_plans(&harness, connection).is_empty());
    harness.advance(Duration::from_secs(1));
    let plans = close_plans(&harness, connection);
    assert_eq!(plans.len(), 1);
    assert!(plans[0].send_quit);
    assert_eq!(harness.scheduler().engine_counts().live(), 1);
    audit(&harness);

    harness.closed(connection, CloseOutcome::Clean);
    assert_eq!(harness.scheduler().engine_counts().live(), 0);
    let closed = closed_reports(&harness);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, CloseReason::IdleTimeout);
    assert_eq!(closed[0].messages_delivered, 1);
    audit(&harness);
}

#[test]
fn max_age_closes_idle_connection() {
    let mut harness = Harness::new(global(|s| {
        s.max_connection_age = Some(Duration::from_secs(60));
        s.idle_timeout = Some(Duration::from_secs(3600));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);

    harness.advance(Duration::from_secs(60));
    assert_eq!(close_plans(&harness, connection).len(), 1);
    harness.closed(connection, CloseOutcome::Clean);
    assert_eq!(closed_reports(&harness)[0].reason, CloseReason::MaxAge);
    audit(&harness);
}

/// Returns the `last` flag of each `Deliver` command, in order.
fn last_flags(harness: &Harness, handle: ConnectionHandle) -> Vec<bool> {
    harness
        .commands(handle)
        .iter()
        .filter_map(|command| match command {
            SessionCommand::Deliver { last, .. } => Some(*last),
            _ => None,
        })
        .collect()
}

#[test]
fn batch_reaching_max_deliveries_is_last() {
    let mut harness = Harness::new(global(|s| {
        s.max_deliveries_per_connection = Some(3);
        s.max_outbound_connections = Some(1);
        s.batch_size = Some(2);
    }));
    submit_many(&mut harness, BindingSlot(0), "example.com", 5);
    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    harness.deliver(first, ReplyCode::OK);
    harness.deliver(first, ReplyCode::OK);

    assert_eq!(deliver_commands(&harness, first), [2, 1]);
    assert_eq!(last_flags(&harness, first), [false, true]);
    assert_eq!(close_plans(&harness, first).len(), 1);

    harness.closed(first, CloseOutcome::Clean);
    let second = harness.opened()[1];
    make_ready(&mut harness, second);
    assert_eq!(last_flags(&harness, second), [false]);
    harness.deliver(second, ReplyCode::OK);
    audit(&harness);
}

#[test]
fn unlimited_deliveries_never_last() {
    let mut harness = Harness::new(global(|s| {
        s.max_deliveries_per_connection = Some(0);
        s.batch_size = Some(1);
        s.max_outbound_connections = Some(1);
    }));
    submit_many(&mut harness, BindingSlot(0), "example.com", 3);
    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    for _ in 0..3 {
        harness.deliver(first, ReplyCode::OK);
    }
    assert_eq!(last_flags(&harness, first), [false, false, false]);
    assert!(close_plans(&harness, first).is_empty());
    audit(&harness);
}

#[test]
fn max_deliveries_closes_after_batch() {
    let mut harness = Harness::new(global(|s| {
        s.max_deliveries_per_connection = Some(2);
        s.max_outbound_connections = Some(1);
    }));
    submit_many(&mut harness, BindingSlot(0), "example.com", 3);
    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    harness.deliver(first, ReplyCode::OK);
    harness.deliver(first, ReplyCode::OK);
    assert_eq!(close_plans(&harness, first).len(), 1);
    assert_eq!(
        harness.opened().len(),
        1,
        "the limit of one still holds while closing"
    );

    harness.closed(first, CloseOutcome::Clean);
    assert_eq!(
        closed_reports(&harness)[0].reason,
        CloseReason::MaxDeliveries
    );
    assert_eq!(
        harness.opened().len(),
        2,
        "the third message gets a new connection"
    );
    audit(&harness);
}

#[test]
fn deferred_message_returns_when_due() {
    let mut harness = Harness::new(global(|s| {
        s.retry.interval = Some(Duration::from_secs(60));
        s.idle_timeout = Some(Duration::from_secs(1));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, code(451));
    assert_eq!(harness.scheduler().ledger().delayed, 1);
    assert!(matches!(
        outcomes_for(&harness, "a@example.com").as_slice(),
        [RecipientOutcome::Deferred { reply: Some(_), .. }]
    ));
    harness.advance(Duration::from_secs(1));
    harness.closed(connection, CloseOutcome::Clean);
    audit(&harness);

    harness.advance(Duration::from_secs(58));
    assert_eq!(harness.scheduler().ledger().delayed, 1);
    assert_eq!(harness.opened().len(), 1);
    harness.advance(Duration::from_secs(1));
    assert_eq!(harness.scheduler().ledger().delayed, 0);
    assert_eq!(
        harness.opened().len(),
        2,
        "the due message needs a connection"
    );
    audit(&harness);

    let second = harness.opened()[1];
    make_ready(&mut harness, second);
    harness.deliver(second, ReplyCode::OK);
    let outcomes = outcomes_for(&harness, "a@example.com");
    assert!(matches!(
        outcomes.last(),
        Some(RecipientOutcome::Delivered(_))
    ));
    audit(&harness);
}

#[test]
fn connect_failure_requeues_and_backs_off() {
    let options = SchedulerOptions {
        domain_backoff: Duration::from_secs(30),
        ..SchedulerOptions::default()
    };
    let mut harness = Harness::with_options(Config::default(), options);
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let first = harness.opened()[0];
    harness.connect_failed(first);
    assert!(
        harness.commands(first).is_empty(),
        "no close command for a connection that never connected"
    );
    assert_eq!(harness.scheduler().ledger().active, 1);
    harness.closed(first, CloseOutcome::NeverConnected);
    audit(&harness);

    let domain = Domain::new("example.com").expect("valid");
    let entry = harness.scheduler().domain(&domain).expect("domain exists");
    assert_eq!(entry.record().consecutive_failures, 1);
    let queued = entry.binding(BindingSlot(0)).expect("lane exists");
    assert_eq!(queued.active().iter().next().map(|m| m.attempts), Some(0));

    harness.advance(Duration::from_secs(29));
    assert_eq!(
        harness.opened().len(),
        1,
        "no new connection during backoff"
    );
    harness.advance(Duration::from_secs(1));
    assert_eq!(harness.opened().len(), 2);

    let second = harness.opened()[1];
    harness.connect_failed(second);
    harness.closed(second, CloseOutcome::NeverConnected);
    harness.advance(Duration::from_secs(59));
    assert_eq!(harness.opened().len(), 2, "the backoff doubled");
    harness.advance(Duration::from_secs(1));
    assert_eq!(harness.opened().len(), 3);
    audit(&harness);
}

/// A null MX fails every queued message of the lane with 556 5.1.10 at
/// once, and a message submitted later gets a connection without a backoff
/// and fails the same way.
#[test]
fn null_mx_fails_queue_without_backoff() {
    let options = SchedulerOptions {
        domain_backoff: Duration::from_secs(30),
        ..SchedulerOptions::default()
    };
    let config = global(|settings| settings.max_outbound_connections = Some(1));
    let mut harness = Harness::with_options(config, options);
    let null_mx = |harness: &mut Harness, handle| {
        harness.null_mx(handle, "nullmx.example");
        harness.closed(handle, CloseOutcome::NeverConnected);
        audit(harness);
    };

    for tag in 1..=3 {
        harness.submit_to(BindingSlot(0), tag, &["a@nullmx.example"]);
    }
    let first = harness.opened()[0];
    null_mx(&mut harness, first);
    assert_eq!(harness.final_outcomes().len(), 3);
    assert_eq!(harness.opened().len(), 1, "nothing left to connect for");

    harness.submit_to(BindingSlot(0), 4, &["b@nullmx.example"]);
    assert_eq!(
        harness.opened().len(),
        2,
        "a connection at once, no backoff"
    );
    let second = harness.opened()[1];
    null_mx(&mut harness, second);

    let outcomes = harness.final_outcomes();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    for (_, _, outcome) in &outcomes {
        let RecipientOutcome::Failed(reply) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(reply.code.as_u16(), 556);
        let enhanced = reply.enhanced.map(|code| code.to_string());
        assert_eq!(enhanced.as_deref(), Some("5.1.10"));
        assert!(reply.local, "a reply ec made");
    }
    assert_eq!(harness.elapsed(), Duration::ZERO);
    let ledger = *harness.scheduler().ledger();
    assert_eq!((ledger.active, ledger.delayed), (0, 0));
}

#[test]
fn lost_before_dot_defers() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.lost(connection, false);

    let plans = close_plans(&harness, connection);
    assert_eq!(plans.len(), 1);
    assert!(!plans[0].send_quit, "no QUIT into a broken stream");
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delayed, 1);
    assert_eq!(ledger.deferred, 1);
    assert!(matches!(
        outcomes_for(&harness, "a@example.com").as_slice(),
        [RecipientOutcome::Deferred { reply: None, .. }]
    ));
    harness.closed(connection, CloseOutcome::Reset);
    audit(&harness);
}

#[test]
fn lost_after_dot_is_delivery_unknown() {
    let mut harness = Harness::new(global(|s| s.batch_size = Some(3)));
    submit_many(&mut harness, BindingSlot(0), "example.com", 3);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    assert!(harness.transaction(connection, ReplyCode::OK));
    harness.lost(connection, true);

    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delivered, 1);
    assert_eq!(ledger.delivery_unknown, 1);
    assert_eq!(ledger.deferred, 0, "delivery unknown is not a deferral");
    assert_eq!(ledger.delayed, 1, "the unknown one waits for its retry");
    assert_eq!(ledger.active, 1, "the untouched one is requeued");
    assert_eq!(
        outcomes_for(&harness, "user1@example.com"),
        vec![RecipientOutcome::DeliveryUnknown]
    );
    assert!(outcomes_for(&harness, "user2@example.com").is_empty());

    let domain = Domain::new("example.com").expect("valid");
    let lane = harness
        .scheduler()
        .domain(&domain)
        .and_then(|d| d.binding(BindingSlot(0)))
        .expect("lane exists");
    let status = |m: &ec_types::Message| {
        (
            m.attempts,
            m.recipients[0].status == RecipientStatus::DeliveryUnknown,
        )
    };
    let active: Vec<(u32, bool)> = lane.active().iter().map(|m| status(m)).collect();
    assert_eq!(active, vec![(0, false)], "no attempt spent on it");
    let delayed: Vec<(u32, bool)> = lane.delayed().iter().map(|(_, m)| status(m)).collect();
    assert_eq!(delayed, vec![(1, true)], "its attempt is spent");
    audit(&harness);
}

#[test]
fn permanent_reply_fails_message() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, code(550));

    assert_eq!(harness.scheduler().ledger().failed, 1);
    let finals = harness.final_outcomes();
    assert_eq!(finals.len(), 2);
    assert!(finals
        .iter()
        .all(|(tag, _, outcome)| *tag == 1 && matches!(outcome, RecipientOutcome::Failed(_))));
    audit(&harness);
}

#[test]
fn mixed_statuses_report_each_once() {
    let mut harness = Harness::new(global(|s| {
        s.retry.interval = Some(Duration::from_secs(10));
        s.idle_timeout = Some(Duration::from_secs(60));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let statuses = vec![
        ec_sched::testing::status_for(ReplyCode::OK),
        ec_sched::testing::status_for(code(452)),
    ];
    assert!(harness.transaction_with(connection, statuses));
    harness.batch_done(connection);
    audit(&harness);

    harness.advance(Duration::from_secs(10));
    // The retry reuses the idle connection; the session reports a status
    // for every recipient, and the delivered one must keep its status.
    harness.deliver(connection, ReplyCode::OK);
    assert_eq!(outcomes_for(&harness, "a@example.com").len(), 1);
    let b = outcomes_for(&harness, "b@example.com");
    assert_eq!(b.len(), 2);
    assert!(matches!(b[1], RecipientOutcome::Delivered(_)));
    assert_eq!(harness.scheduler().ledger().delivered, 1);
    audit(&harness);
}

#[test]
fn double_close_is_counted() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);

    let first = harness.close(connection, CloseReason::Requested);
    assert!(matches!(
        first,
        Some(CloseTicket::Started { plan: Some(_), .. })
    ));
    let second = harness.close(connection, CloseReason::Timeout);
    assert!(matches!(
        second,
        Some(CloseTicket::AlreadyClosing {
            reason: CloseReason::Requested,
            ..
        })
    ));
    assert_eq!(harness.scheduler().ledger().duplicate_closes, 1);
    assert_eq!(close_plans(&harness, connection).len(), 1);
    audit(&harness);

    harness.closed(connection, CloseOutcome::Clean);
    assert!(
        harness.close(connection, CloseReason::Requested).is_none(),
        "stale handle"
    );
    audit(&harness);
}

#[test]
fn close_deadline_releases_silent_session() {
    let mut harness = Harness::new(global(|s| s.timeouts.close = Some(Duration::from_secs(15))));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);
    let _ = harness.close(connection, CloseReason::Requested);

    // The session drops its socket at the 15 s deadline and reports. The
    // scheduler gives up 1 s later (a tenth of the close time, at most 1 s).
    harness.advance(Duration::from_secs(15));
    assert_eq!(harness.scheduler().engine_counts().live(), 1);
    harness.advance(Duration::from_millis(499));
    assert_eq!(harness.scheduler().engine_counts().live(), 1);
    harness.advance(Duration::from_millis(501));
    assert_eq!(harness.scheduler().engine_counts().live(), 0);
    assert_eq!(harness.scheduler().ledger().close_deadlines, 1);
    assert_eq!(closed_reports(&harness)[0].outcome, CloseOutcome::Aborted);
    audit(&harness);

    harness.closed(connection, CloseOutcome::Clean);
    assert_eq!(harness.scheduler().ledger().stale_events, 1);
    assert_eq!(closed_reports(&harness).len(), 1);
    audit(&harness);
}

#[test]
fn stale_handle_never_reaches_new_connection() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let old = harness.opened()[0];
    harness.connect_failed(old);
    harness.closed(old, CloseOutcome::NeverConnected);
    harness.advance(Duration::from_secs(30));

    let new = harness.opened()[1];
    assert_eq!(new.slot, old.slot);
    assert_ne!(new.generation, old.generation);
    harness.connected(old);
    assert_eq!(harness.scheduler().ledger().stale_events, 1);
    assert_eq!(
        harness.scheduler().connection(new).map(|c| c.state()),
        Some(ConnectionState::Connecting)
    );
    audit(&harness);
}

#[test]
fn host_limit_spans_domains() {
    let relay = Route::Relay {
        host: "relay.example".to_owned(),
        port: 2525,
    };
    let mut harness = Harness::new(config(|c| {
        c.global.route = Some(relay);
        c.engine.max_connections_per_host = 2;
    }));
    for domain in ["one.example", "two.example", "three.example"] {
        let tag = harness.next_tag();
        harness.submit_to(BindingSlot(0), tag, &[&format!("a@{domain}")]);
    }
    assert_eq!(harness.opened().len(), 2);
    audit(&harness);

    let first = harness.opened()[0];
    harness.connect_failed(first);
    assert_eq!(
        harness.opened().len(),
        2,
        "closing still counts against the host"
    );
    harness.closed(first, CloseOutcome::NeverConnected);
    assert_eq!(
        harness.opened().len(),
        3,
        "the waiting domain gets the freed place"
    );
    let third = harness.session(harness.opened()[2]).expect("recorded");
    assert_eq!(third.request.domain.as_str(), "three.example");
    audit(&harness);
}

#[test]
fn engine_limit_wakes_waiters() {
    let mut harness = Harness::new(config(|c| {
        c.engine = EngineLimits {
            max_connections: 1,
            ..EngineLimits::default()
        };
    }));
    let b1 = harness.register_binding("b1").expect("new binding");
    harness.submit_to(BindingSlot(0), 1, &["a@one.example"]);
    harness.submit_to(b1, 2, &["a@two.example"]);
    assert_eq!(harness.opened().len(), 1);

    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    harness.deliver(first, ReplyCode::OK);
    let _ = harness.close(first, CloseReason::Requested);
    assert_eq!(harness.opened().len(), 1);
    harness.closed(first, CloseOutcome::Clean);
    assert_eq!(harness.opened().len(), 2);
    let second = harness.session(harness.opened()[1]).expect("recorded");
    assert_eq!(second.request.binding, b1);
    audit(&harness);
}

#[test]
fn addresses_route_prefers_healthy_host() {
    let a: SocketAddr = "127.0.0.1:2525".parse().expect("valid");
    let b: SocketAddr = "127.0.0.2:2525".parse().expect("valid");
    let options = SchedulerOptions {
        domain_backoff: Duration::from_secs(1),
        ..SchedulerOptions::default()
    };
    let mut harness = Harness::with_options(
        global(|s| s.route = Some(Route::Addresses(vec![a, b]))),
        options,
    );
    harness.submit_to(BindingSlot(0), 1, &["x@example.com"]);
    let first = harness.opened()[0];
    assert_eq!(
        harness.session(first).map(|s| s.request.target.to_string()),
        Some(a.to_string())
    );
    harness.connect_failed(first);
    harness.closed(first, CloseOutcome::NeverConnected);
    harness.advance(Duration::from_secs(1));
    let second = harness.opened()[1];
    assert_eq!(
        harness
            .session(second)
            .map(|s| s.request.target.to_string()),
        Some(b.to_string()),
        "the failed address is skipped"
    );
    audit(&harness);
}

#[test]
fn service_closing_421_defers() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.failed_with_reply(connection, Reply::new(code(421), None, "closing"));
    assert!(matches!(
        outcomes_for(&harness, "a@example.com").as_slice(),
        [RecipientOutcome::Deferred { reply: Some(reply), .. }] if reply.code.as_u16() == 421
    ));
    assert_eq!(close_plans(&harness, connection).len(), 1);
    audit(&harness);
}

#[test]
fn peer_close_while_busy_is_unknown() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.closed(connection, CloseOutcome::Reset);

    assert!(harness.scheduler().connection(connection).is_none());
    assert_eq!(harness.scheduler().ledger().delivery_unknown, 1);
    assert_eq!(
        harness.opened().len(),
        1,
        "the message waits for its retry, not a new connection"
    );
    let closed = &closed_reports(&harness)[0];
    assert_eq!(closed.reason, CloseReason::PeerClosed);
    assert_eq!(
        (closed.messages_attempted, closed.messages_delivered),
        (1, 0)
    );

    // The default retry interval is 1,200 s.
    harness.advance(Duration::from_secs(1_199));
    assert_eq!(harness.opened().len(), 1);
    harness.advance(Duration::from_secs(1));
    assert_eq!(harness.opened().len(), 2, "the retry opens a connection");
    audit(&harness);
}

#[test]
fn expired_message_fails_with_5_4_7() {
    let mut harness = Harness::new(global(|s| {
        s.retry.interval = Some(Duration::from_secs(600));
        s.retry.max_interval = Some(Duration::from_secs(600));
        s.retry.max_age = Some(Duration::from_secs(1800));
        s.idle_timeout = Some(Duration::from_secs(3600));
        s.max_connection_age = Some(Duration::from_secs(86_400));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    // Attempts at 0, 600, 1200 and 1800 s; the last is at the maximum age.
    for _ in 0..4 {
        harness.deliver(connection, code(451));
        harness.advance(Duration::from_secs(600));
    }
    assert_eq!(harness.scheduler().ledger().failed, 1);
    assert_eq!(harness.scheduler().ledger().expired, 1);
    let finals = harness.final_outcomes();
    assert_eq!(finals.len(), 1);
    let RecipientOutcome::Failed(reply) = &finals[0].2 else {
        panic!("expected a failure, got {:?}", finals[0].2);
    };
    assert_eq!(
        reply.enhanced.map(|e| e.to_string()),
        Some("5.4.7".to_owned())
    );
    assert!(reply.local, "ec made this reply");
    let text = reply.to_string();
    assert!(
        text.contains("the server's last reply was \"451 "),
        "the reason for the delay is kept: {text}"
    );
    audit(&harness);
}

/// A server that cuts every transaction short before the final dot
/// still cannot keep a message queued past the retry policy's maximum age.
#[test]
fn cut_transactions_expire_at_max_age() {
    let mut harness = Harness::new(global(|s| {
        s.retry.interval = Some(Duration::from_secs(600));
        s.retry.max_interval = Some(Duration::from_secs(600));
        s.retry.max_age = Some(Duration::from_secs(1800));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);

    // Attempts at 0, 600, 1200 and 1800 s; the last is at the maximum age.
    for attempt in 0..4 {
        assert_eq!(
            harness.opened().len(),
            attempt + 1,
            "one connection per attempt"
        );
        let connection = harness.opened()[attempt];
        make_ready(&mut harness, connection);
        harness.lost(connection, false);
        harness.closed(connection, CloseOutcome::Reset);
        harness.advance(Duration::from_secs(600));
    }

    assert_eq!(harness.scheduler().ledger().expired, 1);
    let finals = harness.final_outcomes();
    assert_eq!(finals.len(), 1);
    let RecipientOutcome::Failed(reply) = &finals[0].2 else {
        panic!("expected a failure, got {:?}", finals[0].2);
    };
    assert_eq!(
        reply.enhanced.map(|e| e.to_string()),
        Some("5.4.7".to_owned())
    );
    audit(&harness);
}

#[test]
fn shutdown_drains_and_reports_unsent() {
    let mut harness = Harness::new(global(|s| s.max_outbound_connections = Some(1)));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    harness.submit_to(BindingSlot(0), 2, &["b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.shutdown();
    assert!(
        close_plans(&harness, connection).is_empty(),
        "a busy connection finishes its batch"
    );

    harness.deliver(connection, ReplyCode::OK);
    assert_eq!(close_plans(&harness, connection).len(), 1);
    assert!(!harness.is_shut_down());
    harness.closed(connection, CloseOutcome::Clean);
    assert!(harness.is_shut_down());

    let finals = harness.final_outcomes();
    assert_eq!(finals.len(), 2);
    assert!(matches!(finals[0].2, RecipientOutcome::Delivered(_)));
    assert_eq!(finals[1].2, RecipientOutcome::Unsent);
    assert_eq!(harness.scheduler().ledger().unsent, 1);
    audit(&harness);
}

#[test]
fn shutdown_grace_closes_busy() {
    let options = SchedulerOptions {
        shutdown_grace: Duration::from_secs(5),
        ..SchedulerOptions::default()
    };
    let mut harness = Harness::with_options(Config::default(), options);
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.shutdown();
    harness.advance(Duration::from_secs(5));

    let plans = close_plans(&harness, connection);
    assert_eq!(plans.len(), 1);
    assert!(
        !plans[0].send_quit,
        "no QUIT in the middle of a transaction"
    );
    assert_eq!(harness.scheduler().ledger().delivery_unknown, 1);
    harness.closed(connection, CloseOutcome::Clean);
    assert!(harness.is_shut_down());
    assert_eq!(harness.final_outcomes().len(), 1);
    audit(&harness);
}

#[test]
fn submit_rejects_empty_and_unknown_binding() {
    let mut harness = Harness::new(Config::default());
    let empty = Submission {
        tag: 9,
        reverse_path: ec_types::ReversePath::Null,
        recipients: Vec::new(),
        data: bytes::Bytes::new(),
    };
    let error = harness
        .submit(BindingSlot(0), empty)
        .expect_err("no recipients");
    assert!(matches!(error, SubmitError::NoRecipients(_)));
    assert_eq!(error.into_submission().tag, 9);

    let submission = Submission {
        tag: 10,
        reverse_path: ec_types::ReversePath::Null,
        recipients: vec![ec_types::Address::new("a@example.com").expect("valid")],
        data: bytes::Bytes::new(),
    };
    let error = harness
        .submit(BindingSlot(5), submission)
        .expect_err("unknown binding");
    assert!(matches!(error, SubmitError::UnknownBinding { .. }));
    assert_eq!(harness.scheduler().ledger().entered, 0);
}

#[test]
fn begin_close_through_parts() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    harness.deliver(connection, ReplyCode::OK);

    let now = harness.now();
    let (token, scheduler) = harness.parts();
    let parts = scheduler
        .close_parts(token, connection)
        .expect("live handle");
    assert!(default_send_quit(parts.connection, None));
    let request = CloseRequest {
        event: &Event::Direct,
        reason: CloseReason::Requested,
        send_quit: false,
    };
    let ticket = begin_close(token, parts, request, now);
    let CloseTicket::Started {
        plan: Some(plan),
        fates,
    } = ticket
    else {
        panic!("expected a started close with a plan");
    };
    assert!(!plan.send_quit, "the caller's QUIT decision is used");
    assert!(fates.is_empty());
    harness.settle();
    assert_eq!(close_plans(&harness, connection), vec![plan]);
    let closed = harness
        .scheduler()
        .connection(connection)
        .and_then(|c| c.closing().copied());
    assert!(closed.is_some_and(|c| c.site.file().ends_with("scenarios.rs")));
    audit(&harness);
}

#[test]
fn close_fates_cover_whole_batch() {
    let mut harness = Harness::new(global(|s| s.batch_size = Some(3)));
    submit_many(&mut harness, BindingSlot(0), "example.com", 3);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    assert!(harness.transaction(connection, ReplyCode::OK));

    let ticket = harness.close(connection, CloseReason::Requested);
    let Some(CloseTicket::Started { fates, .. }) = ticket else {
        panic!("expected a started close");
    };
    let kinds: Vec<MessageFate> = fates.iter().map(|(_, fate)| *fate).collect();
    assert_eq!(
        kinds,
        vec![MessageFate::DeliveryUnknown, MessageFate::Requeued]
    );
    audit(&harness);
}

/// Reports the RCPT rejections given for the connection's message in
/// transaction, then fails the transaction after its dot went unanswered.
fn lost_after_rejections(
    harness: &mut Harness,
    connection: ConnectionHandle,
    rejected: Vec<(usize, Reply)>,
) {
    let message = reject_recipients(harness, connection, rejected);
    let failure = SessionFailure {
        error: SessionError::PeerClosed { stage: Stage::Body },
        stage: Stage::Body,
        in_transaction: Some(message),
        final_dot_sent: true,
    };
    harness.event(connection, SessionEvent::Failed(failure));
}

/// Reports the RCPT rejections given for the connection's message in
/// transaction, and returns the message's id.
fn reject_recipients(
    harness: &mut Harness,
    connection: ConnectionHandle,
    rejected: Vec<(usize, Reply)>,
) -> MessageId {
    let message = harness.outstanding(connection)[0].id;
    for (index, reply) in rejected {
        let event = SessionEvent::RecipientRejected {
            message,
            index,
            reply,
        };
        harness.event(connection, event);
    }
    message
}

#[test]
fn rejected_recipient_fails_despite_lost_dot() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let rejection = Reply::new(code(550), None, "no such user");
    lost_after_rejections(&mut harness, connection, vec![(1, rejection)]);

    assert_eq!(
        outcomes_for(&harness, "a@example.com"),
        vec![RecipientOutcome::DeliveryUnknown]
    );
    assert!(matches!(
        outcomes_for(&harness, "b@example.com").as_slice(),
        [RecipientOutcome::Failed(reply)] if reply.code.as_u16() == 550
    ));
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delivery_unknown, 1);
    assert_eq!(ledger.delayed, 1, "a@ is retried");
    audit(&harness);
}

#[test]
fn all_rejected_fails_without_retry() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let rejection = Reply::new(code(550), None, "no such user");
    lost_after_rejections(&mut harness, connection, vec![(0, rejection)]);

    assert!(matches!(
        outcomes_for(&harness, "a@example.com").as_slice(),
        [RecipientOutcome::Failed(reply)] if reply.code.as_u16() == 550
    ));
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.failed, 1);
    assert_eq!(ledger.delivery_unknown, 0, "no copy can have arrived");
    assert_eq!(ledger.delayed + ledger.active, 0, "nothing to retry");
    audit(&harness);
}

#[test]
fn rejected_recipient_fails_at_shutdown() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let rejection = Reply::new(code(550), None, "no such user");
    reject_recipients(&mut harness, connection, vec![(0, rejection)]);

    // No session failure: the scheduler closes the busy connection itself,
    // as when a shutdown's grace runs out while the final reply is due.
    let _ = harness.close(connection, CloseReason::Shutdown);

    assert!(matches!(
        outcomes_for(&harness, "a@example.com").as_slice(),
        [RecipientOutcome::Failed(reply)] if reply.code.as_u16() == 550
    ));
    assert_eq!(
        outcomes_for(&harness, "b@example.com"),
        vec![RecipientOutcome::DeliveryUnknown]
    );
    audit(&harness);
}

#[test]
fn finished_transaction_forgets_rejection() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let rejection = Reply::new(code(550), None, "no such user");
    reject_recipients(&mut harness, connection, vec![(0, rejection)]);
    // The harness reports every recipient delivered: the outcome, not the
    // earlier rejection, decides.
    harness.deliver(connection, ReplyCode::OK);

    let _ = harness.close(connection, CloseReason::Shutdown);

    let outcomes = outcomes_for(&harness, "a@example.com");
    assert!(!outcomes.is_empty());
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, RecipientOutcome::Delivered(_))),
        "{outcomes:?}"
    );
    assert_eq!(harness.scheduler().ledger().protocol_violations, 0);
    audit(&harness);
}

/// Reports a rejection of MAIL for the connection's message in transaction,
/// and returns the message's id.
fn reject_mail(harness: &mut Harness, connection: ConnectionHandle, reply: Reply) -> MessageId {
    let message = harness.outstanding(connection)[0].id;
    harness.event(connection, SessionEvent::MailRejected { message, reply });
    message
}

/// Returns the reply code of each record of `recipient`, with the outcome's
/// name: `"failed 550"`, `"deferred 451"`, `"deferred -"` for a deferral
/// without a reply, `"delivery_unknown"`.
fn described(harness: &Harness, recipient: &str) -> Vec<String> {
    outcomes_for(harness, recipient)
        .iter()
        .map(|outcome| {
            let name = outcome.as_str();
            match outcome {
                RecipientOutcome::Delivered(reply) | RecipientOutcome::Failed(reply) => {
                    format!("{name} {}", reply.code)
                }
                RecipientOutcome::Deferred {
                    reply: Some(reply), ..
                } => format!("{name} {}", reply.code),
                RecipientOutcome::Deferred { reply: None, .. } => format!("{name} -"),
                _ => name.to_owned(),
            }
        })
        .collect()
}

#[test]
fn mail_rejection_fails_every_recipient_when_lost() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    reject_mail(
        &mut harness,
        connection,
        Reply::new(code(550), None, "sender rejected"),
    );

    harness.lost(connection, false);

    assert_eq!(described(&harness, "a@example.com"), ["failed 550"]);
    assert_eq!(described(&harness, "b@example.com"), ["failed 550"]);
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.failed, 1);
    assert_eq!(ledger.delayed + ledger.active, 0, "nothing to retry");
    audit(&harness);
}

#[test]
fn mail_rejection_fails_every_recipient_at_shutdown() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    reject_mail(
        &mut harness,
        connection,
        Reply::new(code(550), None, "sender rejected"),
    );

    // The scheduler closes the busy connection itself, as when a
    // shutdown's grace runs out.
    let _ = harness.close(connection, CloseReason::Shutdown);

    assert_eq!(described(&harness, "a@example.com"), ["failed 550"]);
    assert_eq!(described(&harness, "b@example.com"), ["failed 550"]);
    assert_eq!(harness.scheduler().ledger().delivery_unknown, 0);
    audit(&harness);
}

#[test]
fn transient_mail_rejection_defers_at_shutdown() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    reject_mail(
        &mut harness,
        connection,
        Reply::new(code(451), None, "try later"),
    );

    let _ = harness.close(connection, CloseReason::Shutdown);

    // The server rejected the transaction, so no copy can have arrived.
    assert_eq!(described(&harness, "a@example.com"), ["deferred 451"]);
    assert_eq!(described(&harness, "b@example.com"), ["deferred 451"]);
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delivery_unknown, 0);
    assert_eq!(ledger.delayed, 1);
    audit(&harness);
}

#[test]
fn finished_transaction_forgets_mail_rejection() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    reject_mail(
        &mut harness,
        connection,
        Reply::new(code(550), None, "sender rejected"),
    );
    // The outcome, not the earlier rejection, decides.
    harness.deliver(connection, ReplyCode::OK);

    let _ = harness.close(connection, CloseReason::Shutdown);

    assert_eq!(described(&harness, "a@example.com"), ["delivered 250"]);
    assert_eq!(harness.scheduler().ledger().protocol_violations, 0);
    audit(&harness);
}

#[test]
fn mail_rejection_when_idle_is_a_violation() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let message = harness.outstanding(connection)[0].id;
    harness.deliver(connection, ReplyCode::OK);

    let reply = Reply::new(code(550), None, "sender rejected");
    harness.event(connection, SessionEvent::MailRejected { message, reply });

    assert_eq!(harness.scheduler().ledger().protocol_violations, 1);
    audit(&harness);
}

#[test]
fn transient_rcpt_rejection_kept_after_lost_dot() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let greylisted = Reply::new(code(451), None, "greylisted");

    lost_after_rejections(&mut harness, connection, vec![(0, greylisted)]);

    // The message may have reached b, but not a, whose RCPT got 451.
    assert_eq!(described(&harness, "a@example.com"), ["deferred 451"]);
    assert_eq!(described(&harness, "b@example.com"), ["delivery_unknown"]);
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delivery_unknown, 1);
    assert_eq!(ledger.delayed, 1);
    audit(&harness);
}

#[test]
fn transient_rcpt_rejections_only_defer() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let greylisted = Reply::new(code(451), None, "greylisted");
    let rejected = vec![(0, greylisted.clone()), (1, greylisted)];

    lost_after_rejections(&mut harness, connection, rejected);

    // Every recipient was turned away at RCPT, so no copy can have arrived.
    assert_eq!(described(&harness, "a@example.com"), ["deferred 451"]);
    assert_eq!(described(&harness, "b@example.com"), ["deferred 451"]);
    let ledger = *harness.scheduler().ledger();
    assert_eq!(ledger.delivery_unknown, 0);
    assert_eq!(ledger.deferred, 1);
    audit(&harness);
}

#[test]
fn rcpt_reply_outranks_later_421() {
    let mut harness = Harness::new(Config::default());
    harness.submit_to(BindingSlot(0), 1, &["a@example.com", "b@example.com"]);
    let connection = harness.opened()[0];
    make_ready(&mut harness, connection);
    let greylisted = Reply::new(code(451), None, "greylisted");
    reject_recipients(&mut harness, connection, vec![(0, greylisted)]);

    harness.failed_with_reply(connection, Reply::new(code(421), None, "closing"));

    assert_eq!(described(&harness, "a@example.com"), ["deferred 451"]);
    assert_eq!(described(&harness, "b@example.com"), ["deferred 421"]);
    audit(&harness);
}

#[test]
fn earlier_attempt_reply_not_repeated() {
    let mut harness = Harness::new(global(|s| {
        s.retry.interval = Some(Duration::from_secs(60));
        s.idle_timeout = Some(Duration::from_secs(1));
    }));
    harness.submit_to(BindingSlot(0), 1, &["a@example.com"]);
    let first = harness.opened()[0];
    make_ready(&mut harness, first);
    harness.deliver(first, code(451));
    harness.advance(Duration::from_secs(1));
    harness.closed(first, CloseOutcome::Clean);
    harness.advance(Duration::from_secs(59));
    let second = harness.opened()[1];
    make_ready(&mut harness, second);

    // The second attempt ends without a reply for a: its record must not
    // carry the first attempt's 451.
    harness.lost(second, false);

    assert_eq!(
        described(&harness, "a@example.com"),
        ["deferred 451", "deferred -"]
    );
    audit(&harness);
}
