//! The whole engine with the Prometheus exporter installed, scraped over
//! HTTP while it delivers to real peers.
//!
//! - Postfix over verified STARTTLS: every scrape passes `promtool check
//!   metrics`, opened − closed equals the live-connection gauge at every
//!   scrape, and the gauge reads 0 once every connection is gone. Then a
//!   Prometheus server scrapes the exporter and a query through its HTTP
//!   API returns the delivered count that the run reported.
//! - smtp-sink, for more domains than the `domain` label limit: no more
//!   `domain` values appear than the limit plus `other`.
//!
//! The exporter installs the process-wide `metrics` recorder, which can be
//! set once per process, so every scenario runs in one test, in order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ec_metrics::{Exporter, ExporterConfig, MetricsError};
use ec_sched::{RecipientOutcome, Report};
use ec_smtp_client::{Engine, EngineOptions};
use ec_tests::delivery::{config_for, init_tracing, submission};
use ec_tests::peers::{Postfix, SmtpSink};
use ec_types::{Config, Route, Submission, TlsPolicy, TlsSettings, TlsVerify};

/// Where Debian's `prometheus` package puts its tools.
const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Messages delivered to Postfix.
const POSTFIX_MESSAGES: u64 = 300;

/// Distinct destination domains sent to smtp-sink.
const SINK_DOMAINS: u64 = 30;

/// The `domain` label limit of the smtp-sink run, below [`SINK_DOMAINS`].
const DOMAIN_LABEL_LIMIT: usize = 4;

/// How often the run is scraped while it delivers.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(20);

/// Scrapes taken at least while a run's engine is up.
const MIN_SCRAPES: usize = 4;

/// How long a run, a server start or a query may take.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn engine_metrics_scraped() {
    init_tracing();
    let exporter = install_on_free_port();
    let scraper = Scraper {
        address: exporter
            .listen_address()
            .expect("installed with a listener"),
    };

    let delivered = postfix_run_scraped(&scraper);

    let dir = tempfile::tempdir().expect("create a temporary directory");
    let prometheus = PrometheusServer::start(scraper.address, dir.path());
    prometheus.wait_for_value(r#"up{job="ec"}"#, "1");
    prometheus.wait_for_value(
        r#"sum(ec_message_fates_total{job="ec",fate="delivered"})"#,
        &delivered.to_string(),
    );
    prometheus.wait_for_value(
        r#"sum(ec_recipients_total{job="ec",result="delivered"})"#,
        &delivered.to_string(),
    );
    prometheus.wait_for_value(r#"sum(ec_connections_live{job="ec"})"#, "0");
    drop(prometheus);

    sink_run_label_bound(&scraper);
}

/// Delivers to Postfix over STARTTLS while scraping; returns how many
/// recipients the run reported delivered.
fn postfix_run_scraped(scraper: &Scraper) -> u64 {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("metrics");
    let mut config = config_for(
        "maildir.test",
        Route::Relay {
            host: "127.0.0.1".to_owned(),
            port: postfix.plain_addr().port(),
        },
    );
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(TlsVerify::Host),
        ca_file: Some(postfix.ca_file().to_owned()),
        server_name: Some(postfix.server_name().to_owned()),
    });
    config.global.max_outbound_connections = Some(4);
    let submissions = (0..POSTFIX_MESSAGES)
        .map(|tag| {
            let body = format!("Subject: metrics {tag}\r\n\r\nbody {tag}\r\n");
            submission(
                tag,
                "sender@ec.test",
                &[format!("{local}@maildir.test")],
                body.as_bytes(),
            )
        })
        .collect();

    let run = scraped_run(scraper, config, EngineOptions::default(), submissions);

    let delivered = run.delivered;
    assert_eq!(delivered, POSTFIX_MESSAGES, "{:?}", run.other_outcomes);
    assert!(
        run.scrapes_with_live_connections >= 3,
        "only {} of {} scrapes caught a live connection",
        run.scrapes_with_live_connections,
        run.scrapes
    );
    let last = &run.last;
    assert_eq!(
        last.sum("ec_message_fates_total", &[("fate", "delivered")]),
        delivered as f64
    );
    assert_eq!(
        last.sum(
            "ec_smtp_replies_total",
            &[("command", "body"), ("class", "2xx")]
        ),
        delivered as f64
    );
    let handshakes = last.sum(
        "ec_tls_handshakes_total",
        &[("policy", "required"), ("result", "established")],
    );
    assert_eq!(handshakes, last.sum("ec_connections_opened_total", &[]));
    assert_eq!(
        last.sum("ec_tls_close_notify_sent_total", &[]),
        handshakes,
        "every TLS connection ended with an orderly shutdown"
    );
    assert!(last.sum("ec_smtp_sent_bytes_total", &[("binding", "default")]) > 0.0);
    assert_eq!(
        last.sum("ec_connect_attempts_total", &[("result", "success")]),
        handshakes
    );
    assert_eq!(last.sum("ec_accounting_audit_failures_total", &[]), 0.0);

    assert_eq!(
        postfix
            .wait_for_messages(&local, POSTFIX_MESSAGES as usize, Duration::from_secs(30))
            .len(),
        POSTFIX_MESSAGES as usize
    );
    delivered
}

