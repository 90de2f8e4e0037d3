//! One delivery run: submit the input to the engine, write each recipient's
//! outcome to the delivery log as it happens, keep the totals, and decide
//! when the run is over.
//!
//! A recipient's outcome is final for the run when it is delivered or
//! failed, or, when no retry is allowed (or the retry window has passed),
//! when it is deferred or its delivery is unknown. A run also ends early
//! when every domain that still has mail keeps failing to connect
//! ([`GIVE_UP_AFTER`] connections in a row on which no message got as far
//! as a transaction): the engine would only go on retrying it, and the
//! remaining recipients are recorded as deferred so that `--resume` can
//! take them up.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ec_sched::{ConnectionClosed, RecipientOutcome, RecipientRecord, Report, SchedulerOptions};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{Binding, CloseOutcome, CloseReason, Config, Domain, Reply, Route, Target};
use thiserror::Error;

use crate::delivery_log::{self, DeliveryLogWriter, LogError, LogRecord, LogResult};
use crate::input::{InputMessage, InvalidInput};
use crate::progress::Progress;
use crate::summary::RunTotals;

/// Connections in a row to one domain that end before any message is sent
/// on them (most end before the session is ready), after which the run
/// stops waiting for that domain's mail.
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

/// The result of a run: its totals and, when the delivery log could not
/// be written, the failure and the outcomes that are not in the log.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every recipient's outcome counted, whether or not the log has it.
    pub totals: RunTotals,
    /// The first failed write (or sync) of the delivery log. The run
    /// stopped taking new work at that moment and wrote no more records.
    pub log_failure: Option<LogFailure>,
}

/// A delivery log that stopped being written partway through a run.
#[derive(Debug)]
pub struct LogFailure {
    /// The first failed write or sync, with the file and the OS error.
    pub error: LogError,
    /// Final outcomes (delivered, failed, invalid input) that are not in
    /// the log, in the order they happened. `--resume` would send these
    /// recipients again unless their records are added to the log.
    pub unrecorded_final: Vec<LogRecord>,
    /// Other outcomes that are not in the log (deferred, delivery
    /// unknown); `--resume` sends these again, as it would from the log.
    pub unrecorded_other: u64,
}

impl LogFailure {
    fn new(error: LogError) -> Self {
        Self {
            error,
            unrecorded_final: Vec::new(),
            unrecorded_other: 0,
        }
    }

    fn note_unrecorded(&mut self, record: LogRecord) {
        if record.result.is_final() {
            self.unrecorded_final.push(record);
        } else {
            self.unrecorded_other += 1;
        }
    }
}

/// Why a run could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
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

/// The log detail of a recipient whose delivery is unknown.
const DELIVERY_UNKNOWN_DETAIL: &str = "the message data was sent and no reply to it came, \
     so the server may have accepted it; --resume sends it again";

/// The log detail of a deferral that came without a server reply: the
/// connection ended or timed out during the transaction.
const CONNECTION_LOST_DETAIL: &str =
    "the connection ended before the server replied; run again with --resume";

/// The log detail of mail that the run ended before sending.
const UNSENT_DETAIL: &str = "not sent in this run";

/// The cause in the detail of mail left unsent after the log failed.
const LOG_FAILED_CAUSE: &str = "the run stopped because the delivery log could not be written";

/// The text that ends the engine's 554 5.4.7 reply for a recipient that
/// outlived the retry policy. The log's detail drops it, because the
/// `(status ..., set by ec)` suffix already names the source.
const MADE_BY_EC: &str = "(reply made by ec)";

/// A recipient's outcome as this run records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    result: LogResult,
    /// The server's reply that decided the outcome; never one ec made.
    reply: Option<Reply>,
    /// ec's explanation where no server reply decided the outcome.
    detail: Option<String>,
}

impl Recorded {
    /// Builds the outcome of a reply: the server's reply, or, for a reply
    /// the engine made itself, no reply and the engine's text as the detail.
    fn from_reply(result: LogResult, reply: &Reply) -> Self {
        match engine_explanation(reply) {
            Some(detail) => Self::explained(result, detail),
            None => Self {
                result,
                reply: Some(reply.clone()),
                detail: None,
            },
        }
    }

    fn explained(result: LogResult, detail: String) -> Self {
        Self {
            result,
            reply: None,
            detail: Some(detail),
        }
    }
}

/// Returns the detail for a reply that the engine made itself
/// ([`Reply::local`]), such as "delivery time expired: queued 600s ago, past
/// the retry policy's maximum age (status 5.4.7, set by ec)"; `None` for a
/// reply from the server.
fn engine_explanation(reply: &Reply) -> Option<String> {
    if !reply.local {
        return None;
    }
    let text = reply.lines.join(" ");
    let text = text.trim_end();
    let text = text.strip_suffix(MADE_BY_EC).unwrap_or(text).trim_end();
    let status = match reply.enhanced {
        Some(enhanced) => enhanced.to_string(),
        None => reply.code.to_string(),
    };
    Some(format!("{text} (status {status}, set by ec)"))
}

/// Returns the detail for mail that the run ended before sending, with
/// the cause when the run has one.
fn unsent_detail(cause: Option<&str>) -> String {
    match cause {
        Some(cause) => format!("{UNSENT_DETAIL}: {cause}; run again with --resume"),
        None => format!("{UNSENT_DETAIL}; run again with --resume"),
    }
}

/// The state of each message in this run.
struct Tracker {
    messages: Vec<InputMessage>,
    /// Recipients of each message (by tag) without a final record yet.
    open_recipients: HashMap<u64, HashSet<String>>,
    /// The domains of recipients without a final record, with counts.
    open_domains: HashMap<Domain, usize>,
    /// Per domain: connections in a row that never became ready.
    failing: HashMap<Domain, FailureStreak>,
    /// The last non-final record of each recipient that had one.
    transient: HashMap<(u64, String), Transient>,
    /// Messages (by tag) with a recipient whose outcome in this run is
    /// not delivered.
    undelivered_messages: HashSet<u64>,
}

