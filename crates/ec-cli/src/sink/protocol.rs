//! The sink's SMTP server state machine, without I/O: bytes from the
//! client go in, replies come out in a caller-owned buffer.
//!
//! ```text
//!   greeting ──► EHLO/HELO ──► MAIL ──► RCPT (1..n) ──► DATA ──► data ──► "."
//!                   ▲  │                               │                  │
//!                   │  │                               └─► BDAT n [LAST] ─┤
//!                   │  └── STARTTLS (handshake; EHLO again) ◄── RSET ◄───┘
//! ```
//!
//! A `BDAT` line is followed by exactly its size in octets (RFC 3030). They
//! are always read, even when the command is rejected, so that they are
//! never taken for commands. The reply comes after them.
//!
//! [`Protocol::receive`] handles every complete command line in its input
//! in order and appends each reply to the output, so a pipelined group
//! (RFC 2920) gets its replies in one write. It stops early at STARTTLS and
//! QUIT, where the connection has to act before reading on.

use std::sync::Arc;

use super::chunk::ChunkedMessage;
use super::data::{DataOutcome, DataReader};
use super::server::{ReceivedMessage, Shared};

/// The connection's next action after [`Protocol::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send the replies and read more input.
    NeedInput,
    /// Send the replies (the last is 220), discard any buffered input and
    /// start the TLS handshake.
    StartTls,
    /// Send the replies (the last is 221) and close.
    Quit,
}

/// The kind of input expected next.
#[derive(Debug)]
enum Mode {
    /// Command lines.
    Command,
    /// Message data after 354.
    Data(DataReader),
    /// The octets of a `BDAT` chunk.
    Chunk(Chunk),
    /// The rest of an over-long command line, already rejected with 500.
    DiscardLine,
}

/// A `BDAT` chunk being read.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Octets still to read.
    remaining: u64,
    /// The chunk ends the message.
    last: bool,
    /// The reply when the command was rejected: the octets are read and
    /// dropped.
    rejection: Option<&'static [u8]>,
}

/// The envelope of the current transaction.
#[derive(Debug, Default)]
struct Transaction {
    recipients: u32,
    /// The message so far, once a `BDAT` chunk came.
    chunks: Option<ChunkedMessage>,
    /// The reverse path and forward paths as text, only when the sink keeps
    /// messages.
    reverse_path: String,
    forward_paths: Vec<String>,
}

/// One connection's SMTP state.
#[derive(Debug)]
pub(crate) struct Protocol {
    shared: Arc<Shared>,
    tls: bool,
    greeted: bool,
    mode: Mode,
    transaction: Option<Transaction>,
}

const OK: &[u8] = b"250 2.0.0 Ok\r\n";
const SENDER_OK: &[u8] = b"250 2.1.0 Ok\r\n";
const RECIPIENT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
const QUEUED: &[u8] = b"250 2.0.0 Ok: queued\r\n";
const START_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
const CHUNK_OK: &[u8] = b"250 2.0.0 Ok: chunk received\r\n";
const BDAT_SYNTAX: &[u8] = b"501 5.5.4 Syntax: BDAT size [LAST]\r\n";
const DATA_AFTER_BDAT: &[u8] = b"503 5.5.1 Error: DATA after BDAT\r\n";
const START_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const TOO_MANY_RECIPIENTS: &[u8] = b"452 4.5.3 Error: too many recipients\r\n";
const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Error: line too long\r\n";
const UNRECOGNIZED: &[u8] = b"500 5.5.2 Error: command not recognized\r\n";
const EHLO_SYNTAX: &[u8] = b"501 5.5.4 Syntax: EHLO hostname\r\n";
const HELO_SYNTAX: &[u8] = b"501 5.5.4 Syntax: HELO hostname\r\n";
const MAIL_SYNTAX: &[u8] = b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n";
const RCPT_SYNTAX: &[u8] = b"501 5.5.4 Syntax: RCPT TO:<address>\r\n";
const NO_ARGUMENT: &[u8] = b"501 5.5.4 Syntax: no parameters allowed\r\n";
const NOT_IMPLEMENTED: &[u8] = b"502 5.5.1 Error: command not implemented\r\n";
const NEED_EHLO: &[u8] = b"503 5.5.1 Error: send HELO/EHLO first\r\n";
const NESTED_MAIL: &[u8] = b"503 5.5.1 Error: nested MAIL command\r\n";
const NEED_MAIL: &[u8] = b"503 5.5.1 Error: need MAIL command\r\n";
const NEED_RCPT: &[u8] = b"503 5.5.1 Error: need RCPT command\r\n";
const TLS_ACTIVE: &[u8] = b"503 5.5.1 Error: TLS already active\r\n";
const NEED_STARTTLS: &[u8] = b"530 5.7.0 Must issue a STARTTLS command first\r\n";
const TOO_LARGE: &[u8] = b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n";
const BAD_PARAMETER: &[u8] = b"555 5.5.4 Error: unsupported MAIL or RCPT parameter\r\n";

