//! `ec deliver` interrupted partway through a few thousand messages to
//! Postfix's Maildir domain: SIGKILL followed by `--resume`, SIGINT and
//! SIGTERM.
//!
//! The Maildir is the wire-side truth: every message carries its index in
//! its Message-ID, so the test counts the copies of each one that Postfix
//! stored.

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cli_support::{
    arg, count_results, message_index, read_log, start, temp_dir, wait_for_log_lines,
    wait_for_maildir, write_messages,
};
use ec_cli::delivery_log::{LogRecord, LogResult};
use ec_tests::peers::Postfix;

/// Messages per run: enough that the signal lands well inside the run.
const MESSAGES: usize = 2000;

/// `--connections`: the most messages that can be in flight at once, and
/// so the most duplicates a kill may cause.
const CONNECTIONS: usize = 8;

/// Log records to wait for before the signal.
const SIGNAL_AFTER: usize = 300;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the Maildir count must stay still before it is taken as final,
/// so that a duplicate still in Postfix's queue has time to arrive.
const SETTLE: Duration = Duration::from_secs(1);

fn deliver_args(local: &str, log: &Path, dir: &Path, resume: bool) -> Vec<String> {
    let mut args = vec![
        "deliver".to_owned(),
        "-q".to_owned(),
        "--relay".to_owned(),
        Postfix::get().plain_addr().to_string(),
        // Plain text keeps the run short, and the corpus test covers TLS.
        "--tls".to_owned(),
        "disabled".to_owned(),
        "--connections".to_owned(),
        CONNECTIONS.to_string(),
        "--from".to_owned(),
        format!("{local}@ec.test"),
        "--to".to_owned(),
        format!("{local}@maildir.test"),
        "--log".to_owned(),
        arg(log),
    ];
    if resume {
        args.push("--resume".to_owned());
    }
    args.push(arg(dir));
    args
}

/// Returns the message index of a log record's file (`m00042.eml` is 42).
fn file_index(record: &LogRecord) -> usize {
    Path::new(&record.file)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.strip_prefix('m'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("unexpected file in the log: {record:?}"))
}

/// Counts the copies of each message index in the Maildir.
fn copies(stored: &[Vec<u8>]) -> BTreeMap<usize, usize> {
    let mut copies = BTreeMap::new();
    for message in stored {
        let index = message_index(message).unwrap_or_else(|| {
            panic!(
                "stored message without an index: {}",
                String::from_utf8_lossy(message)
            )
        });
        *copies.entry(index).or_default() += 1;
    }
    copies
}

#[test]
fn kill_then_resume() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("cli-kill");
    let temp = temp_dir();
    let dir = temp.path().join("mail");
    std::fs::create_dir(&dir).expect("create mail dir");
    write_messages(&dir, MESSAGES);
    let log = temp.path().join("log.jsonl");

    let started = Instant::now();
    let mut first = start(deliver_args(&local, &log, &dir, false));
    let seen = wait_for_log_lines(&mut first, &log, SIGNAL_AFTER);
    first.kill();
    let killed = first.wait(RUN_TIMEOUT, started);
    assert_eq!(
        killed.status.code(),
        None,
        "the first run must die by SIGKILL, not finish ({seen} records seen); {killed}"
    );

    let first_records = read_log(&log);
    assert!(
        first_records.len() >= SIGNAL_AFTER && first_records.len() < MESSAGES,
        "killed partway: {} records",
        first_records.len()
    );
    let done_first: BTreeSet<usize> = first_records
        .iter()
        .filter(|r| r.result.is_final())
        .map(file_index)
        .collect();
    let unknown: BTreeSet<usize> = first_records
        .iter()
        .filter(|r| r.result == LogResult::DeliveryUnknown)
        .map(file_index)
        .collect();

    let resumed = cli_support::run(deliver_args(&local, &log, &dir, true), RUN_TIMEOUT);
    resumed.expect_code(0);

    // The resumed run skips every recipient with a final record, and
    // gives each other one exactly one record, delivered.
    let all = read_log(&log);
    let second = &all[first_records.len()..];
    let mut second_files = BTreeSet::new();
    for record in second {
        let index = file_index(record);
        assert_eq!(record.result, LogResult::Delivered, "{record:?}");
        assert!(
            !done_first.contains(&index),
            "message {index} was final before the kill and sent again: {record:?}"
        );
        assert!(second_files.insert(index), "two records for {index}");
    }
    let expected: BTreeSet<usize> = (0..MESSAGES).filter(|i| !done_first.contains(i)).collect();
    assert_eq!(second_files, expected, "the resumed run did the rest");
    assert!(
        resumed
            .stdout
            .contains(&format!("delivered {} ", expected.len())),
        "{resumed}"
    );

    // On the wire: none lost, and a duplicate only for a message whose
    // delivery was unknown or that had no final record when the first run
    // died. Such a message was in flight (one per connection), or accepted
    // with its record still on its way to the log writer. The writer runs
    // on another thread and lags the sessions by a few records when the
    // machine is busy, so the bound is twice the connections.
    let stored = wait_for_maildir(postfix, &local, MESSAGES, SETTLE, RUN_TIMEOUT);
    let copies = copies(&stored);
    let missing: Vec<usize> = (0..MESSAGES).filter(|i| !copies.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost messages: {missing:?}");
    let duplicates: Vec<usize> = copies
        .iter()
        .filter(|(_, &count)| count > 1)
        .map(|(&index, _)| index)
        .collect();
    for index in &duplicates {
        assert_eq!(
            copies[index], 2,
            "message {index} stored {} times",
            copies[index]
        );
        assert!(
            unknown.contains(index) || !done_first.contains(index),
            "message {index} was recorded delivered before the kill, yet sent again"
        );
    }
    let in_flight_duplicates = duplicates.iter().filter(|i| !unknown.contains(i)).count();
    assert!(
        in_flight_duplicates <= 2 * CONNECTIONS,
        "{in_flight_duplicates} duplicates of messages without a final record at the kill, \
         more than twice the {CONNECTIONS} connections: {duplicates:?}"
    );
    eprintln!(
        "killed after {} records; {} duplicate(s) on the wire: {duplicates:?}",
        first_records.len(),
        duplicates.len()
    );
}

