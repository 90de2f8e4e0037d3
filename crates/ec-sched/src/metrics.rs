//! The scheduler's side of `ec-metrics`: the `binding` and `domain` label
//! registries it owns, and one function per scheduler event that makes the
//! recording calls for it.
//!
//! Labels are resolved once: a binding's when it is registered, a binding ×
//! domain's when its queues are created. The series of each label pair are
//! registered then too ([`DomainSeries`]), so the recordings per connection
//! and per message are atomic operations on those series, with no key to
//! build or look up.
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
//! - queue sizes and connections by state: [`GaugeState::publish`], once
//!   per turn of the loop, from the ledger's running totals;
//! - duplicate closes, audit failures and timer lag: where the ledger
//!   counts them.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use ec_metrics::{
    BindingLabel, BindingLabels, ConnectResult, DomainLabel, DomainLabels, DomainSeries,
    EngineGauges, QueueKind, RecipientResult,
};
use ec_types::{
    CloseOutcome, CloseReason, CloseReport, Config, ConnectionState, Domain, MessageFate,
    SessionError, Stage,
};

use crate::ledger::Ledger;

/// The label registries, and the series of each label pair in use, owned
/// by the scheduler thread.
#[derive(Debug)]
pub(crate) struct MetricLabels {
    bindings: BindingLabels,
    domains: DomainLabels,
    /// One entry per `binding` and `domain` label pair, so all the domains
    /// counted under `other` share one set of series.
    series: HashMap<(BindingLabel, DomainLabel), DomainSeries>,
}

impl MetricLabels {
    /// Creates registries for the bindings and domains that `config`
    /// names, which admit at most `domain_limit` other domains.
    pub(crate) fn new(config: &Config, domain_limit: usize) -> Self {
        Self {
            bindings: BindingLabels::from_config(config),
            domains: DomainLabels::new(config.configured_domains().cloned(), domain_limit),
            series: HashMap::new(),
        }
    }

    /// Returns the label of a binding being registered.
    pub(crate) fn binding(&mut self, name: &str) -> BindingLabel {
        self.bindings.register(name)
    }

    /// Returns the series of a new binding × domain. The domain is admitted
    /// to the `domain` label values here, so domains are admitted in the
    /// order their first message was queued.
    pub(crate) fn lane(&mut self, binding: &BindingLabel, domain: &Domain) -> LaneMetrics {
        let domain = self.domains.label(domain);
        let series = self
            .series
            .entry((binding.clone(), domain))
            .or_insert_with_key(|(binding, domain)| DomainSeries::new(binding, domain))
            .clone();
        LaneMetrics { series }
    }
}

/// The metric series of one binding × domain, registered once for its
/// label pair.
#[derive(Debug, Clone)]
pub(crate) struct LaneMetrics {
    series: DomainSeries,
}

impl LaneMetrics {
    /// Returns the `binding` label.
    pub(crate) fn binding(&self) -> &BindingLabel {
        self.series.binding()
    }

    /// Records that a connection's connect started.
    pub(crate) fn connection_opened(&self) {
        self.series.connection_opened();
    }

    /// Records that a connection's socket is gone (or its close deadline
    /// passed).
    pub(crate) fn connection_closed(
        &self,
        reason: CloseReason,
        outcome: CloseOutcome,
        duration: Duration,
    ) {
        self.series.connection_closed(reason, outcome, duration);
    }

    /// Records that a connection's TCP connect completed.
    pub(crate) fn connected(&self) {
        self.series.connect_result(ConnectResult::Success);
    }

    /// Records a session failure that is a failed connect or a timeout.
    pub(crate) fn session_failed(&self, error: &SessionError) {
        if let Some(result) = ConnectResult::from_session_error(error) {
            self.series.connect_result(result);
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
        self.series.message_fate(fate);
    }

    /// Records that `count` recipients of one message got `result`.
    /// Records nothing for zero.
    pub(crate) fn recipients(&self, result: RecipientResult, count: usize) {
        if count > 0 {
            self.series.recipients(result, count as u64);
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

/// The states of `ec_connections_in_state`, in the order of
/// [`Counts::states`].
const STATES: [ConnectionState; 4] = [
    ConnectionState::Connecting,
    ConnectionState::Idle,
    ConnectionState::Busy,
    ConnectionState::Closing,
];

/// The gauges that mirror the ledger, and the values last published, so
/// that a turn of the loop sets only the gauges whose value changed.
#[derive(Debug, Default)]
pub(crate) struct GaugeState {
    /// Registered on the first publication rather than with the scheduler,
    /// so they belong to the recorder in effect when the loop first runs.
    gauges: Option<EngineGauges>,
    last: Option<Counts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    active: u64,
    delayed: u64,
    states: [u32; 4],
}

impl Counts {
    fn of(ledger: &Ledger) -> Self {
        Self {
            active: ledger.active,
            delayed: ledger.delayed,
            states: [ledger.connecting, ledger.idle, ledger.busy, ledger.closing],
        }
    }
}

impl GaugeState {
    /// Sets the queue-size and connections-by-state gauges from the
    /// ledger: every gauge the first time, then only those that changed.
    /// O(1): the ledger keeps running totals.
    pub(crate) fn publish(&mut self, ledger: &Ledger) {
        let now = Counts::of(ledger);
        let before = self.last.replace(now);
        if before == Some(now) {
            return;
        }
        let gauges = self.gauges.get_or_insert_with(EngineGauges::new);

        if before.map(|b| b.active) != Some(now.active) {
            gauges.queue_size(QueueKind::Active, now.active);
        }
        if before.map(|b| b.delayed) != Some(now.delayed) {
            gauges.queue_size(QueueKind::Delayed, now.delayed);
        }
        for (index, state) in STATES.into_iter().enumerate() {
            let count = now.states[index];
            if before.map(|b| b.states[index]) != Some(count) {
                gauges.connections_in_state(state, u64::from(count));
            }
        }
    }
}
