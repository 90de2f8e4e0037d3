//! The incremental SMTP reply parser (RFC 5321 section 4.2).
//!
//! Bytes arrive in chunks of any size and any split; [`ReplyParser::push`]
//! buffers them and [`ReplyParser::next_reply`] returns each complete reply
//! in order. Every buffer is bounded by [`ReplyLimits`], so a server that
//! sends endless lines or an endless reply costs a protocol error, not
//! memory.

use bytes::BytesMut;
use ec_types::{EnhancedStatusCode, Reply, ReplyCode};
use thiserror::Error;

/// Bounds on what one server may make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Maximum length of one reply line in octets, code and line ending
    /// included. Default 4096: RFC 5321 section 4.5.3.1.5 allows 512, and the
    /// slack accepts servers with long texts without accepting unbounded
    /// ones.
    pub max_line_len: usize,
    /// Maximum number of lines in one reply. Default 100; a long EHLO reply
    /// has about 20.
    pub max_lines: usize,
    /// Maximum number of octets held at once: unparsed input plus the lines
    /// of the reply being assembled. Default 64 KiB, enough for the replies
    /// to a pipelined group of several hundred commands.
    pub max_buffered: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_line_len: 4096,
            max_lines: 100,
            max_buffered: 64 * 1024,
        }
    }
}

/// A server sent something that is not a valid SMTP reply, or more than
/// [`ReplyLimits`] allows. Either way the session cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line was longer than [`ReplyLimits::max_line_len`].
    #[error("reply line {start:?}... is longer than the maximum of {max} octets")]
    LineTooLong {
        /// The start of the line.
        start: String,
        /// The limit in octets.
        max: usize,
    },
    /// A reply had more lines than [`ReplyLimits::max_lines`].
    #[error("reply {code} has more than the maximum of {max} lines")]
    TooManyLines {
        /// The code of the reply.
        code: ReplyCode,
        /// The limit.
        max: usize,
    },
    /// More input was pushed than [`ReplyLimits::max_buffered`] allows to
    /// hold before it is parsed.
    #[error(
        "{len} octets of reply data would be buffered, more than the maximum of {max}; \
         read replies with next_reply before pushing more"
    )]
    BufferFull {
        /// How many octets would have been held.
        len: usize,
        /// The limit in octets.
        max: usize,
    },
    /// A line did not start with a three-digit code from 200 to 599.
    #[error("reply line {line:?} does not start with a reply code from 200 to 599")]
    InvalidCode {
        /// The line, shortened.
        line: String,
    },
    /// The code was followed by something other than a space, a hyphen or
    /// the line end.
    #[error("reply line {line:?} has no space or hyphen after its code")]
    InvalidSeparator {
        /// The line, shortened.
        line: String,
    },
    /// A line of a multi-line reply had a different code than the first
    /// (RFC 5321 section 4.2.1 requires the same code on every line).
    #[error("reply line {line:?} continues a {expected} reply with another code")]
    InconsistentCode {
        /// The code of the reply's first line.
        expected: ReplyCode,
        /// The line, shortened.
        line: String,
    },
}

/// Characters of a line that an error quotes; enough to recognize it.
const QUOTED_LINE_LEN: usize = 80;

/// The incremental reply parser.
///
/// After an error the parser is poisoned: it returns the same error from
/// every later call, because the byte stream can no longer be trusted to be
/// in step with the commands.
#[derive(Debug)]
pub struct ReplyParser {
    limits: ReplyLimits,
    input: BytesMut,
    /// How much of `input` is known to hold no line feed.
    scanned: usize,
    partial: Option<PartialReply>,
    failed: Option<ReplyError>,
}

/// The lines of a multi-line reply received so far.
#[derive(Debug)]
struct PartialReply {
    code: ReplyCode,
    enhanced: Option<EnhancedStatusCode>,
    lines: Vec<String>,
    /// Octets of the raw lines, line endings included.
    raw_len: usize,
}

/// One line, split into its parts.
struct Line<'a> {
    code: ReplyCode,
    last: bool,
    text: &'a [u8],
}

impl ReplyParser {
    /// Creates a parser with the given limits.
    pub fn new(limits: ReplyLimits) -> Self {
        Self {
            limits,
            input: BytesMut::new(),
            scanned: 0,
            partial: None,
            failed: None,
        }
    }

