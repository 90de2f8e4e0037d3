//! The message data encoder on arbitrary message bytes.

use crate::proto::data::{self, END_OF_DATA};

/// The end-of-data sequence as a server reads it (RFC 5321 section 4.1.1.4).
const END_OF_DATA_SEQUENCE: &[u8] = b"\r\n.\r\n";

/// Encodes the input as mail data with [`data::encode`] and checks what a
/// server would read.
///
/// # Panics
///
/// Panics when the output, after the CRLF that ends the DATA command,
/// contains `CRLF . CRLF` anywhere but at its end, when it has a CR or LF
/// outside a CRLF, when removing the dot-stuffing does not give back the
/// input with every line ending written as CRLF, or when [`data::measure`]
/// disagrees with the output's length, the RFC 1870 size or the 8-bit flag.
pub fn check_data_encoder(body: &[u8]) {
    let encoded = data::encode(body);
    let normalized = normalize_line_endings(body);

    check_no_bare_line_ends(&encoded);
    check_single_end(&encoded);
    assert_eq!(
        unstuff(&encoded),
        normalized,
        "unstuffed data differs from the CRLF-normalized input"
    );

    let info = data::measure(body);
    assert_eq!(info.encoded_len, encoded.len(), "measured encoded length");
    assert_eq!(info.size, normalized.len() as u64, "measured RFC 1870 size");
    assert_eq!(info.has_8bit, !body.is_ascii(), "measured 8-bit flag");
    let unchanged = encoded.len() == body.len() + END_OF_DATA.len()
        && encoded.starts_with(body)
        && encoded.ends_with(END_OF_DATA);
    assert_eq!(info.unchanged, unchanged, "measured wire form");
}

/// Writes CRLF, bare CR and bare LF each as CRLF, and ends a last line that
/// has no line ending with CRLF.
fn normalize_line_endings(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut bytes = body.iter().peekable();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\r' => {
                bytes.next_if_eq(&&b'\n');
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(byte),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn check_no_bare_line_ends(encoded: &[u8]) {
    for (index, &byte) in encoded.iter().enumerate() {
        let bare = match byte {
            b'\r' => encoded.get(index + 1) != Some(&b'\n'),
            b'\n' => index == 0 || encoded[index - 1] != b'\r',
            _ => false,
        };
        assert!(!bare, "bare {byte:#04x} at offset {index} of the data");
    }
}

/// Checks that the end-of-data sequence occurs once, at the end. The DATA
/// command's CRLF comes first on the wire, so it is part of the search.
fn check_single_end(encoded: &[u8]) {
    let mut wire = b"\r\n".to_vec();
    wire.extend_from_slice(encoded);

    let ends: Vec<usize> = wire
        .windows(END_OF_DATA_SEQUENCE.len())
        .enumerate()
        .filter(|(_, window)| *window == END_OF_DATA_SEQUENCE)
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(
        ends,
        [wire.len() - END_OF_DATA_SEQUENCE.len()],
        "end-of-data sequence offsets on the wire"
    );
}

/// Removes the end-of-data line and one leading dot from each line, as a
/// server does (RFC 5321 section 4.5.2).
fn unstuff(encoded: &[u8]) -> Vec<u8> {
    let body = encoded
        .strip_suffix(END_OF_DATA)
        .expect("data ends with the end-of-data line");

    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("every line of the data ends with CRLF");
        let line = &rest[..end];
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
        rest = &rest[end + 2..];
    }
    out
}
