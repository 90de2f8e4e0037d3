//! Every metric that `ec` exports: name, type, unit, HELP text, labels and
//! histogram buckets. This module is the only place that spells a metric
//! name. The recording functions (such as [`crate::message_fate`]) and the reference page
//! (`docs/metrics.md`) are both derived from it.
//!
//! Names follow the [Prometheus naming conventions]: the `ec_` prefix, base
//! units in the name (`_seconds`, `_bytes`), and `_total` on every counter
//! and on nothing else.
//!
//! [Prometheus naming conventions]: https://prometheus.io/docs/practices/naming/

use ec_types::{CloseOutcome, CloseReason};

use crate::values::{
    reply_class_str, tls_policy_str, ConnectResult, QueueKind, RecipientResult, TlsVersion,
    CONNECTION_STATES, MESSAGE_FATES, REPLY_CLASSES, STAGES, TLS_POLICIES,
};

/// The Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A value that only goes up (and resets to 0 when the process starts).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets, with their sum and count.
    Histogram,
}

impl MetricKind {
    /// Returns the name that the exposition format's `# TYPE` line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The base unit of a metric's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// A plain count (connections, messages, events).
    Count,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// Returns the unit's name as the reference page shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Seconds => "seconds",
            Self::Bytes => "bytes",
        }
    }

    /// Returns the matching `metrics` crate unit, which is passed along
    /// with each description.
    pub fn to_metrics(self) -> metrics::Unit {
        match self {
            Self::Count => metrics::Unit::Count,
            Self::Seconds => metrics::Unit::Seconds,
            Self::Bytes => metrics::Unit::Bytes,
        }
    }
}

/// The set of values a label can take.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LabelValues {
    /// A binding name: one value per configured binding (see
    /// [`BindingLabels`](crate::BindingLabels)).
    Binding,
    /// A destination domain: configured domains, the first N others, and
    /// `other` (see [`DomainLabels`](crate::DomainLabels)).
    Domain,
    /// A fixed list, produced by the function (label values come from enum
    /// `as_str` methods, which are not `const`).
    Fixed(fn() -> Vec<&'static str>),
}

impl LabelValues {
    /// Returns the fixed values, or `None` for binding and domain labels.
    pub fn fixed(self) -> Option<Vec<&'static str>> {
        match self {
            Self::Fixed(values) => Some(values()),
            Self::Binding | Self::Domain => None,
        }
    }
}

/// One label of a metric.
#[derive(Debug, Clone, Copy)]
pub struct LabelDef {
    /// The label name.
    pub name: &'static str,
    /// The values it can take.
    pub values: LabelValues,
}

/// A PromQL query that the reference page shows for a metric.
#[derive(Debug, Clone, Copy)]
pub struct ExampleQuery {
    /// The question the query computes the answer to, as a sentence.
    pub purpose: &'static str,
    /// The query.
    pub promql: &'static str,
}

/// Everything known about one metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The exported name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit of the value (for a histogram, of each observation).
    pub unit: Unit,
    /// The `# HELP` text: one sentence, no trailing period.
    pub help: &'static str,
    /// Labels, in the order the recording function passes them.
    pub labels: &'static [LabelDef],
    /// Histogram bucket upper bounds, strictly increasing; empty for
    /// counters and gauges.
    pub buckets: &'static [f64],
    /// The metric's meaning for an operator: when it moves and what to do.
    pub meaning: &'static str,
    /// Queries worth pasting into Prometheus.
    pub queries: &'static [ExampleQuery],
}

impl MetricDef {
    /// Returns the upper bound of the number of label sets, as a product with `B`
    /// for the number of configured bindings and `D` for the number of
    /// domain label values. A histogram exports each label set as its
    /// buckets plus `+Inf`, `_sum` and `_count`.
    pub fn label_set_bound(&self) -> String {
        let mut factors: Vec<String> = Vec::new();
        let mut fixed = 1;
        for label in self.labels {
            match label.values {
                LabelValues::Binding => factors.push("B".to_owned()),
                LabelValues::Domain => factors.push("D".to_owned()),
                LabelValues::Fixed(values) => fixed *= values().len(),
            }
        }
        if fixed > 1 || factors.is_empty() {
            factors.push(fixed.to_string());
        }
        factors.join(" × ")
    }
}

const BINDING: LabelDef = LabelDef {
    name: "binding",
    values: LabelValues::Binding,
};

