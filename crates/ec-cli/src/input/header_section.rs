//! The end of a message's header section, as a receiving server finds it.
//!
//! RFC 5322 ends the header section at the first empty line. A line that
//! is neither a header field nor a continuation line cannot be part of it
//! either, so Postfix's cleanup(8) ends the header section before such a
//! line and keeps that line and everything after it as body. ec reads the
//! envelope and drops fields only inside the section found the same way:
//! a body line that looks like `Bcc:` or `Return-Path:` is body text, and
//! must neither become part of the envelope nor be removed.

use std::borrow::Cow;

/// Returns the length of the header section of `data`, whose header lines
/// end in LF or CRLF. The section runs up to and including the empty line
/// that ends it, or up to the first line that is neither a header field nor
/// a continuation line, or to the end of `data`. A first line that starts
/// with `From `, an mbox separator, counts as part of the section, because
/// a mail parser skips it.
pub(super) fn header_section_len(data: &[u8]) -> usize {
    let mut start = 0;
    let mut first = true;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i + 1);
        let line = &data[start..end];
        let content = line
            .strip_suffix(b"\n")
            .map_or(line, |rest| rest.strip_suffix(b"\r").unwrap_or(rest));

        if content.is_empty() {
            return end;
        }
        let mbox_separator = first && content.starts_with(b"From ");
        let continuation = !first && matches!(content[0], b' ' | b'\t');
        if !(mbox_separator || continuation || is_field(content)) {
            return start;
        }
        first = false;
        start = end;
    }
    data.len()
}

/// Returns the header section of `data` for a mail parser. When its last
/// line has no line ending, the section is copied with a CRLF added,
/// because mail-parser 0.11 drops the value of such a last field, so a
/// `Cc:` there would lose its recipients.
pub(super) fn parseable(data: &[u8]) -> Cow<'_, [u8]> {
    let header = &data[..header_section_len(data)];
    if header.is_empty() || header.ends_with(b"\n") {
        return Cow::Borrowed(header);
    }
    let mut owned = Vec::with_capacity(header.len() + 2);
    owned.extend_from_slice(header);
    owned.extend_from_slice(b"\r\n");
    Cow::Owned(owned)
}

/// Returns whether `line` starts a header field: a name of printable
/// US-ASCII other than the colon (RFC 5322 section 2.2), then optional
/// spaces or tabs, as some mailers write them, then the colon.
fn is_field(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    !name.is_empty() && name.iter().all(|&byte| (b'!'..=b'~').contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> &str {
        &text[..header_section_len(text.as_bytes())]
    }

    #[test]
    fn ends_after_the_empty_line() {
        let text = "From: a@example.com\r\nSubject: s\r\n\r\nBcc: body\r\n";
        assert_eq!(section(text), "From: a@example.com\r\nSubject: s\r\n\r\n");
        assert_eq!(
            section("To: t@example.com\n\nbody\n"),
            "To: t@example.com\n\n"
        );
    }

    #[test]
    fn ends_before_a_line_that_is_no_field() {
        let text = "From: a@example.com\r\nSubject: s\r\nThis starts the body.\r\n\
                    Return-Path: <body@example.com>\r\n";
        assert_eq!(section(text), "From: a@example.com\r\nSubject: s\r\n");
        let spaced = "Subject: s\r\nnot a field: has spaces in its name\r\n";
        assert_eq!(section(spaced), "Subject: s\r\n");
    }

    #[test]
    fn continuation_and_spaced_colon_stay() {
        let text = "Subject: one\r\n two\r\n\tthree\r\nBcc : x@example.com\r\nX: y";
        assert_eq!(section(text), text);
    }

    #[test]
    fn mbox_separator_only_first() {
        let text = "From someone@example.org Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n";
        assert_eq!(
            section(text),
            "From someone@example.org Mon Jan  1 00:00:00 2024\nSubject: s\n\n"
        );
        let later = "Subject: s\nFrom someone@example.org Mon\nTo: t@example.com\n";
        assert_eq!(section(later), "Subject: s\n");
    }

    #[test]
    fn continuation_first_is_body() {
        assert_eq!(section(" folded\r\nSubject: s\r\n"), "");
    }

    #[test]
    fn last_line_gets_an_ending() {
        assert_eq!(
            &parseable(b"To: a@example.com")[..],
            b"To: a@example.com\r\n"
        );
        let ended = b"To: a@example.com\n\nbody";
        assert!(matches!(
            parseable(ended),
            Cow::Borrowed(b"To: a@example.com\n\n")
        ));
        assert!(parseable(b"").is_empty());
    }

    #[test]
    fn eight_bit_name_is_body() {
        let text = "Subject: s\r\nX-\u{e9}t\u{e9}: yes\r\n";
        assert_eq!(section(text), "Subject: s\r\n");
    }
}
