//! Running the whole engine (scheduler, sessions, closeconn) against a peer
//! and collecting what it reported.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ec_sched::{ConnectionClosed, RecipientRecord, Report, Stats};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{Address, Config, Domain, ReversePath, Route, Submission};

/// What a finished run reported.
#[derive(Debug)]
pub struct RunResult {
    /// Every recipient record, in the order reported.
    pub records: Vec<RecipientRecord>,
    /// Every connection close.
    pub closes: Vec<ConnectionClosed>,
    /// Connections opened.
    pub opened: usize,
    /// The audit's result just before shutdown.
    pub audit: Result<(), String>,
    /// The scheduler's final counts.
    pub stats: Option<Stats>,
}

impl RunResult {
    /// The last record of each recipient, keyed by (tag, address).
    pub fn last_by_recipient(&self) -> HashMap<(u64, String), &RecipientRecord> {
        let mut last = HashMap::new();
        for record in &self.records {
            last.insert((record.tag, record.recipient.to_string()), record);
        }
        last
    }

    /// How many records have this outcome name (`delivered`, `failed`, ...).
    pub fn count(&self, outcome: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.as_str() == outcome)
            .count()
    }
}

/// A configuration that routes `domain` to `route` with default settings
/// otherwise. Tests adjust the returned value.
pub fn config_for(domain: &str, route: Route) -> Config {
    let mut config = Config::default();
    let settings = config
        .domain
        .entry(Domain::new(domain).expect("valid test domain"))
        .or_default();
    settings.route = Some(route);
    config
}

/// A submission of `data` from `from` to each of `to`.
pub fn submission(tag: u64, from: &str, to: &[String], data: &[u8]) -> Submission {
    Submission {
        tag,
        reverse_path: ReversePath::new(from).expect("valid test sender"),
        recipients: to
            .iter()
            .map(|a| Address::new(a).expect("valid test recipient"))
            .collect(),
        data: bytes::Bytes::copy_from_slice(data),
    }
}

/// Starts an engine, submits everything, waits until every recipient has a
/// record (final, deferred or delivery unknown) or `limit` passes, audits,
/// shuts down and returns what was reported.
pub fn run(config: Config, submissions: Vec<Submission>, limit: Duration) -> RunResult {
    init_tracing();
    let expected: usize = submissions.iter().map(|s| s.recipients.len()).sum();
    let (sender, receiver) = mpsc::channel::<Report>();
    let engine = Engine::start(config, EngineOptions::default(), sender).expect("engine starts");
    for submission in submissions {
        engine
            .handle()
            .submit(submission)
            .expect("submission accepted");
    }

    let mut result = RunResult {
        records: Vec::new(),
        closes: Vec::new(),
        opened: 0,
        audit: Ok(()),
        stats: None,
    };
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + limit;
    while seen.len() < expected {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match receiver.recv_timeout(wait) {
            Ok(report) => collect(&mut result, &mut seen, report),
            Err(_) => break,
        }
    }

    // Let idle connections close by their idle timeout is not needed: the
    // shutdown closes them through closeconn.
    result.audit = match engine.handle().audit() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    result.stats = engine.shutdown();
    while let Ok(report) = receiver.try_recv() {
        collect(&mut result, &mut seen, report);
    }
    result
}

fn collect(
    result: &mut RunResult,
    seen: &mut std::collections::HashSet<(u64, String)>,
    report: Report,
) {
    match report {
        Report::Recipient(record) => {
            seen.insert((record.tag, record.recipient.to_string()));
            result.records.push(record);
        }
        Report::ConnectionOpened(_) => result.opened += 1,
        Report::ConnectionClosed(closed) => result.closes.push(closed),
        _ => {}
    }
}

/// Sends the engine's logs to the test output when `EC_TEST_LOG` is set
/// (for example `EC_TEST_LOG=debug`).
pub fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("EC_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
