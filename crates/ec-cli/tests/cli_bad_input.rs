//! `ec deliver` with input and peers that cannot all work: each problem
//! gets an error that names the file or value, the other messages still
//! go, and the delivery log and exit status say what happened.
//!
//! The tests run as root in CI, where `chmod 000` does not stop a read, so
//! an unreadable message file is a dangling symbolic link (open fails with
//! ENOENT) and a FIFO (no writer: a plain read would block for ever).

mod cli_support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cli_support::{arg, read_log, run, temp_dir, wait_for_maildir};
use ec_cli::delivery_log::{LogRecord, LogResult};
use ec_tests::peers::{Postfix, SmtpSink};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a run against a peer that never takes mail may last: the run
/// gives up after a few failed connections with sub-second backoff.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(5);

fn good_message(subject: &str, recipient: &str) -> String {
    format!("From: sender@ec.test\nTo: {recipient}\nSubject: {subject}\n\nbody of {subject}\n")
}

fn record_for<'a>(records: &'a [LogRecord], file: &Path) -> &'a LogRecord {
    let name = arg(file);
    let matching: Vec<&LogRecord> = records.iter().filter(|r| r.file == name).collect();
    assert_eq!(matching.len(), 1, "one record for {name}: {records:#?}");
    matching[0]
}

#[test]
fn bad_files_recorded_rest_delivered() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("cli-bad-input");
    let recipient = format!("{local}@maildir.test");
    let temp = temp_dir();
    let dir = temp.path().join("mail");
    std::fs::create_dir(&dir).expect("create mail dir");

    let good = [dir.join("good-1.eml"), dir.join("good-2.eml")];
    for (index, path) in good.iter().enumerate() {
        std::fs::write(path, good_message(&format!("good {index}"), &recipient)).expect("write");
    }
    let empty = dir.join("empty.eml");
    std::fs::write(&empty, "").expect("write");
    let dangling = dir.join("dangling.eml");
    std::os::unix::fs::symlink(temp.path().join("no-such-file"), &dangling).expect("symlink");
    let fifo = dir.join("fifo.eml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let no_envelope = dir.join("no-envelope.eml");
    std::fs::write(&no_envelope, "Subject: no addresses\n\nbody\n").expect("write");
    let no_recipient = dir.join("no-recipient.eml");
    std::fs::write(&no_recipient, "From: a@ec.test\nSubject: x\n\nbody\n").expect("write");

    let log = temp.path().join("log.jsonl");
    let finished = run(
        [
            "deliver",
            "--relay",
            &postfix.plain_addr().to_string(),
            "--log",
            &arg(&log),
            &arg(&dir),
        ],
        RUN_TIMEOUT,
    );
    finished.expect_code(65);

    let records = read_log(&log);
    assert_eq!(records.len(), 7, "one record per file: {records:#?}");
    for path in &good {
        let record = record_for(&records, path);
        assert_eq!(record.result, LogResult::Delivered, "{record:?}");
        assert_eq!(record.recipient.as_deref(), Some(recipient.as_str()));
    }
    let bad = [
        (&empty, "the file is empty"),
        (&dangling, "cannot read the file: No such file or directory"),
        (&fifo, "not a regular file but a FIFO"),
        (&no_envelope, "no usable sender"),
        (&no_recipient, "no usable recipient"),
    ];
    for (path, reason) in bad {
        let record = record_for(&records, path);
        assert_eq!(record.result, LogResult::InvalidInput, "{record:?}");
        assert_eq!(record.recipient, None, "{record:?}");
        let detail = record.detail.as_deref().unwrap_or_default();
        assert!(detail.contains(reason), "{path:?}: {detail:?}");
        assert!(
            finished.stderr.contains(&arg(path)) && finished.stderr.contains(reason),
            "stderr names {} and why; {finished}",
            path.display()
        );
    }
    assert!(
        finished.stdout.contains("delivered 2 ") && finished.stdout.contains("invalid files 5"),
        "{finished}"
    );

    let stored = wait_for_maildir(
        postfix,
        &local,
        good.len(),
        Duration::from_millis(300),
        RUN_TIMEOUT,
    );
    assert_eq!(stored.len(), good.len());
}