/// Sends one message to each of [`SINK_DOMAINS`] domains through
/// smtp-sink with a label limit of [`DOMAIN_LABEL_LIMIT`].
fn sink_run_label_bound(scraper: &Scraper) {
    let sink = SmtpSink::start(["-c"]);
    let mut config = Config::default();
    config.global.route = Some(Route::Addresses(vec![sink.addr()]));
    let mut options = EngineOptions::default();
    options.scheduler.domain_label_limit = DOMAIN_LABEL_LIMIT;
    let submissions = (0..SINK_DOMAINS)
        .map(|tag| {
            let to = [format!("user@d{tag}.sink.test")];
            submission(tag, "sender@ec.test", &to, b"Subject: x\r\n\r\nx\r\n")
        })
        .collect();

    let run = scraped_run(scraper, config, options, submissions);

    assert_eq!(run.delivered, SINK_DOMAINS, "{:?}", run.other_outcomes);
    let domains: BTreeSet<String> = run
        .last
        .label_values("domain")
        .into_iter()
        .filter(|domain| domain.ends_with(".sink.test") || domain == "other")
        .collect();
    assert_eq!(
        domains.len(),
        DOMAIN_LABEL_LIMIT + 1,
        "domain label values: {domains:?}"
    );
    assert!(domains.contains("other"), "{domains:?}");
    let folded = SINK_DOMAINS - DOMAIN_LABEL_LIMIT as u64;
    assert_eq!(
        run.last.sum(
            "ec_message_fates_total",
            &[("domain", "other"), ("fate", "delivered")]
        ),
        folded as f64
    );
}

/// The results of a scraped run.
struct ScrapedRun {
    /// Recipients whose final record is `Delivered`.
    delivered: u64,
    /// Final records of any other outcome, for failure messages.
    other_outcomes: Vec<String>,
    /// Scrapes taken while the engine ran.
    scrapes: usize,
    /// Scrapes that found at least one live connection.
    scrapes_with_live_connections: usize,
    /// The scrape after the engine shut down.
    last: Scrape,
}