impl Protocol {
    /// The state of a new connection, before the greeting is sent.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            tls: false,
            greeted: false,
            mode: Mode::Command,
            transaction: None,
        }
    }

    /// Records that the TLS handshake succeeded. The client must greet
    /// again and nothing from before is kept (RFC 3207 section 4.2).
    pub(crate) fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.transaction = None;
        self.mode = Mode::Command;
    }

    /// Handles the commands and data in `input`, appending replies to
    /// `out`. Returns how many bytes were consumed and what to do next;
    /// unconsumed bytes must be offered again with more input after them.
    pub(crate) fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match &mut self.mode {
                Mode::Data(reader) => {
                    let fed = reader.feed(rest);
                    consumed += fed.consumed;
                    if !fed.done {
                        return (consumed, Step::NeedInput);
                    }
                    if let Mode::Data(reader) = std::mem::replace(&mut self.mode, Mode::Command) {
                        self.finish_message(reader.finish(), out);
                    }
                }
                Mode::Chunk(chunk) => {
                    let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
                    let length = chunk.remaining.min(available);
                    chunk.remaining -= length;
                    let chunk = *chunk;
                    // `length` is at most `rest.len()`, so it fits a usize.
                    let octets = &rest[..length as usize];
                    consumed += octets.len();
                    self.chunk_octets(chunk, octets);
                    if chunk.remaining > 0 {
                        return (consumed, Step::NeedInput);
                    }
                    self.mode = Mode::Command;
                    self.finish_chunk(chunk, out);
                }
                Mode::DiscardLine => match memchr::memchr(b'\n', rest) {
                    Some(index) => {
                        consumed += index + 1;
                        self.mode = Mode::Command;
                    }
                    None => return (input.len(), Step::NeedInput),
                },
                Mode::Command => {
                    let Some(index) = memchr::memchr(b'\n', rest) else {
                        if rest.len() >= self.shared.config.max_line_length {
                            out.extend_from_slice(LINE_TOO_LONG);
                            self.mode = Mode::DiscardLine;
                            return (input.len(), Step::NeedInput);
                        }
                        return (consumed, Step::NeedInput);
                    };
                    consumed += index + 1;
                    if index + 1 > self.shared.config.max_line_length {
                        out.extend_from_slice(LINE_TOO_LONG);
                        continue;
                    }

                    let line = rest[..index].strip_suffix(b"\r").unwrap_or(&rest[..index]);
                    let step = self.command(line, out);
                    if step != Step::NeedInput {
                        return (consumed, step);
                    }
                }
            }
        }
    }

    /// Handles one command line (without its line ending).
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        let (verb, argument) = match memchr::memchr(b' ', line) {
            Some(index) => (&line[..index], trim_start(&line[index + 1..])),
            None => (line, &[][..]),
        };
        let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);

        // Before the TLS gate: a rejected BDAT must still read its octets.
        if is(b"BDAT") && self.shared.config.chunking {
            self.bdat(argument, out);
            return Step::NeedInput;
        }
        let allowed_before_tls = is(b"EHLO") || is(b"HELO") || is(b"STARTTLS") || is(b"QUIT");
        if self.shared.config.require_tls && !self.tls && !allowed_before_tls {
            out.extend_from_slice(NEED_STARTTLS);
            return Step::NeedInput;
        }

        if is(b"EHLO") {
            self.ehlo(argument, out);
        } else if is(b"HELO") {
            self.helo(argument, out);
        } else if is(b"MAIL") {
            self.mail(argument, out);
        } else if is(b"RCPT") {
            self.rcpt(argument, out);
        } else if is(b"DATA") {
            self.data(argument, out);
        } else if is(b"RSET") {
            self.transaction = None;
            out.extend_from_slice(if argument.is_empty() { OK } else { NO_ARGUMENT });
        } else if is(b"NOOP") {
            out.extend_from_slice(OK);
        } else if is(b"QUIT") {
            out.extend_from_slice(BYE);
            self.shared.stats.count_quit();
            return Step::Quit;
        } else if is(b"STARTTLS") {
            return self.starttls(argument, out);
        } else if is(b"VRFY") || is(b"EXPN") || is(b"HELP") || is(b"BDAT") {
            out.extend_from_slice(NOT_IMPLEMENTED);
        } else {
            out.extend_from_slice(UNRECOGNIZED);
        }
        Step::NeedInput
    }

    fn ehlo(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        if argument.is_empty() {
            out.extend_from_slice(EHLO_SYNTAX);
            return;
        }
        self.greeted = true;
        self.transaction = None;
        let replies = &self.shared.replies;
        out.extend_from_slice(if self.tls {
            &replies.ehlo_tls
        } else {
            &replies.ehlo_plain
        });
    }

    fn helo(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        if argument.is_empty() {
            out.extend_from_slice(HELO_SYNTAX);
            return;
        }
        self.greeted = true;
        self.transaction = None;
        out.extend_from_slice(&self.shared.replies.helo);
    }

    fn starttls(&mut self, argument: &[u8], out: &mut Vec<u8>) -> Step {
        if self.tls {
            out.extend_from_slice(TLS_ACTIVE);
            return Step::NeedInput;
        }
        if !argument.is_empty() {
            out.extend_from_slice(NO_ARGUMENT);
            return Step::NeedInput;
        }
        if !self.greeted {
            out.extend_from_slice(NEED_EHLO);
            return Step::NeedInput;
        }
        out.extend_from_slice(START_TLS);
        Step::StartTls
    }

    fn mail(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        if !self.greeted {
            out.extend_from_slice(NEED_EHLO);
            return;
        }
        if self.transaction.is_some() {
            out.extend_from_slice(NESTED_MAIL);
            return;
        }
        let Some((path, parameters)) = split_path(argument, b"FROM:") else {
            out.extend_from_slice(MAIL_SYNTAX);
            return;
        };
        if !is_reverse_path(path) {
            out.extend_from_slice(MAIL_SYNTAX);
            return;
        }
        if let Err(reply) = self.check_mail_parameters(parameters) {
            out.extend_from_slice(reply);
            return;
        }

        let mut transaction = Transaction::default();
        if self.shared.config.keep_messages {
            transaction.reverse_path = String::from_utf8_lossy(path).into_owned();
        }
        self.transaction = Some(transaction);
        out.extend_from_slice(SENDER_OK);
    }

    /// Accepts SIZE (RFC 1870) within the limit and BODY (RFC 6152).
    fn check_mail_parameters(&self, parameters: &[u8]) -> Result<(), &'static [u8]> {
        for parameter in parameters.split(|&b| b == b' ').filter(|p| !p.is_empty()) {
            let (keyword, value) = match memchr::memchr(b'=', parameter) {
                Some(index) => (&parameter[..index], &parameter[index + 1..]),
                None => (parameter, &[][..]),
            };
            if keyword.eq_ignore_ascii_case(b"SIZE") {
                let size = parse_decimal(value).ok_or(MAIL_SYNTAX)?;
                if size > self.shared.config.max_message_size {
                    return Err(TOO_LARGE);
                }
            } else if keyword.eq_ignore_ascii_case(b"BODY") {
                let known =
                    value.eq_ignore_ascii_case(b"7BIT") || value.eq_ignore_ascii_case(b"8BITMIME");
                if !known {
                    return Err(BAD_PARAMETER);
                }
            } else {
                return Err(BAD_PARAMETER);
            }
        }
        Ok(())
    }

    fn rcpt(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        let keep = self.shared.config.keep_messages;
        let max_recipients = self.shared.config.max_recipients;
        let Some(transaction) = &mut self.transaction else {
            out.extend_from_slice(NEED_MAIL);
            return;
        };
        let Some((path, parameters)) = split_path(argument, b"TO:") else {
            out.extend_from_slice(RCPT_SYNTAX);
            return;
        };
        if !is_forward_path(path) {
            out.extend_from_slice(RCPT_SYNTAX);
            return;
        }
        if !parameters.is_empty() {
            out.extend_from_slice(BAD_PARAMETER);
            return;
        }
        if transaction.recipients >= max_recipients {
            out.extend_from_slice(TOO_MANY_RECIPIENTS);
            return;
        }

        transaction.recipients += 1;
        if keep {
            let path = String::from_utf8_lossy(path).into_owned();
            transaction.forward_paths.push(path);
        }
        out.extend_from_slice(RECIPIENT_OK);
    }

    fn data(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        if !argument.is_empty() {
            out.extend_from_slice(NO_ARGUMENT);
            return;
        }
        match &self.transaction {
            None => out.extend_from_slice(NEED_MAIL),
            Some(transaction) if transaction.recipients == 0 => out.extend_from_slice(NEED_RCPT),
            Some(transaction) if transaction.chunks.is_some() => {
                out.extend_from_slice(DATA_AFTER_BDAT);
            }
            Some(_) => {
                let config = &self.shared.config;
                let reader = DataReader::new(config.max_message_size, config.keep_messages);
                self.mode = Mode::Data(reader);
                out.extend_from_slice(START_DATA);
            }
        }
    }

    /// Starts reading a `BDAT` chunk: `BDAT <size> [LAST]` (RFC 3030). The
    /// reply waits until its octets are read.
    fn bdat(&mut self, argument: &[u8], out: &mut Vec<u8>) {
        let mut words = argument.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let size = words.next().and_then(parse_decimal);
        let last = match words.next() {
            None => Some(false),
            Some(word) if word.eq_ignore_ascii_case(b"LAST") => Some(true),
            Some(_) => None,
        };
        let (Some(size), Some(last), None) = (size, last, words.next()) else {
            // The size is unknown, so the octets cannot be skipped.
            out.extend_from_slice(BDAT_SYNTAX);
            return;
        };

        let rejection = if self.shared.config.require_tls && !self.tls {
            Some(NEED_STARTTLS)
        } else if !self.greeted {
            Some(NEED_EHLO)
        } else {
            match &self.transaction {
                None => Some(NEED_MAIL),
                Some(transaction) if transaction.recipients == 0 => Some(NEED_RCPT),
                Some(_) => None,
            }
        };
        if rejection.is_none() {
            let config = &self.shared.config;
            if let Some(transaction) = &mut self.transaction {
                transaction.chunks.get_or_insert_with(|| {
                    ChunkedMessage::new(config.max_message_size, config.keep_messages)
                });
            }
        }
        self.mode = Mode::Chunk(Chunk {
            remaining: size,
            last,
            rejection,
        });
    }

    /// Adds octets of the chunk being read to the message, unless the
    /// command was rejected.
    fn chunk_octets(&mut self, chunk: Chunk, octets: &[u8]) {
        if chunk.rejection.is_some() {
            return;
        }
        let message = self
            .transaction
            .as_mut()
            .and_then(|transaction| transaction.chunks.as_mut());
        if let Some(message) = message {
            message.append(octets);
        }
    }

    /// Replies to a `BDAT` command once its octets are read.
    fn finish_chunk(&mut self, chunk: Chunk, out: &mut Vec<u8>) {
        if let Some(reply) = chunk.rejection {
            out.extend_from_slice(reply);
            return;
        }
        let too_large = self
            .transaction
            .as_ref()
            .and_then(|transaction| transaction.chunks.as_ref())
            .is_some_and(ChunkedMessage::too_large);
        if !chunk.last && !too_large {
            out.extend_from_slice(CHUNK_OK);
            return;
        }
        // The last chunk, or one past the size limit: the transaction ends.
        let message = self
            .transaction
            .as_mut()
            .and_then(|transaction| transaction.chunks.take());
        if let Some(message) = message {
            let outcome = message.finish();
            if !outcome.too_large {
                self.shared.stats.count_chunked();
            }
            self.finish_message(outcome, out);
        }
    }

    fn finish_message(&mut self, outcome: DataOutcome, out: &mut Vec<u8>) {
        let transaction = self.transaction.take().unwrap_or_default();
        let stats = &self.shared.stats;
        stats.count_bare_line_feeds(outcome.bare_line_feeds);

        if outcome.too_large {
            stats.count_rejected();
            out.extend_from_slice(TOO_LARGE);
            return;
        }

        stats.count_message(outcome.size, transaction.recipients);
        if let Some(data) = outcome.content {
            self.shared.keep(ReceivedMessage {
                reverse_path: transaction.reverse_path,
                recipients: transaction.forward_paths,
                data,
                tls: self.tls,
            });
        }
        out.extend_from_slice(QUEUED);
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

/// Splits `FROM:<path> parameters` (or `TO:`) into the path without
/// brackets and the parameters. Spaces after the colon are accepted, as
/// most servers do.
fn split_path<'a>(argument: &'a [u8], keyword: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let prefix = argument.get(..keyword.len())?;
    if !prefix.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = trim_start(&argument[keyword.len()..]);
    let rest = rest.strip_prefix(b"<")?;
    let close = memchr::memchr(b'>', rest)?;
    let after = &rest[close + 1..];
    if !after.is_empty() && after[0] != b' ' {
        return None;
    }
    Some((&rest[..close], trim_start(after)))
}

