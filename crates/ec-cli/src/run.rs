//! One delivery run: submit the input to the engine, write each recipient's
//! outcome to the delivery log as it happens, keep the totals, and decide
//! when the run is over.
//!
//! A recipient's outcome is final for the run when it is delivered or
//! failed, or, when no retry is allowed (or the retry window has passed),
//! when it is deferred or its delivery is unknown. A run also ends early
//! when every domain that still has mail keeps failing to connect
//! ([`GIVE_UP_AFTER`] connections in a row that never became ready): the
//! engine would only go on retrying it, and the remaining recipients are
//! recorded as deferred so that `--resume` can take them up.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ec_sched::{ConnectionClosed, RecipientOutcome, RecipientRecord, Report, SchedulerOptions};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{CloseOutcome, CloseReason, Config, Domain, RecipientStatus, Reply, ReplyCode};
use thiserror::Error;

use crate::delivery_log::{self, DeliveryLogWriter, LogError, LogRecord};
use crate::input::{InputMessage, InvalidInput};
use crate::progress::Progress;
use crate::summary::RunTotals;

/// Connections in a row to one domain that end before the session is
/// ready, after which the run stops waiting for that domain's mail.
pub const GIVE_UP_AFTER: u32 = 3;

/// How often the run checks for Ctrl-C and the retry deadline while no
/// report arrives.
const POLL: Duration = Duration::from_millis(100);

/// What a run needs.
#[derive(Debug)]
pub struct RunPlan {
    /// The engine's configuration.
    pub config: Config,
    /// Messages to send, with the recipients still to do.
    pub messages: Vec<InputMessage>,
    /// Files that cannot be sent; each gets one log record.
    pub invalid: Vec<InvalidInput>,
    /// How long deferred mail is retried; `None` for no retry in this run.
    pub retry_for: Option<Duration>,
    /// Set by a signal handler to stop the run.
    pub stop: Arc<AtomicBool>,
}

