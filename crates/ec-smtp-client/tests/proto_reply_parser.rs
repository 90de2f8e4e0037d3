//! The reply parser against well-formed, malformed and oversized input,
//! split at every byte position.

use ec_smtp_client::proto::{ReplyError, ReplyLimits, ReplyParser};
use ec_types::Reply;

fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
    let mut parser = ReplyParser::default();
    parser.push(input)?;
    drain(&mut parser)
}

fn drain(parser: &mut ReplyParser) -> Result<Vec<Reply>, ReplyError> {
    let mut replies = Vec::new();
    while let Some(reply) = parser.next_reply()? {
        replies.push(reply);
    }
    Ok(replies)
}

/// Feeds `chunks` one after another, draining after each.
fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Reply>, ReplyError> {
    let mut parser = ReplyParser::default();
    let mut replies = Vec::new();
    for chunk in chunks {
        parser.push(chunk)?;
        replies.extend(drain(&mut parser)?);
    }
    Ok(replies)
}

#[test]
fn single_line_reply() {
    let replies = parse_all(b"220 mx.example.com ESMTP ready\r\n").unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].code.as_u16(), 220);
    assert_eq!(replies[0].enhanced, None);
    assert_eq!(replies[0].lines, ["mx.example.com ESMTP ready"]);
}

#[test]
fn multi_line_reply() {
    let replies = parse_all(b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n").unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].lines,
        ["mx.example.com", "PIPELINING", "8BITMIME"]
    );
}

#[test]
fn empty_final_line_with_space() {
    // Postfix's smtp-sink ends its EHLO reply with "250 ".
    let replies = parse_all(b"250-host\r\n250-SIZE\r\n250 \r\n").unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].lines, ["host", "SIZE", ""]);
}

#[test]
fn empty_final_line_without_space() {
    let replies = parse_all(b"250-host\r\n250\r\n").unwrap();
    assert_eq!(replies[0].lines, ["host", ""]);
}

#[test]
fn several_replies_in_one_chunk() {
    let replies = parse_all(b"250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go\r\n").unwrap();
    let codes: Vec<u16> = replies.iter().map(|reply| reply.code.as_u16()).collect();
    assert_eq!(codes, [250, 550, 354]);
}

#[test]
fn inconsistent_codes_rejected() {
    let error = parse_all(b"250-first\r\n251 second\r\n").unwrap_err();
    assert!(
        matches!(error, ReplyError::InconsistentCode { ref expected, .. } if expected.as_u16() == 250),
        "{error:?}"
    );
}

#[test]
fn enhanced_code_taken_from_every_line() {
    let input = b"550-5.7.1 first line\r\n550-5.7.1 second line\r\n550 5.7.1 third\r\n";
    let reply = &parse_all(input).unwrap()[0];
    assert_eq!(reply.enhanced.unwrap().to_string(), "5.7.1");
    assert_eq!(reply.lines, ["first line", "second line", "third"]);
    assert_eq!(reply.to_string(), "550 5.7.1 first line second line third");
}

#[test]
fn enhanced_code_of_wrong_class_kept_as_text() {
    let reply = &parse_all(b"550 2.0.0 looks like success\r\n").unwrap()[0];
    assert_eq!(reply.enhanced, None);
    assert_eq!(reply.lines, ["2.0.0 looks like success"]);
}

#[test]
fn malformed_enhanced_codes_kept_as_text() {
    for text in [
        "4.7 missing detail",
        "4.7.1000 too long",
        "4.7.1x glued",
        "x.7.1 letters",
    ] {
        let input = format!("451 {text}\r\n");
        let reply = &parse_all(input.as_bytes()).unwrap()[0];
        assert_eq!(reply.enhanced, None, "{text}");
        assert_eq!(reply.lines, [text]);
    }
}

