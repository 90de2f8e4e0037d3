//! The shared connection limits (engine, binding, remote host) and the
//! lists of binding × domains waiting for room under them.
//!
//! A binding × domain that has mail but cannot open a connection because a
//! shared limit is full waits in that limit's [`WaitList`]. When a
//! connection under the limit is released, waiters are woken while the
//! limit has room, so nothing scans all domains to find work.

use std::collections::VecDeque;
use std::sync::Arc;

use ec_metrics::BindingLabel;
use ec_types::{Binding, BindingSlot, EffectiveSettings, Target};

use crate::counts::ConnectionCounts;
use crate::domain::LaneKey;

/// One binding in the scheduler's binding table.
#[derive(Debug)]
pub struct BindingEntry {
    pub(crate) binding: Binding,
    pub(crate) slot: BindingSlot,
    /// Its `binding` metric label.
    pub(crate) label: BindingLabel,
    /// Its name, shared with the sessions that log it.
    pub(crate) name: Arc<str>,
    pub(crate) counts: ConnectionCounts,
    pub(crate) waiters: WaitList,
    /// Settings for every domain that no configuration scope names, shared
    /// so that 100,000 such domains cost one snapshot.
    pub(crate) default_settings: Arc<EffectiveSettings>,
}

impl BindingEntry {
    /// The binding.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Its slot.
    pub fn slot(&self) -> BindingSlot {
        self.slot
    }

    /// Connections from this binding across all domains.
    pub fn counts(&self) -> ConnectionCounts {
        self.counts
    }
}

/// The key of the per-host limit: a connection target as seen from one
/// binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    /// Where connections go.
    pub target: Target,
    /// The binding they come from.
    pub binding: BindingSlot,
}

/// Connections to one host from one binding.
#[derive(Debug, Default)]
pub(crate) struct HostEntry {
    pub(crate) counts: ConnectionCounts,
    pub(crate) waiters: WaitList,
}

/// A shared limit whose room may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    Engine,
    Binding(BindingSlot),
    Host(HostKey),
}

/// Binding × domains waiting for room under one limit, oldest first.
///
/// An entry is valid only while its ticket equals the lane's current
/// `wait_ticket`: a lane that waits again (perhaps under another limit) gets
/// a new ticket, and its old entries are skipped when popped. That makes
/// "move to another list" O(1).
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    entries: VecDeque<(LaneKey, u64)>,
}

impl WaitList {
    pub(crate) fn push(&mut self, lane: LaneKey, ticket: u64) {
        self.entries.push_back((lane, ticket));
    }

    /// Pops entries until `is_current` accepts one.
    pub(crate) fn pop_valid(
        &mut self,
        mut is_current: impl FnMut(LaneKey, u64) -> bool,
    ) -> Option<LaneKey> {
        while let Some((lane, ticket)) = self.entries.pop_front() {
            if is_current(lane, ticket) {
                return Some(lane);
            }
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainIndex;

    #[test]
    fn wait_list_skips_stale_tickets() {
        let a = LaneKey::new(DomainIndex(1), BindingSlot(0));
        let b = LaneKey::new(DomainIndex(2), BindingSlot(0));
        let mut list = WaitList::default();
        list.push(a, 1);
        list.push(b, 1);
        list.push(a, 3);

        let current = |lane: LaneKey, ticket: u64| lane != a || ticket == 3;
        assert_eq!(list.pop_valid(current), Some(b));
        assert_eq!(list.pop_valid(current), Some(a));
        assert_eq!(list.pop_valid(current), None);
        assert!(list.is_empty());
    }
}
