//! `ec deliver` against the real Postfix peer over verified STARTTLS: every
//! message of the corpus arrives once, byte for byte apart from what SMTP
//! and Postfix change on purpose, and the delivery log accounts for each.
//!
//! What may differ between a message file and the copy in the Maildir, and
//! nothing else:
//!
//! 1. Trace fields. The Maildir pipe prepends `Return-Path:` and
//!    `Delivered-To:` (pipe(8) flags `R` and `D`), and smtpd prepends one
//!    `Received:` field. The test removes exactly these three, first
//!    checking that they name the envelope sender, the recipient and an
//!    `ESMTPS` (TLS) session.
//! 2. Line endings. ec sends every line ending (CRLF, bare LF, bare CR) as
//!    CRLF, which SMTP requires; the Maildir stores LF. Both sides are
//!    compared as lists of lines: the file split at CRLF, LF or CR, the
//!    stored copy at LF only, so a CR that reached Postfix would show.
//! 3. cleanup(8) repairs, modelled by [`after_cleanup`] and checked on
//!    their own by `postfix_cleanup_repairs_bdat` and
//!    `postfix_cleanup_repairs_data`: it drops `Return-Path:` fields from
//!    the header section (ec drops them before sending, so the two agree),
//!    and inserts the empty line that ends the header
//!    section before the first line that is neither a field nor a
//!    continuation. A message that came with DATA and starts with an mbox
//!    `From ` line gets that line turned into an `X-Mailbox-Line:` field.
//!    With BDAT (ec's default, since the peer offers CHUNKING) smtpd leaves
//!    that line alone, so it ends the header section. Of the corpus, only the
//!    first repair applies (three files carry `Return-Path:`).
//!    `local_header_rewrite_clients` is empty on the peer, so cleanup adds
//!    no Message-ID, Date or From.

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_support::{arg, queued_as, read_log, run, temp_dir, wait_for_maildir};
use ec_cli::delivery_log::LogResult;
use ec_tests::peers::Postfix;

/// How long one `ec deliver` run of these tests may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the Maildir count must stay still before it is taken as final.
const SETTLE: Duration = Duration::from_millis(500);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/corpus/mail-parser")
}

/// Builds the `ec deliver` options for Postfix's plain port with STARTTLS
/// required and the certificate checked against the peer's CA and name.
fn starttls_args(postfix: &Postfix) -> Vec<String> {
    vec![
        "deliver".into(),
        "-q".into(),
        "--tls".into(),
        "required".into(),
        "--tls-verify".into(),
        "host".into(),
        "--ca-file".into(),
        arg(postfix.ca_file()),
        "--tls-server-name".into(),
        postfix.server_name().into(),
        "--relay".into(),
        postfix.plain_addr().to_string(),
    ]
}

