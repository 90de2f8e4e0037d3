//! One soak run: the engine sends a stream of messages through several
//! bindings to many domains, all routed to a chaos fault peer, with retries,
//! until every message is final or the time cap passes.

use std::net::SocketAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ec_sched::{Report, SchedulerHandle, SchedulerOptions};
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::{Address, Binding, BindingSlot, Config, ReversePath, Route, Submission};

use super::bodies::{load_bodies, load_body, wire_chunk, wire_data};
use super::collect::{local_part, recipient_count, Collector};
use super::options::SoakOptions;
use super::process::ProcessSample;
use super::report::{Audits, RssSample, SoakReport};
use crate::delivery::{init_tracing, submission, Run, Until};
use crate::fault_peer::{content_digest, Chaos, Fault, FaultPeer, Retention, Scenario, Tally};
use crate::pki::{TestCa, DEFAULT_NAMES};

/// The engine-wide connection limit of a soak run.
pub const MAX_CONNECTIONS: u32 = 400;

/// Faults the soak leaves out. A failed STARTTLS handshake makes the engine
/// send to that address in clear text for an hour (the opportunistic
/// fallback), which would end every TLS fault for the rest of the run. The
/// STARTTLS tests cover that fallback.
const NOT_DRAWN: [Fault; 1] = [Fault::StartTlsAlert];

/// How often the run audits the scheduler and reads its counts.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// How long the loop waits for a record before it looks at the clock.
const RECEIVE_WAIT: Duration = Duration::from_millis(5);

/// The shares of finished submissions at which resident memory is sampled.
const RSS_MARKS: [u8; 4] = [25, 50, 75, 100];

/// How long the peer may take to finish its connections after the engine
/// stopped: its drain timeout, with room.
const PEER_SETTLE: Duration = Duration::from_secs(15);

/// How long the process may take to give back threads and descriptors.
const PROCESS_SETTLE: Duration = Duration::from_secs(5);

/// Runs one soak and returns what it measured; check it with
/// [`SoakReport::problems`].
///
/// # Panics
///
/// When the fault peer, a certificate or the engine cannot be set up, or
/// the warm-up run does not deliver.
pub fn run(options: &SoakOptions) -> SoakReport {
    init_tracing();
    let ca = TestCa::new().expect("test CA");
    let tls = ca
        .leaf(&DEFAULT_NAMES)
        .and_then(|leaf| leaf.server_config())
        .expect("server TLS configuration");
    let faults: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|fault| !NOT_DRAWN.contains(fault))
        .collect();
    let chaos = Chaos::new(options.seed)
        .only(&faults)
        .fault_share(options.fault_share)
        .tls(Arc::clone(&tls))
        .tls_share(options.tls_share)
        .chunking_share(options.chunking_share)
        .idle_after(Duration::from_millis(100));
    let peer =
        FaultPeer::start_source_on_thread(Arc::new(chaos), Retention::Tally).expect("peer starts");

    warm_up(&tls);
    let before = ProcessSample::now().expect("procfs readable");

    let mut soak = Soak::start(options, peer.addr());
    soak.deliver();
    let mut report = soak.finish();

    let (accepted, finished) = wait_for_peer(&peer);
    report.peer_open = accepted - finished;
    report.peer = peer.tally();
    (report.unexpected_data, report.unexpected_chunks) =
        unexpected_contents(&report.peer, &load_bodies());
    report.before = before;
    report.after = ProcessSample::settled(&before, PROCESS_SETTLE).expect("procfs readable");
    report
}

/// Builds the configuration of a soak: every domain routed to the peer,
/// short timeouts so a stall costs little, short retry intervals so deferred
/// mail comes back soon, and few deliveries per connection so connections
/// churn.
pub fn soak_config(peer: SocketAddr) -> Config {
    let mut config = Config::default();
    config.engine.max_connections = MAX_CONNECTIONS;
    config.engine.max_connections_per_binding = 200;
    config.engine.max_connections_per_host = 32;

    let global = &mut config.global;
    global.route = Some(Route::Addresses(vec![peer]));
    global.max_outbound_connections = Some(4);
    global.max_deliveries_per_connection = Some(20);
    global.idle_timeout = Some(Duration::from_millis(250));
    global.retry.interval = Some(Duration::from_millis(50));
    global.retry.max_interval = Some(Duration::from_millis(400));
    global.retry.max_age = Some(Duration::from_secs(3_600));

    let timeouts = &mut global.timeouts;
    let reply = Some(Duration::from_millis(800));
    timeouts.connect = Some(Duration::from_secs(2));
    timeouts.banner = reply;
    timeouts.ehlo = reply;
    timeouts.starttls = reply;
    timeouts.tls_handshake = Some(Duration::from_secs(2));
    timeouts.mail = reply;
    timeouts.rcpt = reply;
    timeouts.data = reply;
    timeouts.data_block = Some(Duration::from_secs(2));
    timeouts.data_termination = reply;
    timeouts.rset = reply;
    timeouts.quit = Some(Duration::from_millis(300));
    timeouts.close = Some(Duration::from_secs(1));
    config
}

