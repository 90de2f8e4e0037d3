//! Removal of Bcc header fields from the message data before it is sent.
//!
//! ec takes recipients from Bcc as `sendmail -t` does, so it also removes
//! the Bcc fields, because a server that kept them would show every
//! blind-copy address to every recipient. Postfix's cleanup(8) removes them
//! the same way (its `message_drop_headers`, Postfix 3.0 and later).
//!
//! NOTE: a DKIM signature that covers Bcc no longer verifies after the
//! removal. Signers are not expected to sign Bcc, but ec does not check.

use std::ops::Range;

use bytes::Bytes;
use mail_parser::{HeaderName, Message};

/// Finds the byte ranges of every Bcc field in the header section of `message`,
/// each from the start of the field name through the line ending of its
/// last folded line, in order.
///
/// The ranges come from the same parse that gave the recipients, so every
/// field whose addresses became recipients is removed, whatever the case of
/// its name or the space before its colon.
pub(super) fn bcc_field_ranges(message: &Message<'_>) -> Vec<Range<usize>> {
    message
        .headers()
        .iter()
        .filter(|header| header.name == HeaderName::Bcc)
        .map(|header| header.offset_field as usize..header.offset_end as usize)
        .collect()
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

    fn without_bcc(text: &str) -> String {
        let data = Bytes::copy_from_slice(text.as_bytes());
        let ranges = MessageParser::new()
            .parse_headers(&data[..])
            .map(|message| bcc_field_ranges(&message))
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
        assert_eq!(without_bcc(text), expected);
    }

    #[test]
    fn bare_line_feeds_and_empty_field() {
        let text = "Bcc: x@example.com\nTo: t@example.com\nBcc:\n\nbody\n";
        assert_eq!(without_bcc(text), "To: t@example.com\n\nbody\n");
    }

    #[test]
    fn last_line_without_ending() {
        assert_eq!(
            without_bcc("To: t@example.com\nBcc: x@example.com"),
            "To: t@example.com\n"
        );
    }

    #[test]
    fn no_bcc_keeps_same_bytes() {
        let data = Bytes::from_static(b"To: t@example.com\nX-Bcc: kept\n\nBcc: x\n");
        let message = MessageParser::new()
            .parse_headers(&data[..])
            .expect("parses");
        let ranges = bcc_field_ranges(&message);
        assert!(ranges.is_empty(), "{ranges:?}");
        let kept = remove_ranges(data.clone(), &ranges);
        assert_eq!(kept.as_ptr(), data.as_ptr(), "no copy");
    }
}
