//! The command encoder: wire format, injection rejections, RFC 5321 length
//! limits, and MAIL parameter negotiation.

use ec_smtp_client::proto::data::measure;
use ec_smtp_client::proto::{Capabilities, Command, CommandError, Field, MailParameters};

fn encode(command: Command<'_>) -> Result<String, CommandError> {
    command
        .to_bytes()
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

fn mail(reverse_path: &str) -> Command<'_> {
    Command::Mail {
        reverse_path,
        params: MailParameters::default(),
    }
}

fn rcpt(forward_path: &str) -> Command<'_> {
    Command::Rcpt {
        forward_path,
        smtputf8: false,
    }
}

#[test]
fn simple_commands() {
    assert_eq!(
        encode(Command::Ehlo("client.example.org")).unwrap(),
        "EHLO client.example.org\r\n"
    );
    assert_eq!(
        encode(Command::Helo("[192.0.2.1]")).unwrap(),
        "HELO [192.0.2.1]\r\n"
    );
    assert_eq!(encode(Command::Data).unwrap(), "DATA\r\n");
    assert_eq!(encode(Command::Rset).unwrap(), "RSET\r\n");
    assert_eq!(encode(Command::Quit).unwrap(), "QUIT\r\n");
    assert_eq!(encode(Command::StartTls).unwrap(), "STARTTLS\r\n");
    assert_eq!(encode(Command::Noop).unwrap(), "NOOP\r\n");
}

#[test]
fn mail_and_rcpt() {
    assert_eq!(
        encode(mail("a@example.org")).unwrap(),
        "MAIL FROM:<a@example.org>\r\n"
    );
    assert_eq!(encode(mail("")).unwrap(), "MAIL FROM:<>\r\n");
    assert_eq!(
        encode(rcpt("b@example.com")).unwrap(),
        "RCPT TO:<b@example.com>\r\n"
    );
    assert_eq!(
        encode(rcpt("Postmaster")).unwrap(),
        "RCPT TO:<Postmaster>\r\n"
    );
    assert_eq!(
        encode(rcpt("\"john doe\"@example.com")).unwrap(),
        "RCPT TO:<\"john doe\"@example.com>\r\n"
    );
    assert_eq!(
        encode(rcpt("x@[IPv6:2001:db8::1]")).unwrap(),
        "RCPT TO:<x@[IPv6:2001:db8::1]>\r\n"
    );
}

#[test]
fn mail_parameters_in_order() {
    let command = Command::Mail {
        reverse_path: "a@example.org",
        params: MailParameters {
            size: Some(1234),
            body_8bitmime: true,
            smtputf8: true,
        },
    };
    assert_eq!(
        encode(command).unwrap(),
        "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n"
    );
}

#[test]
fn control_characters_rejected_everywhere() {
    for byte in [b'\r', b'\n', b'\0', b'\t', 0x1b, 0x7f] {
        let c = char::from(byte);
        let address = format!("a{c}b@example.org");
        let domain = format!("client{c}.example.org");

        let cases = [
            (Field::ReversePath, mail(&address).to_bytes()),
            (Field::ForwardPath, rcpt(&address).to_bytes()),
            (Field::EhloDomain, Command::Ehlo(&domain).to_bytes()),
            (Field::EhloDomain, Command::Helo(&domain).to_bytes()),
        ];
        for (field, result) in cases {
            match result {
                Err(CommandError::ControlCharacter {
                    field: got,
                    byte: got_byte,
                    ..
                }) => {
                    assert_eq!(got, field);
                    assert_eq!(got_byte, byte);
                }
                other => panic!("{field} with {byte:#04x}: {other:?}"),
            }
        }
    }
}

#[test]
fn injection_attempt_names_value() {
    let evil = "a@example.org>\r\nRCPT TO:<victim@example.net";
    let error = rcpt(evil).to_bytes().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("forward-path"), "{message}");
    assert!(message.contains("victim@example.net"), "{message}");
    assert!(message.contains("0x0d"), "{message}");
}

#[test]
fn brackets_and_spaces_rejected() {
    for address in [
        "a>b@example.org",
        "a b@example.org",
        "a@exa mple.org",
        "a@<example.org",
        "a@[1.2.3.4",
    ] {
        let error = rcpt(address).to_bytes().unwrap_err();
        assert!(
            matches!(error, CommandError::InvalidCharacter { .. }),
            "{address}: {error:?}"
        );
    }
}

#[test]
fn not_a_mailbox_rejected() {
    for address in ["no-at-sign", "@example.org", "local@"] {
        let error = mail(address).to_bytes().unwrap_err();
        assert!(
            matches!(
                error,
                CommandError::InvalidMailbox {
                    field: Field::ReversePath,
                    ..
                }
            ),
            "{address}: {error:?}"
        );
    }
}

#[test]
fn empty_ehlo_domain_rejected() {
    assert_eq!(
        Command::Ehlo("").to_bytes().unwrap_err(),
        CommandError::Empty {
            field: Field::EhloDomain
        }
    );
}

