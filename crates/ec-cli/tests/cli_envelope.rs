//! `ec deliver` against the built-in sink, checking what the envelope and
//! the message data become on the server and in the delivery log.

mod cli_support;

use std::path::Path;
use std::time::Duration;

use cli_support::{arg, read_log, run, temp_dir, Finished, TestSink};
use ec_cli::delivery_log::LogResult;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `ec deliver --relay SINK --log LOG` with `extra` arguments after.
fn deliver(sink: &TestSink, log: &Path, extra: &[&str]) -> Finished {
    let relay = sink.relay();
    let log = arg(log);
    let mut args = vec!["deliver", "--relay", &relay, "--log", &log];
    args.extend_from_slice(extra);
    run(args, RUN_TIMEOUT)
}

/// Bcc, Resent-Bcc, Return-Path and Content-Length stay out of the data, as
/// Postfix's cleanup(8) leaves them out, while the envelope still comes from
/// them: the sender from Return-Path, recipients from Bcc.
#[test]
fn dropped_fields_not_sent() {
    let sink = TestSink::keeping();
    let temp = temp_dir();
    let message = temp.path().join("bcc.eml");
    let text = "Return-Path: <bounces@ec.test>\r\n\
                From: sender@ec.test\r\nTo: to@ec.test\r\n\
                bcc: hidden@ec.test,\r\n\tsecret@ec.test\r\n\
                Resent-From: resender@ec.test\r\n\
                Resent-Bcc: resent-hidden@ec.test\r\n\
                Content-Length: 9999\r\n\
                Subject: blind copies\r\n\r\nBcc: a body line, not a field\r\n";
    std::fs::write(&message, text).expect("write the message");
    let log = temp.path().join("log.jsonl");

    let finished = deliver(&sink, &log, &[&arg(&message)]);
    finished.expect_code(0);

    let received = sink.take_messages();
    assert_eq!(received.len(), 1, "one transaction; {finished}");
    assert_eq!(received[0].reverse_path, "bounces@ec.test");
    assert_eq!(
        received[0].recipients,
        ["to@ec.test", "hidden@ec.test", "secret@ec.test"]
    );
    let data = String::from_utf8_lossy(&received[0].data);
    let expected = "From: sender@ec.test\r\nTo: to@ec.test\r\n\
                    Resent-From: resender@ec.test\r\n\
                    Subject: blind copies\r\n\r\nBcc: a body line, not a field\r\n";
    assert_eq!(data, expected);
    assert_eq!(read_log(&log).len(), 3);
}

#[test]
fn resume_matches_respelled_paths() {
    let sink = TestSink::keeping();
    let temp = temp_dir();
    let big = temp.path().join("big");
    std::fs::create_dir(&big).expect("create the message directory");
    for name in ["m1", "m2"] {
        let text = format!("From: sender@ec.test\nTo: {name}@ec.test\nSubject: {name}\n\nbody\n");
        std::fs::write(big.join(format!("{name}.eml")), text).expect("write a message");
    }
    let log = temp.path().join("log.jsonl");

    // A job that always passes --resume: the first run starts the log.
    let first = deliver(&sink, &log, &["--resume", &arg(&big.join("m1.eml"))]);
    first.expect_code(0);
    let received = sink.take_messages();
    assert_eq!(received.len(), 1, "{first}");
    assert_eq!(received[0].recipients, ["m1@ec.test"]);

    let m1 = temp.path().join("big/./m1.eml");
    let m2 = temp.path().join("big/../big/m2.eml");
    let second = deliver(&sink, &log, &["--resume", &arg(&m1), &arg(&m2)]);
    second.expect_code(0);
    let received = sink.take_messages();
    let recipients: Vec<&[String]> = received.iter().map(|m| &m.recipients[..]).collect();
    assert_eq!(
        recipients,
        [["m2@ec.test"]],
        "m1 is not sent again; {second}"
    );

    let records = read_log(&log);
    assert_eq!(records.len(), 2, "{records:#?}");
    let canonical = std::fs::canonicalize(big.join("m2.eml")).expect("canonicalize");
    assert_eq!(records[1].file, arg(&m2));
    assert_eq!(records[1].canonical_file, Some(arg(&canonical)));
}

#[test]
fn display_name_recipient_is_invalid() {
    let sink = TestSink::keeping();
    let temp = temp_dir();
    let message = temp.path().join("moderated.eml");
    let text = "From: sender@ec.test\nTo: good@ec.test, moderator\nSubject: x\n\nbody\n";
    std::fs::write(&message, text).expect("write the message");
    let log = temp.path().join("log.jsonl");

    let finished = deliver(&sink, &log, &[&arg(&message)]);
    finished.expect_code(65);
    assert!(
        sink.take_messages().is_empty(),
        "nothing is sent; {finished}"
    );
    assert!(
        finished.stderr.contains("\"moderator\""),
        "stderr names the mailbox; {finished}"
    );

    let records = read_log(&log);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].result, LogResult::InvalidInput);
    assert_eq!(records[0].recipient, None);
    let detail = records[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("\"moderator\" has no address"), "{detail}");
}

#[test]
fn log_sender_null_or_unknown() {
    let sink = TestSink::keeping();
    let temp = temp_dir();
    let dir = temp.path().join("mail");
    std::fs::create_dir(&dir).expect("create the message directory");
    let files = [
        (
            "bounce.eml",
            "Return-Path: <>\nFrom: MAILER-DAEMON@ec.test\nTo: a@ec.test\n\nx\n",
        ),
        ("no-sender.eml", "To: a@ec.test\nSubject: x\n\nbody\n"),
        (
            "no-recipient.eml",
            "From: sender@ec.test\nTo: moderator\n\nbody\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write a message");
    }
    let log = temp.path().join("log.jsonl");

    let finished = deliver(&sink, &log, &[&arg(&dir)]);
    finished.expect_code(65);

    let records = read_log(&log);
    assert_eq!(records.len(), 3, "{records:#?}");
    let sender = |name: &str| {
        let file = arg(&dir.join(name));
        let record = records.iter().find(|r| r.file == file);
        record
            .unwrap_or_else(|| panic!("no record for {file}: {records:#?}"))
            .sender
            .clone()
    };
    assert_eq!(sender("bounce.eml").as_deref(), Some("<>"));
    assert_eq!(sender("no-sender.eml"), None);
    assert_eq!(
        sender("no-recipient.eml").as_deref(),
        Some("sender@ec.test")
    );
}
