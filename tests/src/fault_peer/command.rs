//! Reading SMTP commands and message data out of the bytes a client sent.
//!
//! [`Input`] stores the bytes read and not yet taken. It splits them into command lines
//! (RFC 5321 section 2.3.8; a bare LF also ends a line, so a client that sends one
//! is recorded, not stalled), message data ending in `CRLF . CRLF` (section
//! 4.1.1.4), and `BDAT` chunks of a size given on their command line (RFC 3030). It
//! remembers which read delivered each byte, so a record shows which commands a
//! client sent together (RFC 2920 pipelining).

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};

/// An SMTP command verb, the key a scenario scripts replies by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// `HELO`
    Helo,
    /// `EHLO`
    Ehlo,
    /// `MAIL`
    Mail,
    /// `RCPT`
    Rcpt,
    /// `DATA`
    Data,
    /// `BDAT` (RFC 3030); the peer reads its chunk only while it advertises
    /// CHUNKING.
    Bdat,
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `VRFY`
    Vrfy,
    /// `AUTH` (RFC 4954); the peer never advertises it.
    Auth,
    /// Any other first word, in upper case.
    Other(String),
}

impl Verb {
    /// The verb of a command line: its first word, compared without regard to case.
    pub fn of_line(line: &[u8]) -> Self {
        let end = line
            .iter()
            .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
            .unwrap_or(line.len());
        Self::parse(&String::from_utf8_lossy(&line[..end]))
    }

    /// The verb named by `word`, compared without regard to case.
    pub fn parse(word: &str) -> Self {
        match word.to_ascii_uppercase().as_str() {
            "HELO" => Self::Helo,
            "EHLO" => Self::Ehlo,
            "MAIL" => Self::Mail,
            "RCPT" => Self::Rcpt,
            "DATA" => Self::Data,
            "BDAT" => Self::Bdat,
            "RSET" => Self::Rset,
            "NOOP" => Self::Noop,
            "QUIT" => Self::Quit,
            "STARTTLS" => Self::StartTls,
            "VRFY" => Self::Vrfy,
            "AUTH" => Self::Auth,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether this command carries part of a mail transaction: envelope or content.
    pub fn is_transaction(&self) -> bool {
        matches!(self, Self::Mail | Self::Rcpt | Self::Data | Self::Bdat)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Self::Helo => "HELO",
            Self::Ehlo => "EHLO",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::Bdat => "BDAT",
            Self::Rset => "RSET",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
            Self::StartTls => "STARTTLS",
            Self::Vrfy => "VRFY",
            Self::Auth => "AUTH",
            Self::Other(word) => word,
        };
        f.write_str(word)
    }
}

/// Whether any line of `bytes` starts a mail transaction command.
pub(crate) fn has_transaction_line(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n')
        .any(|line| Verb::of_line(line).is_transaction())
}

/// The arguments of a `BDAT` command (RFC 3030 section 2):
/// `"BDAT" SP chunk-size [ SP end-marker ]`, where `chunk-size` is `1*DIGIT` and
/// `end-marker` is `LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bdat {
    /// Octets of chunk data that follow the command line.
    pub(crate) size: usize,
    /// Whether this chunk ends the message.
    pub(crate) last: bool,
}

impl Bdat {
    /// Parses a `BDAT` line, line ending included. `None` when the size is
    /// missing, is not a decimal number that fits in `usize`, or is followed by
    /// anything but `LAST`. Words are separated by single spaces, and `LAST` is
    /// compared without regard to case, as RFC 5321 section 2.4 has it for keywords.
    pub(crate) fn parse(line: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(line).ok()?;
        let text = text.strip_suffix('\n')?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        let mut words = text.split(' ');
        let _verb = words.next()?;

        let size = words.next()?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let size = size.parse().ok()?;
        let last = match words.next() {
            None => false,
            Some(marker) if marker.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return None,
        };
        if words.next().is_some() {
            return None;
        }
        Some(Self { size, last })
    }
}

/// Bytes read from the client and not yet taken, with the read each came from.
#[derive(Debug, Default)]
pub(crate) struct Input {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    consumed: u64,
    /// Reads so far.
    reads: u64,
    /// For each read not fully consumed: the stream offset just past its last byte,
    /// and its number (1-based).
    read_ends: VecDeque<(u64, u64)>,
    /// How far the search for the end of message data got, so a large body arriving
    /// in small reads is scanned once.
    body_scanned: usize,
}

impl Input {
    /// The buffer to read into; call [`Input::note_read`] after each read.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Records that the last read appended `n` bytes.
    pub(crate) fn note_read(&mut self, n: usize) {
        self.reads += 1;
        let end = self.consumed + self.buf.len() as u64;
        debug_assert!(n as u64 <= end - self.consumed);
        self.read_ends.push_back((end, self.reads));
    }

    /// Bytes held and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The next complete command line, through its LF, and the number of the read
    /// that delivered its last byte.
    pub(crate) fn take_line(&mut self) -> Option<(Bytes, u64)> {
        let newline = self.buf.iter().position(|&b| b == b'\n')?;
        let read = self.read_of(self.consumed + newline as u64);
        Some((self.take(newline + 1), read))
    }

    /// The message data before the end-of-data mark, once the mark has arrived; the
    /// mark itself is taken and dropped. The data keeps its dot-stuffing and the
    /// CRLF that ends its last line; it is empty when the mark came first.
    pub(crate) fn take_body(&mut self) -> Option<Bytes> {
        if self.buf.starts_with(b".\r\n") {
            self.take(3);
            return Some(Bytes::new());
        }

        let from = self.body_scanned;
        let Some(at) = find(&self.buf[from..], b"\r\n.\r\n") else {
            self.body_scanned = self.buf.len().saturating_sub(4);
            return None;
        };
        let body = self.take(from + at + 2);
        self.take(3);
        Some(body)
    }

