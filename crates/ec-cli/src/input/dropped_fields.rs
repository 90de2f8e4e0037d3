//! Removal of the header fields that an originating MTA should not send.
//!
//! These are the fields that Postfix's cleanup(8) drops by default
//! (`message_drop_headers`, Postfix 3.0 and later), for the same reasons:
//!
//! - Bcc and Resent-Bcc. ec takes recipients from Bcc as `sendmail -t`
//!   does, and a server that kept these fields would show every blind-copy
//!   address to every recipient.
//! - Return-Path. RFC 5321 section 4.4: the server that makes the final
//!   delivery adds it, and "a message-originating SMTP system SHOULD NOT
//!   send a message that already contains" one. A file saved from a
//!   mailbox carries the one its last delivery added.
//! - Content-Length. Not an RFC 5322 field. Some mailbox formats trust it
//!   (mboxcl), so a stale count can cut a message short in them.
//!
//! NOTE: a DKIM signature that covers one of these fields no longer
//! verifies after the removal. Signers are not expected to sign them, but
//! ec does not check.

use std::ops::Range;

use bytes::Bytes;
use mail_parser::{HeaderName, Message};

/// Finds the byte ranges of every dropped field in the header section of
/// `message`, each from the start of the field name through the line ending
/// of its last folded line, in order.
///
/// The ranges come from the same parse that gave the envelope, so every Bcc
/// field whose addresses became recipients is removed, whatever the case of
/// its name or the space before its colon.
pub(super) fn dropped_field_ranges(message: &Message<'_>) -> Vec<Range<usize>> {
    message
        .headers()
        .iter()
        .filter(|header| is_dropped(&header.name))
        .map(|header| header.offset_field as usize..header.offset_end as usize)
        .collect()
}

fn is_dropped(name: &HeaderName<'_>) -> bool {
    match name {
        HeaderName::Bcc | HeaderName::ResentBcc | HeaderName::ReturnPath => true,
        HeaderName::Other(name) => name.eq_ignore_ascii_case("Content-Length"),
        _ => false,
    }
}

/// Returns `data` without the byte ranges in `remove`, which must be sorted
/// and must not overlap. Without ranges, `data` itself is returned and no
/// byte is copied.
pub(super) fn remove_ranges(data: Bytes, remove: &[Range<usize>]) -> Bytes {
    if remove.is_empty() {
        return data;
    }

    let removed: usize = remove.iter().map(ExactSizeIterator::len).sum();
    let mut remaining = Vec::with_capacity(data.len() - removed);
    let mut start = 0;
    for range in remove {
        remaining.extend_from_slice(&data[start..range.start]);
        start = range.end;
    }
    remaining.extend_from_slice(&data[start..]);
    Bytes::from(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn without_dropped(text: &str) -> String {
        let data = Bytes::copy_from_slice(text.as_bytes());
        let ranges = MessageParser::new()
            .parse_headers(&data[..])
            .map(|message| dropped_field_ranges(&message))
            .unwrap_or_default();
        let kept = remove_ranges(data.clone(), &ranges);
        String::from_utf8(kept.to_vec()).expect("UTF-8 test message")
    }

    #[test]
    fn folded_fields_any_case() {
        let text = "From: f@example.org\r\n\
                    BCC: x@example.com,\r\n  y@example.com\r\n\
                    To: t@example.com\r\n\
                    bcc :\tz@example.com\r\n\
                    Subject: s\r\n\
                    \r\n\
                    Bcc: body line stays\r\n";
        let expected = "From: f@example.org\r\n\
                        To: t@example.com\r\n\
                        Subject: s\r\n\
                        \r\n\
                        Bcc: body line stays\r\n";
        assert_eq!(without_dropped(text), expected);
    }

    #[test]
    fn every_dropped_field_and_no_other() {
        let text = "Return-Path: <old@example.org>\r\n\
                    Received: from a by b\r\n\
                    Resent-From: r@example.org\r\n\
                    Resent-Bcc: hidden@example.com,\r\n\tsecret@example.com\r\n\
                    Resent-To: t@example.com\r\n\
                    content-length: 12\r\n\
                    Content-Type: text/plain\r\n\
                    X-Original-Return-Path: kept\r\n\
                    \r\n\
                    Return-Path: body line stays\r\n";
        let expected = "Received: from a by b\r\n\
                        Resent-From: r@example.org\r\n\
                        Resent-To: t@example.com\r\n\
                        Content-Type: text/plain\r\n\
                        X-Original-Return-Path: kept\r\n\
                        \r\n\
                        Return-Path: body line stays\r\n";
        assert_eq!(without_dropped(text), expected);
    }

    #[test]
    fn bare_line_feeds_and_empty_field() {
        let text = "Bcc: x@example.com\nTo: t@example.com\nBcc:\n\nbody\n";
        assert_eq!(without_dropped(text), "To: t@example.com\n\nbody\n");
    }

    #[test]
    fn last_line_without_ending() {
        assert_eq!(
            without_dropped("To: t@example.com\nBcc: x@example.com"),
            "To: t@example.com\n"
        );
    }

    #[test]
    fn nothing_dropped_keeps_same_bytes() {
        let data = Bytes::from_static(b"To: t@example.com\nX-Bcc: kept\n\nBcc: x\n");
        let message = MessageParser::new()
            .parse_headers(&data[..])
            .expect("parses");
        let ranges = dropped_field_ranges(&message);
        assert!(ranges.is_empty(), "{ranges:?}");
        let kept = remove_ranges(data.clone(), &ranges);
        assert_eq!(kept.as_ptr(), data.as_ptr(), "no copy");
    }
}
