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

#[test]
fn known_keywords_in_any_case() {
    let caps = Capabilities::from_ehlo(&reply(
        "250-mx\r\n250-pipelining\r\n250-sTaRtTlS\r\n250-Size 1000\r\n250-8bitmime\r\n\
         250-smtputf8\r\n250-EnhancedStatusCodes\r\n250-chunking\r\n250-dsn\r\n250 auth login Plain\r\n",
    ));
    let mut expected = Capabilities::default();
    expected.domain = "mx".into();
    expected.pipelining = true;
    expected.starttls = true;
    expected.size = true;
    expected.max_message_size = Some(1000);
    expected.eight_bit_mime = true;
    expected.smtputf8 = true;
    expected.enhanced_status_codes = true;
    expected.chunking = true;
    expected.dsn = true;
    expected.auth = vec!["LOGIN".into(), "PLAIN".into()];
    assert_eq!(caps, expected);
}

#[test]
fn old_auth_form_any_case() {
    let caps = Capabilities::from_ehlo(&reply(
        "250-mx\r\n250-auth=login plain\r\n250-Auth=\r\n250 AUTH LOGIN XOAUTH2\r\n",
    ));
    assert_eq!(caps.auth, ["LOGIN", "PLAIN", "XOAUTH2"]);
    assert!(caps.other.is_empty(), "{:?}", caps.other);
    assert!(caps.offers("auth"));
}

#[test]
fn size_takes_first_parameter() {
    let caps = Capabilities::from_ehlo(&reply("250-mx\r\n250 size\t2048  4096\r\n"));
    assert!(caps.size);
    assert_eq!(caps.max_message_size, Some(2048));
    assert!(caps.other.is_empty(), "{:?}", caps.other);
}

#[test]
fn known_keyword_parameters_ignored() {
    let caps = Capabilities::from_ehlo(&reply("250-mx\r\n250-PIPELINING now\r\n250 DSN x y\r\n"));
    assert!(caps.pipelining);
    assert!(caps.dsn);
    assert!(caps.other.is_empty(), "{:?}", caps.other);
}

#[test]
fn near_miss_keywords_kept_as_other() {
    let caps = Capabilities::from_ehlo(&reply(
        "250-mx\r\n250-SIZ 10\r\n250-SIZES 10\r\n250-AUTHX login\r\n250-dsn-x\r\n\
         250-EnhancedStatusCodesAndMore a\r\n250-PIPELININGPIPELINING\r\n250 x-long-keyword-beyond-any-known-one P1 p2\r\n",
    ));
    assert!(!caps.size);
    assert_eq!(caps.max_message_size, None);
    assert!(caps.auth.is_empty());
    assert!(!caps.dsn);
    assert!(!caps.enhanced_status_codes);
    assert!(!caps.pipelining);

    let others: Vec<(&str, Vec<&str>)> = caps
        .other
        .iter()
        .map(|extension| {
            let params = extension.params.iter().map(String::as_str).collect();
            (extension.keyword.as_str(), params)
        })
        .collect();
    assert_eq!(
        others,
        [
            ("SIZ", vec!["10"]),
            ("SIZES", vec!["10"]),
            ("AUTHX", vec!["login"]),
            ("DSN-X", vec![]),
            ("ENHANCEDSTATUSCODESANDMORE", vec!["a"]),
            ("PIPELININGPIPELINING", vec![]),
            ("X-LONG-KEYWORD-BEYOND-ANY-KNOWN-ONE", vec!["P1", "p2"]),
        ]
    );
    assert!(caps.offers("siz"));
    assert!(!caps.offers("size"));
}

#[test]
fn non_ascii_keywords_skipped() {
    // Under full Unicode case mapping the long s (U+017F) upper-cases to
    // `S`, so only an ASCII-only match keeps `\u{17F}IZE` from being SIZE.
    let text = "250-mx\r\n250-\u{17F}IZE 10\r\n250-P\u{130}PELINING\r\n\
                250-\u{e9}TRN\r\n250 X-OK \u{e9}t\u{e9}\r\n";
    let caps = Capabilities::from_ehlo(&reply(text));
    assert!(!caps.size);
    assert!(!caps.pipelining);
    let others: Vec<&str> = caps.other.iter().map(|e| e.keyword.as_str()).collect();
    assert_eq!(others, ["X-OK"]);
    assert_eq!(caps.other[0].params, ["\u{e9}t\u{e9}"]);
}

#[test]
fn invalid_utf8_keyword_skipped() {
    let mut parser = ReplyParser::default();
    parser
        .push(b"250-mx\r\n250-SIZE\xFF 10\r\n250-\xFFPIPELINING\r\n250 X-BIN \xFE\r\n")
        .unwrap();
    let caps = Capabilities::from_ehlo(&parser.next_reply().unwrap().expect("a complete reply"));
    assert!(!caps.size);
    assert!(!caps.pipelining);
    assert_eq!(caps.other.len(), 1, "{:?}", caps.other);
    assert_eq!(caps.other[0].keyword, "X-BIN");
    assert_eq!(caps.other[0].params, ["\u{FFFD}"]);
}
