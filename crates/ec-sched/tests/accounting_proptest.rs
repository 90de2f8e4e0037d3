//! Random sequences of submissions, session events, closes and time steps
//! across several bindings and domains. After every step the accounting
//! audit passes, no limit is exceeded and no recipient has two final
//! records. After draining (or shutting down), every submitted recipient
//! has exactly one final record.
//!
//! Every run records into a private metrics recorder. After every step,
//! opened − closed equals the live-connection gauge for each binding ×
//! domain and the gauges sum to the engine's live count. At the end the
//! fate counters equal the ledger's totals.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::sum;
use ec_metrics::LocalRecorder;
use ec_sched::testing::{status_for, Harness};
use ec_sched::{RecipientOutcome, SchedulerOptions};
use ec_types::{
    BindingSlot, CloseOutcome, CloseReason, Config, ConnectionHandle, ConnectionState, Domain,
    EngineLimits, Reply, ReplyCode, Route, Settings,
};
use proptest::prelude::*;

const BINDINGS: u16 = 3;
const DOMAINS: usize = 4;
const MAX_OUTBOUND: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        binding: u16,
        domains: Vec<usize>,
    },
    Connect(usize),
    ConnectFail(usize),
    NullMx(usize),
    Deliver {
        connection: usize,
        replies: Vec<u16>,
    },
    LostBeforeDot(usize),
    LostAfterDot(usize),
    ServiceClosing(usize),
    Close(usize),
    DoubleClose(usize),
    SocketClosed(usize, CloseOutcome),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let reply = prop_oneof![4 => Just(250u16), 2 => Just(451u16), 1 => Just(550u16)];
    prop_oneof![
        6 => (0..BINDINGS, prop::collection::vec(0..DOMAINS, 1..4))
            .prop_map(|(binding, domains)| Op::Submit { binding, domains }),
        5 => any::<usize>().prop_map(Op::Connect),
        1 => any::<usize>().prop_map(Op::ConnectFail),
        1 => any::<usize>().prop_map(Op::NullMx),
        6 => (any::<usize>(), prop::collection::vec(reply, 1..4))
            .prop_map(|(connection, replies)| Op::Deliver { connection, replies }),
        1 => any::<usize>().prop_map(Op::LostBeforeDot),
        1 => any::<usize>().prop_map(Op::LostAfterDot),
        1 => any::<usize>().prop_map(Op::ServiceClosing),
        1 => any::<usize>().prop_map(Op::Close),
        1 => any::<usize>().prop_map(Op::DoubleClose),
        2 => (any::<usize>(), prop_oneof![
            Just(CloseOutcome::Clean),
            Just(CloseOutcome::Reset),
            Just(CloseOutcome::NeverConnected),
        ]).prop_map(|(connection, outcome)| Op::SocketClosed(connection, outcome)),
        3 => (0u64..90).prop_map(Op::Advance),
    ]
}

fn domain_name(index: usize) -> String {
    format!("d{index}.example")
}

/// Small limits so that they bind: two domains share one relay host.
fn config() -> Config {
    let mut config = Config {
        engine: EngineLimits {
            max_connections: 6,
            max_connections_per_binding: 4,
            max_connections_per_host: 3,
        },
        global: Settings {
            max_outbound_connections: Some(MAX_OUTBOUND),
            max_deliveries_per_connection: Some(3),
            max_connection_age: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(5)),
            ..Settings::default()
        },
        ..Config::default()
    };
    config.global.retry.interval = Some(Duration::from_secs(10));
    config.global.retry.max_interval = Some(Duration::from_secs(40));
    config.global.retry.max_age = Some(Duration::from_secs(400));
    config.global.timeouts.close = Some(Duration::from_secs(15));

    let relay = Route::Relay {
        host: "relay.example".to_owned(),
        port: 25,
    };
    for index in 0..2 {
        let settings = Settings {
            route: Some(relay.clone()),
            batch_size: Some(index as u32 + 1),
            ..Settings::default()
        };
        config
            .domain
            .insert(Domain::new(&domain_name(index)).expect("valid"), settings);
    }
    config
}

