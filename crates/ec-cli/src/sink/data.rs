//! Reading message data after the 354 reply, up to CRLF "." CRLF (RFC 5321
//! section 4.1.1.4), with dot-unstuffing (section 4.5.2), as the bytes
//! arrive.
//!
//! The reader takes whatever part of the stream is buffered and consumes as
//! much as it can decide on, so a message of any size passes through a
//! fixed buffer. It keeps back at most the two bytes after a dot at the
//! start of a line, which decide between the end of data and a stuffed
//! dot.

/// The state of one message's data.
#[derive(Debug)]
pub(crate) struct DataReader {
    /// The next byte starts a line: the data has just begun or a CRLF was
    /// the last thing read.
    line_start: bool,
    /// The last byte read was CR, so an LF at the start of the next input
    /// ends a line.
    after_cr: bool,
    /// Message octets so far, after dot-unstuffing.
    size: u64,
    /// Largest accepted size, in octets.
    max_size: u64,
    /// LF characters not preceded by CR.
    bare_line_feeds: u64,
    /// The message content, when the sink keeps messages and the message is
    /// still within its size limit.
    content: Option<Vec<u8>>,
}

/// The result of [`DataReader::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Bytes of the input consumed.
    pub(crate) consumed: usize,
    /// The end-of-data line was consumed.
    pub(crate) done: bool,
}

/// A finished message.
#[derive(Debug)]
pub(crate) struct DataOutcome {
    /// Octets after dot-unstuffing, including the CRLF before the final dot.
    pub(crate) size: u64,
    /// The size exceeded the limit.
    pub(crate) too_large: bool,
    /// LF characters not preceded by CR.
    pub(crate) bare_line_feeds: u64,
    /// The content, if kept and not too large.
    pub(crate) content: Option<Vec<u8>>,
}

impl DataReader {
    /// A reader for one message; `keep` stores its content.
    pub(crate) fn new(max_size: u64, keep: bool) -> Self {
        Self {
            line_start: true,
            after_cr: false,
            size: 0,
            max_size,
            bare_line_feeds: 0,
            content: keep.then(Vec::new),
        }
    }

