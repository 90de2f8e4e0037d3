//! Message bodies for load runs and smuggling checks, and what each must
//! look like on the wire: after `DATA`, and as a `BDAT` chunk.
//!
//! The smuggling cases are the byte sequences of the 2023 SMTP smuggling
//! attacks: line endings other than CRLF around a lone dot, which some
//! servers take for the end of data, so that text after them runs as a
//! second transaction. An engine that passes them through unchanged lets a
//! sender smuggle mail. So ec must write every line ending as CRLF and
//! stuff every leading dot (RFC 5321 sections 2.3.8 and 4.5.2).

/// A body holding one smuggling pattern, with the name tests report it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmugglingCase {
    /// A short name: the pattern, in words.
    pub name: &'static str,
    /// The message as submitted.
    pub body: &'static [u8],
}

/// Every smuggling pattern, each inside an otherwise ordinary message.
pub const SMUGGLING_CASES: [SmugglingCase; 14] = [
    SmugglingCase {
        name: "bare LF line endings",
        body: b"Subject: bare lf\n\nline one\nline two\n",
    },
    SmugglingCase {
        name: "bare CR line endings",
        body: b"Subject: bare cr\r\n\r\nline one\rline two\r\n",
    },
    SmugglingCase {
        name: "LF . LF",
        body: b"Subject: lf dot lf\r\n\r\nbefore\n.\nafter\r\n",
    },
    SmugglingCase {
        name: "CR . CR",
        body: b"Subject: cr dot cr\r\n\r\nbefore\r.\rafter\r\n",
    },
    SmugglingCase {
        name: "CRLF . LF",
        body: b"Subject: crlf dot lf\r\n\r\nbefore\r\n.\nafter\r\n",
    },
    SmugglingCase {
        name: "LF . CRLF",
        body: b"Subject: lf dot crlf\r\n\r\nbefore\n.\r\nafter\r\n",
    },
    SmugglingCase {
        name: "CR . CRLF",
        body: b"Subject: cr dot crlf\r\n\r\nbefore\r.\r\nafter\r\n",
    },
    SmugglingCase {
        name: "CRLF . CR",
        body: b"Subject: crlf dot cr\r\n\r\nbefore\r\n.\rafter\r\n",
    },
    SmugglingCase {
        name: "CRLF . CRLF inside the body",
        body: b"Subject: crlf dot crlf\r\n\r\nbefore\r\n.\r\nafter\r\n",
    },
    SmugglingCase {
        name: ". CRLF at the start of the body",
        body: b"Subject: dot first\r\n\r\n.\r\nafter the dot\r\n",
    },
    SmugglingCase {
        name: "NUL bytes",
        body: b"Subject: nul\r\n\r\na\0b\r\n\0\r\nend\r\n",
    },
    SmugglingCase {
        name: "a smuggled second transaction",
        body: b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@ec.test>\nRCPT TO:<victim@ec.test>\nDATA\n\nforged\n.\n",
    },
    SmugglingCase {
        name: "a last line of one dot and no line ending",
        body: b"Subject: last dot\r\n\r\ntext\r\n.",
    },
    SmugglingCase {
        name: "a CR at the very end",
        body: b"Subject: last cr\r\n\r\ntext\r",
    },
];

/// A message that starts with `. CRLF` before any header, the case where
/// the data's first line is the end-of-data line.
pub const DOT_FIRST: &[u8] = b".\r\nSubject: after a first dot\r\n\r\nbody\r\n";

/// Splits `body` into lines at CRLF, bare LF or bare CR, the way RFC 5321
/// section 2.3.8 lets a receiver read them. A last line without an
/// ending is a line too; an empty body has none.
pub fn lines(body: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                lines.push(rest);
                rest = &[];
            }
            Some(end) => {
                lines.push(&rest[..end]);
                let ending = if rest[end..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[end + ending..];
            }
        }
    }
    lines
}

/// Returns what `body` must look like between the `354` and the end-of-data line:
/// every line ended by CRLF, every line that starts with `.` given a second
/// one. This is the reference the tests hold the engine's encoder to, and is
/// written independently of it.
pub fn wire_data(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    for line in lines(body) {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Returns what `body` must look like as a `BDAT` chunk (RFC 3030): every
/// line ended by CRLF as in [`wire_data`], but no dot doubled, because a
/// chunk's end is counted in octets, not marked by a dot line. This is the
/// reference for chunks, written independently of the engine's encoder.
pub fn wire_chunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    for line in lines(body) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Returns what a server that stores LF line endings (Postfix's Maildir
/// delivery) keeps of `body`: its lines joined by LF, without dot-stuffing.
pub fn stored_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in lines(body) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Bodies for a load run: small, medium and large ordinary messages, one
/// with leading dots, and every smuggling case, so a soak also checks the
/// wire encoding at volume. [`load_body`] picks one by tag.
pub fn load_bodies() -> Vec<bytes::Bytes> {
    let mut bodies = vec![
        bytes::Bytes::from_static(b"Subject: soak\r\n\r\nA short message.\r\n"),
        bytes::Bytes::from_static(b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"),
        bytes::Bytes::from(filler("medium", 4 * 1024)),
        bytes::Bytes::from(filler("large", 64 * 1024)),
    ];
    bodies.extend(
        SMUGGLING_CASES
            .iter()
            .map(|case| bytes::Bytes::from_static(case.body)),
    );
    bodies.push(bytes::Bytes::from_static(DOT_FIRST));
    bodies
}

/// Picks the body of the message tagged `tag` among `bodies`: mostly the
/// short one, so the large one does not dominate a run.
pub fn load_body(bodies: &[bytes::Bytes], tag: u64) -> bytes::Bytes {
    let index = match tag % 10 {
        0..=4 => 0,
        5 => 2,
        6 if tag % 50 == 6 => 3,
        _ => 1 + (tag / 10) as usize % (bodies.len() - 1),
    };
    bodies[index.min(bodies.len() - 1)].clone()
}

/// Builds a message of about `size` bytes of 76-character lines.
fn filler(subject: &str, size: usize) -> Vec<u8> {
    let mut body = format!("Subject: {subject}\r\n\r\n").into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, and then over the dog again.\r\n";
    while body.len() < size {
        body.extend_from_slice(line);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_data_normalizes_and_stuffs() {
        assert_eq!(
            wire_data(b"a\nb\rc\r\n.d\n."),
            b"a\r\nb\r\nc\r\n..d\r\n..\r\n"
        );
        assert_eq!(wire_data(b""), b"");
        assert_eq!(stored_lf(b"a\r\n.b\r"), b"a\n.b\n");
    }

    #[test]
    fn wire_chunk_normalizes_without_stuffing() {
        assert_eq!(
            wire_chunk(b"a\nb\rc\r\n.d\n."),
            b"a\r\nb\r\nc\r\n.d\r\n.\r\n"
        );
        assert_eq!(wire_chunk(b""), b"");
        for body in load_bodies() {
            let chunk = wire_chunk(&body);
            let has_dot_line = lines(&body).iter().any(|line| line.first() == Some(&b'.'));
            assert_eq!(chunk != wire_data(&body), has_dot_line, "{body:?}");
            assert!(!crate::fault_peer::bare_line_end(&chunk, true), "{body:?}");
        }
    }

    #[test]
    fn reference_is_clean_for_every_case() {
        for case in SMUGGLING_CASES {
            let wire = wire_data(case.body);
            assert!(
                !crate::fault_peer::bare_line_end(&wire, true),
                "{}",
                case.name
            );
            assert!(!crate::fault_peer::unstuffed_dot(&wire), "{}", case.name);
        }
    }
}
