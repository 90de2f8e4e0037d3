//! The global exporter: install once, serve scrapes over HTTP, refuse a
//! second install and unusable addresses. This file is its own test
//! process, so its global recorder meets no other test's.

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener};

use common::{free_port, http_get, Exposition};
use ec_metrics::{
    BindingLabels, DomainLabels, Exporter, ExporterConfig, ExporterHandle, MetricsError,
};
use ec_types::{Domain, MessageFate};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Returns the bind error's kind of a [`MetricsError::Listen`].
fn listen_error_kind(error: &MetricsError) -> io::ErrorKind {
    match error {
        MetricsError::Listen { source, .. } => source.kind(),
        other => panic!("expected a Listen error, got {other:?}"),
    }
}

/// Installs on a free loopback port, trying a new port when another
/// process took the chosen one in the meantime.
fn install_on_free_port() -> ExporterHandle {
    let mut last_error = None;
    for _ in 0..5 {
        match Exporter::install(ExporterConfig::listen_on(loopback(free_port()))) {
            Ok(handle) => return handle,
            Err(error @ MetricsError::Listen { .. }) => last_error = Some(error),
            Err(error) => panic!("install failed: {error}"),
        }
    }
    panic!("no free port after 5 tries: {last_error:?}");
}

#[test]
fn port_zero_rejected() {
    let error = Exporter::install(ExporterConfig::listen_on(loopback(0)))
        .expect_err("port 0 cannot be scraped");

    assert!(matches!(error, MetricsError::PortZero { .. }), "{error:?}");
    assert!(error.to_string().contains("127.0.0.1:0"), "{error}");
}

#[test]
fn install_serve_and_refuse_second() {
    // A port in use fails with a Listen error and leaves nothing installed.
    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let occupied_address = occupied.local_addr().expect("bound address");
    let error = Exporter::install(ExporterConfig::listen_on(occupied_address))
        .expect_err("the port is taken");
    assert_eq!(listen_error_kind(&error), io::ErrorKind::AddrInUse);
    let text = error.to_string();
    assert!(text.contains(&occupied_address.to_string()), "{text}");
    assert!(
        text.contains("choose a free port or stop the process that uses it"),
        "{text}"
    );
    drop(occupied);

    // 192.0.2.1 (TEST-NET-1, RFC 5737) is an address of no host, so the
    // bind fails with EADDRNOTAVAIL. A bind sends no packet.
    let foreign = SocketAddr::from(([192, 0, 2, 1], 9464));
    let error = Exporter::install(ExporterConfig::listen_on(foreign))
        .expect_err("the address is not on this host");
    assert_eq!(listen_error_kind(&error), io::ErrorKind::AddrNotAvailable);
    let text = error.to_string();
    assert!(text.contains("192.0.2.1:9464"), "{text}");
    assert!(
        text.contains("the IP address is not on this host"),
        "{text}"
    );
    assert!(!text.contains("free port"), "{text}");

    let handle = install_on_free_port();
    let address = handle.listen_address().expect("installed with a listener");
    assert!(address.ip().is_loopback());

    let second = Exporter::install(ExporterConfig::without_listener())
        .expect_err("the global recorder is set once per process");
    assert!(
        matches!(second, MetricsError::AlreadyInstalled),
        "{second:?}"
    );

    let binding = BindingLabels::new(["default"])
        .get("default")
        .expect("configured");
    let domain = DomainLabels::new([], 10).label(&Domain::new("example.org").expect("valid"));
    for _ in 0..4 {
        ec_metrics::message_fate(&binding, &domain, MessageFate::Deferred);
    }
    ec_metrics::connection_opened(&binding, &domain);

    let (status, body) = http_get(address, "/metrics").expect("the exporter answers");
    assert_eq!(status, 200, "{body}");
    let scraped = Exposition::parse(&body);
    assert_eq!(
        scraped.value(
            "ec_message_fates_total",
            &[("domain", "example.org"), ("fate", "deferred")]
        ),
        4.0
    );
    assert_eq!(
        scraped.value("ec_connections_live", &[("domain", "example.org")]),
        1.0
    );
    assert!(
        scraped.help.contains_key("ec_message_fates_total"),
        "descriptions are registered on install"
    );

    let rendered = Exposition::parse(&handle.render());
    assert_eq!(
        rendered.value("ec_message_fates_total", &[("fate", "deferred")]),
        4.0
    );
}
