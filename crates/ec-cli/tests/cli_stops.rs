//! `ec deliver` runs that stop before their work is done, without the
//! Postfix peers: a delivery log that cannot be written (`/dev/full`, whose
//! writes fail with ENOSPC), and a second stop signal during a slow stop.

mod cli_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cli_support::{arg, run, start, temp_dir, write_messages, Running};
use ec_cli::delivery_log::{LogRecord, LogResult};

const MESSAGES: usize = 2000;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `ec sink` on a free loopback port, stopped with SIGINT when dropped.
struct SinkProcess {
    running: Option<Running>,
    address: SocketAddr,
}

impl SinkProcess {
    fn start() -> Self {
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port");
        let running = start(["sink", "--listen", &address.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "ec sink did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Self {
            running: Some(running),
            address,
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.signal("INT");
            let _ = running.wait(Duration::from_secs(10), Instant::now());
        }
    }
}

#[test]
fn full_log_stops_run() {
    let sink = SinkProcess::start();
    let temp = temp_dir();
    write_messages(temp.path(), MESSAGES);
    let finished = run(
        [
            "deliver",
            "-q",
            "--relay",
            &sink.address.to_string(),
            "--tls",
            "disabled",
            "--connections",
            "4",
            "--log",
            "/dev/full",
            &arg(temp.path()),
        ],
        RUN_TIMEOUT,
    );

    finished.expect_code(74);
    assert!(
        finished
            .stderr
            .contains("cannot write to the delivery log /dev/full: No space left on device"),
        "{finished}"
    );
    assert!(
        finished.stdout.contains("recipients   delivered"),
        "{finished}"
    );

    let printed: Vec<LogRecord> = finished
        .stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a log record on stderr"))
        .collect();
    assert!(
        printed
            .iter()
            .all(|record| record.result == LogResult::Delivered),
        "{finished}"
    );
    let summary = format!("delivered {} ", printed.len());
    assert!(
        finished.stdout.contains(&summary),
        "each delivery the log lacks is printed; {finished}"
    );
    assert!(
        printed.len() < MESSAGES / 2,
        "the run stops at the first failed write; {finished}"
    );
}

/// Accepts SMTP connections, sends the banner and the EHLO reply, and then
/// never replies again, so that every transaction stays open. Sends a note on
/// `mail_seen` for each MAIL command.
fn stalling_server(listener: TcpListener, mail_seen: mpsc::Sender<()>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            return;
        };
        let mail_seen = mail_seen.clone();
        std::thread::spawn(move || {
            let _ = stream.write_all(b"220 stall.test ESMTP\r\n");
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
                let command = line.to_ascii_uppercase();
                if command.starts_with("EHLO") || command.starts_with("HELO") {
                    let _ = stream.write_all(b"250 stall.test\r\n");
                } else if command.starts_with("MAIL") {
                    let _ = mail_seen.send(());
                }
                line.clear();
            }
        });
    }
}

#[test]
fn second_signal_stops_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("local address");
    let (mail_seen, mail_commands) = mpsc::channel();
    std::thread::spawn(move || stalling_server(listener, mail_seen));

    let temp = temp_dir();
    write_messages(temp.path(), 4);
    let log = temp.path().join("log.jsonl");
    let mut running = start([
        "deliver",
        "-q",
        "--relay",
        &address.to_string(),
        "--tls",
        "disabled",
        "--log",
        &arg(&log),
        &arg(temp.path()),
    ]);
    mail_commands
        .recv_timeout(Duration::from_secs(20))
        .expect("ec sends MAIL");

    running.signal("INT");
    // The first signal lets the busy transaction finish for 5 s before it
    // closes the connection, so the run is still stopping here.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!running.has_exited(), "the first signal stops gracefully");

    let second = Instant::now();
    running.signal("TERM");
    let finished = running.wait(Duration::from_secs(3), second);
    finished.expect_code(143);
    assert!(
        finished
            .stderr
            .contains("a second Ctrl-C or SIGTERM stops at once"),
        "{finished}"
    );
    assert!(
        finished
            .stderr
            .contains("stopped at once by a second signal"),
        "{finished}"
    );
}