#[test]
fn corpus_arrives_intact() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("cli-corpus");
    let sender = format!("{local}@ec.test");
    let recipient = format!("{local}@maildir.test");
    let temp = temp_dir();
    let log = temp.path().join("log.jsonl");

    let mut args = starttls_args(postfix);
    args.extend([
        "--from".into(),
        sender.clone(),
        "--to".into(),
        recipient.clone(),
        "--log".into(),
        arg(&log),
        arg(&corpus_dir()),
    ]);
    let finished = run(&args, RUN_TIMEOUT);
    finished.expect_code(0);

    let files = corpus_files();
    let records = read_log(&log);
    assert_eq!(
        records.len(),
        files.len(),
        "one record per message; {finished}"
    );
    let mut by_queue_id = BTreeMap::new();
    for record in &records {
        assert_eq!(record.result, LogResult::Delivered, "{record:?}");
        assert_eq!(record.recipient.as_deref(), Some(recipient.as_str()));
        assert_eq!(record.sender.as_deref(), Some(sender.as_str()));
        assert!(record.tls.is_some(), "delivered without TLS: {record:?}");
        let id = queued_as(record).unwrap_or_else(|| panic!("no queue id in {record:?}"));
        let file = PathBuf::from(&record.file);
        assert!(
            by_queue_id.insert(id.clone(), file).is_none(),
            "queue id {id} twice"
        );
    }
    let logged: BTreeSet<PathBuf> = by_queue_id.values().cloned().collect();
    assert_eq!(logged, files, "the log names every corpus file once");

    let stored = wait_for_maildir(postfix, &local, files.len(), SETTLE, RUN_TIMEOUT);
    assert_eq!(stored.len(), files.len(), "each message exactly once");
    let mut mismatches = Vec::new();
    for copy in &stored {
        let (id, content) = strip_trace(copy, &sender, &recipient);
        let file = by_queue_id
            .remove(&id)
            .unwrap_or_else(|| panic!("stored message {id} is not in the log (a duplicate?)"));
        let original = std::fs::read(&file).expect("read corpus file");
        let expected = after_cleanup(wire_lines(&original), Transfer::Bdat);
        let actual = stored_lines(content);
        if let Some(difference) = first_difference(&expected, &actual) {
            mismatches.push(format!("{}: {difference}", file.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} message(s) changed beyond the documented allowances:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// How the message data went to Postfix, which changes one repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// One `BDAT LAST` chunk (RFC 3030): ec's default when the server
    /// offers CHUNKING.
    Bdat,
    /// `DATA`, as with `chunking = false`.
    Data,
}

#[test]
fn postfix_cleanup_repairs_bdat() {
    cleanup_repairs(
        Transfer::Bdat,
        b"\nFrom someone@example.org Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nbody\n",
    );
}

#[test]
fn postfix_cleanup_repairs_data() {
    cleanup_repairs(
        Transfer::Data,
        b"X-Mailbox-Line: From someone@example.org Mon Jan  1 00:00:00 2024\n\
          Subject: mbox\n\nbody\n",
    );
}

/// Sends three malformed messages with `transfer` and checks what cleanup
/// made of them. `mbox_stored` is the expected stored copy of the one that
/// starts with an mbox `From ` line.
fn cleanup_repairs(transfer: Transfer, mbox_stored: &[u8]) {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("cli-repairs");
    let sender = format!("{local}@ec.test");
    let recipient = format!("{local}@maildir.test");
    let temp = temp_dir();
    let cases: [(&str, &[u8], &[u8]); 3] = [
        (
            "mbox-from.eml",
            b"From someone@example.org Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nbody\n",
            mbox_stored,
        ),
        (
            "no-blank-line.eml",
            b"Subject: no blank line\r\nthis line starts the body\r\nmore\r\n",
            b"Subject: no blank line\n\nthis line starts the body\nmore\n",
        ),
        (
            "return-path.eml",
            b"Subject: rp\nReturn-Path: <old@example.org>\n\tcontinued\nX-After: 1\n\n\
              Return-Path: stays in the body\n",
            b"Subject: rp\nX-After: 1\n\nReturn-Path: stays in the body\n",
        ),
    ];
    let mut args = starttls_args(postfix);
    args.extend([
        "--from".into(),
        sender.clone(),
        "--to".into(),
        recipient.clone(),
        "--log".into(),
        arg(&temp.path().join("log.jsonl")),
    ]);
    if transfer == Transfer::Data {
        let config = temp.path().join("data.toml");
        std::fs::write(&config, "[global]\nchunking = false\n").expect("write config");
        args.extend(["--config".into(), arg(&config)]);
    }
    for (name, content, _) in &cases {
        let path = temp.path().join(name);
        std::fs::write(&path, content).expect("write case");
        args.push(arg(&path));
    }
    run(&args, RUN_TIMEOUT).expect_code(0);

    let stored = wait_for_maildir(postfix, &local, cases.len(), SETTLE, RUN_TIMEOUT);
    let mut contents: Vec<&[u8]> = stored
        .iter()
        .map(|copy| strip_trace(copy, &sender, &recipient).1)
        .collect();
    contents.sort();
    let mut wanted: Vec<&[u8]> = cases.iter().map(|(_, _, stored)| *stored).collect();
    wanted.sort();
    assert_eq!(
        contents.iter().map(|c| show(c)).collect::<Vec<_>>(),
        wanted.iter().map(|c| show(c)).collect::<Vec<_>>(),
        "Postfix's repairs"
    );

    for (name, content, stored) in &cases {
        let modelled = after_cleanup(wire_lines(content), transfer);
        assert_eq!(
            modelled,
            stored_lines(stored),
            "the model of cleanup for {name}"
        );
    }
}

#[test]
fn reply_domain_statuses() {
    let postfix = Postfix::get();
    let ok = postfix.unique_local_part("ok");
    let defer = postfix.unique_local_part("defer");
    let reject = postfix.unique_local_part("reject");
    let temp = temp_dir();
    let message = temp.path().join("mixed.eml");
    std::fs::write(
        &message,
        format!(
            "From: sender@ec.test\nTo: {ok}@reply.test, {defer}@reply.test\n\
             Cc: {reject}@reply.test\nSubject: mixed\n\nbody\n"
        ),
    )
    .expect("write message");
    let log = temp.path().join("log.jsonl");
    let mut args = starttls_args(postfix);
    args.extend(["--log".into(), arg(&log), arg(&message)]);

    // No retry in the run: the 451 is logged as deferred, and deferred
    // comes before failed in the exit status.
    let first = run(&args, RUN_TIMEOUT);
    first.expect_code(75);
    let records = read_log(&log);
    let results: BTreeMap<String, (LogResult, u16)> = records
        .iter()
        .map(|r| {
            let local = r.recipient.clone().unwrap_or_default();
            let code = r.reply.as_ref().map_or(0, |reply| reply.code.as_u16());
            (
                local.split('@').next().unwrap_or_default().to_owned(),
                (r.result, code),
            )
        })
        .collect();
    let expected = BTreeMap::from([
        (ok.clone(), (LogResult::Delivered, 250)),
        (defer.clone(), (LogResult::Deferred, 451)),
        (reject.clone(), (LogResult::Failed, 550)),
    ]);
    assert_eq!(results, expected, "{first}");
    postfix.wait_for_mailbox("reply.test", &ok, 1, RUN_TIMEOUT);

    // --resume retries only the deferred recipient; with a retry window it
    // fails when the window ends, and the run ends with it. The expiry is
    // ec's decision, so the record has no server reply and explains why.
    args.splice(
        1..1,
        [
            "--resume".to_owned(),
            "--retry-for".to_owned(),
            "2s".to_owned(),
        ],
    );
    let second = run(&args, RUN_TIMEOUT);
    second.expect_code(76);
    assert!(second.elapsed < Duration::from_secs(5), "{second}");
    let records = read_log(&log);
    assert_eq!(records.len(), 4, "one new record: {records:#?}");
    let last = &records[3];
    assert_eq!(last.recipient, Some(format!("{defer}@reply.test")));
    assert_eq!(last.result, LogResult::Failed, "{last:?}");
    assert_eq!(
        last.reply, None,
        "ec's expiry is not a server reply: {last:?}"
    );
    let detail = last.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("delivery time expired"),
        "the detail says why: {last:?}"
    );
    assert!(
        detail.ends_with("(status 5.4.7, set by ec)"),
        "the detail gives RFC 3463's status: {last:?}"
    );
    assert!(last.attempts >= 2, "retried within the window: {last:?}");
}

/// Writes a one-recipient message for nobody@maildir.test into `dir`.
fn write_test_message(dir: &std::path::Path) -> std::path::PathBuf {
    let message = dir.join("m.eml");
    std::fs::write(
        &message,
        "From: sender@ec.test\nTo: nobody@maildir.test\nSubject: x\n\nbody\n",
    )
    .expect("write message");
    message
}

#[test]
fn untrusted_ca_advises_ca_file() {
    // The peer's certificate is signed by the test CA, which ec does not
    // trust without --ca-file.
    let postfix = Postfix::get();
    let temp = temp_dir();
    let message = write_test_message(temp.path());
    let log = temp.path().join("log.jsonl");
    let finished = run(
        [
            "deliver",
            "--tls",
            "required",
            "--tls-server-name",
            postfix.server_name(),
            "--relay",
            &postfix.plain_addr().to_string(),
            "--log",
            &arg(&log),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );
    finished.expect_code(75);

    let advice = "pass --ca-file FILE with the PEM certificate of the CA that signed it";
    assert!(finished.stderr.contains("UnknownIssuer"), "{finished}");
    assert!(finished.stderr.contains(advice), "{finished}");
    let records = read_log(&log);
    assert_eq!(records.len(), 1, "{records:#?}");
    let detail = records[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains(advice), "{:?}", records[0]);
}

#[test]
fn wrong_name_advises_server_name() {
    let postfix = Postfix::get();
    let temp = temp_dir();
    let message = write_test_message(temp.path());
    let finished = run(
        [
            "deliver",
            "--tls",
            "required",
            "--ca-file",
            &arg(postfix.ca_file()),
            "--tls-server-name",
            "not-in-the-certificate.ec.test",
            "--relay",
            &postfix.plain_addr().to_string(),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );
    finished.expect_code(75);
    assert!(
        finished.stderr.contains("not-in-the-certificate.ec.test"),
        "{finished}"
    );
    assert!(
        finished
            .stderr
            .contains("pass --tls-server-name NAME with a name that the certificate lists"),
        "{finished}"
    );
}

/// Lists every `.eml` file of the corpus, named as `ec` names them in its
/// log.
fn corpus_files() -> BTreeSet<PathBuf> {
    ec_cli::input::collect_paths(&[corpus_dir()])
        .expect("list the corpus")
        .into_iter()
        .map(|file| file.path)
        .collect()
}

/// Removes the `Return-Path:`, `Delivered-To:` and `Received:` fields that
/// Postfix put in front of the message, after checking them. Returns the
/// queue id from `Received:` and the rest.
fn strip_trace<'a>(stored: &'a [u8], sender: &str, recipient: &str) -> (String, &'a [u8]) {
    let mut rest = stored;
    let mut fields = Vec::new();
    for name in ["Return-Path:", "Delivered-To:", "Received:"] {
        let (field, after) = split_field(rest);
        let text = String::from_utf8_lossy(field).into_owned();
        assert!(
            text.starts_with(name),
            "expected {name} from Postfix, found {text:?}"
        );
        fields.push(text);
        rest = after;
    }
    assert_eq!(fields[0].trim_end(), format!("Return-Path: <{sender}>"));
    assert_eq!(fields[1].trim_end(), format!("Delivered-To: {recipient}"));
    // `with PROTOCOL id QUEUE-ID`; the TLS protocol names are ESMTPS, and
    // UTF8SMTPS for a message sent with SMTPUTF8 (RFC 3848, RFC 6531).
    let received: Vec<&str> = fields[2].split_whitespace().collect();
    let with = received
        .windows(4)
        .find(|w| w[0] == "with" && w[2] == "id")
        .unwrap_or_else(|| panic!("no `with ... id` in {:?}", fields[2]));
    assert!(
        matches!(with[1], "ESMTPS" | "UTF8SMTPS"),
        "not over TLS: {:?}",
        fields[2]
    );
    (with[3].to_owned(), rest)
}

/// Splits the first header field, with its continuation lines, from the
/// rest of `text`.
fn split_field(text: &[u8]) -> (&[u8], &[u8]) {
    let mut end = 0;
    loop {
        let line_end = text[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| end + i + 1);
        end = line_end;
        if end >= text.len() || !matches!(text[end], b' ' | b'\t') {
            return (&text[..end], &text[end..]);
        }
    }
}

/// Splits a message file into the lines SMTP carries: at CRLF, LF or a
/// bare CR, as ec's DATA encoder does. A final line ending ends the last
/// line and starts no new one.
fn wire_lines(file: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut bytes = file.iter().peekable();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\r' => {
                if bytes.peek() == Some(&&b'\n') {
                    bytes.next();
                }
                lines.push(std::mem::take(&mut line));
            }
            b'\n' => lines.push(std::mem::take(&mut line)),
            _ => line.push(byte),
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Splits a stored copy into lines at LF only.
fn stored_lines(stored: &[u8]) -> Vec<Vec<u8>> {
    let body = stored.strip_suffix(b"\n").unwrap_or(stored);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

/// Applies what cleanup(8) does to a message's lines (allowance 3 of the
/// module docs).
fn after_cleanup(lines: Vec<Vec<u8>>, transfer: Transfer) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut lines = lines.into_iter().peekable();

    if let Some(first) = lines.peek_mut() {
        if transfer == Transfer::Data && first.starts_with(b"From ") {
            first.splice(0..0, b"X-Mailbox-Line: ".iter().copied());
        }
    }
    let mut dropping_return_path = false;
    for line in lines.by_ref() {
        if line.is_empty() {
            out.push(line);
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if !dropping_return_path {
                out.push(line);
            }
            continue;
        }
        match header_name(&line) {
            Some(name) => {
                dropping_return_path = name.eq_ignore_ascii_case(b"Return-Path");
                if !dropping_return_path {
                    out.push(line);
                }
            }
            None => {
                out.push(Vec::new());
                out.push(line);
                break;
            }
        }
    }
    out.extend(lines);
    out
}

/// Returns the field name when `line` is a header field as Postfix's
/// `is_header()` sees it: printable ASCII other than `:` and space, then
/// optional spaces or tabs, then `:`.
fn header_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let trimmed = name.trim_ascii_end();
    let valid = !trimmed.is_empty() && trimmed.iter().all(|&b| b.is_ascii_graphic());
    valid.then_some(trimmed)
}

/// Describes the first line where two line lists differ, with escapes.
fn first_difference(expected: &[Vec<u8>], actual: &[Vec<u8>]) -> Option<String> {
    let empty = Vec::new();
    (0..expected.len().max(actual.len())).find_map(|index| {
        let want = expected.get(index).unwrap_or(&empty);
        let got = actual.get(index).unwrap_or(&empty);
        (want != got || expected.len() == index || actual.len() == index).then(|| {
            format!(
                "line {} differs ({} lines sent, {} stored): sent {} stored {}",
                index + 1,
                expected.len(),
                actual.len(),
                show(want),
                show(got)
            )
        })
    })
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}
