//! `Engine::shutdown` while connections are busy, against smtp-sink at full
//! speed and with slow replies. New work stops at once, and sessions finish
//! their transaction or are closed under the close deadline. Every message
//! gets exactly one final record (delivered or unsent), with "delivery
//! unknown" before it where the final dot got no reply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ec_sched::{
    ConnectionClosed, ConnectionOpened, RecipientRecord, Report, SchedulerHandle, SchedulerOptions,
    Stats, SubmitError,
};
use ec_smtp_client::{Engine, EngineOptions};
use ec_tests::delivery::{init_tracing, submission};
use ec_tests::peers::SmtpSink;
use ec_types::{CloseReason, Config, Route, Submission};

const DOMAINS: u64 = 4;

/// Tags of the submissions made while the shutdown runs start here.
const RACING_TAGS: u64 = 1_000_000;

fn config(sink: &SmtpSink, close: Duration) -> Config {
    let mut config = Config::default();
    let global = &mut config.global;
    global.route = Some(Route::Addresses(vec![sink.addr()]));
    global.max_outbound_connections = Some(8);
    global.timeouts.close = Some(close);
    global.timeouts.quit = Some(Duration::from_millis(500));
    config
}

fn message(tag: u64) -> Submission {
    let to = [format!("user{tag}@d{}.shutdown.test", tag % DOMAINS)];
    submission(tag, "sender@ec.test", &to, b"Subject: load\r\n\r\nbody\r\n")
}

fn start(config: Config, grace: Duration) -> (Engine, Receiver<Report>) {
    init_tracing();
    let mut options = EngineOptions::default();
    options.scheduler = SchedulerOptions {
        shutdown_grace: grace,
        audit_interval: Some(Duration::from_millis(100)),
        ..SchedulerOptions::default()
    };
    let (sender, receiver) = mpsc::channel();
    let engine = Engine::start(config, options, sender).expect("engine starts");
    (engine, receiver)
}

/// Everything the engine reported, sorted by kind.
#[derive(Debug, Default)]
struct Reports {
    records: Vec<RecipientRecord>,
    opens: Vec<ConnectionOpened>,
    closes: Vec<ConnectionClosed>,
}

impl Reports {
    fn take(&mut self, report: Report) {
        match report {
            Report::Recipient(record) => self.records.push(record),
            Report::ConnectionOpened(opened) => self.opens.push(opened),
            Report::ConnectionClosed(closed) => self.closes.push(closed),
            _ => {}
        }
    }

    fn drain(&mut self, receiver: &Receiver<Report>) {
        while let Ok(report) = receiver.try_recv() {
            self.take(report);
        }
    }

    /// Waits until `count` recipients are delivered, or panics after `limit`.
    fn wait_delivered(&mut self, receiver: &Receiver<Report>, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count("delivered") < count {
            let wait = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(report) => self.take(report),
                Err(_) => panic!(
                    "only {} of {count} delivered within {limit:?}",
                    self.count("delivered")
                ),
            }
        }
    }

    fn count(&self, outcome: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.as_str() == outcome)
            .count()
    }

    /// Groups the outcome names by tag, in order.
    fn outcomes_by_tag(&self) -> HashMap<u64, Vec<&'static str>> {
        let mut outcomes: HashMap<u64, Vec<&'static str>> = HashMap::new();
        for record in &self.records {
            outcomes
                .entry(record.tag)
                .or_default()
                .push(record.outcome.as_str());
        }
        outcomes
    }
}

/// Checks that each of `tags` has exactly one final record, as its last.
fn assert_one_final_each(reports: &Reports, tags: impl Iterator<Item = u64>) {
    let outcomes = reports.outcomes_by_tag();
    for tag in tags {
        let list = outcomes.get(&tag).map(Vec::as_slice).unwrap_or_default();
        let finals = list
            .iter()
            .filter(|o| matches!(**o, "delivered" | "failed" | "unsent"))
            .count();
        let last_is_final = list
            .last()
            .is_some_and(|o| matches!(*o, "delivered" | "failed" | "unsent"));
        assert!(
            finals == 1 && last_is_final,
            "message {tag} has the records {list:?}; it needs exactly one final one, last"
        );
    }
}

fn assert_settled(stats: &Stats) {
    let ledger = &stats.ledger;
    assert_eq!(stats.connections.live(), 0, "{stats:?}");
    assert_eq!(stats.connections.opened(), stats.connections.closed());
    assert_eq!(ledger.in_engine(), Some(0), "{ledger:?}");
    assert_eq!(ledger.audit_failures, 0, "{ledger:?}");
    assert_eq!(ledger.count_underflows, 0, "{ledger:?}");
    assert_eq!(ledger.protocol_violations, 0, "{ledger:?}");
    assert!(stats.shut_down, "{stats:?}");
}

