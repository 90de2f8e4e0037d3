//! Errors from installing the exporter.

use std::io;
use std::net::SocketAddr;

use metrics_exporter_prometheus::BuildError;
use thiserror::Error;

/// Why [`Exporter::install`](crate::Exporter::install) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// `install` already succeeded in this process. The global recorder can
    /// be set once per process; keep the first [`ExporterHandle`](crate::ExporterHandle)
    /// and clone it where it is needed.
    #[error(
        "the ec metrics exporter is already installed in this process; \
         call Exporter::install once and clone the handle it returned"
    )]
    AlreadyInstalled,

    /// Another library installed a global `metrics` recorder first.
    #[error(
        "another metrics recorder is already installed as this process's global recorder; \
         remove that installation or use ec_metrics::describe_all with that recorder"
    )]
    ForeignRecorder,

    /// The listen address has port 0. The kernel would pick a port, and the
    /// exporter has no way to report which one, so nobody could scrape it.
    #[error("metrics listen address {address} has port 0; give a fixed port such as 9464")]
    PortZero {
        /// The address given.
        address: SocketAddr,
    },

    /// The HTTP listener could not bind its address.
    #[error(
        "cannot listen for metrics scrapes on {address}: {source}; \
         choose a free address or stop the process that uses it"
    )]
    Listen {
        /// The address given.
        address: SocketAddr,
        /// The exporter's error, which carries the operating system's
        /// message as text.
        source: BuildError,
    },

    /// The exporter's runtime or thread could not be started.
    #[error("cannot start the metrics exporter thread: {source}")]
    Thread {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The Prometheus recorder rejected its configuration.
    #[error("the Prometheus recorder rejected the ec metrics configuration: {0}")]
    Exporter(#[from] BuildError),
}