#[test]
fn empty_directory_is_usage_error() {
    let temp = temp_dir();
    let dir = temp.path().join("nothing-here");
    std::fs::create_dir(&dir).expect("create dir");
    std::fs::write(dir.join("notes.txt"), "not a message").expect("write");
    let log = temp.path().join("log.jsonl");

    let finished = run(
        [
            "deliver",
            "--relay",
            "127.0.0.1:9",
            "--log",
            &arg(&log),
            &arg(&dir),
        ],
        RUN_TIMEOUT,
    );
    finished.expect_code(64);
    assert!(
        finished.stderr.contains(&arg(&dir)) && finished.stderr.contains(".eml"),
        "{finished}"
    );
    assert!(!log.exists(), "no log for a run that never started");
}

#[test]
fn bad_option_value_is_named() {
    let temp = temp_dir();
    let message = temp.path().join("m.eml");
    std::fs::write(&message, good_message("x", "a@maildir.test")).expect("write");
    let cases = [
        ["--to", "not-an-address"],
        ["--relay", "127.0.0.1:notaport"],
        ["--connections", "0"],
    ];
    for [flag, value] in cases {
        let finished = run(["deliver", flag, value, &arg(&message)], RUN_TIMEOUT);
        finished.expect_code(64);
        assert!(
            finished.stderr.contains(value) && finished.stderr.contains(flag),
            "{finished}"
        );
    }
}

#[test]
fn listen_error_shows_example() {
    let temp = temp_dir();
    let message = temp.path().join("m.eml");
    std::fs::write(&message, good_message("x", "a@maildir.test")).expect("write");
    let message = arg(&message);
    let cases = [
        (
            vec!["sink", "--listen", "localhost:2527"],
            "localhost:2527",
            "such as 127.0.0.1:2525",
        ),
        (
            vec!["sink", "--listen", "2527"],
            "2527",
            "such as 127.0.0.1:2525",
        ),
        (
            vec!["deliver", "--metrics-listen", "localhost:9464", &message],
            "localhost:9464",
            "such as 127.0.0.1:9464",
        ),
    ];
    for (args, value, example) in cases {
        let finished = run(&args, RUN_TIMEOUT);
        finished.expect_code(64);
        assert!(finished.stderr.contains(value), "{finished}");
        assert!(finished.stderr.contains(example), "{finished}");
    }
}

#[test]
fn metrics_bind_error_advice() {
    let temp = temp_dir();
    let message = temp.path().join("m.eml");
    std::fs::write(&message, good_message("x", "a@maildir.test")).expect("write");
    let message = arg(&message);
    // A loopback port with no listener, so that a run that got past the
    // metrics exporter would fail fast and send nothing off this host.
    let relay = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port")
        .to_string();

    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let in_use = occupied.local_addr().expect("bound address").to_string();
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is an address of no host, so the
    // bind fails with EADDRNOTAVAIL. A bind sends no packet.
    let cases = [
        (
            in_use.as_str(),
            "choose a free port or stop the process that uses it",
        ),
        ("192.0.2.1:9464", "the IP address is not on this host"),
    ];
    for (address, advice) in cases {
        let finished = run(
            [
                "deliver",
                "--relay",
                &relay,
                "--metrics-listen",
                address,
                &message,
            ],
            RUN_TIMEOUT,
        );
        finished.expect_code(64);
        assert!(
            finished
                .stderr
                .contains(&format!("cannot listen for metrics scrapes on {address}")),
            "{finished}"
        );
        assert_eq!(finished.stderr.matches(advice).count(), 1, "{finished}");
    }
    drop(occupied);
}

/// A sink whose listen port is taken is a usage error, like a metrics
/// port that is taken.
#[test]
fn sink_port_in_use_is_usage_error() {
    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let in_use = occupied.local_addr().expect("bound address").to_string();

    let finished = run(["sink", "--listen", &in_use], RUN_TIMEOUT);

    finished.expect_code(64);
    let expected = format!("cannot listen on {in_use}");
    assert!(finished.stderr.contains(&expected), "{finished}");
    assert!(
        finished.stderr.contains("choose another address or port"),
        "{finished}"
    );
    drop(occupied);
}

