//! Where a peer gets the scenario of each connection it accepts.

use std::sync::Arc;

use super::scenario::Scenario;

/// Chooses the scenario of each accepted connection. A fixed list
/// ([`FaultPeer::start_sequence`](super::FaultPeer::start_sequence)) is one
/// source; [`Chaos`](super::Chaos) draws faults at random from a seed.
pub trait ScenarioSource: Send + Sync + 'static {
    /// Returns the scenario of the `connection`-th accepted connection
    /// (from 0).
    fn scenario(&self, connection: usize) -> Arc<Scenario>;
}

/// `scenarios[n]` on the n-th connection and the last one on every later
/// connection.
#[derive(Debug)]
pub(crate) struct Sequence(pub(crate) Vec<Arc<Scenario>>);

impl ScenarioSource for Sequence {
    fn scenario(&self, connection: usize) -> Arc<Scenario> {
        let last = self.0.len() - 1;
        Arc::clone(&self.0[connection.min(last)])
    }
}
