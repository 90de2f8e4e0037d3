//! The domain table's entries: a [`DomainRecord`] and, for each binding that
//! sends to the domain, that binding × domain's queues and connections.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use ec_types::{BindingSlot, ConnectionHandle, DomainRecord, EffectiveSettings};

use crate::counts::ConnectionCounts;
use crate::limits::Resource;
use crate::metrics::LaneMetrics;
use crate::queues::{ActiveQueue, DelayedQueue};
use crate::timers::TimerKey;

mod idle;
mod index;

pub(crate) use idle::IdleList;
pub(crate) use index::DomainIndexTable;

/// Index of a domain in the scheduler's domain table. Domains are never
/// removed, so an index stays valid for the scheduler's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DomainIndex(pub(crate) u32);

/// One binding × domain: the unit that has queues, a connection limit
/// (`max_outbound_connections`) and idle connections to reuse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LaneKey {
    pub(crate) domain: DomainIndex,
    pub(crate) binding: BindingSlot,
}

impl LaneKey {
    pub(crate) fn new(domain: DomainIndex, binding: BindingSlot) -> Self {
        Self { domain, binding }
    }
}

impl fmt::Debug for LaneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}/{}", self.domain.0, self.binding)
    }
}

/// One destination domain in the scheduler: its record and its per-binding
/// queues.
//
// Aligned to a 64-byte cache line, so the fields used per connection (the
// record and the lane table, 144 bytes) take three lines and never four.
#[derive(Debug)]
#[repr(align(64))]
pub struct DomainEntry {
    pub(crate) record: DomainRecord,
    pub(crate) index: DomainIndex,
    pub(crate) bindings: Vec<Option<BindingDomain>>,
    pub(crate) backoff_timer: Option<TimerKey>,
    /// The route was set by `register_domain` and overrides the configured
    /// one in every settings snapshot.
    pub(crate) route_registered: bool,
}

impl DomainEntry {
    pub(crate) fn new(record: DomainRecord, index: DomainIndex) -> Self {
        Self {
            record,
            index,
            bindings: Vec::new(),
            backoff_timer: None,
            route_registered: false,
        }
    }

    /// The domain's record: route, live connections, counters, backoff.
    pub fn record(&self) -> &DomainRecord {
        &self.record
    }

    /// The queues and connections of one binding to this domain, if that
    /// binding ever had mail for it.
    pub fn binding(&self, slot: BindingSlot) -> Option<&BindingDomain> {
        self.bindings.get(slot.index())?.as_ref()
    }

    /// Every binding that has queues for the domain.
    pub fn bindings(&self) -> impl Iterator<Item = (BindingSlot, &BindingDomain)> {
        self.bindings
            .iter()
            .enumerate()
            .filter_map(|(index, lane)| {
                let slot = BindingSlot(u16::try_from(index).ok()?);
                lane.as_ref().map(|lane| (slot, lane))
            })
    }

    /// Whether the domain's connection backoff is in force at `now`.
    pub fn in_backoff(&self, now: Instant) -> bool {
        self.record.backoff_until.is_some_and(|until| until > now)
    }

    pub(crate) fn lane_mut(&mut self, slot: BindingSlot) -> Option<&mut BindingDomain> {
        self.bindings.get_mut(slot.index())?.as_mut()
    }

    /// Splits the entry into its record and one binding's queues.
    pub(crate) fn split_mut(
        &mut self,
        slot: BindingSlot,
    ) -> Option<(&mut DomainRecord, &mut BindingDomain)> {
        let lane = self.bindings.get_mut(slot.index())?.as_mut()?;
        Some((&mut self.record, lane))
    }

    pub(crate) fn lane_key(&self, slot: BindingSlot) -> LaneKey {
        LaneKey::new(self.index, slot)
    }
}

