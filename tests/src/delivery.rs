//! Running the whole engine (scheduler, sessions, closeconn) against a peer
//! and collecting what it reported.
//!
//! [`run`] submits everything at once and stops when every recipient has a
//! record. [`Run`] does the same with submissions spread over time, engine
//! options and another stop condition, for scenarios that need a connection
//! to go idle first or a requeued message to be delivered.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ec_sched::{ConnectionClosed, ConnectionOpened, RecipientRecord, Report, Stats};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{Address, CloseOutcome, Config, Domain, ReversePath, Route, Submission};

use crate::fault_peer::{ConnectionRecord, Event, FaultPeer, TcpEnd};

/// What a finished run reported.
#[derive(Debug)]
pub struct RunResult {
    /// Every recipient record, in the order reported.
    pub records: Vec<RecipientRecord>,
    /// Every connection close.
    pub closes: Vec<ConnectionClosed>,
    /// Connections opened.
    pub opened: usize,
    /// Every connection open, in the order reported.
    pub opens: Vec<ConnectionOpened>,
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

    /// Returns the records of the submission tagged `tag`, in order.
    pub fn records_of(&self, tag: u64) -> Vec<&RecipientRecord> {
        self.records.iter().filter(|r| r.tag == tag).collect()
    }

    /// Returns the outcome names of the submission tagged `tag`, in order,
    /// such as `["deferred", "delivered"]`.
    pub fn outcomes_of(&self, tag: u64) -> Vec<&'static str> {
        self.records_of(tag)
            .iter()
            .map(|r| r.outcome.as_str())
            .collect()
    }

    /// Returns the close outcome of every connection, in the order of their
    /// opening.
    pub fn close_outcomes(&self) -> Vec<CloseOutcome> {
        self.opens
            .iter()
            .filter_map(|open| self.closes.iter().find(|close| close.id == open.id))
            .map(|close| close.outcome)
            .collect()
    }

    /// Checks what must hold after every run, whatever the scenario. The
    /// audit passed, and every opened connection was closed exactly once and
    /// released by its `Closed` event (not by its close deadline). No count
    /// went negative, no session broke the scheduler contract, and no
    /// connection is live at the end.
    ///
    /// # Errors
    ///
    /// Returns every broken rule, one per line.
    pub fn check_accounting(&self) -> Result<(), String> {
        let mut broken = Vec::new();
        if let Err(error) = &self.audit {
            broken.push(format!("audit failed: {error}"));
        }
        for open in &self.opens {
            let closes = self.closes.iter().filter(|c| c.id == open.id).count();
            if closes != 1 {
                broken.push(format!("connection {} closed {closes} times", open.id));
            }
        }
        if self.closes.len() != self.opens.len() {
            broken.push(format!(
                "{} connections opened, {} closed",
                self.opens.len(),
                self.closes.len()
            ));
        }
        match &self.stats {
            None => broken.push("the scheduler thread did not stop cleanly".to_owned()),
            Some(stats) => {
                let connections = &stats.connections;
                if connections.live() != 0 || connections.opened() != connections.closed() {
                    broken.push(format!("connections at the end: {connections:?}"));
                }
                let ledger = &stats.ledger;
                let counters = [
                    ("count underflows", ledger.count_underflows),
                    ("protocol violations", ledger.protocol_violations),
                    ("releases at the close deadline", ledger.close_deadlines),
                    ("failed audits", ledger.audit_failures),
                ];
                for (what, count) in counters {
                    if count != 0 {
                        broken.push(format!("{what}: {count}"));
                    }
                }
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(broken.join("\n"))
        }
    }
}

/// When a [`Run`] stops waiting and shuts the engine down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Until {
    /// Every recipient has a record: final, deferred or delivery unknown.
    EveryRecipientRecorded,
    /// Every recipient has a final record (delivered or failed); a
    /// requeued message must be sent again first.
    EveryRecipientFinal,
}

/// One run of the whole engine: the configuration, what to submit and
/// when, and when to stop.
#[derive(Debug)]
pub struct Run {
    config: Config,
    options: EngineOptions,
    submissions: Vec<(Duration, Submission)>,
    until: Until,
    limit: Duration,
}