    /// Consumes message data from `input`. Unconsumed bytes must be offered
    /// again, followed by more input; when `done` is true, the bytes after
    /// `consumed` belong to the next command.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Fed {
        let mut position = 0;
        while position < input.len() {
            let rest = &input[position..];

            if self.line_start && rest[0] == b'.' {
                match rest {
                    [b'.'] | [b'.', b'\r'] => {
                        return Fed {
                            consumed: position,
                            done: false,
                        }
                    }
                    [b'.', b'\r', b'\n', ..] => {
                        return Fed {
                            consumed: position + 3,
                            done: true,
                        }
                    }
                    _ => {
                        // A stuffed dot: the client doubled a leading dot,
                        // and the first one is not part of the message.
                        position += 1;
                        self.line_start = false;
                        continue;
                    }
                }
            }

            match memchr::memchr(b'\n', rest) {
                Some(index) => {
                    let crlf = if index > 0 {
                        rest[index - 1] == b'\r'
                    } else {
                        self.after_cr
                    };
                    if !crlf {
                        self.bare_line_feeds += 1;
                    }
                    self.append(&rest[..=index]);
                    self.line_start = crlf;
                    self.after_cr = false;
                    position += index + 1;
                }
                None => {
                    self.append(rest);
                    self.line_start = false;
                    self.after_cr = rest.last() == Some(&b'\r');
                    position = input.len();
                }
            }
        }
        Fed {
            consumed: position,
            done: false,
        }
    }

    /// Ends the message after [`feed`](Self::feed) reported `done`.
    pub(crate) fn finish(self) -> DataOutcome {
        DataOutcome {
            size: self.size,
            too_large: self.size > self.max_size,
            bare_line_feeds: self.bare_line_feeds,
            content: self.content,
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.content = None;
        } else if let Some(content) = &mut self.content {
            content.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as reads would deliver it,
    /// keeping unconsumed bytes for the next round. Returns the outcome and
    /// the bytes left after the end of data.
    fn read_in_steps(input: &[u8], step: usize, max_size: u64) -> (DataOutcome, Vec<u8>) {
        let mut reader = DataReader::new(max_size, true);
        let mut pending = Vec::new();
        let mut chunks = input.chunks(step);
        loop {
            let fed = reader.feed(&pending);
            if fed.done {
                let rest = pending[fed.consumed..]
                    .iter()
                    .chain(chunks.flatten())
                    .copied()
                    .collect();
                return (reader.finish(), rest);
            }
            pending.drain(..fed.consumed);
            let chunk = chunks.next().expect("input ended before the end of data");
            pending.extend_from_slice(chunk);
        }
    }

    #[test]
    fn ends_at_crlf_dot_crlf() {
        let input = b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        for step in [1, 2, 3, 5, input.len()] {
            let (outcome, rest) = read_in_steps(input, step, 1_000);
            assert_eq!(
                outcome.content.as_deref(),
                Some(&b"Subject: x\r\n\r\nbody\r\n"[..]),
                "step {step}"
            );
            assert_eq!(outcome.size, 20, "step {step}");
            assert_eq!(rest, b"QUIT\r\n", "step {step}");
            assert_eq!(outcome.bare_line_feeds, 0);
        }
    }

    #[test]
    fn empty_message() {
        let (outcome, rest) = read_in_steps(b".\r\n", 1, 10);
        assert_eq!(outcome.size, 0);
        assert!(rest.is_empty());
    }

    #[test]
    fn unstuffs_leading_dots() {
        let input = b"..hidden\r\n.\r\n...\r\n.x\r\n.\r\n";
        for step in [1, 2, 4, input.len()] {
            let (outcome, rest) = read_in_steps(input, step, 1_000);
            assert_eq!(
                outcome.content.as_deref(),
                Some(&b".hidden\r\n"[..]),
                "step {step}"
            );
            assert_eq!(rest, b"...\r\n.x\r\n.\r\n", "step {step}");
        }
        let (outcome, _) = read_in_steps(b"...\r\n.x\r\n.\r\n", 3, 1_000);
        assert_eq!(outcome.content.as_deref(), Some(&b"..\r\nx\r\n"[..]));
    }

    #[test]
    fn bare_lf_does_not_end_data() {
        let input = b"a\n.\nb\r\n.\r\n";
        for step in [1, 3, input.len()] {
            let (outcome, rest) = read_in_steps(input, step, 1_000);
            assert_eq!(
                outcome.content.as_deref(),
                Some(&b"a\n.\nb\r\n"[..]),
                "step {step}"
            );
            assert_eq!(outcome.bare_line_feeds, 2, "step {step}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn bare_cr_does_not_end_data() {
        let (outcome, _) = read_in_steps(b"a\r.\rb\r\n.\r\n", 1, 1_000);
        assert_eq!(outcome.content.as_deref(), Some(&b"a\r.\rb\r\n"[..]));
    }

    #[test]
    fn cr_and_lf_split_across_reads() {
        let mut reader = DataReader::new(100, true);
        assert_eq!(
            reader.feed(b"line\r"),
            Fed {
                consumed: 5,
                done: false
            }
        );
        assert_eq!(
            reader.feed(b"\n."),
            Fed {
                consumed: 1,
                done: false
            }
        );
        assert_eq!(
            reader.feed(b".\r\n"),
            Fed {
                consumed: 3,
                done: true
            }
        );
        let outcome = reader.finish();
        assert_eq!(outcome.content.as_deref(), Some(&b"line\r\n"[..]));
        assert_eq!(outcome.bare_line_feeds, 0);
    }

    #[test]
    fn oversized_message_is_read_to_end() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nNOOP\r\n";
        let (outcome, rest) = read_in_steps(input, 7, 15);
        assert!(outcome.too_large);
        assert_eq!(outcome.size, 24);
        assert_eq!(outcome.content, None);
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn not_kept_without_keep() {
        let mut reader = DataReader::new(100, false);
        assert!(reader.feed(b"x\r\n.\r\n").done);
        let outcome = reader.finish();
        assert_eq!(outcome.size, 3);
        assert_eq!(outcome.content, None);
    }
}
