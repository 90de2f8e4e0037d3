//! The message that a transaction's `BDAT` chunks (RFC 3030) add up to.
//!
//! A chunk is counted in octets, not ended by a dot line, so its data is
//! taken as it is: no dot-unstuffing. Bare LF characters are still counted,
//! across chunk boundaries too, so that a test can check that a client
//! normalizes line endings whichever way it sends.

use super::data::DataOutcome;

/// The chunks of one message so far.
#[derive(Debug)]
pub(crate) struct ChunkedMessage {
    /// Octets so far.
    size: u64,
    /// Largest accepted size, in octets.
    max_size: u64,
    /// LF characters not preceded by CR.
    bare_line_feeds: u64,
    /// The last octet so far was CR.
    after_cr: bool,
    /// The content, when the sink keeps messages and the message is still
    /// within its size limit.
    content: Option<Vec<u8>>,
}

impl ChunkedMessage {
    /// Creates an empty message. With `keep`, its content is stored.
    pub(crate) fn new(max_size: u64, keep: bool) -> Self {
        Self {
            size: 0,
            max_size,
            bare_line_feeds: 0,
            after_cr: false,
            content: keep.then(Vec::new),
        }
    }

    /// Adds octets of a chunk, in order.
    pub(crate) fn append(&mut self, octets: &[u8]) {
        let Some(&last) = octets.last() else {
            return;
        };
        for index in memchr::memchr_iter(b'\n', octets) {
            let after_cr = match index {
                0 => self.after_cr,
                _ => octets[index - 1] == b'\r',
            };
            self.bare_line_feeds += u64::from(!after_cr);
        }
        self.after_cr = last == b'\r';

        self.size += octets.len() as u64;
        if self.size > self.max_size {
            self.content = None;
        } else if let Some(content) = &mut self.content {
            content.extend_from_slice(octets);
        }
    }

    /// Returns whether the message has grown past the size limit.
    pub(crate) fn too_large(&self) -> bool {
        self.size > self.max_size
    }

    /// Ends the message after its `LAST` chunk.
    pub(crate) fn finish(self) -> DataOutcome {
        DataOutcome {
            size: self.size,
            too_large: self.too_large(),
            bare_line_feeds: self.bare_line_feeds,
            content: self.content,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_octets_as_they_are() {
        let mut message = ChunkedMessage::new(100, true);
        message.append(b".leading dot\r\n");
        message.append(b"");
        message.append(b"..two\r\n");
        let outcome = message.finish();
        assert_eq!(
            outcome.content.as_deref(),
            Some(&b".leading dot\r\n..two\r\n"[..])
        );
        assert_eq!(outcome.size, 21);
        assert_eq!(outcome.bare_line_feeds, 0);
        assert!(!outcome.too_large);
    }

    #[test]
    fn counts_bare_line_feeds_across_chunks() {
        let mut message = ChunkedMessage::new(100, false);
        message.append(b"a\r");
        message.append(b"\nb\n");
        message.append(b"\n");
        let outcome = message.finish();
        assert_eq!(outcome.bare_line_feeds, 2, "b's LF and the lone LF");
        assert_eq!(outcome.content, None);
    }

    #[test]
    fn drops_content_past_the_limit() {
        let mut message = ChunkedMessage::new(4, true);
        message.append(b"abc");
        assert!(!message.too_large());
        message.append(b"de");
        assert!(message.too_large());
        let outcome = message.finish();
        assert!(outcome.too_large);
        assert_eq!(outcome.size, 5);
        assert_eq!(outcome.content, None);
    }
}
