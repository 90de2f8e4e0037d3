//! The whole engine against Postfix over STARTTLS with certificate
//! verification, read back from Postfix's Maildir.

use std::time::Duration;

use ec_tests::delivery::{config_for, run, submission};
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
