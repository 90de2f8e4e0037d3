//! The whole engine against Postfix over STARTTLS and implicit TLS with
//! certificate verification, read back from Postfix's Maildir.

use std::time::Duration;

use ec_tests::delivery::{config_for, run, submission, RunResult};
use ec_tests::peers::Postfix;
use ec_types::{CloseOutcome, Route, TlsPolicy, TlsSettings, TlsVerify};

fn tls_config(
    postfix: &Postfix,
    policy: TlsPolicy,
    verify: TlsVerify,
    port: u16,
) -> ec_types::Config {
    let mut config = config_for(
        "maildir.test",
        Route::Relay {
            host: "127.0.0.1".to_owned(),
            port,
        },
    );
    config.global.tls = Some(TlsSettings {
        policy,
        verify: Some(verify),
        ca_file: Some(postfix.ca_file().to_owned()),
        server_name: Some(postfix.server_name().to_owned()),
    });
    config
}

/// Strips the trace headers Postfix adds in front of the message.
fn without_trace_headers(delivered: &[u8]) -> &[u8] {
    let mut rest = delivered;
    loop {
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..line_end];
        let is_trace = line.starts_with(b"Return-Path:")
            || line.starts_with(b"Delivered-To:")
            || line.starts_with(b"Received:")
            || (line.starts_with(b" ") || line.starts_with(b"\t"));
        if !is_trace || line_end == 0 {
            return rest;
        }
        rest = &rest[line_end..];
    }
}

#[test]
fn postfix_starttls_host_verified() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("tls-host");
    let config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );
    let bodies: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "From: a@ec.test\r\nSubject: tls {i}\r\n\r\nline one\r\n.dot line\r\nend {i}\r\n"
            )
        })
        .collect();
    let submissions = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            submission(
                i as u64,
                "sender@ec.test",
                &[format!("{local}@maildir.test")],
                body.as_bytes(),
            )
        })
        .collect();

    let result = run(config, submissions, Duration::from_secs(60));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 5, "{:?}", result.records);
    for record in &result.records {
        let tls = record.tls.as_ref().expect("delivered over TLS");
        assert!(tls.verified);
        assert!(tls.version.starts_with("TLS"), "{tls:?}");
    }
    for close in &result.closes {
        assert_eq!(close.outcome, CloseOutcome::Clean, "{close:?}");
    }

    let delivered = postfix.wait_for_messages(&local, 5, Duration::from_secs(30));
    assert_eq!(delivered.len(), 5);
    let mut contents: Vec<Vec<u8>> = delivered
        .iter()
        .map(|m| without_trace_headers(m).to_vec())
        .collect();
    contents.sort();
    let mut expected: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| b.replace("\r\n", "\n").into_bytes())
        .collect();
    expected.sort();
    assert_eq!(
        contents
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn postfix_wrong_name_defers() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("tls-wrong-name");
    let mut config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );
    if let Some(tls) = config.global.tls.as_mut() {
        tls.server_name = Some("not-the-server.example".to_owned());
    }
    let to = [format!("{local}@maildir.test")];
    let submissions = vec![submission(
        0,
        "sender@ec.test",
        &to,
        b"Subject: x\r\n\r\nx\r\n",
    )];

    let result = run(config, submissions, Duration::from_secs(5));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 0);
    assert!(
        result
            .closes
            .iter()
            .all(|c| c.reason == ec_types::CloseReason::TlsFailed),
        "{:?}",
        result.closes
    );
    assert!(postfix.maildir(&local).is_empty());
}

#[test]
fn postfix_encrypt_port_rejects_clear_text() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("tls-disabled");
    let config = tls_config(
        postfix,
        TlsPolicy::Disabled,
        TlsVerify::None,
        postfix.tls_required_addr().port(),
    );
    let to = [format!("{local}@maildir.test")];
    let submissions = vec![submission(
        0,
        "sender@ec.test",
        &to,
        b"Subject: x\r\n\r\nx\r\n",
    )];

    let result = run(config, submissions, Duration::from_secs(30));

    assert_eq!(result.audit, Ok(()));
    let last = result.last_by_recipient();
    let record = last.values().next().expect("one record");
    let ec_sched::RecipientOutcome::Failed(reply) = &record.outcome else {
        panic!("expected a permanent failure from the TLS-only listener, got {record:?}");
    };
    assert_eq!(reply.code.as_u16(), 530);
    assert!(postfix.maildir(&local).is_empty());
}