const DOMAIN: LabelDef = LabelDef {
    name: "domain",
    values: LabelValues::Domain,
};

/// Connection lifetimes run from a refused connect (under a millisecond on
/// a LAN) to connections kept open for hours by a steady stream of mail.
pub const CONNECTION_DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    14400.0,
];

/// A healthy scheduler loop handles an event within microseconds. Lags of
/// a second or more mean that it is starved or blocked.
pub const LOOP_LAG_BUCKETS: [f64; 18] = [
    0.000_001, 0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// `ec_connections_opened_total`.
pub const CONNECTIONS_OPENED: MetricDef = MetricDef {
    name: "ec_connections_opened_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "Connections started (TCP connect begun), by binding and destination domain",
    labels: &[BINDING, DOMAIN],
    buckets: &[],
    meaning: "Counts every connection when its connect starts, whether or not the connect \
              succeeds. A rate far above the message rate means connections are not reused: \
              a short idle timeout, or servers that close after each message.",
    queries: &[ExampleQuery {
        purpose: "New connections per second, per domain",
        promql: "sum by (domain) (rate(ec_connections_opened_total[5m]))",
    }],
};

/// `ec_connections_closed_total`.
pub const CONNECTIONS_CLOSED: MetricDef = MetricDef {
    name: "ec_connections_closed_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "Connections whose socket is gone, by binding, domain, close reason and shutdown outcome",
    labels: &[
        BINDING,
        DOMAIN,
        LabelDef {
            name: "reason",
            values: LabelValues::Fixed(|| CloseReason::ALL.iter().map(|r| r.as_str()).collect()),
        },
        LabelDef {
            name: "outcome",
            values: LabelValues::Fixed(|| CloseOutcome::ALL.iter().map(|o| o.as_str()).collect()),
        },
    ],
    buckets: &[],
    meaning: "Counts a connection when its socket is gone, after the QUIT, TLS close_notify \
              and TCP shutdown. `reason` says why `closeconn` ran; `outcome` says how the \
              shutdown ended. Closes for `idle_timeout`, `max_deliveries`, `max_age` and \
              `shutdown` are routine; a rise in `timeout`, `peer_closed`, `service_closing` \
              or `tls_failed`, or in the outcomes `reset` and `tls_truncated`, for one \
              domain points at that domain's servers or the path to them.",
    queries: &[ExampleQuery {
        purpose: "Closes that were not routine, per domain and reason",
        promql: "sum by (domain, reason) (rate(ec_connections_closed_total\
                 {reason!~\"idle_timeout|max_deliveries|max_age|shutdown|requested\"}[5m]))",
    }],
};

/// `ec_connections_live`.
pub const CONNECTIONS_LIVE: MetricDef = MetricDef {
    name: "ec_connections_live",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    help: "Connections that are connecting, open or closing, by binding and domain",
    labels: &[BINDING, DOMAIN],
    buckets: &[],
    meaning: "Goes up when a connection is opened and down when its socket is gone, so a \
              closing connection still counts, as the remote server still counts it. Per \
              binding and domain it equals opened minus closed. Compare it with the \
              configured `max_outbound_connections`: a domain that sits at its limit is \
              limited by it.",
    queries: &[
        ExampleQuery {
            purpose: "Live connections per domain",
            promql: "sum by (domain) (ec_connections_live)",
        },
        ExampleQuery {
            purpose: "Accounting check: opened minus closed minus live, 0 for every series \
                      when no connection opens or closes during the scrape",
            promql: "sum by (binding, domain) (ec_connections_opened_total) \
                     - sum by (binding, domain) (ec_connections_closed_total) \
                     - sum by (binding, domain) (ec_connections_live)",
        },
    ],
};

/// `ec_connection_duration_seconds`.
pub const CONNECTION_DURATION: MetricDef = MetricDef {
    name: "ec_connection_duration_seconds",
    kind: MetricKind::Histogram,
    unit: Unit::Seconds,
    help: "Connection lifetime from the start of the connect until the socket is gone, by binding and domain",
    labels: &[BINDING, DOMAIN],
    buckets: &CONNECTION_DURATION_BUCKETS,
    meaning: "Observed once per connection, when `ec_connections_closed_total` counts it. \
              Short lifetimes with many opens mean connections are not reused; lifetimes at \
              the configured maximum age mean connections are retired by age.",
    queries: &[ExampleQuery {
        purpose: "90th percentile connection lifetime per domain",
        promql: "histogram_quantile(0.9, sum by (le, domain) \
                 (rate(ec_connection_duration_seconds_bucket[15m])))",
    }],
};

/// `ec_connect_attempts_total`.
pub const CONNECT_ATTEMPTS: MetricDef = MetricDef {
    name: "ec_connect_attempts_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "TCP connect attempts, by binding, domain and result",
    labels: &[
        BINDING,
        DOMAIN,
        LabelDef {
            name: "result",
            values: LabelValues::Fixed(|| ConnectResult::ALL.iter().map(|r| r.as_str()).collect()),
        },
    ],
    buckets: &[],
    meaning: "One attempt per opened connection whose connect finished. `refused` means \
              nothing listens on the port, `timeout` that packets get no answer (often a \
              firewall or a host that is down), `unreachable` that there is no route.",
    queries: &[ExampleQuery {
        purpose: "Share of connects that fail, per domain",
        promql: "sum by (domain) (rate(ec_connect_attempts_total{result!=\"success\"}[5m])) \
                 / sum by (domain) (rate(ec_connect_attempts_total[5m]))",
    }],
};

/// `ec_connections_in_state`.
pub const CONNECTIONS_IN_STATE: MetricDef = MetricDef {
    name: "ec_connections_in_state",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    help: "Connections in each lifecycle state across the engine, as the scheduler counts them",
    labels: &[LabelDef {
        name: "state",
        values: LabelValues::Fixed(|| CONNECTION_STATES.iter().map(|s| s.as_str()).collect()),
    }],
    buckets: &[],
    meaning: "Set by the scheduler from its per-state counts once per turn of its loop. Many `idle` connections \
              with mail waiting would be a scheduling fault; many `closing` ones mean \
              servers are slow to finish QUIT or the TLS and TCP shutdown.",
    queries: &[ExampleQuery {
        purpose: "Connections by state",
        promql: "ec_connections_in_state",
    }],
};

/// `ec_tls_handshakes_total`.
pub const TLS_HANDSHAKES: MetricDef = MetricDef {
    name: "ec_tls_handshakes_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "TLS handshakes, after STARTTLS or at the connect (implicit TLS), by TLS policy, result and negotiated protocol version",
    labels: &[
        LabelDef {
            name: "policy",
            values: LabelValues::Fixed(|| {
                TLS_POLICIES.iter().map(|p| tls_policy_str(*p)).collect()
            }),
        },
        LabelDef {
            name: "result",
            values: LabelValues::Fixed(|| vec!["established", "failed"]),
        },
        LabelDef {
            name: "version",
            values: LabelValues::Fixed(|| {
                let mut values: Vec<&'static str> =
                    TlsVersion::ALL.iter().map(|v| v.as_str()).collect();
                values.push("none");
                values
            }),
        },
    ],
    buckets: &[],
    meaning: "A failed handshake has version `none`. Under `required` and `implicit` a \
              failure defers the mail; under `opportunistic` the engine may retry in clear \
              text on a new connection. Failures include certificate verification failures.",
    queries: &[ExampleQuery {
        purpose: "Failed handshakes per second, by policy",
        promql: "sum by (policy) (rate(ec_tls_handshakes_total{result=\"failed\"}[5m]))",
    }],
};

/// `ec_tls_close_notify_sent_total`.
pub const TLS_CLOSE_NOTIFY_SENT: MetricDef = MetricDef {
    name: "ec_tls_close_notify_sent_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "TLS close_notify alerts sent while shutting down connections",
    labels: &[],
    buckets: &[],
    meaning: "Every orderly shutdown of a TLS connection sends one. Fewer than the TLS \
              connections closed means shutdowns were skipped because the session was broken.",
    queries: &[],
};

/// `ec_tls_close_notify_received_total`.
pub const TLS_CLOSE_NOTIFY_RECEIVED: MetricDef = MetricDef {
    name: "ec_tls_close_notify_received_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "TLS close_notify alerts received from servers",
    labels: &[],
    buckets: &[],
    meaning: "Many servers close without close_notify after their 221, which is a clean \
              close; the ratio to the alerts sent shows how many answer in kind.",
    queries: &[ExampleQuery {
        purpose: "Share of our close_notify alerts that servers answered",
        promql: "rate(ec_tls_close_notify_received_total[1h]) \
                 / rate(ec_tls_close_notify_sent_total[1h])",
    }],
};

/// `ec_smtp_replies_total`.
pub const SMTP_REPLIES: MetricDef = MetricDef {
    name: "ec_smtp_replies_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "SMTP replies received, by the command (session stage) they reply to and reply class",
    labels: &[
        LabelDef {
            name: "command",
            values: LabelValues::Fixed(|| STAGES.iter().map(|s| s.as_str()).collect()),
        },
        LabelDef {
            name: "class",
            values: LabelValues::Fixed(|| {
                REPLY_CLASSES.iter().map(|c| reply_class_str(*c)).collect()
            }),
        },
    ],
    buckets: &[],
    meaning: "`command` is the session stage the reply answers: `banner` for the greeting, \
              `body` for the reply to the final dot, otherwise the command's name. A rise \
              in `4xx` to `rcpt` or `body` usually means a receiver is throttling \
              (greylisting, rate limits); `5xx` to `mail` often means our sending \
              reputation or a policy block.",
    queries: &[ExampleQuery {
        purpose: "Transient failures per second, by command",
        promql: "sum by (command) (rate(ec_smtp_replies_total{class=\"4xx\"}[5m]))",
    }],
};

/// `ec_smtp_timeouts_total`.
pub const SMTP_TIMEOUTS: MetricDef = MetricDef {
    name: "ec_smtp_timeouts_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "SMTP steps that ran past their deadline, by stage",
    labels: &[LabelDef {
        name: "stage",
        values: LabelValues::Fixed(|| STAGES.iter().map(|s| s.as_str()).collect()),
    }],
    buckets: &[],
    meaning: "A connect timeout (`not_connected`) closes its connection with reason \
              `connect_failed`; a timeout at any later stage before the close closes it with \
              reason `timeout`. Timeouts at `body` (the reply to the final dot) leave \
              messages as `delivery_unknown`, so they may be delivered twice. A `quit` \
              timeout means the server did not answer QUIT in time, during a close or after \
              a QUIT sent with a connection's last transaction. It only ends the wait for \
              the 221.",
    queries: &[ExampleQuery {
        purpose: "Timeouts per second, by stage",
        promql: "sum by (stage) (rate(ec_smtp_timeouts_total[5m]))",
    }],
};

/// `ec_message_fates_total`.
pub const MESSAGE_FATES_TOTAL: MetricDef = MetricDef {
    name: "ec_message_fates_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "Messages whose transaction or connection ended, by binding, domain and the fate each was given",
    labels: &[
        BINDING,
        DOMAIN,
        LabelDef {
            name: "fate",
            values: LabelValues::Fixed(|| MESSAGE_FATES.iter().map(|f| f.as_str()).collect()),
        },
    ],
    buckets: &[],
    meaning: "A message counts each time it gets a fate, so a message deferred twice and \
              then delivered counts three times. `requeued` messages go back to the active \
              queue without spending an attempt, because the connection failed before the \
              transaction. `delivery_unknown` messages had their final dot sent and got no \
              reply. They wait in the delayed queue like `deferred` ones, and are retried \
              even though they may have arrived.",
    queries: &[
        ExampleQuery {
            purpose: "Deliveries per second, per domain",
            promql: "sum by (domain) (rate(ec_message_fates_total{fate=\"delivered\"}[5m]))",
        },
        ExampleQuery {
            purpose: "Share of message outcomes that were deferrals, per domain",
            promql: "sum by (domain) (rate(ec_message_fates_total{fate=\"deferred\"}[15m])) \
                     / sum by (domain) (rate(ec_message_fates_total[15m]))",
        },
    ],
};

/// `ec_recipients_total`.
pub const RECIPIENTS: MetricDef = MetricDef {
    name: "ec_recipients_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "Recipient outcomes, by binding, domain and result",
    labels: &[
        BINDING,
        DOMAIN,
        LabelDef {
            name: "result",
            values: LabelValues::Fixed(|| {
                RecipientResult::ALL.iter().map(|r| r.as_str()).collect()
            }),
        },
    ],
    buckets: &[],
    meaning: "Like `ec_message_fates_total`, per recipient: a message to three recipients \
              of one domain that all succeed adds 3 to `delivered`. `failed` recipients \
              bounce.",
    queries: &[ExampleQuery {
        purpose: "Permanently failed recipients per second, per domain",
        promql: "sum by (domain) (rate(ec_recipients_total{result=\"failed\"}[5m]))",
    }],
};

/// `ec_smtp_sent_bytes_total`.
pub const SENT_BYTES: MetricDef = MetricDef {
    name: "ec_smtp_sent_bytes_total",
    kind: MetricKind::Counter,
    unit: Unit::Bytes,
    help: "Bytes written to SMTP connections (commands and message data, before TLS encryption), by binding",
    labels: &[BINDING],
    buckets: &[],
    meaning: "Outbound SMTP volume per egress identity, after dot-stuffing and line-ending \
              normalization and before TLS adds its overhead.",
    queries: &[ExampleQuery {
        purpose: "Outbound bits per second, per binding",
        promql: "8 * sum by (binding) (rate(ec_smtp_sent_bytes_total[1m]))",
    }],
};

/// `ec_queue_messages`.
pub const QUEUE_MESSAGES: MetricDef = MetricDef {
    name: "ec_queue_messages",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    help: "Messages waiting in the queues, active (ready to send) or delayed (waiting for their retry time)",
    labels: &[LabelDef {
        name: "queue",
        values: LabelValues::Fixed(|| QueueKind::ALL.iter().map(|q| q.as_str()).collect()),
    }],
    buckets: &[],
    meaning: "Set by the scheduler from its running totals once per turn of its loop. A \
              growing active queue means the limits or the receivers cannot keep up; a growing \
              delayed queue means receivers defer mail. Messages in flight on a connection are \
              in neither queue.",
    queries: &[ExampleQuery {
        purpose: "Queue sizes",
        promql: "ec_queue_messages",
    }],
};

/// `ec_closeconn_duplicates_total`.
pub const CLOSECONN_DUPLICATES: MetricDef = MetricDef {
    name: "ec_closeconn_duplicates_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "closeconn calls for a connection that was already closed, each of which changed nothing",
    labels: &[],
    buckets: &[],
    meaning: "`closeconn` is idempotent, so these calls do no harm, but each one is a code \
              path that closes twice (a timer and a session error arriving together). The \
              debug log names the close site of both calls.",
    queries: &[],
};

/// `ec_accounting_audit_failures_total`.
pub const AUDIT_FAILURES: MetricDef = MetricDef {
    name: "ec_accounting_audit_failures_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    help: "Accounting audits that found a count disagreeing with the connections or messages it counts",
    labels: &[],
    buckets: &[],
    meaning: "Should stay at 0. Any increase is a bug in the engine's bookkeeping: a limit \
              may be exceeded or a message may be stuck. The error log has the details.",
    queries: &[ExampleQuery {
        purpose: "Alert condition",
        promql: "increase(ec_accounting_audit_failures_total[1h]) > 0",
    }],
};

/// `ec_scheduler_loop_lag_seconds`.
pub const SCHEDULER_LOOP_LAG: MetricDef = MetricDef {
    name: "ec_scheduler_loop_lag_seconds",
    kind: MetricKind::Histogram,
    unit: Unit::Seconds,
    help: "How late the scheduler loop handled a due timer or a waiting event",
    labels: &[],
    buckets: &LOOP_LAG_BUCKETS,
    meaning: "The one scheduler thread handles every event; when it falls behind, every \
              connection waits. Lags above a few milliseconds mean the thread is starved of \
              CPU or something blocks it.",
    queries: &[ExampleQuery {
        purpose: "99th percentile loop lag",
        promql: "histogram_quantile(0.99, rate(ec_scheduler_loop_lag_seconds_bucket[5m]))",
    }],
};

/// Every metric, in the order of the reference page.
pub const ALL: [&MetricDef; 18] = [
    &CONNECTIONS_OPENED,
    &CONNECTIONS_CLOSED,
    &CONNECTIONS_LIVE,
    &CONNECTION_DURATION,
    &CONNECT_ATTEMPTS,
    &CONNECTIONS_IN_STATE,
    &TLS_HANDSHAKES,
    &TLS_CLOSE_NOTIFY_SENT,
    &TLS_CLOSE_NOTIFY_RECEIVED,
    &SMTP_REPLIES,
    &SMTP_TIMEOUTS,
    &MESSAGE_FATES_TOTAL,
    &RECIPIENTS,
    &SENT_BYTES,
    &QUEUE_MESSAGES,
    &CLOSECONN_DUPLICATES,
    &AUDIT_FAILURES,
    &SCHEDULER_LOOP_LAG,
];

/// Looks a metric up by its exported name.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().copied().find(|def| def.name == name)
}