impl Run {
    /// Creates a run of `config` with default engine options that stops once
    /// every recipient has a record, or after 30 seconds.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            options: EngineOptions::default(),
            submissions: Vec::new(),
            until: Until::EveryRecipientRecorded,
            limit: Duration::from_secs(30),
        }
    }

    /// Submits `submission` as soon as the engine runs.
    #[must_use]
    pub fn submit(self, submission: Submission) -> Self {
        self.submit_after(Duration::ZERO, submission)
    }

    /// Submits `submission` `delay` after the engine started (after the
    /// earlier submissions, whatever their delay).
    #[must_use]
    pub fn submit_after(mut self, delay: Duration, submission: Submission) -> Self {
        self.submissions.push((delay, submission));
        self
    }

    /// Sets when the run stops waiting.
    #[must_use]
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }

    /// Sets how long the run waits at most before it shuts down.
    #[must_use]
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Sets how long a domain waits after a connection that failed before
    /// it was ready (30 s by default, too long for a test).
    #[must_use]
    pub fn domain_backoff(mut self, backoff: Duration) -> Self {
        self.options.scheduler.domain_backoff = backoff;
        self
    }

    /// Runs the sessions on a runtime of `threads` threads apart from the
    /// scheduler's thread (0, the default, runs them on the scheduler's
    /// thread).
    #[must_use]
    pub fn io_threads(mut self, threads: usize) -> Self {
        self.options.io_threads = threads;
        self
    }

    /// Starts an engine, submits as planned and waits until the stop
    /// condition is met or the limit passes. Then it audits, shuts down and
    /// returns what was reported.
    pub fn run(self) -> RunResult {
        init_tracing();
        let expected: HashSet<(u64, String)> = self
            .submissions
            .iter()
            .flat_map(|(_, s)| s.recipients.iter().map(|a| (s.tag, a.to_string())))
            .collect();
        let (sender, receiver) = mpsc::channel::<Report>();
        let engine = Engine::start(self.config, self.options, sender).expect("engine starts");
        let started = Instant::now();
        let deadline = started + self.limit;

        let mut result = RunResult {
            records: Vec::new(),
            closes: Vec::new(),
            opened: 0,
            opens: Vec::new(),
            audit: Ok(()),
            stats: None,
        };
        let mut progress = Progress::default();
        let mut pending = self.submissions.into_iter().peekable();
        loop {
            while let Some((delay, _)) = pending.peek() {
                if Instant::now() < started + *delay {
                    break;
                }
                let (_, submission) = pending.next().expect("peeked");
                engine
                    .handle()
                    .submit(submission)
                    .expect("submission accepted");
            }
            let done = pending.peek().is_none() && progress.done(self.until, &expected);
            if done {
                break;
            }
            let next_submission = pending.peek().map(|(delay, _)| started + *delay);
            let wake = next_submission.map_or(deadline, |at| at.min(deadline));
            let Some(wait) = wake.checked_duration_since(Instant::now()) else {
                if Instant::now() >= deadline {
                    break;
                }
                continue;
            };
            match receiver.recv_timeout(wait) {
                Ok(report) => collect(&mut result, &mut progress, report),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }

        result.audit = match engine.handle().audit() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        result.stats = engine.shutdown();
        while let Ok(report) = receiver.try_recv() {
            collect(&mut result, &mut progress, report);
        }
        result
    }
}

/// Which recipients have a record, and which a final one.
#[derive(Debug, Default)]
struct Progress {
    recorded: HashSet<(u64, String)>,
    finals: HashSet<(u64, String)>,
}

