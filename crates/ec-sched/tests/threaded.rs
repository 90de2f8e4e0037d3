//! The scheduler on its own thread, with sessions played by threads that
//! talk to it only through links and event senders, as real sessions do.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ec_sched::{
    EventSender, RecipientOutcome, Report, Scheduler, SchedulerOptions, SchedulerToken,
    SessionDriver, SessionLink, SubmitError,
};
use ec_types::{
    Address, Binding, BindingSlot, CloseOutcome, CloseReport, Config, OpenRequest, RecipientStatus,
    Reply, ReplyCode, ReversePath, SessionCapabilities, SessionCommand, SessionEvent, Settings,
    Submission, TransactionOutcome,
};

/// How the fake sessions behave.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Connect, get ready, accept every message.
    Accept,
    /// Never finish connecting; stop when the link is dropped.
    Hang,
}

/// A driver that runs each session on a thread of its own.
struct ThreadDriver {
    behaviour: Behaviour,
}

impl SessionDriver for ThreadDriver {
    fn open(
        &mut self,
        _token: &SchedulerToken,
        request: OpenRequest,
        events: EventSender,
    ) -> Box<dyn SessionLink> {
        let (link, commands) = mpsc::channel::<SessionCommand>();
        let behaviour = self.behaviour;
        thread::Builder::new()
            .name(format!("session-{}", request.id))
            .spawn(move || run_session(behaviour, &events, &commands))
            .expect("session thread starts");
        Box::new(link)
    }
}

fn run_session(
    behaviour: Behaviour,
    events: &EventSender,
    commands: &mpsc::Receiver<SessionCommand>,
) {
    let closed = |outcome| {
        let report = CloseReport {
            outcome,
            close_notify_sent: false,
            close_notify_received: false,
        };
        let _ = events.send(SessionEvent::Closed(report));
    };
    if let Behaviour::Hang = behaviour {
        // Only a dropped link ends the wait: never connected.
        while commands.recv().is_ok() {}
        closed(CloseOutcome::NeverConnected);
        return;
    }

    let local: SocketAddr = "127.0.0.1:40000".parse().expect("valid");
    let peer: SocketAddr = "127.0.0.1:25".parse().expect("valid");
    let _ = events.send(SessionEvent::Connected { local, peer });
    let _ = events.send(SessionEvent::Ready {
        tls: None,
        capabilities: SessionCapabilities::default(),
    });
    while let Ok(command) = commands.recv() {
        match command {
            SessionCommand::Deliver { messages, .. } => {
                for message in messages {
                    let reply = Reply::new(ReplyCode::OK, None, "queued");
                    let outcome = TransactionOutcome {
                        message: message.id,
                        recipients: vec![
                            RecipientStatus::Delivered(reply);
                            message.recipients.len()
                        ],
                        elapsed: Duration::from_millis(1),
                    };
                    let _ = events.send(SessionEvent::Transaction(outcome));
                }
                let _ = events.send(SessionEvent::BatchDone);
            }
            SessionCommand::Close(_) => {
                closed(CloseOutcome::Clean);
                return;
            }
            _ => {}
        }
    }
    closed(CloseOutcome::Aborted);
}

fn submission(tag: u64, recipients: &[String]) -> Submission {
    Submission {
        tag,
        reverse_path: ReversePath::new("sender@example.org").expect("valid"),
        recipients: recipients
            .iter()
            .map(|r| Address::new(r).expect("valid"))
            .collect(),
        data: Bytes::from_static(b"Subject: t\r\n\r\nbody\r\n"),
    }
}

fn config() -> Config {
    Config {
        global: Settings {
            max_outbound_connections: Some(4),
            idle_timeout: Some(Duration::from_millis(50)),
            batch_size: Some(5),
            ..Settings::default()
        },
        ..Config::default()
    }
}

/// Collects final recipient records until `expected` arrived or the
/// deadline passed.
fn collect_finals(
    reports: &mpsc::Receiver<Report>,
    expected: usize,
    within: Duration,
) -> Vec<RecipientOutcome> {
    let deadline = Instant::now() + within;
    let mut finals = Vec::new();
    while finals.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(report) = reports.recv_timeout(left) else {
            break;
        };
        if let Report::Recipient(record) = report {
            if record.outcome.is_final() {
                finals.push(record.outcome);
            }
        }
    }
    finals
}

