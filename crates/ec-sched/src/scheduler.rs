//! The scheduler's state: domains, bindings, connections, limits, timers
//! and the ledger, with registration, submission and read access.
//!
//! The decisions live beside it: [`dispatch`](crate::dispatch) opens and
//! feeds connections, [`events`](crate::events) handles session events and
//! timers, [`release`](crate::release) frees a closed connection, and
//! [`shutdown`](crate::shutdown) drains the engine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ec_types::{
    AddressKey, AddressMetrics, Binding, BindingScope, BindingSlot, Config, ConfigError,
    ConnectionHandle, Domain, DomainRecord, EffectiveSettings, Message, MessageId, Route,
    SharedMessage, Submission,
};
use thiserror::Error;

use crate::close::{CloseParts, DomainBackoff};
use crate::connection::{Connection, ConnectionEntry};
use crate::counts::ConnectionCounts;
use crate::domain::{BindingDomain, DomainEntry, DomainIndex, DomainIndexTable, LaneKey};
use crate::fate::{FateContext, WakeQueue};
use crate::ledger::Ledger;
use crate::limits::{BindingEntry, HostEntry, HostKey, Resource, WaitList};
use crate::metrics::{GaugeState, MetricLabels};
use crate::report::Report;
use crate::runtime::Inbox;
use crate::slots::SlotTable;
use crate::timers::{Timer, Timers};
use crate::token::{SchedulerId, SchedulerToken};

/// Scheduler settings that are not part of the delivery [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Wait before new connections to a domain after its first failed
    /// connect; it doubles with each consecutive failure. Default 30 s.
    pub domain_backoff: Duration,
    /// The maximum domain backoff. Default 10 minutes.
    pub domain_backoff_max: Duration,
    /// How often the loop runs the accounting audit; `None` never. Default
    /// 60 s.
    pub audit_interval: Option<Duration>,
    /// How long a shutdown lets busy connections finish their batch before
    /// closing them anyway. Default 30 s.
    pub shutdown_grace: Duration,
    /// How many destination domains that the configuration does not name
    /// get a `domain` metric label of their own, in the order their first
    /// message was queued; later ones are counted under `other`. Default
    /// [`ec_metrics::DEFAULT_DOMAIN_LABEL_LIMIT`] (100).
    pub domain_label_limit: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            domain_backoff: Duration::from_secs(30),
            domain_backoff_max: Duration::from_secs(600),
            audit_interval: Some(Duration::from_secs(60)),
            shutdown_grace: Duration::from_secs(30),
            domain_label_limit: ec_metrics::DEFAULT_DOMAIN_LABEL_LIMIT,
        }
    }
}

/// The error of a rejected submission. Each variant gives the submission
/// back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The submission has no recipient.
    #[error("submission {} has no recipients; add at least one RCPT TO address", .0.tag)]
    NoRecipients(Box<Submission>),
    /// The binding slot was never registered.
    #[error("binding {binding} is not registered; register it before submitting to it")]
    UnknownBinding {
        /// The slot asked for.
        binding: BindingSlot,
        /// The submission.
        submission: Box<Submission>,
    },
    /// The engine is shutting down and takes no new work.
    #[error("the scheduler is shutting down; submission {} was not queued", .0.tag)]
    ShuttingDown(Box<Submission>),
    /// The scheduler thread has stopped.
    #[error("the scheduler has stopped; submission {} was not queued", .0.tag)]
    Stopped(Box<Submission>),
}

impl SubmitError {
    /// The submission that was not accepted.
    pub fn into_submission(self) -> Submission {
        match self {
            Self::NoRecipients(submission)
            | Self::UnknownBinding { submission, .. }
            | Self::ShuttingDown(submission)
            | Self::Stopped(submission) => *submission,
        }
    }
}

/// The error of a rejected binding registration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BindingError {
    /// A binding of that name exists.
    #[error(
        "binding {name:?} is already registered as slot {slot}; use that slot or another name"
    )]
    Duplicate {
        /// The name.
        name: String,
        /// Its existing slot.
        slot: BindingSlot,
    },
    /// The binding's EHLO name cannot be sent.
    #[error("binding {name:?} has an invalid EHLO name: {source}")]
    InvalidEhloName {
        /// The binding's name.
        name: String,
        /// Why the EHLO name is invalid.
        #[source]
        source: ec_types::AddressError,
    },
    /// All 65,536 binding slots are in use.
    #[error("cannot register binding {name:?}: all 65536 binding slots are in use")]
    TooMany {
        /// The name.
        name: String,
    },
}