/// Returns the scheduler options of a soak: short domain backoff and
/// shutdown grace, and a periodic audit several times a second.
pub fn soak_scheduler_options() -> SchedulerOptions {
    SchedulerOptions {
        domain_backoff: Duration::from_millis(50),
        domain_backoff_max: Duration::from_millis(500),
        audit_interval: Some(Duration::from_millis(200)),
        shutdown_grace: Duration::from_secs(2),
        ..SchedulerOptions::default()
    }
}

/// Starts and stops an engine once, delivering over plain text and TLS, so
/// that everything built once per process (TLS configurations, the tracing
/// subscriber, allocator arenas, tokio's globals) exists before the run's
/// baseline is taken.
fn warm_up(tls: &Arc<rustls::ServerConfig>) {
    let plain = FaultPeer::start_on_thread(Scenario::default()).expect("warm-up peer starts");
    let secure = FaultPeer::start_on_thread(Scenario::builder().tls(Arc::clone(tls)).build())
        .expect("warm-up peer starts");
    let mut config = soak_config(plain.addr());
    let settings = config
        .domain
        .entry(ec_types::Domain::new("tls.warm.test").expect("valid domain"))
        .or_default();
    settings.route = Some(Route::Addresses(vec![secure.addr()]));

    let mut run = Run::new(config).until(Until::EveryRecipientFinal);
    for tag in 0..20 {
        let domain = if tag % 2 == 0 {
            "plain.warm.test"
        } else {
            "tls.warm.test"
        };
        let to = [format!("warm{tag}@{domain}")];
        run = run.submit(submission(
            tag,
            "soak@ec.test",
            &to,
            b"Subject: warm\r\n\r\nup\r\n",
        ));
    }
    let result = run.limit(Duration::from_secs(30)).run();
    assert_eq!(
        result.count("delivered"),
        20,
        "the warm-up run did not deliver: {:#?}",
        result.records
    );
    result
        .check_accounting()
        .unwrap_or_else(|broken| panic!("warm-up accounting: {broken}"));
}

/// Counts the message data after `DATA` and the `BDAT` chunks the peer
/// received that are not the wire form of any of `bodies` (see
/// [`wire_data`] and [`wire_chunk`]), and returns (data, chunks).
///
/// Empty data after `DATA` is expected too. When `DATA` got `354` although
/// no `RCPT` succeeded, a client sends only the end-of-data line (RFC 2920
/// section 3.1).
fn unexpected_contents(peer: &Tally, bodies: &[Bytes]) -> (u64, u64) {
    let mut data: Vec<u64> = bodies
        .iter()
        .map(|body| content_digest(&wire_data(body)))
        .collect();
    data.push(content_digest(b""));
    let chunks: Vec<u64> = bodies
        .iter()
        .map(|body| content_digest(&wire_chunk(body)))
        .collect();
    let unexpected = |received: &std::collections::BTreeMap<u64, u64>, known: &[u64]| {
        received
            .iter()
            .filter(|(digest, _)| !known.contains(digest))
            .map(|(_, count)| count)
            .sum()
    };
    (
        unexpected(&peer.data_contents, &data),
        unexpected(&peer.chunk_contents, &chunks),
    )
}