/// Submits a message every millisecond from another thread until the
/// handle refuses one; returns the tags accepted. Each refusal must give
/// the submission back.
fn race_submissions(handle: SchedulerHandle, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut accepted = Vec::new();
    for tag in RACING_TAGS.. {
        match handle.submit(message(tag)) {
            Ok(()) => accepted.push(tag),
            Err(error @ (SubmitError::ShuttingDown(_) | SubmitError::Stopped(_))) => {
                assert_eq!(
                    error.into_submission().tag,
                    tag,
                    "the refusal gives it back"
                );
                break;
            }
            Err(other) => panic!("submission {tag} refused for the wrong reason: {other}"),
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    accepted
}

#[test]
fn shutdown_under_load_loses_nothing() {
    const MESSAGES: u64 = 20_000;
    let sink = SmtpSink::start(std::iter::empty::<&str>());
    let close = Duration::from_secs(3);
    let grace = Duration::from_secs(5);
    let (engine, receiver) = start(config(&sink, close), grace);
    for tag in 0..MESSAGES {
        engine
            .handle()
            .submit(message(tag))
            .expect("submission accepted");
    }
    let mut reports = Reports::default();
    reports.wait_delivered(&receiver, 2_000, Duration::from_secs(60));

    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (handle, stop) = (engine.handle().clone(), Arc::clone(&stop));
        thread::spawn(move || race_submissions(handle, stop))
    };
    thread::sleep(Duration::from_millis(20));
    let before = engine.handle().stats().expect("scheduler answers");
    let asked = Instant::now();
    let stats = engine.shutdown().expect("scheduler stops cleanly");
    let took = asked.elapsed();
    stop.store(true, Ordering::SeqCst);
    let raced = racer.join().expect("submitting thread");
    reports.drain(&receiver);

    assert!(
        took < grace + close,
        "the shutdown took {took:?}; the grace period is {grace:?} and the close deadline {close:?}"
    );
    assert!(!raced.is_empty(), "no submission raced with the shutdown");
    assert_one_final_each(&reports, (0..MESSAGES).chain(raced.iter().copied()));
    assert_settled(&stats);

    let opened_late: Vec<_> = reports.opens.iter().filter(|o| o.at > asked).collect();
    assert!(
        opened_late.is_empty(),
        "connections opened after the shutdown began: {opened_late:?}"
    );
    let delivered_late = reports
        .records
        .iter()
        .filter(|r| r.at > asked && r.outcome.as_str() == "delivered")
        .count();
    assert!(
        delivered_late <= before.connections.live() as usize,
        "{delivered_late} deliveries finished after the shutdown began, more than the {} \
         connections open then could have had in flight",
        before.connections.live()
    );
    assert_eq!(
        reports.count("delivery_unknown"),
        0,
        "every transaction finished"
    );
    assert!(
        reports.count("unsent") > 0,
        "the shutdown came before the end"
    );
    for close_report in &reports.closes {
        assert!(
            close_report.duration <= Duration::from_secs(60),
            "{close_report:?}"
        );
        assert_eq!(
            close_report.outcome.as_str(),
            "clean",
            "smtp-sink closes cleanly: {close_report:?}"
        );
    }
    eprintln!(
        "shutdown after {} deliveries took {took:?}; {} unsent, {} raced submissions",
        reports.count("delivered"),
        reports.count("unsent"),
        raced.len()
    );
}

#[test]
fn shutdown_cuts_slow_transactions_at_grace() {
    const MESSAGES: u64 = 200;
    // smtp-sink replies to each final dot 5 s late: longer than the grace
    // period and the close deadline together.
    let sink = SmtpSink::start(["-W", ".:5"]);
    let close = Duration::from_secs(1);
    let grace = Duration::from_millis(500);
    let (engine, receiver) = start(config(&sink, close), grace);
    for tag in 0..MESSAGES {
        engine
            .handle()
            .submit(message(tag))
            .expect("submission accepted");
    }

    // Wait until every connection has sent its final dot and waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let stats = engine.handle().stats().expect("scheduler answers");
        if stats.ledger.busy >= 8 * DOMAINS as u32 {
            break stats.ledger.busy;
        }
        assert!(
            Instant::now() < deadline,
            "connections never got busy: {stats:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    let stats = engine.shutdown().expect("scheduler stops cleanly");
    let took = asked.elapsed();
    let mut reports = Reports::default();
    reports.drain(&receiver);

    let bound = grace + close + Duration::from_millis(700);
    assert!(
        took <= bound,
        "the shutdown took {took:?}; grace {grace:?} plus close deadline {close:?} bound it"
    );
    assert_one_final_each(&reports, 0..MESSAGES);
    assert_settled(&stats);
    assert_eq!(
        reports.count("delivered"),
        0,
        "no reply came before the cut"
    );
    assert_eq!(
        reports.count("delivery_unknown"),
        busy as usize,
        "each busy connection had one message past its final dot"
    );
    let outcomes = reports.outcomes_by_tag();
    let unknown_then_unsent = outcomes
        .values()
        .filter(|list| **list == ["delivery_unknown", "unsent"])
        .count();
    assert_eq!(unknown_then_unsent, busy as usize, "{outcomes:?}");
    for close_report in &reports.closes {
        assert_eq!(
            close_report.reason,
            CloseReason::Shutdown,
            "{close_report:?}"
        );
        let closing = close_report.duration;
        assert!(
            closing <= took + Duration::from_secs(6),
            "connection {} lasted {closing:?}",
            close_report.id
        );
    }
    eprintln!(
        "shutdown with {busy} transactions waiting for their reply took {took:?}; closes: {:?}",
        reports
            .closes
            .iter()
            .map(|c| c.outcome.as_str())
            .collect::<Vec<_>>()
    );
}
