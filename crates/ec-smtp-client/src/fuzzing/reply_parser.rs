//! The reply parser under arbitrary input, limits and chunk splits.

use ec_types::Reply;

use super::script::Script;
use crate::proto::{ReplyError, ReplyLimits, ReplyParser};

/// Pushes a byte stream into a [`ReplyParser`] in chunks and checks every
/// reply and the buffer bound.
///
/// The input is a script:
///
/// 1. the reply limits (see below);
/// 2. one byte `n`, then `n % 16` split bytes. Split byte `s` pushes a
///    chunk of `(s & 0x7f) + 1` octets and, when `s & 0x80` is set, reads
///    every complete reply after it. The splits repeat until the stream is
///    used up. With no split bytes the stream is pushed at once;
/// 3. the stream: everything that is left.
///
/// The limits are one flag byte. When its low bit is set, three bytes
/// follow: `max_line_len` (0 to 255), `max_lines` (0 to 15) and
/// `max_buffered` (0 to 1020, in steps of 4). Otherwise the defaults apply.
///
/// # Panics
///
/// Panics when the parser holds more than `max_buffered` octets, returns a
/// reply with a code outside 200..=599, with no line, with more lines than
/// `max_lines` or with a line longer than `max_line_len` allows, or returns
/// a different error after its first one. It also panics when the replies
/// depend on the split: the parser must return the same replies as when the
/// stream arrives one octet at a time, except that a split can only make
/// [`ReplyError::BufferFull`] come sooner.
pub fn check_reply_parser(input: &[u8]) {
    let mut script = Script::new(input);
    let limits = script.reply_limits();
    let split_count = usize::from(script.byte() % 16);
    let splits = script.bytes(split_count);
    let stream = script.rest();

    let mut chunked = Run::new(limits);
    if splits.is_empty() {
        chunked.push(stream);
    } else {
        let mut rest = stream;
        for &split in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(rest.len().min(usize::from(split & 0x7f) + 1));
            rest = tail;
            chunked.push(chunk);
            if split & 0x80 != 0 {
                chunked.drain();
            }
        }
    }
    chunked.drain();

    // A poisoned parser only repeats its error, which `drain` has checked
    // once, so the rest of the stream would add nothing.
    let mut bytewise = Run::new(limits);
    for octet in stream {
        bytewise.push(std::slice::from_ref(octet));
        bytewise.drain();
        if bytewise.error.is_some() {
            break;
        }
    }

    compare_runs(&chunked, &bytewise);
}

/// Checks the split-invariance between the same stream pushed in chunks and
/// pushed one octet at a time.
///
/// An octet-at-a-time parser never buffers more than a chunked one at the
/// same point of the stream, so it cannot run out of buffer sooner. Every
/// other error depends on the lines alone and comes at the same line either
/// way.
fn compare_runs(chunked: &Run, bytewise: &Run) {
    assert!(
        bytewise.replies.starts_with(&chunked.replies),
        "the chunked replies {:?} are not a prefix of the octet-at-a-time replies {:?}",
        chunked.replies,
        bytewise.replies,
    );
    if chunked.error.is_none() {
        assert_eq!(bytewise.error, None, "only the octet-at-a-time run failed");
        assert_eq!(
            chunked.replies, bytewise.replies,
            "the chunked run returned other replies"
        );
    }
}

/// One parser, the replies it returned and its first error.
struct Run {
    parser: ReplyParser,
    limits: ReplyLimits,
    replies: Vec<Reply>,
    error: Option<ReplyError>,
}

impl Run {
    fn new(limits: ReplyLimits) -> Self {
        Self {
            parser: ReplyParser::new(limits),
            limits,
            replies: Vec::new(),
            error: None,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let result = self.parser.push(chunk);
        self.record(result.err());
        self.check_buffer();
    }

    /// Reads every complete reply.
    fn drain(&mut self) {
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => {
                    assert!(self.error.is_none(), "a reply came after the error");
                    check_reply(&reply, self.limits);
                    self.replies.push(reply);
                }
                Ok(None) => break,
                Err(error) => {
                    self.record(Some(error));
                    break;
                }
            }
        }
        self.check_buffer();
    }

    /// Keeps the first error and checks that the parser repeats it.
    fn record(&mut self, error: Option<ReplyError>) {
        match (&self.error, error) {
            (None, Some(error)) => {
                assert!(self.parser.is_poisoned(), "failed without poisoning");
                self.error = Some(error);
            }
            (Some(first), later) => assert_eq!(
                later.as_ref(),
                Some(first),
                "a poisoned parser did not repeat its first error"
            ),
            (None, None) => {}
        }
    }

    fn check_buffer(&self) {
        let buffered = self.parser.buffered_len();
        assert!(
            buffered <= self.limits.max_buffered,
            "the parser holds {buffered} octets, more than max_buffered {}",
            self.limits.max_buffered
        );
    }
}

/// Checks one reply against the grammar and the limits.
pub(super) fn check_reply(reply: &Reply, limits: ReplyLimits) {
    let code = reply.code.as_u16();
    assert!(
        (200..=599).contains(&code),
        "reply code {code} out of range"
    );
    assert!(!reply.lines.is_empty(), "reply {code} has no line");
    assert!(
        reply.lines.len() <= limits.max_lines,
        "reply {code} has {} lines, more than max_lines {}",
        reply.lines.len(),
        limits.max_lines
    );
    if let Some(enhanced) = reply.enhanced {
        assert!(
            enhanced.matches(reply.code),
            "enhanced code {enhanced} kept on a {code} reply"
        );
    }

    // The code, the separator and the LF take 5 octets of a line that has
    // text, and lossy decoding never turns one octet into two characters.
    let max_text = limits.max_line_len.saturating_sub(5);
    for line in &reply.lines {
        let chars = line.chars().count();
        assert!(
            chars <= max_text,
            "a line of reply {code} has {chars} characters of text, over the {max_text} \
             that max_line_len {} allows",
            limits.max_line_len
        );
        assert!(!line.contains('\n'), "line {line:?} contains an LF");
    }
}
