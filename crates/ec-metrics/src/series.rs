//! Series handles registered once, for callers that record the same series
//! many times: the scheduler records per connection and per message.
//!
//! A recording function such as [`message_fate`](crate::message_fate)
//! builds its series key and looks the series up in the recorder on every
//! call (about 130 ns with the Prometheus recorder). The handles here do
//! that once, when they are made, and a recording is then an atomic
//! operation on the series.
//!
//! A handle belongs to the recorder in effect when it was made: the
//! installed one, the [`LocalRecorder`](crate::LocalRecorder) whose scope
//! made it, or, before any is installed, the no-op recorder, to which it
//! stays bound. So install the exporter before making handles (before
//! starting the engine).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ec_types::{CloseOutcome, CloseReason, ConnectionState, MessageFate};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};

use crate::catalog;
use crate::labels::{BindingLabel, DomainLabel};
use crate::values::{ConnectResult, QueueKind, RecipientResult, CONNECTION_STATES, MESSAGE_FATES};

/// The series of one `binding` and `domain` label pair: connections
/// opened, live and their durations, connect results, message fates and
/// recipient results. Cloning it is a reference-count increment.
///
/// Making one registers every series of the pair, so each appears in the
/// exposition with the value 0 until it counts something. Make one per
/// label pair and share it: every domain counted under `other` shares the
/// same label pair.
#[derive(Clone)]
pub struct DomainSeries {
    inner: Arc<Series>,
}

struct Series {
    binding: BindingLabel,
    domain: DomainLabel,
    opened: Counter,
    live: Gauge,
    duration: Histogram,
    closed: ClosedCounters,
    connect_results: [Counter; ConnectResult::ALL.len()],
    fates: [Counter; MESSAGE_FATES.len()],
    recipients: [Counter; RecipientResult::ALL.len()],
}

/// The `ec_connections_closed_total` counters of one label pair: one per
/// close reason and outcome, each registered on its first use. Registering
/// all 120 up front would put 120 series per label pair in the exposition,
/// most of which never count anything.
struct ClosedCounters {
    /// Indexed like [`CloseReason::ALL`], then [`CloseOutcome::ALL`].
    by_reason: [OnceLock<Box<ClosedByOutcome>>; CloseReason::ALL.len()],
}

type ClosedByOutcome = [OnceLock<Counter>; CloseOutcome::ALL.len()];

