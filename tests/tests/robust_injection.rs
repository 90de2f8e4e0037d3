//! Command injection: a CR, LF or NUL in an envelope address or the EHLO
//! name would end the command line and start another, and an over-long
//! value breaks RFC 5321's limits. Each must be rejected with an error that
//! names the value, before a byte is written. `ec_types` rejects it when the
//! address is made, the command encoder when the command is, and in the
//! engine the server must see no command from the client at all.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ec_sched::{RecipientOutcome, Report};
use ec_smtp_client::proto::{Client, ClientConfig, Command, CommandError, Field, MailParameters};
use ec_smtp_client::{Engine, EngineOptions};
use ec_tests::delivery::{fault_config, submission, Run, Until};
use ec_tests::fault_peer::{FaultPeer, Scenario, Verb};
use ec_types::{Address, AddressError, Binding, Domain, ReversePath};

const DOMAIN: &str = "inject.test";

/// Control bytes that could split a command line, with what follows them
/// in an attack: a second command.
const INJECTIONS: [&str; 6] = [
    "\r\nRCPT TO:<victim@ec.test>",
    "\nRSET",
    "\rQUIT",
    "\0",
    "\t",
    "\x7f",
];

fn first_control(text: &str) -> u8 {
    text.bytes()
        .find(u8::is_ascii_control)
        .expect("each injection holds a control byte")
}

#[test]
fn addresses_refuse_control_bytes() {
    for injection in INJECTIONS {
        let byte = first_control(injection);
        let local = format!("user{injection}@ec.test");
        let domain = format!("user@ec{injection}.test");
        for text in [&local, &domain] {
            for result in [
                Address::new(text).map(|_| ()),
                Address::try_from(text.clone()).map(|_| ()),
                ReversePath::new(text).map(|_| ()),
            ] {
                let error = result.expect_err("a control byte must be refused");
                assert!(
                    matches!(error, AddressError::ControlCharacter { byte: b, .. } if b == byte),
                    "{text:?}: {error:?}"
                );
                let message = error.to_string();
                assert!(
                    message.contains("control character") && message.contains("remove it"),
                    "{message}"
                );
            }
        }
        let name = format!("ec{injection}.test");
        assert!(Domain::new(&name).is_err(), "{name:?}");
    }
}

#[test]
fn addresses_refuse_overlong_parts() {
    let cases = [
        (format!("{}@ec.test", "a".repeat(65)), "local part", 64),
        (
            format!("{}@{}.test", "a".repeat(60), "d".repeat(190)),
            "address",
            254,
        ),
    ];
    for (text, part, limit) in cases {
        let error = Address::new(&text).expect_err("over-long value");
        match &error {
            AddressError::TooLong { what, max, len, .. } => {
                assert_eq!((*what, *max), (part, limit), "{error}");
                assert!(*len > limit, "{error}");
            }
            other => panic!("{text}: expected TooLong for the {part}, got {other:?}"),
        }
        assert!(error
            .to_string()
            .contains(&format!("the maximum is {limit}")));
    }
    let name = format!("{}.test", "d".repeat(251));
    match Domain::new(&name) {
        Err(AddressError::TooLong { what, max, .. }) => assert_eq!((what, max), ("domain", 255)),
        other => panic!("a 256-octet domain must be refused as too long: {other:?}"),
    }

    // Labels of 63 octets at most, the DNS limit: 63 + 1 + 63 + 1 + 56 + 5.
    let domain = format!(
        "{}.{}.{}.test",
        "d".repeat(63),
        "d".repeat(63),
        "d".repeat(56)
    );
    let longest = format!("{}@{domain}", "a".repeat(64));
    assert_eq!(longest.len(), 254);
    Address::new(&longest).expect("a path of 254 octets is allowed");
}

/// Encodes `command` after some bytes already in the buffer and returns
/// the error, checking that the buffer was left as it was.
fn refused(command: Command<'_>) -> CommandError {
    let mut out = b"EHLO earlier\r\n".to_vec();
    let error = command.encode(&mut out).expect_err("must be refused");
    assert_eq!(out, b"EHLO earlier\r\n", "a refused command writes nothing");
    error
}

#[test]
fn encoder_refuses_injection() {
    let params = MailParameters::default();
    for injection in INJECTIONS {
        let byte = first_control(injection);
        let name = format!("client{injection}.ec.test");
        let path = format!("user{injection}@ec.test");
        let commands = [
            (Command::Ehlo(&name), Field::EhloDomain),
            (Command::Helo(&name), Field::EhloDomain),
            (
                Command::Mail {
                    reverse_path: &path,
                    params,
                },
                Field::ReversePath,
            ),
            (
                Command::Rcpt {
                    forward_path: &path,
                    smtputf8: false,
                },
                Field::ForwardPath,
            ),
        ];
        for (command, field) in commands {
            match refused(command) {
                CommandError::ControlCharacter {
                    field: f, byte: b, ..
                } => {
                    assert_eq!((f, b), (field, byte), "{command:?}");
                }
                other => panic!("{command:?}: expected ControlCharacter, got {other:?}"),
            }
        }
        let config = ClientConfig::new(name.clone());
        assert!(
            Client::new(config, Instant::now()).is_err(),
            "a session must not start with the EHLO name {name:?}"
        );
    }
}