/// Starts an engine and submits; a second thread scrapes every
/// [`SCRAPE_INTERVAL`] while this one collects records until every
/// recipient has a final one. The idle connections stay open until the
/// shutdown, so the last scrapes before it see live connections. After
/// the shutdown one more scrape is taken. Every scrape is checked (see
/// [`Scraper::checked_scrape`]).
fn scraped_run(
    scraper: &Scraper,
    config: Config,
    options: EngineOptions,
    submissions: Vec<Submission>,
) -> ScrapedRun {
    let expected: usize = submissions.iter().map(|s| s.recipients.len()).sum();
    let (sender, reports) = mpsc::channel::<Report>();
    let engine = Engine::start(config, options, sender).expect("engine starts");
    let stop = AtomicBool::new(false);
    let scrapes_taken = AtomicUsize::new(0);

    let mut run = thread::scope(|scope| {
        let scraping = scope.spawn(|| {
            let (mut scrapes, mut with_live) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let scrape = scraper.checked_scrape();
                scrapes += 1;
                scrapes_taken.store(scrapes, Ordering::Relaxed);
                if scrape.sum("ec_connections_live", &[]) > 0.0 {
                    with_live += 1;
                }
                thread::sleep(SCRAPE_INTERVAL);
            }
            (scrapes, with_live)
        });

        for submission in submissions {
            engine
                .handle()
                .submit(submission)
                .expect("submission accepted");
        }
        let (delivered, other_outcomes) = collect_final(&reports, expected);
        // Two more scrapes, and at least four in all, while the idle
        // connections are still open.
        let target = (scrapes_taken.load(Ordering::Relaxed) + 2).max(MIN_SCRAPES);
        while scrapes_taken.load(Ordering::Relaxed) < target {
            thread::sleep(SCRAPE_INTERVAL);
        }
        stop.store(true, Ordering::Relaxed);
        let (scrapes, scrapes_with_live_connections) =
            scraping.join().expect("the scraping thread panicked");
        ScrapedRun {
            delivered,
            other_outcomes,
            scrapes,
            scrapes_with_live_connections,
            last: Scrape::default(),
        }
    });

    let audit = engine.handle().audit().expect("the scheduler runs");
    assert!(audit.is_ok(), "{audit:?}");
    let stats = engine.shutdown().expect("the scheduler stopped cleanly");
    assert_eq!(stats.connections.live(), 0);

    run.last = scraper.checked_scrape();
    assert_eq!(run.last.sum("ec_connections_live", &[]), 0.0);
    assert_eq!(run.last.sum("ec_connections_in_state", &[]), 0.0);
    assert_eq!(
        run.last.sum("ec_queue_messages", &[]),
        0.0,
        "every message left the queues"
    );
    run
}

/// Reads records until `expected` recipients have a final one; returns
/// how many were delivered and the other final outcomes.
fn collect_final(reports: &mpsc::Receiver<Report>, expected: usize) -> (u64, Vec<String>) {
    let mut finished = HashSet::new();
    let mut delivered = 0;
    let mut others = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while finished.len() < expected {
        let wait = deadline.saturating_duration_since(Instant::now());
        let report = reports.recv_timeout(wait).unwrap_or_else(|_| {
            panic!(
                "only {} of {expected} recipients finished within {DEADLINE:?}",
                finished.len()
            )
        });
        let Report::Recipient(record) = report else {
            continue;
        };
        if !record.outcome.is_final() {
            continue;
        }
        finished.insert((record.tag, record.recipient.to_string()));
        match &record.outcome {
            RecipientOutcome::Delivered(_) => delivered += 1,
            other => others.push(format!("{other:?}")),
        }
    }
    (delivered, others)
}

/// Scrapes the exporter over HTTP.
struct Scraper {
    address: SocketAddr,
}

impl Scraper {
    /// Scrapes `/metrics`, checks the text with `promtool check metrics`,
    /// and checks that `ec_connections_opened_total` − `ec_connections_closed_total`
    /// equals `ec_connections_live`, summed over every series.
    ///
    /// The exporter reads each series at its own instant, so a scrape taken
    /// while a connection opens or closes may read one side before the
    /// change and the other after it. A mismatch is therefore scraped
    /// again, at most four more times 20 ms apart; an accounting error
    /// persists across them and fails the test.
    fn checked_scrape(&self) -> Scrape {
        let mut mismatches = Vec::new();
        for _ in 0..5 {
            let text = self.scrape();
            promtool_check(&text);
            let scrape = Scrape::parse(&text);
            let opened = scrape.sum("ec_connections_opened_total", &[]);
            let closed = scrape.sum("ec_connections_closed_total", &[]);
            let live = scrape.sum("ec_connections_live", &[]);
            if opened - closed == live {
                return scrape;
            }
            mismatches.push(format!("{opened} opened - {closed} closed != {live} live"));
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "opened - closed disagreed with the live gauge on 5 scrapes in a row: {mismatches:?}"
        );
    }