struct Run {
    harness: Harness,
    submitted: Vec<(u64, String)>,
}

impl Run {
    fn new() -> Self {
        let options = SchedulerOptions {
            domain_backoff: Duration::from_secs(5),
            domain_backoff_max: Duration::from_secs(40),
            shutdown_grace: Duration::from_secs(20),
            ..SchedulerOptions::default()
        };
        let mut harness = Harness::with_options(config(), options);
        for index in 1..BINDINGS {
            harness
                .register_binding(&format!("b{index}"))
                .expect("new binding");
        }
        Self {
            harness,
            submitted: Vec::new(),
        }
    }

    fn pick(&self, index: usize) -> Option<ConnectionHandle> {
        let live = self.harness.live();
        (!live.is_empty()).then(|| live[index % live.len()])
    }

    fn state(&self, handle: ConnectionHandle) -> Option<(ConnectionState, bool)> {
        self.harness
            .scheduler()
            .connection(handle)
            .map(|c| (c.state(), c.ever_connected()))
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit { binding, domains } => {
                let tag = self.harness.next_tag();
                let recipients: Vec<String> = domains
                    .iter()
                    .enumerate()
                    .map(|(i, d)| format!("t{tag}r{i}@{}", domain_name(*d)))
                    .collect();
                let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
                self.harness.submit_to(BindingSlot(*binding), tag, &refs);
                self.submitted
                    .extend(recipients.into_iter().map(|r| (tag, r)));
            }
            Op::Connect(index) => {
                let Some(handle) = self.pick(*index) else {
                    return;
                };
                if let Some((ConnectionState::Connecting, connected)) = self.state(handle) {
                    if !connected {
                        self.harness.connected(handle);
                    }
                    self.harness.ready(handle);
                }
            }
            Op::ConnectFail(index) => {
                let Some(handle) = self.pick(*index) else {
                    return;
                };
                if let Some((ConnectionState::Connecting, _)) = self.state(handle) {
                    self.harness.connect_failed(handle);
                }
            }
            Op::NullMx(index) => {
                let Some(handle) = self.pick(*index) else {
                    return;
                };
                if let Some((ConnectionState::Connecting, _)) = self.state(handle) {
                    self.harness.null_mx(handle, "null-mx.example");
                }
            }
            Op::Deliver {
                connection,
                replies,
            } => {
                let Some(handle) = self.pick(*connection) else {
                    return;
                };
                let outstanding = self.harness.outstanding(handle);
                for message in &outstanding {
                    let statuses = (0..message.recipients.len())
                        .map(|i| {
                            status_for(ReplyCode::new(replies[i % replies.len()]).expect("valid"))
                        })
                        .collect();
                    self.harness.transaction_with(handle, statuses);
                }
                if !outstanding.is_empty() {
                    self.harness.batch_done(handle);
                }
            }
            Op::LostBeforeDot(index) => {
                if let Some(handle) = self.pick_open(*index) {
                    self.harness.lost(handle, false);
                }
            }
            Op::LostAfterDot(index) => {
                if let Some(handle) = self.pick_open(*index) {
                    self.harness.lost(handle, true);
                }
            }
            Op::ServiceClosing(index) => {
                if let Some(handle) = self.pick_open(*index) {
                    let reply = Reply::new(ReplyCode::SERVICE_NOT_AVAILABLE, None, "closing");
                    self.harness.failed_with_reply(handle, reply);
                }
            }
            Op::Close(index) => {
                if let Some(handle) = self.pick(*index) {
                    let _ = self.harness.close(handle, CloseReason::Requested);
                }
            }
            Op::DoubleClose(index) => {
                if let Some(handle) = self.pick(*index) {
                    let before = self.harness.scheduler().ledger().duplicate_closes;
                    let _ = self.harness.close(handle, CloseReason::Requested);
                    let _ = self.harness.close(handle, CloseReason::Requested);
                    let after = self.harness.scheduler().ledger().duplicate_closes;
                    assert!(after > before, "a second close must be counted");
                }
            }
            Op::SocketClosed(index, outcome) => {
                if let Some(handle) = self.pick(*index) {
                    self.harness.closed(handle, *outcome);
                }
            }
            Op::Advance(seconds) => self.harness.advance(Duration::from_secs(*seconds)),
        }
    }

    /// A live connection that is connected and not closing.
    fn pick_open(&self, index: usize) -> Option<ConnectionHandle> {
        let open: Vec<_> = self
            .harness
            .live()
            .into_iter()
            .filter(|h| {
                matches!(
                    self.state(*h),
                    Some((ConnectionState::Idle | ConnectionState::Busy, _))
                )
            })
            .collect();
        (!open.is_empty()).then(|| open[index % open.len()])
    }

    /// Checks after every step.
    fn check(&self) {
        if let Err(error) = self.harness.audit() {
            panic!("audit failed: {error}");
        }

        let scheduler = self.harness.scheduler();
        let limits = &scheduler.config().engine;
        let mut per_binding: HashMap<BindingSlot, u32> = HashMap::new();
        let mut per_lane: HashMap<(BindingSlot, String), u32> = HashMap::new();
        let mut per_host: HashMap<(BindingSlot, String), u32> = HashMap::new();
        let mut live = 0;
        for connection in scheduler.connections() {
            live += 1;
            let binding = connection.binding();
            *per_binding.entry(binding).or_default() += 1;
            *per_host
                .entry((binding, connection.target().to_string()))
                .or_default() += 1;
            let session = self
                .harness
                .session(connection.handle())
                .expect("recorded open");
            *per_lane
                .entry((binding, session.request.domain.to_string()))
                .or_default() += 1;
        }
        assert_eq!(scheduler.engine_counts().live(), live);
        assert!(live <= limits.max_connections);
        assert!(per_binding
            .values()
            .all(|n| *n <= limits.max_connections_per_binding));
        assert!(per_host
            .values()
            .all(|n| *n <= limits.max_connections_per_host));
        assert!(per_lane.values().all(|n| *n <= MAX_OUTBOUND));
        for (binding, count) in &per_binding {
            let entry = scheduler.binding(*binding).expect("registered");
            assert_eq!(entry.counts().live(), *count);
        }

        let mut finals: HashMap<(u64, String), usize> = HashMap::new();
        for (tag, recipient, _) in self.harness.final_outcomes() {
            *finals.entry((tag, recipient.to_string())).or_default() += 1;
        }
        assert!(
            finals.values().all(|n| *n == 1),
            "a recipient got two final records"
        );
    }

    /// Lets every session succeed and time pass until nothing is left.
    fn drain(&mut self) {
        for _ in 0..400 {
            let ledger = *self.harness.scheduler().ledger();
            let live = self.harness.live();
            if ledger.in_engine() == Some(0) && live.is_empty() {
                return;
            }
            for handle in live {
                match self.state(handle) {
                    Some((ConnectionState::Connecting, connected)) => {
                        if !connected {
                            self.harness.connected(handle);
                        }
                        self.harness.ready(handle);
                    }
                    Some((ConnectionState::Busy, _)) => self.harness.deliver(handle, ReplyCode::OK),
                    Some((ConnectionState::Closing, _)) => {
                        self.harness.closed(handle, CloseOutcome::Clean);
                    }
                    _ => {}
                }
                self.check();
            }
            self.harness.advance(Duration::from_secs(10));
            self.check();
        }
        panic!("the engine did not drain: {:?}", self.harness.stats());
    }

    /// Shuts down, finishing busy sessions, until the shutdown is done.
    fn shut_down(&mut self) {
        self.harness.shutdown();
        for _ in 0..100 {
            if self.harness.is_shut_down() {
                return;
            }
            for handle in self.harness.live() {
                match self.state(handle) {
                    Some((ConnectionState::Busy, _)) => self.harness.deliver(handle, ReplyCode::OK),
                    Some((ConnectionState::Closing, _)) => {
                        self.harness.closed(handle, CloseOutcome::Clean);
                    }
                    _ => {}
                }
                self.check();
            }
            self.harness.advance(Duration::from_secs(5));
            self.check();
        }
        panic!("the shutdown did not finish: {:?}", self.harness.stats());
    }

    /// Every submitted recipient has exactly one final record.
    fn check_every_recipient_final(&self, allow_unsent: bool) {
        let mut finals: HashMap<(u64, String), RecipientOutcome> = HashMap::new();
        for (tag, recipient, outcome) in self.harness.final_outcomes() {
            let previous = finals.insert((tag, recipient.to_string()), outcome);
            assert!(
                previous.is_none(),
                "two final records for t{tag} {recipient}"
            );
        }
        assert_eq!(finals.len(), self.submitted.len());
        for key in &self.submitted {
            let outcome = finals
                .get(key)
                .unwrap_or_else(|| panic!("no final record for {key:?}"));
            if !allow_unsent {
                assert!(
                    matches!(
                        outcome,
                        RecipientOutcome::Delivered(_) | RecipientOutcome::Failed(_)
                    ),
                    "{key:?} ended {outcome:?}"
                );
            }
        }
        let ledger = self.harness.scheduler().ledger();
        assert_eq!(ledger.in_engine(), Some(0));
        assert_eq!(ledger.active + ledger.delayed + ledger.in_flight, 0);
        assert_eq!(self.harness.scheduler().engine_counts().live(), 0);
    }
}

