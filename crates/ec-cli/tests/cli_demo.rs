//! `ec demo` on its own: the built-in sink, the summary and the delivery
//! log, with nothing else running.

mod cli_support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cli_support::{read_log, temp_dir, EC};
use ec_cli::delivery_log::LogResult;

/// Runs `ec` with `args` to its end, with `temp` as the temporary
/// directory and no `RUST_LOG` from the environment.
fn run_ec(args: impl IntoIterator<Item = impl AsRef<OsStr>>, temp: &Path) -> Output {
    Command::new(EC)
        .args(args)
        .env("TMPDIR", temp)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ec")
}

#[test]
fn demo_prints_summary_and_log() {
    let temp = temp_dir();
    let kept = temp.path().join("demo-log.jsonl");
    let args = ["demo", "--messages", "8", "--log"].map(OsStr::new);
    let output = run_ec(args.into_iter().chain([kept.as_os_str()]), temp.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "{context}");

    let samples = ec_cli::samples::demo_messages(8).len();
    let recipients = samples * ec_cli::samples::DEMO_RECIPIENTS.len();
    let summary = format!("delivered {recipients}   deferred 0   failed 0   unknown 0");
    assert!(stdout.contains(&summary), "{summary}\n{context}");
    assert!(stdout.contains("over TLS 100.0%"), "{context}");
    assert!(
        stdout.contains(&format!(
            "received {samples} messages for {recipients} recipients"
        )),
        "{context}"
    );
    assert!(
        stdout.contains(&format!("{samples} of them as BDAT chunks")),
        "the sink offers CHUNKING, so every message goes as one chunk\n{context}"
    );

    let log = stdout
        .lines()
        .find_map(|line| line.strip_prefix("delivery log: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no `delivery log:` line\n{context}"));
    assert_eq!(log, kept);
    let records = read_log(&log);
    assert_eq!(records.len(), recipients, "{context}");
    assert!(
        records
            .iter()
            .all(|r| r.result == LogResult::Delivered && r.tls.is_some()),
        "{records:#?}"
    );
}

#[test]
fn demo_removes_its_temporary_log() {
    // Without --log the demo writes its log into the temporary directory,
    // so point that at one the test owns.
    let temp = temp_dir();
    let output = run_ec(["demo"], temp.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let context = format!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{context}");

    let recipients =
        ec_cli::samples::demo_messages(0).len() * ec_cli::samples::DEMO_RECIPIENTS.len();
    let line = format!("delivery log: {recipients} records, one per recipient");
    assert!(stdout.contains(&line), "{line}\n{context}");
    assert!(stdout.contains("\"result\":\"delivered\""), "{context}");
    let left: Vec<_> = std::fs::read_dir(temp.path())
        .expect("read the temporary directory")
        .map(|entry| entry.expect("entry").file_name())
        .filter(|name| name.to_string_lossy().starts_with("ec-demo-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--quiet` leaves the summary table alone on standard output, and still
/// removes the temporary log.
#[test]
fn quiet_demo_prints_only_summary() {
    let temp = temp_dir();
    let output = run_ec(["demo", "--quiet"], temp.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "{context}");

    let first_words: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        first_words,
        ["recipients", "connections", "closed", "rate"],
        "{context}"
    );
    assert!(stderr.is_empty(), "{context}");
    let left = std::fs::read_dir(temp.path())
        .expect("read the temporary directory")
        .count();
    assert_eq!(left, 0, "the temporary log is removed\n{context}");
}

/// A reader that goes away after the first line, as `ec demo | head -1`
/// does: the demo still runs to its end and exits 0, without a panic.
#[test]
fn demo_survives_closed_stdout() {
    let (status, stderr) = demo_with_closed_stream(Stream::Stdout);
    assert_eq!(status, Some(0), "--- stderr\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("failed to write"),
        "a broken pipe is quiet: {stderr}"
    );
}

/// The same for the logs on standard error, as `ec -vv demo 2>&1 | head`
/// does: a failed log write must not stop the scheduler's thread.
#[test]
fn demo_survives_closed_stderr() {
    let (status, _) = demo_with_closed_stream(Stream::Stderr);
    assert_eq!(status, Some(0));
}

enum Stream {
    Stdout,
    Stderr,
}

/// Runs `ec -vv demo`, reads the first line of `stream` and closes it;
/// returns the exit status and, when stdout was closed, standard error.
fn demo_with_closed_stream(stream: Stream) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let temp = temp_dir();
    let mut child = Command::new(EC)
        .args(["-vv", "demo", "--messages", "4"])
        .env("TMPDIR", temp.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ec demo");

    let mut first = String::new();
    let mut stderr = String::new();
    match stream {
        Stream::Stdout => {
            let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            stdout.read_line(&mut first).expect("read the first line");
            assert!(
                first.starts_with("ec demo: built-in SMTP sink on"),
                "{first}"
            );
            drop(stdout);
            let mut pipe = child.stderr.take().expect("piped stderr");
            pipe.read_to_string(&mut stderr).expect("read stderr");
        }
        Stream::Stderr => {
            let mut pipe = BufReader::new(child.stderr.take().expect("piped stderr"));
            pipe.read_line(&mut first).expect("read the first line");
            assert!(first.contains("INFO"), "{first}");
            drop(pipe);
            let mut stdout = child.stdout.take().expect("piped stdout");
            let mut ignored = String::new();
            stdout.read_to_string(&mut ignored).expect("read stdout");
        }
    }

    let status = child.wait().expect("wait for ec demo");
    (status.code(), stderr)
}

/// With -vv the log shows both sides of each SMTP conversation: the
/// commands ec sends as well as the server's replies, but never message
/// data.
#[test]
fn debug_log_shows_commands_and_replies() {
    let temp = temp_dir();
    let output = run_ec(["-vv", "demo", "--messages", "2"], temp.path());
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);

    for command in [
        "command=EHLO ",
        "command=STARTTLS",
        "command=MAIL FROM:<",
        "command=RCPT TO:<",
    ] {
        assert!(stderr.contains(command), "no {command:?} in:\n{stderr}");
    }
    let ehlo_lines = stderr.matches("command=EHLO ").count();
    let sessions = stderr.matches("command=STARTTLS").count();
    assert_eq!(
        ehlo_lines,
        2 * sessions,
        "EHLO before and after TLS:\n{stderr}"
    );
    assert!(stderr.contains("reply reply=250"), "{stderr}");
    assert!(
        !stderr.contains("command=Subject:"),
        "message data logged:\n{stderr}"
    );
}