#[test]
fn enhanced_code_on_354_ignored() {
    // RFC 3463 has no class 3, so a 3yz reply carries no enhanced code.
    let reply = &parse_all(b"354 2.0.0 go ahead\r\n").unwrap()[0];
    assert_eq!(reply.enhanced, None);
}

#[test]
fn enhanced_code_alone_on_line() {
    let reply = &parse_all(b"250 2.0.0\r\n").unwrap()[0];
    assert_eq!(reply.enhanced.unwrap().to_string(), "2.0.0");
    assert_eq!(reply.lines, [""]);
}

#[test]
fn bare_lf_line_endings_accepted() {
    let replies = parse_all(b"250-one\n250 two\n220 next\r\n").unwrap();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].lines, ["one", "two"]);
}

#[test]
fn non_utf8_text_kept_lossily() {
    let reply = &parse_all(b"250 caf\xe9 ok\r\n").unwrap()[0];
    assert_eq!(reply.lines, ["caf\u{fffd} ok"]);
}

#[test]
fn garbage_lines_rejected() {
    for input in [&b"hello\r\n"[..], b"25\r\n", b"2x0 ok\r\n", b"\r\n"] {
        let error = parse_all(input).unwrap_err();
        assert!(
            matches!(error, ReplyError::InvalidCode { .. }),
            "{input:?}: {error:?}"
        );
    }
}

#[test]
fn codes_out_of_range_rejected() {
    for input in [&b"199 low\r\n"[..], b"600 high\r\n", b"000 zero\r\n"] {
        let error = parse_all(input).unwrap_err();
        assert!(
            matches!(error, ReplyError::InvalidCode { .. }),
            "{input:?}: {error:?}"
        );
    }
}

#[test]
fn bad_separator_rejected() {
    let error = parse_all(b"250_ok\r\n").unwrap_err();
    assert!(
        matches!(error, ReplyError::InvalidSeparator { .. }),
        "{error:?}"
    );
}

#[test]
fn split_at_every_position() {
    let input: &[u8] = b"220 ready\r\n250-mx\r\n250-PIPELINING\r\n250 \r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go\n";
    let whole = parse_all(input).unwrap();
    assert_eq!(whole.len(), 4);

    for split in 0..=input.len() {
        let (head, tail) = input.split_at(split);
        let replies = parse_chunks([head, tail]).unwrap();
        assert_eq!(replies, whole, "split at {split}");
    }

    let bytes = parse_chunks(input.chunks(1)).unwrap();
    assert_eq!(bytes, whole, "one byte at a time");
}

#[test]
fn leftover_bytes_reported() {
    let mut parser = ReplyParser::default();
    parser
        .push(b"220 2.0.0 ready to start TLS\r\n250 injected\r\n")
        .unwrap();
    let reply = parser.next_reply().unwrap().unwrap();
    assert_eq!(reply.code.as_u16(), 220);
    assert_eq!(parser.buffered_len(), b"250 injected\r\n".len());
}

#[test]
fn partial_reply_counts_as_buffered() {
    let mut parser = ReplyParser::default();
    parser.push(b"250-\r\n").unwrap();
    assert_eq!(parser.next_reply().unwrap(), None);
    assert_eq!(parser.buffered_len(), 6);
}

#[test]
fn oversize_line_rejected() {
    let limits = ReplyLimits {
        max_line_len: 32,
        ..ReplyLimits::default()
    };

    let mut fits = ReplyParser::new(limits);
    let line = format!("250 {}\r\n", "x".repeat(26));
    assert_eq!(line.len(), 32);
    fits.push(line.as_bytes()).unwrap();
    assert!(fits.next_reply().unwrap().is_some());

    let mut parser = ReplyParser::new(limits);
    let line = format!("250 {}\r\n", "x".repeat(27));
    parser.push(line.as_bytes()).unwrap();
    let error = parser.next_reply().unwrap_err();
    assert!(
        matches!(error, ReplyError::LineTooLong { max: 32, .. }),
        "{error:?}"
    );
}

