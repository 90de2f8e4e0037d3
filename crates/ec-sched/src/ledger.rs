//! Running totals kept per event, so that statistics are O(1) and the audit
//! can recount everything and compare.

use ec_types::ConnectionState;

/// Engine-wide totals. Message totals count messages (one domain's share
/// of a submission), not recipients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Messages that entered the engine.
    pub entered: u64,
    /// Messages that left with every recipient final and at least one
    /// delivered.
    pub delivered: u64,
    /// Messages that left with every recipient failed.
    pub failed: u64,
    /// Messages that left unsent at shutdown.
    pub unsent: u64,
    /// Messages now in active queues.
    pub active: u64,
    /// Messages now in delayed queues.
    pub delayed: u64,
    /// Messages now in a connection's batch.
    pub in_flight: u64,
    /// Times a message went back to the active queue without spending an
    /// attempt.
    pub requeued: u64,
    /// Times a message went to a delayed queue after a 4xx reply or a
    /// connection lost before its final dot.
    pub deferred: u64,
    /// Times a message's final dot got no reply. The message goes to a
    /// delayed queue too, but counts here, not in `deferred`.
    pub delivery_unknown: u64,
    /// Messages failed because they outlived the retry policy's maximum age.
    pub expired: u64,
    /// Transactions reported by sessions.
    pub transactions: u64,
    /// Connections per state.
    pub connecting: u32,
    /// Idle connections.
    pub idle: u32,
    /// Busy connections.
    pub busy: u32,
    /// Closing connections.
    pub closing: u32,
    /// Closes of a connection that was already closing.
    pub duplicate_closes: u64,
    /// Session events for a handle that is stale, or that arrived in a
    /// state where they mean nothing (after the close began).
    pub stale_events: u64,
    /// Session events that break the session contract (a transaction for a
    /// message the connection does not have, `BatchDone` with messages
    /// left, and the like).
    pub protocol_violations: u64,
    /// Count releases that would have gone below zero.
    pub count_underflows: u64,
    /// Connections released at their close deadline without a `Closed`
    /// event.
    pub close_deadlines: u64,
    /// Audits run.
    pub audits: u64,
    /// Audits that found a violation.
    pub audit_failures: u64,
}

impl Ledger {
    /// Moves one connection from state `from` to state `to` in the
    /// per-state counts; `None` is "no connection".
    pub(crate) fn change_state(
        &mut self,
        from: Option<ConnectionState>,
        to: Option<ConnectionState>,
    ) {
        if let Some(from) = from {
            let count = self.state_count(from);
            *count = count.saturating_sub(1);
        }
        if let Some(to) = to {
            *self.state_count(to) += 1;
        }
    }

    fn state_count(&mut self, state: ConnectionState) -> &mut u32 {
        match state {
            ConnectionState::Idle => &mut self.idle,
            ConnectionState::Busy => &mut self.busy,
            ConnectionState::Closing => &mut self.closing,
            // Connecting, and any state a newer ec-types adds before this
            // crate learns it.
            _ => &mut self.connecting,
        }
    }

    /// Messages that are still in the engine by the totals: entered less
    /// those that left.
    pub fn in_engine(&self) -> Option<u64> {
        self.entered
            .checked_sub(self.delivered)?
            .checked_sub(self.failed)?
            .checked_sub(self.unsent)
    }

    /// Live connections by the per-state counts.
    pub fn live_connections(&self) -> u32 {
        self.connecting + self.idle + self.busy + self.closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_move_counts() {
        let mut ledger = Ledger::default();
        ledger.change_state(None, Some(ConnectionState::Connecting));
        ledger.change_state(
            Some(ConnectionState::Connecting),
            Some(ConnectionState::Idle),
        );
        ledger.change_state(Some(ConnectionState::Idle), Some(ConnectionState::Busy));
        assert_eq!(ledger.connecting, 0);
        assert_eq!(ledger.busy, 1);
        assert_eq!(ledger.live_connections(), 1);
        ledger.change_state(Some(ConnectionState::Busy), None);
        assert_eq!(ledger.live_connections(), 0);
    }

    #[test]
    fn in_engine_subtracts_departures() {
        let ledger = Ledger {
            entered: 10,
            delivered: 4,
            failed: 3,
            unsent: 1,
            ..Ledger::default()
        };
        assert_eq!(ledger.in_engine(), Some(2));
        let broken = Ledger {
            entered: 1,
            delivered: 2,
            ..Ledger::default()
        };
        assert_eq!(broken.in_engine(), None);
    }
}