#[test]
fn config_error_names_file_and_key() {
    let temp = temp_dir();
    let message = temp.path().join("m.eml");
    std::fs::write(&message, good_message("x", "a@maildir.test")).expect("write");
    let cases = [
        (
            "type.toml",
            "[domain.\"maildir.test\"]\nmax_outbound_connections = \"ten\"\n",
            "key domain.\"maildir.test\".max_outbound_connections",
        ),
        (
            "zero-timeout.toml",
            "[global.timeouts]\nconnect = \"0s\"\n",
            "timeouts.connect is 0 in the global settings",
        ),
        (
            "zero-connections.toml",
            "[global]\nmax_outbound_connections = 0\n",
            "max_outbound_connections is 0 in the global settings",
        ),
    ];
    for (name, content, key) in cases {
        let config = temp.path().join(name);
        std::fs::write(&config, content).expect("write config");
        let finished = run(
            [
                "deliver",
                "--relay",
                "127.0.0.1:9",
                "--config",
                &arg(&config),
                &arg(&message),
            ],
            RUN_TIMEOUT,
        );
        finished.expect_code(64);
        assert!(finished.stderr.contains(&arg(&config)), "{finished}");
        assert!(finished.stderr.contains(key), "{finished}");
    }
}

#[test]
fn refused_relay_is_unavailable() {
    // A port that was free a moment ago: connecting to it is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("reserve a port")
        .port();
    let relay = format!("127.0.0.1:{port}");
    let temp = temp_dir();
    let messages: Vec<_> = (0..2)
        .map(|index| {
            let path = temp.path().join(format!("m{index}.eml"));
            std::fs::write(&path, good_message("refused", "a@maildir.test")).expect("write");
            path
        })
        .collect();
    let log = temp.path().join("log.jsonl");

    let mut args = vec![
        "deliver".to_owned(),
        "-q".to_owned(),
        "--relay".to_owned(),
        relay.clone(),
        "--log".to_owned(),
        arg(&log),
    ];
    args.extend(messages.iter().map(|path| arg(path)));
    let finished = run(&args, RUN_TIMEOUT);
    finished.expect_code(69);
    assert!(finished.elapsed < GIVE_UP_WITHIN, "{finished}");

    let records = read_log(&log);
    assert_eq!(records.len(), messages.len(), "{records:#?}");
    for record in &records {
        assert_eq!(record.result, LogResult::Deferred, "{record:?}");
        let detail = record.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(&relay) && detail.contains("connect_failed"),
            "the reason names the relay and the failure: {record:?}"
        );
    }
}

#[test]
fn tls_required_without_starttls() {
    // smtp-sink offers no STARTTLS; -c prints its session and message
    // counters, so the test can see that no message reached it.
    let sink = SmtpSink::start(["-c"]);
    let temp = temp_dir();
    let message = temp.path().join("secret.eml");
    std::fs::write(&message, good_message("secret", "a@maildir.test")).expect("write");
    let log = temp.path().join("log.jsonl");

    let finished = run(
        [
            "deliver",
            "-q",
            "--tls",
            "required",
            "--relay",
            &sink.addr().to_string(),
            "--log",
            &arg(&log),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );
    finished.expect_code(75);
    assert!(finished.elapsed < GIVE_UP_WITHIN, "{finished}");

    let records = read_log(&log);
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record.result, LogResult::Deferred, "{record:?}");
    let detail = record.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("tls_unavailable"), "{record:?}");

    // The counters line is rewritten in place with CR: `sess=N quit=N mesg=N`.
    let output = sink.output();
    let counters: Vec<&str> = output.split(['\r', '\n']).collect();
    let sessions = counters.iter().filter(|c| c.starts_with("sess=")).count();
    assert!(sessions > 1, "ec connected to the sink: {output:?}");
    assert!(
        counters
            .iter()
            .filter(|c| c.starts_with("sess="))
            .all(|c| c.ends_with("mesg=0")),
        "a message went to the sink in clear text: {output:?}"
    );
}

