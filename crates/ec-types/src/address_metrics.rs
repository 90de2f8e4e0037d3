//! Per remote address and binding statistics (Momentum's `address_metrics`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The key of an [`AddressMetrics`] entry: one remote IP as seen from one
/// binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressKey {
    /// The remote IP address.
    pub ip: IpAddr,
    /// The binding's slot.
    pub binding: crate::binding::BindingSlot,
}

/// What the engine has learned about one remote address from one binding.
/// It steers the choice among a domain's MX hosts and enforces the
/// per-host connection limit.
#[derive(Debug, Clone, Default)]
pub struct AddressMetrics {
    /// Connections to the address that are connecting, open or closing.
    pub live_connections: u32,
    /// Connections ever opened to it.
    pub connections_opened: u64,
    /// Connections to it whose socket is gone.
    pub connections_closed: u64,
    /// When the last connect or session failure happened.
    pub last_failure: Option<Instant>,
    /// Failed connects since the last success.
    pub consecutive_failures: u32,
    /// Moving average of the time from connect start to ready.
    pub average_connect_time: Option<Duration>,
    /// Moving average of one transaction's time, MAIL to the final reply.
    pub average_delivery_time: Option<Duration>,
}

impl AddressMetrics {
    /// Weight of the newest sample in the moving averages.
    const SMOOTHING: f64 = 0.2;

    /// Folds one connect time into the moving average.
    pub fn record_connect_time(&mut self, sample: Duration) {
        self.average_connect_time = Some(Self::smooth(self.average_connect_time, sample));
        self.consecutive_failures = 0;
    }

    /// Folds one transaction time into the moving average.
    pub fn record_delivery_time(&mut self, sample: Duration) {
        self.average_delivery_time = Some(Self::smooth(self.average_delivery_time, sample));
    }

    /// Records a connect or session failure.
    pub fn record_failure(&mut self, now: Instant) {
        self.last_failure = Some(now);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    fn smooth(previous: Option<Duration>, sample: Duration) -> Duration {
        match previous {
            None => sample,
            Some(previous) => {
                previous.mul_f64(1.0 - Self::SMOOTHING) + sample.mul_f64(Self::SMOOTHING)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_starts_at_first_sample() {
        let mut metrics = AddressMetrics::default();
        metrics.record_connect_time(Duration::from_millis(100));
        assert_eq!(
            metrics.average_connect_time,
            Some(Duration::from_millis(100))
        );
        metrics.record_connect_time(Duration::from_millis(200));
        assert_eq!(
            metrics.average_connect_time,
            Some(Duration::from_millis(120))
        );
    }

    #[test]
    fn success_clears_failure_streak() {
        let mut metrics = AddressMetrics::default();
        metrics.record_failure(Instant::now());
        metrics.record_failure(Instant::now());
        assert_eq!(metrics.consecutive_failures, 2);
        metrics.record_connect_time(Duration::from_millis(5));
        assert_eq!(metrics.consecutive_failures, 0);
    }
}