#[test]
fn non_ascii_ehlo_domain_rejected() {
    let error = Command::Ehlo("bücher.example").to_bytes().unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::InvalidCharacter {
                character: 'ü', ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn local_part_limit() {
    let ok = format!("{}@example.org", "l".repeat(64));
    assert!(rcpt(&ok).to_bytes().is_ok());

    let long = format!("{}@example.org", "l".repeat(65));
    match rcpt(&long).to_bytes().unwrap_err() {
        CommandError::TooLong { part, len, max, .. } => {
            assert_eq!(part, "local part");
            assert_eq!((len, max), (65, 64));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_limit_counts_brackets() {
    // 64 + 1 + 189 = 254 octets, 256 with the angle brackets: the maximum.
    let domain = format!("{}.org", "d".repeat(185));
    let ok = format!("{}@{domain}", "l".repeat(64));
    assert_eq!(ok.len(), 254);
    assert!(rcpt(&ok).to_bytes().is_ok());

    let long = format!("{}@d{domain}", "l".repeat(64));
    match rcpt(&long).to_bytes().unwrap_err() {
        CommandError::TooLong { part, len, max, .. } => {
            assert_eq!(part, "path");
            assert_eq!((len, max), (257, 256));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ehlo_domain_limit() {
    let ok = "d".repeat(255);
    assert!(Command::Ehlo(&ok).to_bytes().is_ok());
    let long = "d".repeat(256);
    assert!(matches!(
        Command::Ehlo(&long).to_bytes().unwrap_err(),
        CommandError::TooLong {
            part: "domain",
            len: 256,
            max: 255,
            ..
        }
    ));
}

#[test]
fn failed_encode_leaves_buffer_unchanged() {
    let mut out = b"RSET\r\n".to_vec();
    assert!(rcpt("bad\n@example.org").encode(&mut out).is_err());
    assert_eq!(out, b"RSET\r\n");
}

#[test]
fn utf8_address_needs_smtputf8() {
    let address = "jörg@example.org";
    let error = rcpt(address).to_bytes().unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Smtputf8NotOffered {
                field: Field::ForwardPath,
                ..
            }
        ),
        "{error:?}"
    );

    let allowed = Command::Rcpt {
        forward_path: address,
        smtputf8: true,
    };
    assert_eq!(encode(allowed).unwrap(), "RCPT TO:<jörg@example.org>\r\n");
}

fn capabilities(keywords: &[&str]) -> Capabilities {
    let mut caps = Capabilities::default();
    for keyword in keywords {
        match *keyword {
            "SIZE" => caps.size = true,
            "8BITMIME" => caps.eight_bit_mime = true,
            "SMTPUTF8" => caps.smtputf8 = true,
            other => panic!("unknown keyword {other}"),
        }
    }
    caps
}

#[test]
fn negotiate_nothing_offered() {
    let info = measure("Subject: caf\u{e9}\r\n\r\nbody \u{e9}\r\n".as_bytes());
    let params = MailParameters::negotiate(
        &capabilities(&[]),
        "a@example.org",
        &["b@example.com"],
        &info,
    )
    .unwrap();
    assert_eq!(params, MailParameters::default());
}

#[test]
fn negotiate_size_whenever_offered() {
    let info = measure(b"Subject: x\r\n\r\nbody\r\n");
    let params = MailParameters::negotiate(
        &capabilities(&["SIZE", "8BITMIME", "SMTPUTF8"]),
        "a@example.org",
        &["b@example.com"],
        &info,
    )
    .unwrap();
    assert_eq!(params.size, Some(info.size));
    assert!(!params.body_8bitmime);
    assert!(!params.smtputf8);
}

#[test]
fn negotiate_8bit_body() {
    let info = measure("Subject: x\r\n\r\nbody \u{e9}\r\n".as_bytes());
    let params = MailParameters::negotiate(
        &capabilities(&["8BITMIME", "SMTPUTF8"]),
        "a@example.org",
        &["b@example.com"],
        &info,
    )
    .unwrap();
    assert!(params.body_8bitmime);
    assert!(
        !params.smtputf8,
        "an 8-bit body alone does not need SMTPUTF8"
    );
}

#[test]
fn negotiate_utf8_headers() {
    let info = measure("Subject: caf\u{e9}\r\n\r\nbody\r\n".as_bytes());
    let params = MailParameters::negotiate(
        &capabilities(&["8BITMIME", "SMTPUTF8"]),
        "a@example.org",
        &["b@example.com"],
        &info,
    )
    .unwrap();
    assert!(params.smtputf8);
    assert!(params.body_8bitmime);
}

#[test]
fn negotiate_utf8_address() {
    let info = measure(b"Subject: x\r\n\r\nbody\r\n");
    let params = MailParameters::negotiate(
        &capabilities(&["SMTPUTF8"]),
        "a@example.org",
        &["jörg@example.com"],
        &info,
    )
    .unwrap();
    assert!(params.smtputf8);

    let error = MailParameters::negotiate(
        &capabilities(&["8BITMIME"]),
        "jörg@example.org",
        &["b@example.com"],
        &info,
    )
    .unwrap_err();
    assert_eq!(
        error,
        CommandError::Smtputf8NotOffered {
            field: Field::ReversePath,
            value: "jörg@example.org".into()
        }
    );
}

#[test]
fn negotiate_size_limit() {
    let body = "x".repeat(100);
    let info = measure(body.as_bytes());
    assert_eq!(info.size, 102);

    let mut caps = capabilities(&["SIZE"]);
    caps.max_message_size = Some(102);
    assert!(MailParameters::negotiate(&caps, "a@example.org", &["b@example.com"], &info).is_ok());

    caps.max_message_size = Some(101);
    let error =
        MailParameters::negotiate(&caps, "a@example.org", &["b@example.com"], &info).unwrap_err();
    assert_eq!(
        error,
        CommandError::MessageTooLarge {
            size: 102,
            max: 101
        }
    );
}

#[test]
fn bdat_lines() {
    let cases = [
        (0, false, "BDAT 0\r\n"),
        (0, true, "BDAT 0 LAST\r\n"),
        (9, false, "BDAT 9\r\n"),
        (1_048_576, true, "BDAT 1048576 LAST\r\n"),
        (u64::MAX, true, "BDAT 18446744073709551615 LAST\r\n"),
    ];
    for (size, last, line) in cases {
        assert_eq!(encode(Command::Bdat { size, last }).unwrap(), line);
    }
}

#[test]
fn mail_parameters_each_alone() {
    let with = |params: MailParameters| {
        encode(Command::Mail {
            reverse_path: "a@example.org",
            params,
        })
        .unwrap()
    };
    let size = |size| MailParameters {
        size: Some(size),
        ..MailParameters::default()
    };
    assert_eq!(with(size(0)), "MAIL FROM:<a@example.org> SIZE=0\r\n");
    assert_eq!(
        with(size(u64::MAX)),
        "MAIL FROM:<a@example.org> SIZE=18446744073709551615\r\n"
    );
    assert_eq!(
        with(MailParameters {
            body_8bitmime: true,
            ..MailParameters::default()
        }),
        "MAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
    );
    assert_eq!(
        with(MailParameters {
            smtputf8: true,
            ..MailParameters::default()
        }),
        "MAIL FROM:<a@example.org> SMTPUTF8\r\n"
    );
}

#[test]
fn null_path_with_all_parameters() {
    let command = Command::Mail {
        reverse_path: "",
        params: MailParameters {
            size: Some(u64::MAX),
            body_8bitmime: true,
            smtputf8: true,
        },
    };
    let line = encode(command).unwrap();
    assert_eq!(
        line,
        "MAIL FROM:<> SIZE=18446744073709551615 BODY=8BITMIME SMTPUTF8\r\n"
    );
    assert_eq!(line.len(), 63);
}

#[test]
fn encode_appends_to_buffer() {
    let mut out = b"RSET\r\n".to_vec();
    Command::Bdat {
        size: 42,
        last: true,
    }
    .encode(&mut out)
    .unwrap();
    mail("a@example.org").encode(&mut out).unwrap();
    Command::Mail {
        reverse_path: "b@example.org",
        params: MailParameters {
            size: Some(7),
            ..MailParameters::default()
        },
    }
    .encode(&mut out)
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "RSET\r\nBDAT 42 LAST\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<b@example.org> SIZE=7\r\n"
    );
}

#[test]
fn failed_encode_keeps_large_buffer() {
    let mut out = b"RCPT TO:<a@example.org>\r\n".repeat(40);
    let before = out.clone();
    let error = Command::Ehlo("bad domain").encode(&mut out).unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::InvalidCharacter {
                field: Field::EhloDomain,
                character: ' ',
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(out, before);
}

#[test]
fn longest_lines_fit_limit() {
    // The field limits keep every line below the 512-octet line limit, so no
    // command can return `LineTooLong` at present.
    let domain = format!("{}.org", "d".repeat(185));
    let path = format!("{}@{domain}", "l".repeat(64));
    let mail = Command::Mail {
        reverse_path: &path,
        params: MailParameters {
            size: Some(u64::MAX),
            body_8bitmime: true,
            smtputf8: true,
        },
    };
    let ehlo_domain = "d".repeat(255);
    let cases = [
        (mail, 317),
        (rcpt(&path), 266),
        (Command::Ehlo(&ehlo_domain), 262),
    ];
    for (command, len) in cases {
        let line = command.to_bytes().unwrap();
        assert_eq!(line.len(), len, "{}", command.verb());
        assert!(line.ends_with(b"\r\n"), "{}", command.verb());
    }
}
