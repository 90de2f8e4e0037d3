//! Running the compiled `ec` binary and reading what it leaves behind: its
//! exit status and output, its delivery log, and the Postfix Maildir.
//!
//! Each `cli_*.rs` test file includes this module; not every file uses
//! every helper.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ec_cli::delivery_log::LogRecord;
use ec_tests::peers::{Postfix, MAILDIR_DOMAIN};

/// The `ec` binary that Cargo built for these tests.
pub(crate) const EC: &str = env!("CARGO_BIN_EXE_ec");

/// How often the waiting helpers look again.
const POLL: Duration = Duration::from_millis(25);

/// A started `ec` process whose output is collected in the background.
pub(crate) struct Running {
    child: Child,
    args: Vec<String>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// A finished `ec` run.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The command line, for failure messages.
    pub(crate) args: Vec<String>,
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// Everything it printed on stdout.
    pub(crate) stdout: String,
    /// Everything it printed on stderr.
    pub(crate) stderr: String,
    /// From the start to the exit.
    pub(crate) elapsed: Duration,
}

impl Finished {
    /// Returns the exit code, and panics with the output when a signal
    /// ended the process.
    pub(crate) fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("ec ended by a signal ({}); {self}", self.status))
    }

    /// Panics with the output unless the exit code is `expected`.
    pub(crate) fn expect_code(&self, expected: i32) {
        assert_eq!(self.code(), expected, "unexpected exit status; {self}");
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`ec {}` exited with {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Starts `ec` with `args`, stdin closed, output collected.
pub(crate) fn start<I, S>(args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    start_command(Command::new(EC), args)
}

/// Starts `ec` as [`start`] does, in the working directory `dir`.
pub(crate) fn start_in<I, S>(dir: &Path, args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut command = Command::new(EC);
    command.current_dir(dir);
    start_command(command, args)
}

fn start_command<I, S>(mut command: Command, args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut child = command
        .args(&args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {EC}: {e}"));
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    Running {
        child,
        args,
        stdout,
        stderr,
    }
}

fn collect<R: std::io::Read + Send + 'static>(mut pipe: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `ec` with `args` and waits at most `timeout` for it to exit.
pub(crate) fn run<I, S>(args: I, timeout: Duration) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let started = Instant::now();
    start(args).wait(timeout, started)
}

/// Runs `ec` as [`run`] does, in the working directory `dir`.
pub(crate) fn run_in<I, S>(dir: &Path, args: I, timeout: Duration) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let started = Instant::now();
    start_in(dir, args).wait(timeout, started)
}

impl Running {
    /// The process id, for sending signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub(crate) fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `signal` (a name `kill -s` knows, such as `INT`).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// SIGKILL, which the process cannot catch.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL ec");
    }

    /// Waits for the exit; kills the process and panics with its output
    /// when `timeout` (counted from `started`) passes first.
    pub(crate) fn wait(mut self, timeout: Duration, started: Instant) -> Finished {
        let deadline = started + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for ec") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("reap ec");
                let finished = self.finish(status, started);
                panic!("ec did not exit within {timeout:?}; {finished}");
            }
            thread::sleep(POLL);
        };
        self.finish(status, started)
    }

    fn finish(&mut self, status: ExitStatus, started: Instant) -> Finished {
        let join = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default()
        };
        Finished {
            args: self.args.clone(),
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            elapsed: started.elapsed(),
        }
    }
}

/// Reads every complete record of a delivery log. A partial last line,
/// as a killed run leaves it, is left out.
pub(crate) fn read_log(path: &Path) -> Vec<LogRecord> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the delivery log {}: {e}", path.display()));
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "line {} of {} is not a record ({e}): {line}",
                    index + 1,
                    path.display()
                )
            })
        })
        .collect()
}

/// Counts the complete lines in the log so far, 0 while it does not exist.
pub(crate) fn log_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Waits until the log has at least `lines` complete lines or the process
/// exits, and returns the count seen.
pub(crate) fn wait_for_log_lines(running: &mut Running, path: &Path, lines: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = log_lines(path);
        if seen >= lines || running.has_exited() || Instant::now() >= deadline {
            return seen;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Counts the records of each result.
pub(crate) fn count_results(records: &[LogRecord]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record.result.as_str()).or_default() += 1;
    }
    counts
}