/// How late timers fire, a measure of the loop's lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerLag {
    /// Lateness of the last timer that fired.
    pub last: Duration,
    /// The largest lateness seen.
    pub max: Duration,
}

/// The state of one scheduler and the logic that changes it, all on one
/// thread. Nothing here is behind a lock: every method that changes state
/// takes the [`SchedulerToken`] that only the scheduler's own thread holds.
///
/// A scheduler is made by [`Scheduler::spawn`] (a thread of its own) or by
/// [`testing::Harness`](crate::testing::Harness) (the current thread, in
/// virtual time). Time is always passed in as `now`; the scheduler never
/// reads the clock.
#[derive(Debug)]
pub struct Scheduler {
    pub(crate) id: SchedulerId,
    pub(crate) config: Config,
    pub(crate) options: SchedulerOptions,
    pub(crate) bindings: Vec<BindingEntry>,
    pub(crate) binding_names: HashMap<String, BindingSlot>,
    pub(crate) domains: Vec<DomainEntry>,
    pub(crate) domain_index: DomainIndexTable,
    pub(crate) connections: SlotTable<ConnectionEntry>,
    pub(crate) hosts: HashMap<HostKey, HostEntry>,
    pub(crate) address_metrics: HashMap<AddressKey, AddressMetrics>,
    pub(crate) engine: ConnectionCounts,
    pub(crate) engine_waiters: WaitList,
    pub(crate) timers: Timers,
    pub(crate) ledger: Ledger,
    pub(crate) reports: VecDeque<Report>,
    pub(crate) wake: WakeQueue,
    pub(crate) recheck: Vec<Resource>,
    pub(crate) inbox: mpsc::Sender<Inbox>,
    pub(crate) next_message: u64,
    pub(crate) next_connection: u64,
    pub(crate) timer_lag: TimerLag,
    pub(crate) shutdown: Option<crate::shutdown::ShutdownState>,
    pub(crate) metric_labels: MetricLabels,
    pub(crate) gauges: GaugeState,
    /// Emptied batch buffers of released connections, for the next
    /// connections' delivery constructs.
    pub(crate) batch_buffers: Vec<Vec<SharedMessage>>,
}

/// The maximum number of emptied batch buffers the scheduler keeps.
const BATCH_BUFFERS_KEPT: usize = 64;

/// The maximum capacity, in messages, of a batch buffer kept for reuse. A
/// larger one is freed, so one huge batch does not keep its memory.
const BATCH_BUFFER_MAX_CAPACITY: usize = 1_024;

impl Scheduler {
    /// Creates a scheduler with the default binding in slot 0, and its
    /// token. Sessions' events go to `inbox`.
    pub(crate) fn new(
        config: Config,
        options: SchedulerOptions,
        inbox: mpsc::Sender<Inbox>,
        now: Instant,
    ) -> (Self, SchedulerToken) {
        let id = SchedulerId::next();
        let token = SchedulerToken::new(id);
        let metric_labels = MetricLabels::new(&config, options.domain_label_limit);
        let mut scheduler = Self {
            id,
            config,
            options,
            bindings: Vec::new(),
            binding_names: HashMap::new(),
            domains: Vec::new(),
            domain_index: DomainIndexTable::new(),
            connections: SlotTable::new(),
            hosts: HashMap::new(),
            address_metrics: HashMap::new(),
            engine: ConnectionCounts::default(),
            engine_waiters: WaitList::default(),
            timers: Timers::new(),
            ledger: Ledger::default(),
            reports: VecDeque::new(),
            wake: WakeQueue::default(),
            recheck: Vec::new(),
            inbox,
            next_message: 0,
            next_connection: 0,
            timer_lag: TimerLag::default(),
            shutdown: None,
            metric_labels,
            gauges: GaugeState::default(),
            batch_buffers: Vec::new(),
        };
        scheduler
            .register_binding(&token, Binding::named(Binding::DEFAULT_NAME))
            .expect("the first binding of an empty table gets slot 0");
        if let Some(interval) = scheduler.options.audit_interval {
            scheduler.timers.schedule(now + interval, Timer::Audit);
        }
        (scheduler, token)
    }