#[test]
fn postfix_encrypt_port_with_required_tls() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("tls-encrypt");
    let config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.tls_required_addr().port(),
    );
    let to = [format!("{local}@maildir.test")];
    let submissions = vec![submission(
        0,
        "sender@ec.test",
        &to,
        b"Subject: x\r\n\r\nx\r\n",
    )];

    let result = run(config, submissions, Duration::from_secs(30));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 1, "{:?}", result.records);
    assert_eq!(
        postfix
            .wait_for_messages(&local, 1, Duration::from_secs(30))
            .len(),
        1
    );
}

/// Implicit TLS on Postfix's port with `smtpd_tls_wrappermode`: the
/// handshake comes before the banner, and no STARTTLS follows it.
#[test]
fn postfix_implicit_tls_port() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("implicit");
    let config = tls_config(
        postfix,
        TlsPolicy::Implicit,
        TlsVerify::Host,
        postfix.implicit_tls_addr().port(),
    );

    let result = send_one(config, &local, b"Subject: implicit\r\n\r\nx\r\n");

    assert_eq!(result.count("delivered"), 1, "{:?}", result.records);
    let tls = result.records[0].tls.as_ref().expect("delivered over TLS");
    assert!(tls.verified, "{tls:?}");
    for close in &result.closes {
        assert_eq!(close.outcome, CloseOutcome::Clean, "{close:?}");
        assert!(close.tls.is_some(), "{close:?}");
    }
    let stored = postfix.wait_for_messages(&local, 1, Duration::from_secs(30));
    let copy = stored.into_iter().next().expect("one stored copy");
    let counts = smtpd_session_counts(postfix, &received_queue_id(&copy));
    assert!(counts.starts_with("ehlo=1 "), "{counts}");
    assert!(!counts.contains("starttls"), "{counts}");
}

/// Implicit TLS against a port that greets in clear text: the handshake
/// fails on the banner, and the mail is deferred, not sent in clear text.
#[test]
fn postfix_implicit_tls_on_plain_port_defers() {
    let postfix = Postfix::get();
    let local = postfix.unique_local_part("implicit-plain");
    let config = tls_config(
        postfix,
        TlsPolicy::Implicit,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );

    let to = [format!("{local}@maildir.test")];
    let submissions = vec![submission(
        0,
        "sender@ec.test",
        &to,
        b"Subject: x\r\n\r\nx\r\n",
    )];

    let result = run(config, submissions, Duration::from_secs(5));

    assert_eq!(result.audit, Ok(()));
    assert_eq!(result.count("delivered"), 0, "{:?}", result.records);
    assert!(!result.closes.is_empty());
    for close in &result.closes {
        assert_eq!(close.reason, ec_types::CloseReason::TlsFailed, "{close:?}");
    }
    assert!(postfix.maildir(&local).is_empty());
}

/// Sends one message from sender@ec.test to `local`@maildir.test and
/// returns the run's records, with the audit passed.
fn send_one(config: ec_types::Config, local: &str, body: &[u8]) -> RunResult {
    let to = [format!("{local}@maildir.test")];
    let submissions = vec![submission(0, "sender@ec.test", &to, body)];
    let result = run(config, submissions, Duration::from_secs(30));
    assert_eq!(result.audit, Ok(()));
    result
}

/// Sends one message through Postfix with `chunking` set and the
/// configuration changed by `adjust`. Returns the run, the copy Postfix
/// stored and the command counts smtpd logged for its session, such as
/// `ehlo=2 starttls=1 mail=1 rcpt=1 bdat=1 quit=1 commands=7`.
fn deliver_and_read_session_log(
    postfix: &Postfix,
    chunking: bool,
    body: &str,
    adjust: impl FnOnce(&mut ec_types::Config),
) -> (RunResult, Vec<u8>, String) {
    let local = postfix.unique_local_part(if chunking { "bdat" } else { "data" });
    let mut config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );
    config.global.chunking = Some(chunking);
    adjust(&mut config);

    let result = send_one(config, &local, body.as_bytes());
    assert_eq!(result.count("delivered"), 1, "{:?}", result.records);

    let stored = postfix.wait_for_messages(&local, 1, Duration::from_secs(30));
    let copy = stored.into_iter().next().expect("one stored copy");
    let queue_id = received_queue_id(&copy);
    let counts = smtpd_session_counts(postfix, &queue_id);
    (result, copy, counts)
}

/// Returns the queue id from the `Received:` field smtpd added: `... with
/// ESMTPS id <queue id>`.
fn received_queue_id(copy: &[u8]) -> String {
    let text = String::from_utf8_lossy(copy);
    let after = text
        .split_once(" id ")
        .map(|(_, after)| after)
        .unwrap_or_else(|| panic!("no queue id in {text}"));
    after
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .expect("a queue id")
        .to_owned()
}