#[test]
fn encoder_refuses_overlong_values() {
    let long_name = format!("{}.ec.test", "h".repeat(250));
    let long_local = format!("{}@ec.test", "a".repeat(65));
    let long_path = format!("{}@{}.test", "a".repeat(60), "d".repeat(195));
    let commands = [
        Command::Ehlo(&long_name),
        Command::Helo(&long_name),
        Command::Mail {
            reverse_path: &long_local,
            params: MailParameters::default(),
        },
        Command::Rcpt {
            forward_path: &long_path,
            smtputf8: false,
        },
    ];
    for command in commands {
        let error = refused(command);
        assert!(
            matches!(error, CommandError::TooLong { .. }),
            "{command:?}: {error:?}"
        );
        assert!(error.to_string().contains("the maximum is"), "{error}");
    }
}

const BAD_EHLO_NAMES: [&str; 3] = [
    "client.ec.test\r\nRCPT TO:<victim@ec.test>",
    "client\0.ec.test",
    // 300 octets, past the 255 of RFC 5321 section 4.5.3.1.2.
    "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh.test",
];

/// An EHLO name that cannot be sent is the configuration's fault, so no
/// retry can help: the engine refuses to start with it, naming the value,
/// and opens no connection.
#[test]
fn bad_ehlo_name_rejected_at_start() {
    for ehlo in BAD_EHLO_NAMES {
        let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
        let mut config = fault_config(DOMAIN, peer.addr());
        config.global.ehlo_name = Some(ehlo.to_owned());
        let (sender, _receiver) = mpsc::channel::<Report>();

        let error = Engine::start(config, EngineOptions::default(), sender)
            .expect_err("an engine with an unsendable EHLO name must not start");

        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("ehlo_name"), "{error}");
        assert!(error.to_string().contains("global"), "{error}");
        assert!(peer.connections().is_empty(), "{ehlo:?}");
    }
}

#[test]
fn bad_binding_ehlo_name_rejected() {
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
    let (sender, _receiver) = mpsc::channel::<Report>();
    let engine = Engine::start(
        fault_config(DOMAIN, peer.addr()),
        EngineOptions::default(),
        sender,
    )
    .expect("engine starts");

    for ehlo in BAD_EHLO_NAMES {
        let binding = Binding {
            ehlo_name: Some(ehlo.to_owned()),
            ..Binding::named("injected")
        };
        let error = engine
            .handle()
            .register_binding(binding)
            .expect_err("a binding with an unsendable EHLO name must be refused");
        assert!(error.to_string().contains("injected"), "{error}");
    }

    let stats = engine.shutdown().expect("scheduler stops cleanly");
    assert_eq!(stats.connections.live(), 0);
    assert!(peer.connections().is_empty());
}

#[test]
fn non_ascii_recipient_fails_before_mail() {
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
    let config = fault_config(DOMAIN, peer.addr());
    let utf8 = [format!("b\u{e9}b@{DOMAIN}")];
    let ascii = [format!("bob@{DOMAIN}")];
    let body = b"Subject: x\r\n\r\ny\r\n";
    let result = Run::new(config)
        .until(Until::EveryRecipientFinal)
        .submit(submission(1, "sender@ec.test", &utf8, body))
        .submit(submission(2, "sender@ec.test", &ascii, body))
        .limit(Duration::from_secs(10))
        .run();
    let records = ec_tests::delivery::assert_settled(&result, &peer);

    assert_eq!(result.outcomes_of(1), ["failed"], "{:#?}", result.records);
    assert_eq!(result.outcomes_of(2), ["delivered"]);
    let RecipientOutcome::Failed(reply) = &result.records_of(1)[0].outcome else {
        unreachable!("checked above");
    };
    assert!(reply.is_permanent(), "{reply:?}");
    assert!(
        reply.text().contains(&utf8[0]) && reply.text().contains("SMTPUTF8"),
        "the reply should name the address and the missing extension: {reply:?}"
    );
    let rcpts: Vec<String> = records
        .iter()
        .flat_map(|r| r.command_lines())
        .filter(|line| Verb::of_line(line.as_bytes()) == Verb::Rcpt)
        .collect();
    assert_eq!(
        rcpts,
        [format!("RCPT TO:<bob@{DOMAIN}>")],
        "no RCPT for the UTF-8 address"
    );
}