    /// Up to `n` of the bytes held, and the number of the read that delivered the
    /// last of them (`None` when none were taken).
    pub(crate) fn take_up_to(&mut self, n: usize) -> (Bytes, Option<u64>) {
        let n = n.min(self.buf.len());
        if n == 0 {
            return (Bytes::new(), None);
        }
        let read = self.read_of(self.consumed + n as u64 - 1);
        (self.take(n), Some(read))
    }

    /// Everything held.
    pub(crate) fn take_all(&mut self) -> Bytes {
        self.take(self.buf.len())
    }

    fn take(&mut self, n: usize) -> Bytes {
        let taken = self.buf.split_to(n).freeze();
        self.consumed += n as u64;
        self.body_scanned = 0;
        while self
            .read_ends
            .front()
            .is_some_and(|&(end, _)| end <= self.consumed)
        {
            self.read_ends.pop_front();
        }
        taken
    }

    fn read_of(&self, offset: u64) -> u64 {
        self.read_ends
            .iter()
            .find(|&&(end, _)| end > offset)
            .map_or(self.reads, |&(_, read)| read)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &mut Input, bytes: &[u8]) {
        input.buf_mut().extend_from_slice(bytes);
        input.note_read(bytes.len());
    }

    #[test]
    fn pipelined_lines_share_their_read() {
        let mut input = Input::default();
        feed(&mut input, b"EHLO a\r\n");
        feed(&mut input, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDA");
        feed(&mut input, b"TA\r\n");

        assert_eq!(input.take_line(), Some((Bytes::from("EHLO a\r\n"), 1)));
        assert_eq!(
            input.take_line(),
            Some((Bytes::from("MAIL FROM:<a@b>\r\n"), 2))
        );
        assert_eq!(
            input.take_line(),
            Some((Bytes::from("RCPT TO:<c@d>\r\n"), 2))
        );
        assert_eq!(input.take_line(), Some((Bytes::from("DATA\r\n"), 3)));
        assert_eq!(input.take_line(), None);
    }

    #[test]
    fn body_ends_at_the_dot_line() {
        let mut input = Input::default();
        feed(&mut input, b"Subject: x\r\n\r\n..dot\r\n");
        assert_eq!(input.take_body(), None);
        feed(&mut input, b".\r\nQUIT\r\n");

        assert_eq!(
            input.take_body(),
            Some(Bytes::from("Subject: x\r\n\r\n..dot\r\n"))
        );
        assert_eq!(
            input.take_line().map(|(line, _)| line),
            Some(Bytes::from("QUIT\r\n"))
        );
    }

    #[test]
    fn mark_split_across_reads_is_found() {
        let mut input = Input::default();
        for piece in [&b"body\r"[..], b"\n", b".", b"\r", b"\n"] {
            assert_eq!(input.take_body(), None);
            feed(&mut input, piece);
        }
        assert_eq!(input.take_body(), Some(Bytes::from("body\r\n")));
        assert_eq!(input.len(), 0);
    }

    #[test]
    fn empty_body_and_bare_lf_lines() {
        let mut input = Input::default();
        feed(&mut input, b".\r\nNOOP\n");
        assert_eq!(input.take_body(), Some(Bytes::new()));
        assert_eq!(
            input.take_line().map(|(line, _)| line),
            Some(Bytes::from("NOOP\n"))
        );
    }

    #[test]
    fn chunk_octets_keep_their_read() {
        let mut input = Input::default();
        feed(&mut input, b"BDAT 8 LAST\r\nab\r\n");
        feed(&mut input, b".x\r\nQUIT\r\n");

        assert_eq!(input.take_line(), Some((Bytes::from("BDAT 8 LAST\r\n"), 1)));
        assert_eq!(input.take_up_to(3), (Bytes::from("ab\r"), Some(1)));
        assert_eq!(input.take_up_to(5), (Bytes::from("\n.x\r\n"), Some(2)));
        assert_eq!(input.take_up_to(0), (Bytes::new(), None));
        assert_eq!(input.take_line(), Some((Bytes::from("QUIT\r\n"), 2)));
        assert_eq!(input.take_up_to(10), (Bytes::new(), None));
    }

    #[test]
    fn bdat_arguments() {
        let parse = |line: &str| Bdat::parse(line.as_bytes());
        assert_eq!(
            parse("BDAT 0 LAST\r\n"),
            Some(Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            parse("bdat 12 last\r\n"),
            Some(Bdat {
                size: 12,
                last: true
            })
        );
        assert_eq!(
            parse("BDAT 1000\r\n"),
            Some(Bdat {
                size: 1000,
                last: false
            })
        );
        assert_eq!(
            parse("BDAT 7\n"),
            Some(Bdat {
                size: 7,
                last: false
            })
        );
        for bad in [
            "BDAT\r\n",
            "BDAT \r\n",
            "BDAT x LAST\r\n",
            "BDAT -1\r\n",
            "BDAT +1\r\n",
            "BDAT 1 FIRST\r\n",
            "BDAT 1 LAST x\r\n",
            "BDAT  1\r\n",
            "BDAT 99999999999999999999999\r\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn verbs_ignore_case_and_arguments() {
        assert_eq!(Verb::of_line(b"mail FROM:<>\r\n"), Verb::Mail);
        assert_eq!(Verb::of_line(b"StartTLS\r\n"), Verb::StartTls);
        assert_eq!(
            Verb::of_line(b"XCLIENT a=b\r\n"),
            Verb::Other("XCLIENT".into())
        );
        assert!(has_transaction_line(b"EHLO x\r\nrcpt TO:<a@b>\r\n"));
        assert!(!has_transaction_line(b"\x16\x03\x01\x00"));
    }
}