    fn scrape(&self) -> String {
        let (status, body) = http_get(self.address, "/metrics")
            .unwrap_or_else(|error| panic!("scrape of {} failed: {error}", self.address));
        assert_eq!(status, 200, "scrape of {} returned {status}", self.address);
        body
    }
}

/// Runs `promtool check metrics` on `text` and fails on any exit but 0
/// (1 is a parse error, 3 a lint problem).
fn promtool_check(text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {PROMTOOL} ({error}); install it with `apt-get install -y prometheus`"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("write the scrape to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    assert!(
        output.status.success(),
        "promtool check metrics exited with {}:\n{}{}\n--- scrape ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// The samples of one scrape: name, labels, value.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses the Prometheus text format as the exporter writes it: no
    /// timestamps, label values without escaped quotes.
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("sample without a value: {line}"));
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    other => other
                        .parse()
                        .unwrap_or_else(|_| panic!("invalid value in {line}")),
                };
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                (name.to_owned(), labels, value)
            })
            .collect();
        Self { samples }
    }

    /// Sums the samples of `name` whose labels include every pair of
    /// `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(sample, sample_labels, _)| {
                sample == name
                    && labels.iter().all(|(key, value)| {
                        sample_labels.get(*key).map(String::as_str) == Some(value)
                    })
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    /// Every value of the label `label` in any series.
    fn label_values(&self, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter_map(|(_, labels, _)| labels.get(label).cloned())
            .collect()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once("=\"")
                .unwrap_or_else(|| panic!("malformed label pair {pair:?}"));
            (key.to_owned(), value.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// Installs the exporter on a free loopback port, retrying when another
/// process takes the port first.
fn install_on_free_port() -> ec_metrics::ExporterHandle {
    for _ in 0..5 {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        match Exporter::install(ExporterConfig::listen_on(address)) {
            Ok(handle) => return handle,
            Err(MetricsError::Listen { .. }) => continue,
            Err(error) => panic!("exporter install failed: {error}"),
        }
    }
    panic!("no free loopback port for the exporter after 5 tries");
}

/// A loopback port that was free a moment ago; callers retry on a bind
/// failure.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("binding 127.0.0.1:0 works")
}

/// A Prometheus server started by the test on loopback, scraping one
/// target every second; killed when dropped.
struct PrometheusServer {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl PrometheusServer {
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
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).expect("create the server log"))
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start {PROMETHEUS} ({error}); install it with `apt-get install -y prometheus`")
                });
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
    /// taken).
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

    /// Runs an instant query and returns the value of its single result,
    /// or `None` while the result is empty.
    fn query_single_value(&self, promql: &str) -> Option<String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.address, &path).ok()?;
        assert_eq!(status, 200, "query {promql} failed: {body}");
        assert!(body.contains(r#""status":"success""#), "{body}");
        if body.contains(r#""result":[]"#) {
            return None;
        }
        // `[{"metric":{...},"value":[<time>,"<value>"]}]`: the value is the
        // last quoted string.
        let start = body.rfind(",\"")? + 2;
        let end = start + body[start..].find('"')?;
        Some(body[start..end].to_owned())
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

/// Sends `GET path` over HTTP/1.1 with `Connection: close` and returns the
/// status code and the body, decoding a chunked body.
fn http_get(address: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;

    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }

    let mut rest = body;
    let mut decoded = String::new();
    loop {
        let (size_line, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| invalid("chunk size line"))?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("chunk size"))?;
        if size == 0 {
            return Ok((status, decoded));
        }
        decoded.push_str(after.get(..size).ok_or_else(|| invalid("short chunk"))?);
        rest = after
            .get(size..)
            .and_then(|tail| tail.strip_prefix("\r\n"))
            .ok_or_else(|| invalid("chunk terminator"))?;
    }
}

/// Percent-encodes `value` for a URL query (RFC 3986 unreserved characters
/// stay as they are).
fn url_encode(value: &str) -> String {
    let mut encoded = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