    /// Adds a binding and returns its slot. [`Binding::DEFAULT_NAME`] is
    /// always slot 0.
    ///
    /// # Errors
    ///
    /// Returns an error when the name is taken or every slot is used.
    pub fn register_binding(
        &mut self,
        token: &SchedulerToken,
        binding: Binding,
    ) -> Result<BindingSlot, BindingError> {
        token.check(self.id);
        if let Some(name) = &binding.ehlo_name {
            if let Err(source) = ec_types::validate_ehlo_name(name) {
                return Err(BindingError::InvalidEhloName {
                    name: binding.name,
                    source,
                });
            }
        }
        if let Some(slot) = self.binding_names.get(&binding.name) {
            return Err(BindingError::Duplicate {
                name: binding.name,
                slot: *slot,
            });
        }
        let Ok(index) = u16::try_from(self.bindings.len()) else {
            return Err(BindingError::TooMany { name: binding.name });
        };
        let slot = BindingSlot(index);

        let mut default_settings = resolve_unnamed_domain(&self.config, &binding.name);
        apply_binding(&mut default_settings, &binding);
        let label = self.metric_labels.binding(&binding.name);
        self.binding_names.insert(binding.name.clone(), slot);
        self.bindings.push(BindingEntry {
            name: Arc::from(binding.name.as_str()),
            binding,
            slot,
            label,
            counts: ConnectionCounts::default(),
            waiters: WaitList::default(),
            default_settings: Arc::new(default_settings),
        });
        Ok(slot)
    }

    /// Sets a domain's route, creating the domain if needed. Connections
    /// already open keep their settings snapshot; new ones use the route.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] for a route that cannot work (see
    /// [`Route::validate`]); the domain's route is then unchanged.
    pub fn register_domain(
        &mut self,
        token: &SchedulerToken,
        domain: Domain,
        route: Route,
    ) -> Result<(), ConfigError> {
        token.check(self.id);
        route.validate(&format!("domain {domain}"))?;
        let index = self.domain_entry(&domain);
        let entry = &mut self.domains[index.0 as usize];
        entry.record.route = route;
        entry.route_registered = true;

        let slots: Vec<BindingSlot> = entry.bindings().map(|(slot, _)| slot).collect();
        for slot in slots {
            let settings = self.lane_settings(index, slot);
            if let Some(lane) = self.domains[index.0 as usize].lane_mut(slot) {
                lane.settings = settings;
            }
        }
        Ok(())
    }