impl Run {
    /// Checks that opened − closed equals the live gauge for every binding
    /// × domain, and that the gauges sum to the engine's live count.
    fn check_connection_metrics(&self, text: &str) {
        // (opened, closed, live) per label set of binding and domain.
        let mut pairs: HashMap<String, [f64; 3]> = HashMap::new();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once('{') else {
                continue;
            };
            let column = match name {
                "ec_connections_opened_total" => 0,
                "ec_connections_closed_total" => 1,
                "ec_connections_live" => 2,
                _ => continue,
            };
            // Binding and domain come first, in that order, in all three.
            let labels = labels.trim_end_matches('}');
            let pair: String = labels.split(',').take(2).collect::<Vec<_>>().join(",");
            let value: f64 = value.parse().expect("a numeric sample");
            pairs.entry(pair).or_default()[column] += value;
        }
        for (pair, [opened, closed, live]) in &pairs {
            assert_eq!(opened - closed, *live, "{pair}");
        }

        let engine = self.harness.scheduler().engine_counts();
        let total_live: f64 = pairs.values().map(|counts| counts[2]).sum();
        let total_opened: f64 = pairs.values().map(|counts| counts[0]).sum();
        assert_eq!(total_live, f64::from(engine.live()));
        assert_eq!(total_opened, engine.opened() as f64);
    }

    /// Checks the fate counters against the ledger. A message whose final
    /// dot got no reply counts as `delivery_unknown`, not as `deferred`,
    /// even when it then outlived the retry policy and failed.
    fn check_fate_metrics(&self, text: &str) {
        let ledger = self.harness.scheduler().ledger();
        let fate = |fate: &str| sum(text, "ec_message_fates_total", &[("fate", fate)]);
        assert_eq!(fate("delivered"), ledger.delivered as f64);
        assert_eq!(fate("failed"), ledger.failed as f64);
        assert_eq!(fate("deferred"), ledger.deferred as f64);
        assert_eq!(fate("requeued"), ledger.requeued as f64);
        assert_eq!(fate("delivery_unknown"), ledger.delivery_unknown as f64);
        assert_eq!(
            sum(text, "ec_queue_messages", &[("queue", "active")]),
            ledger.active as f64
        );
        assert_eq!(
            sum(text, "ec_queue_messages", &[("queue", "delayed")]),
            ledger.delayed as f64
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accounting_holds_then_drains(ops in prop::collection::vec(op(), 1..80), shut_down in any::<bool>()) {
        let recorder = LocalRecorder::new();
        let mut run = Run::new();
        recorder.scope(|| {
            for op in &ops {
                run.apply(op);
                run.check();
                run.check_connection_metrics(&recorder.render());
            }
            if shut_down {
                run.shut_down();
            } else {
                run.drain();
            }
        });
        run.check_every_recipient_final(shut_down);
        let text = recorder.render();
        run.check_connection_metrics(&text);
        run.check_fate_metrics(&text);
    }
}