impl ClosedCounters {
    fn new() -> Self {
        Self {
            by_reason: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Returns the counter of `reason` and `outcome`, registering it with
    /// the recorder in effect on its first use, or `None` for a reason or
    /// outcome that `ALL` does not list.
    fn get(
        &self,
        binding: &BindingLabel,
        domain: &DomainLabel,
        reason: CloseReason,
        outcome: CloseOutcome,
    ) -> Option<&Counter> {
        let reason_index = CloseReason::ALL.iter().position(|known| *known == reason)?;
        let outcome_index = CloseOutcome::ALL
            .iter()
            .position(|known| *known == outcome)?;
        let by_outcome = self.by_reason[reason_index]
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let counter = by_outcome[outcome_index]
            .get_or_init(|| crate::record::closed_counter(binding, domain, reason, outcome));
        Some(counter)
    }
}

impl DomainSeries {
    /// Registers the series of `binding` and `domain` with the recorder in
    /// effect.
    pub fn new(binding: &BindingLabel, domain: &DomainLabel) -> Self {
        let pair = || vec![binding.to_label(), domain.to_label()];
        let with = |name: &'static str, value: &'static str| {
            let mut labels = pair();
            labels.push(Label::from_static_parts(name, value));
            labels
        };
        let series = Series {
            binding: binding.clone(),
            domain: domain.clone(),
            opened: counter!(catalog::CONNECTIONS_OPENED.name, pair()),
            live: gauge!(catalog::CONNECTIONS_LIVE.name, pair()),
            duration: histogram!(catalog::CONNECTION_DURATION.name, pair()),
            closed: ClosedCounters::new(),
            connect_results: std::array::from_fn(|index| {
                let result = ConnectResult::ALL[index].as_str();
                counter!(catalog::CONNECT_ATTEMPTS.name, with("result", result))
            }),
            fates: std::array::from_fn(|index| {
                let fate = MESSAGE_FATES[index].as_str();
                counter!(catalog::MESSAGE_FATES_TOTAL.name, with("fate", fate))
            }),
            recipients: std::array::from_fn(|index| {
                let result = RecipientResult::ALL[index].as_str();
                counter!(catalog::RECIPIENTS.name, with("result", result))
            }),
        };
        Self {
            inner: Arc::new(series),
        }
    }

    /// Returns the `binding` label of these series.
    pub fn binding(&self) -> &BindingLabel {
        &self.inner.binding
    }

    /// Returns the `domain` label of these series.
    pub fn domain(&self) -> &DomainLabel {
        &self.inner.domain
    }

    /// Records that a connection's connect started, as
    /// [`connection_opened`](crate::connection_opened) does.
    pub fn connection_opened(&self) {
        self.inner.opened.increment(1);
        self.inner.live.increment(1.0);
    }

    /// Records that a connection's socket is gone, as
    /// [`connection_closed`](crate::connection_closed) does.
    ///
    /// The closed counter has a series per reason and outcome. Each is
    /// registered on the first close with that reason and outcome, with
    /// the recorder in effect then, and kept for the later ones.
    pub fn connection_closed(
        &self,
        reason: CloseReason,
        outcome: CloseOutcome,
        duration: Duration,
    ) {
        let series = &self.inner;
        series.live.decrement(1.0);
        series.duration.record(duration.as_secs_f64());
        match series
            .closed
            .get(&series.binding, &series.domain, reason, outcome)
        {
            Some(counter) => counter.increment(1),
            None => crate::record::closed_counter(&series.binding, &series.domain, reason, outcome)
                .increment(1),
        }
    }

    /// Records how a connection's TCP connect ended.
    pub fn connect_result(&self, result: ConnectResult) {
        match ConnectResult::ALL.iter().position(|known| *known == result) {
            Some(index) => self.inner.connect_results[index].increment(1),
            None => crate::connect_result(&self.inner.binding, &self.inner.domain, result),
        }
    }

    /// Records the fate one message was given.
    pub fn message_fate(&self, fate: MessageFate) {
        match MESSAGE_FATES.iter().position(|known| *known == fate) {
            Some(index) => self.inner.fates[index].increment(1),
            None => crate::message_fate(&self.inner.binding, &self.inner.domain, fate),
        }
    }

    /// Records `count` recipients with the same result.
    pub fn recipients(&self, result: RecipientResult, count: u64) {
        match RecipientResult::ALL
            .iter()
            .position(|known| *known == result)
        {
            Some(index) => self.inner.recipients[index].increment(count),
            None => crate::recipients(&self.inner.binding, &self.inner.domain, result, count),
        }
    }
}

impl fmt::Debug for DomainSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainSeries")
            .field("binding", &self.inner.binding)
            .field("domain", &self.inner.domain)
            .finish_non_exhaustive()
    }
}

/// The engine-wide gauges that mirror scheduler counts: messages per queue
/// and connections per state.
pub struct EngineGauges {
    queues: [Gauge; QueueKind::ALL.len()],
    states: [Gauge; CONNECTION_STATES.len()],
}

impl EngineGauges {
    /// Registers the gauges with the recorder in effect.
    pub fn new() -> Self {
        Self {
            queues: std::array::from_fn(|index| {
                let queue = QueueKind::ALL[index].as_str();
                gauge!(catalog::QUEUE_MESSAGES.name, "queue" => queue)
            }),
            states: std::array::from_fn(|index| {
                let state = CONNECTION_STATES[index].as_str();
                gauge!(catalog::CONNECTIONS_IN_STATE.name, "state" => state)
            }),
        }
    }

    /// Sets the number of messages in `queue`.
    pub fn queue_size(&self, queue: QueueKind, messages: u64) {
        match QueueKind::ALL.iter().position(|known| *known == queue) {
            Some(index) => self.queues[index].set(messages as f64),
            None => {
                gauge!(catalog::QUEUE_MESSAGES.name, "queue" => queue.as_str())
                    .set(messages as f64);
            }
        }
    }