/// Why a run could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The delivery log could not be written.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The engine's threads could not start.
    #[error("cannot start the delivery engine: {0}")]
    Engine(#[source] std::io::Error),
    /// The engine refused a submission.
    #[error("the engine refused message {path}: {detail}")]
    Submit {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Where each message stands in this run.
struct Tracker {
    messages: Vec<InputMessage>,
    /// Recipients of each message (by tag) without a final record yet.
    open_recipients: HashMap<u64, HashSet<String>>,
    /// The domains of recipients without a final record, with counts.
    open_domains: HashMap<Domain, usize>,
    /// Per domain: connections in a row that never became ready.
    failing: HashMap<Domain, (u32, CloseReason)>,
    /// Recipients whose last record was "delivery unknown".
    unknown: HashSet<(u64, String)>,
}

impl Tracker {
    fn new(messages: Vec<InputMessage>) -> Self {
        let mut open_recipients = HashMap::new();
        let mut open_domains: HashMap<Domain, usize> = HashMap::new();
        for message in &messages {
            let recipients: HashSet<String> = message
                .submission
                .recipients
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect();
            for address in &message.submission.recipients {
                *open_domains.entry(address.domain().clone()).or_default() += 1;
            }
            open_recipients.insert(message.submission.tag, recipients);
        }
        Self {
            messages,
            open_recipients,
            open_domains,
            failing: HashMap::new(),
            unknown: HashSet::new(),
        }
    }

    fn open(&self) -> usize {
        self.open_domains.values().sum()
    }

    /// Marks a recipient done; returns whether its whole message is done.
    fn close_recipient(&mut self, record: &RecipientRecord) -> Option<bool> {
        let recipients = self.open_recipients.get_mut(&record.tag)?;
        if !recipients.remove(record.recipient.as_str()) {
            return None;
        }
        if let Some(count) = self.open_domains.get_mut(record.recipient.domain()) {
            *count -= 1;
            if *count == 0 {
                self.open_domains.remove(record.recipient.domain());
            }
        }
        Some(recipients.is_empty())
    }

    /// Whether every domain that still has open recipients keeps failing.
    fn all_open_domains_failing(&self) -> bool {
        !self.open_domains.is_empty()
            && self.open_domains.keys().all(|d| {
                self.failing
                    .get(d)
                    .is_some_and(|(n, _)| *n >= GIVE_UP_AFTER)
            })
    }

    fn note_close(&mut self, closed: &ConnectionClosed) {
        let never_ready = closed.messages_delivered == 0 && is_setup_failure(closed.reason);
        if never_ready {
            let entry = self
                .failing
                .entry(closed.domain.clone())
                .or_insert((0, closed.reason));
            entry.0 += 1;
            entry.1 = closed.reason;
        } else {
            self.failing.remove(&closed.domain);
        }
    }
}

/// The state a run updates as reports arrive.
struct RunState<'p> {
    tracker: Tracker,
    totals: RunTotals,
    log: Option<DeliveryLogWriter>,
    progress: &'p Progress,
    open_connections: u64,
    retry_until: Option<Instant>,
    shutting_down: bool,
}

impl RunState<'_> {
    fn retry_over(&self) -> bool {
        self.retry_until.is_none_or(|until| Instant::now() >= until)
    }

    /// Records one report: a recipient's outcome in the log and totals, or
    /// a connection's open or close.
    fn handle(&mut self, report: Report) -> Result<(), RunError> {
        match report {
            Report::Recipient(record) => {
                let final_for_run =
                    record.outcome.is_final() || self.retry_over() || self.shutting_down;
                if record.outcome == RecipientOutcome::DeliveryUnknown {
                    self.tracker
                        .unknown
                        .insert((record.tag, record.recipient.as_str().to_owned()));
                }
                if !final_for_run {
                    return Ok(());
                }
                let detail = self
                    .tracker
                    .failing
                    .get(&record.domain)
                    .map(|(count, reason)| {
                        format!("{count} connection attempts in a row failed ({reason})")
                    });
                let status = status_of(&record, &self.tracker);
                let Some(message_done) = self.tracker.close_recipient(&record) else {
                    return Ok(());
                };
                self.totals.record_status(&status);
                if let Some(log) = self.log.as_mut() {
                    let message = &self.tracker.messages[record.tag as usize];
                    let outcome = delivery_log::RecipientOutcome {
                        file: &message.path,
                        message_id: message.message_id.as_deref(),
                        sender: &message.submission.reverse_path,
                        recipient: &record.recipient,
                        status: &status,
                        attempts: record.attempts,
                        connection: record.connection,
                        tls: record.tls.as_ref(),
                        detail: detail.as_deref().filter(|_| !status.is_final()),
                    };
                    if let Some(line) = LogRecord::from_outcome(&outcome) {
                        log.write(&line)?;
                    }
                }
                if message_done {
                    self.totals.messages_done += 1;
                    self.progress.messages_done(self.totals.messages_done);
                }
            }
            Report::ConnectionOpened(_) => {
                self.totals.connections_opened += 1;
                self.open_connections += 1;
                self.progress.set_connections_open(self.open_connections);
            }
            Report::ConnectionClosed(closed) => {
                self.open_connections = self.open_connections.saturating_sub(1);
                self.progress.set_connections_open(self.open_connections);
                self.totals.closes.record(closed.outcome);
                if closed.peer.is_some() && closed.outcome != CloseOutcome::NeverConnected {
                    self.totals.connections_established += 1;
                }
                if closed.tls.is_some() {
                    self.totals.connections_tls += 1;
                }
                self.tracker.note_close(&closed);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Close reasons of a connection that failed before it could take mail.
fn is_setup_failure(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ConnectFailed
            | CloseReason::Greeting
            | CloseReason::TlsUnavailable
            | CloseReason::TlsFailed
            | CloseReason::StartTlsInjection
            | CloseReason::Timeout
            | CloseReason::ProtocolError
            | CloseReason::ServiceClosing
            | CloseReason::PeerClosed
    )
}

/// Scheduler options for a command-line run: domain backoff short enough
/// that a relay that refuses connections is given up within seconds.
pub fn scheduler_options() -> SchedulerOptions {
    SchedulerOptions {
        domain_backoff: Duration::from_millis(500),
        domain_backoff_max: Duration::from_secs(10),
        ..SchedulerOptions::default()
    }
}

/// Runs the plan to the end and returns the totals.
///
/// # Errors
///
/// Returns an error when the log cannot be written or the engine cannot
/// start; records written before that stay in the log.
pub fn run(
    plan: RunPlan,
    mut log: Option<DeliveryLogWriter>,
    progress: &Progress,
) -> Result<RunTotals, RunError> {
    let started = Instant::now();
    let mut totals = RunTotals::default();

    for invalid in &plan.invalid {
        tracing::warn!(file = %invalid.path.display(), reason = %invalid.reason, "invalid input");
        totals.invalid_input += 1;
        if let Some(log) = log.as_mut() {
            log.write(&LogRecord::from_invalid_input(invalid))?;
        }
    }

    let (reports, receiver) = mpsc::channel::<Report>();
    let mut options = EngineOptions::default();
    options.scheduler = scheduler_options();
    let engine = Engine::start(plan.config, options, reports).map_err(RunError::Engine)?;

    // Records come back with the submission's tag: make it the index into
    // this run's message list.
    let mut messages = plan.messages;
    for (index, message) in messages.iter_mut().enumerate() {
        message.submission.tag = index as u64;
    }
    for message in &messages {
        if let Err(error) = engine.handle().submit(message.submission.clone()) {
            return Err(RunError::Submit {
                path: message.path.clone(),
                detail: error.to_string(),
            });
        }
    }

    let mut state = RunState {
        tracker: Tracker::new(messages),
        totals,
        log,
        progress,
        open_connections: 0,
        retry_until: plan.retry_for.map(|window| started + window),
        shutting_down: false,
    };
    while state.tracker.open() > 0 {
        let give_up = state.retry_over() && state.tracker.all_open_domains_failing();
        let stop = plan.stop.load(Ordering::SeqCst);
        if (give_up || stop) && !state.shutting_down {
            if stop {
                tracing::warn!(
                    "stopping: new work stops, open connections close, every outcome is recorded"
                );
            } else {
                tracing::warn!(
                    domains = state.tracker.open_domains.len(),
                    "giving up: every remaining domain keeps failing to connect"
                );
            }
            engine.handle().shutdown();
            state.shutting_down = true;
        }

        match receiver.recv_timeout(POLL) {
            Ok(report) => state.handle(report)?,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    // The shutdown closes every connection; their reports (and any late
    // records) arrive until the scheduler stops.
    state.shutting_down = true;
    let stats = engine.shutdown();
    while let Ok(report) = receiver.try_recv() {
        state.handle(report)?;
    }
    if let Some(stats) = stats {
        tracing::debug!(?stats, "engine stopped");
    }
    if let Some(log) = state.log.as_mut() {
        log.sync()?;
    }
    let mut totals = state.totals;
    totals.elapsed = started.elapsed();
    Ok(totals)
}

/// The status the log and totals record for an engine report. Mail left
/// unsent at a shutdown is deferred (or still "delivery unknown" if its last
/// attempt was), so that `--resume` tries it again.
fn status_of(record: &RecipientRecord, tracker: &Tracker) -> RecipientStatus {
    match &record.outcome {
        RecipientOutcome::Delivered(reply) => RecipientStatus::Delivered(reply.clone()),
        RecipientOutcome::Failed(reply) => RecipientStatus::Failed(reply.clone()),
        RecipientOutcome::Deferred { reply, .. } => {
            RecipientStatus::Deferred(reply.clone().unwrap_or_else(unsent_reply))
        }
        RecipientOutcome::DeliveryUnknown => RecipientStatus::DeliveryUnknown,
        _ if tracker
            .unknown
            .contains(&(record.tag, record.recipient.as_str().to_owned())) =>
        {
            RecipientStatus::DeliveryUnknown
        }
        _ => RecipientStatus::Deferred(unsent_reply()),
    }
}

/// The reply recorded for mail that the run ended before sending.
fn unsent_reply() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_NOT_AVAILABLE,
        "4.4.1".parse().ok(),
        "not sent in this run; run again with --resume",
    )
}

/// With `--retry-for`, deferred mail must come due again within the run:
/// unless the configuration sets a retry interval, retry after 10 s,
/// doubling up to 1 min.
pub fn retry_defaults(config: &mut Config) {
    let retry = &mut config.global.retry;
    if retry.interval.is_none() {
        retry.interval = Some(Duration::from_secs(10));
    }
    if retry.max_interval.is_none() {
        retry.max_interval = Some(Duration::from_secs(60));
    }
}

/// Drops from the input what an earlier run already finished: recipients
/// whose outcome in the log is final, messages left with no recipient, and
/// invalid files already recorded.
pub fn skip_final(
    messages: &mut Vec<InputMessage>,
    invalid: &mut Vec<InvalidInput>,
    resume: &delivery_log::ResumeSet,
) {
    for message in messages.iter_mut() {
        let path = message.path.clone();
        message
            .submission
            .recipients
            .retain(|recipient| !resume.is_final(&path, recipient));
    }
    messages.retain(|message| !message.submission.recipients.is_empty());
    invalid.retain(|bad| !resume.is_file_final(&bad.path));
}