#[test]
fn oversize_line_without_end_rejected() {
    // A line that never ends must fail as soon as it is too long, not when
    // its line feed arrives.
    let mut parser = ReplyParser::default();
    parser.push(&[b'2'; 5000]).unwrap();
    let error = parser.next_reply().unwrap_err();
    assert!(
        matches!(error, ReplyError::LineTooLong { max: 4096, .. }),
        "{error:?}"
    );
}

#[test]
fn too_many_lines_rejected() {
    let limits = ReplyLimits {
        max_lines: 3,
        ..ReplyLimits::default()
    };

    let mut parser = ReplyParser::new(limits);
    parser.push(b"250-a\r\n250-b\r\n250 c\r\n").unwrap();
    assert_eq!(parser.next_reply().unwrap().unwrap().lines.len(), 3);

    let mut parser = ReplyParser::new(limits);
    parser
        .push(b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n")
        .unwrap();
    let error = parser.next_reply().unwrap_err();
    assert!(
        matches!(error, ReplyError::TooManyLines { max: 3, .. }),
        "{error:?}"
    );
}

#[test]
fn endless_reply_rejected_by_default() {
    let mut parser = ReplyParser::default();
    let mut error = None;
    for _ in 0..1000 {
        if let Err(e) = parser
            .push(b"250-more\r\n")
            .and_then(|()| parser.next_reply().map(|_| ()))
        {
            error = Some(e);
            break;
        }
    }
    assert!(
        matches!(error, Some(ReplyError::TooManyLines { max: 100, .. })),
        "{error:?}"
    );
}

#[test]
fn buffer_limit_rejects_push() {
    let limits = ReplyLimits {
        max_buffered: 64,
        ..ReplyLimits::default()
    };
    let mut parser = ReplyParser::new(limits);
    parser.push(&[b'2'; 40]).unwrap();
    let error = parser.push(&[b'5'; 25]).unwrap_err();
    assert_eq!(error, ReplyError::BufferFull { len: 65, max: 64 });
    assert!(parser.is_poisoned());
}

#[test]
fn buffer_limit_counts_partial_reply() {
    let limits = ReplyLimits {
        max_buffered: 30,
        ..ReplyLimits::default()
    };
    let mut parser = ReplyParser::new(limits);
    parser.push(b"250-0123456789\r\n").unwrap();
    assert_eq!(parser.next_reply().unwrap(), None);
    let error = parser.push(b"250 0123456789\r\n").unwrap_err();
    assert!(
        matches!(error, ReplyError::BufferFull { max: 30, .. }),
        "{error:?}"
    );
}

#[test]
fn enhanced_code_of_other_class_after_250() {
    let reply = &parse_all(b"250-4.1.1 first\r\n250 4.1.1 second\r\n").unwrap()[0];
    assert_eq!(reply.enhanced, None);
    assert_eq!(reply.lines, ["4.1.1 first", "4.1.1 second"]);
}

#[test]
fn enhanced_code_only_stripped_when_repeated() {
    let input = b"250-2.0.0 ok\r\n250-2.1.0 other\r\n250-2.0\r\n250 2.0.0\r\n";
    let reply = &parse_all(input).unwrap()[0];
    assert_eq!(reply.enhanced.unwrap().to_string(), "2.0.0");
    assert_eq!(reply.lines, ["ok", "2.1.0 other", "2.0", ""]);
}

#[test]
fn text_without_enhanced_code() {
    for (input, line) in [
        (&b"250 \r\n"[..], ""),
        (b"250\r\n", ""),
        (b"250 2.0\r\n", "2.0"),
        (b"550 5.7.1x denied\r\n", "5.7.1x denied"),
    ] {
        let reply = &parse_all(input).unwrap()[0];
        assert_eq!(reply.enhanced, None, "{input:?}");
        assert_eq!(reply.lines, [line], "{input:?}");
    }
}
