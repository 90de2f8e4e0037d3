//! A recorder that is not installed globally, for tests and for programs
//! that want metrics without touching the process-wide recorder.

use std::fmt;

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use crate::catalog;
use crate::exporter::prometheus_builder;

/// A Prometheus recorder with the same buckets and descriptions as the
/// installed exporter, in effect only inside [`scope`](Self::scope).
///
/// Each test can make its own, so tests running in parallel in one process
/// never share counts and never fight over the global recorder.
///
/// ```
/// use ec_metrics::LocalRecorder;
///
/// let recorder = LocalRecorder::new();
/// recorder.scope(|| ec_metrics::audit_failure());
/// assert!(recorder.render().contains("ec_accounting_audit_failures_total 1"));
/// ```
pub struct LocalRecorder {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl LocalRecorder {
    /// A new recorder with every metric's description registered.
    ///
    /// # Panics
    ///
    /// Only if a histogram in the catalog had no buckets, which the
    /// catalog's tests rule out.
    pub fn new() -> Self {
        let recorder = prometheus_builder()
            .expect("every catalog histogram has buckets")
            .build_recorder();
        let handle = recorder.handle();
        let local = Self { recorder, handle };
        local.scope(catalog::describe_all);
        local
    }

    /// Runs `f` with this recorder in effect on the current thread. Calls
    /// made on other threads, including tasks that `f` spawns, go to the
    /// global recorder.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Renders every series recorded in this recorder, in the Prometheus
    /// text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for LocalRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRecorder").finish_non_exhaustive()
    }
}
