//! A connection storm: thousands of connections at once to a server that
//! accepts them and never sends a banner. Each must end at its banner
//! timeout through closeconn, the engine-wide limit must hold while they
//! close and new ones take their place, and every count must return to 0.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use ec_sched::{ConnectionClosed, RecipientOutcome, Report, SchedulerOptions};
use ec_smtp_client::{Engine, EngineOptions};
use ec_tests::delivery::{init_tracing, submission};
use ec_tests::soak::{raise_open_file_limit, SilentSink};
use ec_types::{CloseOutcome, CloseReason, Config, Route};

/// The engine-wide connection limit, reached by the first wave.
const LIMIT: u32 = 2_000;

/// Messages, one per domain, so each wants a connection of its own: the
/// first `LIMIT` connect at once, the rest wait for a slot.
const MESSAGES: u64 = 2_200;

const BANNER_TIMEOUT: Duration = Duration::from_secs(3);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the test reads the counts and audits while the storm runs.
const CHECK_EVERY: Duration = Duration::from_millis(20);

fn storm_config(sink: &SilentSink) -> Config {
    let mut config = Config::default();
    config.engine.max_connections = LIMIT;
    config.engine.max_connections_per_binding = 10_000;
    config.engine.max_connections_per_host = 10_000;
    let global = &mut config.global;
    global.route = Some(Route::Addresses(vec![sink.addr()]));
    global.timeouts.connect = Some(Duration::from_secs(10));
    global.timeouts.banner = Some(BANNER_TIMEOUT);
    global.timeouts.close = Some(CLOSE_TIMEOUT);
    config
}

/// Checks made while the storm runs.
#[derive(Debug, Default)]
struct Watch {
    max_live: u32,
    audits: u64,
    audit_failures: Vec<String>,
}

impl Watch {
    fn check(&mut self, engine: &Engine) {
        let stats = engine.handle().stats().expect("scheduler answers");
        self.max_live = self.max_live.max(stats.connections.live());
        self.audits += 1;
        match engine.handle().audit().expect("scheduler answers") {
            Ok(()) => {}
            Err(violations) => self.audit_failures.push(violations.to_string()),
        }
    }
}

#[test]
fn storm_ends_at_banner_timeout() {
    init_tracing();
    raise_open_file_limit(4 * u64::from(LIMIT) + 1_024).unwrap_or_else(|error| panic!("{error}"));
    let sink = SilentSink::start().expect("sink starts");

    let mut options = EngineOptions::default();
    options.scheduler = SchedulerOptions {
        // A domain whose connection failed waits longer than the test, so
        // each domain connects once.
        domain_backoff: Duration::from_secs(120),
        audit_interval: Some(Duration::from_millis(100)),
        ..SchedulerOptions::default()
    };
    let (sender, receiver) = mpsc::channel();
    let engine = Engine::start(storm_config(&sink), options, sender).expect("engine starts");
    let started = Instant::now();
    for tag in 0..MESSAGES {
        let to = [format!("storm@d{tag}.storm.test")];
        let message = submission(tag, "sender@ec.test", &to, b"Subject: storm\r\n\r\nx\r\n");
        engine
            .handle()
            .submit(message)
            .expect("submission accepted");
    }

    let mut watch = Watch::default();
    let mut closes: Vec<ConnectionClosed> = Vec::new();
    let mut opened = 0u64;
    let deadline = started + Duration::from_secs(60);
    let mut next_check = Instant::now();
    while (closes.len() as u64) < MESSAGES && Instant::now() < deadline {
        let first = match receiver.recv_timeout(CHECK_EVERY) {
            Ok(report) => Some(report),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for report in first.into_iter().chain(receiver.try_iter()) {
            match report {
                Report::ConnectionOpened(_) => opened += 1,
                Report::ConnectionClosed(closed) => closes.push(closed),
                _ => {}
            }
        }
        if Instant::now() >= next_check {
            watch.check(&engine);
            next_check = Instant::now() + CHECK_EVERY;
        }
    }
    let storm_took = started.elapsed();
    let live_after = engine.handle().stats().expect("scheduler answers");
    let stats = engine.shutdown().expect("scheduler stops cleanly");
    let mut finals = Vec::new();
    while let Ok(report) = receiver.try_recv() {
        match report {
            Report::Recipient(record) => finals.push(record),
            Report::ConnectionClosed(closed) => closes.push(closed),
            _ => {}
        }
    }

    assert_eq!(opened, MESSAGES, "one connection per domain");
    assert_eq!(
        closes.len() as u64,
        MESSAGES,
        "every connection closed, once"
    );
    assert_eq!(
        watch.max_live, LIMIT,
        "the first wave should fill the engine to its limit and never pass it"
    );
    assert!(
        sink.max_open() <= u64::from(LIMIT),
        "the sink saw {} connections open at once; the limit is {LIMIT}",
        sink.max_open()
    );
    assert!(
        watch.audit_failures.is_empty(),
        "{} of {} audits failed during the storm; first: {}",
        watch.audit_failures.len(),
        watch.audits,
        watch.audit_failures[0]
    );
    assert_eq!(live_after.connections.live(), 0, "{live_after:?}");

    let mut by_reason: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for close in &closes {
        let key = (close.reason.as_str(), close.outcome.as_str());
        *by_reason.entry(key).or_default() += 1;
    }
    let expected = (CloseReason::Timeout.as_str(), CloseOutcome::Clean.as_str());
    assert_eq!(
        by_reason,
        BTreeMap::from([(expected, MESSAGES as usize)]),
        "every connection should end at its banner timeout, cleanly"
    );
    let latest = BANNER_TIMEOUT + CLOSE_TIMEOUT + Duration::from_secs(1);
    for close in &closes {
        assert!(
            close.duration >= BANNER_TIMEOUT && close.duration <= latest,
            "connection {} lasted {:?}; it should end between the banner timeout \
             ({BANNER_TIMEOUT:?}) and {latest:?}",
            close.id,
            close.duration
        );
    }
    assert!(
        sink.wait_all_closed(MESSAGES, Duration::from_secs(5)),
        "the sink still has {} of {} connections open",
        sink.open(),
        sink.accepted()
    );
    assert_eq!(
        sink.bytes_received(),
        0,
        "a client waiting for the banner must not send anything"
    );

    let connections = &stats.connections;
    assert_eq!(connections.live(), 0);
    assert_eq!(connections.opened(), MESSAGES);
    assert_eq!(connections.closed(), MESSAGES);
    assert_eq!(stats.ledger.audit_failures, 0);
    assert_eq!(stats.ledger.close_deadlines, 0, "{:?}", stats.ledger);
    assert!(stats.ledger.audits > 0, "the periodic audit never ran");
    assert_eq!(
        finals.len() as u64,
        MESSAGES,
        "one final record per message"
    );
    assert!(
        finals
            .iter()
            .all(|record| record.outcome == RecipientOutcome::Unsent),
        "nothing was delivered, so every message ends unsent"
    );
    eprintln!(
        "storm: {MESSAGES} connections, at most {} live, closed within {storm_took:?}, \
         {} audits passed",
        watch.max_live, watch.audits
    );
}