    /// Sets how many connections across the engine are in `state`, as
    /// [`connections_in_state`](crate::connections_in_state) does.
    pub fn connections_in_state(&self, state: ConnectionState, count: u64) {
        match CONNECTION_STATES.iter().position(|known| *known == state) {
            Some(index) => self.states[index].set(count as f64),
            None => crate::connections_in_state(state, count),
        }
    }
}

impl Default for EngineGauges {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EngineGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineGauges").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use ec_types::Domain;

    use super::*;
    use crate::{BindingLabels, DomainLabels, LocalRecorder};

    fn labels() -> (BindingLabel, DomainLabel) {
        let binding = BindingLabels::new(["default"])
            .get("default")
            .expect("configured");
        let domain = DomainLabels::new([], 10).label(&Domain::new("a.example").expect("valid"));
        (binding, domain)
    }

    #[test]
    fn handles_match_functions() {
        let (binding, domain) = labels();
        let by_handle = LocalRecorder::new();
        let by_function = LocalRecorder::new();

        by_handle.scope(|| {
            let series = DomainSeries::new(&binding, &domain);
            series.connection_opened();
            series.connect_result(ConnectResult::Refused);
            series.message_fate(MessageFate::Deferred);
            series.recipients(RecipientResult::Deferred, 3);
            series.connection_closed(
                CloseReason::ConnectFailed,
                CloseOutcome::NeverConnected,
                Duration::from_millis(2),
            );
            let gauges = EngineGauges::new();
            gauges.queue_size(QueueKind::Delayed, 1);
            gauges.connections_in_state(ConnectionState::Idle, 2);
        });
        by_function.scope(|| {
            crate::connection_opened(&binding, &domain);
            crate::connect_result(&binding, &domain, ConnectResult::Refused);
            crate::message_fate(&binding, &domain, MessageFate::Deferred);
            crate::recipients(&binding, &domain, RecipientResult::Deferred, 3);
            crate::connection_closed(
                &binding,
                &domain,
                CloseReason::ConnectFailed,
                CloseOutcome::NeverConnected,
                Duration::from_millis(2),
            );
            crate::queue_sizes(0, 1);
            crate::connections_in_state(ConnectionState::Idle, 2);
        });

        let nonzero = |text: String| -> Vec<String> {
            let mut lines: Vec<String> = text
                .lines()
                .filter(|line| !line.starts_with('#') && !line.ends_with(" 0"))
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(nonzero(by_handle.render()), nonzero(by_function.render()));
    }

    #[test]
    fn closed_counters_kept_per_reason() {
        let (binding, domain) = labels();
        let recorder = LocalRecorder::new();

        recorder.scope(|| {
            let series = DomainSeries::new(&binding, &domain);
            for _ in 0..3 {
                series.connection_opened();
            }
            let second = Duration::from_secs(1);
            series.connection_closed(CloseReason::Requested, CloseOutcome::Clean, second);
            series.connection_closed(CloseReason::Requested, CloseOutcome::Clean, second);
            series.connection_closed(CloseReason::IdleTimeout, CloseOutcome::Reset, second);
        });

        let text = recorder.render();
        let closed = |reason: &str, outcome: &str| {
            format!(
                r#"ec_connections_closed_total{{binding="default",domain="a.example",reason="{reason}",outcome="{outcome}"}}"#
            )
        };
        assert!(
            text.contains(&format!("{} 2", closed("requested", "clean"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", closed("idle_timeout", "reset"))),
            "{text}"
        );
        assert!(!text.contains(&closed("requested", "reset")), "{text}");
        assert!(text.contains(r#"ec_connections_live{binding="default",domain="a.example"} 0"#));
    }

    #[test]
    fn series_registered_at_zero() {
        let (binding, domain) = labels();
        let recorder = LocalRecorder::new();

        recorder.scope(|| {
            let _ = DomainSeries::new(&binding, &domain);
        });

        let text = recorder.render();
        assert!(text.contains(
            r#"ec_message_fates_total{binding="default",domain="a.example",fate="delivered"} 0"#
        ));
        assert!(text.contains(
            r#"ec_connect_attempts_total{binding="default",domain="a.example",result="timeout"} 0"#
        ));
        assert!(text.contains(r#"ec_connections_live{binding="default",domain="a.example"} 0"#));
    }
}