/// Connections in a row to one domain that ended before a message was sent
/// on them.
#[derive(Debug, Clone)]
struct FailureStreak {
    count: u32,
    /// The last connection's close reason.
    reason: CloseReason,
    /// Where the last connection went.
    target: Target,
    /// The last connection's failure, as the session reported it.
    failure: Option<String>,
}

impl FailureStreak {
    fn describe(&self) -> String {
        let connections = if self.count == 1 {
            "1 connection".to_owned()
        } else {
            format!("{} connections in a row", self.count)
        };
        let last = match &self.failure {
            Some(failure) => format!("{}: {failure}", self.reason),
            None => self.reason.to_string(),
        };
        let mut text = format!(
            "{connections} to {} ended before a message could be sent (last: {last})",
            self.target
        );
        if let Some(advice) = self.failure.as_deref().and_then(failure_advice) {
            text.push_str("; ");
            text.push_str(advice);
        }
        text
    }
}

/// Returns what to do about a TLS failure that a flag can fix, found by
/// the rustls error name or text in `failure`.
fn failure_advice(failure: &str) -> Option<&'static str> {
    if failure.contains("InvalidContentType") {
        Some(
            "the server answered the TLS handshake in clear text, so the port does not \
             expect implicit TLS: use --tls required or opportunistic there, or the \
             server's implicit-TLS port, such as 465",
        )
    } else if failure.contains("UnknownIssuer") || failure.contains("BadSignature") {
        Some(
            "the server's certificate is signed by a CA that ec does not trust: pass \
             --ca-file FILE with the PEM certificate of the CA that signed it",
        )
    } else if failure.contains("NotValidForName") || failure.contains("not valid for name") {
        Some(
            "the server's certificate is not valid for the name ec checked: pass \
             --tls-server-name NAME with a name that the certificate lists",
        )
    } else {
        None
    }
}

/// A recipient's last non-final record.
#[derive(Debug, Clone)]
enum Transient {
    /// A deferral with the server's reply.
    Deferred(Reply),
    /// A deferral without a reply, such as a lost connection.
    DeferredWithoutReply,
    /// The final dot was sent and no reply came. Later records do not
    /// undo this: the server may hold a copy.
    DeliveryUnknown,
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
            transient: HashMap::new(),
            undelivered_messages: HashSet::new(),
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

    /// Logs, for each domain that still has open recipients, why its
    /// connections keep failing.
    fn warn_failing_domains(&self) {
        let mut domains: Vec<&Domain> = self.open_domains.keys().collect();
        domains.sort();
        for domain in domains {
            if let Some(streak) = self.failing.get(domain) {
                tracing::warn!(%domain, "{}", streak.describe());
            }
        }
    }

    /// Whether every domain that still has open recipients keeps failing.
    fn all_open_domains_failing(&self) -> bool {
        !self.open_domains.is_empty()
            && self.open_domains.keys().all(|d| {
                self.failing
                    .get(d)
                    .is_some_and(|streak| streak.count >= GIVE_UP_AFTER)
            })
    }

    /// Keeps the recipient's last non-final record, so that a later
    /// "unsent" record can report what actually happened.
    fn note_transient(&mut self, record: &RecipientRecord) {
        let key = (record.tag, record.recipient.as_str().to_owned());
        let transient = match &record.outcome {
            RecipientOutcome::DeliveryUnknown => Transient::DeliveryUnknown,
            RecipientOutcome::Deferred { reply, .. } => {
                if matches!(self.transient.get(&key), Some(Transient::DeliveryUnknown)) {
                    return;
                }
                match reply {
                    Some(reply) => Transient::Deferred(reply.clone()),
                    None => Transient::DeferredWithoutReply,
                }
            }
            _ => return,
        };
        self.transient.insert(key, transient);
    }

    fn transient(&self, record: &RecipientRecord) -> Option<&Transient> {
        self.transient
            .get(&(record.tag, record.recipient.as_str().to_owned()))
    }

    /// Counts a connection that ended before any message spent an attempt
    /// on it, or ends the domain's streak. A close that this run asked for
    /// (at its end, or by a signal) is not the server's doing and changes
    /// nothing.
    ///
    /// The streak counts attempts, not deliveries: a server that drops the
    /// connection after each final dot leaves every message "delivery
    /// unknown", and the run must record those rather than give up.
    fn note_close(&mut self, closed: &ConnectionClosed) {
        if matches!(
            closed.reason,
            CloseReason::Shutdown | CloseReason::Requested
        ) {
            return;
        }
        let never_ready = closed.messages_attempted == 0 && is_setup_failure(closed.reason);
        if never_ready {
            let streak = self
                .failing
                .entry(closed.domain.clone())
                .or_insert_with(|| FailureStreak {
                    count: 0,
                    reason: closed.reason,
                    target: closed.target.clone(),
                    failure: None,
                });
            streak.count += 1;
            streak.reason = closed.reason;
            streak.target = closed.target.clone();
            streak.failure.clone_from(&closed.failure);
        } else {
            self.failing.remove(&closed.domain);
        }
    }
}

/// Why the run ended before every recipient had a final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EarlyEnd {
    /// SIGINT or SIGTERM.
    Stopped,
    /// Every domain with mail left kept failing to connect.
    GaveUp,
    /// The delivery log could not be written.
    LogFailed,
}

/// The state a run updates as reports arrive.
struct RunState<'p> {
    tracker: Tracker,
    totals: RunTotals,
    log: Option<DeliveryLogWriter>,
    /// Set at the first failed log write; no record is written after it.
    log_failure: Option<LogFailure>,
    progress: &'p Progress,
    open_connections: u64,
    retry_until: Option<Instant>,
    /// Set when the run asked the engine to shut down before every
    /// recipient had a final outcome.
    early_end: Option<EarlyEnd>,
    /// Set once the engine is asked to shut down, early or at the end.
    shutting_down: bool,
}

