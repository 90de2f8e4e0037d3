//! Installing when another library already set the global recorder: a
//! clear error, and the listener's port is released. Its own test process,
//! because it sets the global recorder.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::free_port;
use ec_metrics::{Exporter, ExporterConfig, MetricsError};
use metrics_exporter_prometheus::PrometheusBuilder;

#[test]
fn foreign_recorder_refused_port_released() {
    PrometheusBuilder::new()
        .install_recorder()
        .expect("the first global recorder of this process installs");

    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let error = Exporter::install(ExporterConfig::listen_on(address))
        .expect_err("the global recorder is taken");
    assert!(matches!(error, MetricsError::ForeignRecorder), "{error:?}");

    // The exporter thread drops its listener when it learns of the failure.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(address) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("{address} still bound 5 s after the failed install: {error}"),
        }
    }

    let again = Exporter::install(ExporterConfig::without_listener())
        .expect_err("the global recorder is still taken");
    assert!(matches!(again, MetricsError::ForeignRecorder), "{again:?}");
}
