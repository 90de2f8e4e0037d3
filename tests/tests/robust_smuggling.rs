//! SMTP smuggling: message bodies holding bare LF, bare CR, `LF . LF`,
//! `CR . CR`, `CRLF . LF`, a leading `. CRLF`, NUL bytes and a whole
//! smuggled transaction go through the whole engine. On the wire every line
//! must end in CRLF and every leading dot must be doubled, so no end of data
//! comes before the real one. The fault peer must record exactly the
//! reference encoding. Postfix with `smtpd_forbid_bare_newline = reject`
//! must accept every message and store it line for line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ec_tests::delivery::{assert_settled, config_for, fault_config, submission, Run, Until};
use ec_tests::fault_peer::{FaultPeer, Scenario, Verb};
use ec_tests::peers::{Postfix, MAILDIR_DOMAIN};
use ec_tests::soak::bodies::{stored_lf, wire_data, DOT_FIRST, SMUGGLING_CASES};
use ec_types::Route;

const DOMAIN: &str = "smuggle.test";

/// Lists every body the fault peer test sends: each smuggling case, and a
/// message whose very first line is a lone dot.
fn bodies() -> Vec<(&'static str, &'static [u8])> {
    let mut bodies: Vec<_> = SMUGGLING_CASES.iter().map(|c| (c.name, c.body)).collect();
    bodies.push((". CRLF as the first line of the data", DOT_FIRST));
    bodies
}

fn has_end_of_data(data: &[u8]) -> bool {
    data.starts_with(b".\r\n") || data.windows(5).any(|w| w == b"\r\n.\r\n")
}

#[test]
fn wire_never_ends_data_early() {
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
    let bodies = bodies();
    let mut run = Run::new(fault_config(DOMAIN, peer.addr())).until(Until::EveryRecipientFinal);
    for (tag, (_, body)) in bodies.iter().enumerate() {
        let to = [format!("rcpt{tag}@{DOMAIN}")];
        run = run.submit(submission(tag as u64, "sender@ec.test", &to, body));
    }
    let result = run.limit(Duration::from_secs(30)).run();

    let records = assert_settled(&result, &peer);
    assert_eq!(
        result.count("delivered"),
        bodies.len(),
        "{:#?}",
        result.records
    );
    let received: Vec<_> = records.iter().flat_map(|r| r.bodies()).collect();
    assert_eq!(received.len(), bodies.len(), "one DATA per message");
    for (name, body) in &bodies {
        let expected = wire_data(body);
        assert!(
            !has_end_of_data(&expected),
            "the reference encoding of {name} is wrong"
        );
        let matches = received
            .iter()
            .filter(|data| data[..] == expected[..])
            .count();
        assert_eq!(
            matches,
            1,
            "{name}: expected on the wire {:?}; the peer received {received:?}",
            String::from_utf8_lossy(&expected)
        );
    }
    for record in &records {
        for line in record.commands() {
            assert!(
                line.ends_with(b"\r\n"),
                "command line {line:?} must end in CRLF"
            );
            let verb = Verb::of_line(&line);
            assert!(
                !matches!(verb, Verb::Other(_)),
                "message data was read as the command {line:?}: {record:#?}"
            );
        }
    }
    let tally = peer.tally();
    assert_eq!(
        (
            tally.unknown_commands,
            tally.bare_line_ends,
            tally.unstuffed_dots
        ),
        (0, 0, 0),
        "{tally:#?}"
    );
}

/// Runs one SMTP exchange over a raw socket: writes each line and reads
/// what the server replies within a moment.
fn raw_session(lines: &[&[u8]]) -> String {
    let postfix = Postfix::get();
    let mut stream = TcpStream::connect(postfix.bare_lf_reject_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let mut transcript = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut read = |stream: &mut TcpStream, transcript: &mut Vec<u8>| {
        if let Ok(n) = stream.read(&mut buffer) {
            transcript.extend_from_slice(&buffer[..n]);
        }
    };
    read(&mut stream, &mut transcript);
    for line in lines {
        if stream.write_all(line).is_err() {
            break;
        }
        read(&mut stream, &mut transcript);
    }
    String::from_utf8_lossy(&transcript).into_owned()
}

#[test]
fn postfix_listener_rejects_bare_lf() {
    // Proves the listener the next test relies on is configured as claimed.
    let transcript = raw_session(&[b"EHLO client.ec.test\n"]);
    assert!(
        transcript.contains("550 5.5.2") && transcript.contains("bare <LF>"),
        "{transcript}"
    );
    let transcript = raw_session(&[
        b"EHLO client.ec.test\r\n",
        b"MAIL FROM:<sender@ec.test>\r\n",
        b"RCPT TO:<bare-lf@maildir.test>\r\n",
        b"DATA\r\n",
        b"Subject: bare lf\n\nline\r\n.\r\n",
    ]);
    assert!(
        transcript.contains("550 5.5.2") && transcript.contains("bare <LF>"),
        "{transcript}"
    );
}

/// Strips the `Return-Path:`, `Delivered-To:` and `Received:` headers that
/// Postfix puts in front of a delivered message.
fn without_trace_headers(delivered: &[u8]) -> &[u8] {
    let mut rest = delivered;
    let mut in_trace = false;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        let continuation = line.starts_with(b" ") || line.starts_with(b"\t");
        let trace = line.starts_with(b"Return-Path:")
            || line.starts_with(b"Delivered-To:")
            || line.starts_with(b"Received:");
        in_trace = trace || (in_trace && continuation);
        if !in_trace || end == 0 {
            return rest;
        }
        rest = &rest[end..];
    }
}

#[test]
fn postfix_accepts_every_smuggling_case() {
    let postfix = Postfix::get();
    let addr = postfix.bare_lf_reject_addr();
    let config = config_for(
        MAILDIR_DOMAIN,
        Route::Relay {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
    );
    let mailboxes: Vec<String> = SMUGGLING_CASES
        .iter()
        .map(|_| postfix.unique_local_part("smuggle"))
        .collect();
    let mut run = Run::new(config).until(Until::EveryRecipientFinal);
    for (tag, (case, mailbox)) in SMUGGLING_CASES.iter().zip(&mailboxes).enumerate() {
        let to = [format!("{mailbox}@{MAILDIR_DOMAIN}")];
        run = run.submit(submission(tag as u64, "sender@ec.test", &to, case.body));
    }
    let result = run.limit(Duration::from_secs(60)).run();
    result
        .check_accounting()
        .unwrap_or_else(|broken| panic!("{broken}"));

    for (tag, (case, mailbox)) in SMUGGLING_CASES.iter().zip(&mailboxes).enumerate() {
        assert_eq!(
            result.outcomes_of(tag as u64),
            ["delivered"],
            "Postfix refused {}: {:#?}",
            case.name,
            result.records_of(tag as u64)
        );
        let stored = postfix.wait_for_messages(mailbox, 1, Duration::from_secs(20));
        assert_eq!(stored.len(), 1, "{}: one message", case.name);
        let content = without_trace_headers(&stored[0]);
        assert_eq!(
            String::from_utf8_lossy(content),
            String::from_utf8_lossy(&stored_lf(case.body)),
            "{}: the Maildir holds something else than the message's lines",
            case.name
        );
    }
}