impl RunState<'_> {
    fn retry_over(&self) -> bool {
        self.retry_until.is_none_or(|until| Instant::now() >= until)
    }

    /// Appends a record to the delivery log. At the first failed write the
    /// log is given up: a partial line may end the file, and a record after
    /// it would make `--resume` reject the log. That record and every later
    /// one are kept in the failure instead, and the run loop stops the run.
    fn write_log(&mut self, record: LogRecord) {
        if let Some(failure) = self.log_failure.as_mut() {
            failure.note_unrecorded(record);
            return;
        }
        let Some(log) = self.log.as_mut() else {
            return;
        };
        if let Err(error) = log.write(&record) {
            crate::errln!(
                "ec: {error}; stopping: no new work starts, open connections close, and the \
                 outcomes that the log lacks are printed at the end"
            );
            let mut failure = LogFailure::new(error);
            failure.note_unrecorded(record);
            self.log_failure = Some(failure);
            self.log = None;
        }
    }

    /// Records one report: a recipient's outcome in the log and totals, or
    /// a connection's open or close.
    fn handle(&mut self, report: Report) {
        match report {
            Report::Recipient(record) => self.record_recipient(&record),
            Report::ConnectionOpened(_) => {
                self.totals.connections_attempted += 1;
                self.open_connections += 1;
                self.progress.set_connections_open(self.open_connections);
            }
            Report::ConnectionClosed(closed) => {
                self.open_connections = self.open_connections.saturating_sub(1);
                self.progress.set_connections_open(self.open_connections);
                self.count_close(&closed);
                self.tracker.note_close(&closed);
            }
            _ => {}
        }
    }

    /// Logs and counts a recipient's outcome when it is final for this run.
    fn record_recipient(&mut self, record: &RecipientRecord) {
        let final_for_run = record.outcome.is_final() || self.retry_over() || self.shutting_down;
        if !final_for_run {
            self.tracker.note_transient(record);
            return;
        }

        let recorded = self.recorded(record);
        self.tracker.note_transient(record);
        let Some(message_done) = self.tracker.close_recipient(record) else {
            return;
        };
        self.totals.record_result(recorded.result);
        let message = &self.tracker.messages[record.tag as usize];
        let log_record = {
            let outcome = delivery_log::RecipientOutcome {
                file: &message.path,
                canonical_file: message.canonical_path.as_deref(),
                message_id: message.message_id.as_deref(),
                sender: &message.submission.reverse_path,
                recipient: &record.recipient,
                result: recorded.result,
                reply: recorded.reply.as_ref(),
                attempts: record.attempts,
                connection: record.connection,
                tls: record.tls.as_ref(),
                detail: recorded.detail.as_deref(),
            };
            LogRecord::from_outcome(&outcome)
        };
        self.write_log(log_record);

        if recorded.result != LogResult::Delivered {
            self.tracker.undelivered_messages.insert(record.tag);
        }
        if message_done {
            if !self.tracker.undelivered_messages.remove(&record.tag) {
                self.totals.messages_delivered += 1;
            }
            self.totals.messages_done += 1;
            self.progress.messages_done(1);
        }
    }

    /// Returns the outcome that the log and totals record for an engine
    /// report: the server's reply where one decided it, and ec's
    /// explanation where ec did.
    ///
    /// Mail left unsent at a shutdown keeps what its last attempt gave (a
    /// 4xx reply, a lost connection, or "delivery unknown"), or is deferred
    /// as not sent, so that `--resume` tries it again.
    fn recorded(&self, record: &RecipientRecord) -> Recorded {
        let streak = self
            .tracker
            .failing
            .get(&record.domain)
            .map(FailureStreak::describe);
        match &record.outcome {
            RecipientOutcome::Delivered(reply) => Recorded::from_reply(LogResult::Delivered, reply),
            RecipientOutcome::Failed(reply) => Recorded::from_reply(LogResult::Failed, reply),
            RecipientOutcome::Deferred {
                reply: Some(reply), ..
            } => Recorded::from_reply(LogResult::Deferred, reply),
            RecipientOutcome::Deferred { reply: None, .. } => {
                let detail = match streak {
                    Some(streak) => format!("{CONNECTION_LOST_DETAIL}; {streak}"),
                    None => CONNECTION_LOST_DETAIL.to_owned(),
                };
                Recorded::explained(LogResult::Deferred, detail)
            }
            RecipientOutcome::DeliveryUnknown => Recorded::explained(
                LogResult::DeliveryUnknown,
                DELIVERY_UNKNOWN_DETAIL.to_owned(),
            ),
            _ => {
                let cause = streak.or_else(|| self.early_end_cause());
                match self.tracker.transient(record) {
                    Some(Transient::DeliveryUnknown) => {
                        let detail = match cause {
                            Some(cause) => format!("{DELIVERY_UNKNOWN_DETAIL}; then {cause}"),
                            None => DELIVERY_UNKNOWN_DETAIL.to_owned(),
                        };
                        Recorded::explained(LogResult::DeliveryUnknown, detail)
                    }
                    Some(Transient::Deferred(reply)) => {
                        let mut recorded = Recorded::from_reply(LogResult::Deferred, reply);
                        recorded.detail = match (recorded.detail, cause) {
                            (Some(detail), Some(cause)) => Some(format!("{detail}; then {cause}")),
                            (detail, cause) => detail.or(cause),
                        };
                        recorded
                    }
                    Some(Transient::DeferredWithoutReply) => {
                        let detail = match cause {
                            Some(cause) => format!("{CONNECTION_LOST_DETAIL}; then {cause}"),
                            None => CONNECTION_LOST_DETAIL.to_owned(),
                        };
                        Recorded::explained(LogResult::Deferred, detail)
                    }
                    None => {
                        Recorded::explained(LogResult::Deferred, unsent_detail(cause.as_deref()))
                    }
                }
            }
        }
    }

    /// Records every recipient still open after the engine stopped: the
    /// engine promises a final record for each, so this happens only when
    /// it broke that promise (its report channel closed early). Such
    /// recipients are deferred, so that the exit status reports them and
    /// `--resume` tries them again.
    fn record_unreported(&mut self) {
        if self.tracker.open_recipients.values().all(HashSet::is_empty) {
            return;
        }
        tracing::error!(
            recipients = self.tracker.open(),
            "the delivery engine stopped without a final record for some recipients; \
             they are logged as deferred"
        );
        self.record_open_as_unsent("the delivery engine stopped without reporting this recipient");
    }

    /// Records every recipient still open as deferred and not sent, with
    /// `cause` in the detail.
    fn record_open_as_unsent(&mut self, cause: &str) {
        let mut open: Vec<(u64, String)> = self
            .tracker
            .open_recipients
            .iter()
            .flat_map(|(tag, recipients)| recipients.iter().map(|r| (*tag, r.clone())))
            .collect();
        open.sort();
        let detail = unsent_detail(Some(cause));
        for (tag, recipient) in open {
            let message = &self.tracker.messages[tag as usize];
            let Some(address) = message
                .submission
                .recipients
                .iter()
                .find(|address| address.as_str() == recipient)
            else {
                continue;
            };
            self.totals.record_result(LogResult::Deferred);
            let outcome = delivery_log::RecipientOutcome {
                file: &message.path,
                canonical_file: message.canonical_path.as_deref(),
                message_id: message.message_id.as_deref(),
                sender: &message.submission.reverse_path,
                recipient: address,
                result: LogResult::Deferred,
                reply: None,
                attempts: 0,
                connection: None,
                tls: None,
                detail: Some(&detail),
            };
            let log_record = LogRecord::from_outcome(&outcome);
            self.write_log(log_record);
        }
        self.tracker.open_recipients.clear();
        self.tracker.open_domains.clear();
    }

    fn early_end_cause(&self) -> Option<String> {
        match self.early_end? {
            EarlyEnd::Stopped => Some(
                "the run was stopped (SIGINT or SIGTERM) before this recipient was done".to_owned(),
            ),
            EarlyEnd::GaveUp => Some(
                "the run gave up: every domain with mail left kept failing to connect".to_owned(),
            ),
            EarlyEnd::LogFailed => Some(LOG_FAILED_CAUSE.to_owned()),
        }
    }

    /// Counts a closed connection. One that the end of the run closed
    /// before it delivered anything and without TLS was cut off while it
    /// was being set up (or sat idle in clear text): it is counted apart so
    /// that it does not lower the share of connections over TLS.
    fn count_close(&mut self, closed: &ConnectionClosed) {
        self.totals.closes.record(closed.outcome, closed.reason);
        if closed.peer.is_none() || closed.outcome == CloseOutcome::NeverConnected {
            return;
        }
        self.totals.connections_established += 1;
        if closed.tls.is_some() {
            self.totals.connections_tls += 1;
        } else if closed.reason == CloseReason::Shutdown && closed.messages_attempted == 0 {
            self.totals.connections_unused += 1;
        }
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
        // A stop (Ctrl-C, SIGTERM, or the end of the run) lets busy
        // connections finish their transaction for this long, then closes
        // them; the close deadline bounds the rest.
        shutdown_grace: Duration::from_secs(5),
        ..SchedulerOptions::default()
    }
}