    /// Returns the limits in force.
    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }

    /// Appends received bytes.
    ///
    /// # Errors
    ///
    /// Returns [`ReplyError::BufferFull`] when the parser would then hold
    /// more than [`ReplyLimits::max_buffered`] octets; the bytes are not
    /// kept. Returns the earlier error when the parser is poisoned.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        self.check_poisoned()?;

        let len = self.buffered_len() + bytes.len();
        if len > self.limits.max_buffered {
            let max = self.limits.max_buffered;
            return Err(self.fail(ReplyError::BufferFull { len, max }));
        }

        self.input.extend_from_slice(bytes);
        Ok(())
    }

    /// Returns the next complete reply, or `None` until more bytes arrive.
    ///
    /// Lines may end in CRLF or, from servers that get it wrong, a bare LF.
    ///
    /// # Errors
    ///
    /// Returns a [`ReplyError`] for a malformed line or a broken limit.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        self.check_poisoned()?;

        loop {
            let Some(line) = self.take_line()? else {
                return Ok(None);
            };
            if let Some(reply) = self.add_line(&line)? {
                return Ok(Some(reply));
            }
        }
    }

    /// Octets held and not yet returned in a reply: unparsed input and the
    /// raw lines of an incomplete reply.
    ///
    /// After the 220 reply to STARTTLS this must be zero: anything else was
    /// sent by the server before the TLS handshake and is an injection
    /// attempt, never a reply.
    pub fn buffered_len(&self) -> usize {
        self.input.len() + self.partial.as_ref().map_or(0, |partial| partial.raw_len)
    }

    /// Returns whether the parser has returned an error and rejects more
    /// input.
    pub fn is_poisoned(&self) -> bool {
        self.failed.is_some()
    }

    fn check_poisoned(&self) -> Result<(), ReplyError> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: ReplyError) -> ReplyError {
        self.input.clear();
        self.partial = None;
        self.failed = Some(error.clone());
        error
    }

    /// Removes the next complete line from the input, line ending included.
    fn take_line(&mut self) -> Result<Option<BytesMut>, ReplyError> {
        let unscanned = &self.input[self.scanned..];
        let Some(offset) = unscanned.iter().position(|&byte| byte == b'\n') else {
            self.scanned = self.input.len();
            if self.input.len() > self.limits.max_line_len {
                return Err(self.line_too_long());
            }
            return Ok(None);
        };

        let len = self.scanned + offset + 1;
        if len > self.limits.max_line_len {
            return Err(self.line_too_long());
        }
        self.scanned = 0;
        Ok(Some(self.input.split_to(len)))
    }

    fn line_too_long(&mut self) -> ReplyError {
        let start = quote(&self.input);
        let max = self.limits.max_line_len;
        self.fail(ReplyError::LineTooLong { start, max })
    }

    /// Adds a line to the reply being assembled; returns the reply when the
    /// line was its last.
    fn add_line(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = match split_line(raw) {
            Ok(line) => line,
            Err(error) => return Err(self.fail(error)),
        };

        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => PartialReply::start(line.code),
        };
        if partial.code != line.code {
            let expected = partial.code;
            return Err(self.fail(ReplyError::InconsistentCode {
                expected,
                line: quote(raw),
            }));
        }
        if partial.lines.len() == self.limits.max_lines {
            let max = self.limits.max_lines;
            return Err(self.fail(ReplyError::TooManyLines {
                code: line.code,
                max,
            }));
        }

        partial.push_text(line.text, raw.len());
        if !line.last {
            self.partial = Some(partial);
            return Ok(None);
        }
        Ok(Some(partial.finish()))
    }
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(ReplyLimits::default())
    }
}

impl PartialReply {
    fn start(code: ReplyCode) -> Self {
        Self {
            code,
            enhanced: None,
            lines: Vec::new(),
            raw_len: 0,
        }
    }

    /// Stores one line's text, taking the enhanced status code off it.
    ///
    /// The first line decides: its code counts only when valid and of the
    /// reply's class (RFC 3463 section 2), because a text such as
    /// `2.0.0 ok` after a 550 is not a status the server meant. Later lines
    /// lose only that same code.
    fn push_text(&mut self, text: &[u8], raw_len: usize) {
        let text = String::from_utf8_lossy(text);
        let prefix = EnhancedStatusCode::split_prefix(&text);

        let rest = match (self.lines.is_empty(), prefix) {
            (true, Some((code, rest))) if code.matches(self.code) => {
                self.enhanced = Some(code);
                rest
            }
            (false, Some((code, rest))) if Some(code) == self.enhanced => rest,
            _ => &text,
        };

        self.lines.push(rest.to_owned());
        self.raw_len += raw_len;
    }

    fn finish(self) -> Reply {
        Reply {
            code: self.code,
            enhanced: self.enhanced,
            lines: self.lines,
            local: false,
        }
    }
}

/// Splits `NNN-text` or `NNN text` (or a bare `NNN`) with its line ending.
fn split_line(raw: &[u8]) -> Result<Line<'_>, ReplyError> {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    let invalid_code = || ReplyError::InvalidCode { line: quote(raw) };
    let digits = line.get(..3).ok_or_else(invalid_code)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid_code());
    }
    let number = digits
        .iter()
        .fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'));
    let code = ReplyCode::new(number).map_err(|_| invalid_code())?;

    let (last, text) = match line.get(3) {
        None => (true, &line[3..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(ReplyError::InvalidSeparator { line: quote(raw) }),
    };
    Ok(Line { code, last, text })
}

/// Returns the start of a line for an error message, decoded lossily.
fn quote(raw: &[u8]) -> String {
    let mut quoted = String::from_utf8_lossy(&raw[..raw.len().min(QUOTED_LINE_LEN)]).into_owned();
    if raw.len() > QUOTED_LINE_LEN {
        quoted.push_str("...");
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let mut parser = ReplyParser::default();
        parser.push(input).unwrap();
        let mut replies = Vec::new();
        while let Some(reply) = parser.next_reply().unwrap() {
            replies.push(reply);
        }
        replies
    }

    #[test]
    fn bare_code_is_last_line() {
        let replies = parse_all(b"250-first\r\n250\r\n");
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].lines, ["first", ""]);
    }

    #[test]
    fn partial_line_waits() {
        let mut parser = ReplyParser::default();
        parser.push(b"250 o").unwrap();
        assert_eq!(parser.next_reply().unwrap(), None);
        assert_eq!(parser.buffered_len(), 5);
        parser.push(b"k\r\n").unwrap();
        assert_eq!(parser.next_reply().unwrap().unwrap().lines, ["ok"]);
        assert_eq!(parser.buffered_len(), 0);
    }

    #[test]
    fn poisoned_after_error() {
        let mut parser = ReplyParser::default();
        parser.push(b"hello\r\n250 ok\r\n").unwrap();
        let error = parser.next_reply().unwrap_err();
        assert!(parser.is_poisoned());
        assert_eq!(parser.next_reply().unwrap_err(), error);
        assert_eq!(parser.push(b"250 ok\r\n").unwrap_err(), error);
    }
}