#[test]
fn spawned_scheduler_delivers_everything() {
    let (observer, reports) = mpsc::channel();
    let driver = ThreadDriver {
        behaviour: Behaviour::Accept,
    };
    let (handle, thread) = Scheduler::spawn(config(), driver, observer).expect("thread starts");
    assert_eq!(thread.thread().name(), Some("ec-scheduler"));

    let submitters: Vec<_> = (0..2u64)
        .map(|worker| {
            let handle = handle.clone();
            thread::spawn(move || {
                for index in 0..250u64 {
                    let tag = worker * 1_000 + index;
                    let recipients = vec![
                        format!("a{tag}@d{}.example", index % 20),
                        format!("b{tag}@d{}.example", index % 20),
                    ];
                    handle
                        .submit(submission(tag, &recipients))
                        .expect("accepted");
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.join().expect("submitter finished");
    }

    let finals = collect_finals(&reports, 1_000, Duration::from_secs(30));
    assert_eq!(finals.len(), 1_000);
    assert!(finals
        .iter()
        .all(|o| matches!(o, RecipientOutcome::Delivered(_))));
    handle
        .audit()
        .expect("scheduler running")
        .expect("audit passes");

    let stats = handle.stats().expect("scheduler running");
    assert_eq!(stats.ledger.delivered, 500);
    assert!(stats.connections.opened() >= 1);

    handle.shutdown();
    let error = handle
        .submit(submission(9, &["late@d1.example".to_owned()]))
        .expect_err("no new work after shutdown");
    assert!(matches!(
        error,
        SubmitError::ShuttingDown(_) | SubmitError::Stopped(_)
    ));
    assert_eq!(error.into_submission().tag, 9);

    let stats = thread.join().expect("scheduler thread ends");
    assert!(stats.shut_down);
    assert_eq!(stats.connections.live(), 0);
    assert_eq!(stats.ledger.audit_failures, 0);
    assert_eq!(stats.ledger.in_engine(), Some(0));
    assert!(matches!(
        handle.stats(),
        Err(ec_sched::HandleError::Stopped)
    ));
    let error = handle
        .submit(submission(10, &["later@d1.example".to_owned()]))
        .expect_err("no work after the stop");
    assert!(matches!(error, SubmitError::Stopped(_)), "{error}");
}

#[test]
fn shutdown_reports_unsent_mail() {
    let (observer, reports) = mpsc::channel();
    let driver = ThreadDriver {
        behaviour: Behaviour::Hang,
    };
    let (handle, thread) = Scheduler::spawn(config(), driver, observer).expect("thread starts");
    for tag in 0..10u64 {
        let recipients = vec![format!("a{tag}@d{}.example", tag % 3)];
        handle
            .submit(submission(tag, &recipients))
            .expect("accepted");
    }
    let stats = handle.stats().expect("running");
    assert_eq!(stats.ledger.entered, 10);
    assert!(stats.ledger.connecting > 0);

    handle.shutdown();
    let stats = thread.join().expect("scheduler thread ends");
    assert_eq!(stats.ledger.unsent, 10);
    assert_eq!(stats.connections.live(), 0);

    let finals = collect_finals(&reports, 10, Duration::from_secs(5));
    assert_eq!(finals.len(), 10);
    assert!(finals.iter().all(|o| *o == RecipientOutcome::Unsent));
}

#[test]
fn handle_registers_bindings() {
    let (observer, _reports) = mpsc::channel();
    let driver = ThreadDriver {
        behaviour: Behaviour::Accept,
    };
    let (handle, thread) = Scheduler::spawn(config(), driver, observer).expect("thread starts");

    let slot = handle
        .register_binding(Binding::named("outbound-a"))
        .expect("new binding");
    assert_eq!(slot, BindingSlot(1));
    assert!(handle
        .register_binding(Binding::named("outbound-a"))
        .is_err());
    handle
        .submit_via(slot, submission(1, &["x@d1.example".to_owned()]))
        .expect("known binding");
    let error = handle
        .submit_via(BindingSlot(7), submission(2, &["x@d1.example".to_owned()]))
        .expect_err("unknown binding");
    assert!(matches!(error, SubmitError::UnknownBinding { .. }));

    drop(handle);
    let stats = thread
        .join()
        .expect("the last handle's drop stops the scheduler");
    assert!(stats.shut_down);
    assert_eq!(stats.ledger.in_engine(), Some(0));
}

#[test]
fn spawn_rejects_invalid_config() {
    let (observer, _reports) = mpsc::channel();
    let driver = ThreadDriver {
        behaviour: Behaviour::Accept,
    };
    let mut invalid = config();
    invalid.engine.max_connections = 0;

    let error = Scheduler::spawn(invalid, driver, observer).expect_err("zero connections");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("max_connections"), "{error}");
}

#[test]
fn handle_rejects_empty_route() {
    let (observer, _reports) = mpsc::channel();
    let driver = ThreadDriver {
        behaviour: Behaviour::Accept,
    };
    let (handle, thread) = Scheduler::spawn(config(), driver, observer).expect("thread starts");
    let domain = ec_types::Domain::new("nowhere.example").expect("valid domain");

    let error = handle
        .register_domain(domain.clone(), ec_types::Route::Addresses(Vec::new()))
        .expect_err("an empty address list goes nowhere");
    let message = error.to_string();
    assert!(
        matches!(error, ec_sched::HandleError::Route(_)),
        "{error:?}"
    );
    assert!(message.contains("route.addresses"), "{message}");
    assert!(message.contains("domain nowhere.example"), "{message}");
    let relay = ec_types::Route::Relay {
        host: "mx.example.net".to_owned(),
        port: 0,
    };
    assert!(handle.register_domain(domain.clone(), relay).is_err());

    let address: SocketAddr = "192.0.2.1:25".parse().expect("address");
    handle
        .register_domain(domain, ec_types::Route::Addresses(vec![address]))
        .expect("a route with an address");
    drop(handle);
    thread.join().expect("the scheduler stops");
}

#[test]
fn options_reach_the_loop() {
    let (observer, _reports) = mpsc::channel();
    let options = SchedulerOptions {
        audit_interval: Some(Duration::from_millis(10)),
        ..SchedulerOptions::default()
    };
    let driver = ThreadDriver {
        behaviour: Behaviour::Accept,
    };
    let (handle, thread) =
        Scheduler::spawn_with_options(config(), options, driver, observer).expect("thread starts");
    thread::sleep(Duration::from_millis(100));
    let stats = handle.stats().expect("running");
    assert!(
        stats.ledger.audits >= 3,
        "periodic audits ran: {}",
        stats.ledger.audits
    );
    assert_eq!(stats.ledger.audit_failures, 0);
    handle.shutdown();
    thread.join().expect("scheduler thread ends");
}
