//! The message data encoder: fixed cases and a property test over
//! arbitrary bytes.

use ec_smtp_client::proto::data::{encode, encode_into, measure, LongLine, MAX_TEXT_LINE_LEN};
use proptest::prelude::*;

/// What the encoder must produce before stuffing, written independently of
/// it: every CRLF, bare LF and bare CR becomes CRLF, and a last line
/// without an ending gets one.
fn normalize(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a server does on receipt (RFC 5321 section 4.5.2): drop the final
/// dot line and the first dot of every line that starts with one.
fn unstuff(encoded: &[u8]) -> Vec<u8> {
    let body = encoded.strip_suffix(b".\r\n").expect("no end-of-data line");
    let mut out = Vec::new();
    let mut line_start = true;
    for (i, &byte) in body.iter().enumerate() {
        if line_start && byte == b'.' {
            line_start = false;
            continue;
        }
        out.push(byte);
        line_start = byte == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    out
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

#[test]
fn already_clean_message() {
    assert_eq!(
        encode(b"Subject: x\r\n\r\nhello\r\n"),
        b"Subject: x\r\n\r\nhello\r\n.\r\n"
    );
}

#[test]
fn line_endings_normalized() {
    assert_eq!(encode(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n.\r\n");
    assert_eq!(encode(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
    assert_eq!(encode(b"\n"), b"\r\n.\r\n");
}

#[test]
fn dots_stuffed() {
    assert_eq!(encode(b".\r\n"), b"..\r\n.\r\n");
    assert_eq!(encode(b"a\n.b\n..c\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
    assert_eq!(encode(b"a.\r\n"), b"a.\r\n.\r\n");
}

#[test]
fn smuggling_sequences_neutralized() {
    // "\n.\n" and "\r.\r" end the data on lenient servers (SMTP smuggling);
    // here they become stuffed lines.
    let encoded = encode(b"a\n.\nMAIL FROM:<x@y>\r.\rb");
    assert_eq!(encoded, b"a\r\n..\r\nMAIL FROM:<x@y>\r\n..\r\nb\r\n.\r\n");
}

#[test]
fn measure_matches_encode() {
    let body = b"Subject: x\n\n.dot\rend";
    let info = measure(body);
    let encoded = encode(body);
    assert_eq!(info.encoded_len, encoded.len());
    assert_eq!(info.size, normalize(body).len() as u64);
    assert_eq!(
        encoded.capacity(),
        encoded.len(),
        "reallocated or over-allocated"
    );
}

#[test]
fn encode_into_appends() {
    let mut out = b"prefix".to_vec();
    encode_into(b"x", &mut out);
    assert_eq!(out, b"prefixx\r\n.\r\n");
}

/// Inputs rich in the bytes that matter: CR, LF, dots and 8-bit bytes.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b'.'),
        Just(b'a'),
        Just(0xe9u8),
        any::<u8>(),
    ];
    prop::collection::vec(interesting, 0..200)
}

proptest! {
    #[test]
    fn encoded_data_is_wire_safe(input in message_bytes()) {
        let encoded = encode(&input);

        // Seen from the server, the data follows "DATA\r\n": the end of
        // data appears exactly once, at the end.
        let mut wire = b"DATA\r\n".to_vec();
        wire.extend_from_slice(&encoded);
        prop_assert_eq!(count(&wire, b"\r\n.\r\n"), 1);
        prop_assert!(wire.ends_with(b"\r\n.\r\n"));

        // No bare CR or LF.
        for (i, &byte) in encoded.iter().enumerate() {
            if byte == b'\r' {
                prop_assert_eq!(encoded.get(i + 1), Some(&b'\n'), "bare CR at {}", i);
            }
            if byte == b'\n' {
                prop_assert!(i > 0 && encoded[i - 1] == b'\r', "bare LF at {}", i);
            }
        }

        prop_assert_eq!(unstuff(&encoded), normalize(&input));

        let info = measure(&input);
        prop_assert_eq!(info.encoded_len, encoded.len());
        prop_assert_eq!(info.size, normalize(&input).len() as u64);
        prop_assert_eq!(info.has_8bit, !input.is_ascii());
    }
}

/// Header section non-ASCII, computed independently of the encoder: the
/// lines of the normalized data before its first empty line.
fn headers_have_8bit(input: &[u8]) -> bool {
    let normalized = normalize(input);
    normalized
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .any(|line| !line.is_ascii())
}

/// Data made of CRLF-ended lines, mostly already in wire form, sometimes
/// with a line that starts with a dot, a bare CR or LF, 8-bit octets, or no
/// ending on the last line.
fn wire_form_bytes() -> impl Strategy<Value = Vec<u8>> {
    let octet = prop_oneof![
        8 => Just(b'a'),
        2 => Just(b':'),
        1 => Just(b'.'),
        1 => Just(0xe9u8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
    ];
    let line = prop::collection::vec(octet, 0..12);
    (prop::collection::vec(line, 0..12), any::<bool>()).prop_map(|(lines, end_last)| {
        let mut out = Vec::new();
        for line in &lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if !end_last && out.ends_with(b"\r\n") {
            out.truncate(out.len() - 2);
        }
        out
    })
}

proptest! {
    #[test]
    fn unchanged_means_encode_appends_only_dot(input in wire_form_bytes()) {
        let info = measure(&input);
        let encoded = encode(&input);
        let mut appended = input.clone();
        appended.extend_from_slice(b".\r\n");

        prop_assert_eq!(info.unchanged, encoded == appended);
        prop_assert_eq!(info.encoded_len, encoded.len());
        prop_assert_eq!(info.size, normalize(&input).len() as u64);
        prop_assert_eq!(info.has_8bit, !input.is_ascii());
        prop_assert_eq!(info.has_8bit_headers, headers_have_8bit(&input));
    }
}

#[test]
fn wire_form_data_is_unchanged() {
    let info = measure(b"Subject: x\r\n\r\nbody\r\n");
    assert!(info.unchanged);
    assert_eq!(info.encoded_len, 23);
    assert!(measure(b"").unchanged);
    assert!(!measure(b"Subject: x\r\n\r\n.body\r\n").unchanged);
    assert!(!measure(b"Subject: x\r\n\r\nbody").unchanged);
    assert!(!measure(b"Subject: x\r\n\rbody\r\n").unchanged);
    assert!(!measure(b"Subject: x\n\r\nbody\r\n").unchanged);
    assert!(!measure(b"\nSubject: x\r\n").unchanged);
    assert!(!measure(b"\rSubject: x\r\n").unchanged);
    assert!(!measure(b"Subject: x\r\n\r\r\n").unchanged);
    assert!(measure(b"\r\n").unchanged);
}

#[test]
fn long_wire_form_data_checked_to_the_end() {
    // Faults past the first scan step (3,968 octets, or 4 KiB before) and
    // right at its edge.
    let body = b"Subject: x\r\n\r\n".repeat(1000);
    assert!(measure(&body).unchanged);
    assert!(!measure(&body).has_8bit);
    for fault in [&b"\n."[..], b"\r\r\n", b"a\nb", b"\xe9"] {
        for at in [3967, 3968, 3969, 4095, 4096, 4097, body.len() - 4] {
            let mut faulty = body[..at].to_vec();
            faulty.extend_from_slice(fault);
            faulty.extend_from_slice(&body[at..]);
            let info = measure(&faulty);
            if fault == b"\xe9" {
                assert!(info.unchanged, "8-bit octet at {at}");
                assert!(info.has_8bit, "8-bit octet at {at}");
            } else {
                assert!(!info.unchanged, "{fault:?} at {at}");
            }
        }
    }
}

/// Returns the first line over the limit, computed independently of the
/// encoder by splitting the normalized data at CRLF.
fn reference_long_line(input: &[u8]) -> Option<LongLine> {
    let normalized = normalize(input);
    let body = normalized.strip_suffix(b"\r\n").unwrap_or(&normalized);
    if body.is_empty() && normalized.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|pair| pair == b"\r\n") {
            Some(end) => {
                lines.push(&rest[..end]);
                rest = &rest[end + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    lines
        .iter()
        .position(|line| line.len() > MAX_TEXT_LINE_LEN)
        .map(|index| LongLine {
            number: index + 1,
            len: lines[index].len(),
        })
}

/// Lines of lengths around the limit and around the scan's block size
/// (496), ended with CRLF or, now and then, with a bare LF.
fn lines_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        4 => 0usize..100,
        2 => 480usize..520,
        2 => 985usize..1010,
        1 => 1010usize..2100,
    ];
    let line = (
        len,
        prop_oneof![9 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])],
    );
    prop::collection::vec(line, 1..12).prop_map(|lines| {
        let mut out = Vec::new();
        for (len, ending) in lines {
            out.extend(std::iter::repeat_n(b'x', len));
            out.extend_from_slice(ending);
        }
        out
    })
}

proptest! {
    #[test]
    fn long_line_is_the_first_over_the_limit(input in lines_near_the_limit()) {
        prop_assert_eq!(measure(&input).long_line, reference_long_line(&input));
    }
}

#[test]
fn long_lines_found_at_the_edges() {
    let line = |len: usize| {
        let mut line = vec![b'a'; len];
        line.extend_from_slice(b"\r\n");
        line
    };
    let long = MAX_TEXT_LINE_LEN + 1;

    assert_eq!(measure(&line(MAX_TEXT_LINE_LEN)).long_line, None);
    assert_eq!(
        measure(&line(long)).long_line,
        Some(LongLine {
            number: 1,
            len: long
        })
    );

    // Lines a little over the scan's block, which are fine, then a long
    // line at the very end: in the last partial block and crossing steps.
    let mut body = line(600).repeat(20);
    assert_eq!(measure(&body).long_line, None);
    body.extend_from_slice(&line(long));
    assert!(measure(&body).unchanged);
    assert_eq!(
        measure(&body).long_line,
        Some(LongLine {
            number: 21,
            len: long
        })
    );

    // The same after a bare LF, which takes the line-by-line path.
    body.splice(0..0, b"a\n".iter().copied());
    assert!(!measure(&body).unchanged);
    assert_eq!(
        measure(&body).long_line,
        Some(LongLine {
            number: 22,
            len: long
        })
    );
}
