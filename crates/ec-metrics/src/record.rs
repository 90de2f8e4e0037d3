//! The recording functions: one per event that `ec` counts. Other crates
//! call these and never spell a metric name.
//!
//! Each function records into the recorder in effect: the one installed by
//! [`Exporter::install`](crate::Exporter::install), a
//! [`LocalRecorder`](crate::LocalRecorder) inside its scope, or, when none
//! is installed, the `metrics` crate's no-op recorder.
//!
//! Enum labels are `&'static str` values and binding and domain labels are
//! interned, so a call allocates no label string. It does allocate the
//! small vector of labels that a `metrics` key owns (also under the no-op
//! recorder) and looks the series up in the recorder's sharded map. The
//! crate README gives the measured cost: about 60 to 140 ns per call.

use std::time::Duration;

use ec_types::{
    CloseOutcome, CloseReason, ConnectionState, MessageFate, ReplyClass, Stage, TlsPolicy,
};
use metrics::{counter, gauge, histogram, Counter, Label};

use crate::catalog;
use crate::labels::{BindingLabel, DomainLabel};
use crate::values::{
    reply_class_str, tls_policy_str, ConnectResult, QueueKind, RecipientResult, TlsHandshakeResult,
};

fn pair(binding: &BindingLabel, domain: &DomainLabel) -> Vec<Label> {
    vec![binding.to_label(), domain.to_label()]
}

/// Records that a connection was opened: its connect has started.
///
/// Raises `ec_connections_live` by one. Every call must be matched by
/// exactly one [`connection_closed`] with the same labels when the socket is
/// gone, which keeps opened − closed equal to the live gauge.
pub fn connection_opened(binding: &BindingLabel, domain: &DomainLabel) {
    let labels = pair(binding, domain);
    counter!(catalog::CONNECTIONS_OPENED.name, labels.clone()).increment(1);
    gauge!(catalog::CONNECTIONS_LIVE.name, labels).increment(1.0);
}

/// Records that a connection's socket is gone: `reason` is why `closeconn`
/// ran, `outcome` how the transport shutdown ended, and `duration` the time
/// since [`connection_opened`].
///
/// Call it when the socket is gone, not when `closeconn` starts the
/// shutdown, because a closing connection still counts as live.
pub fn connection_closed(
    binding: &BindingLabel,
    domain: &DomainLabel,
    reason: CloseReason,
    outcome: CloseOutcome,
    duration: Duration,
) {
    let labels = pair(binding, domain);
    gauge!(catalog::CONNECTIONS_LIVE.name, labels.clone()).decrement(1.0);
    histogram!(catalog::CONNECTION_DURATION.name, labels).record(duration.as_secs_f64());
    closed_counter(binding, domain, reason, outcome).increment(1);
}

/// Returns the `ec_connections_closed_total` series of one label pair,
/// reason and outcome, from the recorder in effect.
pub(crate) fn closed_counter(
    binding: &BindingLabel,
    domain: &DomainLabel,
    reason: CloseReason,
    outcome: CloseOutcome,
) -> Counter {
    let mut labels = pair(binding, domain);
    labels.push(Label::from_static_parts("reason", reason.as_str()));
    labels.push(Label::from_static_parts("outcome", outcome.as_str()));
    counter!(catalog::CONNECTIONS_CLOSED.name, labels)
}

/// Records how a connection's TCP connect ended.
pub fn connect_result(binding: &BindingLabel, domain: &DomainLabel, result: ConnectResult) {
    let mut labels = pair(binding, domain);
    labels.push(Label::from_static_parts("result", result.as_str()));
    counter!(catalog::CONNECT_ATTEMPTS.name, labels).increment(1);
}

/// Sets how many connections across the engine are in `state`.
pub fn connections_in_state(state: ConnectionState, count: u64) {
    gauge!(catalog::CONNECTIONS_IN_STATE.name, "state" => state.as_str()).set(count as f64);
}

/// Records a TLS handshake after STARTTLS under `policy`.
pub fn tls_handshake(policy: TlsPolicy, result: TlsHandshakeResult) {
    counter!(
        catalog::TLS_HANDSHAKES.name,
        "policy" => tls_policy_str(policy),
        "result" => result.result_str(),
        "version" => result.version_str()
    )
    .increment(1);
}

/// Records that we sent a TLS close_notify alert.
pub fn close_notify_sent() {
    counter!(catalog::TLS_CLOSE_NOTIFY_SENT.name).increment(1);
}

/// Records that a server sent a TLS close_notify alert.
pub fn close_notify_received() {
    counter!(catalog::TLS_CLOSE_NOTIFY_RECEIVED.name).increment(1);
}

/// Records a reply received at stage `command`, the command it replies
/// to. The greeting is [`Stage::Banner`] and the reply to the final dot is
/// [`Stage::Body`].
pub fn reply(command: Stage, class: ReplyClass) {
    counter!(
        catalog::SMTP_REPLIES.name,
        "command" => command.as_str(),
        "class" => reply_class_str(class)
    )
    .increment(1);
}

/// Records that a step at `stage` ran past its deadline.
pub fn timeout(stage: Stage) {
    counter!(catalog::SMTP_TIMEOUTS.name, "stage" => stage.as_str()).increment(1);
}

/// Records the fate one message was given when its transaction or
/// connection ended.
pub fn message_fate(binding: &BindingLabel, domain: &DomainLabel, fate: MessageFate) {
    let mut labels = pair(binding, domain);
    labels.push(Label::from_static_parts("fate", fate.as_str()));
    counter!(catalog::MESSAGE_FATES_TOTAL.name, labels).increment(1);
}

/// Records `count` recipients with the same result.
pub fn recipients(
    binding: &BindingLabel,
    domain: &DomainLabel,
    result: RecipientResult,
    count: u64,
) {
    let mut labels = pair(binding, domain);
    labels.push(Label::from_static_parts("result", result.as_str()));
    counter!(catalog::RECIPIENTS.name, labels).increment(count);
}

/// Records `bytes` written to an SMTP connection of `binding`, counted
/// before TLS encryption.
pub fn bytes_sent(binding: &BindingLabel, bytes: u64) {
    counter!(catalog::SENT_BYTES.name, vec![binding.to_label()]).increment(bytes);
}

/// Sets the number of messages in the active and the delayed queues.
pub fn queue_sizes(active: u64, delayed: u64) {
    gauge!(catalog::QUEUE_MESSAGES.name, "queue" => QueueKind::Active.as_str()).set(active as f64);
    gauge!(catalog::QUEUE_MESSAGES.name, "queue" => QueueKind::Delayed.as_str())
        .set(delayed as f64);
}

/// Records a `closeconn` call for a connection that was already closed.
pub fn duplicate_closeconn() {
    counter!(catalog::CLOSECONN_DUPLICATES.name).increment(1);
}

/// Records an accounting audit that found a broken invariant.
pub fn audit_failure() {
    counter!(catalog::AUDIT_FAILURES.name).increment(1);
}

/// Records how late the scheduler loop handled a due timer or a waiting
/// event.
pub fn scheduler_loop_lag(lag: Duration) {
    histogram!(catalog::SCHEDULER_LOOP_LAG.name).record(lag.as_secs_f64());
}
