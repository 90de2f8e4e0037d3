//! `ec demo` on its own: the built-in sink, the summary and the delivery
//! log, with nothing else running.

mod cli_support;

use std::path::PathBuf;
use std::process::Command;

use cli_support::{read_log, temp_dir, EC};
use ec_cli::delivery_log::LogResult;

#[test]
fn demo_prints_summary_and_log() {
    // The demo writes its log into the temporary directory, so point that
    // at one the test owns and removes.
    let temp = temp_dir();
    let output = Command::new(EC)
        .args(["demo", "--messages", "8"])
        .env("TMPDIR", temp.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run ec demo");
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

    let log = stdout
        .lines()
        .find_map(|line| line.strip_prefix("delivery log: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no `delivery log:` line\n{context}"));
    assert!(log.starts_with(temp.path()), "{}", log.display());
    let records = read_log(&log);
    assert_eq!(records.len(), recipients, "{context}");
    assert!(
        records
            .iter()
            .all(|r| r.result == LogResult::Delivered && r.tls.is_some()),
        "{records:#?}"
    );
}
