//! The scheduler's side of `ec-metrics`: the `binding` and `domain` label
//! registries it owns, and one function per scheduler event that makes the
//! recording calls for it.
//!
//! Labels are resolved once: a binding's when it is registered, a binding ×
//! domain's when its queues are created. Every call takes those handles,
//! so recording never allocates a label string.
//!
//! Where each metric is recorded:
//!
//! - connections opened, closed (with reason, outcome and duration) and
//!   live: where the scheduler opens a connection and where it releases
//!   one, the one place each of its counts goes up and down, so opened −
//!   closed equals the live gauge;
//! - connect results and timeouts: the `Connected` and `Failed` session
//!   events; close_notify and QUIT timeouts: the `Closed` event's
//!   [`CloseReport`];
//! - message fates and recipient results: the fate functions, next to the
//!   ledger totals they mirror;
//! - queue sizes and connections by state: [`publish_gauges`], once per
//!   turn of the loop, from the ledger's running totals;
//! - duplicate closes, audit failures and timer lag: where the ledger
//!   counts them.

use std::io;
use std::time::Duration;

use ec_metrics::{
    BindingLabel, BindingLabels, ConnectResult, DomainLabel, DomainLabels, RecipientResult,
};
use ec_types::{
    CloseOutcome, CloseReason, CloseReport, Config, ConnectionState, Domain, MessageFate,
    SessionError, Stage,
};

use crate::ledger::Ledger;

/// The label registries, owned by the scheduler thread.
#[derive(Debug)]
pub(crate) struct MetricLabels {
    bindings: BindingLabels,
    domains: DomainLabels,
}

impl MetricLabels {
    /// Registries for the bindings and domains that `config` names, which
    /// admit at most `domain_limit` other domains.
    pub(crate) fn new(config: &Config, domain_limit: usize) -> Self {
        Self {
            bindings: BindingLabels::from_config(config),
            domains: DomainLabels::new(config.configured_domains().cloned(), domain_limit),
        }
    }

    /// Returns the label of a binding being registered.
    pub(crate) fn binding(&mut self, name: &str) -> BindingLabel {
        self.bindings.register(name)
    }

    /// Returns the labels of a new binding × domain. The domain is admitted
    /// to the `domain` label values here, so domains are admitted in the
    /// order their first message was queued.
    pub(crate) fn lane(&mut self, binding: &BindingLabel, domain: &Domain) -> LaneLabels {
        LaneLabels {
            binding: binding.clone(),
            domain: self.domains.label(domain),
        }
    }
}

/// The `binding` and `domain` label values of one binding × domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaneLabels {
    pub(crate) binding: BindingLabel,
    pub(crate) domain: DomainLabel,
}

impl LaneLabels {
    /// Records that a connection's connect started.
    pub(crate) fn connection_opened(&self) {
        ec_metrics::connection_opened(&self.binding, &self.domain);
    }

    /// Records that a connection's socket is gone (or its close deadline
    /// passed).
    pub(crate) fn connection_closed(
        &self,
        reason: CloseReason,
        outcome: CloseOutcome,
        duration: Duration,
    ) {
        ec_metrics::connection_closed(&self.binding, &self.domain, reason, outcome, duration);
    }

    /// Records that a connection's TCP connect completed.
    pub(crate) fn connected(&self) {
        ec_metrics::connect_result(&self.binding, &self.domain, ConnectResult::Success);
    }

    /// Records a session failure that is a failed connect or a timeout.
    pub(crate) fn session_failed(&self, error: &SessionError) {
        if let Some(result) = ConnectResult::from_session_error(error) {
            ec_metrics::connect_result(&self.binding, &self.domain, result);
        }
        match error {
            SessionError::Timeout { stage, .. } => ec_metrics::timeout(*stage),
            SessionError::Connect {
                kind: io::ErrorKind::TimedOut,
                ..
            } => ec_metrics::timeout(Stage::NotConnected),
            _ => {}
        }
    }

    /// Records the fate a message got.
    pub(crate) fn message_fate(&self, fate: MessageFate) {
        ec_metrics::message_fate(&self.binding, &self.domain, fate);
    }

    /// Records that `count` recipients of one message got `result`.
    /// Records nothing for zero.
    pub(crate) fn recipients(&self, result: RecipientResult, count: usize) {
        if count > 0 {
            ec_metrics::recipients(&self.binding, &self.domain, result, count as u64);
        }
    }
}

/// Records what a session reported about its transport shutdown.
pub(crate) fn close_report(report: &CloseReport) {
    if report.close_notify_sent {
        ec_metrics::close_notify_sent();
    }
    if report.close_notify_received {
        ec_metrics::close_notify_received();
    }
    if report.outcome == CloseOutcome::QuitTimedOut {
        ec_metrics::timeout(Stage::Quit);
    }
}

/// The gauge values last published, so a turn of the loop sets only the
/// gauges whose value changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gauges {
    active: u64,
    delayed: u64,
    states: [u32; 4],
}

/// The states of `ec_connections_in_state`, in the order of
/// [`Gauges::states`].
const STATES: [ConnectionState; 4] = [
    ConnectionState::Connecting,
    ConnectionState::Idle,
    ConnectionState::Busy,
    ConnectionState::Closing,
];

impl Gauges {
    fn of(ledger: &Ledger) -> Self {
        Self {
            active: ledger.active,
            delayed: ledger.delayed,
            states: [ledger.connecting, ledger.idle, ledger.busy, ledger.closing],
        }
    }
}

/// Sets the queue-size and connections-by-state gauges from the ledger:
/// every gauge the first time, then only those that differ from `last`.
/// O(1): the ledger keeps running totals.
pub(crate) fn publish_gauges(ledger: &Ledger, last: &mut Option<Gauges>) {
    let now = Gauges::of(ledger);
    let before = last.replace(now);
    if before == Some(now) {
        return;
    }
    let changed = |old: Option<u64>, new: u64| old != Some(new);
    if changed(before.map(|b| b.active), now.active)
        || changed(before.map(|b| b.delayed), now.delayed)
    {
        ec_metrics::queue_sizes(now.active, now.delayed);
    }
    for (index, state) in STATES.into_iter().enumerate() {
        let count = now.states[index];
        if before.map(|b| b.states[index]) != Some(count) {
            ec_metrics::connections_in_state(state, u64::from(count));
        }
    }
}
