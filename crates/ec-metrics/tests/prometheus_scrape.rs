//! A real Prometheus server scrapes the exporter, queries through its HTTP
//! API return the counts recorded here, and it accepts every example query
//! of the catalog. Its own test process, because
//! it installs the global recorder.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, http_get, url_encode};
use ec_metrics::catalog;
use ec_metrics::{
    BindingLabels, DomainLabels, Exporter, ExporterConfig, ExporterHandle, MetricsError,
};
use ec_types::{CloseOutcome, CloseReason, Domain, MessageFate};

/// Where Debian's `prometheus` package puts the server.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// How long the server may take to start, scrape and return a query result.
const DEADLINE: Duration = Duration::from_secs(60);

/// A Prometheus server started by this test, killed when dropped.
struct PrometheusServer {
    child: Child,
    address: SocketAddr,
    log: std::path::PathBuf,
}

impl PrometheusServer {
    /// Starts a server that scrapes `target` every second, on a free
    /// loopback port, retrying with a new port if the chosen one is taken.
    fn start(target: SocketAddr, dir: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ec\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus configuration");

        for attempt in 0..3 {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let log_file = fs::File::create(&log).expect("create the server log");
            let child = match Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
            {
                Ok(child) => child,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                    "{PROMETHEUS} not found; install it with `apt-get install -y prometheus`"
                ),
                Err(error) => panic!("cannot start {PROMETHEUS}: {error}"),
            };

            let mut server = Self {
                child,
                address,
                log,
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("Prometheus did not start on any of 3 ports");
    }

    /// Waits for `/-/ready`; false when the server exited (its port was
    /// taken), panics when it neither starts nor exits in time.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                eprintln!("Prometheus exited with {status}:\n{}", self.log_text());
                return false;
            }
            if let Ok((200, _)) = http_get(self.address, "/-/ready") {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Prometheus at {} not ready after {DEADLINE:?}:\n{}",
            self.address,
            self.log_text()
        );
    }

    /// Runs an instant query and returns the single result's value, or
    /// `None` while the result is empty.
    fn query_single_value(&self, promql: &str) -> Option<String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.address, &path).ok()?;
        assert_eq!(status, 200, "query {promql} failed: {body}");
        assert!(body.contains(r#""status":"success""#), "{body}");
        if body.contains(r#""result":[]"#) {
            return None;
        }
        // The result is `[{"metric":{...},"value":[<time>,"<value>"]}]`;
        // the value is the last quoted string.
        let value_start = body.rfind(",\"")? + 2;
        let value_end = value_start + body[value_start..].find('"')?;
        Some(body[value_start..value_end].to_owned())
    }

    /// Runs an instant query and panics unless Prometheus accepts it.
    fn assert_query_valid(&self, promql: &str) {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.address, &path)
            .unwrap_or_else(|error| panic!("query {promql} failed: {error}"));
        assert_eq!(status, 200, "Prometheus rejected {promql}: {body}");
        assert!(body.contains(r#""status":"success""#), "{promql}: {body}");
    }

    /// Repeats `promql` until it returns `expected` or the deadline passes.
    fn wait_for_value(&self, promql: &str, expected: &str) {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < DEADLINE {
            last = self.query_single_value(promql);
            if last.as_deref() == Some(expected) {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{promql} returned {last:?}, not {expected:?}, after {DEADLINE:?}:\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn install_on_free_port() -> ExporterHandle {
    for _ in 0..5 {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        match Exporter::install(ExporterConfig::listen_on(address)) {
            Ok(handle) => return handle,
            Err(MetricsError::Listen { .. }) => continue,
            Err(error) => panic!("install failed: {error}"),
        }
    }
    panic!("no free port for the exporter after 5 tries");
}

#[test]
fn prometheus_scrapes_recorded_counts() {
    let exporter = install_on_free_port();
    let target = exporter
        .listen_address()
        .expect("installed with a listener");

    let binding = BindingLabels::new(["default"])
        .get("default")
        .expect("configured");
    let domain = DomainLabels::new([], 10).label(&Domain::new("scrape.example").expect("valid"));
    for _ in 0..7 {
        ec_metrics::message_fate(&binding, &domain, MessageFate::Delivered);
    }
    for _ in 0..5 {
        ec_metrics::connection_opened(&binding, &domain);
    }
    for _ in 0..2 {
        ec_metrics::connection_closed(
            &binding,
            &domain,
            CloseReason::IdleTimeout,
            CloseOutcome::Clean,
            Duration::from_secs(3),
        );
    }

    let dir = tempfile::tempdir().expect("create a temporary directory");
    let server = PrometheusServer::start(target, dir.path());

    server.wait_for_value(
        r#"ec_message_fates_total{job="ec",domain="scrape.example",fate="delivered"}"#,
        "7",
    );
    server.wait_for_value(r#"ec_connections_live{domain="scrape.example"}"#, "3");
    server.wait_for_value(
        "sum(ec_connections_opened_total) - sum(ec_connections_closed_total) \
         - sum(ec_connections_live)",
        "0",
    );
    server.wait_for_value(r#"up{job="ec"}"#, "1");

    for def in catalog::ALL {
        for query in def.queries {
            server.assert_query_valid(query.promql);
        }
    }
}
