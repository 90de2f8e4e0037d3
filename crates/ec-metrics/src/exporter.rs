//! The process-wide Prometheus exporter: a global recorder and, when asked,
//! an HTTP listener that serves its exposition text to scrapes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use metrics_exporter_prometheus::{
    BuildError, ExporterFuture, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::catalog::{self, MetricKind};
use crate::error::MetricsError;

/// The default scrape address: loopback only, on 9464, the default port of
/// OpenTelemetry's Prometheus exporters. Listening on other interfaces
/// must be asked for with [`ExporterConfig::listen_on`].
pub const DEFAULT_LISTEN_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How often histogram samples are folded into their buckets when nothing
/// scrapes; a scrape also folds them.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Set once an installation has succeeded or is under way, so a second
/// call fails before it binds a port or builds a recorder.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Settings of the exporter: where it serves metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterConfig {
    /// The address of the HTTP listener that serves scrapes (any path
    /// returns the exposition text), or `None` for no listener: the program
    /// then reads the text with [`ExporterHandle::render`].
    pub listen: Option<SocketAddr>,
}

impl ExporterConfig {
    /// Serve scrapes on `address`.
    pub fn listen_on(address: SocketAddr) -> Self {
        Self {
            listen: Some(address),
        }
    }

    /// Install the recorder without an HTTP listener.
    pub fn without_listener() -> Self {
        Self { listen: None }
    }
}

impl Default for ExporterConfig {
    /// Serve scrapes on [`DEFAULT_LISTEN_ADDRESS`].
    fn default() -> Self {
        Self::listen_on(DEFAULT_LISTEN_ADDRESS)
    }
}

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder.
#[derive(Debug)]
pub struct Exporter;

impl Exporter {
    /// Installs the global recorder, registers every metric's description,
    /// and starts the HTTP listener if `config` requests one.
    ///
    /// The listener runs on its own thread with a single-threaded Tokio
    /// runtime, so scrapes never take time from the program's own runtime,
    /// and it runs until the process exits. The same thread folds histogram
    /// samples into buckets every few seconds.
    ///
    /// # Errors
    ///
    /// - [`MetricsError::AlreadyInstalled`] when an earlier call succeeded
    ///   (or is still running on another thread). The `metrics` global
    ///   recorder can be set once per process.
    /// - [`MetricsError::ForeignRecorder`] when another library set the
    ///   global recorder first.
    /// - [`MetricsError::PortZero`] and [`MetricsError::Listen`] when the
    ///   listen address is unusable. Port 0 is rejected before anything
    ///   else is checked.
    /// - [`MetricsError::Thread`] when the exporter thread cannot start.
    ///
    /// After an error this call has installed nothing, so it may be retried,
    /// for example with another address. A listener that it bound is closed
    /// before it returns, except after [`MetricsError::ForeignRecorder`],
    /// where the exporter thread closes it within milliseconds.
    pub fn install(config: ExporterConfig) -> Result<ExporterHandle, MetricsError> {
        if let Some(address) = config.listen.filter(|address| address.port() == 0) {
            return Err(MetricsError::PortZero { address });
        }

        if INSTALLED
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(MetricsError::AlreadyInstalled);
        }

        let result = match config.listen {
            Some(address) => install_with_listener(address),
            None => install_without_listener(),
        };
        if result.is_err() {
            INSTALLED.store(false, Ordering::Release);
        }
        result
    }
}

/// A handle on the installed exporter. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct ExporterHandle {
    prometheus: PrometheusHandle,
    listen: Option<SocketAddr>,
}

impl ExporterHandle {
    /// Renders every series in the Prometheus text exposition format
    /// (version 0.0.4), exactly as a scrape would receive it.
    pub fn render(&self) -> String {
        self.prometheus.render()
    }

    /// Returns the address of the HTTP listener, if there is one.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.listen
    }
}

/// Creates a Prometheus builder with the histogram buckets of every histogram in
/// the catalog. The unit suffix option stays off because catalog names
/// already carry their unit.
pub(crate) fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for def in catalog::ALL {
        if def.kind == MetricKind::Histogram {
            builder =
                builder.set_buckets_for_metric(Matcher::Full(def.name.to_owned()), def.buckets)?;
        }
    }
    Ok(builder)
}

fn install_with_listener(address: SocketAddr) -> Result<ExporterHandle, MetricsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| MetricsError::Thread { source })?;

    // `build` binds the listener and spawns the upkeep task, and both need
    // the runtime entered.
    let built = {
        let _entered = runtime.enter();
        prometheus_builder()?.with_http_listener(address).build()
    };
    let (recorder, exporter) = built.map_err(|source| match source {
        BuildError::FailedToCreateHTTPListener(message) => MetricsError::listen(address, message),
        other => MetricsError::Exporter(other),
    })?;
    let prometheus = recorder.handle();

    start_gated("ec-metrics-http", recorder, move || {
        run_listener(runtime, exporter, address);
    })?;

    tracing::debug!(%address, "metrics exporter listening");
    Ok(ExporterHandle {
        prometheus,
        listen: Some(address),
    })
}

fn run_listener(runtime: tokio::runtime::Runtime, exporter: ExporterFuture, address: SocketAddr) {
    if let Err(error) = runtime.block_on(exporter) {
        tracing::error!(%address, ?error, "metrics HTTP listener stopped; scrapes of this address will fail");
    }
}

fn install_without_listener() -> Result<ExporterHandle, MetricsError> {
    let recorder = prometheus_builder()?.build_recorder();
    let prometheus = recorder.handle();

    let upkeep = prometheus.clone();
    start_gated("ec-metrics-upkeep", recorder, move || loop {
        thread::sleep(UPKEEP_INTERVAL);
        upkeep.run_upkeep();
    })?;

    Ok(ExporterHandle {
        prometheus,
        listen: None,
    })
}

/// Starts the exporter's thread, installs `recorder` globally, and only then
/// lets the thread run `work`. If the recorder cannot be installed, the
/// thread ends without running `work`, which drops the listener and frees
/// its port.
fn start_gated(
    name: &str,
    recorder: PrometheusRecorder,
    work: impl FnOnce() + Send + 'static,
) -> Result<(), MetricsError> {
    let (go, wait) = mpsc::channel::<()>();
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if wait.recv().is_ok() {
                work();
            }
        })
        .map_err(|source| MetricsError::Thread { source })?;

    if metrics::set_global_recorder(recorder).is_err() {
        return Err(MetricsError::ForeignRecorder);
    }
    catalog::describe_all();

    // The thread keeps the receiver until this send, so it cannot fail.
    let _ = go.send(());
    Ok(())
}