/// Registers the HELP text and unit of every metric with the recorder in
/// effect (the global one, or a local one inside
/// [`metrics::with_local_recorder`]).
///
/// [`Exporter::install`](crate::Exporter::install) and
/// [`LocalRecorder::new`](crate::LocalRecorder::new) call it; a program
/// that installs its own recorder calls it once after installing. Calling
/// it again is harmless: the Prometheus recorder keeps the first
/// description of each name.
pub fn describe_all() {
    for def in ALL {
        let unit = def.unit.to_metrics();
        match def.kind {
            MetricKind::Counter => metrics::describe_counter!(def.name, unit, def.help),
            MetricKind::Gauge => metrics::describe_gauge!(def.name, unit, def.help),
            MetricKind::Histogram => metrics::describe_histogram!(def.name, unit, def.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_follow_conventions() {
        for def in ALL {
            let name = def.name;
            assert!(name.starts_with("ec_"), "{name} lacks the ec_ prefix");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name} has characters other than a-z and _"
            );
            let is_counter = def.kind == MetricKind::Counter;
            assert_eq!(
                name.ends_with("_total"),
                is_counter,
                "{name}: counters, and only counters, end in _total"
            );
            let unit_suffix = match def.unit {
                Unit::Seconds => Some("_seconds"),
                Unit::Bytes => Some("_bytes"),
                Unit::Count => None,
            };
            let base = name.strip_suffix("_total").unwrap_or(name);
            if let Some(suffix) = unit_suffix {
                assert!(base.ends_with(suffix), "{name} must end in {suffix}");
            }
            assert!(
                !base.ends_with("_seconds") && !base.ends_with("_bytes") || unit_suffix.is_some(),
                "{name} names a unit that its definition does not have"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<&str> = ALL.iter().map(|def| def.name).collect();
        assert_eq!(names.len(), ALL.len());
    }

    #[test]
    fn help_texts_are_one_line() {
        for def in ALL {
            assert!(!def.help.is_empty(), "{} has no HELP text", def.name);
            assert!(!def.help.contains('\n'), "{} HELP has a newline", def.name);
            assert!(
                !def.help.ends_with('.'),
                "{} HELP ends in a period",
                def.name
            );
            assert!(!def.meaning.is_empty(), "{} has no meaning text", def.name);
        }
    }

    #[test]
    fn histograms_have_increasing_buckets() {
        for def in ALL {
            if def.kind == MetricKind::Histogram {
                assert!(!def.buckets.is_empty(), "{} has no buckets", def.name);
                assert!(
                    def.buckets.windows(2).all(|pair| pair[0] < pair[1]),
                    "{} buckets are not strictly increasing",
                    def.name
                );
            } else {
                assert!(def.buckets.is_empty(), "{} is not a histogram", def.name);
            }
        }
    }

    #[test]
    fn label_names_are_valid() {
        for def in ALL {
            let mut seen = HashSet::new();
            for label in def.labels {
                assert!(
                    seen.insert(label.name),
                    "{} repeats {}",
                    def.name,
                    label.name
                );
                assert!(
                    !label.name.starts_with("__") && label.name != "le" && label.name != "quantile",
                    "{} uses the reserved label {}",
                    def.name,
                    label.name
                );
                if let Some(values) = label.values.fixed() {
                    let unique: HashSet<&str> = values.iter().copied().collect();
                    assert_eq!(unique.len(), values.len(), "{} {}", def.name, label.name);
                }
            }
        }
    }

    #[test]
    fn label_set_bounds() {
        assert_eq!(CONNECTIONS_OPENED.label_set_bound(), "B × D");
        assert_eq!(CONNECTIONS_CLOSED.label_set_bound(), "B × D × 120");
        assert_eq!(TLS_CLOSE_NOTIFY_SENT.label_set_bound(), "1");
        assert_eq!(QUEUE_MESSAGES.label_set_bound(), "2");
    }

    #[test]
    fn find_by_name() {
        assert_eq!(
            find("ec_queue_messages").map(|def| def.kind),
            Some(MetricKind::Gauge)
        );
        assert!(find("ec_nonexistent").is_none());
    }
}