/// A reverse path: empty (the null path) or a mailbox.
fn is_reverse_path(path: &[u8]) -> bool {
    path.is_empty() || is_forward_path(path)
}

/// A forward path: a mailbox with `@`, or `postmaster` (RFC 5321 section
/// 4.1.1.3), with no space or control character.
fn is_forward_path(path: &[u8]) -> bool {
    let clean = path.iter().all(|&b| b > b' ' && b != 0x7f);
    let mailbox = memchr::memchr(b'@', path).is_some_and(|at| at > 0 && at + 1 < path.len());
    clean && (mailbox || path.eq_ignore_ascii_case(b"postmaster"))
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        let digit = (digit as char).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkConfig;

    fn protocol(config: SinkConfig) -> Protocol {
        Protocol::new(Arc::new(Shared::new(config)))
    }

    /// Feeds `input` at once and returns the replies as text and the step.
    fn exchange(protocol: &mut Protocol, input: &str) -> (String, Step, usize) {
        let mut out = Vec::new();
        let (consumed, step) = protocol.receive(input.as_bytes(), &mut out);
        (
            String::from_utf8(out).expect("replies are ASCII"),
            step,
            consumed,
        )
    }

    fn codes(replies: &str) -> Vec<&str> {
        replies
            .lines()
            .filter(|line| line.as_bytes().get(3) == Some(&b' '))
            .map(|line| &line[..3])
            .collect()
    }

    #[test]
    fn pipelined_transaction() {
        let mut sink = protocol(SinkConfig::default());
        let input = "EHLO client.example\r\nMAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n\
                     RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n\
                     Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (replies, step, consumed) = exchange(&mut sink, input);
        assert_eq!(
            codes(&replies),
            ["250", "250", "250", "250", "354", "250", "221"]
        );
        assert_eq!(step, Step::Quit);
        assert_eq!(consumed, input.len());
        let stats = sink.shared.stats.snapshot();
        assert_eq!(stats.messages, 1);
        assert_eq!(stats.recipients, 2);
        assert_eq!(
            stats.message_octets,
            "Subject: hi\r\n\r\n.dot\r\n".len() as u64
        );
        assert_eq!(stats.quits, 1);
    }

    #[test]
    fn ehlo_lists_extensions() {
        let mut sink = protocol(SinkConfig::default());
        let (replies, _, _) = exchange(&mut sink, "ehlo client.example\r\n");
        let expected = format!(
            "250-localhost\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
             250-STARTTLS\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n",
            crate::sink::DEFAULT_MAX_MESSAGE_SIZE
        );
        assert_eq!(replies, expected);

        sink.tls_started();
        let (replies, _, _) = exchange(&mut sink, "EHLO client.example\r\n");
        assert!(!replies.contains("STARTTLS"), "{replies}");

        let mut plain = protocol(SinkConfig {
            chunking: false,
            ..SinkConfig::default()
        });
        let (replies, _, _) = exchange(&mut plain, "EHLO client.example\r\nBDAT 0 LAST\r\n");
        assert!(!replies.contains("CHUNKING"), "{replies}");
        assert!(replies.ends_with("502 5.5.1 Error: command not implemented\r\n"));
    }

    fn keep() -> SinkConfig {
        SinkConfig {
            keep_messages: true,
            ..SinkConfig::default()
        }
    }

    #[test]
    fn chunked_transaction() {
        let mut sink = protocol(keep());
        let input = "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n\
                     BDAT 14\r\n.first\r\nQUIT\r\nBDAT 7 LAST\r\n..two\r\nQUIT\r\n";
        let (replies, step, consumed) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "250", "250", "250", "250", "221"]);
        assert!(replies.contains("250 2.0.0 Ok: chunk received\r\n250 2.0.0 Ok: queued\r\n"));
        assert_eq!((step, consumed), (Step::Quit, input.len()));

        let messages = sink.shared.take_messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].data, b".first\r\nQUIT\r\n..two\r\n",
            "octets as sent: no unstuffing, and QUIT inside a chunk is data"
        );
        let stats = sink.shared.stats.snapshot();
        assert_eq!(
            (stats.messages, stats.chunked_messages, stats.quits),
            (1, 1, 1)
        );
    }

    #[test]
    fn chunk_octets_arrive_in_pieces() {
        let mut sink = protocol(keep());
        let mut out = Vec::new();
        let head = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nBDAT 5 LAST\r\nab";
        let (consumed, step) = sink.receive(head, &mut out);
        assert_eq!((consumed, step), (head.len(), Step::NeedInput));
        let (consumed, _) = sink.receive(b"c\r\nNOOP\r\n", &mut out);
        assert_eq!(consumed, 9);
        let replies = String::from_utf8(out).expect("ASCII");
        assert_eq!(codes(&replies), ["250", "250", "250", "250", "250"]);
        assert_eq!(sink.shared.take_messages()[0].data, b"abc\r\n");
    }

    #[test]
    fn rejected_chunk_is_read_not_run() {
        let mut sink = protocol(keep());
        // No MAIL: the chunk contains commands, which must not run.
        let input = "EHLO c\r\nBDAT 12 LAST\r\nRSET\r\nQUIT\r\nNOOP\r\n";
        let (replies, step, _) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "503", "250"]);
        assert_eq!(step, Step::NeedInput);

        let (replies, _, _) = exchange(&mut sink, "MAIL FROM:<>\r\nBDAT 4\r\nQUIT");
        assert_eq!(codes(&replies), ["250", "503"], "no recipient yet");
        assert_eq!(sink.shared.stats.snapshot().quits, 0);
        assert!(sink.shared.take_messages().is_empty());

        let mut strict = protocol(SinkConfig {
            require_tls: true,
            ..SinkConfig::default()
        });
        let (replies, _, _) = exchange(&mut strict, "EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\n");
        assert_eq!(codes(&replies), ["250", "530"]);
    }

    #[test]
    fn bdat_syntax_and_mixing() {
        let mut sink = protocol(keep());
        let (replies, _, _) = exchange(
            &mut sink,
            "EHLO c\r\nBDAT\r\nBDAT x\r\nBDAT 1 NOW\r\nBDAT 1 LAST more\r\n",
        );
        assert_eq!(codes(&replies), ["250", "501", "501", "501", "501"]);

        let input = "MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nBDAT 3\r\nab\nDATA\r\nRSET\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "250", "250", "503", "250"]);
        let (replies, _, _) = exchange(&mut sink, "BDAT 0 LAST\r\n");
        assert_eq!(codes(&replies), ["503"], "RSET ended the transaction");
        assert_eq!(sink.shared.stats.snapshot().bare_line_feeds, 0, "dropped");
    }

    #[test]
    fn oversized_chunks_end_the_transaction() {
        let mut sink = protocol(SinkConfig {
            max_message_size: 4,
            ..keep()
        });
        let input = "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\n\
                     BDAT 3\r\nabcBDAT 3\r\ndefBDAT 2 LAST\r\ngh";
        let (replies, _, consumed) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "250", "250", "250", "552", "503"]);
        assert_eq!(consumed, input.len());
        let stats = sink.shared.stats.snapshot();
        assert_eq!((stats.messages, stats.rejected_messages), (0, 1));
    }

    #[test]
    fn keeps_messages_when_asked() {
        let config = SinkConfig {
            keep_messages: true,
            ..SinkConfig::default()
        };
        let mut sink = protocol(config);
        let input = "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "250", "250", "354", "250"]);
        let messages = sink.shared.take_messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].reverse_path, "");
        assert_eq!(messages[0].recipients, ["postmaster"]);
        assert_eq!(messages[0].data, b"x\r\n");
        assert!(!messages[0].tls);
    }

    #[test]
    fn sequence_errors() {
        let mut sink = protocol(SinkConfig::default());
        let (replies, _, _) = exchange(&mut sink, "MAIL FROM:<a@b.example>\r\n");
        assert_eq!(codes(&replies), ["503"]);
        let input = "EHLO c\r\nRCPT TO:<a@b.example>\r\nDATA\r\nMAIL FROM:<a@b.example>\r\n\
                     DATA\r\nMAIL FROM:<a@b.example>\r\nRSET\r\nDATA\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(
            codes(&replies),
            ["250", "503", "503", "250", "503", "503", "250", "503"]
        );
    }

    #[test]
    fn syntax_errors() {
        let mut sink = protocol(SinkConfig::default());
        let input = "EHLO\r\nEHLO c\r\nMAIL FROM:a@b.example\r\nMAIL FROM:<a b@c.example>\r\n\
                     MAIL FROM:<a@b.example>SIZE=1\r\nMAIL FROM:<a@b.example> SIZE=x\r\n\
                     MAIL FROM:<a@b.example> AUTH=<>\r\nMAIL FROM: <a@b.example>\r\n\
                     RCPT TO:<>\r\nRCPT TO:<@>\r\nRCPT TO:<x@y.example> NOTIFY=NEVER\r\n\
                     DATA now\r\nXYZZY\r\nVRFY x\r\nSTARTTLS now\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(
            codes(&replies),
            [
                "501", "250", "501", "501", "501", "501", "555", "250", "501", "501", "555", "501",
                "500", "502", "501"
            ]
        );
    }

    #[test]
    fn size_limit_on_mail_and_data() {
        let config = SinkConfig {
            max_message_size: 10,
            ..SinkConfig::default()
        };
        let mut sink = protocol(config);
        let input = "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=11\r\nMAIL FROM:<a@b.example>\r\n\
                     RCPT TO:<c@d.example>\r\nDATA\r\n0123456789\r\n.\r\nNOOP\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(
            codes(&replies),
            ["250", "552", "250", "250", "354", "552", "250"]
        );
        let stats = sink.shared.stats.snapshot();
        assert_eq!(stats.messages, 0);
        assert_eq!(stats.rejected_messages, 1);
    }

    #[test]
    fn recipient_limit() {
        let config = SinkConfig {
            max_recipients: 2,
            ..SinkConfig::default()
        };
        let mut sink = protocol(config);
        let input = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<1@d.example>\r\n\
                     RCPT TO:<2@d.example>\r\nRCPT TO:<3@d.example>\r\n";
        let (replies, _, _) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["250", "250", "250", "250", "452"]);
    }

    #[test]
    fn require_tls_gates_commands() {
        let config = SinkConfig {
            require_tls: true,
            ..SinkConfig::default()
        };
        let mut sink = protocol(config);
        let input = "NOOP\r\nEHLO c\r\nMAIL FROM:<a@b.example>\r\nRSET\r\nSTARTTLS\r\nNOOP\r\n";
        let (replies, step, consumed) = exchange(&mut sink, input);
        assert_eq!(codes(&replies), ["530", "250", "530", "530", "220"]);
        assert_eq!(step, Step::StartTls);
        assert_eq!(
            &input[consumed..],
            "NOOP\r\n",
            "input after STARTTLS is left"
        );

        sink.tls_started();
        let (replies, _, _) = exchange(
            &mut sink,
            "MAIL FROM:<a@b.example>\r\nEHLO c\r\nSTARTTLS\r\n",
        );
        assert_eq!(codes(&replies), ["503", "250", "503"]);
    }

    #[test]
    fn partial_line_waits_for_more() {
        let mut sink = protocol(SinkConfig::default());
        let (replies, step, consumed) = exchange(&mut sink, "NOOP\r\nNO");
        assert_eq!(codes(&replies), ["250"]);
        assert_eq!((step, consumed), (Step::NeedInput, 6));
    }

    #[test]
    fn long_line_is_rejected_and_skipped() {
        let config = SinkConfig {
            max_line_length: 16,
            ..SinkConfig::default()
        };
        let mut sink = protocol(config);
        let (replies, _, consumed) = exchange(&mut sink, "NOOP 0123456789012");
        assert_eq!(codes(&replies), ["500"]);
        assert_eq!(consumed, 18);
        let (replies, _, _) = exchange(&mut sink, "3456\r\nNOOP\r\n");
        assert_eq!(
            codes(&replies),
            ["250"],
            "the rest of the long line is skipped"
        );

        let (replies, _, _) = exchange(&mut sink, "NOOP 01234567890\r\nNOOP\r\n");
        assert_eq!(codes(&replies), ["500", "250"]);
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1x"), None);
    }
}