/// Waits until the peer has finished every connection it accepted, or
/// [`PEER_SETTLE`] passed; returns (accepted, finished).
fn wait_for_peer(peer: &FaultPeer) -> (usize, usize) {
    let deadline = Instant::now() + PEER_SETTLE;
    loop {
        let (accepted, finished) = peer.accepted_and_finished();
        if accepted == finished || Instant::now() >= deadline {
            return (accepted, finished);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A soak in progress.
struct Soak<'a> {
    options: &'a SoakOptions,
    engine: Engine,
    receiver: mpsc::Receiver<Report>,
    slots: Vec<BindingSlot>,
    bodies: Vec<Bytes>,
    sender_path: ReversePath,
    collector: Collector,
    submitted: u64,
    recipients: u64,
    audits: Audits,
    max_live: u32,
    rss: Vec<RssSample>,
    started: Instant,
    elapsed: Duration,
    capped: bool,
}

impl<'a> Soak<'a> {
    fn start(options: &'a SoakOptions, peer: SocketAddr) -> Self {
        let (sender, receiver) = mpsc::channel();
        let mut engine_options = EngineOptions::default();
        engine_options.scheduler = soak_scheduler_options();
        let engine =
            Engine::start(soak_config(peer), engine_options, sender).expect("engine starts");

        let mut slots = vec![BindingSlot(0)];
        for n in 1..=options.extra_bindings {
            let binding = Binding::named(format!("soak-{n}"));
            let slot = engine
                .handle()
                .register_binding(binding)
                .expect("binding registers");
            slots.push(slot);
        }

        Self {
            options,
            engine,
            receiver,
            slots,
            bodies: load_bodies(),
            sender_path: ReversePath::new("soak@ec.test").expect("valid sender"),
            collector: Collector::new(options.messages),
            submitted: 0,
            recipients: 0,
            audits: Audits::default(),
            max_live: 0,
            rss: Vec::new(),
            started: Instant::now(),
            elapsed: Duration::ZERO,
            capped: false,
        }
    }

    fn handle(&self) -> &SchedulerHandle {
        self.engine.handle()
    }

    /// Submits within the window and takes records until every submission
    /// is final or the cap passes.
    fn deliver(&mut self) {
        self.started = Instant::now();
        let cap = self.started + self.options.cap;
        let mut next_check = self.started + CHECK_EVERY;
        loop {
            self.submit_within_window();
            match self.receiver.recv_timeout(RECEIVE_WAIT) {
                Ok(report) => self.collector.take(report),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(report) = self.receiver.try_recv() {
                self.collector.take(report);
            }
            self.sample_rss();

            if self.collector.finished == self.options.messages {
                break;
            }
            let now = Instant::now();
            if now >= cap {
                self.capped = true;
                break;
            }
            if now >= next_check {
                self.check();
                next_check = now + CHECK_EVERY;
            }
        }
        self.elapsed = self.started.elapsed();
        self.check();
    }

    fn submit_within_window(&mut self) {
        while self.submitted < self.options.messages
            && self.submitted - self.collector.finished < self.options.window
        {
            let tag = self.submitted;
            let submission = self.submission(tag);
            let count = submission.recipients.len() as u64;
            let slot =
                self.slots[(tag / u64::from(self.options.domains)) as usize % self.slots.len()];
            if let Err(error) = self.handle().submit_via(slot, submission) {
                panic!("the engine refused soak submission {tag}: {error}");
            }
            self.submitted += 1;
            self.recipients += count;
        }
    }

    fn submission(&self, tag: u64) -> Submission {
        let domain = format!("d{}.soak.test", tag % u64::from(self.options.domains));
        let recipients = (0..recipient_count(tag))
            .map(|index| {
                Address::new(&format!("{}@{domain}", local_part(tag, index)))
                    .expect("valid soak recipient")
            })
            .collect();
        Submission {
            tag,
            reverse_path: self.sender_path.clone(),
            recipients,
            data: load_body(&self.bodies, tag),
        }
    }

    /// Samples resident memory at each mark the finished count passed.
    fn sample_rss(&mut self) {
        let finished = self.collector.finished;
        for percent in RSS_MARKS {
            let mark = self.options.messages * u64::from(percent) / 100;
            let taken = self.rss.iter().any(|s| s.percent == percent);
            if taken || finished < mark {
                continue;
            }
            let sample = ProcessSample::now().expect("procfs readable");
            self.rss.push(RssSample {
                percent,
                finished,
                bytes: sample.rss_bytes,
            });
        }
    }

    /// Audits through the handle and reads the live connection count.
    fn check(&mut self) {
        let failure = match self.handle().audit() {
            Ok(Ok(())) => None,
            Ok(Err(violations)) => Some(violations.to_string()),
            Err(error) => Some(format!("no answer: {error}")),
        };
        match failure {
            None => self.audits.passed += 1,
            Some(text) => {
                self.audits.failed += 1;
                self.audits.first_failure.get_or_insert(text);
            }
        }
        if let Ok(stats) = self.handle().stats() {
            self.max_live = self.max_live.max(stats.connections.live());
        }
    }

    /// Shuts the engine down, takes the last records, and reports.
    fn finish(mut self) -> SoakReport {
        let stats = self.engine.shutdown();
        while let Ok(report) = self.receiver.try_recv() {
            self.collector.take(report);
        }
        let (missing, doubled) = self.collector.missing_and_doubled(self.submitted);
        let empty = ProcessSample {
            open_fds: 0,
            threads: 0,
            rss_bytes: 0,
        };
        SoakReport {
            seed: self.options.seed,
            requested: self.options.messages,
            submitted: self.submitted,
            recipients: self.recipients,
            finished: self.collector.finished,
            capped: self.capped,
            elapsed: self.elapsed,
            outcomes: std::mem::take(&mut self.collector.outcomes),
            by_fault: std::mem::take(&mut self.collector.by_fault),
            closes: std::mem::take(&mut self.collector.closes),
            opened: self.collector.opened,
            longest_connection: self.collector.longest_connection,
            missing,
            doubled,
            after_final: self.collector.after_final,
            foreign: self.collector.foreign,
            audits: self.audits,
            max_live: self.max_live,
            max_connections: MAX_CONNECTIONS,
            stats,
            peer: Default::default(),
            unexpected_data: 0,
            unexpected_chunks: 0,
            chunking_share: self.options.chunking_share,
            not_drawn: NOT_DRAWN.to_vec(),
            peer_open: 0,
            before: empty,
            after: empty,
            rss: self.rss,
            rss_bytes_per_message: self.options.rss_bytes_per_message,
            rss_floor: self.options.rss_floor,
        }
    }
}
