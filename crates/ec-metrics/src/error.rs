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

    /// The HTTP listener could not bind its address. The message gives
    /// advice that fits the error's [`io::ErrorKind`].
    #[error(
        "cannot listen for metrics scrapes on {address}: {source}; {}",
        listen_advice(source.kind())
    )]
    Listen {
        /// The address given.
        address: SocketAddr,
        /// The bind error: the operating system's error, or an
        /// [`io::ErrorKind::Other`] error with the exporter's text when that
        /// text carries no OS error code.
        source: io::Error,
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

impl MetricsError {
    /// Builds [`MetricsError::Listen`] from the message of the exporter's
    /// [`BuildError::FailedToCreateHTTPListener`].
    pub(crate) fn listen(address: SocketAddr, exporter_message: String) -> Self {
        Self::Listen {
            address,
            source: bind_error_from_message(exporter_message),
        }
    }
}

/// Recovers the operating system's error from the text of a bind error.
///
/// metrics-exporter-prometheus 0.17 keeps only the `Display` text of the
/// `io::Error` from its bind, and std writes an OS error as
/// "DESCRIPTION (os error CODE)". Parsing CODE restores the error and its kind.
// NOTE: std does not promise that format. Text without a code becomes an
// `Other` error, whose message gives the general advice.
fn bind_error_from_message(message: String) -> io::Error {
    let code = message
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once("(os error "))
        .and_then(|(_, code)| code.parse::<i32>().ok());
    match code {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(message),
    }
}

/// Returns what to do about a failed bind of the listen address, by the
/// kind of the bind error.
fn listen_advice(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::AddrInUse => "choose a free port or stop the process that uses it",
        io::ErrorKind::AddrNotAvailable => {
            "the IP address is not on this host; use one of its own addresses, such as \
             127.0.0.1, or 0.0.0.0 for all of them"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port such as 9464"
        }
        _ => "choose another address, such as 127.0.0.1:9464",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen_message(source: io::Error) -> String {
        let address = SocketAddr::from(([127, 0, 0, 1], 80));
        MetricsError::Listen { address, source }.to_string()
    }

    #[test]
    fn listen_advice_fits_kind() {
        let cases = [
            (io::ErrorKind::AddrInUse, "choose a free port"),
            (io::ErrorKind::AddrNotAvailable, "not on this host"),
            (io::ErrorKind::PermissionDenied, "CAP_NET_BIND_SERVICE"),
            (io::ErrorKind::InvalidInput, "choose another address"),
        ];
        for (kind, advice) in cases {
            let text = listen_message(io::Error::from(kind));
            assert!(text.contains("127.0.0.1:80"), "{kind:?}: {text}");
            assert!(text.contains(advice), "{kind:?}: {text}");
        }
    }

    #[test]
    fn listen_advice_differs_by_kind() {
        let kinds = [
            io::ErrorKind::AddrInUse,
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::Other,
        ];
        let advice: std::collections::HashSet<&str> =
            kinds.iter().map(|&kind| listen_advice(kind)).collect();
        assert_eq!(advice.len(), kinds.len(), "{advice:?}");
    }

    #[test]
    fn bind_error_keeps_os_code() {
        let in_use = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = in_use.local_addr().expect("bound address");
        let original = std::net::TcpListener::bind(address).expect_err("the port is in use");

        let error = bind_error_from_message(original.to_string());
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        assert_eq!(error.raw_os_error(), original.raw_os_error());
        assert_eq!(error.to_string(), original.to_string());
    }

    #[test]
    fn bind_error_without_code_is_other() {
        let error = bind_error_from_message("no listener (os error x)".to_owned());
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert_eq!(error.to_string(), "no listener (os error x)");

        let text = listen_message(bind_error_from_message("no listener".to_owned()));
        assert!(text.contains("no listener"), "{text}");
        assert!(text.contains("choose another address"), "{text}");
    }
}
