//! `ec deliver` against the built-in sink: which header fields it drops
//! before sending (Bcc, Resent-Bcc, Return-Path, Content-Length) and which
//! bytes it must leave alone.
//!
//! The header section ends at the first empty line, or at the first line
//! that is neither a field nor a continuation line. Postfix 3.7's
//! cleanup(8) inserts the missing empty line before such a line and keeps
//! everything after it as body, so a line there that looks like a dropped
//! field is body text and must reach the server.

mod cli_support;

use std::time::Duration;

use cli_support::{arg, run, temp_dir, TestSink};
use ec_cli::sink::ReceivedMessage;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the built-in sink with `keep_messages`, runs `ec deliver` on
/// one file containing `data` with `extra` arguments, and returns what the
/// sink received.
fn deliver(data: &[u8], extra: &[&str]) -> Vec<ReceivedMessage> {
    let sink = TestSink::keeping();

    let temp = temp_dir();
    let message = temp.path().join("message.eml");
    std::fs::write(&message, data).expect("write the message");
    let log = arg(&temp.path().join("log.jsonl"));
    let relay = sink.relay();
    let message = arg(&message);
    let mut args = vec!["deliver", "--relay", &relay, "--log", &log];
    args.extend_from_slice(extra);
    args.push(&message);

    let finished = run(args, RUN_TIMEOUT);
    finished.expect_code(0);
    sink.take_messages()
}

/// Delivers `data` with a fixed envelope and returns the data received.
fn received_data(data: &[u8]) -> Vec<u8> {
    let envelope = ["--from", "sender@ec.test", "--to", "to@ec.test"];
    let mut received = deliver(data, &envelope);
    assert_eq!(received.len(), 1, "one transaction");
    received.remove(0).data
}

/// Odd spellings of dropped fields are removed, and fields whose names
/// only look like them are kept.
#[test]
fn dropped_fields_odd_spellings() {
    let cases: [(&str, &[u8], &[u8]); 7] = [
        (
            "space or tab before the colon, any case",
            b"From: s@ec.test\r\nReturn-Path : <x@ec.test>\r\n\
              CONTENT-LENGTH\t: 5\r\nresent-bcc : r@ec.test\r\nSubject: s\r\n\r\nbody\r\n",
            b"From: s@ec.test\r\nSubject: s\r\n\r\nbody\r\n",
        ),
        (
            "folded values",
            b"From: s@ec.test\r\nContent-Length:\r\n 77\r\nReturn-Path:\r\n\t<x@ec.test>\r\n\
              Subject: s\r\n\r\nbody\r\n",
            b"From: s@ec.test\r\nSubject: s\r\n\r\nbody\r\n",
        ),
        (
            "names that only start or end with a dropped name",
            b"From: s@ec.test\r\nReturn-Path-X: a\r\nX-Return-Path: b\r\nBccX: c\r\n\
              Content-Length-X: d\r\nResent-Bcc-Y: e\r\n\r\nbody\r\n",
            b"From: s@ec.test\r\nReturn-Path-X: a\r\nX-Return-Path: b\r\nBccX: c\r\n\
              Content-Length-X: d\r\nResent-Bcc-Y: e\r\n\r\nbody\r\n",
        ),
        (
            "bare line feeds, and a body line that looks like a field",
            b"From: s@ec.test\nContent-Length: 5\nReturn-Path: <x@ec.test>\n\nbody\nContent-Length: 9\n",
            b"From: s@ec.test\r\n\r\nbody\r\nContent-Length: 9\r\n",
        ),
        (
            "bare carriage returns",
            b"From: s@ec.test\rContent-Length: 5\rSubject: s\r\rbody\r",
            b"From: s@ec.test\r\nSubject: s\r\n\r\nbody\r\n",
        ),
        (
            "last field without a line ending",
            b"From: s@ec.test\r\nContent-Length: 5",
            b"From: s@ec.test\r\n",
        ),
        (
            "8-bit bytes around a dropped field",
            b"From: s@ec.test\r\nSubject: caf\xc3\xa9 \xff\r\nContent-Length: 5\r\n\
              X-\xe9t\xe9: yes\r\n\r\nbody \xff\r\n",
            b"From: s@ec.test\r\nSubject: caf\xc3\xa9 \xff\r\nX-\xe9t\xe9: yes\r\n\r\nbody \xff\r\n",
        ),
    ];
    for (case, sent, expected) in cases {
        let received = received_data(sent);
        assert_eq!(
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(expected),
            "{case}"
        );
    }
}

#[test]
fn attached_message_fields_kept() {
    let attached = "Return-Path: <inner@ec.test>\r\nBcc: inner@ec.test\r\n\
                    Content-Length: 3\r\nFrom: i@ec.test\r\n\r\nin\r\n";
    let text = format!(
        "From: s@ec.test\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=XX\r\n\r\n\
         --XX\r\nContent-Type: message/rfc822\r\n\r\n{attached}--XX--\r\n"
    );

    let received = received_data(text.as_bytes());

    assert_eq!(String::from_utf8_lossy(&received), text);
}

/// A line that is neither a field nor a continuation starts the body, so
/// the field-like lines after it are body text and must be sent.
#[test]
fn body_without_empty_line_kept() {
    let text = "From: s@ec.test\r\nSubject: s\r\n\
                This line starts the body.\r\n\
                Content-Length: 5\r\n\
                Return-Path: <body@ec.test>\r\n";

    let received = received_data(text.as_bytes());

    assert_eq!(String::from_utf8_lossy(&received), text);
}

/// Without --from and --to, the envelope must not come from body lines
/// after a line that ends the header section.
#[test]
fn body_without_empty_line_envelope() {
    let text = "From: s@ec.test\r\nTo: to@ec.test\r\nSubject: s\r\n\
                This line starts the body.\r\n\
                Bcc: body-line@ec.test\r\n\
                Return-Path: <body@ec.test>\r\n";

    let received = deliver(text.as_bytes(), &[]);

    assert_eq!(received.len(), 1, "one transaction");
    assert_eq!(received[0].reverse_path, "s@ec.test");
    assert_eq!(received[0].recipients, ["to@ec.test"]);
    assert_eq!(String::from_utf8_lossy(&received[0].data), text);
}
