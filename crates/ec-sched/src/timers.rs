//! Every timer of the scheduler, in two ordered maps.
//!
//! A timer is keyed by its deadline and a never-reused [`TimerId`], so
//! scheduling and cancelling are O(log n) in the number of pending timers,
//! and finding the next deadline is O(1). The owner of a timer keeps its
//! [`TimerKey`] and cancels it by key.

use std::collections::BTreeMap;
use std::time::Instant;

use ec_types::{ConnectionHandle, Event, TimerId, TimerKind};

use crate::domain::{DomainIndex, LaneKey};

/// The action of a pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// An idle connection has waited its idle timeout.
    IdleTimeout(ConnectionHandle),
    /// A connection has reached its maximum age.
    MaxAge(ConnectionHandle),
    /// A closing connection is considered gone.
    CloseDeadline(ConnectionHandle),
    /// The earliest message of one binding × domain's delayed queue is due.
    Retry(LaneKey),
    /// A domain's connection backoff has ended.
    Backoff(DomainIndex),
    /// Busy connections that outlived the shutdown grace period are closed.
    ShutdownGrace,
    /// The periodic accounting audit.
    Audit,
}

impl Timer {
    /// The connection the timer belongs to, if any.
    pub(crate) fn connection(self) -> Option<ConnectionHandle> {
        match self {
            Self::IdleTimeout(handle) | Self::MaxAge(handle) | Self::CloseDeadline(handle) => {
                Some(handle)
            }
            Self::Retry(_) | Self::Backoff(_) | Self::ShutdownGrace | Self::Audit => None,
        }
    }

    /// The event that `closeconn` receives for a close this timer causes.
    pub(crate) fn event(self, id: TimerId) -> Event {
        let kind = match self {
            Self::IdleTimeout(handle) => TimerKind::IdleTimeout(handle),
            Self::MaxAge(handle) => TimerKind::MaxAge(handle),
            Self::CloseDeadline(handle) => TimerKind::CloseDeadline(handle),
            Self::Retry(_) => TimerKind::RetryDue,
            Self::Backoff(_) => TimerKind::BackoffOver,
            Self::Audit => TimerKind::Audit,
            Self::ShutdownGrace => return Event::Shutdown,
        };
        Event::Timer { id, kind }
    }
}

/// The key of a scheduled timer: its deadline and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    pub(crate) at: Instant,
    pub(crate) id: TimerId,
}