/// One binding's queues and connections for one domain.
//
// The fields that each connection of the lane uses come first, and the
// struct starts on a 64-byte cache line, so those fields fill two lines.
// With 100,000 domains most lanes are out of the CPU caches, and each
// further line is one more miss per connection.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct BindingDomain {
    pub(crate) active: ActiveQueue,
    /// Idle connections, most recently idle last; reuse takes from the end
    /// so the others reach their idle timeout.
    pub(crate) idle: IdleList,
    pub(crate) counts: ConnectionCounts,
    pub(crate) settings: Arc<EffectiveSettings>,
    /// The metric series of this binding × domain's label pair.
    pub(crate) metrics: LaneMetrics,
    /// Live connections in `Connecting`; each will take a batch when ready.
    pub(crate) connecting: u32,
    pub(crate) wake_pending: bool,
    pub(crate) delayed: DelayedQueue,
    pub(crate) retry_timer: Option<TimerKey>,
    /// The ticket of this lane's current entry in a wait list; older
    /// entries are stale.
    pub(crate) wait_ticket: u64,
    /// The limit whose wait list contains the current entry, if any.
    pub(crate) waiting_on: Option<Resource>,
}

impl BindingDomain {
    pub(crate) fn new(settings: Arc<EffectiveSettings>, metrics: LaneMetrics) -> Self {
        Self {
            active: ActiveQueue::default(),
            idle: IdleList::default(),
            counts: ConnectionCounts::default(),
            settings,
            metrics,
            connecting: 0,
            wake_pending: false,
            delayed: DelayedQueue::default(),
            retry_timer: None,
            wait_ticket: 0,
            waiting_on: None,
        }
    }

    /// Messages ready to send.
    pub fn active(&self) -> &ActiveQueue {
        &self.active
    }

    /// Messages waiting for their retry time.
    pub fn delayed(&self) -> &DelayedQueue {
        &self.delayed
    }

    /// The settings snapshot that new connections get.
    pub fn settings(&self) -> &Arc<EffectiveSettings> {
        &self.settings
    }

    /// Connections of this binding to this domain.
    pub fn counts(&self) -> ConnectionCounts {
        self.counts
    }

    /// Connections still connecting.
    pub fn connecting(&self) -> u32 {
        self.connecting
    }

    /// Idle connections waiting for mail.
    pub fn idle(&self) -> &[ConnectionHandle] {
        self.idle.as_slice()
    }

    /// Connections the backlog needs beyond those connecting: one per
    /// `batch_size` messages waiting.
    pub(crate) fn connections_needed(&self) -> u32 {
        let batch = self.settings.batch_size.max(1) as usize;
        let wanted = self.active.len().div_ceil(batch);
        u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .saturating_sub(self.connecting)
    }

    pub(crate) fn remove_idle(&mut self, handle: ConnectionHandle) -> bool {
        self.idle.remove(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(batch_size: u32) -> BindingDomain {
        let settings = EffectiveSettings {
            batch_size,
            ..EffectiveSettings::default()
        };
        let mut registry = crate::metrics::MetricLabels::new(&ec_types::Config::default(), 1);
        let binding = registry.binding("default");
        let domain = ec_types::Domain::new("example.com").expect("valid");
        BindingDomain::new(Arc::new(settings), registry.lane(&binding, &domain))
    }

    fn queue(lane: &mut BindingDomain, count: u64) {
        use bytes::Bytes;
        use ec_types::{Domain, Message, MessageId, ReversePath};
        for id in 0..count {
            lane.active.push_back(Arc::new(Message {
                id: MessageId(id),
                tag: 0,
                domain: Domain::new("example.com").expect("valid"),
                reverse_path: ReversePath::Null,
                recipients: Vec::new(),
                data: Bytes::new(),
                attempts: 0,
                queued_at: Instant::now(),
                next_attempt: None,
            }));
        }
    }

    #[test]
    fn need_is_one_per_batch() {
        let mut lane = lane(3);
        assert_eq!(lane.connections_needed(), 0);
        queue(&mut lane, 7);
        assert_eq!(lane.connections_needed(), 3);
        lane.connecting = 2;
        assert_eq!(lane.connections_needed(), 1);
        lane.connecting = 5;
        assert_eq!(lane.connections_needed(), 0);
    }

    #[test]
    fn idle_removal_finds_handle() {
        let mut lane = lane(1);
        let a = ConnectionHandle {
            slot: 1,
            generation: 0,
        };
        let b = ConnectionHandle {
            slot: 2,
            generation: 0,
        };
        lane.idle.push(a);
        lane.idle.push(b);
        assert!(lane.remove_idle(a));
        assert!(!lane.remove_idle(a));
        assert_eq!(lane.idle(), &[b]);
    }
}