/// Returns the command counts of the `disconnect from` line that ends the
/// smtpd session which received `queue_id`. Postfix may write its log a moment
/// after the delivery, so this waits up to 10 s for the line.
fn smtpd_session_counts(postfix: &Postfix, queue_id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(postfix.log_file()).expect("read the Postfix log");
        if let Some(counts) = session_counts(&log, queue_id) {
            return counts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no smtpd disconnect line after queue id {queue_id} in {}",
            postfix.log_file().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn session_counts(log: &str, queue_id: &str) -> Option<String> {
    // The latest session with this queue id: the log outlives test runs.
    let marker = format!(": {queue_id}: client=");
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.iter().rposition(|line| line.contains(&marker))?;
    let client_line = lines[start];
    let mut lines = lines[start + 1..].iter();
    // `... postfix/plain/smtpd[12345]: QUEUEID: client=...`
    let process = client_line.split(": ").next()?.rsplit(' ').next()?;
    let disconnect = format!("{process}: disconnect from ");
    let line = lines.find(|line| line.contains(&disconnect))?;
    let (_, counts) = line.split_once("] ")?;
    Some(counts.to_owned())
}

#[test]
fn postfix_gets_bdat_when_it_offers_chunking() {
    let postfix = Postfix::get();
    // A line that starts with a dot shows that BDAT data is not dot-stuffed
    // and DATA data is: Postfix must store one dot either way.
    let body = "From: a@ec.test\r\nSubject: chunking\r\n\r\n.one dot\r\nend\n";
    let stored_body = "\n.one dot\nend\n";

    let (_, copy, counts) = deliver_and_read_session_log(postfix, true, body, |_| {});
    assert!(counts.contains(" bdat=1 "), "{counts}");
    assert!(!counts.contains(" data="), "{counts}");
    assert!(String::from_utf8_lossy(&copy).ends_with(stored_body));

    let (_, copy, counts) = deliver_and_read_session_log(postfix, false, body, |_| {});
    assert!(counts.contains(" data=1 "), "{counts}");
    assert!(!counts.contains(" bdat="), "{counts}");
    assert!(String::from_utf8_lossy(&copy).ends_with(stored_body));
}

/// A connection at its delivery limit sends QUIT with its last
/// transaction. smtpd counts every command it got and marks a rejected or
/// failed one as `verb=ok/total`, so a clean `quit=1` with nothing failed
/// shows that Postfix took the pipelined QUIT, after BDAT and after DATA.
#[test]
fn postfix_takes_pipelined_quit() {
    let postfix = Postfix::get();
    for chunking in [true, false] {
        let body = "From: a@ec.test\r\nSubject: last transaction\r\n\r\nbody\r\n";
        let (result, _, counts) = deliver_and_read_session_log(postfix, chunking, body, |config| {
            config.global.max_deliveries_per_connection = Some(1);
        });

        assert!(counts.contains(" quit=1 "), "{counts}");
        assert!(!counts.contains('/'), "a command failed: {counts}");
        assert_eq!(result.closes.len(), 1, "{:?}", result.closes);
        let close = &result.closes[0];
        assert_eq!(
            (close.reason, close.outcome),
            (ec_types::CloseReason::MaxDeliveries, CloseOutcome::Clean),
            "{close:?}"
        );
    }
}

#[test]
fn postfix_long_line_rejected_or_sent_as_set() {
    let postfix = Postfix::get();
    let long_line = "x".repeat(1_200);
    let body = format!("From: a@ec.test\r\nSubject: long line\r\n\r\nshort\r\n{long_line}\r\n");

    // By default the message fails before MAIL, with a reason that names
    // the line, and Postfix stores nothing.
    let local = postfix.unique_local_part("long-reject");
    let config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );
    let result = send_one(config, &local, body.as_bytes());
    assert_eq!(result.records.len(), 1, "{:?}", result.records);
    let ec_sched::RecipientOutcome::Failed(reply) = &result.records[0].outcome else {
        panic!("{:?}", result.records);
    };
    let text = reply.to_string();
    assert!(
        text.starts_with("554 5.6.3 not sent: line 5 of the message is 1200 octets long"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(postfix.maildir(&local).is_empty());

    // With long_lines = "send", Postfix takes the line as it is.
    let local = postfix.unique_local_part("long-send");
    let mut config = tls_config(
        postfix,
        TlsPolicy::Required,
        TlsVerify::Host,
        postfix.plain_addr().port(),
    );
    config.global.long_lines = Some(ec_types::LongLines::Send);
    let result = send_one(config, &local, body.as_bytes());
    assert_eq!(result.count("delivered"), 1, "{:?}", result.records);
    let stored = postfix.wait_for_messages(&local, 1, Duration::from_secs(30));
    let stored = String::from_utf8_lossy(&stored[0]);
    assert!(stored.contains(&format!("\n{long_line}\n")), "{stored}");
}
