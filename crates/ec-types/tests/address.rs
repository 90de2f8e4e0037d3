//! Domains and addresses through their public traits: equality, hashing,
//! ordering, formatting, serde, and text shared between clones.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::Instant;

use bytes::Bytes;
use ec_types::{Address, Domain, Message, MessageId, ReversePath, Submission};
use serde::{Deserialize, Serialize};

fn address(text: &str) -> Address {
    Address::new(text).expect("valid test address")
}

fn domain(text: &str) -> Domain {
    Domain::new(text).expect("valid test domain")
}

#[test]
fn types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Address>();
    assert_send_sync::<Domain>();
    assert_send_sync::<ReversePath>();
    assert_send_sync::<Message>();
}

#[test]
fn clone_shares_text() {
    let original = address("Jane@Example.org");
    let copy = original.clone();
    assert_eq!(copy, original);
    assert_eq!(copy.as_str().as_ptr(), original.as_str().as_ptr());
    assert_eq!(
        copy.domain().as_str().as_ptr(),
        original.domain().as_str().as_ptr()
    );

    let name = domain("Example.NET");
    assert_eq!(name.clone().as_str().as_ptr(), name.as_str().as_ptr());
}

#[test]
fn equal_text_parsed_twice() {
    let state = RandomState::new();
    let first = address("<ann@Example.ORG.>");
    let second = address("ann@example.org");
    assert_eq!(first, second);
    assert_eq!(state.hash_one(&first), state.hash_one(&second));

    let upper = domain("MX.Example.COM");
    let lower = domain("mx.example.com");
    assert_eq!(upper, lower);
    assert_eq!(state.hash_one(&upper), state.hash_one(&lower));
}

#[test]
fn local_part_case_matters() {
    assert_ne!(address("Ann@example.org"), address("ann@example.org"));
}

#[test]
fn ordering_follows_text() {
    let texts = ["b@a.example", "a@z.example", "a@b.example", "B@a.example"];
    let sorted: Vec<String> = texts
        .iter()
        .map(|text| address(text))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        sorted,
        ["B@a.example", "a@b.example", "a@z.example", "b@a.example"]
    );

    let domains: Vec<String> = ["b.example", "A.example", "c.example"]
        .iter()
        .map(|text| domain(text))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(domains, ["a.example", "b.example", "c.example"]);
}

#[test]
fn display_and_debug() {
    let mailbox = address("<Jörg@Beispiel.DE>");
    assert_eq!(mailbox.to_string(), "Jörg@beispiel.de");
    assert_eq!(format!("{mailbox:?}"), "Address(Jörg@beispiel.de)");
    assert_eq!(mailbox.local_part(), "Jörg");
    assert!(!mailbox.is_ascii());

    let name = domain("Beispiel.DE.");
    assert_eq!(name.to_string(), "beispiel.de");
    assert_eq!(format!("{name:?}"), "Domain(beispiel.de)");
}

#[test]
fn into_string_keeps_clone() {
    let original = address("x@y.example");
    let copy = original.clone();
    assert_eq!(String::from(copy), "x@y.example");
    assert_eq!(original.as_str(), "x@y.example");

    let name = domain("Y.example");
    assert_eq!(String::from(name.clone()), "y.example");
    assert_eq!(name.as_str(), "y.example");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Envelope {
    from: ReversePath,
    to: Vec<Address>,
    domain: Domain,
}

#[test]
fn serde_round_trip() {
    let envelope = Envelope {
        from: ReversePath::new("<>").expect("null path"),
        to: vec![address("a@One.example"), address("\"b@c\"@two.example")],
        domain: domain("One.example."),
    };
    let text = toml::to_string(&envelope).expect("serializes");
    assert!(text.contains(r#"domain = "one.example""#), "{text}");
    assert!(text.contains(r#""a@one.example""#), "{text}");
    assert!(text.contains(r#"from = """#), "{text}");

    let back: Envelope = toml::from_str(&text).expect("deserializes");
    assert_eq!(back, envelope);
}

#[test]
fn serde_rejects_invalid() {
    let text = "from = \"\"\nto = [\"no-domain\"]\ndomain = \"a.example\"\n";
    let error = toml::from_str::<Envelope>(text).expect_err("address without domain");
    assert!(error.to_string().contains("no-domain"), "{error}");

    let text = "from = \"\"\nto = []\ndomain = \"a..example\"\n";
    let error = toml::from_str::<Envelope>(text).expect_err("empty label");
    assert!(error.to_string().contains("a..example"), "{error}");
}

#[test]
fn split_moves_recipients() {
    let recipients = vec![
        address("a@one.example"),
        address("b@two.example"),
        address("c@ONE.example"),
    ];
    let text_pointers: Vec<*const u8> = recipients
        .iter()
        .map(|recipient| recipient.as_str().as_ptr())
        .collect();
    let first_domain = recipients[0].domain().as_str().as_ptr();
    let submission = Submission {
        tag: 3,
        reverse_path: ReversePath::new("from@sender.example").expect("valid"),
        recipients,
        data: Bytes::from_static(b"\r\n"),
    };
    let mut next = 0;
    let messages = Message::split(submission, Instant::now(), || {
        next += 1;
        MessageId(next)
    });

    let moved: Vec<*const u8> = messages
        .iter()
        .flat_map(|message| &message.recipients)
        .map(|recipient| recipient.address.as_str().as_ptr())
        .collect();
    assert_eq!(
        moved,
        [text_pointers[0], text_pointers[2], text_pointers[1]]
    );
    assert_eq!(messages[0].domain.as_str().as_ptr(), first_domain);
    assert_eq!(
        messages[0].reverse_path.as_str().as_ptr(),
        messages[1].reverse_path.as_str().as_ptr()
    );
}

#[test]
fn address_literals_checked() {
    for valid in [
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::1]",
        "[x-tag:some-content]",
    ] {
        assert!(Domain::new(valid).is_ok(), "{valid} rejected");
    }
    for invalid in [
        "[ipv6:::1",
        "[not-an-ip]",
        "[IPv6:not-an-ip]",
        "[192.0.2.300]",
        "[]",
        "[tag-:x]",
    ] {
        let error = Domain::new(invalid).expect_err(invalid);
        assert!(
            error
                .to_string()
                .contains("[192.0.2.1] or [IPv6:2001:db8::1]"),
            "{invalid}: {error}"
        );
    }
}