/// Returns the queue id in a Postfix `250 2.0.0 Ok: queued as ID` reply.
pub(crate) fn queued_as(record: &LogRecord) -> Option<String> {
    let reply = record.reply.as_ref()?;
    let text = reply.lines.join(" ");
    let (_, id) = text.rsplit_once("queued as ")?;
    Some(id.trim().to_owned())
}

/// Counts the files in the Maildir's `new/` and `cur/` without reading them.
pub(crate) fn maildir_count(postfix: &Postfix, local_part: &str) -> usize {
    let dir = postfix.maildir_path(MAILDIR_DOMAIN, local_part);
    ["new", "cur"]
        .iter()
        .map(|sub| std::fs::read_dir(dir.join(sub)).map_or(0, |entries| entries.count()))
        .sum()
}

/// Waits until the Maildir holds at least `count` messages, then until
/// its count has not changed for `settle`, so that a late duplicate has
/// time to arrive; returns every message. Panics after `timeout`.
pub(crate) fn wait_for_maildir(
    postfix: &Postfix,
    local_part: &str,
    count: usize,
    settle: Duration,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut last = maildir_count(postfix, local_part);
    let mut stable_since = Instant::now();
    loop {
        let now = maildir_count(postfix, local_part);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        if now >= count && stable_since.elapsed() >= settle {
            return postfix.maildir(local_part);
        }
        if Instant::now() >= deadline {
            // Reuse the peer helper's panic, which quotes Postfix's log.
            return postfix.wait_for_messages(local_part, count, Duration::ZERO);
        }
        thread::sleep(POLL);
    }
}

/// A temporary directory for one test's files.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ec-cli-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Converts `path` to a command-line argument.
pub(crate) fn arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_owned()
}

/// Writes `count` small messages, `m00000.eml` and up, each with its
/// index in the Subject and Message-ID, into `dir`; returns their paths.
pub(crate) fn write_messages(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|index| {
            let path = dir.join(format!("m{index:05}.eml"));
            let text = format!(
                "From: load@ec.test\r\nTo: load@ec.test\r\nSubject: message {index}\r\n\
                 Message-ID: <{index}.load@ec.test>\r\n\r\nbody of message {index}\r\n"
            );
            std::fs::write(&path, text).expect("write a message file");
            path
        })
        .collect()
}

/// Returns the index of a message written by [`write_messages`], read from
/// its Message-ID header as stored in the Maildir.
pub(crate) fn message_index(stored: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(stored);
    let line = text.lines().find(|l| l.starts_with("Message-ID: <"))?;
    line.trim_start_matches("Message-ID: <")
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The built-in sink on a free loopback port, with the runtime that serves
/// it, for tests that run `ec` against it.
pub(crate) struct TestSink {
    sink: ec_cli::sink::Sink,
    _runtime: tokio::runtime::Runtime,
}

impl TestSink {
    /// Starts a sink that keeps every message it accepts.
    pub(crate) fn keeping() -> Self {
        Self::start(ec_cli::sink::SinkConfig {
            keep_messages: true,
            ..ec_cli::sink::SinkConfig::default()
        })
    }

    /// Starts a sink with `config`.
    pub(crate) fn start(config: ec_cli::sink::SinkConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let sink = runtime
            .block_on(ec_cli::sink::Sink::start(config))
            .expect("start the built-in sink");
        Self {
            sink,
            _runtime: runtime,
        }
    }

    /// The sink's address, as `--relay` takes it.
    pub(crate) fn relay(&self) -> String {
        self.sink.local_addr().to_string()
    }

    /// The running sink.
    pub(crate) fn sink(&self) -> &ec_cli::sink::Sink {
        &self.sink
    }

    /// Takes the messages the sink has kept.
    pub(crate) fn take_messages(&self) -> Vec<ec_cli::sink::ReceivedMessage> {
        self.sink.take_messages()
    }
}

/// Writes a configuration file into `dir` that sends MX lookups to
/// `nameserver` and MX deliveries to `mx_port`, and returns its path.
pub(crate) fn mx_config_file(dir: &Path, nameserver: SocketAddr, mx_port: u16) -> PathBuf {
    let path = dir.join("mx.toml");
    let text = format!("[dns]\nnameservers = [\"{nameserver}\"]\n[global]\nmx_port = {mx_port}\n");
    std::fs::write(&path, text).expect("write the configuration");
    path
}
