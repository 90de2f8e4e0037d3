//! EHLO replies from real servers and odd ones, read into capabilities.

use ec_smtp_client::proto::{Capabilities, ReplyParser};
use ec_types::Reply;

fn reply(text: &str) -> Reply {
    let mut parser = ReplyParser::default();
    parser.push(text.as_bytes()).unwrap();
    parser.next_reply().unwrap().expect("a complete reply")
}

/// The EHLO reply of Postfix's smtp-sink (Postfix 3.7) with default
/// options, ending in its empty "250 " line.
const SMTP_SINK_EHLO: &str = "250-sink.example.com\r\n250-PIPELINING\r\n250-SIZE\r\n250-VRFY\r\n\
    250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 \r\n";

#[test]
fn smtp_sink_ehlo() {
    let caps = Capabilities::from_ehlo(&reply(SMTP_SINK_EHLO));
    assert_eq!(caps.domain, "sink.example.com");
    assert_eq!(caps.greeting, "");
    assert!(caps.pipelining);
    assert!(caps.size);
    assert_eq!(caps.max_message_size, None);
    assert_eq!(caps.auth, ["PLAIN", "LOGIN"]);
    assert!(caps.enhanced_status_codes);
    assert!(caps.eight_bit_mime);
    assert!(caps.dsn);
    assert!(!caps.starttls);
    assert!(!caps.smtputf8);
    assert!(!caps.chunking);
    let others: Vec<&str> = caps.other.iter().map(|e| e.keyword.as_str()).collect();
    assert_eq!(others, ["VRFY", "ETRN"]);
}

#[test]
fn postfix_ehlo() {
    let text = "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n\
        250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    let caps = Capabilities::from_ehlo(&reply(text));
    assert_eq!(caps.max_message_size, Some(10_240_000));
    assert!(caps.starttls);
    assert!(caps.smtputf8);
    assert!(caps.chunking);
    assert!(caps.auth.is_empty());
}

#[test]
fn keywords_case_insensitive() {
    let caps = Capabilities::from_ehlo(&reply(
        "250-mx hello there\r\n250-pipelining\r\n250-StartTLS\r\n250-size 1000\r\n250 x-Custom a B\r\n",
    ));
    assert_eq!(caps.domain, "mx");
    assert_eq!(caps.greeting, "hello there");
    assert!(caps.pipelining);
    assert!(caps.starttls);
    assert_eq!(caps.max_message_size, Some(1000));
    assert_eq!(caps.other[0].keyword, "X-CUSTOM");
    assert_eq!(caps.other[0].params, ["a", "B"]);
    assert!(caps.offers("x-custom"));
    assert!(caps.offers("PIPELINING"));
    assert!(!caps.offers("CHUNKING"));
}

#[test]
fn size_zero_means_no_limit() {
    let caps = Capabilities::from_ehlo(&reply("250-mx\r\n250 SIZE 0\r\n"));
    assert!(caps.size);
    assert_eq!(caps.max_message_size, None);
}

#[test]
fn size_garbage_means_no_limit() {
    let caps = Capabilities::from_ehlo(&reply("250-mx\r\n250 SIZE lots\r\n"));
    assert!(caps.size);
    assert_eq!(caps.max_message_size, None);
}

#[test]
fn old_auth_form_merged() {
    let caps = Capabilities::from_ehlo(&reply(
        "250-mx\r\n250-AUTH LOGIN PLAIN\r\n250 AUTH=login cram-md5\r\n",
    ));
    assert_eq!(caps.auth, ["LOGIN", "PLAIN", "CRAM-MD5"]);
}

#[test]
fn invalid_keywords_skipped() {
    let caps = Capabilities::from_ehlo(&reply("250-mx\r\n250-_BAD\r\n250-   \r\n250 GOOD\r\n"));
    let others: Vec<&str> = caps.other.iter().map(|e| e.keyword.as_str()).collect();
    assert_eq!(others, ["GOOD"]);
}

#[test]
fn one_line_ehlo_offers_nothing() {
    let caps = Capabilities::from_ehlo(&reply("250 mx.example.com\r\n"));
    assert_eq!(caps.domain, "mx.example.com");
    let mut expected = Capabilities::default();
    expected.domain = "mx.example.com".into();
    assert_eq!(caps, expected);
}

#[test]
fn helo_reply_offers_nothing() {
    let caps = Capabilities::from_helo(&reply("250 mx.example.com Hello\r\n"));
    assert_eq!(caps.domain, "mx.example.com");
    assert!(!caps.pipelining);
    assert!(!caps.size);
}