/// Stops a run with `signal` (`INT` or `TERM`) partway and checks that
/// every recipient got exactly one record and the wire agrees.
fn stop_records_every_outcome(signal: &str) {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part(&format!("cli-sig{}", signal.to_lowercase()));
    let temp = temp_dir();
    let dir = temp.path().join("mail");
    std::fs::create_dir(&dir).expect("create mail dir");
    write_messages(&dir, MESSAGES);
    let log = temp.path().join("log.jsonl");

    let started = Instant::now();
    let mut running = start(deliver_args(&local, &log, &dir, false));
    wait_for_log_lines(&mut running, &log, SIGNAL_AFTER);
    let signalled = Instant::now();
    running.signal(signal);
    let finished = running.wait(RUN_TIMEOUT, started);
    finished.expect_code(75);
    let stop_time = signalled.elapsed();
    assert!(
        stop_time < Duration::from_secs(10),
        "stopped {stop_time:?} after SIG{signal}; {finished}"
    );
    assert!(finished.stderr.contains("stopping"), "{finished}");

    let records = read_log(&log);
    assert_eq!(records.len(), MESSAGES, "one record per recipient");
    let files: BTreeSet<usize> = records.iter().map(file_index).collect();
    assert_eq!(files.len(), MESSAGES, "no recipient twice");

    let counts = count_results(&records);
    let delivered: BTreeSet<usize> = records
        .iter()
        .filter(|r| r.result == LogResult::Delivered)
        .map(file_index)
        .collect();
    let deferred: BTreeSet<usize> = records
        .iter()
        .filter(|r| r.result == LogResult::Deferred)
        .map(file_index)
        .collect();
    let unknown = counts.get("delivery_unknown").copied().unwrap_or(0);
    assert_eq!(
        delivered.len() + deferred.len() + unknown,
        MESSAGES,
        "{counts:?}"
    );
    assert!(
        !deferred.is_empty(),
        "SIG{signal} came after the end: {counts:?}"
    );
    for record in records.iter().filter(|r| r.result == LogResult::Deferred) {
        let detail = record.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("stopped"), "{record:?}");
        assert_eq!(record.reply, None, "no server reply came: {record:?}");
    }
    let summary = format!(
        "delivered {}   deferred {}   failed 0   unknown {unknown}",
        delivered.len(),
        deferred.len()
    );
    assert!(finished.stdout.contains(&summary), "{summary}; {finished}");

    // On the wire: every message logged delivered arrived once, and none
    // logged deferred arrived at all.
    let stored = wait_for_maildir(postfix, &local, delivered.len(), SETTLE, RUN_TIMEOUT);
    let copies = copies(&stored);
    for index in &delivered {
        assert_eq!(copies.get(index), Some(&1), "delivered message {index}");
    }
    let deferred_but_stored: Vec<&usize> =
        deferred.iter().filter(|i| copies.contains_key(i)).collect();
    assert!(
        deferred_but_stored.is_empty(),
        "logged deferred but in the Maildir: {deferred_but_stored:?}"
    );
    eprintln!(
        "SIG{signal} after {} records; stopped in {stop_time:?}; {counts:?}",
        SIGNAL_AFTER
    );
}

#[test]
fn sigint_records_every_outcome() {
    stop_records_every_outcome("INT");
}

#[test]
fn sigterm_records_every_outcome() {
    stop_records_every_outcome("TERM");
}