/// Runs the plan to the end and returns the totals.
///
/// When a write to the delivery log fails, the run stops as a signal stops
/// it: no new work starts, open connections close through the engine's
/// shutdown, and every recipient still gets an outcome in the totals. The
/// log gets no more records, and [`RunOutcome::log_failure`] keeps the
/// outcomes it lacks. When the log fails before the engine starts, no
/// message is sent at all.
///
/// # Errors
///
/// Returns an error when the engine cannot start or refuses a submission;
/// records written before that stay in the log.
pub fn run(
    plan: RunPlan,
    log: Option<DeliveryLogWriter>,
    progress: &Progress,
) -> Result<RunOutcome, RunError> {
    let started = Instant::now();

    // Records come back with the submission's tag: make it the index into
    // this run's message list.
    let mut messages = plan.messages;
    for (index, message) in messages.iter_mut().enumerate() {
        message.submission.tag = index as u64;
    }
    let mut state = RunState {
        tracker: Tracker::new(messages),
        totals: RunTotals::default(),
        log,
        log_failure: None,
        progress,
        open_connections: 0,
        retry_until: plan.retry_for.map(|window| started + window),
        early_end: None,
        shutting_down: false,
    };

    for invalid in &plan.invalid {
        tracing::warn!(file = %invalid.path.display(), reason = %invalid.reason, "invalid input");
        state.totals.record_result(LogResult::InvalidInput);
        state.write_log(LogRecord::from_invalid_input(invalid));
    }
    if state.log_failure.is_some() {
        state.early_end = Some(EarlyEnd::LogFailed);
        state.record_open_as_unsent(LOG_FAILED_CAUSE);
        return Ok(state.finish(started));
    }

    let (reports, receiver) = mpsc::channel::<Report>();
    let mut options = EngineOptions::default();
    options.scheduler = scheduler_options();
    let engine = Engine::start(plan.config, options, reports).map_err(RunError::Engine)?;
    for message in &state.tracker.messages {
        if let Err(error) = engine.handle().submit(message.submission.clone()) {
            return Err(RunError::Submit {
                path: message.path.clone(),
                detail: error.to_string(),
            });
        }
    }

    while state.tracker.open() > 0 {
        if !state.shutting_down {
            if let Some(early_end) = state.early_end_now(plan.stop.load(Ordering::SeqCst)) {
                engine.handle().shutdown();
                state.early_end = Some(early_end);
                state.shutting_down = true;
            }
        }

        match receiver.recv_timeout(POLL) {
            Ok(report) => state.handle(report),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    // The shutdown closes every connection; their reports (and any late
    // records) arrive until the scheduler stops.
    state.shutting_down = true;
    let stats = engine.shutdown();
    while let Ok(report) = receiver.try_recv() {
        state.handle(report);
    }
    if let Some(stats) = stats {
        tracing::debug!(?stats, "engine stopped");
    }
    state.record_unreported();
    Ok(state.finish(started))
}

impl RunState<'_> {
    /// Returns why the run must stop now, if it must: a signal (`stop`),
    /// a failed log write, or domains that all keep failing. Logs the
    /// reason where nothing has shown it to the user yet.
    fn early_end_now(&self, stop: bool) -> Option<EarlyEnd> {
        if stop {
            // The signal handler has printed this for the user already.
            tracing::debug!(
                "stopping: new work stops, open connections close, every outcome is recorded"
            );
            return Some(EarlyEnd::Stopped);
        }
        if self.log_failure.is_some() {
            // write_log has printed this for the user already.
            return Some(EarlyEnd::LogFailed);
        }
        if self.retry_over() && self.tracker.all_open_domains_failing() {
            tracing::warn!(
                domains = self.tracker.open_domains.len(),
                "giving up: every remaining domain keeps failing before its SMTP sessions are ready"
            );
            self.tracker.warn_failing_domains();
            return Some(EarlyEnd::GaveUp);
        }
        None
    }

    /// Forces the log to the disk and returns what the run ends with. A
    /// failed sync counts as a log failure, because the records may not be
    /// on the disk.
    fn finish(mut self, started: Instant) -> RunOutcome {
        if let Some(log) = self.log.as_mut() {
            if let Err(error) = log.sync() {
                crate::errln!("ec: {error}");
                self.log_failure = Some(LogFailure::new(error));
            }
        }
        self.totals.elapsed = started.elapsed();
        RunOutcome {
            totals: self.totals,
            log_failure: self.log_failure,
        }
    }
}

/// Rejects a configuration under which a run could never send anything
/// and would wait for ever: a connection limit of 0 in any scope. The
/// engine takes 0 to hold a domain's mail; a command-line run has no way
/// to release it.
///
/// `config_file` is the `--config` file, the only place such a limit can
/// come from, since `--connections` rejects 0.
///
/// # Errors
///
/// Returns a usage error naming the scope and the file.
pub fn check_can_send(
    config: &Config,
    config_file: Option<&Path>,
) -> Result<(), crate::cli::UsageError> {
    let mut scopes: Vec<(String, Option<u32>)> =
        vec![("global".to_owned(), config.global.max_outbound_connections)];
    for (name, scope) in &config.binding {
        scopes.push((
            format!("binding {name:?}"),
            scope.settings.max_outbound_connections,
        ));
        for (domain, settings) in &scope.domain {
            scopes.push((
                format!("binding {name:?}, domain {domain}"),
                settings.max_outbound_connections,
            ));
        }
    }
    for (domain, settings) in &config.domain {
        scopes.push((
            format!("domain {domain}"),
            settings.max_outbound_connections,
        ));
    }
    match scopes.into_iter().find(|(_, limit)| *limit == Some(0)) {
        Some((scope, _)) => {
            let file = config_file
                .map(|path| format!(" of the config file {}", path.display()))
                .unwrap_or_default();
            Err(crate::cli::UsageError::Config(format!(
                "max_outbound_connections is 0 in the {scope} settings{file}, so no mail \
                 could be sent; give a value above zero"
            )))
        }
        None => Ok(()),
    }
}

/// Returns the recipient domains of `messages` that no relay or route
/// covers, in order and without repeats. Their mail goes to their MX hosts
/// directly.
pub fn direct_domains(config: &Config, messages: &[InputMessage]) -> Vec<Domain> {
    let mut seen = HashSet::new();
    let mut direct = Vec::new();
    let recipients = messages
        .iter()
        .flat_map(|message| &message.submission.recipients);
    for recipient in recipients {
        let domain = recipient.domain();
        if !seen.insert(domain.clone()) {
            continue;
        }
        let settings = config.resolve(Binding::DEFAULT_NAME, domain);
        if settings.route == Route::Mx {
            direct.push(domain.clone());
        }
    }
    direct
}

/// Rejects a `--resume` whose PATHs name none of the files in the log,
/// because such a run would send everything again. Files match by their
/// canonical path, so this catches other files or another log, and a log
/// of an earlier version read from another directory, whose records name
/// files relative to the directory that run started in.
///
/// # Errors
///
/// Returns a usage error when the log has records and no input file
/// appears in it.
pub fn check_resume_matches(
    resume: &delivery_log::ResumeSet,
    messages: &[InputMessage],
    invalid: &[InvalidInput],
) -> Result<(), crate::cli::UsageError> {
    let identities = messages
        .iter()
        .map(InputMessage::identity)
        .chain(invalid.iter().map(InvalidInput::identity));
    let mut any_input = false;
    for identity in identities {
        any_input = true;
        if resume.mentions(identity) {
            return Ok(());
        }
    }
    if resume.records() == 0 || !any_input {
        return Ok(());
    }
    Err(crate::cli::UsageError::Config(
        "none of the message files given appears in the delivery log, so --resume would send \
         everything again; give the message files of the run that wrote this log. Records \
         without canonical_file, from an earlier ec, name files relative to the directory \
         that run started in, so run from there"
            .to_owned(),
    ))
}

/// With `--retry-for`, deferred mail must come due again within the run:
/// unless the configuration sets a retry interval, retry after 10 s,
/// doubling up to 1 min, and never wait longer than half the window, so
/// that a short window is not overrun by a whole retry interval.
pub fn retry_defaults(config: &mut Config, window: Duration) {
    const MIN_WAIT: Duration = Duration::from_millis(500);
    let longest = (window / 2).max(MIN_WAIT);
    let retry = &mut config.global.retry;
    if retry.interval.is_none() {
        retry.interval = Some(Duration::from_secs(10).min(longest));
    }
    if retry.max_interval.is_none() {
        retry.max_interval = Some(Duration::from_secs(60).min(longest));
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
        let identity = message.identity().to_owned();
        message
            .submission
            .recipients
            .retain(|recipient| !resume.is_final(&identity, recipient));
    }
    messages.retain(|message| !message.submission.recipients.is_empty());
    invalid.retain(|bad| !resume.is_file_final(bad.identity()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{load_bytes, EnvelopeOverride, Loaded, MessageFile};
    use crate::progress::Visibility;
    use bytes::Bytes;
    use ec_types::{Address, BindingSlot, ConnectionId, MessageId, ReplyCode, TlsInfo};

    const RECIPIENTS: [&str; 2] = ["a@example.com", "b@example.com"];

    fn messages(count: usize) -> Vec<InputMessage> {
        let text = format!(
            "From: s@example.org\nTo: {}\nSubject: x\n\nbody\n",
            RECIPIENTS.join(", ")
        );
        (0..count)
            .map(|tag| {
                let file = MessageFile::in_memory(format!("m{tag}.eml").into());
                let data = Bytes::from(text.clone());
                match load_bytes(tag as u64, file, data, &EnvelopeOverride::default()) {
                    Loaded::Message(message) => message,
                    Loaded::Invalid(invalid) => panic!("{invalid}"),
                }
            })
            .collect()
    }

    #[test]
    fn direct_domains_lack_a_route() {
        let relay = Route::Relay {
            host: "127.0.0.1".to_owned(),
            port: 2525,
        };
        let example = Domain::new("example.com").expect("valid domain");
        let input = messages(2);

        let unrouted = Config::default();
        assert_eq!(direct_domains(&unrouted, &input), vec![example.clone()]);

        let mut global = Config::default();
        global.global.route = Some(relay.clone());
        assert!(direct_domains(&global, &input).is_empty());

        let mut per_domain = Config::default();
        per_domain.domain.entry(example).or_default().route = Some(relay);
        assert!(direct_domains(&per_domain, &input).is_empty());
    }

    fn state(progress: &Progress, messages: Vec<InputMessage>) -> RunState<'_> {
        RunState {
            tracker: Tracker::new(messages),
            totals: RunTotals::default(),
            log: None,
            log_failure: None,
            progress,
            open_connections: 0,
            retry_until: None,
            early_end: None,
            shutting_down: false,
        }
    }

    fn record(tag: u64, recipient: &str, outcome: RecipientOutcome) -> Report {
        let recipient = Address::new(recipient).expect("valid address");
        Report::Recipient(RecipientRecord {
            tag,
            message: MessageId(tag),
            domain: recipient.domain().clone(),
            binding: BindingSlot(0),
            recipient,
            outcome,
            attempts: 1,
            connection: Some(ConnectionId(1)),
            peer: None,
            tls: None,
            at: Instant::now(),
        })
    }

    fn closed(reason: CloseReason, tls: bool, delivered: u32) -> Report {
        Report::ConnectionClosed(ConnectionClosed {
            id: ConnectionId(1),
            binding: BindingSlot(0),
            domain: Domain::new("example.com").expect("valid domain"),
            target: Target::Address("127.0.0.1:2525".parse().expect("address")),
            peer: (reason != CloseReason::ConnectFailed)
                .then(|| "127.0.0.1:2525".parse().expect("address")),
            reason,
            outcome: if reason == CloseReason::ConnectFailed {
                CloseOutcome::NeverConnected
            } else {
                CloseOutcome::Clean
            },
            tls: tls.then(|| TlsInfo {
                version: "TLSv1.3".into(),
                cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
                verified: true,
            }),
            messages_delivered: delivered,
            messages_attempted: delivered,
            duration: Duration::from_millis(5),
            failure: (reason == CloseReason::ConnectFailed).then(|| {
                "cannot connect to 127.0.0.1:2525: Connection refused (os error 111)".to_owned()
            }),
            close_site: std::panic::Location::caller(),
        })
    }

    fn reply(code: u16, text: &str) -> Reply {
        Reply::new(ReplyCode::new(code).expect("valid code"), None, text)
    }

    #[test]
    fn progress_counts_each_message_once() {
        let progress = Progress::new(3, Visibility::Hidden);
        let mut state = state(&progress, messages(3));
        for tag in 0..3 {
            for recipient in RECIPIENTS {
                let outcome = RecipientOutcome::Delivered(reply(250, "ok"));
                state.handle(record(tag, recipient, outcome));
            }
        }
        assert_eq!(state.totals.messages_done, 3);
        assert_eq!(state.totals.messages_delivered, 3);
        assert_eq!(state.totals.delivered, 6);
        assert_eq!(progress.position(), 3);
    }

    #[test]
    fn shutdown_close_keeps_failure_reason() {
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages(1));
        for _ in 0..GIVE_UP_AFTER {
            state.handle(closed(CloseReason::ConnectFailed, false, 0));
        }
        assert!(state.tracker.all_open_domains_failing());
        state.early_end = Some(EarlyEnd::GaveUp);
        state.shutting_down = true;
        state.handle(closed(CloseReason::Shutdown, false, 0));

        let Report::Recipient(unsent) = record(0, RECIPIENTS[0], RecipientOutcome::Unsent) else {
            unreachable!()
        };
        let recorded = state.recorded(&unsent);
        assert_eq!(recorded.result, LogResult::Deferred);
        assert_eq!(recorded.reply, None, "ec made no reply up");
        let detail = recorded.detail.expect("a reason");
        assert!(detail.starts_with("not sent in this run: "), "{detail}");
        assert!(detail.ends_with("run again with --resume"), "{detail}");
        assert!(detail.contains("127.0.0.1:2525"), "{detail}");
        assert!(detail.contains("connect_failed"), "{detail}");
        assert!(
            detail.contains("Connection refused"),
            "the session's own failure is named: {detail}"
        );
    }

    #[test]
    fn tls_failures_get_advice() {
        let streak = |failure: &str| FailureStreak {
            count: GIVE_UP_AFTER,
            reason: CloseReason::TlsFailed,
            target: Target::Address("127.0.0.1:2525".parse().expect("address")),
            failure: Some(failure.to_owned()),
        };
        let unknown = streak("TLS handshake failed: invalid peer certificate: UnknownIssuer");
        let text = unknown.describe();
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(
            text.ends_with("pass --ca-file FILE with the PEM certificate of the CA that signed it"),
            "{text}"
        );

        let wrong_name = streak(
            "TLS handshake failed: invalid peer certificate: certificate not valid for name \
             \"wrong.example\"; certificate is only valid for DnsName(\"localhost\")",
        );
        let text = wrong_name.describe();
        assert!(text.contains("--tls-server-name NAME"), "{text}");

        let clear_text =
            streak("TLS handshake failed: received corrupt message of type InvalidContentType");
        let text = clear_text.describe();
        assert!(text.contains("does not expect implicit TLS"), "{text}");

        let other = streak("TLS handshake failed: received fatal alert: HandshakeFailure");
        let text = other.describe();
        assert!(
            !text.contains("pass --"),
            "no advice for other failures: {text}"
        );
    }

    #[test]
    fn partly_delivered_message_not_counted_delivered() {
        let progress = Progress::new(2, Visibility::Hidden);
        let mut state = state(&progress, messages(2));
        for (tag, second) in [(0, 250), (1, 550)] {
            let first = RecipientOutcome::Delivered(reply(250, "ok"));
            state.handle(record(tag, RECIPIENTS[0], first));
            let outcome = match second {
                250 => RecipientOutcome::Delivered(reply(250, "ok")),
                _ => RecipientOutcome::Failed(reply(550, "no such user")),
            };
            state.handle(record(tag, RECIPIENTS[1], outcome));
        }
        assert_eq!(state.totals.messages_done, 2);
        assert_eq!(
            state.totals.messages_delivered, 1,
            "only message 0 reached both"
        );
    }

    #[test]
    fn attempted_connection_ends_streak() {
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages(1));
        for _ in 0..GIVE_UP_AFTER - 1 {
            state.handle(closed(CloseReason::PeerClosed, false, 0));
        }
        let Report::ConnectionClosed(mut lost_dot) = closed(CloseReason::PeerClosed, false, 0)
        else {
            unreachable!()
        };
        lost_dot.messages_attempted = 1;
        state.handle(Report::ConnectionClosed(lost_dot));
        assert!(!state.tracker.all_open_domains_failing());
        assert!(state.tracker.failing.is_empty());
    }

    #[test]
    fn unsent_keeps_last_reply() {
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages(1));
        state.retry_until = Some(Instant::now() + Duration::from_secs(3600));
        let deferred = RecipientOutcome::Deferred {
            reply: Some(reply(451, "try later")),
            next_attempt: Instant::now(),
        };
        state.handle(record(0, RECIPIENTS[0], deferred));
        assert_eq!(state.totals.recipients(), 0, "not final within the window");

        state.early_end = Some(EarlyEnd::Stopped);
        state.shutting_down = true;
        for recipient in RECIPIENTS {
            state.handle(record(0, recipient, RecipientOutcome::Unsent));
        }
        assert_eq!(state.totals.deferred, 2);
        let Report::Recipient(first) = record(0, RECIPIENTS[0], RecipientOutcome::Unsent) else {
            unreachable!()
        };
        let recorded = state.recorded(&first);
        assert_eq!(recorded.result, LogResult::Deferred);
        assert_eq!(recorded.reply, Some(reply(451, "try later")));
        assert!(recorded.detail.expect("a reason").contains("stopped"));
    }

    #[test]
    fn ec_replies_go_to_detail() {
        let progress = Progress::new(1, Visibility::Hidden);
        let state = state(&progress, messages(1));
        let expired = Reply::made_locally(
            ReplyCode::TRANSACTION_FAILED,
            "5.4.7".parse().ok(),
            "delivery time expired: queued 2s ago, past the retry policy's maximum age \
             (reply made by ec)",
        );
        let Report::Recipient(failed) = record(0, RECIPIENTS[0], RecipientOutcome::Failed(expired))
        else {
            unreachable!()
        };
        let recorded = state.recorded(&failed);
        assert_eq!(recorded.result, LogResult::Failed);
        assert_eq!(
            recorded.reply, None,
            "the engine's own reply is not the server's"
        );
        let detail = recorded.detail.expect("an explanation");
        assert!(
            detail.starts_with("delivery time expired: queued 2s ago"),
            "{detail}"
        );
        assert!(detail.ends_with("(status 5.4.7, set by ec)"), "{detail}");

        // A message the session could not start: ec's reason, not a reply.
        let not_sent = Reply::made_locally(
            ReplyCode::TRANSACTION_FAILED,
            "5.6.3".parse().ok(),
            "not sent: line 5 of the message is 1500 octets long",
        );
        let Report::Recipient(failed) =
            record(0, RECIPIENTS[0], RecipientOutcome::Failed(not_sent))
        else {
            unreachable!()
        };
        let recorded = state.recorded(&failed);
        assert_eq!(recorded.reply, None);
        assert_eq!(
            recorded.detail.as_deref(),
            Some("not sent: line 5 of the message is 1500 octets long (status 5.6.3, set by ec)")
        );

        // The flag decides, not the text: a server may write anything.
        let from_server = reply(550, "no such user (reply made by ec)");
        let Report::Recipient(failed) = record(
            0,
            RECIPIENTS[0],
            RecipientOutcome::Failed(from_server.clone()),
        ) else {
            unreachable!()
        };
        assert_eq!(state.recorded(&failed).reply, Some(from_server));

        let lost = RecipientOutcome::Deferred {
            reply: None,
            next_attempt: Instant::now(),
        };
        let Report::Recipient(lost) = record(0, RECIPIENTS[0], lost) else {
            unreachable!()
        };
        let recorded = state.recorded(&lost);
        assert_eq!(recorded.result, LogResult::Deferred);
        assert_eq!(recorded.reply, None, "no server reply came");
        assert_eq!(recorded.detail.as_deref(), Some(CONNECTION_LOST_DETAIL));

        let rejected = RecipientOutcome::Failed(reply(550, "no such user"));
        let Report::Recipient(rejected) = record(0, RECIPIENTS[0], rejected) else {
            unreachable!()
        };
        let recorded = state.recorded(&rejected);
        assert_eq!(recorded.reply, Some(reply(550, "no such user")));
        assert_eq!(recorded.detail, None);
    }

    #[test]
    fn unused_connections_counted_apart() {
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages(1));
        state.handle(closed(CloseReason::IdleTimeout, true, 5));
        state.handle(closed(CloseReason::Shutdown, false, 0));
        state.handle(closed(CloseReason::ConnectFailed, false, 0));
        let totals = &state.totals;
        assert_eq!(
            (
                totals.connections_established,
                totals.connections_tls,
                totals.connections_unused
            ),
            (2, 1, 1)
        );
        assert_eq!(totals.tls_percent(), Some(100.0));
    }

    #[test]
    fn retry_waits_fit_the_window() {
        let mut config = Config::default();
        retry_defaults(&mut config, Duration::from_secs(3));
        let retry = &config.global.retry;
        assert_eq!(retry.interval, Some(Duration::from_millis(1500)));
        assert_eq!(retry.max_interval, Some(Duration::from_millis(1500)));

        let mut config = Config::default();
        retry_defaults(&mut config, Duration::from_secs(3600));
        let retry = &config.global.retry;
        assert_eq!(retry.interval, Some(Duration::from_secs(10)));
        assert_eq!(retry.max_interval, Some(Duration::from_secs(60)));

        let mut config = Config::default();
        config.global.retry.interval = Some(Duration::from_secs(30));
        retry_defaults(&mut config, Duration::from_secs(3));
        assert_eq!(
            config.global.retry.interval,
            Some(Duration::from_secs(30)),
            "a configured interval stays"
        );
    }

    /// Lists and loads the message files named by `args`, as `ec deliver`
    /// does before a run.
    fn load_input(args: &[PathBuf]) -> (Vec<InputMessage>, Vec<InvalidInput>) {
        let input = crate::input::Input::open(args, EnvelopeOverride::default()).expect("input");
        let (mut messages, mut invalid) = (Vec::new(), Vec::new());
        for loaded in input {
            match loaded {
                Loaded::Message(message) => messages.push(message),
                Loaded::Invalid(bad) => invalid.push(bad),
            }
        }
        (messages, invalid)
    }

    fn message_text(subject: &str) -> String {
        format!(
            "From: s@example.org\nTo: {}\nSubject: {subject}\n\nbody\n",
            RECIPIENTS.join(", ")
        )
    }

    fn read_records(log: &Path) -> Vec<LogRecord> {
        std::fs::read_to_string(log)
            .expect("log read")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a log record"))
            .collect()
    }

    #[test]
    fn records_keep_identity_of_moved_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).expect("spool created");
        let (good, empty) = (spool.join("a.eml"), spool.join("b.eml"));
        std::fs::write(&good, message_text("a")).expect("message written");
        std::fs::write(&empty, "").expect("empty file written");
        let good_canonical = std::fs::canonicalize(&good).expect("canonicalize");
        let empty_canonical = std::fs::canonicalize(&empty).expect("canonicalize");
        let (messages, invalid) = load_input(std::slice::from_ref(&spool));
        assert_eq!((messages.len(), invalid.len()), (1, 1));

        // An operator cleans the spool after ec has read it and before any
        // outcome is recorded.
        std::fs::rename(&good, dir.path().join("a.eml.done")).expect("file moved");
        std::fs::remove_file(&empty).expect("file deleted");

        let log = dir.path().join("log.jsonl");
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages);
        state.log = Some(DeliveryLogWriter::open(&log).expect("log opened"));
        state.write_log(LogRecord::from_invalid_input(&invalid[0]));
        let delivered = RecipientOutcome::Delivered(reply(250, "ok"));
        state.handle(record(0, RECIPIENTS[0], delivered));
        state.record_open_as_unsent("the test ended the run");

        let records = read_records(&log);
        let canonical: Vec<(LogResult, Option<&str>)> = records
            .iter()
            .map(|record| (record.result, record.canonical_file.as_deref()))
            .collect();
        let (good_text, empty_text) = (
            good_canonical.to_str().expect("UTF-8 path"),
            empty_canonical.to_str().expect("UTF-8 path"),
        );
        assert_eq!(
            canonical,
            [
                (LogResult::InvalidInput, Some(empty_text)),
                (LogResult::Delivered, Some(good_text)),
                (LogResult::Deferred, Some(good_text)),
            ]
        );
        for record in &records[1..] {
            assert_eq!(record.file, good.to_str().expect("UTF-8 path"));
        }
    }

    #[test]
    fn resume_skips_file_after_link_moved() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (first, second) = (dir.path().join("batch1"), dir.path().join("batch2"));
        for (batch, subject) in [(&first, "first"), (&second, "second")] {
            std::fs::create_dir(batch).expect("batch created");
            std::fs::write(batch.join("a.eml"), message_text(subject)).expect("message written");
        }
        let current = dir.path().join("current");
        std::os::unix::fs::symlink(&first, &current).expect("link created");
        let (messages, _) = load_input(std::slice::from_ref(&current));

        // The spool link moves on to the next batch while the run sends
        // the first one.
        std::fs::remove_file(&current).expect("link removed");
        std::os::unix::fs::symlink(&second, &current).expect("link moved");

        let log = dir.path().join("log.jsonl");
        let progress = Progress::new(1, Visibility::Hidden);
        let mut state = state(&progress, messages);
        state.log = Some(DeliveryLogWriter::open(&log).expect("log opened"));
        for recipient in RECIPIENTS {
            let delivered = RecipientOutcome::Delivered(reply(250, "ok"));
            state.handle(record(0, recipient, delivered));
        }
        drop(state);
        let resume = delivery_log::read_resume_set(&log).expect("log read");

        let (mut sent, mut invalid) = load_input(std::slice::from_ref(&first));
        check_resume_matches(&resume, &sent, &invalid).expect("batch1 is in the log");
        skip_final(&mut sent, &mut invalid, &resume);
        assert!(sent.is_empty(), "batch1/a.eml is sent again: {sent:?}");

        let (mut next, mut invalid) = load_input(std::slice::from_ref(&current));
        skip_final(&mut next, &mut invalid, &resume);
        assert_eq!(next.len(), 1, "batch2/a.eml was never sent");
        assert_eq!(next[0].submission.recipients.len(), RECIPIENTS.len());
    }

    #[test]
    fn resume_refuses_unmatched_paths() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("log.jsonl");
        let line = r#"{"timestamp":"2026-01-01T00:00:00.000Z","file":"m0.eml","message_id":null,"sender":"s@example.org","recipient":"a@example.com","result":"delivered","reply":null,"detail":null,"attempts":1,"connection":"c1","tls":null}"#;
        std::fs::write(&log, format!("{line}\n")).expect("log written");
        let resume = delivery_log::read_resume_set(&log).expect("log read");

        let same = messages(2);
        assert!(check_resume_matches(&resume, &same, &[]).is_ok());

        let mut elsewhere = messages(2);
        for message in &mut elsewhere {
            message.path = dir.path().join("..").join(&message.path);
        }
        let error = check_resume_matches(&resume, &elsewhere, &[]).expect_err("no path matches");
        assert!(
            error.to_string().contains("the message files of the run"),
            "{error}"
        );
    }
}