    /// Queues a submission on a binding: one message per recipient domain,
    /// each at the end of its binding × domain's active queue. Returns the
    /// new messages' ids.
    ///
    /// After a shutdown has finished, the messages enter and leave at once,
    /// each recipient reported as unsent.
    ///
    /// # Errors
    ///
    /// Returns the submission when it has no recipients or the binding is
    /// unknown.
    pub fn submit(
        &mut self,
        token: &SchedulerToken,
        binding: BindingSlot,
        submission: Submission,
        now: Instant,
    ) -> Result<Vec<MessageId>, SubmitError> {
        token.check(self.id);
        if submission.recipients.is_empty() {
            return Err(SubmitError::NoRecipients(Box::new(submission)));
        }
        if binding.index() >= self.bindings.len() {
            return Err(SubmitError::UnknownBinding {
                binding,
                submission: Box::new(submission),
            });
        }

        let mut next = self.next_message;
        let messages = Message::split(submission, now, || {
            next += 1;
            MessageId(next)
        });
        self.next_message = next;

        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            ids.push(message.id);
            self.enqueue(binding, message, now);
        }
        Ok(ids)
    }

    fn enqueue(&mut self, binding: BindingSlot, message: Message, now: Instant) {
        self.ledger.entered += 1;
        if self.shutdown.as_ref().is_some_and(|s| s.finished) {
            let mut context = self.fate_context();
            context.unsent(&message, binding, now);
            return;
        }

        let index = self.domain_entry(&message.domain);
        let key = LaneKey::new(index, binding);
        self.ensure_lane(key);
        let lane = self.domains[index.0 as usize]
            .lane_mut(binding)
            .expect("ensure_lane created it");
        lane.active.push_back(Arc::new(message));
        self.ledger.active += 1;
        self.wake.wake(key, lane);
    }

    /// The index of a domain, created with its configured route if new.
    pub(crate) fn domain_entry(&mut self, domain: &Domain) -> DomainIndex {
        if let Some(index) = self.domain_index.find(&self.domains, domain) {
            return index;
        }
        let route = self
            .config
            .domain
            .get(domain)
            .and_then(|settings| settings.route.clone())
            .or_else(|| self.config.global.route.clone())
            .unwrap_or(Route::Mx);
        let index =
            DomainIndex(u32::try_from(self.domains.len()).expect("fewer than 2^32 domains"));
        let record = DomainRecord::new(domain.clone(), route);
        self.domains.push(DomainEntry::new(record, index));
        self.domain_index.insert(&self.domains, index);
        index
    }

    /// Creates a binding × domain's queues if they do not exist.
    pub(crate) fn ensure_lane(&mut self, key: LaneKey) {
        let entry = &self.domains[key.domain.0 as usize];
        if entry.binding(key.binding).is_some() {
            return;
        }
        let settings = self.lane_settings(key.domain, key.binding);
        let metrics = self.metric_labels.lane(
            &self.bindings[key.binding.index()].label,
            &entry.record.name,
        );
        let entry = &mut self.domains[key.domain.0 as usize];
        let index = key.binding.index();
        if entry.bindings.len() <= index {
            entry.bindings.resize_with(index + 1, || None);
        }
        entry.bindings[index] = Some(BindingDomain::new(settings, metrics));
    }

    /// The settings snapshot for a binding × domain: shared per binding
    /// unless a scope names the domain or its route was registered.
    fn lane_settings(&self, domain: DomainIndex, binding: BindingSlot) -> Arc<EffectiveSettings> {
        let entry = &self.domains[domain.0 as usize];
        let binding_entry = &self.bindings[binding.index()];
        let name = &entry.record.name;
        let configured = self.config.domain.contains_key(name)
            || self
                .config
                .binding
                .get(&binding_entry.binding.name)
                .is_some_and(|scope| scope.domain.contains_key(name));
        if !configured && !entry.route_registered {
            return binding_entry.default_settings.clone();
        }

        let mut settings = self.config.resolve(&binding_entry.binding.name, name);
        apply_binding(&mut settings, &binding_entry.binding);
        if entry.route_registered {
            settings.route = entry.record.route.clone();
        }
        Arc::new(settings)
    }

    /// Borrows what `closeconn` needs for one connection, or `None` when
    /// the handle is stale.
    pub fn close_parts(
        &mut self,
        token: &SchedulerToken,
        handle: ConnectionHandle,
    ) -> Option<CloseParts<'_>> {
        token.check(self.id);
        let entry = self.connections.get_mut(handle)?;
        let key = entry.connection.lane;
        let metrics_key = entry
            .connection
            .address
            .or_else(|| match entry.connection.target() {
                ec_types::Target::Address(address) => Some(AddressKey {
                    ip: address.ip(),
                    binding: key.binding,
                }),
                _ => None,
            });
        let address_metrics = metrics_key.map(|k| self.address_metrics.entry(k).or_default());
        let ConnectionEntry {
            connection,
            construct,
        } = entry;
        Some(CloseParts {
            handle,
            construct,
            connection,
            domain: &mut self.domains[key.domain.0 as usize],
            binding: &mut self.bindings[key.binding.index()],
            address_metrics,
            scheduler: self.id,
            backoff: DomainBackoff {
                base: self.options.domain_backoff,
                max: self.options.domain_backoff_max,
            },
            context: FateContext {
                timers: &mut self.timers,
                ledger: &mut self.ledger,
                reports: &mut self.reports,
                wake: &mut self.wake,
            },
        })
    }

    /// Keeps the buffer of a released connection's batch for the next
    /// connection, so that a connection's life allocates no buffer for its
    /// batch once the scheduler has run for a while.
    pub(crate) fn recycle_batch(&mut self, mut buffer: Vec<SharedMessage>) {
        buffer.clear();
        let capacity = buffer.capacity();
        if capacity > 0
            && capacity <= BATCH_BUFFER_MAX_CAPACITY
            && self.batch_buffers.len() < BATCH_BUFFERS_KEPT
        {
            self.batch_buffers.push(buffer);
        }
    }

    pub(crate) fn fate_context(&mut self) -> FateContext<'_> {
        FateContext {
            timers: &mut self.timers,
            ledger: &mut self.ledger,
            reports: &mut self.reports,
            wake: &mut self.wake,
        }
    }

    /// Takes the records produced since the last call, oldest first.
    pub fn drain_reports(
        &mut self,
        token: &SchedulerToken,
    ) -> std::collections::vec_deque::Drain<'_, Report> {
        token.check(self.id);
        self.reports.drain(..)
    }

    /// The earliest timer deadline: the loop sleeps at most until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// A connection's record, or `None` for a stale handle.
    pub fn connection(&self, handle: ConnectionHandle) -> Option<&Connection> {
        self.connections.get(handle).map(|entry| &entry.connection)
    }

    /// The messages a connection is working on.
    pub fn batch(&self, handle: ConnectionHandle) -> Option<&[ec_types::SharedMessage]> {
        self.connections
            .get(handle)
            .map(|entry| entry.construct.batch.as_slice())
    }

    /// Every live connection. O(connections): for tests and diagnostics.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.iter().map(|(_, entry)| &entry.connection)
    }

    /// A domain's entry, if the domain ever had mail.
    pub fn domain(&self, domain: &Domain) -> Option<&DomainEntry> {
        let index = self.domain_index.find(&self.domains, domain)?;
        self.domains.get(index.0 as usize)
    }

    /// A binding's entry.
    pub fn binding(&self, slot: BindingSlot) -> Option<&BindingEntry> {
        self.bindings.get(slot.index())
    }

    /// A binding's slot by name.
    pub fn binding_slot(&self, name: &str) -> Option<BindingSlot> {
        self.binding_names.get(name).copied()
    }

    /// Connections to one host from one binding.
    pub fn host_counts(&self, key: &HostKey) -> ConnectionCounts {
        self.hosts
            .get(key)
            .map(|host| host.counts)
            .unwrap_or_default()
    }

    /// Engine-wide connections.
    pub fn engine_counts(&self) -> ConnectionCounts {
        self.engine
    }

    /// What the engine learned about one remote address from one binding.
    pub fn address_metrics(&self, key: &AddressKey) -> Option<&AddressMetrics> {
        self.address_metrics.get(key)
    }

    /// The running totals.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How late timers fire.
    pub fn timer_lag(&self) -> TimerLag {
        self.timer_lag
    }

    /// Sets the metrics gauges that mirror the scheduler's counts: queue
    /// sizes and connections by state. O(1), and it sets nothing when the
    /// counts have not changed since the last call. The loop calls it once
    /// per turn.
    pub fn publish_gauges(&mut self, token: &SchedulerToken) {
        token.check(self.id);
        self.gauges.publish(&self.ledger);
    }
}

/// Resolves the settings of a binding for every domain that no scope
/// names, by resolving against a copy of the configuration without domain
/// scopes.
fn resolve_unnamed_domain(config: &Config, binding: &str) -> EffectiveSettings {
    let mut scopes = Config {
        engine: config.engine.clone(),
        global: config.global.clone(),
        binding: BTreeMap::new(),
        domain: BTreeMap::new(),
        dns: config.dns.clone(),
    };
    if let Some(scope) = config.binding.get(binding) {
        let scope = BindingScope {
            settings: scope.settings.clone(),
            domain: BTreeMap::new(),
        };
        scopes.binding.insert(binding.to_owned(), scope);
    }
    // With no domain scopes left, any domain resolves the same way.
    let any = Domain::new("example.invalid").expect("a valid literal domain");
    scopes.resolve(binding, &any)
}

/// Applies what a binding itself sets to its settings.
fn apply_binding(settings: &mut EffectiveSettings, binding: &Binding) {
    if let Some(name) = &binding.ehlo_name {
        settings.ehlo_name.clone_from(name);
    }
}