#[test]
fn lost_dot_reply_is_unknown() {
    // smtp-sink -q . drops the connection after the final dot, unanswered:
    // the message may have been delivered, and --resume sends it again.
    let sink = SmtpSink::start(["-c", "-q", "."]);
    let temp = temp_dir();
    let messages: Vec<_> = (0..2)
        .map(|index| {
            let path = temp.path().join(format!("m{index}.eml"));
            std::fs::write(&path, good_message("unknown", "a@maildir.test")).expect("write");
            path
        })
        .collect();
    let log = temp.path().join("log.jsonl");
    let mut args = vec![
        "deliver".to_owned(),
        "-q".to_owned(),
        "--relay".to_owned(),
        sink.addr().to_string(),
        "--log".to_owned(),
        arg(&log),
    ];
    args.extend(messages.iter().map(|path| arg(path)));

    let first = run(&args, RUN_TIMEOUT);
    first.expect_code(75);
    let closed = first
        .stdout
        .lines()
        .find(|line| line.starts_with("closed "))
        .unwrap_or_default();
    assert!(
        closed.contains("peer_closed 2"),
        "the summary counts the hang-ups: {first}"
    );
    assert!(
        !closed.contains("clean"),
        "a hang-up after the dot is no clean close: {first}"
    );
    args.push("--resume".to_owned());
    let resumed = run(&args, RUN_TIMEOUT);
    resumed.expect_code(75);

    let records = read_log(&log);
    assert_eq!(records.len(), 2 * messages.len(), "{records:#?}");
    for record in &records {
        assert_eq!(record.result, LogResult::DeliveryUnknown, "{record:?}");
        assert_eq!(record.reply, None, "{record:?}");
        assert!(
            record
                .detail
                .as_deref()
                .is_some_and(|detail| detail.contains("no reply")),
            "the log says why: {record:?}"
        );
        assert!(record.connection.is_some(), "{record:?}");
    }
    for path in &messages {
        let tries = records.iter().filter(|r| r.file == arg(path)).count();
        assert_eq!(tries, 2, "sent again on --resume: {}", path.display());
    }
    assert!(
        sink.output()
            .contains(&format!("mesg={}", 2 * messages.len())),
        "the sink took each message's data twice: {:?}",
        sink.output()
    );
}

#[test]
fn tls_required_sends_no_envelope() {
    // A server that offers no STARTTLS and records every byte each client
    // sends, to show that no envelope address goes out in clear text.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let recorder = std::thread::spawn(move || {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let mut sessions = Vec::new();
        while !DONE.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking stream");
                    sessions.push(std::thread::spawn(move || record_session(stream)));
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("accept on {address}: {error}"),
            }
        }
        // ec has exited, so every session has reached end of file.
        sessions
            .into_iter()
            .map(|session| session.join().expect("session thread"))
            .collect::<Vec<Vec<u8>>>()
    });

    let temp = temp_dir();
    let message = temp.path().join("secret.eml");
    std::fs::write(&message, good_message("secret", "hidden@maildir.test")).expect("write");
    let finished = run(
        [
            "deliver",
            "-q",
            "--tls",
            "required",
            "--from",
            "private-sender@ec.test",
            "--relay",
            &address.to_string(),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );
    DONE.store(true, Ordering::SeqCst);
    finished.expect_code(75);

    let sessions = recorder.join().expect("recorder thread");
    assert!(!sessions.is_empty(), "ec never connected");
    for sent in &sessions {
        let text = String::from_utf8_lossy(sent);
        assert!(text.starts_with("EHLO "), "{text:?}");
        for secret in [
            "MAIL",
            "RCPT",
            "DATA",
            "private-sender",
            "hidden@",
            "secret",
        ] {
            assert!(
                !text.contains(secret),
                "{secret} sent in clear text: {text:?}"
            );
        }
    }
}

/// Set once the `ec` run of `tls_required_sends_no_envelope` is over.
static DONE: AtomicBool = AtomicBool::new(false);

/// Plays an ESMTP server without STARTTLS for one connection and returns
/// what the client sent: every command is answered 250, except QUIT (221).
fn record_session(mut stream: std::net::TcpStream) -> Vec<u8> {
    use std::io::{BufRead as _, BufReader, Write as _};

    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut sent = Vec::new();
    let _ = stream.write_all(b"220 recorder ESMTP\r\n");
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return sent,
            Ok(_) => {}
        }
        sent.extend_from_slice(&line);
        let reply: &[u8] = if line.starts_with(b"EHLO") {
            b"250-recorder\r\n250 PIPELINING\r\n"
        } else if line.starts_with(b"QUIT") {
            b"221 bye\r\n"
        } else {
            b"250 ok\r\n"
        };
        if stream.write_all(reply).is_err() {
            return sent;
        }
    }
}