impl Progress {
    fn done(&self, until: Until, expected: &HashSet<(u64, String)>) -> bool {
        let seen = match until {
            Until::EveryRecipientRecorded => &self.recorded,
            Until::EveryRecipientFinal => &self.finals,
        };
        expected.is_subset(seen)
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

/// Builds a configuration that routes `domain` to its MX hosts on
/// `mx_port`, looked up at `nameserver`, with `connect` as the timeout of
/// each lookup and connect.
pub fn mx_config(domain: &str, nameserver: SocketAddr, mx_port: u16, connect: Duration) -> Config {
    let mut config = config_for(domain, Route::Mx);
    config.dns.nameservers = vec![nameserver];
    config.global.mx_port = Some(mx_port);
    config.global.timeouts.connect = Some(connect);
    config
}

/// Builds a configuration for fault scenarios: `domain` routed to `addr`,
/// every reply wait 5 s, the QUIT wait 500 ms and the whole close 3 s, so a
/// stalled step ends a test quickly. Tests shorten the timeout they are
/// about.
pub fn fault_config(domain: &str, addr: SocketAddr) -> Config {
    let mut config = config_for(domain, Route::Addresses(vec![addr]));
    let timeouts = &mut config.global.timeouts;
    let reply = Some(Duration::from_secs(5));
    timeouts.connect = reply;
    timeouts.banner = reply;
    timeouts.ehlo = reply;
    timeouts.starttls = reply;
    timeouts.tls_handshake = reply;
    timeouts.mail = reply;
    timeouts.rcpt = reply;
    timeouts.data = reply;
    timeouts.data_block = reply;
    timeouts.data_termination = reply;
    timeouts.rset = reply;
    timeouts.quit = Some(Duration::from_millis(500));
    timeouts.close = Some(Duration::from_secs(3));
    config
}

/// Shortens the retry interval to 50 ms (at most 200 ms after repeated
/// tries), for a test that follows a message from an attempt that left it
/// deferred or "delivery unknown" to its retry. The default interval is
/// 20 minutes.
pub fn retry_soon(config: &mut Config) {
    config.global.retry.interval = Some(Duration::from_millis(50));
    config.global.retry.max_interval = Some(Duration::from_millis(200));
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
    submissions
        .into_iter()
        .fold(Run::new(config), Run::submit)
        .limit(limit)
        .run()
}

fn collect(result: &mut RunResult, progress: &mut Progress, report: Report) {
    match report {
        Report::Recipient(record) => {
            let key = (record.tag, record.recipient.to_string());
            if record.outcome.is_final() {
                progress.finals.insert(key.clone());
            }
            progress.recorded.insert(key);
            result.records.push(record);
        }
        Report::ConnectionOpened(opened) => {
            result.opened += 1;
            result.opens.push(opened);
        }
        Report::ConnectionClosed(closed) => result.closes.push(closed),
        _ => {}
    }
}

/// Waits until the fault peer has finished `count` connections and checks
/// that the client ended each of them: the peer saw its FIN or RST (or a
/// write of its own failed, or it reset the connection itself), never had
/// to give up waiting, and never dropped a connection for running too
/// long. Returns the records.
///
/// # Errors
///
/// Returns what went wrong, with the records of the connections concerned.
pub fn peer_saw_every_close(
    peer: &FaultPeer,
    count: usize,
) -> Result<Vec<ConnectionRecord>, String> {
    let records = peer
        .wait_for_connections_blocking(count, Duration::from_secs(20))
        .map_err(|error| format!("{error}; records: {:#?}", peer.connections()))?;
    if records.len() != count {
        return Err(format!(
            "the peer accepted {} connections, the engine opened {count}: {records:#?}",
            records.len()
        ));
    }
    for record in &records {
        let gave_up = record.events.iter().any(|timed| {
            matches!(
                timed.event,
                Event::DrainTimedOut | Event::ConnectionTimedOut | Event::PeerPanicked
            )
        });
        let reset_by_peer = record.peer_close() == Some(crate::fault_peer::Close::Reset);
        // A write that failed means the client's socket was gone.
        let write_failed = record.events.iter().any(|timed| {
            matches!(
                timed.event,
                Event::WriteFailed(_) | Event::Streamed { error: Some(_), .. }
            )
        });
        let ended = match record.client_end() {
            Some(end) => end.tcp != TcpEnd::StillOpen,
            None => reset_by_peer || write_failed,
        };
        if gave_up || !ended {
            return Err(format!(
                "the client did not close connection {} in time: {record:#?}",
                record.id
            ));
        }
    }
    Ok(records)
}

/// Asserts what must hold after every fault scenario: the run's accounting
/// ([`RunResult::check_accounting`]) and the peer's view of every close
/// ([`peer_saw_every_close`]). Returns the peer's records.
///
/// # Panics
///
/// When either check fails, with what went wrong.
pub fn assert_settled(result: &RunResult, peer: &FaultPeer) -> Vec<ConnectionRecord> {
    if let Err(broken) = result.check_accounting() {
        panic!(
            "accounting broken after the run:\n{broken}\ncloses: {:#?}",
            result.closes
        );
    }
    peer_saw_every_close(peer, result.opened).unwrap_or_else(|error| panic!("{error}"))
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