/// The scheduler's timers.
///
/// Connection timers (idle, maximum age, close deadline) and queue timers
/// (retry, domain backoff) sit in two ordered maps behind one interface.
/// There are at most a few connection timers per live connection. There
/// can be one queue timer per binding × domain with deferred mail, which
/// may be hundreds of thousands. Keeping them apart keeps the map that
/// every connection touches small.
#[derive(Debug)]
pub(crate) struct Timers {
    connections: TimerMap,
    queues: TimerMap,
    next_id: u64,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Self {
            connections: TimerMap::default(),
            queues: TimerMap::default(),
            next_id: 0,
        }
    }

    /// Schedules `timer` to fire at `at`.
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) -> TimerKey {
        self.next_id += 1;
        let key = TimerKey {
            at,
            id: TimerId(self.next_id),
        };
        self.map_for(timer).insert(key, timer);
        key
    }

    fn map_for(&mut self, timer: Timer) -> &mut TimerMap {
        match timer {
            Timer::Retry(_) | Timer::Backoff(_) => &mut self.queues,
            _ => &mut self.connections,
        }
    }

    /// Cancels a timer; a timer that already fired or was cancelled is
    /// ignored.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<Timer> {
        self.connections
            .remove(key)
            .or_else(|| self.queues.remove(key))
    }

    /// Cancels the timer in `slot`, if one is there, and empties the slot.
    pub(crate) fn cancel_slot(&mut self, slot: &mut Option<TimerKey>) {
        if let Some(key) = slot.take() {
            self.cancel(key);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let connection = self.connections.first.map(|key| key.at);
        let queue = self.queues.first.map(|key| key.at);
        match (connection, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes and returns the earliest timer whose deadline is not after
    /// `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, Timer)> {
        let map = match (self.connections.first, self.queues.first) {
            (Some(a), Some(b)) if b < a => &mut self.queues,
            (Some(_), _) => &mut self.connections,
            (None, Some(_)) => &mut self.queues,
            (None, None) => return None,
        };
        let key = map.first.filter(|key| key.at <= now)?;
        let timer = map.remove(key)?;
        Some((key, timer))
    }

    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        self.connections.map.contains_key(&key) || self.queues.map.contains_key(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.connections.map.len() + self.queues.map.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TimerKey, &Timer)> {
        self.connections.map.iter().chain(self.queues.map.iter())
    }
}

/// An ordered map of timers that keeps its earliest key at hand, so that
/// checking for a due timer, which the loop does after every event, reads
/// one field instead of descending the tree.
#[derive(Debug, Default)]
struct TimerMap {
    map: BTreeMap<TimerKey, Timer>,
    /// The map's first key, or `None` when it is empty.
    first: Option<TimerKey>,
}

impl TimerMap {
    fn insert(&mut self, key: TimerKey, timer: Timer) {
        self.map.insert(key, timer);
        if self.first.is_none_or(|first| key < first) {
            self.first = Some(key);
        }
    }

    fn remove(&mut self, key: TimerKey) -> Option<Timer> {
        let timer = self.map.remove(&key)?;
        if self.first == Some(key) {
            self.first = self.map.keys().next().copied();
        }
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn handle(slot: u32) -> ConnectionHandle {
        ConnectionHandle {
            slot,
            generation: 0,
        }
    }

    #[test]
    fn timers_fire_in_deadline_order() {
        let start = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(
            start + Duration::from_secs(2),
            Timer::IdleTimeout(handle(2)),
        );
        timers.schedule(
            start + Duration::from_secs(1),
            Timer::IdleTimeout(handle(1)),
        );
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(1)));

        assert!(timers.pop_due(start).is_none());
        let (_, first) = timers.pop_due(start + Duration::from_secs(5)).expect("due");
        let (_, second) = timers.pop_due(start + Duration::from_secs(5)).expect("due");
        assert_eq!(first, Timer::IdleTimeout(handle(1)));
        assert_eq!(second, Timer::IdleTimeout(handle(2)));
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let start = Instant::now();
        let mut timers = Timers::new();
        let mut slot = Some(timers.schedule(start, Timer::Audit));
        timers.cancel_slot(&mut slot);
        assert!(slot.is_none());
        assert!(timers.pop_due(start + Duration::from_secs(1)).is_none());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancelling_first_moves_deadline() {
        let start = Instant::now();
        let mut timers = Timers::new();
        let first = timers.schedule(start + Duration::from_secs(1), Timer::MaxAge(handle(1)));
        timers.schedule(start + Duration::from_secs(3), Timer::MaxAge(handle(3)));
        let second = timers.schedule(start + Duration::from_secs(2), Timer::MaxAge(handle(2)));
        assert_eq!(timers.next_deadline(), Some(first.at));

        assert_eq!(timers.cancel(first), Some(Timer::MaxAge(handle(1))));
        assert_eq!(timers.next_deadline(), Some(second.at));
        assert!(timers.pop_due(start + Duration::from_secs(1)).is_none());

        let (key, timer) = timers.pop_due(start + Duration::from_secs(2)).expect("due");
        assert_eq!(key, second);
        assert_eq!(timer, Timer::MaxAge(handle(2)));
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(3)));
    }

    #[test]
    fn same_deadline_keeps_both() {
        let start = Instant::now();
        let mut timers = Timers::new();
        let a = timers.schedule(start, Timer::MaxAge(handle(1)));
        let b = timers.schedule(start, Timer::MaxAge(handle(2)));
        assert_ne!(a, b);
        assert!(timers.contains(a));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.iter().count(), 2);
    }

    #[test]
    fn queue_and_connection_timers_interleave() {
        let start = Instant::now();
        let lane = LaneKey::new(DomainIndex(0), ec_types::BindingSlot(0));
        let mut timers = Timers::new();
        let retry = timers.schedule(start + Duration::from_secs(1), Timer::Retry(lane));
        timers.schedule(
            start + Duration::from_secs(2),
            Timer::IdleTimeout(handle(1)),
        );
        timers.schedule(
            start + Duration::from_secs(3),
            Timer::Backoff(DomainIndex(0)),
        );
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(1)));
        assert!(timers.contains(retry));

        let later = start + Duration::from_secs(10);
        let order: Vec<Timer> =
            std::iter::from_fn(|| timers.pop_due(later).map(|(_, t)| t)).collect();
        assert_eq!(
            order,
            vec![
                Timer::Retry(lane),
                Timer::IdleTimeout(handle(1)),
                Timer::Backoff(DomainIndex(0)),
            ]
        );
        assert_eq!(timers.cancel(retry), None);
    }

    #[test]
    fn grace_timer_maps_to_shutdown_event() {
        assert!(matches!(
            Timer::ShutdownGrace.event(TimerId(1)),
            Event::Shutdown
        ));
        assert!(matches!(
            Timer::Retry(LaneKey::new(DomainIndex(0), ec_types::BindingSlot(0))).event(TimerId(3)),
            Event::Timer {
                kind: TimerKind::RetryDue,
                ..
            }
        ));
        assert_eq!(
            Timer::CloseDeadline(handle(4)).connection(),
            Some(handle(4))
        );
    }
}
