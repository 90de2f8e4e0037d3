//! A snapshot of the scheduler's counts.

use crate::counts::ConnectionCounts;
use crate::ledger::Ledger;
use crate::scheduler::{Scheduler, TimerLag};

/// The scheduler's counts at one moment. Taking it is O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Message totals, connections per state, and error counters.
    pub ledger: Ledger,
    /// Engine-wide connections: live, opened, closed.
    pub connections: ConnectionCounts,
    /// Domains the engine has seen.
    pub domains: usize,
    /// Registered bindings.
    pub bindings: usize,
    /// Timers scheduled.
    pub pending_timers: usize,
    /// How late timers fired: the loop's lag.
    pub timer_lag: TimerLag,
    /// A shutdown has begun.
    pub shutting_down: bool,
    /// The shutdown has finished: no connection is left and every message
    /// has left the engine.
    pub shut_down: bool,
}

impl Scheduler {
    /// Takes a snapshot of the counts.
    pub fn stats(&self) -> Stats {
        Stats {
            ledger: self.ledger,
            connections: self.engine,
            domains: self.domains.len(),
            bindings: self.bindings.len(),
            pending_timers: self.timers.len(),
            timer_lag: self.timer_lag,
            shutting_down: self.shutdown.is_some(),
            shut_down: self.shutdown.as_ref().is_some_and(|s| s.finished),
        }
    }
}
