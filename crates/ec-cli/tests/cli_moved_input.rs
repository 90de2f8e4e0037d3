//! `ec deliver` when a message file is moved while the run sends it: the
//! delivery log names the file by the canonical path it had when the run
//! listed it, so a later `--resume` still skips it. Runs against a small
//! SMTP server in the test, without the Postfix peers.

mod cli_support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_support::{arg, read_log, run_in, start_in, temp_dir};
use ec_cli::delivery_log::LogResult;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback SMTP server that holds its reply to each message's final dot
/// until the test releases it, so that the test can change the file system
/// between the send and the delivery log record.
struct HoldingServer {
    address: SocketAddr,
    /// Notes, one for each message whose data arrived and waits for its reply.
    data_received: Receiver<()>,
    /// Sender whose each send releases one held reply; dropping it releases
    /// them all.
    release: Option<Sender<()>>,
    /// Count of messages whose data arrived, over all connections.
    messages: Arc<AtomicUsize>,
}

impl HoldingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let (data_sender, data_received) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let messages = Arc::new(AtomicUsize::new(0));

        let counter = Arc::clone(&messages);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    return;
                };
                let session = Session {
                    data_received: data_sender.clone(),
                    released: Arc::clone(&released),
                    messages: Arc::clone(&counter),
                };
                std::thread::spawn(move || session.serve(stream));
            }
        });
        Self {
            address,
            data_received,
            release: Some(release),
            messages,
        }
    }

    fn relay(&self) -> String {
        self.address.to_string()
    }

    fn release_reply(&self) {
        if let Some(release) = &self.release {
            release.send(()).expect("a session waits for the release");
        }
    }

    fn messages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }
}

impl Drop for HoldingServer {
    fn drop(&mut self) {
        // Frees every held session, so that no `ec` waits after a failure.
        self.release.take();
    }
}

/// One SMTP connection of [`HoldingServer`].
struct Session {
    data_received: Sender<()>,
    released: Arc<Mutex<Receiver<()>>>,
    messages: Arc<AtomicUsize>,
}

impl Session {
    /// Serves one connection: 250 without extensions to EHLO, 354 to DATA,
    /// 221 to QUIT and 250 to any other command. The 250 after the message
    /// data waits for a release.
    fn serve(self, mut stream: TcpStream) {
        stream
            .set_read_timeout(Some(RUN_TIMEOUT))
            .expect("set a read timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        if stream.write_all(b"220 hold.test ESMTP\r\n").is_err() {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            if !reader.read_line(&mut line).is_ok_and(|read| read > 0) {
                return;
            }
            let command = line.to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
                b"250 hold.test\r\n"
            } else if command.starts_with("DATA") {
                if stream.write_all(b"354 end with .\r\n").is_err() || !read_data(&mut reader) {
                    return;
                }
                self.messages.fetch_add(1, Ordering::SeqCst);
                let _ = self.data_received.send(());
                // An error means the test dropped the sender: reply anyway.
                let _ = self.released.lock().expect("release lock").recv();
                b"250 2.0.0 queued\r\n"
            } else if command.starts_with("QUIT") {
                let _ = stream.write_all(b"221 2.0.0 bye\r\n");
                return;
            } else {
                b"250 2.0.0 ok\r\n"
            };
            if stream.write_all(reply).is_err() {
                return;
            }
        }
    }
}

/// Reads message data up to its final dot. Returns false when the
/// connection ends first.
fn read_data(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == b".\r\n" => return true,
            Ok(_) => {}
        }
    }
}

#[test]
fn resume_skips_file_moved_during_run() {
    let server = HoldingServer::start();
    let temp = temp_dir();
    let spool = temp.path().join("spool");
    std::fs::create_dir(&spool).expect("create the spool directory");
    let message = spool.join("a.eml");
    std::fs::write(
        &message,
        "From: sender@ec.test\nTo: rcpt@ec.test\nSubject: moved\n\nbody\n",
    )
    .expect("write the message");
    let canonical = std::fs::canonicalize(&message).expect("canonicalize");
    let log = temp.path().join("log.jsonl");
    let relay = server.relay();
    let log_arg = arg(&log);
    let deliver = ["deliver", "-q", "--relay", &relay, "--tls", "disabled"];

    // The first run starts in the spool and names the file relative to it.
    let started = Instant::now();
    let mut first_args = deliver.to_vec();
    first_args.extend(["--log", &log_arg, "a.eml"]);
    let running = start_in(&spool, &first_args);
    server
        .data_received
        .recv_timeout(RUN_TIMEOUT)
        .expect("ec sends the message data");

    // An operator moves the file aside before the server's reply decides
    // its outcome.
    let aside = temp.path().join("a.eml.hold");
    std::fs::rename(&message, &aside).expect("move the message aside");
    server.release_reply();
    let first = running.wait(RUN_TIMEOUT, started);
    first.expect_code(0);

    let records = read_log(&log);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].result, LogResult::Delivered, "{records:#?}");
    assert_eq!(records[0].file, "a.eml");
    assert_eq!(
        records[0].canonical_file,
        Some(arg(&canonical)),
        "the path the run listed, not where the file went"
    );

    // The file comes back, and a job that starts in another directory
    // resumes with its absolute path.
    std::fs::rename(&aside, &message).expect("move the message back");
    let message_arg = arg(&message);
    let mut resume_args = deliver.to_vec();
    resume_args.extend(["--log", &log_arg, "--resume", &message_arg]);
    let resumed = run_in(temp.path(), &resume_args, RUN_TIMEOUT);
    resumed.expect_code(0);

    assert_eq!(server.messages(), 1, "sent once; {resumed}");
    assert_eq!(read_log(&log).len(), 1, "no new record; {resumed}");
}
